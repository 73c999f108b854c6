//! The superblock: one 4 KiB block, big-endian, crc32c-protected, kept in two slots that are
//! written alternately (the reader takes the valid slot with the highest `seq`). Also the
//! generation UUIDs with DRBD's rotation primitives (docs/drbd-semantics.md §2.2) and the MDF_* flags
//! (docs/drbd-semantics.md §7.2).
//!
//! Never: draws random numbers (UUID values are arguments), or decides when UUIDs rotate.

use serde::Serialize;

use super::layout::{MetaDiskKind, MetaLayout, BITMAP_BLOCK_BYTES, SUPERBLOCK_BYTES};
use super::MetaError;

/// Superblock magic while the device is NOT attached (cleanly closed). Ours, not DRBD's.
pub const MAGIC_CLEAN: u32 = 0x5245_504d; // "REPM"
/// Superblock magic while attached; finding it on open means the last user crashed
/// (DRBD 8.4 writes DRBD_MD_MAGIC_84_UNCLEAN while attached for the same reason).
pub const MAGIC_UNCLEAN: u32 = 0x5245_5055; // "REPU"
/// On-disk format version written by this build.
pub const MD_VERSION: u32 = 1;
/// Current UUID written by create-md: "never used" (DRBD UUID_JUST_CREATED).
pub const UUID_JUST_CREATED: u64 = 4;
/// Bit 0 of the current UUID is set while the node is Primary; comparisons mask it.
pub const UUID_PRIMARY_BIT: u64 = 1;
/// Added to a non-trivial bitmap UUID when a SyncSource starts a resync (UUID_NEW_BM_OFFSET).
pub const UUID_NEW_BM_OFFSET: u64 = 0x0001_0000_0000_0000;

const SB_LEN: usize = SUPERBLOCK_BYTES as usize;
/// Byte offset of the crc32c field; the crc is computed with these 4 bytes zeroed.
const CRC_OFFSET: usize = 8;
/// Bytes actually used by fields; the rest of the block must be zero.
const FIELDS_END: usize = 168;

/// Index into the generation-UUID set (DRBD UI_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UuidIndex {
    Current,
    Bitmap,
    HistoryStart,
    HistoryEnd,
}

/// Data generation UUIDs of one device (docs/drbd-semantics.md §2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct GenerationUuids {
    pub current: u64,
    pub bitmap: u64,
    pub history: [u64; 2],
}

impl GenerationUuids {
    /// The UUIDs written by create-md.
    pub fn just_created() -> Self {
        GenerationUuids {
            current: UUID_JUST_CREATED,
            ..Default::default()
        }
    }

    pub fn get(&self, idx: UuidIndex) -> u64 {
        match idx {
            UuidIndex::Current => self.current,
            UuidIndex::Bitmap => self.bitmap,
            UuidIndex::HistoryStart => self.history[0],
            UuidIndex::HistoryEnd => self.history[1],
        }
    }

    fn slot(&mut self, idx: UuidIndex) -> &mut u64 {
        match idx {
            UuidIndex::Current => &mut self.current,
            UuidIndex::Bitmap => &mut self.bitmap,
            UuidIndex::HistoryStart => &mut self.history[0],
            UuidIndex::HistoryEnd => &mut self.history[1],
        }
    }

    /// `drbd_uuid_move_history`: hist[1] := hist[0] (hist[0] is then overwritten by the caller).
    fn move_history(&mut self) {
        self.history[1] = self.history[0];
    }

    /// `_drbd_uuid_set`: store `v` without touching history. For `Current`, bit 0 becomes the
    /// role bit. Used by a SyncTarget adopting P_SYNC_UUID.
    pub fn set_no_history(&mut self, idx: UuidIndex, v: u64, primary: bool) {
        let v = if idx == UuidIndex::Current {
            with_role_bit(v, primary)
        } else {
            v
        };
        *self.slot(idx) = v;
    }

    /// `drbd_uuid_set`: if the slot is non-empty, push its old value into history
    /// (hist[1] := hist[0]; hist[0] := old), then store `v` (role bit applied for `Current`).
    pub fn set(&mut self, idx: UuidIndex, v: u64, primary: bool) {
        let old = self.get(idx);
        if old != 0 {
            self.move_history();
            self.history[0] = old;
        }
        self.set_no_history(idx, v, primary);
    }

