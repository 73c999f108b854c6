//! The state of a running online verify on the VerifyS side, and what it concludes: which
//! chunks to ask for next, and once both sides' digests of a chunk are in, which blocks differ
//! (a mismatch a concurrent write may explain is checked again, see `verify.rs`). Pure: the
//! verify machine (`verify_machine.rs`) feeds it digests and asks for what it names.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::core::contract::ids::LinkId;
use crate::core::contract::io::HashAlg;
use crate::digest::Digests;

/// Verify requests in flight and their size.
pub(crate) const WINDOW: usize = 8;
pub(crate) const CHUNK_BYTES: u64 = 256 * 1024;
const BLOCK: u64 = 4096;
/// Checks of one block that writes kept disturbing before it is given up on (logged, not
/// counted: nothing can be said about a block that is always being written).
const RECHECKS_MAX: u32 = 32;

#[derive(Debug, Default)]
struct Chunk {
    offset: u64,
    len: u64,
    mine: Option<Vec<u8>>,
    theirs: Option<Vec<u8>>,
    /// Blocks (bit i = block i of the chunk, at most 64) a write touched while in flight.
    touched: u64,
    /// 0 for the first pass; n for the n-th recheck of a single block.
    attempt: u32,
}

/// A running verify on the VerifyS side: the chunks in flight and what was found.
#[derive(Debug)]
pub(crate) struct Verify {
    pub(crate) alg: HashAlg,
    next: u64,
    chunks: HashMap<u64, Chunk>,
    next_id: u64,
    pub(crate) found: u64,
    pub(crate) done_bytes: u64,
    pub(crate) started: Option<Instant>,
    /// Blocks to check again (offset, previous attempts): a write disturbed their check.
    recheck: VecDeque<(u64, u32)>,
    /// Mismatches that a write explained away and no later check confirmed.
    pub(crate) settled: u64,
    /// Blocks still disturbed after `RECHECKS_MAX` checks.
    pub(crate) unsettled: u64,
}

/// Reads and hashes done for verify and csums, keyed by the I/O that produces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Aux {
    /// VerifyS: our copy of chunk `id`.
    VerifyMine { id: u64, link: LinkId },
    /// VerifyT: the peer asked for the digests of this chunk.
    VerifyPeer {
        id: u64,
        offset: u64,
        len: u32,
        link: LinkId,
    },
    /// SyncTarget with csums-alg: our digests, sent with the resync request.
    CsumsMine {
        id: u64,
        offset: u64,
        len: u32,
        link: LinkId,
    },
}

/// One side's digests of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whose {
    Mine,
    Theirs,
}

impl Verify {
    pub(crate) fn new(alg: HashAlg, started: Option<Instant>) -> Verify {
        Verify {
            alg,
            next: 0,
            chunks: HashMap::new(),
            next_id: 1,
            found: 0,
            done_bytes: 0,
            started,
            recheck: VecDeque::new(),
            settled: 0,
            unsettled: 0,
        }
    }

    /// An application write to `[start, end)` started or completed: chunks in flight over it
    /// cannot trust a mismatch there.
    pub(crate) fn note_write(&mut self, start: u64, end: u64) {
        for c in self.chunks.values_mut() {
            let (s, e) = (start.max(c.offset), end.min(c.offset + c.len));
            if s < e {
                let first = (s - c.offset) / BLOCK;
                let last = (e - 1 - c.offset) / BLOCK;
                for b in first..=last.min(63) {
                    c.touched |= 1 << b;
                }
            }
        }
    }

