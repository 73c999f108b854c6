//! Where the metadata lives: `MetaLayout` computed from the data size, the `meta-disk` kind
//! and the AL geometry (docs/drbd-semantics.md §7.1). All sizes are multiples of `BLOCK_BYTES`.
//!
//! - Internal, at the END of the backing device: `[data][bitmap][AL ring][sb slot 0][sb slot 1]`.
//!   The superblock sits at a position that depends only on the backing size, so `open` can
//!   find it before it knows the AL geometry.
//! - External flex (whole meta device): `[sb slot 0][sb slot 1][AL ring][bitmap]`.
//! - External indexed N: the same order inside the 128 MiB slot starting at N × 128 MiB.
//!
//! Never does I/O.

use serde::Serialize;

use super::MetaError;

/// Unit of layout arithmetic and of metadata I/O.
pub const BLOCK_BYTES: u64 = 4096;
/// Data bytes covered by one bitmap bit (DRBD's BM_BLOCK_SIZE).
pub const BITMAP_BLOCK_BYTES: u64 = 4096;
/// Bytes of one on-disk bitmap page (persisted and tracked as dirty as a unit).
pub const BITMAP_PAGE_BYTES: u64 = 4096;
/// Data blocks covered by one bitmap page: 32768 bits × 4 KiB = 128 MiB of data per page.
pub const BITMAP_PAGE_BITS: u64 = BITMAP_PAGE_BYTES * 8;
/// One activity-log extent (DRBD AL_EXTENT_SHIFT = 22).
pub const AL_EXTENT_BYTES: u64 = 4 << 20;
/// Superblock slots; writes alternate so a torn write always leaves the other slot intact.
pub const SUPERBLOCK_SLOTS: u64 = 2;
/// Size of one superblock slot.
pub const SUPERBLOCK_BYTES: u64 = 4096;
/// One activity-log transaction block.
pub const AL_TRANSACTION_BYTES: u64 = 4096;
/// Default AL ring: 1 stripe × 8 blocks = 32 KiB (DRBD's default `--al-stripe-size-kB 32`).
pub const AL_STRIPES_DEFAULT: u32 = 1;
pub const AL_STRIPE_BLOCKS_DEFAULT: u32 = 8;
/// Upper bound on the AL ring (blocks): keeps create-md and AL recovery reads bounded
/// (DRBD allows up to 1 GiB; 16 MiB is plenty for `al-extents` ≤ 65534).
pub const AL_RING_BLOCKS_MAX: u32 = 4096;
/// Largest exported device (docs/drbd-semantics.md §12); its bitmap is 512 MiB.
pub const DEVICE_BYTES_MAX: u64 = 16 << 40;
/// Slot size of `meta-disk DEV [N]` (DRBD's fixed 128 MiB indexed slots).
pub const EXTERNAL_INDEXED_SLOT_BYTES: u64 = 128 << 20;
/// Smallest usable data size we accept: one AL extent. Anything smaller is surely a mistake.
pub const USABLE_BYTES_MIN: u64 = AL_EXTENT_BYTES;

const SUPERBLOCK_AREA_BYTES: u64 = SUPERBLOCK_SLOTS * SUPERBLOCK_BYTES;

