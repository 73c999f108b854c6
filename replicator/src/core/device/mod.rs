//! The local device (DRBD's device): serving without a local disk, and its data generation
//! (generation UUIDs and metadata flags).

pub(crate) mod diskless;
pub(crate) mod generation;
pub(crate) mod local;
