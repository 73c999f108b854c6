//! `MetaStore`: the metadata of one device on storage, read and written through the small
//! synchronous `MetaDev` trait (pread/pwrite/fdatasync). `create_md` initialises it; `open`
//! validates and loads it (superblock slot choice, bitmap, AL recovery); the write methods
//! persist what the engine decided.
//!
//! Never: writes outside the metadata area of the layout (asserted on every write), or
//! interprets the flags/UUIDs (that is `core`).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};

use super::al::{self, ActivityLog, AlTransaction, RecoveredAl};
use super::bitmap::Bitmap;
use super::gi::GiView;
use super::layout::{
    AlGeometry, MetaDiskKind, MetaLayout, AL_TRANSACTION_BYTES, BITMAP_PAGE_BYTES,
    SUPERBLOCK_BYTES, SUPERBLOCK_SLOTS,
};
use super::superblock::{MdGeometry, Superblock, MD_VERSION};
use super::MetaError;

/// Largest single read/write create-md and open issue (zeroing / loading the bitmap): bounds
/// memory for the 512 MiB bitmap of a 16 TiB device.
const IO_CHUNK_BYTES: u64 = 1 << 20;
const _: () = assert!(IO_CHUNK_BYTES.is_multiple_of(BITMAP_PAGE_BYTES));

/// Synchronous positional I/O on the device that holds the metadata.
pub trait MetaDev: Send + Sync {
    /// Fill `buf` from byte offset `off` (short reads are errors).
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Write all of `buf` at byte offset `off`.
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Make previous writes durable (`md-flushes`).
    fn flush(&self) -> io::Result<()>;
    fn size_bytes(&self) -> io::Result<u64>;
}

impl MetaDev for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.read_exact_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.write_all_at(buf, off)
    }
    fn flush(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        let md = self.metadata()?;
        if md.file_type().is_block_device() {
            // A block device's metadata length is 0; seeking to the end gives its size.
            use std::io::{Seek, SeekFrom};
            let mut f = self;
            f.seek(SeekFrom::End(0))
        } else {
            Ok(md.len())
        }
    }
}

fn io_err(op: &'static str, off: u64) -> impl FnOnce(io::Error) -> MetaError {
    move |source| MetaError::Io { op, off, source }
}

fn describe(layout_kind: MetaDiskKind, sb_offset: u64) -> String {
    match layout_kind {
        MetaDiskKind::Internal => {
            format!("the backing device (internal meta-data, superblock at byte {sb_offset})")
        }
        MetaDiskKind::ExternalFlex => "the external meta device".to_string(),
        MetaDiskKind::ExternalIndexed(n) => format!("the external meta device, index {n}"),
    }
}

/// Write `buf` at `off`, asserting it lies inside the metadata area: create-md and the
/// store must never touch user data.
fn md_write(dev: &dyn MetaDev, layout: &MetaLayout, buf: &[u8], off: u64) -> Result<(), MetaError> {
    let end = off + buf.len() as u64;
    assert!(
        off >= layout.md_offset(),
        "metadata write at {off} before the metadata area"
    );
    assert!(
        end <= layout.md_offset() + layout.md_bytes(),
        "metadata write ending at {end} past the metadata area"
    );
    dev.write_at(buf, off)
        .map_err(io_err("metadata write", off))
}

fn zero_range(dev: &dyn MetaDev, layout: &MetaLayout, off: u64, len: u64) -> Result<(), MetaError> {
    let zeros = vec![0u8; IO_CHUNK_BYTES.min(len) as usize];
    let mut pos = off;
    while pos < off + len {
        let n = (off + len - pos).min(IO_CHUNK_BYTES);
        md_write(dev, layout, &zeros[..n as usize], pos)?;
        pos += n;
    }
    Ok(())
}

/// Read and decode both superblock slots starting at `sb_offset`.
fn read_slots(
    dev: &dyn MetaDev,
    sb_offset: u64,
) -> Result<[Result<Superblock, MetaError>; 2], MetaError> {
    let mut buf = vec![0u8; (SUPERBLOCK_SLOTS * SUPERBLOCK_BYTES) as usize];
    dev.read_at(&mut buf, sb_offset)
        .map_err(io_err("superblock read", sb_offset))?;
    let (a, b) = buf.split_at(SUPERBLOCK_BYTES as usize);
    Ok([Superblock::decode(a, 0), Superblock::decode(b, 1)])
}

