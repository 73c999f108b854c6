//! On-disk metadata of one rep device: superblock (two alternating slots), activity log ring
//! and out-of-sync bitmap (docs/architecture.md §10; same concepts as DRBD 8.4, docs/drbd-semantics.md §7, but
//! not byte-compatible with it).
//!
//! Owns: the byte formats, the layout arithmetic, the in-memory models of the AL and bitmap,
//! the generation-UUID rotation primitives, and `MetaStore`, which reads and writes them through
//! a small synchronous `MetaDev` trait.
//! Never: touches data outside the metadata area, draws random numbers (callers pass them in),
//! or decides what a UUID change *means* (that is `core`'s job).

pub mod al;
pub mod attach;
pub mod bitmap;
pub mod error;
pub mod gi;
pub mod layout;
pub mod ops;
pub mod store;
pub mod superblock;

pub use error::MetaError;
