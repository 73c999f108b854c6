//! What the daemon shows the outside: the status files (and, as the runtime is split, the
//! control socket and the metrics endpoint).

pub mod snapshot;
pub mod status;
