//! Out-of-sync bitmap (docs/drbd-semantics.md §7.4): one bit per 4 KiB block of usable data; a set
//! bit means "this block may differ from the peer". Tracks which 4 KiB on-disk pages changed
//! since they were last persisted, encodes pages as little-endian u64 words (as DRBD), and
//! RLE-compresses the whole bitmap for the exchange on connect (docs/drbd-semantics.md §7.5: our own run-length scheme).
//!
//! Never does I/O. Bits beyond the device end are always clear.

use std::ops::Range;

use bitvec::prelude::*;

use super::layout::{BITMAP_BLOCK_BYTES, BITMAP_PAGE_BITS, BITMAP_PAGE_BYTES, DEVICE_BYTES_MAX};
use super::MetaError;

/// Largest bit count (the 16 TiB device): bounds what a decoder will ever allocate.
pub const BITMAP_BITS_MAX: u64 = DEVICE_BYTES_MAX / BITMAP_BLOCK_BYTES;
const WORD_BITS: u64 = 64;
const PAGE_WORDS: usize = (BITMAP_PAGE_BYTES / 8) as usize;
/// A LEB128 u64 never needs more than 10 bytes.
const VARINT_BYTES_MAX: usize = 10;
// Bit indices are used as `usize`; the largest bitmap needs more than 32 bits of index.
const _: () = assert!(usize::BITS >= 64);
const _: () = assert!(BITMAP_PAGE_BITS.is_multiple_of(WORD_BITS));

/// In-memory bitmap with a cached popcount and a dirty-page set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bits: BitVec<u64, Lsb0>,
    /// Data bytes covered (the usable size); the last block may be partial.
    size_bytes: u64,
    ones: u64,
    /// One bit per on-disk page: changed since last `take_dirty_pages`/`clear_dirty`.
    dirty: BitVec<u64, Lsb0>,
    /// A bit was cleared since the last `take_dirty_pages`: persisting the pages claims data
    /// is in sync, so the data device must be flushed first.
    cleared: bool,
}

impl Bitmap {
    /// All-clear bitmap covering `size_bytes` of data (≤ DEVICE_BYTES_MAX).
    pub fn new(size_bytes: u64) -> Bitmap {
        assert!(
            size_bytes <= DEVICE_BYTES_MAX,
            "bitmap for {size_bytes} bytes exceeds DEVICE_BYTES_MAX"
        );
        let nbits = size_bytes.div_ceil(BITMAP_BLOCK_BYTES);
        Bitmap {
            bits: bitvec![u64, Lsb0; 0; nbits as usize],
            size_bytes,
            ones: 0,
            dirty: bitvec![u64, Lsb0; 0; nbits.div_ceil(BITMAP_PAGE_BITS) as usize],
            cleared: false,
        }
    }

