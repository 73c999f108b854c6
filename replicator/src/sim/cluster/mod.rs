//! A two-node cluster in one thread: two engines, a simulated network and simulated storage,
//! driven by a seeded event queue. Everything is deterministic in the seed, so a failing
//! schedule replays exactly.
//!
//! - Network: two FIFO channels per direction (data, meta) with random latency; every frame
//!   passes the wire limits the real decoder enforces (a bulk frame beyond `MAX_DATA_BYTES`, or
//!   a small packet that does not survive encode → decode, drops the link as a protocol error
//!   at the receiver, as `runtime::link` does). A partition holds frames instead of losing
//!   them (TCP retransmits; a stream never skips a frame) until it heals or the link is closed;
//!   it can be one-way. No link can be set up while any direction is cut.
//! - Storage: `SimDisk` data devices and `SimMetaDev` external metadata devices, both with a
//!   volatile cache, failing on demand (`set_disk_failing`, `fail_flushes`), torn by power loss
//!   (`crash`, `cut_meta_power_after`). Writes still in flight when power is lost reach the
//!   cache in part.
//! - Witness (`SimConfig::witness`, `witness.rs`): a diskless third node; each data node's
//!   link to it is cut by partitions and lost with the node, each end noticing on its own
//!   (`Input::WitnessSeen` for the node); fence-peer is relayed through it by the daemon's own
//!   `witness::relay::Relay`. With it: at most one data node can write, a node that comes to
//!   write without its data peer holds every acknowledged write, and (protocol C) no
//!   handshake detects a split brain.
//! - Clients: seeded writes from 512 B to the NBD maximum of 32 MiB at 512-byte granularity,
//!   FUA, FLUSH, TRIM, WRITE_ZEROES and reads, tracked by the data model (`sim/model.rs`).
//! - Checks after every input an engine handles: both engines' `check_invariants`, never two
//!   connected Primaries, no protocol error on the link, reads return what the model allows, and
//!   a write that just became durable-required is in the durable image of every UpToDate node
//!   that must hold it. Whole durable images are checked whenever a node reports UpToDate anew
//!   (attach, restart, end of a resync) or is promoted, and at convergence (`check_converged`).
//!   Every change of a node's generation UUIDs and metadata flags obeys DRBD's rules
//!   (`sim/generation_check.rs`).
//! - No silent "UpToDate with bits": `BITS_SETTLE_INPUTS` inputs (or `BITS_SETTLE_TIME`,
//!   whichever comes first) after a handshake decided, a
//!   node that is Connected and UpToDate/UpToDate has no bit set, unless it tells the operator
//!   why (`Engine::oos_notice`); a resync running meanwhile is fine.
//!   A violation panics with the reason; the test harness turns the panic into a failing seed.

mod checks;
mod clients;
mod driver;
mod event_loop;
mod faults;
mod lifecycle;
mod network;
mod storage;
mod witness;
mod witness_link;
mod world;

pub use world::{Cluster, Node};
// Tests name the configuration through the cluster it builds; its home is `sim::config`.
pub use crate::sim::config::{
    SimConfig, SimStats, Workload, BITS_SETTLE_INPUTS, BITS_SETTLE_TIME, BLOCK, MAX_REQUEST_BYTES,
    SECTOR,
};