/// `repadm create-md` with the default AL geometry; see `create_md_with_al`.
pub fn create_md(
    data_dev: &dyn MetaDev,
    meta_dev: Option<&dyn MetaDev>,
    data_bytes: u64,
    kind: MetaDiskKind,
    al_extents: u32,
    device_uuid: u64,
    force: bool,
) -> Result<MetaLayout, MetaError> {
    create_md_with_al(
        data_dev,
        meta_dev,
        data_bytes,
        kind,
        al_extents,
        AlGeometry::default(),
        device_uuid,
        force,
    )
}

/// Write fresh metadata: superblock (current UUID JUST_CREATED, flags 0 → Inconsistent),
/// zeroed AL ring and bitmap. Refuses with `AlreadyExists` if a valid superblock is present
/// and `force` is false. Writes only inside the metadata area. `data_bytes` is the size of
/// the backing device; `meta_dev` is required for external kinds.
#[allow(clippy::too_many_arguments)]
pub fn create_md_with_al(
    data_dev: &dyn MetaDev,
    meta_dev: Option<&dyn MetaDev>,
    data_bytes: u64,
    kind: MetaDiskKind,
    al_extents: u32,
    al_geometry: AlGeometry,
    device_uuid: u64,
    force: bool,
) -> Result<MetaLayout, MetaError> {
    let dev: &dyn MetaDev = match (kind, meta_dev) {
        (MetaDiskKind::Internal, _) => data_dev,
        (_, Some(m)) => m,
        (_, None) => {
            return Err(MetaError::Inconsistent {
                field: "meta_dev",
                why: "external meta-disk given without a meta device".into(),
            })
        }
    };
    let meta_dev_bytes = match kind {
        MetaDiskKind::Internal => data_bytes,
        _ => dev.size_bytes().map_err(io_err("meta device size", 0))?,
    };
    let layout = MetaLayout::compute(kind, data_bytes, meta_dev_bytes, al_geometry)?;
    al::check_al_extents(al_extents, layout.al_ring_blocks())
        .map_err(|why| MetaError::BadAlGeometry { why })?;
    let where_ = describe(kind, layout.sb_slot_offset(0));
    if !force {
        if let Some(sb) = read_slots(dev, layout.sb_slot_offset(0))?
            .into_iter()
            .find_map(Result::ok)
        {
            return Err(MetaError::AlreadyExists {
                where_,
                current_uuid: sb.uuids.current,
            });
        }
    }
    // Order matters for a crash in the middle: first invalidate both superblock slots (so a
    // stale one can never win with a higher seq), then clear AL and bitmap, then write the
    // new superblock last.
    zero_range(
        dev,
        &layout,
        layout.sb_slot_offset(0),
        SUPERBLOCK_SLOTS * SUPERBLOCK_BYTES,
    )?;
    dev.flush().map_err(io_err("flush", 0))?;
    zero_range(dev, &layout, layout.al_offset(), layout.al_bytes())?;
    zero_range(dev, &layout, layout.bm_offset(), layout.bitmap_bytes())?;
    dev.flush().map_err(io_err("flush", 0))?;
    let sb = Superblock::new_created(&layout, al_extents, device_uuid);
    let enc = sb.encode();
    assert_eq!(
        Superblock::decode(&enc, 0).ok().as_ref(),
        Some(&sb),
        "fresh superblock does not round-trip"
    );
    md_write(dev, &layout, &enc, layout.sb_slot_offset(0))?;
    dev.flush().map_err(io_err("flush", 0))?;
    tracing::info!(
        usable_bytes = layout.usable_bytes(),
        md_bytes = layout.md_bytes(),
        "created meta-data on {where_}"
    );
    Ok(layout)
}

/// The metadata of one device, loaded and validated.
pub struct MetaStore {
    dev: Box<dyn MetaDev>,
    layout: MetaLayout,
    sb: Superblock,
    /// Slot holding `sb`; the next write goes to the other one.
    sb_slot: u32,
    bitmap: Bitmap,
    al: ActivityLog,
    recovered: RecoveredAl,
    where_: String,
}