const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(BITMAP_BLOCK_BYTES == BLOCK_BYTES);
const _: () = assert!(BITMAP_PAGE_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(SUPERBLOCK_BYTES == BLOCK_BYTES);
const _: () = assert!(AL_TRANSACTION_BYTES == BLOCK_BYTES);
const _: () = assert!(AL_EXTENT_BYTES.is_multiple_of(BITMAP_BLOCK_BYTES));
const _: () = assert!(SUPERBLOCK_SLOTS == 2);
const _: () = assert!(DEVICE_BYTES_MAX.is_multiple_of(AL_EXTENT_BYTES));
// Bitmap of the largest device: 16 TiB / 4 KiB / 8 = 512 MiB (docs/drbd-semantics.md §12).
const _: () = assert!(DEVICE_BYTES_MAX / BITMAP_BLOCK_BYTES / 8 == 512 << 20);
// AL extent numbers are stored as u32 on disk; every extent of the largest device fits.
const _: () = assert!(DEVICE_BYTES_MAX / AL_EXTENT_BYTES < u32::MAX as u64);
// Bit numbers of the largest device fit a u32 page index times page bits in u64 easily; the
// AL ring of the largest geometry must fit an indexed slot together with a tiny bitmap.
const _: () = assert!(
    (AL_RING_BLOCKS_MAX as u64) * AL_TRANSACTION_BYTES + SUPERBLOCK_AREA_BYTES
        < EXTERNAL_INDEXED_SLOT_BYTES
);

/// Where the metadata of a device is kept (`meta-disk` in the resource file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MetaDiskKind {
    /// `meta-disk internal;`: at the end of the backing device.
    Internal,
    /// `meta-disk /dev/X;`: the whole external device.
    ExternalFlex,
    /// `meta-disk /dev/X [N];`: the 128 MiB slot N of the external device.
    ExternalIndexed(u32),
}

impl MetaDiskKind {
    /// On-disk code, stored in the superblock.
    pub(crate) fn code(self) -> (u8, u32) {
        match self {
            MetaDiskKind::Internal => (0, 0),
            MetaDiskKind::ExternalFlex => (1, 0),
            MetaDiskKind::ExternalIndexed(n) => (2, n),
        }
    }

    pub(crate) fn from_code(code: u8, index: u32) -> Option<Self> {
        match code {
            0 => Some(MetaDiskKind::Internal),
            1 => Some(MetaDiskKind::ExternalFlex),
            2 => Some(MetaDiskKind::ExternalIndexed(index)),
            _ => None,
        }
    }
}

/// Geometry of the activity-log ring (`--al-stripes`, `--al-stripe-size-kB` at create-md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AlGeometry {
    pub stripes: u32,
    pub stripe_blocks: u32,
}

impl Default for AlGeometry {
    fn default() -> Self {
        AlGeometry {
            stripes: AL_STRIPES_DEFAULT,
            stripe_blocks: AL_STRIPE_BLOCKS_DEFAULT,
        }
    }
}

impl AlGeometry {
    /// Number of transaction blocks in the ring, after validating the geometry.
    pub fn ring_blocks(self) -> Result<u32, MetaError> {
        let blocks = self.stripes.saturating_mul(self.stripe_blocks);
        // Two blocks at least: recovery tolerates the newest one being torn (al.rs).
        if self.stripes == 0
            || self.stripe_blocks == 0
            || !(2..=AL_RING_BLOCKS_MAX).contains(&blocks)
        {
            return Err(MetaError::BadAlGeometry {
                why: format!(
                    "{} stripes × {} blocks: the ring must have 2..={AL_RING_BLOCKS_MAX} blocks of 4 KiB",
                    self.stripes, self.stripe_blocks
                ),
            });
        }
        Ok(blocks)
    }
}

/// Bytes of bitmap (whole 4 KiB pages) needed for `data_bytes` of data.
pub fn bitmap_bytes_for(data_bytes: u64) -> u64 {
    let bits = data_bytes.div_ceil(BITMAP_BLOCK_BYTES);
    bits.div_ceil(BITMAP_PAGE_BITS) * BITMAP_PAGE_BYTES
}

/// Computed placement of all metadata parts. Immutable: build it with `MetaLayout::compute`.
/// All offsets are absolute byte offsets on the device that holds the metadata (the backing
/// device for `Internal`, the meta device otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaLayout {
    kind: MetaDiskKind,
    al: AlGeometry,
    data_dev_bytes: u64,
    usable_bytes: u64,
    md_offset: u64,
    md_bytes: u64,
    sb_offset: u64,
    al_offset: u64,
    al_bytes: u64,
    bm_offset: u64,
    bm_bytes: u64,
}

