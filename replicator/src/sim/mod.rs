//! Test doubles for deterministic simulation (STYLE.md §7): a disk with a volatile write cache
//! that a crash loses, and the clock-free driver loop that runs engines against them.
//! Compiled for tests and for the `sim` feature only; never part of repd.

pub mod cluster;
pub mod disk;
