//! rep-replicator: the engine of rep.
//!
//! - `states`: DRBD's vocabulary of roles, connection and disk states.
//! - `core`: the sans-IO state machine (roles, states, UUIDs, requests) — docs/architecture.md §3.
//! - `meta`: on-disk metadata (superblock, activity log, bitmap) — docs/architecture.md §10.
//! - `digest`: per-block digests for verify and csums.
//! - `wire`: peer packets, pure and bounds-checked — docs/drbd-semantics.md §6.
//! - `control`: control-socket messages and status renderings, shared with `repadm`.
//! - `runtime` (feature `runtime`): the io_uring driver and the `repd` daemon.

#[forbid(unsafe_code)]
pub mod control;
#[forbid(unsafe_code)]
pub mod core;
#[forbid(unsafe_code)]
pub mod digest;
#[forbid(unsafe_code)]
pub mod meta;
#[cfg(feature = "runtime")]
pub mod runtime;
/// The deterministic simulator (simulated network, disks, clients): tests and fuzzing only.
#[cfg(any(test, feature = "sim"))]
#[forbid(unsafe_code)]
pub mod sim;
#[forbid(unsafe_code)]
pub mod states;
#[forbid(unsafe_code)]
pub mod wire;
#[forbid(unsafe_code)]
pub mod witness;
