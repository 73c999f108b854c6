//! What the engine is configured with, typed and in engine units (the `resources` crate
//! parses and validates the `.res` file; `EngineConfig::from_view` turns this node's view into
//! these, for the daemon at start, for `adjust`, and for the simulator).

use std::time::Duration;

use super::ids::NodeId;

use rep_resources::{
    AfterSb0, AfterSb1, AfterSb2, DigestAlg, HmacAlg, NodeView, Protocol, RrConflict,
};

pub use rep_resources::OnIoError;

/// Static facts about the resource on this node, from the `.res` file.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub resource: String,
    pub node: String,
    /// This node's and the data peer's node ids, and the peer's host name.
    pub node_id: NodeId,
    pub peer_id: NodeId,
    pub peer_node: String,
    pub minor: u32,
    pub device: String,
    pub protocol: Protocol,
    /// A peer is configured (two host sections): `up` goes to WFConnection, not StandAlone.
    pub has_peer: bool,
    pub allow_two_primaries: bool,
    pub al_extents: u32,
    pub fencing: rep_resources::Fencing,
    pub on_io_error: OnIoError,
    /// `options { quorum …; on-no-quorum …; quorum-minimum-redundancy …; }` (docs/quorum.md).
    pub quorum: rep_resources::quorum::QuorumConf,
    /// The diskless witness this data node connects to (node id, host name), if the resource
    /// has one (docs/quorum.md, "The witness").
    pub witness: Option<(NodeId, String)>,
    pub peer: PeerSettings,
}

impl EngineConfig {
    /// The engine's configuration for this node's view of the resource (DRBD's meanings,
    /// units converted): the one way a configuration is built, by the daemon at start and on
    /// `adjust`, and by the simulator.
    pub fn from_view(view: &NodeView) -> EngineConfig {
        let peer_node = view.peer_node.clone().unwrap_or_default();
        let (node_id, peer_id) = node_ids(view, &peer_node);
        let witness = view
            .witness()
            .and_then(|w| Some((NodeId(w.node_id?), w.node.clone())));
        // With a witness, losing the data peer is settled through it (docs/quorum.md, "Losing
        // the data link"): a Primary freezes I/O until the witness had the peer outdated, and a
        // disconnected node is promoted only once it did — resource-and-stonith's rules, with
        // the witness as the fence agent (unless a fence-peer handler is configured).
        let fencing = match (&witness, view.disk_conf.fencing) {
            (Some(_), rep_resources::Fencing::DontCare | rep_resources::Fencing::ResourceOnly) => {
                rep_resources::Fencing::ResourceAndStonith
            }
            (_, f) => f,
        };
        EngineConfig {
            resource: view.resource.clone(),
            node: view.node.clone(),
            node_id,
            peer_id,
            peer_node,
            minor: view.minor,
            device: view.device.clone(),
            protocol: view.net.protocol,
            has_peer: view.peer_address.is_some(),
            allow_two_primaries: view.net.allow_two_primaries,
            al_extents: view.disk_conf.al_extents,
            fencing,
            on_io_error: view.disk_conf.on_io_error,
            quorum: view.quorum,
            witness,
            peer: PeerSettings::from_view(view),
        }
    }
}

/// This node's and its data peer's node ids: the `node-id`s where the file writes them, else
/// the two hosts' places in name order (the same on both nodes).
fn node_ids(view: &NodeView, peer_node: &str) -> (NodeId, NodeId) {
    let written = view
        .peers
        .iter()
        .find(|p| p.node == peer_node)
        .and_then(|p| p.node_id);
    match (view.node_id, written) {
        (Some(me), Some(peer)) => (NodeId(me), NodeId(peer)),
        _ if view.node.as_str() <= peer_node => (NodeId(0), NodeId(1)),
        _ => (NodeId(1), NodeId(0)),
    }
}

/// `net` and resync settings the engine needs, in engine units.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    pub ping_int: Duration,
    pub ping_timeout: Duration,
    pub timeout: Duration,
    pub ko_count: u32,
    pub shared_secret: Option<String>,
    pub cram_hmac_alg: Option<HmacAlg>,
    pub after_sb_0pri: AfterSb0,
    pub after_sb_1pri: AfterSb1,
    pub after_sb_2pri: AfterSb2,
    /// Try the after-sb policies also for split brains with unrelated bitmaps (full sync).
    pub always_asbp: bool,
    /// `rr-conflict`: what a Primary does when the handshake makes it SyncTarget.
    pub rr_conflict: RrConflict,
    /// Agreed with the peer at the handshake.
    pub integrity_alg: Option<DigestAlg>,
    pub verify_alg: Option<DigestAlg>,
    pub csums_alg: Option<DigestAlg>,
    pub max_epoch_size: u32,
    /// `resync-rate` and the dynamic controller's `c-*` settings.
    pub pace: crate::core::sync::pace::Pace,
    /// `resync-after`: wait while this resource is resyncing.
    pub resync_after: Option<String>,
}

impl PeerSettings {
    /// The `net` and `disk` sections of the view, in engine units (`*_ds`: deciseconds).
    fn from_view(view: &NodeView) -> PeerSettings {
        let n = &view.net;
        let d = &view.disk_conf;
        let ds = |v: u32| Duration::from_millis(u64::from(v) * 100);
        PeerSettings {
            ping_int: Duration::from_secs(u64::from(n.ping_int_s)),
            ping_timeout: ds(n.ping_timeout_ds),
            timeout: ds(n.timeout_ds),
            ko_count: n.ko_count,
            shared_secret: n.shared_secret.clone(),
            cram_hmac_alg: n.cram_hmac_alg,
            after_sb_0pri: n.after_sb_0pri.clone(),
            after_sb_1pri: n.after_sb_1pri,
            after_sb_2pri: n.after_sb_2pri,
            always_asbp: n.always_asbp,
            rr_conflict: n.rr_conflict,
            integrity_alg: n.data_integrity_alg,
            verify_alg: n.verify_alg,
            csums_alg: n.csums_alg,
            max_epoch_size: n.max_epoch_size,
            pace: crate::core::sync::pace::Pace {
                resync_rate_kib: d.resync_rate_kib,
                c_plan_ahead_ds: d.c_plan_ahead_ds,
                c_fill_target_bytes: d.c_fill_target_sectors * 512,
                c_delay_target_ds: d.c_delay_target_ds,
                c_max_rate_kib: d.c_max_rate_kib,
                c_min_rate_kib: d.c_min_rate_kib,
            },
            resync_after: d.resync_after.clone(),
        }
    }
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            ping_int: Duration::from_secs(10),
            ping_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(6),
            ko_count: 7,
            shared_secret: None,
            cram_hmac_alg: None,
            after_sb_0pri: AfterSb0::Disconnect,
            after_sb_1pri: AfterSb1::Disconnect,
            after_sb_2pri: AfterSb2::Disconnect,
            always_asbp: false,
            rr_conflict: RrConflict::Disconnect,
            integrity_alg: None,
            verify_alg: None,
            csums_alg: None,
            max_epoch_size: 2048,
            pace: crate::core::sync::pace::Pace::default(),
            resync_after: None,
        }
    }
}
