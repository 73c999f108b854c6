//! Resync and online verify (DRBD's peer-device activities), and the resync rate controller.

pub(crate) mod aux_read;
pub mod limit;
pub(crate) mod limit_feed;
pub mod pace;
pub(crate) mod resync;
pub(crate) mod resync_machine;
pub(crate) mod resync_state;
pub(crate) mod sparse;
pub(crate) mod verify;
pub(crate) mod verify_fix;
pub(crate) mod verify_machine;
pub(crate) mod verify_state;