    /// `drbd_uuid_new_current`: bitmap := current; current := `rng_value` with bit 0 = role.
    /// The caller persists the superblock immediately. Returns the bitmap UUID that was
    /// overwritten if it was non-zero (DRBD warns "bm UUID was already set").
    pub fn new_current(&mut self, rng_value: u64, primary: bool) -> Option<u64> {
        let lost = (self.bitmap != 0).then_some(self.bitmap);
        self.bitmap = self.current;
        self.current = with_role_bit(rng_value, primary);
        lost
    }

    /// `drbd_uuid_set_bm`: `v == 0` pushes the bitmap UUID into history and clears it (no-op if
    /// already 0); otherwise bitmap := `v` with bit 0 cleared. Returns the overwritten non-zero
    /// bitmap UUID in the `v != 0` case (DRBD warns).
    pub fn set_bitmap_uuid(&mut self, v: u64) -> Option<u64> {
        if v == 0 {
            if self.bitmap != 0 {
                self.move_history();
                self.history[0] = self.bitmap;
                self.bitmap = 0;
            }
            None
        } else {
            let lost = (self.bitmap != 0).then_some(self.bitmap);
            self.bitmap = v & !UUID_PRIMARY_BIT;
            lost
        }
    }

    /// `drbd_uuid_set_bm(0)`: bitmap UUID into history, bitmap := 0.
    pub fn clear_bitmap_uuid(&mut self) {
        self.set_bitmap_uuid(0);
    }

    /// `drbd_gen_and_send_sync_uuid` on the SyncSource: bitmap := old bitmap + UUID_NEW_BM_OFFSET
    /// if it is non-trivial, else `rng_value`; the old bitmap UUID goes to history
    /// (`drbd_uuid_set`). Returns the new bitmap UUID, which is sent as P_SYNC_UUID.
    pub fn start_sync_source(&mut self, rng_value: u64) -> u64 {
        let b = self.bitmap;
        let v = if b != 0 && b != UUID_JUST_CREATED {
            b.wrapping_add(UUID_NEW_BM_OFFSET)
        } else {
            rng_value
        };
        self.set(UuidIndex::Bitmap, v, false);
        v
    }

    /// All four UUIDs with the role bit masked, for comparisons (drbd_uuid_compare).
    pub fn masked(&self) -> GenerationUuids {
        GenerationUuids {
            current: self.current & !UUID_PRIMARY_BIT,
            bitmap: self.bitmap & !UUID_PRIMARY_BIT,
            history: [
                self.history[0] & !UUID_PRIMARY_BIT,
                self.history[1] & !UUID_PRIMARY_BIT,
            ],
        }
    }

    /// current, bitmap, history[0], history[1] — the order of P_UUIDS and get-gi.
    pub fn as_array(&self) -> [u64; 4] {
        [self.current, self.bitmap, self.history[0], self.history[1]]
    }
}

fn with_role_bit(v: u64, primary: bool) -> u64 {
    if primary {
        v | UUID_PRIMARY_BIT
    } else {
        v & !UUID_PRIMARY_BIT
    }
}

/// MDF_* meta-data flags (docs/drbd-semantics.md §7.2), same bit values as DRBD 8.4.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MdFlags(u32);

macro_rules! md_flag {
    ($get:ident, $set:ident, $konst:ident) => {
        pub fn $get(self) -> bool {
            self.0 & Self::$konst != 0
        }
        pub fn $set(&mut self, on: bool) {
            if on {
                self.0 |= Self::$konst;
            } else {
                self.0 &= !Self::$konst;
            }
        }
    };
}

impl MdFlags {
    pub const CONSISTENT: u32 = 0x001;
    pub const PRIMARY_IND: u32 = 0x002;
    pub const CONNECTED_IND: u32 = 0x004;
    pub const FULL_SYNC: u32 = 0x008;
    pub const WAS_UP_TO_DATE: u32 = 0x010;
    pub const PEER_OUT_DATED: u32 = 0x020;
    pub const CRASHED_PRIMARY: u32 = 0x040;
    pub const AL_CLEAN: u32 = 0x080;
    pub const AL_DISABLED: u32 = 0x100;
    /// A split brain was detected and is not resolved yet (sticky across restarts).
    pub const SPLIT_BRAIN: u32 = 0x200;
    /// Every bit this build knows; others are refused on decode.
    pub const ALL: u32 = 0x3ff;

