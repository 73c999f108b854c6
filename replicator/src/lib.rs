//! rep-replicator: the engine of rep.
//!
//! - `states`: DRBD's vocabulary of roles, connection and disk states.
//! - `core`: the sans-IO state machine (roles, states, UUIDs, requests) — DESIGN.md §3.
//! - `meta`: on-disk metadata (superblock, activity log, bitmap) — DESIGN.md §5.
//! - `digest`: per-block digests for verify and csums.
//! - `wire`: peer packets, pure and bounds-checked — DESIGN.md §6.
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
/// Simulation doubles (simulated disks), used by the tests and the simulator.
#[forbid(unsafe_code)]
pub mod sim;
#[forbid(unsafe_code)]
pub mod states;
#[forbid(unsafe_code)]
pub mod wire;
