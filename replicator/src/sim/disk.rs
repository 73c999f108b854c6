//! `SimDisk`: a block device with a volatile write cache (tigerbeetle's testing/storage idea).
//!
//! `durable` is what survives power loss; writes since the last completed flush sit in
//! `pending` and a crash keeps an arbitrary, seeded subset of them, each 4 KiB sector kept or
//! dropped independently ("every write not followed by a completed flush may be lost, or applied
//! partially, in any order"). FUA writes go straight to `durable`. Reads see the cache.
//! What it deliberately does not model: reordering of flushes themselves, or corruption of
//! data that was durable before the crash.

use std::cell::RefCell;

use crate::core::rng::Rng;

pub const SECTOR_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct SimDisk {
    inner: RefCell<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    durable: Vec<u8>,
    cache: Vec<u8>,
    /// Writes since the last flush: (offset, len). Used to decide what a crash may drop.
    pending: Vec<(u64, usize)>,
}

impl SimDisk {
    pub fn new(size_bytes: usize) -> SimDisk {
        SimDisk {
            inner: RefCell::new(Inner {
                durable: vec![0; size_bytes],
                cache: vec![0; size_bytes],
                pending: Vec::new(),
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.borrow().cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn range(&self, off: u64, len: usize) -> std::io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(off).map_err(|_| std::io::Error::other("offset overflow"))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| std::io::Error::other("range overflow"))?;
        if end > self.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "beyond end of SimDisk",
            ));
        }
        Ok(start..end)
    }

    pub fn read(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let r = self.range(off, buf.len())?;
        buf.copy_from_slice(&self.inner.borrow().cache[r]);
        Ok(())
    }

    pub fn write(&self, data: &[u8], off: u64, fua: bool) -> std::io::Result<()> {
        let r = self.range(off, data.len())?;
        let mut i = self.inner.borrow_mut();
        i.cache[r.clone()].copy_from_slice(data);
        if fua {
            i.durable[r].copy_from_slice(data);
        } else {
            i.pending.push((off, data.len()));
        }
        Ok(())
    }

    pub fn flush(&self) {
        let mut i = self.inner.borrow_mut();
        let cache = i.cache.clone();
        i.durable = cache;
        i.pending.clear();
    }

    /// Power loss: the disk as it comes back, keeping a seeded subset of unflushed sectors.
    pub fn crash(&self, seed: u64) -> SimDisk {
        let i = self.inner.borrow();
        let mut rng = Rng::new(seed);
        let mut image = i.durable.clone();
        for &(off, len) in &i.pending {
            let start = usize::try_from(off).unwrap_or(usize::MAX);
            let mut s = start - start % SECTOR_BYTES;
            while s < start + len {
                let e = (s + SECTOR_BYTES).min(image.len());
                if rng.next_u64().is_multiple_of(2) {
                    image[s..e].copy_from_slice(&i.cache[s..e]);
                }
                s = e;
            }
        }
        SimDisk {
            inner: RefCell::new(Inner {
                durable: image.clone(),
                cache: image,
                pending: Vec::new(),
            }),
        }
    }

    /// The bytes a reader would see (volatile cache included).
    pub fn snapshot(&self) -> Vec<u8> {
        self.inner.borrow().cache.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushed_and_fua_writes_survive_a_crash() {
        let d = SimDisk::new(64 * 1024);
        d.write(&[1u8; 4096], 0, false).expect("write");
        d.flush();
        d.write(&[2u8; 4096], 4096, true).expect("fua write");
        d.write(&[3u8; 4096], 8192, false).expect("cached write");
        for seed in 0..32 {
            let c = d.crash(seed);
            let img = c.snapshot();
            assert!(img[..4096].iter().all(|&b| b == 1), "flushed write lost");
            assert!(img[4096..8192].iter().all(|&b| b == 2), "FUA write lost");
            assert!(
                img[8192..12288].iter().all(|&b| b == 3 || b == 0),
                "torn into garbage"
            );
        }
    }

    #[test]
    fn some_crash_loses_unflushed_writes() {
        let d = SimDisk::new(64 * 1024);
        d.write(&[9u8; 4096], 0, false).expect("write");
        let lost = (0..32).any(|seed| d.crash(seed).snapshot()[0] == 0);
        let kept = (0..32).any(|seed| d.crash(seed).snapshot()[0] == 9);
        assert!(
            lost && kept,
            "the crash model must both keep and drop unflushed sectors"
        );
    }
}