impl MetaLayout {
    /// Compute the layout. `data_dev_bytes` is the size of the backing (data) device;
    /// `meta_dev_bytes` the size of the external meta device (ignored for `Internal`).
    pub fn compute(
        kind: MetaDiskKind,
        data_dev_bytes: u64,
        meta_dev_bytes: u64,
        al: AlGeometry,
    ) -> Result<MetaLayout, MetaError> {
        let al_bytes = u64::from(al.ring_blocks()?) * AL_TRANSACTION_BYTES;
        let fixed_bytes = SUPERBLOCK_AREA_BYTES + al_bytes;
        // Data beyond the last whole block is never exported (and never holds metadata).
        let data_blocks_bytes = data_dev_bytes - data_dev_bytes % BLOCK_BYTES;
        let layout = match kind {
            MetaDiskKind::Internal => {
                // Circular dependency: the bitmap size depends on the data size, which is what
                // is left after the bitmap. Like DRBD, size the bitmap for everything that is
                // not superblock or AL; it then covers the (smaller) data area for sure, and
                // at most one bitmap page is wasted.
                let min_bytes = fixed_bytes + BITMAP_PAGE_BYTES + USABLE_BYTES_MIN;
                if data_blocks_bytes < min_bytes {
                    return Err(MetaError::BackingTooSmall {
                        backing_bytes: data_dev_bytes,
                        min_bytes,
                        short_by_bytes: min_bytes - data_blocks_bytes,
                    });
                }
                let bm_bytes = bitmap_bytes_for(data_blocks_bytes - fixed_bytes);
                let usable_bytes = data_blocks_bytes - fixed_bytes - bm_bytes;
                let md_offset = usable_bytes;
                MetaLayout {
                    kind,
                    al,
                    data_dev_bytes,
                    usable_bytes,
                    md_offset,
                    md_bytes: fixed_bytes + bm_bytes,
                    bm_offset: md_offset,
                    bm_bytes,
                    al_offset: md_offset + bm_bytes,
                    al_bytes,
                    sb_offset: md_offset + bm_bytes + al_bytes,
                }
            }
            MetaDiskKind::ExternalFlex | MetaDiskKind::ExternalIndexed(_) => {
                if data_blocks_bytes < USABLE_BYTES_MIN {
                    return Err(MetaError::BackingTooSmall {
                        backing_bytes: data_dev_bytes,
                        min_bytes: USABLE_BYTES_MIN,
                        short_by_bytes: USABLE_BYTES_MIN - data_blocks_bytes,
                    });
                }
                let usable_bytes = data_blocks_bytes;
                let bm_bytes = bitmap_bytes_for(usable_bytes);
                let md_bytes = fixed_bytes + bm_bytes;
                let (md_offset, area_bytes, what) = match kind {
                    MetaDiskKind::ExternalIndexed(n) => {
                        let start = u64::from(n) * EXTERNAL_INDEXED_SLOT_BYTES;
                        if md_bytes > EXTERNAL_INDEXED_SLOT_BYTES {
                            return Err(MetaError::MetaDevTooSmall {
                                have_bytes: EXTERNAL_INDEXED_SLOT_BYTES,
                                need_bytes: md_bytes,
                                what: "an indexed 128 MiB slot covers at most ~4 TiB of data; use flexible external meta-data",
                            });
                        }
                        (
                            start,
                            EXTERNAL_INDEXED_SLOT_BYTES,
                            "indexed slot must lie within the meta device",
                        )
                    }
                    _ => (0, md_bytes, "superblock, activity log and bitmap"),
                };
                let need_bytes = md_offset + area_bytes;
                if meta_dev_bytes < need_bytes {
                    return Err(MetaError::MetaDevTooSmall {
                        have_bytes: meta_dev_bytes,
                        need_bytes,
                        what,
                    });
                }
                MetaLayout {
                    kind,
                    al,
                    data_dev_bytes,
                    usable_bytes,
                    md_offset,
                    md_bytes,
                    sb_offset: md_offset,
                    al_offset: md_offset + SUPERBLOCK_AREA_BYTES,
                    al_bytes,
                    bm_offset: md_offset + SUPERBLOCK_AREA_BYTES + al_bytes,
                    bm_bytes,
                }
            }
        };
        if layout.usable_bytes > DEVICE_BYTES_MAX {
            return Err(MetaError::DeviceTooLarge {
                usable_bytes: layout.usable_bytes,
                max_bytes: DEVICE_BYTES_MAX,
            });
        }
        layout.check_invariants();
        Ok(layout)
    }

