//! Fencing: the fence-peer handler, peer outdate requests, and the client I/O frozen while it
//! runs. `fence_machine.rs` decides, `fence_peer.rs` and `thaw.rs` are the engine's glue.

pub(crate) mod fence_machine;
pub(crate) mod fence_peer;
pub(crate) mod freeze;
pub(crate) mod thaw;