    pub fn len_bits(&self) -> u64 {
        self.bits.len() as u64
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    /// Set bits (out-of-sync blocks).
    pub fn count_ones(&self) -> u64 {
        self.ones
    }
    /// On-disk pages this bitmap occupies.
    pub fn page_count(&self) -> u64 {
        self.dirty.len() as u64
    }
    pub fn get(&self, bit: u64) -> bool {
        self.bits.get(bit as usize).is_some_and(|b| *b)
    }

    /// Set or clear `bits` (bit indices, within the bitmap), page by page so that only pages
    /// that really changed become dirty. Returns how many bits changed.
    fn apply(&mut self, bits: Range<u64>, value: bool) -> u64 {
        assert!(
            bits.end <= self.len_bits(),
            "bit range {bits:?} beyond {}",
            self.len_bits()
        );
        let mut changed_total = 0;
        let mut pos = bits.start;
        while pos < bits.end {
            let page = pos / BITMAP_PAGE_BITS;
            let page_end = ((page + 1) * BITMAP_PAGE_BITS).min(bits.end);
            let slice = &mut self.bits[pos as usize..page_end as usize];
            let changed = if value {
                slice.count_zeros()
            } else {
                slice.count_ones()
            } as u64;
            if changed > 0 {
                slice.fill(value);
                self.dirty.set(page as usize, true);
                changed_total += changed;
            }
            pos = page_end;
        }
        if value {
            self.ones += changed_total;
        } else {
            self.ones -= changed_total;
            self.cleared |= changed_total > 0;
        }
        debug_assert!(self.ones <= self.len_bits());
        changed_total
    }

    pub fn set_bit(&mut self, bit: u64) -> bool {
        self.apply(bit..bit + 1, true) == 1
    }
    pub fn clear_bit(&mut self, bit: u64) -> bool {
        self.apply(bit..bit + 1, false) == 1
    }

    /// Mark the bytes `offset .. offset+len` out of sync. A partially covered block counts as
    /// dirty. The range is clipped at the device end (an AL extent may overhang it). Returns
    /// how many bits were newly set.
    pub fn set_range(&mut self, offset: u64, len: u64) -> u64 {
        let end = offset.saturating_add(len).min(self.size_bytes);
        if offset >= end {
            return 0;
        }
        self.apply(
            offset / BITMAP_BLOCK_BYTES..end.div_ceil(BITMAP_BLOCK_BYTES),
            true,
        )
    }

    /// Mark the bytes `offset .. offset+len` in sync: only blocks the range fully covers (the
    /// partial last block of the device counts as covered when the range reaches the end).
    /// Returns how many bits were cleared.
    pub fn clear_range(&mut self, offset: u64, len: u64) -> u64 {
        let end = offset.saturating_add(len).min(self.size_bytes);
        if offset >= end {
            return 0;
        }
        let first = offset.div_ceil(BITMAP_BLOCK_BYTES);
        let last = if end == self.size_bytes {
            self.len_bits()
        } else {
            end / BITMAP_BLOCK_BYTES
        };
        if first >= last {
            return 0;
        }
        self.apply(first..last, false)
    }

    /// Full sync: every block out of sync (`invalidate`, MDF_FULL_SYNC).
    pub fn set_all(&mut self) {
        self.apply(0..self.len_bits(), true);
    }
    /// Skip initial sync: nothing out of sync.
    pub fn clear_all(&mut self) {
        self.apply(0..self.len_bits(), false);
    }

    /// Runs of set bits as bit-index ranges, ascending.
    pub fn runs(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            let start = pos + self.bits.get(pos..)?.first_one()?;
            let end = start
                + self.bits[start..]
                    .first_zero()
                    .unwrap_or(self.bits.len() - start);
            pos = end;
            Some(start as u64..end as u64)
        })
    }

    /// Union with the peer's bitmap (after the bitmap exchange both sides hold the OR).
    /// Returns how many bits were newly set.
    pub fn or_with(&mut self, other: &Bitmap) -> Result<u64, MetaError> {
        if other.len_bits() != self.len_bits() {
            return Err(MetaError::BadLength {
                what: "bitmap bits to merge",
                expected: self.len_bits(),
                found: other.len_bits(),
            });
        }
        let mut newly = 0u64;
        let theirs = other.bits.as_raw_slice();
        let last_word_mask = self.last_word_mask();
        let nwords = theirs.len();
        for (i, (mine, &t)) in self
            .bits
            .as_raw_mut_slice()
            .iter_mut()
            .zip(theirs)
            .enumerate()
        {
            // Dead bits past the end of `other` must not leak in.
            let t = if i + 1 == nwords {
                t & last_word_mask
            } else {
                t
            };
            let add = t & !*mine;
            if add != 0 {
                *mine |= add;
                newly += u64::from(add.count_ones());
                self.dirty.set(i / PAGE_WORDS, true);
            }
        }
        self.ones += newly;
        debug_assert_eq!(self.ones, self.bits.count_ones() as u64);
        Ok(newly)
    }

    fn last_word_mask(&self) -> u64 {
        match self.len_bits() % WORD_BITS {
            0 => u64::MAX,
            r => (1u64 << r) - 1,
        }
    }

    /// Indices of pages changed since the last persist.
    pub fn dirty_pages(&self) -> Vec<u64> {
        self.dirty.iter_ones().map(|p| p as u64).collect()
    }
    /// Forget the dirty set (after the caller persisted all dirty pages).
    pub fn clear_dirty(&mut self) {
        self.dirty.fill(false);
        self.cleared = false;
    }
    /// Whether bits were cleared since the dirty set was last taken (see `cleared`).
    pub fn cleared_since_persist(&self) -> bool {
        self.cleared
    }
    pub fn mark_all_dirty(&mut self) {
        self.dirty.fill(true);
    }
    /// Encode every dirty page and clear the dirty set: `(page index, 4 KiB page)`.
    pub fn take_dirty_pages(&mut self) -> Vec<(u64, Vec<u8>)> {
        let pages: Vec<(u64, Vec<u8>)> = self
            .dirty_pages()
            .into_iter()
            .map(|p| (p, self.encode_page(p)))
            .collect();
        self.clear_dirty();
        pages
    }

    /// Page `page` as 4 KiB of little-endian u64 words (bit i of word w = block 64w + i).
    pub fn encode_page(&self, page: u64) -> Vec<u8> {
        assert!(
            page < self.page_count(),
            "bitmap page {page} of {}",
            self.page_count()
        );
        let words = self.bits.as_raw_slice();
        let mask = self.last_word_mask();
        let mut out = Vec::with_capacity(BITMAP_PAGE_BYTES as usize);
        let first = page as usize * PAGE_WORDS;
        for w in first..first + PAGE_WORDS {
            let v = match words.get(w) {
                Some(&v) if w + 1 == words.len() => v & mask,
                Some(&v) => v,
                None => 0,
            };
            out.extend_from_slice(&v.to_le_bytes());
        }
        debug_assert_eq!(out.len() as u64, BITMAP_PAGE_BYTES);
        out
    }

    /// Load page `page` from disk (does not mark it dirty). Bits past the device end are
    /// dropped with a warning: they carry no meaning and are kept clear.
    pub fn load_page(&mut self, page: u64, bytes: &[u8]) -> Result<(), MetaError> {
        if bytes.len() as u64 != BITMAP_PAGE_BYTES {
            return Err(MetaError::BadLength {
                what: "bitmap page length",
                expected: BITMAP_PAGE_BYTES,
                found: bytes.len() as u64,
            });
        }
        if page >= self.page_count() {
            return Err(MetaError::BadLength {
                what: "bitmap page index",
                expected: self.page_count(),
                found: page,
            });
        }
        let mask = self.last_word_mask();
        let words = self.bits.as_raw_mut_slice();
        let nwords = words.len();
        let first = page as usize * PAGE_WORDS;
        let mut stray = false;
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let mut a = [0u8; 8];
            a.copy_from_slice(chunk);
            let mut v = u64::from_le_bytes(a);
            let w = first + i;
            if w >= nwords {
                stray |= v != 0;
                continue;
            }
            if w + 1 == nwords {
                stray |= v & !mask != 0;
                v &= mask;
            }
            self.ones -= u64::from(words[w].count_ones());
            words[w] = v;
            self.ones += u64::from(v.count_ones());
        }
        if stray {
            tracing::warn!(
                page,
                "bitmap page has bits set past the device end; ignored"
            );
        }
        Ok(())
    }

    /// Compress for the bitmap exchange. Format: LEB128 `nbits`, one byte polarity of the
    /// first run (0 = clear, 1 = set), then LEB128 lengths (> 0) of alternating runs that add
    /// up to `nbits`.
    pub fn encode_rle(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, self.len_bits());
        let first_set = self.get(0);
        out.push(u8::from(first_set));
        let mut pos = 0usize;
        let mut value = first_set;
        let n = self.bits.len();
        while pos < n {
            let rest = &self.bits[pos..];
            let run = if value {
                rest.first_zero()
            } else {
                rest.first_one()
            }
            .unwrap_or(rest.len());
            put_varint(&mut out, run as u64);
            pos += run;
            value = !value;
        }
        out
    }

    /// The bit count an RLE blob declares (its first field), without decoding the rest.
    pub fn rle_declared_bits(bytes: &[u8]) -> Result<u64, MetaError> {
        let mut pos = 0usize;
        get_varint(bytes, &mut pos)
    }

    /// Decompress a bitmap of exactly `nbits` bits (what our size says the peer must send).
    /// Hostile input cannot make this allocate more than `nbits` bits, loop forever or panic.
    pub fn decode_rle(bytes: &[u8], nbits: u64) -> Result<Bitmap, MetaError> {
        let bad = |why: String| Err(MetaError::BadRle { why });
        if nbits > BITMAP_BITS_MAX {
            return bad(format!("{nbits} bits exceed the maximum {BITMAP_BITS_MAX}"));
        }
        let mut pos = 0usize;
        let declared = get_varint(bytes, &mut pos)?;
        if declared != nbits {
            return bad(format!("bitmap has {declared} bits, expected {nbits}"));
        }
        let mut value = match bytes.get(pos) {
            Some(0) => false,
            Some(1) => true,
            Some(b) => return bad(format!("bad polarity byte {b}")),
            None => return bad("missing polarity byte".into()),
        };
        pos += 1;
        let mut bm = Bitmap::new(nbits * BITMAP_BLOCK_BYTES);
        let mut bit = 0u64;
        while bit < nbits {
            let run = get_varint(bytes, &mut pos)?;
            if run == 0 {
                return bad(format!("zero-length run at bit {bit}"));
            }
            if run > nbits - bit {
                return bad(format!("run of {run} at bit {bit} overflows {nbits} bits"));
            }
            if value {
                bm.apply(bit..bit + run, true);
            }
            bit += run;
            value = !value;
        }
        if pos != bytes.len() {
            return bad(format!("{} trailing bytes", bytes.len() - pos));
        }
        bm.clear_dirty();
        Ok(bm)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, MetaError> {
    let mut v = 0u64;
    for i in 0..VARINT_BYTES_MAX {
        let Some(&b) = bytes.get(*pos) else {
            return Err(MetaError::BadRle {
                why: "truncated varint".into(),
            });
        };
        *pos += 1;
        let chunk = u64::from(b & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && chunk > 1 {
            return Err(MetaError::BadRle {
                why: "varint overflows u64".into(),
            });
        }
        v |= chunk << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(MetaError::BadRle {
        why: "varint longer than 10 bytes".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u64, u64),
        Clear(u64, u64),
    }

    fn op(size: u64) -> impl Strategy<Value = Op> {
        let r = (0..size + 8192, 0..size / 2 + 1);
        prop_oneof![
            r.clone().prop_map(|(o, l)| Op::Set(o, l)),
            r.prop_map(|(o, l)| Op::Clear(o, l))
        ]
    }

    fn model_apply(m: &mut [bool], size: u64, op: &Op) {
        let n = m.len() as u64;
        match *op {
            Op::Set(o, l) => {
                let end = (o + l).min(size);
                if o < end {
                    for b in o / 4096..end.div_ceil(4096) {
                        m[b as usize] = true;
                    }
                }
            }
            Op::Clear(o, l) => {
                let end = (o + l).min(size);
                for b in 0..n {
                    let (bs, be) = (b * 4096, ((b + 1) * 4096).min(size));
                    if o < end && bs >= o && be <= end {
                        m[b as usize] = false;
                    }
                }
            }
        }
    }

    #[test]
    fn partial_blocks_and_device_end() {
        let mut bm = Bitmap::new(10 * 4096 + 100);
        assert_eq!(bm.len_bits(), 11);
        assert_eq!(bm.set_range(4095, 2), 2);
        assert_eq!(bm.clear_range(4000, 4096), 0); // covers neither block fully
        assert_eq!(bm.clear_range(0, 8192), 2);
        bm.set_range(0, u64::MAX);
        assert_eq!(bm.count_ones(), 11);
        assert_eq!(bm.clear_range(10 * 4096, 100), 1); // last partial block, up to the end
        assert_eq!(bm.runs().collect::<Vec<_>>(), vec![0..10]);
        assert_eq!(bm.set_range(1 << 40, 4096), 0);
    }

    #[test]
    fn dirty_pages_and_page_codec() {
        let size = 3 * BITMAP_PAGE_BITS * 4096 - 4096 * 3;
        let mut bm = Bitmap::new(size);
        assert_eq!(bm.page_count(), 3);
        bm.set_bit(5);
        bm.set_bit(BITMAP_PAGE_BITS * 2 + 7);
        assert_eq!(bm.dirty_pages(), vec![0, 2]);
        let pages = bm.take_dirty_pages();
        assert!(bm.dirty_pages().is_empty());
        assert_eq!(pages[0].1[0], 1 << 5);
        bm.set_bit(5); // no change, no dirty page
        assert!(bm.dirty_pages().is_empty());
        let mut copy = Bitmap::new(size);
        for (i, p) in &pages {
            copy.load_page(*i, p).unwrap();
        }
        assert_eq!(copy.count_ones(), 2);
        assert!(copy.get(BITMAP_PAGE_BITS * 2 + 7));
        let mut stray = vec![0xffu8; 4096];
        copy.load_page(2, &stray).unwrap();
        assert_eq!(copy.count_ones(), 1 + (BITMAP_PAGE_BITS - 3));
        stray.truncate(10);
        assert!(copy.load_page(2, &stray).is_err());
        assert!(copy.load_page(3, &[0; 4096]).is_err());
    }

    #[test]
    fn rle_rejects_hostile_input() {
        let bm = Bitmap::new(1 << 20);
        let enc = bm.encode_rle();
        assert_eq!(Bitmap::decode_rle(&enc, 256).unwrap(), bm);
        assert!(Bitmap::decode_rle(&enc, 255).is_err());
        // Zero-length run, overflowing run, trailing garbage, truncated, huge varint.
        assert!(Bitmap::decode_rle(&[2, 0, 0, 2], 2).is_err());
        assert!(Bitmap::decode_rle(&[2, 0, 3], 2).is_err());
        assert!(Bitmap::decode_rle(&[2, 0, 2, 9], 2).is_err());
        assert!(Bitmap::decode_rle(&[2, 0, 0x81], 2).is_err());
        assert!(Bitmap::decode_rle(&[0xff; 20], 2).is_err());
        assert!(Bitmap::decode_rle(&[2, 7, 2], 2).is_err());
        assert!(Bitmap::decode_rle(&[], 0).is_err());
        assert!(Bitmap::decode_rle(
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            u64::MAX
        )
        .is_err());
        assert_eq!(Bitmap::decode_rle(&[0, 0], 0).unwrap().len_bits(), 0);
    }

    proptest! {
        /// Goal: range ops, counts, runs, page codec and RLE agree with a Vec<bool> model.
        /// Method: random set/clear sequences on random sizes (including partial last blocks
        /// and multi-page bitmaps).
        #[test]
        fn matches_vec_bool_model(
            size in prop_oneof![1u64..200_000, (BITMAP_PAGE_BITS * 4096)..(BITMAP_PAGE_BITS * 4096 * 2 + 5000)],
            seed_ops in proptest::collection::vec(op(1 << 20), 0..40),
        ) {
            let mut bm = Bitmap::new(size);
            let mut m = vec![false; size.div_ceil(4096) as usize];
            for o in &seed_ops {
                // Scale the offsets to this size so ops hit the whole bitmap.
                let o = match *o {
                    Op::Set(a, l) => Op::Set(a % (size + 8192), l % (size / 2 + 4096)),
                    Op::Clear(a, l) => Op::Clear(a % (size + 8192), l % (size / 2 + 4096)),
                };
                match o {
                    Op::Set(a, l) => { bm.set_range(a, l); }
                    Op::Clear(a, l) => { bm.clear_range(a, l); }
                }
                model_apply(&mut m, size, &o);
            }
            let ones = m.iter().filter(|&&b| b).count() as u64;
            prop_assert_eq!(bm.count_ones(), ones);
            for (i, &b) in m.iter().enumerate() {
                prop_assert_eq!(bm.get(i as u64), b);
            }
            let from_runs: u64 = bm.runs().map(|r| r.end - r.start).sum();
            prop_assert_eq!(from_runs, ones);
            let rle = bm.encode_rle();
            let mut back = Bitmap::decode_rle(&rle, bm.len_bits()).unwrap();
            prop_assert_eq!(back.bits.clone(), bm.bits.clone());
            let mut paged = Bitmap::new(size);
            for p in 0..bm.page_count() {
                paged.load_page(p, &bm.encode_page(p)).unwrap();
            }
            prop_assert_eq!(paged.count_ones(), ones);
            back.clear_all();
            back.set_bit(0);
            let mut union = bm.clone();
            union.or_with(&back).unwrap();
            prop_assert_eq!(union.count_ones(), ones + u64::from(!m[0]));
        }

        #[test]
        fn rle_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), nbits in 0u64..5000) {
            let _ = Bitmap::decode_rle(&bytes, nbits);
        }
    }
}
