//! What a simulated cluster is built with (`SimConfig`, the client `Workload`) and what a run
//! counts (`SimStats`). Kept apart from the cluster so that the `.res` rendering (`res.rs`)
//! and the cluster both depend on it and not on each other.

use std::collections::BTreeMap;
use std::time::Duration;

use super::disk::SECTOR_BYTES;
use rep_resources::{DigestAlg, Fencing, Protocol};

pub const SECTOR: u64 = SECTOR_BYTES as u64;
pub const BLOCK: u64 = 4096;
/// The NBD maximum request size (docs/drbd-semantics.md §12).
pub const MAX_REQUEST_BYTES: u64 = 32 << 20;
/// How many inputs a node may take after its handshake decided before its bitmap must be
/// clear (or a resync running, or the condition shown to the operator): enough for the
/// peer's report, its final bitmap and the resync start to arrive.
pub const BITS_SETTLE_INPUTS: u32 = 200;
/// The same bound in simulated time, for an idle pair that takes few inputs.
pub const BITS_SETTLE_TIME: Duration = Duration::from_secs(1);

/// What a simulated cluster is built with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub protocol: Protocol,
    pub device_bytes: u64,
    /// `al-extents` written by create-md (9 is the engine's minimum for 32 MiB requests).
    pub al_extents: u32,
    /// Empty: plain resync.
    pub csums_alg: Option<DigestAlg>,
    pub verify_alg: Option<DigestAlg>,
    pub resync_rate_kib: u64,
    /// `disk { fencing ...; }`. fence-peer is simulated as an outdate request over a
    /// management channel that partitions do not cut (as a cluster manager's messaging, or
    /// STONITH, would be): the peer outdates itself if it is up and not Primary, a peer that is
    /// down is reported unreachable (5).
    pub fencing: Fencing,
    /// How long fence-peer takes to reach the peer, drawn in this range (µs). Real handlers
    /// (crm-fence-peer.sh waiting for the cluster manager) take seconds; the default keeps
    /// them short, so a partition heals long after they returned. A long one lets the link
    /// come back while fence-peer still runs (DRBD 8.4's "connection established again").
    pub fence_peer_us: (u64, u64),
    /// How long fence-peer's answer takes to come back once the peer acted on it (µs). A long
    /// one is a handler that places its constraint first and then waits (crm-fence-peer): the
    /// link can come back and go again before it returns, and its verdict is then about the
    /// connection before.
    pub fence_answer_us: (u64, u64),
    /// `options { quorum …; on-no-quorum …; }` (off by default).
    pub quorum: rep_resources::quorum::QuorumConf,
    /// A diskless witness (node id 2, `witness`) as the third node (docs/quorum.md, "The
    /// witness"): each data node has a witness link (cut by partitions, gone with the node),
    /// counted for quorum; fence-peer is relayed through it (`witness::relay::Relay`). Needs
    /// `quorum` enabled (the engines' configuration makes fencing resource-and-stonith).
    pub witness: bool,
}

impl SimConfig {
    pub fn new(protocol: Protocol, device_bytes: u64) -> SimConfig {
        SimConfig {
            protocol,
            device_bytes,
            al_extents: 61,
            csums_alg: None,
            verify_alg: Some(DigestAlg::Crc32c),
            resync_rate_kib: 256 * 1024,
            fencing: Fencing::DontCare,
            fence_peer_us: (200, 5000),
            fence_answer_us: (100, 2000),
            quorum: rep_resources::quorum::QuorumConf::default(),
            witness: false,
        }
    }
}

/// The mix of client requests `client_io` draws from, in parts per thousand.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub flush: u32,
    pub read: u32,
    pub zero: u32,
    /// Writes of 1–32 MiB (at least one peer packet split).
    pub huge: u32,
    /// Writes of 64 KiB–1 MiB.
    pub large: u32,
    /// FUA among writes.
    pub fua: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            flush: 70,
            read: 40,
            zero: 20,
            huge: 4,
            large: 50,
            fua: 125,
        }
    }
}

/// Faults and events of a run, for the summary.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub faults: BTreeMap<&'static str, u64>,
    pub wire_rejects: u64,
    pub max_request: u64,
    pub bytes_written: u64,
    /// Resync replies sent: bytes as data (`RsData`), bytes as zero ranges (`RsZero`).
    pub rs_data_bytes: u64,
    pub rs_zero_bytes: u64,
}

impl SimStats {
    pub fn merge(&mut self, o: &SimStats) {
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_insert(0) += v;
        }
        self.wire_rejects += o.wire_rejects;
        self.max_request = self.max_request.max(o.max_request);
        self.bytes_written += o.bytes_written;
        self.rs_data_bytes += o.rs_data_bytes;
        self.rs_zero_bytes += o.rs_zero_bytes;
    }
}