    const NAMES: [(u32, &'static str); 10] = [
        (Self::CONSISTENT, "consistent"),
        (Self::PRIMARY_IND, "primary-ind"),
        (Self::CONNECTED_IND, "connected-ind"),
        (Self::FULL_SYNC, "full-sync"),
        (Self::WAS_UP_TO_DATE, "was-up-to-date"),
        (Self::PEER_OUT_DATED, "peer-out-dated"),
        (Self::CRASHED_PRIMARY, "crashed-primary"),
        (Self::AL_CLEAN, "al-clean"),
        (Self::AL_DISABLED, "al-disabled"),
        (Self::SPLIT_BRAIN, "split-brain"),
    ];

    /// Flags from raw bits; `None` if unknown bits are set.
    pub fn from_bits(bits: u32) -> Option<MdFlags> {
        (bits & !Self::ALL == 0).then_some(MdFlags(bits))
    }
    pub fn bits(self) -> u32 {
        self.0
    }
    /// Names of the set flags, lowest bit first.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(b, _)| self.0 & b != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    md_flag!(consistent, set_consistent, CONSISTENT);
    md_flag!(primary_ind, set_primary_ind, PRIMARY_IND);
    md_flag!(connected_ind, set_connected_ind, CONNECTED_IND);
    md_flag!(full_sync, set_full_sync, FULL_SYNC);
    md_flag!(was_up_to_date, set_was_up_to_date, WAS_UP_TO_DATE);
    md_flag!(peer_out_dated, set_peer_out_dated, PEER_OUT_DATED);
    md_flag!(crashed_primary, set_crashed_primary, CRASHED_PRIMARY);
    md_flag!(al_clean, set_al_clean, AL_CLEAN);
    md_flag!(al_disabled, set_al_disabled, AL_DISABLED);
    md_flag!(split_brain, set_split_brain, SPLIT_BRAIN);
}

/// Where the parts of the metadata were placed at create-md (a copy of `MetaLayout`'s
/// numbers, so `open` can check that the device still matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MdGeometry {
    pub kind: MetaDiskKind,
    pub data_dev_bytes: u64,
    pub usable_bytes: u64,
    pub md_offset: u64,
    pub md_bytes: u64,
    pub al_offset: u64,
    pub al_bytes: u64,
    pub bm_offset: u64,
    pub bm_bytes: u64,
}

impl MdGeometry {
    pub fn from_layout(l: &MetaLayout) -> MdGeometry {
        MdGeometry {
            kind: l.kind(),
            data_dev_bytes: l.data_dev_bytes(),
            usable_bytes: l.usable_bytes(),
            md_offset: l.md_offset(),
            md_bytes: l.md_bytes(),
            al_offset: l.al_offset(),
            al_bytes: l.al_bytes(),
            bm_offset: l.bm_offset(),
            bm_bytes: l.bitmap_bytes(),
        }
    }
}

/// One superblock. `clean` selects the magic: `false` (MAGIC_UNCLEAN) while attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Superblock {
    pub version: u32,
    /// Incremented on every write; the slot with the higher valid `seq` wins.
    pub seq: u64,
    /// Last agreed (exported) size in bytes.
    pub la_size_bytes: u64,
    pub uuids: GenerationUuids,
    /// Random id of this device (not used for decisions).
    pub device_uuid: u64,
    pub flags: MdFlags,
    /// `al-extents` the AL was created with (the AL context size).
    pub al_extents: u32,
    pub al_stripes: u32,
    pub al_stripe_blocks: u32,
    /// Data bytes per bitmap bit (always `BITMAP_BLOCK_BYTES`).
    pub bm_bytes_per_bit: u32,
    pub md: MdGeometry,
    /// Device closed cleanly (MAGIC_CLEAN) vs. attached / crashed (MAGIC_UNCLEAN).
    pub clean: bool,
}