    /// The next chunks `(id, offset, len)` to verify, keeping `WINDOW` in flight.
    pub(crate) fn next_chunks(&mut self, usable: u64) -> Vec<(u64, u64, u64)> {
        let mut reqs = Vec::new();
        while self.chunks.len() < WINDOW {
            let Some((offset, attempt)) = self.recheck.pop_front() else {
                break;
            };
            let len = BLOCK.min(usable.saturating_sub(offset));
            if len == 0 {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.chunks.insert(
                id,
                Chunk {
                    offset,
                    len,
                    attempt: attempt + 1,
                    ..Default::default()
                },
            );
            reqs.push((id, offset, len));
        }
        while self.chunks.len() < WINDOW && self.next < usable {
            let len = CHUNK_BYTES.min(usable - self.next);
            let id = self.next_id;
            self.next_id += 1;
            self.chunks.insert(
                id,
                Chunk {
                    offset: self.next,
                    len,
                    ..Default::default()
                },
            );
            reqs.push((id, self.next, len));
            self.next += len;
        }
        reqs
    }

    /// Record one side's digests of chunk `id`; whether the chunk is waiting for them.
    pub(crate) fn record(&mut self, id: u64, whose: Whose, digests: Vec<u8>) -> bool {
        let Some(c) = self.chunks.get_mut(&id) else {
            return false;
        };
        match whose {
            Whose::Mine => c.mine = Some(digests),
            Whose::Theirs => c.theirs = Some(digests),
        }
        true
    }

    /// Once both digests of chunk `id` are in: the 4 KiB blocks `(offset, len)` that differ.
    pub(crate) fn compare(&mut self, id: u64, usable: u64) -> Option<Vec<(u64, u64)>> {
        let ready = self
            .chunks
            .get(&id)
            .is_some_and(|c| c.mine.is_some() && c.theirs.is_some());
        if !ready {
            return None;
        }
        let c = self.chunks.remove(&id)?;
        let dlen = self.alg.digest_len();
        let (mine, theirs) = (c.mine.unwrap_or_default(), c.theirs.unwrap_or_default());
        let mut bad = Vec::new();
        for b in 0..c.len.div_ceil(BLOCK) {
            // A chunk has at most 64 blocks: the index fits a usize.
            let i = usize::try_from(b).unwrap_or(usize::MAX);
            let r = i * dlen..(i + 1) * dlen;
            let off = c.offset + b * BLOCK;
            let differs = mine.get(r.clone()).is_none() || mine.get(r.clone()) != theirs.get(r);
            let disturbed = b < 64 && c.touched & (1 << b) != 0;
            if differs && disturbed {
                if c.attempt < RECHECKS_MAX {
                    self.recheck.push_back((off, c.attempt));
                } else {
                    self.unsettled += 1;
                }
            } else if differs {
                bad.push((off, BLOCK.min(usable - off)));
            } else if c.attempt > 0 {
                self.settled += 1;
            }
        }
        if c.attempt == 0 {
            self.done_bytes += c.len;
        }
        self.found += bad.len() as u64;
        Some(bad)
    }

    pub(crate) fn finished(&self, usable: u64) -> bool {
        self.chunks.is_empty() && self.next >= usable && self.recheck.is_empty()
    }
}

/// A length the peer or a chunk gives, bounded by `CHUNK_BYTES` or a resync request.
pub(crate) fn len32(len: u64) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Append a found range, merging it with the previous one when adjacent (found in order).
pub(crate) fn push_range(ranges: &mut Vec<(u64, u64)>, off: u64, len: u64) {
    if let Some(last) = ranges.last_mut() {
        if last.0 + last.1 == off {
            last.1 += len;
            return;
        }
    }
    ranges.push((off, len));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_a_write_disturbed_is_checked_again_and_only_a_lasting_one_counts() {
        let mut v = Verify::new(HashAlg::Crc32c, None);
        let usable = 8 * 4096;
        let (id, ..) = v.next_chunks(usable)[0];
        // Blocks 2 and 5 differ; a write touched block 2 while the chunk was in flight.
        v.note_write(2 * 4096 + 100, 2 * 4096 + 200);
        let mine = vec![0u8; 8 * 4];
        let mut theirs = mine.clone();
        theirs[2 * 4] ^= 1;
        theirs[5 * 4] ^= 1;
        v.record(id, Whose::Mine, mine);
        v.record(id, Whose::Theirs, theirs);
        assert_eq!(v.compare(id, usable), Some(vec![(5 * 4096, 4096)]));
        assert!(!v.finished(usable), "block 2 waits for its recheck");
        // The recheck of block 2 alone; this time it agrees: not counted.
        let again = v.next_chunks(usable);
        assert_eq!(again.len(), 1);
        let (rid, off, len) = again[0];
        assert_eq!((off, len), (2 * 4096, 4096));
        v.record(rid, Whose::Mine, vec![7; 4]);
        v.record(rid, Whose::Theirs, vec![7; 4]);
        assert_eq!(v.compare(rid, usable), Some(Vec::new()));
        assert!(v.finished(usable));
        assert_eq!((v.found, v.settled, v.unsettled), (1, 1, 0));
        assert_eq!(v.done_bytes, usable, "a recheck is not progress");
    }

    #[test]
    fn an_undisturbed_recheck_that_still_differs_counts() {
        let mut v = Verify::new(HashAlg::Crc32c, None);
        let (id, ..) = v.next_chunks(4096)[0];
        v.note_write(0, 4096);
        v.record(id, Whose::Mine, vec![0; 4]);
        v.record(id, Whose::Theirs, vec![1; 4]);
        assert_eq!(v.compare(id, 4096), Some(Vec::new()));
        let (rid, ..) = v.next_chunks(4096)[0];
        v.record(rid, Whose::Mine, vec![0; 4]);
        v.record(rid, Whose::Theirs, vec![1; 4]);
        assert_eq!(v.compare(rid, 4096), Some(vec![(0, 4096)]));
        assert_eq!(v.found, 1);
    }

    #[test]
    fn chunks_cover_the_device_within_the_window() {
        let mut v = Verify::new(HashAlg::Crc32c, None);
        let usable = CHUNK_BYTES * 10 + 4096;
        let first = v.next_chunks(usable);
        assert_eq!(first.len(), WINDOW);
        assert!(v.next_chunks(usable).is_empty(), "window full");
        for (id, ..) in &first {
            v.record(*id, Whose::Mine, vec![0; 64 * 4]);
            v.record(*id, Whose::Theirs, vec![0; 64 * 4]);
            assert_eq!(v.compare(*id, usable), Some(Vec::new()));
        }
        let rest = v.next_chunks(usable);
        assert_eq!(rest.len(), 3);
        assert_eq!(rest.last().map(|r| r.2), Some(4096), "the tail chunk");
        assert!(!v.finished(usable));
    }

    #[test]
    fn differing_digests_name_their_blocks() {
        let mut v = Verify::new(HashAlg::Crc32c, None);
        let usable = 16 * 4096;
        let chunks = v.next_chunks(usable);
        let (id, ..) = chunks[0];
        let mine = vec![1u8; 16 * 4];
        let mut theirs = mine.clone();
        theirs[5 * 4] ^= 1;
        assert!(v.record(id, Whose::Mine, mine));
        assert_eq!(v.compare(id, usable), None, "waits for the other side");
        assert!(v.record(id, Whose::Theirs, theirs));
        assert_eq!(v.compare(id, usable), Some(vec![(5 * 4096, 4096)]));
        assert!(!v.record(id, Whose::Theirs, Vec::new()), "chunk done");
        assert!(v.finished(usable));
        assert_eq!(v.found, 1);
    }

    #[test]
    fn a_missing_digest_counts_as_out_of_sync() {
        let mut v = Verify::new(HashAlg::Sha1, None);
        let (id, ..) = v.next_chunks(8192)[0];
        v.record(id, Whose::Mine, Vec::new());
        v.record(id, Whose::Theirs, vec![0; 40]);
        assert_eq!(v.compare(id, 8192).map(|b| b.len()), Some(2));
    }
}