    /// Byte offset of superblock slot 0 without knowing the AL geometry: `open` reads the
    /// superblock first and learns the geometry from it.
    pub fn superblock_offset(kind: MetaDiskKind, data_dev_bytes: u64) -> Option<u64> {
        match kind {
            MetaDiskKind::Internal => {
                let end = data_dev_bytes - data_dev_bytes % BLOCK_BYTES;
                end.checked_sub(SUPERBLOCK_AREA_BYTES)
            }
            MetaDiskKind::ExternalFlex => Some(0),
            MetaDiskKind::ExternalIndexed(n) => Some(u64::from(n) * EXTERNAL_INDEXED_SLOT_BYTES),
        }
    }

    fn check_invariants(&self) {
        for (name, v) in [
            ("usable", self.usable_bytes),
            ("md_offset", self.md_offset),
            ("md_bytes", self.md_bytes),
            ("sb_offset", self.sb_offset),
            ("al_offset", self.al_offset),
            ("bm_offset", self.bm_offset),
            ("bm_bytes", self.bm_bytes),
        ] {
            assert!(
                v.is_multiple_of(BLOCK_BYTES),
                "layout {name} {v} not block aligned"
            );
        }
        assert!(
            self.bm_bytes >= bitmap_bytes_for(self.usable_bytes),
            "bitmap too small for the data"
        );
        let end = self.md_offset + self.md_bytes;
        assert!(self.sb_offset >= self.md_offset);
        assert!(self.sb_offset + SUPERBLOCK_AREA_BYTES <= end);
        assert!(self.al_offset >= self.md_offset);
        assert!(self.al_offset + self.al_bytes <= end);
        assert!(self.bm_offset >= self.md_offset);
        assert!(self.bm_offset + self.bm_bytes <= end);
        if self.kind == MetaDiskKind::Internal {
            // Internal metadata never overlaps the exported data.
            assert!(self.usable_bytes <= self.md_offset);
            assert!(end <= self.data_dev_bytes);
        }
    }

