//! Simulated storage with a volatile write cache (tigerbeetle's testing/storage idea).
//!
//! `SimDisk` is the data device. It keeps two images, what a reader sees (`cache`) and what
//! survives power loss (`durable`), per 512-byte sector. Writes land in the cache and are
//! remembered as dirty; a completed flush makes every dirty sector durable; a FUA write goes to
//! both images. A crash (`crash`) keeps a seeded subset of the dirty sectors, each one kept or
//! dropped on its own ("every write not followed by a completed flush may be lost, or applied
//! partially, in any order"). A failed flush (`flush_fails`) behaves like Linux write-back
//! errors: some dirty sectors reached the media, the others are gone for good (the cache falls
//! back to the durable content) and are no longer dirty, so a later flush succeeds without
//! them.
//!
//! Sectors are stored as tags, not bytes: the simulated clients write sectors whose bytes
//! encode (write id, sector number) (`fill_sector`), which decode back to `Sector::Tag`; all
//! zeroes is `Tag(0)`; anything else (bit rot, misplaced data) is kept as raw bytes. That keeps a
//! 64 MiB device at 2 MiB of memory per image, makes a flush cost only its dirty sectors, and
//! lets the checker compare images sector by sector without hashing.
//!
//! `SimMetaDev` is the external metadata device of a node, on the same simulated hardware: it
//! has a volatile cache too (writes not followed by the store's flush are lost or torn on power
//! loss), fails with EIO while the node's disk is failing, and can be armed to lose power in the
//! middle of a metadata update (`cut_power_after`), tearing the write that was under way.
//!
//! Not modelled: reordering of flushes themselves, corruption of data that was durable before
//! the crash, and partial sectors (a 512-byte sector is written whole or not at all).

use std::io;
use std::sync::{Arc, Mutex};

use crate::core::io::{push_data, push_zero, Extent, SPARSE_BLOCK};
use crate::core::rng::Rng;
use crate::meta::store::MetaDev;

/// The unit of atomicity and of the data model.
pub const SECTOR_BYTES: usize = 512;
const SECTOR: u64 = SECTOR_BYTES as u64;
/// Mixed into the sector number inside the pattern, so that zeroes never decode as a tag.
const LBA_SALT: u64 = 0x5ec7_0a11_d00d_f00d;

/// The content of one sector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sector {
    /// Written by the simulated clients: the id of the write (0 = zeroes).
    Tag(u64),
    /// Anything else: bit rot, or data that landed at the wrong sector.
    Raw(Box<[u8; SECTOR_BYTES]>),
}

/// The bytes of sector `lba` written by write `tag` (tag 0 = zeroes).
pub fn fill_sector(out: &mut [u8], tag: u64, lba: u64) {
    debug_assert_eq!(out.len(), SECTOR_BYTES);
    if tag == 0 {
        out.fill(0);
        return;
    }
    let a = tag.to_le_bytes();
    let b = (lba ^ LBA_SALT).to_le_bytes();
    for pair in out.chunks_exact_mut(16) {
        pair[..8].copy_from_slice(&a);
        pair[8..].copy_from_slice(&b);
    }
}

/// What the bytes of sector `lba` say: the tag if they are a pattern written for this very
/// sector, raw bytes otherwise.
pub fn decode_sector(b: &[u8], lba: u64) -> Sector {
    debug_assert_eq!(b.len(), SECTOR_BYTES);
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let (tag, salted) = (word(0), word(8));
    if tag == 0 && salted == 0 && repeats(b) {
        return Sector::Tag(0);
    }
    if tag != 0 && salted == lba ^ LBA_SALT && repeats(b) {
        return Sector::Tag(tag);
    }
    let mut raw = Box::new([0u8; SECTOR_BYTES]);
    raw.copy_from_slice(b);
    Sector::Raw(raw)
}

