//! Fencing: the fence-peer handler and the client I/O frozen while it runs.

pub(crate) mod fence_peer;
pub(crate) mod freeze;
