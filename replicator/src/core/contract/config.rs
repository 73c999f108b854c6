//! What the engine is configured with, typed and in engine units (the `resources` crate
//! parses and validates the `.res` file; `runtime::daemon` builds these from its view).

use std::time::Duration;

use rep_resources::{AfterSb0, AfterSb1, AfterSb2, DigestAlg, HmacAlg, Protocol, RrConflict};

pub use rep_resources::OnIoError;

/// Static facts about the resource on this node, from the `.res` file.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub resource: String,
    pub node: String,
    pub minor: u32,
    pub device: String,
    pub protocol: Protocol,
    /// A peer is configured (two host sections): `up` goes to WFConnection, not StandAlone.
    pub has_peer: bool,
    pub allow_two_primaries: bool,
    pub al_extents: u32,
    pub fencing: rep_resources::Fencing,
    pub on_io_error: OnIoError,
    pub peer: PeerSettings,
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
