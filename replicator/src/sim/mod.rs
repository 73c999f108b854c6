//! Test doubles for deterministic simulation (docs/architecture.md §11.4): simulated disks with a volatile write
//! cache that a crash loses, the data model that says what they must hold, and the clock-free
//! driver loop that runs two engines against them. Compiled for tests and for the simulator
//! only; never used by repd.

pub mod cluster;
pub mod config;
pub mod disk;
mod generation_check;
pub mod model;
mod reconfigure;
pub mod res;
pub mod watch;