/// Whether every 16-byte pair of `b` equals its first pair (which the caller checked): exactly
/// when the sector equals itself shifted by one pair (b[i] == b[i + 16] for every i), one
/// memcmp. This runs for every sector of every write; a word loop per pair was a tenth of the
/// simulator's time.
fn repeats(b: &[u8]) -> bool {
    b[16..] == b[..b.len() - 16]
}

fn sector_bytes(s: &Sector, lba: u64, out: &mut [u8]) {
    match s {
        Sector::Tag(t) => fill_sector(out, *t, lba),
        Sector::Raw(r) => out.copy_from_slice(&r[..]),
    }
}

/// Counters of what the disk went through (for the simulator's summary).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskStats {
    pub writes: u64,
    pub flushes: u64,
    pub failed_flushes: u64,
    /// Dirty sectors a failed flush or a crash threw away.
    pub sectors_lost: u64,
}

#[derive(Debug, Clone)]
pub struct SimDisk {
    cache: Vec<Sector>,
    durable: Vec<Sector>,
    /// Sectors written since the last flush (each once, `is_dirty` dedupes).
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// The next this many flushes fail (flush-only errors).
    pub flush_failures: u32,
    rng: Rng,
    pub stats: DiskStats,
}

impl SimDisk {
    pub fn new(size_bytes: usize, seed: u64) -> SimDisk {
        let n = size_bytes / SECTOR_BYTES;
        SimDisk {
            cache: vec![Sector::Tag(0); n],
            durable: vec![Sector::Tag(0); n],
            dirty: Vec::new(),
            is_dirty: vec![false; n],
            flush_failures: 0,
            rng: Rng::new(seed),
            stats: DiskStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.cache.len() * SECTOR_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    pub fn sectors(&self) -> u64 {
        self.cache.len() as u64
    }

    fn check(&self, off: u64, len: usize) -> io::Result<()> {
        let end = off
            .checked_add(len as u64)
            .ok_or_else(|| io::Error::other("range overflow"))?;
        if end > self.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{off}+{len} is beyond the end of the SimDisk"),
            ));
        }
        Ok(())
    }

    /// Read what a reader sees (the cache).
    pub fn read(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.read_sectors(buf, off, false)
    }

    /// `read` into a new buffer. The buffer starts zeroed (fresh pages from the allocator), so
    /// whole zero sectors, most of a device, are not written again: a verify or resync read of
    /// a 64 MiB device does not touch the pages it does not have to.
    pub fn read_vec(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        if off.is_multiple_of(SECTOR) && len.is_multiple_of(SECTOR_BYTES) {
            self.check(off, len)?;
            return Ok(self.read_aligned(off, len));
        }
        let mut buf = vec![0; len];
        self.read_sectors(&mut buf, off, true)?;
        Ok(buf)
    }

    /// A sparse read (`PeerDiskOp::ReadSparse`): each 4 KiB block (aligned to the device)
    /// whose sectors all hold zeroes comes back as a zero run without being read, as a real
    /// backing file's holes and zero blocks do; the rest as data.
    pub fn read_sparse(&self, off: u64, len: usize) -> io::Result<Vec<Extent>> {
        self.check(off, len)?;
        let end = off + len as u64;
        let mut out = Vec::new();
        let mut at = off;
        while at < end {
            let block_end = (at - at % SPARSE_BLOCK + SPARSE_BLOCK).min(end);
            let n = block_end - at;
            let zero = (at / SECTOR..block_end.div_ceil(SECTOR))
                .all(|lba| self.cache[lba as usize] == Sector::Tag(0));
            if zero {
                push_zero(&mut out, u32::try_from(n).unwrap_or(u32::MAX));
            } else {
                push_data(&mut out, self.read_vec(at, n as usize)?);
            }
            at = block_end;
        }
        Ok(out)
    }

    /// `read_vec` for sector-aligned ranges: every byte written once (a zeroed buffer costs a
    /// memset over the whole range first, and the allocator does not hand out fresh pages for
    /// buffers it recycles).
    fn read_aligned(&self, off: u64, len: usize) -> Vec<u8> {
        const ZERO: [u8; SECTOR_BYTES] = [0; SECTOR_BYTES];
        let mut buf = Vec::with_capacity(len);
        let first = off / SECTOR;
        for lba in first..first + (len / SECTOR_BYTES) as u64 {
            match &self.cache[lba as usize] {
                Sector::Tag(0) => buf.extend_from_slice(&ZERO),
                Sector::Tag(t) => {
                    let at = buf.len();
                    buf.extend_from_slice(&ZERO);
                    fill_sector(&mut buf[at..], *t, lba);
                }
                Sector::Raw(r) => buf.extend_from_slice(&r[..]),
            }
        }
        buf
    }

    fn read_sectors(&self, buf: &mut [u8], off: u64, zeroed: bool) -> io::Result<()> {
        self.check(off, buf.len())?;
        let mut tmp = [0u8; SECTOR_BYTES];
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = off + pos as u64;
            let lba = at / SECTOR;
            let within = (at % SECTOR) as usize;
            let n = (SECTOR_BYTES - within).min(buf.len() - pos);
            let s = &self.cache[lba as usize];
            if zeroed && *s == Sector::Tag(0) {
                // already zeroes
            } else if within == 0 && n == SECTOR_BYTES {
                sector_bytes(s, lba, &mut buf[pos..pos + n]);
            } else {
                sector_bytes(s, lba, &mut tmp);
                buf[pos..pos + n].copy_from_slice(&tmp[within..within + n]);
            }
            pos += n;
        }
        Ok(())
    }

    /// Write `data` at `off`; with `fua` it is durable when this returns.
    pub fn write(&mut self, data: &[u8], off: u64, fua: bool) -> io::Result<()> {
        self.write_sectors(data, off, fua, None)
    }

    /// Write `count` sectors of the client pattern of write `tag` at sector `lba` (what
    /// `write(pattern(tag, lba, count), lba * 512, fua)` does, without making and decoding the
    /// bytes).
    pub fn write_tag(&mut self, tag: u64, lba: u64, count: u64, fua: bool) -> io::Result<()> {
        self.check(lba * SECTOR, (count * SECTOR) as usize)?;
        self.stats.writes += 1;
        let new = Sector::Tag(tag);
        for i in lba as usize..(lba + count) as usize {
            if fua {
                self.durable[i] = new.clone();
            }
            self.cache[i] = new.clone();
            if !self.is_dirty[i] {
                self.is_dirty[i] = true;
                self.dirty.push(i as u32);
            }
        }
        Ok(())
    }

    /// A write cut short by power loss: each sector independently reached the cache or not.
    pub fn write_partial(&mut self, data: &[u8], off: u64, rng: &mut Rng) {
        let _ = self.write_sectors(data, off, false, Some(rng));
    }

    fn write_sectors(
        &mut self,
        data: &[u8],
        off: u64,
        fua: bool,
        mut partial: Option<&mut Rng>,
    ) -> io::Result<()> {
        self.check(off, data.len())?;
        self.stats.writes += 1;
        let mut tmp = [0u8; SECTOR_BYTES];
        let mut pos = 0usize;
        while pos < data.len() {
            let at = off + pos as u64;
            let lba = at / SECTOR;
            let within = (at % SECTOR) as usize;
            let n = (SECTOR_BYTES - within).min(data.len() - pos);
            let skip = partial.as_mut().is_some_and(|r| r.next_u64() & 1 == 0);
            if !skip {
                let i = lba as usize;
                let new = if within == 0 && n == SECTOR_BYTES {
                    decode_sector(&data[pos..pos + n], lba)
                } else {
                    sector_bytes(&self.cache[i], lba, &mut tmp);
                    tmp[within..within + n].copy_from_slice(&data[pos..pos + n]);
                    decode_sector(&tmp, lba)
                };
                if fua {
                    self.durable[i] = new.clone();
                }
                self.cache[i] = new;
                if !self.is_dirty[i] {
                    self.is_dirty[i] = true;
                    self.dirty.push(i as u32);
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Zero `len` bytes at `off` (TRIM and WRITE_ZEROES; sector-aligned ranges are cheap).
    pub fn zero(&mut self, off: u64, len: u64, fua: bool) -> io::Result<()> {
        let len_usize = usize::try_from(len).map_err(|_| io::Error::other("length overflow"))?;
        self.check(off, len_usize)?;
        if !off.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) {
            return self.write(&vec![0; len_usize], off, fua);
        }
        self.stats.writes += 1;
        for lba in off / SECTOR..(off + len) / SECTOR {
            let i = lba as usize;
            if fua {
                self.durable[i] = Sector::Tag(0);
            }
            self.cache[i] = Sector::Tag(0);
            if !self.is_dirty[i] {
                self.is_dirty[i] = true;
                self.dirty.push(i as u32);
            }
        }
        Ok(())
    }

    /// Make every write completed so far durable. A failed flush (while `flush_failures` > 0)
    /// loses a seeded part of them for good and reports EIO; the next flush succeeds.
    pub fn flush(&mut self) -> io::Result<()> {
        self.stats.flushes += 1;
        let failing = self.flush_failures > 0;
        if failing {
            self.flush_failures -= 1;
            self.stats.failed_flushes += 1;
        }
        for i in std::mem::take(&mut self.dirty) {
            let i = i as usize;
            self.is_dirty[i] = false;
            if !failing || self.rng.next_u64() & 1 == 1 {
                self.durable[i] = self.cache[i].clone();
            } else {
                self.cache[i] = self.durable[i].clone();
                self.stats.sectors_lost += 1;
            }
        }
        if failing {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }

    /// Power loss: a seeded subset of the dirty sectors reached the media, the rest is lost.
    pub fn crash(&mut self, seed: u64) {
        let mut rng = Rng::new(seed);
        for i in std::mem::take(&mut self.dirty) {
            let i = i as usize;
            self.is_dirty[i] = false;
            if rng.next_u64() & 1 == 1 {
                self.durable[i] = self.cache[i].clone();
            } else if self.durable[i] != self.cache[i] {
                self.stats.sectors_lost += 1;
            }
        }
        self.cache.clone_from(&self.durable);
    }

    /// What survives power loss right now, sector `lba`.
    pub fn durable(&self, lba: u64) -> &Sector {
        &self.durable[lba as usize]
    }

    /// What a reader sees, sector `lba`.
    pub fn cached(&self, lba: u64) -> &Sector {
        &self.cache[lba as usize]
    }

    /// Bit rot behind everyone's back: sector `lba` changes in both images.
    pub fn rot(&mut self, lba: u64) {
        let mut b = [0u8; SECTOR_BYTES];
        sector_bytes(&self.cache[lba as usize], lba, &mut b);
        b[100] ^= 0xff;
        let s = decode_sector(&b, lba);
        self.cache[lba as usize] = s.clone();
        self.durable[lba as usize] = s;
    }

    /// Dirty sectors (written since the last flush).
    pub fn dirty_sectors(&self) -> usize {
        self.dirty.len()
    }
}

/// The external metadata device of a node (see the module comment).
#[derive(Clone)]
pub struct SimMetaDev(Arc<Mutex<MetaInner>>);

struct MetaInner {
    cache: Vec<u8>,
    durable: Vec<u8>,
    /// Byte ranges written since the last flush.
    dirty: Vec<(usize, usize)>,
    failing: bool,
    /// Power is lost at the write that brings this to zero.
    cut_after: Option<u32>,
    /// Power was lost: every I/O fails until `crash` brings the device back.
    dead: bool,
    rng: Rng,
    torn: u64,
}

impl SimMetaDev {
    pub fn new(len: usize, seed: u64) -> SimMetaDev {
        SimMetaDev(Arc::new(Mutex::new(MetaInner {
            cache: vec![0; len],
            durable: vec![0; len],
            dirty: Vec::new(),
            failing: false,
            cut_after: None,
            dead: false,
            rng: Rng::new(seed),
            torn: 0,
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut MetaInner) -> T) -> T {
        // A poisoned lock only follows a panic in another test thread; the data is still ours.
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    pub fn set_failing(&self, failing: bool) {
        self.with(|m| m.failing = failing);
    }

    /// Lose power at the `n`-th metadata write from now (1 = the next one), tearing it.
    pub fn cut_power_after(&self, n: u32) {
        self.with(|m| m.cut_after = Some(n.max(1)));
    }

    /// Power was lost in the middle of a metadata update.
    pub fn dead(&self) -> bool {
        self.with(|m| m.dead)
    }

    /// Metadata writes torn by a power cut so far.
    pub fn torn_writes(&self) -> u64 {
        self.with(|m| m.torn)
    }

    /// Power loss: each dirty 512-byte sector independently reached the media or not.
    pub fn crash(&self, seed: u64) {
        self.with(|m| {
            let mut rng = Rng::new(seed);
            for (start, end) in std::mem::take(&mut m.dirty) {
                let mut s = start - start % SECTOR_BYTES;
                while s < end {
                    let e = (s + SECTOR_BYTES).min(m.cache.len());
                    if rng.next_u64() & 1 == 1 {
                        let (c, d) = (&m.cache, &mut m.durable);
                        d[s..e].copy_from_slice(&c[s..e]);
                    }
                    s = e;
                }
            }
            m.cache.clone_from(&m.durable);
            m.dead = false;
            m.cut_after = None;
        });
    }
}

fn eio(why: &str) -> io::Error {
    io::Error::other(format!("Input/output error (simulated: {why})"))
}

impl MetaDev for SimMetaDev {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.with(|m| {
            if m.failing || m.dead {
                return Err(eio("failing metadata device"));
            }
            let s = usize::try_from(off).map_err(|_| io::Error::other("offset overflow"))?;
            let src = m
                .cache
                .get(s..s + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.with(|m| {
            if m.failing || m.dead {
                return Err(eio("failing metadata device"));
            }
            let s = usize::try_from(off).map_err(|_| io::Error::other("offset overflow"))?;
            let e = s + buf.len();
            if e > m.cache.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            let cut = match m.cut_after.as_mut() {
                Some(n) => {
                    *n -= 1;
                    *n == 0
                }
                None => false,
            };
            if cut {
                // Power fails while this write is on its way: some of its sectors made it
                // into the cache (and maybe, at the crash, onto the media), the rest did not.
                let mut sec = s - s % SECTOR_BYTES;
                while sec < e {
                    let se = (sec + SECTOR_BYTES).min(e);
                    if m.rng.next_u64() & 1 == 1 {
                        let from = sec.max(s);
                        m.cache[from..se].copy_from_slice(&buf[from - s..se - s]);
                    }
                    sec = se;
                }
                m.dirty.push((s, e));
                m.dead = true;
                m.cut_after = None;
                m.torn += 1;
                return Err(eio("power lost during a metadata write"));
            }
            m.cache[s..e].copy_from_slice(buf);
            m.dirty.push((s, e));
            Ok(())
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.with(|m| {
            if m.failing || m.dead {
                return Err(eio("failing metadata device"));
            }
            for (s, e) in std::mem::take(&mut m.dirty) {
                let (c, d) = (&m.cache, &mut m.durable);
                d[s..e].copy_from_slice(&c[s..e]);
            }
            Ok(())
        })
    }

    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.with(|m| m.cache.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(tag: u64, first_lba: u64, sectors: u64) -> Vec<u8> {
        let mut v = vec![0u8; (sectors * SECTOR) as usize];
        for (k, s) in v.chunks_exact_mut(SECTOR_BYTES).enumerate() {
            fill_sector(s, tag, first_lba + k as u64);
        }
        v
    }

    #[test]
    fn patterns_round_trip_and_misplaced_data_is_raw() {
        let p = pattern(7, 3, 1);
        assert_eq!(decode_sector(&p, 3), Sector::Tag(7));
        assert!(matches!(decode_sector(&p, 4), Sector::Raw(_)));
        assert_eq!(decode_sector(&[0u8; SECTOR_BYTES], 9), Sector::Tag(0));
    }

    #[test]
    fn flushed_and_fua_writes_survive_a_crash() {
        let mut d = SimDisk::new(64 * 1024, 1);
        d.write(&pattern(1, 0, 8), 0, false).expect("write");
        d.flush().expect("flush");
        d.write(&pattern(2, 8, 8), 4096, true).expect("fua write");
        d.write(&pattern(3, 16, 8), 8192, false)
            .expect("cached write");
        for seed in 0..32 {
            let mut c = d.clone();
            c.crash(seed);
            for lba in 0..8 {
                assert_eq!(c.durable(lba), &Sector::Tag(1), "flushed write lost");
                assert_eq!(c.durable(lba + 8), &Sector::Tag(2), "FUA write lost");
                assert!(matches!(
                    c.cached(lba + 16),
                    Sector::Tag(3) | Sector::Tag(0)
                ));
            }
        }
    }

    #[test]
    fn some_crash_loses_unflushed_writes() {
        let d = {
            let mut d = SimDisk::new(64 * 1024, 1);
            d.write(&pattern(9, 0, 1), 0, false).expect("write");
            d
        };
        let after = |seed| {
            let mut c = d.clone();
            c.crash(seed);
            c.cached(0).clone()
        };
        let lost = (0..32).any(|seed| after(seed) == Sector::Tag(0));
        let kept = (0..32).any(|seed| after(seed) == Sector::Tag(9));
        assert!(lost && kept, "the crash model must both keep and drop");
    }

    #[test]
    fn a_failed_flush_loses_writes_and_the_next_flush_succeeds() {
        let mut d = SimDisk::new(64 * 1024, 3);
        d.write(&pattern(5, 0, 64), 0, false).expect("write");
        d.flush_failures = 1;
        assert!(d.flush().is_err());
        assert!(d.stats.sectors_lost > 0, "nothing was lost");
        d.flush().expect("the next flush succeeds");
        let kept = (0..64).filter(|&l| d.durable(l) == &Sector::Tag(5)).count();
        assert!(kept < 64, "lost write-back came back");
        for l in 0..64 {
            assert_eq!(
                d.durable(l),
                d.cached(l),
                "the cache falls back to the media"
            );
        }
    }

    #[test]
    fn unaligned_writes_read_back() {
        let mut d = SimDisk::new(16 * 1024, 1);
        d.write(&[7u8; 100], 1000, false).expect("write");
        let mut b = vec![0u8; 300];
        d.read(&mut b, 900).expect("read");
        assert!(b[..100].iter().all(|&x| x == 0));
        assert!(b[100..200].iter().all(|&x| x == 7));
    }

    #[test]
    fn the_metadata_device_tears_and_loses_unflushed_writes() {
        let m = SimMetaDev::new(64 * 1024, 1);
        m.write_at(&[1u8; 4096], 0).expect("write");
        m.flush().expect("flush");
        m.write_at(&[2u8; 4096], 4096).expect("write");
        m.cut_power_after(1);
        assert!(m.write_at(&[3u8; 4096], 8192).is_err());
        assert!(m.dead());
        assert!(m.flush().is_err(), "a dead device does nothing");
        m.crash(5);
        let mut b = [0u8; 4096];
        m.read_at(&mut b, 0).expect("read");
        assert!(b.iter().all(|&x| x == 1), "flushed metadata lost");
        m.read_at(&mut b, 8192).expect("read");
        assert!(b.iter().all(|&x| x == 3 || x == 0), "torn into garbage");
    }
}
