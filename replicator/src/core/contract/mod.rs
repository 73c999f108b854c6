//! The engine's contract with its drivers (daemon, simulator): inputs and outputs, ids,
//! configuration, refusals, the entropy source, and the split-brain report.

pub mod config;
pub mod failure;
pub(crate) mod ids;
pub mod io;
pub mod refusal;
pub mod rng;
pub mod split_brain;