    pub fn kind(&self) -> MetaDiskKind {
        self.kind
    }
    pub fn al_geometry(&self) -> AlGeometry {
        self.al
    }
    /// Size of the data device this layout was computed for.
    pub fn data_dev_bytes(&self) -> u64 {
        self.data_dev_bytes
    }
    /// Exported (usable) data size: backing − metadata for internal, the whole data device
    /// (rounded down to 4 KiB) for external.
    pub fn usable_bytes(&self) -> u64 {
        self.usable_bytes
    }
    /// Start and size of the whole metadata area (what create-md writes, and nothing else).
    pub fn md_offset(&self) -> u64 {
        self.md_offset
    }
    pub fn md_bytes(&self) -> u64 {
        self.md_bytes
    }
    /// Byte offset of superblock slot `slot` (0 or 1).
    pub fn sb_slot_offset(&self, slot: u32) -> u64 {
        assert!(u64::from(slot) < SUPERBLOCK_SLOTS);
        self.sb_offset + u64::from(slot) * SUPERBLOCK_BYTES
    }
    pub fn al_offset(&self) -> u64 {
        self.al_offset
    }
    pub fn al_bytes(&self) -> u64 {
        self.al_bytes
    }
    /// Transaction blocks in the AL ring.
    pub fn al_ring_blocks(&self) -> u32 {
        u32::try_from(self.al_bytes / AL_TRANSACTION_BYTES).unwrap_or(u32::MAX)
    }
    /// Byte offset of AL ring position `ring_slot`. Like DRBD's
    /// `al_tr_number_to_on_disk_sector`, consecutive transactions go round-robin over the
    /// stripes, so with several stripes consecutive writes land on different spindles.
    pub fn al_block_offset(&self, ring_slot: u32) -> u64 {
        let blocks = self.al_ring_blocks();
        assert!(
            ring_slot < blocks,
            "AL ring slot {ring_slot} outside ring of {blocks}"
        );
        let stripes = self.al.stripes;
        let t = (ring_slot % stripes) * self.al.stripe_blocks + ring_slot / stripes;
        self.al_offset + u64::from(t) * AL_TRANSACTION_BYTES
    }
    pub fn bm_offset(&self) -> u64 {
        self.bm_offset
    }
    /// Bytes reserved for the bitmap on disk (whole pages).
    pub fn bitmap_bytes(&self) -> u64 {
        self.bm_bytes
    }
    /// Bitmap bits in use: one per 4 KiB of usable data.
    pub fn bitmap_bits(&self) -> u64 {
        self.usable_bytes.div_ceil(BITMAP_BLOCK_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn internal_1gib_matches_drbd_rule_of_thumb() {
        let l = MetaLayout::compute(MetaDiskKind::Internal, GIB, 0, AlGeometry::default()).unwrap();
        assert_eq!(l.bitmap_bytes(), 32 << 10);
        assert_eq!(l.md_bytes(), (32 + 32 + 8) << 10);
        assert_eq!(l.usable_bytes(), GIB - l.md_bytes());
        assert_eq!(l.sb_slot_offset(1) + SUPERBLOCK_BYTES, GIB);
        assert!(l.bitmap_bits() * BITMAP_BLOCK_BYTES >= l.usable_bytes());
    }

    #[test]
    fn internal_unaligned_backing_rounds_down() {
        let l = MetaLayout::compute(MetaDiskKind::Internal, GIB + 1000, 0, AlGeometry::default())
            .unwrap();
        assert_eq!(l.sb_slot_offset(1) + SUPERBLOCK_BYTES, GIB);
        assert_eq!(
            MetaLayout::superblock_offset(MetaDiskKind::Internal, GIB + 1000),
            Some(l.sb_slot_offset(0))
        );
    }

    #[test]
    fn internal_bitmap_always_covers_data() {
        // Goal: the circular bitmap/data sizing never under-sizes the bitmap. Method: sizes
        // around page boundaries (128 MiB of data per bitmap page).
        for mib in [5u64, 127, 128, 129, 255, 256, 257, 1000, 4096, 100 * 1024] {
            for delta in [0u64, 4096, 40960, 45056, 49152] {
                let size = (mib << 20) + delta;
                let l = MetaLayout::compute(MetaDiskKind::Internal, size, 0, AlGeometry::default())
                    .unwrap();
                assert!(l.bitmap_bytes() >= bitmap_bytes_for(l.usable_bytes()));
                // At most one page wasted.
                assert!(l.bitmap_bytes() <= bitmap_bytes_for(l.usable_bytes()) + BITMAP_PAGE_BYTES);
                assert!(l.usable_bytes() + l.md_bytes() <= size);
            }
        }
    }

    #[test]
    fn internal_too_small_names_minimum_and_shortfall() {
        let err = MetaLayout::compute(MetaDiskKind::Internal, 1 << 20, 0, AlGeometry::default())
            .unwrap_err();
        match err {
            MetaError::BackingTooSmall {
                backing_bytes,
                min_bytes,
                short_by_bytes,
            } => {
                assert_eq!(backing_bytes, 1 << 20);
                assert_eq!(min_bytes, USABLE_BYTES_MIN + (8 + 32 + 4) * 1024);
                assert_eq!(short_by_bytes, min_bytes - (1 << 20));
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn too_large_device_is_refused() {
        let err = MetaLayout::compute(
            MetaDiskKind::ExternalFlex,
            DEVICE_BYTES_MAX + 4096,
            u64::MAX,
            AlGeometry::default(),
        )
        .unwrap_err();
        assert!(matches!(err, MetaError::DeviceTooLarge { .. }), "{err}");
        MetaLayout::compute(
            MetaDiskKind::ExternalFlex,
            DEVICE_BYTES_MAX,
            u64::MAX,
            AlGeometry::default(),
        )
        .unwrap();
    }

    #[test]
    fn external_flex_and_indexed() {
        let l = MetaLayout::compute(
            MetaDiskKind::ExternalFlex,
            GIB,
            1 << 20,
            AlGeometry::default(),
        )
        .unwrap();
        assert_eq!(l.usable_bytes(), GIB);
        assert_eq!(l.sb_slot_offset(0), 0);
        assert_eq!(l.al_offset(), 8192);
        assert_eq!(l.bm_offset(), 8192 + 32768);
        let err = MetaLayout::compute(
            MetaDiskKind::ExternalFlex,
            GIB,
            64 << 10,
            AlGeometry::default(),
        )
        .unwrap_err();
        match err {
            MetaError::MetaDevTooSmall {
                need_bytes,
                have_bytes,
                ..
            } => {
                assert_eq!(need_bytes, 72 << 10);
                assert_eq!(have_bytes, 64 << 10);
                assert!(err.to_string().contains("73728"), "{err}");
            }
            e => panic!("unexpected {e}"),
        }
        let l = MetaLayout::compute(
            MetaDiskKind::ExternalIndexed(2),
            GIB,
            3 * EXTERNAL_INDEXED_SLOT_BYTES,
            AlGeometry::default(),
        )
        .unwrap();
        assert_eq!(l.sb_slot_offset(0), 2 * EXTERNAL_INDEXED_SLOT_BYTES);
        let err = MetaLayout::compute(
            MetaDiskKind::ExternalIndexed(3),
            GIB,
            3 * EXTERNAL_INDEXED_SLOT_BYTES,
            AlGeometry::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, MetaError::MetaDevTooSmall { need_bytes, .. } if need_bytes == 4 * EXTERNAL_INDEXED_SLOT_BYTES)
        );
        // 8 TiB of data needs a 256 MiB bitmap: does not fit an indexed slot.
        let err = MetaLayout::compute(
            MetaDiskKind::ExternalIndexed(0),
            8 << 40,
            u64::MAX,
            AlGeometry::default(),
        )
        .unwrap_err();
        assert!(matches!(err, MetaError::MetaDevTooSmall { .. }), "{err}");
    }

    #[test]
    fn al_stripes_map_round_robin_and_stay_inside_ring() {
        let al = AlGeometry {
            stripes: 4,
            stripe_blocks: 2,
        };
        let l = MetaLayout::compute(MetaDiskKind::ExternalFlex, GIB, GIB, al).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for s in 0..8 {
            let off = l.al_block_offset(s);
            assert!(off >= l.al_offset() && off < l.al_offset() + l.al_bytes());
            assert!(seen.insert(off));
        }
        assert_eq!(
            l.al_block_offset(1) - l.al_block_offset(0),
            2 * AL_TRANSACTION_BYTES
        );
        assert!(AlGeometry {
            stripes: 1,
            stripe_blocks: 1
        }
        .ring_blocks()
        .is_err());
        assert!(AlGeometry {
            stripes: 0,
            stripe_blocks: 8
        }
        .ring_blocks()
        .is_err());
    }
}
