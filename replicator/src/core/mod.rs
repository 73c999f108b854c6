//! The sans-IO engine core (docs/architecture.md §3): no sockets, files, clocks or entropy in here.
//! A test (`core_is_sans_io`) fails if this folder mentions tokio, std::fs, std::net or
//! SystemTime.
//!
//! The folders name DRBD's concepts: the resource's state (`state`), the local device
//! (`device`), the connection to the peer (`connection`), the request path (`request`), the
//! receiving side (`receiver`), resync and verify (`sync`), fencing (`fencing`), pure decision
//! rules (`policy`) and admin commands (`admin`). `contract` is what drivers see. `engine.rs`
//! coordinates; `io_table.rs` routes completions. A file with an `impl Engine` block is never
//! imported by `engine.rs` (`no_import_circle_in_core`).

#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_lossless
)]

mod admin;
mod connection;
mod contract;
mod device;
pub mod engine;
mod fencing;
mod io_table;
mod policy;
mod receiver;
mod request;
pub mod state;
mod sync;

// The module paths drivers have imported from (`core::pace::Pace`,
// `core::split_brain::SbView`, ...), kept.
pub use contract::{config, failure, io, refusal, rng, split_brain};
/// A peer's outdate answer as fence-peer's exit code: the runtime's outdater and witness relay,
/// and the simulator.
pub use policy::fence_code;
/// The quorum rule, for the witness's own `status` (runtime/witness_daemon).
#[cfg(feature = "runtime")]
pub(crate) use policy::quorum;
pub use policy::uuid_compare;
pub use sync::pace;
/// Kept where the simulator and the daemon import them from.
pub mod peer {
    pub use super::contract::config::PeerSettings;
    pub use crate::wire::PROTOCOL_VERSION;
}

pub use crate::wire::PROTOCOL_VERSION;
pub use contract::config::{EngineConfig, OnIoError, PeerSettings};
pub use contract::failure::{NetFailure, OpenFailure, OsError};
pub use contract::ids::{IdMap, NodeId};
pub use contract::io::{
    AdminCmd, AdminId, AttachInfo, ClientError, ClientOp, DiskOpKind, FixSource, HashAlg, Input,
    IoFailure, IoId, IoResult, LinkId, LinkLoss, MetaOpKind, Output, PeerDiskOp, ReqId,
};
pub use contract::refusal::Refusal;
/// The generation changes the simulator checks (`sim/generation_check.rs`).
#[cfg(feature = "sim")]
pub(crate) use device::generation::{GenChange, GenEvent};
pub use engine::{Counters, Engine};
pub use pace::Pace;
pub use rng::Rng;
pub use state::{ConnState, DiskState, Role};
pub use sync::limit::{Limit, LimitInfo};
pub use sync::resync_state::ResyncInfo;
