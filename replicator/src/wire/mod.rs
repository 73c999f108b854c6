//! Peer protocol (docs/drbd-semantics.md §6): our own framing, DRBD's concepts. Pure and bounds-checked:
//! peer input is untrusted, and every decoder returns a [`WireError`] instead of panicking.

#[macro_use]
mod declare;

pub mod auth;
pub mod codes;
pub mod field;
pub mod frame;
pub mod packet;

#[cfg(test)]
mod golden_tests;

pub use codes::PROTOCOL_VERSION;
pub use frame::{FrameHeader, WireError, HEADER_BYTES, MAX_PAYLOAD_BYTES};
pub use packet::{Channel, Packet, Params};
