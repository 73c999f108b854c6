//! `MetaError`: everything that can go wrong reading, validating or writing metadata.
//! Operating errors (bad disks, corrupt or missing metadata, wrong sizes) are values of this
//! type; broken internal invariants are `assert!`s instead (docs/architecture.md §2.4).

/// Errors of the metadata layer. Each variant says when it happens.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The backing device cannot hold internal metadata plus the minimum usable data size.
    #[error(
        "backing device too small for internal meta-data: {backing_bytes} bytes, need at least \
         {min_bytes} bytes ({short_by_bytes} bytes short)"
    )]
    BackingTooSmall {
        backing_bytes: u64,
        min_bytes: u64,
        short_by_bytes: u64,
    },

    /// The usable data size would exceed `DEVICE_BYTES_MAX` (the bitmap would not fit our limits).
    #[error("device too large: {usable_bytes} bytes of data, the maximum is {max_bytes} bytes")]
    DeviceTooLarge { usable_bytes: u64, max_bytes: u64 },

    /// The external meta device (or the 128 MiB slot of an indexed one) cannot hold the
    /// superblock, activity log and bitmap for this data device.
    #[error(
        "external meta-data device too small: {have_bytes} bytes available, {need_bytes} bytes \
         needed ({what})"
    )]
    MetaDevTooSmall {
        have_bytes: u64,
        need_bytes: u64,
        what: &'static str,
    },

    /// `al-extents` / AL geometry outside what the AL ring can represent.
    #[error("bad activity-log geometry: {why}")]
    BadAlGeometry { why: String },

    /// A block (superblock slot or AL transaction) does not start with our magic.
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },

    /// A block has our magic but its crc32c does not match: a torn or corrupted write.
    #[error("crc32c mismatch in slot {slot}: stored {expected:#010x}, computed {found:#010x}")]
    BadCrc {
        slot: u32,
        expected: u32,
        found: u32,
    },

    /// The superblock was written by a newer (or unknown) format version.
    #[error("unsupported meta-data version {found} (this build understands version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },

    /// A crc-valid block holds field values that cannot be right (offsets outside the
    /// metadata area, unknown flag bits, sizes that disagree with the device, ...).
    #[error("inconsistent meta-data: {field}: {why}")]
    Inconsistent { field: &'static str, why: String },

    /// Neither superblock slot carries our magic: the device was never initialised.
    #[error("no rep metadata found on {where_}; run `repadm create-md RES` first")]
    NoMetadata { where_: String },

    /// Both superblock slots carry our magic but neither validates.
    #[error(
        "both superblock slots on {where_} are corrupt (slot 0: {slot0}; slot 1: {slot1}); the \
         sync state is lost: recreate the metadata with `repadm create-md --force RES` and let a \
         full sync from the peer (or `primary --force` on the node with good data) rebuild it"
    )]
    BothSlotsCorrupt {
        where_: String,
        slot0: String,
        slot1: String,
    },

    /// `create-md` found valid metadata and `force` was not given.
    #[error(
        "valid rep metadata already exists on {where_} (current UUID {current_uuid:016X}); use \
         `repadm create-md --force RES` to overwrite it, which destroys the sync state (the \
         bitmap and generation UUIDs) and forces a full sync"
    )]
    AlreadyExists { where_: String, current_uuid: u64 },

    /// A compressed (RLE) bitmap from a peer or a file is malformed.
    #[error("bad RLE bitmap: {why}")]
    BadRle { why: String },

    /// A buffer handed to a decoder or writer has the wrong length or index.
    #[error("{what}: expected {expected}, got {found}")]
    BadLength {
        what: &'static str,
        expected: u64,
        found: u64,
    },

    /// Reading, writing, flushing or sizing a device failed.
    #[error("{op} at byte offset {off} failed: {source}")]
    Io {
        op: &'static str,
        off: u64,
        #[source]
        source: std::io::Error,
    },
}

impl MetaError {
    /// True for errors that mean "there is no (usable) metadata here" rather than an I/O problem.
    pub fn is_missing_metadata(&self) -> bool {
        matches!(
            self,
            MetaError::NoMetadata { .. } | MetaError::BothSlotsCorrupt { .. }
        )
    }
}
