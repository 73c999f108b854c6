//! The sans-IO engine core (DESIGN.md §3): no sockets, files, clocks or entropy in here.
//! A test (`core_is_sans_io`) fails if this folder mentions tokio, std::fs, std::net or
//! SystemTime.

mod admin;
mod after_sb;
mod diskless;
pub mod engine;
mod ids;
pub mod io;
pub mod pace;
pub mod peer;
mod reconfigure;
pub mod refusal;
mod replicate;
mod requests;
mod resync;
pub mod rng;
pub mod state;
pub mod uuid_compare;
mod verify;

pub use engine::{Counters, Engine, EngineConfig, OnIoError};
pub use io::{
    AdminCmd, AdminId, AttachInfo, ClientError, ClientOp, DiskOpKind, HashAlg, Input, IoFailure,
    IoId, IoResult, LinkId, LinkLoss, MetaOpKind, Output, PeerDiskOp, ReqId,
};
pub use refusal::Refusal;
pub use state::{ConnState, DiskState, Role};
