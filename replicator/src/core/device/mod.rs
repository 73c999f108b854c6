//! The local device (DRBD's device): serving without a local disk.

pub(crate) mod diskless;