impl Superblock {
    /// The superblock create-md writes: current UUID JUST_CREATED, flags 0 (Inconsistent).
    pub fn new_created(layout: &MetaLayout, al_extents: u32, device_uuid: u64) -> Superblock {
        let al = layout.al_geometry();
        Superblock {
            version: MD_VERSION,
            seq: 1,
            la_size_bytes: layout.usable_bytes(),
            uuids: GenerationUuids::just_created(),
            device_uuid,
            flags: MdFlags::default(),
            al_extents,
            al_stripes: al.stripes,
            al_stripe_blocks: al.stripe_blocks,
            bm_bytes_per_bit: BITMAP_BLOCK_BYTES as u32,
            md: MdGeometry::from_layout(layout),
            clean: true,
        }
    }

    pub fn magic(&self) -> u32 {
        if self.clean {
            MAGIC_CLEAN
        } else {
            MAGIC_UNCLEAN
        }
    }

    /// Encode to one block, crc32c over the block with the crc field zeroed.
    pub fn encode(&self) -> [u8; SB_LEN] {
        let mut b = [0u8; SB_LEN];
        let (kind_code, kind_index) = self.md.kind.code();
        let mut w = Writer {
            buf: &mut b,
            pos: 0,
        };
        w.u32(self.magic());
        w.u32(self.version);
        w.u32(0); // crc, filled below
        w.u32(0); // reserved
        w.u64(self.seq);
        w.u64(self.la_size_bytes);
        for u in self.uuids.as_array() {
            w.u64(u);
        }
        w.u64(self.device_uuid);
        w.u32(self.flags.bits());
        w.u32(self.al_extents);
        w.u32(self.al_stripes);
        w.u32(self.al_stripe_blocks);
        w.u32(self.bm_bytes_per_bit);
        w.u32(u32::from(kind_code));
        w.u32(kind_index);
        w.u32(0); // reserved
        for v in [
            self.md.data_dev_bytes,
            self.md.usable_bytes,
            self.md.md_offset,
            self.md.md_bytes,
            self.md.al_offset,
            self.md.al_bytes,
            self.md.bm_offset,
            self.md.bm_bytes,
        ] {
            w.u64(v);
        }
        assert_eq!(w.pos, FIELDS_END);
        let crc = crc32c::crc32c(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decode and validate one slot (`slot` only names it in errors). Order: magic, crc,
    /// version, then field sanity, so a torn block reports `BadCrc`.
    pub fn decode(buf: &[u8], slot: u32) -> Result<Superblock, MetaError> {
        if buf.len() != SB_LEN {
            return Err(MetaError::BadLength {
                what: "superblock length",
                expected: SB_LEN as u64,
                found: buf.len() as u64,
            });
        }
        let mut r = Reader { buf, pos: 0 };
        let magic = r.u32();
        let clean = match magic {
            MAGIC_CLEAN => true,
            MAGIC_UNCLEAN => false,
            found => return Err(MetaError::BadMagic { found }),
        };
        let version = r.u32();
        let stored_crc = r.u32();
        let mut copy = [0u8; SB_LEN];
        copy.copy_from_slice(buf);
        copy[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
        let crc = crc32c::crc32c(&copy);
        if crc != stored_crc {
            return Err(MetaError::BadCrc {
                slot,
                expected: stored_crc,
                found: crc,
            });
        }
        if version != MD_VERSION {
            return Err(MetaError::UnsupportedVersion {
                found: version,
                supported: MD_VERSION,
            });
        }
        let _reserved = r.u32();
        let seq = r.u64();
        let la_size_bytes = r.u64();
        let uuids = GenerationUuids {
            current: r.u64(),
            bitmap: r.u64(),
            history: [r.u64(), r.u64()],
        };
        let device_uuid = r.u64();
        let flag_bits = r.u32();
        let al_extents = r.u32();
        let al_stripes = r.u32();
        let al_stripe_blocks = r.u32();
        let bm_bytes_per_bit = r.u32();
        let kind_code = r.u32();
        let kind_index = r.u32();
        let _reserved = r.u32();
        let mut g = [0u64; 8];
        for v in &mut g {
            *v = r.u64();
        }
        debug_assert_eq!(r.pos, FIELDS_END);
        let bad = |field: &'static str, why: String| Err(MetaError::Inconsistent { field, why });
        if buf[FIELDS_END..].iter().any(|&x| x != 0) {
            return bad("reserved", "bytes after the last field are not zero".into());
        }
        let Some(flags) = MdFlags::from_bits(flag_bits) else {
            return bad("flags", format!("unknown flag bits {flag_bits:#x}"));
        };
        let kind = match u8::try_from(kind_code)
            .ok()
            .and_then(|c| MetaDiskKind::from_code(c, kind_index))
        {
            Some(k) => k,
            None => return bad("md_kind", format!("unknown meta-disk kind {kind_code}")),
        };
        if u64::from(bm_bytes_per_bit) != BITMAP_BLOCK_BYTES {
            return bad(
                "bm_bytes_per_bit",
                format!("{bm_bytes_per_bit}, only {BITMAP_BLOCK_BYTES} is supported"),
            );
        }
        let md = MdGeometry {
            kind,
            data_dev_bytes: g[0],
            usable_bytes: g[1],
            md_offset: g[2],
            md_bytes: g[3],
            al_offset: g[4],
            al_bytes: g[5],
            bm_offset: g[6],
            bm_bytes: g[7],
        };
        // The layout must be exactly what this build computes for the stored inputs; that
        // covers "offsets inside the device" and "bitmap large enough" in one check.
        let al = super::layout::AlGeometry {
            stripes: al_stripes,
            stripe_blocks: al_stripe_blocks,
        };
        // The meta device size is unknown here (the store checks it); assume it is big enough.
        let expected = MetaLayout::compute(kind, md.data_dev_bytes, u64::MAX, al).map_err(|e| {
            MetaError::Inconsistent {
                field: "md_geometry",
                why: e.to_string(),
            }
        })?;
        if MdGeometry::from_layout(&expected) != md {
            return bad(
                "md_geometry",
                format!(
                    "stored {md:?} differs from computed {:?}",
                    MdGeometry::from_layout(&expected)
                ),
            );
        }
        let ring_blocks = expected.al_ring_blocks();
        if let Err(why) = super::al::check_al_extents(al_extents, ring_blocks) {
            return bad("al_extents", why);
        }
        if la_size_bytes > md.usable_bytes {
            return bad(
                "la_size_bytes",
                format!("{la_size_bytes} exceeds usable size {}", md.usable_bytes),
            );
        }
        Ok(Superblock {
            version,
            seq,
            la_size_bytes,
            uuids,
            device_uuid,
            flags,
            al_extents,
            al_stripes,
            al_stripe_blocks,
            bm_bytes_per_bit,
            md,
            clean,
        })
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn u32(&mut self, v: u32) {
        self.buf[self.pos..self.pos + 4].copy_from_slice(&v.to_be_bytes());
        self.pos += 4;
    }
    fn u64(&mut self, v: u64) {
        self.buf[self.pos..self.pos + 8].copy_from_slice(&v.to_be_bytes());
        self.pos += 8;
    }
}

/// Reader over a buffer whose length was checked by the caller (fields end well before it).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
        self.pos += 4;
        u32::from_be_bytes(a)
    }
    fn u64(&mut self) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        u64::from_be_bytes(a)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::AlGeometry;
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Superblock {
        let l =
            MetaLayout::compute(MetaDiskKind::Internal, 1 << 30, 0, AlGeometry::default()).unwrap();
        Superblock::new_created(&l, 1237, 0xdead_beef)
    }

    #[test]
    fn roundtrip_and_magic_selection() {
        let mut sb = sample();
        assert_eq!(Superblock::decode(&sb.encode(), 0).unwrap(), sb);
        sb.clean = false;
        sb.seq = 77;
        sb.flags.set_primary_ind(true);
        let enc = sb.encode();
        assert_eq!(
            u32::from_be_bytes([enc[0], enc[1], enc[2], enc[3]]),
            MAGIC_UNCLEAN
        );
        assert_eq!(Superblock::decode(&enc, 1).unwrap(), sb);
    }

    #[test]
    fn decode_rejects_with_typed_errors() {
        let sb = sample();
        let mut enc = sb.encode();
        enc[100] ^= 1;
        assert!(matches!(
            Superblock::decode(&enc, 1),
            Err(MetaError::BadCrc { slot: 1, .. })
        ));
        assert!(matches!(
            Superblock::decode(&[0u8; SB_LEN], 0),
            Err(MetaError::BadMagic { found: 0 })
        ));
        let mut v2 = sb.clone();
        v2.version = 2;
        assert!(matches!(
            Superblock::decode(&v2.encode(), 0),
            Err(MetaError::UnsupportedVersion { found: 2, .. })
        ));
        let mut off = sb.clone();
        off.md.al_offset += 4096;
        assert!(matches!(
            Superblock::decode(&off.encode(), 0),
            Err(MetaError::Inconsistent {
                field: "md_geometry",
                ..
            })
        ));
        let mut ale = sb.clone();
        ale.al_extents = 100_000;
        assert!(matches!(
            Superblock::decode(&ale.encode(), 0),
            Err(MetaError::Inconsistent {
                field: "al_extents",
                ..
            })
        ));
        let mut bad_flags = sb.clone();
        bad_flags.flags = MdFlags(0x8000);
        assert!(matches!(
            Superblock::decode(&bad_flags.encode(), 0),
            Err(MetaError::Inconsistent { field: "flags", .. })
        ));
        assert!(matches!(
            Superblock::decode(&[0u8; 10], 0),
            Err(MetaError::BadLength { .. })
        ));
    }

    #[test]
    fn uuid_primitives_follow_drbd() {
        let mut u = GenerationUuids::just_created();
        // new_current: bitmap := current; current := random with role bit.
        assert_eq!(u.new_current(0x1000, true), None);
        assert_eq!(
            u,
            GenerationUuids {
                current: 0x1001,
                bitmap: 4,
                history: [0, 0]
            }
        );
        // set_bm(0): push to history.
        u.clear_bitmap_uuid();
        assert_eq!(
            u,
            GenerationUuids {
                current: 0x1001,
                bitmap: 0,
                history: [4, 0]
            }
        );
        u.clear_bitmap_uuid(); // already 0: no push
        assert_eq!(u.history, [4, 0]);
        // set_bm(v): clears bit 0, no history.
        assert_eq!(u.set_bitmap_uuid(0x2001), None);
        assert_eq!(u.bitmap, 0x2000);
        assert_eq!(u.set_bitmap_uuid(0x3000), Some(0x2000));
        // set(idx, v) pushes a non-empty slot.
        u.set(UuidIndex::Current, 0x5000, false);
        assert_eq!(
            u,
            GenerationUuids {
                current: 0x5000,
                bitmap: 0x3000,
                history: [0x1001, 4]
            }
        );
        u.set_no_history(UuidIndex::Current, 0x6001, false);
        assert_eq!(u.current, 0x6000);
        // SyncSource start: bitmap + offset, old bitmap to history.
        let v = u.start_sync_source(0x7777);
        assert_eq!(v, 0x3000 + UUID_NEW_BM_OFFSET);
        assert_eq!(u.history, [0x3000, 0x1001]);
        let mut fresh = GenerationUuids { bitmap: 0, ..u };
        assert_eq!(fresh.start_sync_source(0x7777), 0x7777);
        assert_eq!(
            GenerationUuids {
                current: 3,
                bitmap: 5,
                history: [7, 9]
            }
            .masked()
            .as_array(),
            [2, 4, 6, 8]
        );
    }

    #[test]
    fn flag_accessors_and_names() {
        let mut f = MdFlags::default();
        f.set_consistent(true);
        f.set_crashed_primary(true);
        assert_eq!(f.bits(), 0x41);
        assert_eq!(f.names(), vec!["consistent", "crashed-primary"]);
        f.set_consistent(false);
        assert!(!f.consistent());
        assert!(f.crashed_primary());
        assert_eq!(MdFlags::from_bits(0x400), None);
    }

    proptest! {
        /// Goal: decode never panics and only accepts what encode produced. Method: random
        /// bytes, and random single-byte corruptions of a valid block.
        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), SB_LEN)) {
            let _ = Superblock::decode(&bytes, 0);
        }

        #[test]
        fn corruption_is_detected(pos in 0usize..SB_LEN, xor in 1u8..=255) {
            let mut enc = sample().encode();
            enc[pos] ^= xor;
            prop_assert!(Superblock::decode(&enc, 0).is_err());
        }

        #[test]
        fn roundtrip_random_uuids(c: u64, b: u64, h0: u64, h1: u64, seq: u64, flags in 0u32..=MdFlags::ALL) {
            let mut sb = sample();
            sb.uuids = GenerationUuids { current: c, bitmap: b, history: [h0, h1] };
            sb.seq = seq;
            sb.flags = MdFlags(flags);
            prop_assert_eq!(Superblock::decode(&sb.encode(), 0).unwrap(), sb);
        }
    }
}
