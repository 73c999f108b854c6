//! The sans-IO engine core (docs/architecture.md §3): no sockets, files, clocks or entropy in here.
//! A test (`core_is_sans_io`) fails if this folder mentions tokio, std::fs, std::net or
//! SystemTime.

#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_lossless
)]

mod admin;
mod after_sb;
mod client;
pub mod config;
mod diskless;
pub mod engine;
mod fencing;
mod handshake;
mod ids;
pub mod io;
mod io_table;
pub mod pace;
pub mod peer;
mod peer_rx;
mod promotion;
mod receiver;
mod reconfigure;
pub mod refusal;
mod renegotiate;
mod replication;
mod requests;
mod resync;
mod resync_state;
pub mod rng;
mod transfer_log;
/// The state vocabulary lives beside the core (the wire format encodes it too).
pub use crate::states as state;
pub mod split_brain;
mod state_change;
pub mod uuid_compare;
mod verify;

pub use config::{EngineConfig, OnIoError, PeerSettings};
pub use engine::{Counters, Engine};
pub use ids::IdMap;
pub use io::{
    AdminCmd, AdminId, AttachInfo, ClientError, ClientOp, DiskOpKind, HashAlg, Input, IoFailure,
    IoId, IoResult, LinkId, LinkLoss, MetaOpKind, Output, PeerDiskOp, ReqId,
};
pub use refusal::Refusal;
pub use resync_state::ResyncInfo;
pub use state::{ConnState, DiskState, Role};