impl MetaStore {
    /// Open internal metadata at the end of the backing device of `backing_bytes`.
    pub fn open_internal(
        dev: Box<dyn MetaDev>,
        backing_bytes: u64,
    ) -> Result<MetaStore, MetaError> {
        MetaStore::open(dev, MetaDiskKind::Internal, backing_bytes)
    }

    /// Open external metadata (`index` None = flexible) for a data device of `data_bytes`.
    pub fn open_external(
        dev: Box<dyn MetaDev>,
        index: Option<u32>,
        data_bytes: u64,
    ) -> Result<MetaStore, MetaError> {
        let kind = index.map_or(MetaDiskKind::ExternalFlex, MetaDiskKind::ExternalIndexed);
        MetaStore::open(dev, kind, data_bytes)
    }

    /// Read both superblock slots and take the valid one with the highest seq, then load the
    /// bitmap and recover the activity log. `dev` holds the metadata (the backing device for
    /// `Internal`); `data_bytes` is the backing device size.
    pub fn open(
        dev: Box<dyn MetaDev>,
        kind: MetaDiskKind,
        data_bytes: u64,
    ) -> Result<MetaStore, MetaError> {
        let meta_dev_bytes = match kind {
            MetaDiskKind::Internal => data_bytes,
            _ => dev.size_bytes().map_err(io_err("meta device size", 0))?,
        };
        let sb_offset = MetaLayout::superblock_offset(kind, data_bytes).filter(|off| {
            off.saturating_add(SUPERBLOCK_SLOTS * SUPERBLOCK_BYTES) <= meta_dev_bytes
        });
        let Some(sb_offset) = sb_offset else {
            return Err(MetaError::NoMetadata {
                where_: format!("{} (device too small to hold any)", describe(kind, 0)),
            });
        };
        let where_ = describe(kind, sb_offset);
        let [s0, s1] = read_slots(dev.as_ref(), sb_offset)?;
        let (sb, sb_slot) = match (s0, s1) {
            (Ok(a), Ok(b)) => {
                if b.seq > a.seq {
                    (b, 1)
                } else {
                    (a, 0)
                }
            }
            (Ok(a), Err(e)) => {
                warn_fallback(&where_, 1, 0, &e);
                (a, 0)
            }
            (Err(e), Ok(b)) => {
                warn_fallback(&where_, 0, 1, &e);
                (b, 1)
            }
            (Err(e0), Err(e1)) => return Err(no_valid_slot(where_, e0, e1)),
        };
        let al_geometry = AlGeometry {
            stripes: sb.al_stripes,
            stripe_blocks: sb.al_stripe_blocks,
        };
        let layout = MetaLayout::compute(kind, data_bytes, meta_dev_bytes, al_geometry)?;
        // The raw backing size may differ within the last partial block without changing
        // anything; every other field must match exactly.
        let now = MdGeometry {
            data_dev_bytes: sb.md.data_dev_bytes,
            ..MdGeometry::from_layout(&layout)
        };
        if now != sb.md {
            return Err(MetaError::Inconsistent {
                field: "md_geometry",
                why: format!(
                    "the device changed since create-md (backing {} bytes then, {} now; meta-disk {:?} then, {:?} now); \
                     resizing is not supported: restore the old size or recreate the meta-data",
                    sb.md.data_dev_bytes, data_bytes, sb.md.kind, kind
                ),
            });
        }
        let bitmap = load_bitmap(dev.as_ref(), &layout)?;
        let ring_blocks = layout.al_ring_blocks();
        let mut blocks = vec![[0u8; AL_TRANSACTION_BYTES as usize]; ring_blocks as usize];
        for (slot, block) in (0..ring_blocks).zip(blocks.iter_mut()) {
            let off = layout.al_block_offset(slot);
            dev.read_at(block, off)
                .map_err(io_err("activity log read", off))?;
        }
        let recovered = al::recover(&blocks, sb.al_extents);
        let al = ActivityLog::from_recovered(&recovered, ring_blocks)?;
        tracing::debug!(
            seq = sb.seq,
            slot = sb_slot,
            clean = sb.clean,
            al_active = recovered.active_extents.len(),
            oos_bits = bitmap.count_ones(),
            "opened meta-data on {where_}"
        );
        Ok(MetaStore {
            dev,
            layout,
            sb,
            sb_slot,
            bitmap,
            al,
            recovered,
            where_,
        })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }
    pub fn layout(&self) -> &MetaLayout {
        &self.layout
    }
    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }
    pub fn bitmap_mut(&mut self) -> &mut Bitmap {
        &mut self.bitmap
    }
    pub fn activity_log(&self) -> &ActivityLog {
        &self.al
    }
    pub fn activity_log_mut(&mut self) -> &mut ActivityLog {
        &mut self.al
    }
    /// What AL recovery found at open (the active set before any new transaction).
    pub fn recovered_al(&self) -> &RecoveredAl {
        &self.recovered
    }
    /// Superblock slot (0/1) holding the current superblock.
    pub fn superblock_slot(&self) -> u32 {
        self.sb_slot
    }
    /// Human description of where the metadata lives, for messages.
    pub fn location(&self) -> &str {
        &self.where_
    }

    /// Persist `sb` into the other slot with `seq` + 1, then flush. The geometry fields (md
    /// layout, AL geometry, version) are owned by the store and copied from the current
    /// superblock, so callers only change UUIDs, flags, sizes and `clean`.
    pub fn write_superblock(&mut self, mut sb: Superblock) -> Result<(), MetaError> {
        sb.version = MD_VERSION;
        sb.md = self.sb.md;
        sb.al_extents = self.sb.al_extents;
        sb.al_stripes = self.sb.al_stripes;
        sb.al_stripe_blocks = self.sb.al_stripe_blocks;
        sb.bm_bytes_per_bit = self.sb.bm_bytes_per_bit;
        // A crc-valid superblock could carry seq u64::MAX; never wrap (the older slot would win).
        sb.seq = self
            .sb
            .seq
            .checked_add(1)
            .ok_or_else(|| MetaError::Inconsistent {
                field: "seq",
                why: "superblock sequence number exhausted; recreate the meta-data".into(),
            })?;
        let slot = 1 - self.sb_slot;
        let enc = sb.encode();
        // Paired with the check after reading: never write a block we could not read back.
        match Superblock::decode(&enc, slot) {
            Ok(back) => assert_eq!(back, sb, "superblock does not round-trip"),
            Err(e) => {
                return Err(MetaError::Inconsistent {
                    field: "superblock",
                    why: format!("refusing to write: {e}"),
                })
            }
        }
        md_write(
            self.dev.as_ref(),
            &self.layout,
            &enc,
            self.layout.sb_slot_offset(slot),
        )?;
        self.flush()?;
        self.sb = sb;
        self.sb_slot = slot;
        Ok(())
    }

    /// Write the dirty pages of the store's own bitmap, flush, and clear the dirty set.
    /// Returns how many pages were written.
    pub fn persist_bitmap_pages(&mut self) -> Result<usize, MetaError> {
        let pages = self.bitmap.dirty_pages();
        for &p in &pages {
            let page = self.bitmap.encode_page(p);
            let off = self.layout.bm_offset() + p * BITMAP_PAGE_BYTES;
            md_write(self.dev.as_ref(), &self.layout, &page, off)?;
        }
        if !pages.is_empty() {
            self.flush()?;
        }
        self.bitmap.clear_dirty();
        Ok(pages.len())
    }

    /// Write one encoded bitmap page (from the engine's `Bitmap::take_dirty_pages`) and mirror
    /// it into the store's bitmap. Not flushed: call `flush` after the batch.
    pub fn write_bitmap_page(&mut self, index: u64, page: &[u8]) -> Result<(), MetaError> {
        if page.len() as u64 != BITMAP_PAGE_BYTES {
            return Err(MetaError::BadLength {
                what: "bitmap page length",
                expected: BITMAP_PAGE_BYTES,
                found: page.len() as u64,
            });
        }
        if index >= self.bitmap.page_count() {
            return Err(MetaError::BadLength {
                what: "bitmap page index",
                expected: self.bitmap.page_count(),
                found: index,
            });
        }
        let off = self.layout.bm_offset() + index * BITMAP_PAGE_BYTES;
        md_write(self.dev.as_ref(), &self.layout, page, off)?;
        self.bitmap.load_page(index, page)
    }

    /// Write an AL transaction at its ring position and flush (it must be durable before the
    /// data write it protects).
    pub fn write_al_transaction(&mut self, tr: &AlTransaction) -> Result<(), MetaError> {
        self.write_al_block(tr.ring_slot(), &tr.encode())
    }

    /// Write an already encoded AL block at ring position `ring_slot` and flush. The block is
    /// validated first, so a bad one is refused instead of poisoning the ring.
    pub fn write_al_block(&mut self, ring_slot: u64, block: &[u8]) -> Result<(), MetaError> {
        let ring_blocks = self.layout.al_ring_blocks();
        let Some(slot) = u32::try_from(ring_slot).ok().filter(|&s| s < ring_blocks) else {
            return Err(MetaError::BadLength {
                what: "AL ring slot",
                expected: u64::from(ring_blocks),
                found: ring_slot,
            });
        };
        let tr = AlTransaction::decode(block, slot)?;
        if u32::from(tr.context_size) != self.sb.al_extents {
            return Err(MetaError::Inconsistent {
                field: "al.context_size",
                why: format!(
                    "transaction for {} extents, meta-data has {}",
                    tr.context_size, self.sb.al_extents
                ),
            });
        }
        let off = self.layout.al_block_offset(slot);
        md_write(self.dev.as_ref(), &self.layout, block, off)?;
        self.flush()
    }

    pub fn flush(&self) -> Result<(), MetaError> {
        self.dev.flush().map_err(io_err("flush", 0))
    }

    fn gi_view(&self) -> GiView {
        GiView {
            uuids: self.sb.uuids.as_array(),
            flags: self.sb.flags.bits(),
        }
    }
    /// `repadm get-gi` (drbdmeta format).
    pub fn get_gi(&self) -> String {
        self.gi_view().get_gi()
    }
    /// `repadm show-gi` (drbdmeta legend).
    pub fn show_gi(&self) -> String {
        self.gi_view().show_gi()
    }
}

