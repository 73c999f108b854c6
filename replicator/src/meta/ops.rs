//! The metadata operations the engine asks for and what an attach hands it: defined here, in
//! the metadata module, so that `meta` never depends on the engine (the engine uses these).

use super::superblock::{GenerationUuids, MdFlags};

/// Metadata updates, executed in the order they are emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOpKind {
    /// Rewrite the superblock with these generation UUIDs and flags. The data device is
    /// flushed first: a superblock can claim the data consistent, UpToDate or cleanly closed,
    /// which must not get ahead of the data itself (external meta-disks especially).
    Superblock {
        uuids: GenerationUuids,
        flags: MdFlags,
        /// Whether the device is being closed cleanly (no AL replay needed on next attach).
        clean: bool,
    },
    /// Write these encoded bitmap pages (index, 4 KiB page). `flush_data`: bits were cleared,
    /// so the data they stand for is flushed to the data device before the pages are written.
    BitmapPages {
        pages: Vec<(u64, Vec<u8>)>,
        flush_data: bool,
    },
    /// Write one encoded activity-log transaction block to the ring. `flush_data`: it evicts
    /// an extent, which a crash then no longer replays, so the writes to that extent are
    /// flushed to the data device first (they may still sit in its volatile cache; with an
    /// external meta-disk the metadata flush does not cover them).
    AlTransaction {
        block: Vec<u8>,
        ring_slot: u64,
        flush_data: bool,
    },
}

impl MetaOpKind {
    /// The data device must be flushed before this metadata write (see the variants).
    pub fn flushes_data_first(&self) -> bool {
        match self {
            MetaOpKind::Superblock { .. } => true,
            MetaOpKind::BitmapPages { flush_data, .. } => *flush_data,
            MetaOpKind::AlTransaction { flush_data, .. } => *flush_data,
        }
    }
}

/// What an attach found on the metadata, handed to the engine by the driver.
#[derive(Debug, Clone)]
pub struct AttachInfo {
    pub usable_bytes: u64,
    pub uuids: GenerationUuids,
    pub flags: MdFlags,
    /// The device was not closed cleanly last time (crash while attached).
    pub unclean: bool,
    /// The bitmap as loaded, including AL extents replayed after a crash.
    pub bitmap: super::bitmap::Bitmap,
    pub al: super::al::ActivityLog,
}
