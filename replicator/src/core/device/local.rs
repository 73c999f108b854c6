//! The local device's data-side state (DRBD's device): its size, data generation and activity
//! log. The engine owns one; the disk state itself is in `NodeState`, and the bitmap is kept
//! per peer (connection/peers.rs).

use std::collections::HashSet;

use super::generation::Generation;
use crate::meta::al::ActivityLog;

#[derive(Debug, Default)]
pub(crate) struct Device {
    /// The agreed (smaller) size while connected, else ours.
    pub(crate) usable_bytes: u64,
    /// Our own usable size (0 without a disk).
    pub(crate) local_usable_bytes: u64,
    /// Generation UUIDs and metadata flags: changed only through `Engine::gen_change`.
    pub(crate) gen: Generation,
    /// The activity log of the attached disk (present exactly while one is).
    pub(crate) al: Option<ActivityLog>,
    /// Activity-log extents whose transaction is being written: writes to them wait.
    pub(crate) al_writing: HashSet<u64>,
}