fn warn_fallback(where_: &str, bad: u32, good: u32, e: &MetaError) {
    // A slot without our magic is normal (create-md writes only slot 0).
    if !matches!(e, MetaError::BadMagic { .. }) {
        tracing::warn!("superblock slot {bad} on {where_} is invalid ({e}); using slot {good} (a torn write of the newer slot falls back to the older one)");
    }
}

fn no_valid_slot(where_: String, e0: MetaError, e1: MetaError) -> MetaError {
    match (e0, e1) {
        (MetaError::BadMagic { .. }, MetaError::BadMagic { .. }) => {
            MetaError::NoMetadata { where_ }
        }
        // A valid block of a format we don't know: say so rather than "corrupt".
        (e @ MetaError::UnsupportedVersion { .. }, _)
        | (_, e @ MetaError::UnsupportedVersion { .. }) => e,
        (e0, e1) => MetaError::BothSlotsCorrupt {
            where_,
            slot0: e0.to_string(),
            slot1: e1.to_string(),
        },
    }
}

fn load_bitmap(dev: &dyn MetaDev, layout: &MetaLayout) -> Result<Bitmap, MetaError> {
    let mut bm = Bitmap::new(layout.usable_bytes());
    let pages = bm.page_count();
    assert!(pages * BITMAP_PAGE_BYTES <= layout.bitmap_bytes());
    let pages_per_chunk = IO_CHUNK_BYTES / BITMAP_PAGE_BYTES;
    let mut buf = vec![0u8; IO_CHUNK_BYTES.min(pages * BITMAP_PAGE_BYTES) as usize];
    let mut page = 0;
    while page < pages {
        let n = (pages - page).min(pages_per_chunk);
        let chunk = &mut buf[..(n * BITMAP_PAGE_BYTES) as usize];
        let off = layout.bm_offset() + page * BITMAP_PAGE_BYTES;
        dev.read_at(chunk, off)
            .map_err(io_err("bitmap read", off))?;
        for (i, p) in chunk.chunks_exact(BITMAP_PAGE_BYTES as usize).enumerate() {
            bm.load_page(page + i as u64, p)?;
        }
        page += n;
    }
    bm.clear_dirty();
    Ok(bm)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
