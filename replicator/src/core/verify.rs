//! Online verify (docs/drbd-semantics.md §8.5): the VerifyS side walks the device in chunks, both
//! sides hash each 4 KiB block with `verify-alg` (off the I/O thread), and blocks whose digests
//! differ are marked out of sync on both nodes. Nothing is repaired here: as in DRBD, a
//! disconnect/connect (or `verify --fix`) resyncs what verify found.
//!
//! Unlike DRBD, a mismatch in a block that an application write touched while its chunk was
//! being checked (a write in flight when the reads were issued completes, or a new one starts,
//! here or arriving from the peer, before both digests are in) is not counted: the two reads
//! may have seen the data before and after that write. Such a block is checked again on its
//! own, until a check no write disturbed agrees or disagrees (issue 24 §2). The single ordered
//! link makes this complete: a write the peer applied before its read was sent to us before
//! its digests.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::engine::Engine;
use super::ids::LinkId;
use super::io::{HashAlg, Output, PeerDiskOp};
use super::io_table::IoOwner;
use super::refusal::Refusal;
use super::state::{ConnState, DiskState, Role};
use super::state_change::ChangeSet;
use crate::digest::Digests;
use crate::wire::Packet;

/// Verify requests in flight and their size.
const WINDOW: usize = 8;
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
    alg: HashAlg,
    next: u64,
    chunks: HashMap<u64, Chunk>,
    next_id: u64,
    found: u64,
    done_bytes: u64,
    started: Option<Instant>,
    /// Blocks to check again (offset, previous attempts): a write disturbed their check.
    recheck: VecDeque<(u64, u32)>,
    /// Mismatches that a write explained away and no later check confirmed.
    pub(crate) settled: u64,
    /// Blocks still disturbed after `RECHECKS_MAX` checks.
    pub(crate) unsettled: u64,
}

/// Reads and hashes done for verify and csums, keyed by the I/O that produces them.
#[derive(Debug, Clone)]
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
enum Whose {
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
    fn note_write(&mut self, start: u64, end: u64) {
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
    fn next_chunks(&mut self, usable: u64) -> Vec<(u64, u64, u64)> {
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
    fn record(&mut self, id: u64, whose: Whose, digests: Vec<u8>) -> bool {
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
    fn compare(&mut self, id: u64, usable: u64) -> Option<Vec<(u64, u64)>> {
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

    fn finished(&self, usable: u64) -> bool {
        self.chunks.is_empty() && self.next >= usable && self.recheck.is_empty()
    }
}

fn alg_of(alg: Option<HashAlg>) -> Result<HashAlg, Refusal> {
    alg.ok_or_else(|| Refusal::Unsupported {
        what: "verify without `verify-alg` in the net section (e.g. verify-alg sha1;)".into(),
    })
}

/// A length the peer or a chunk gives, bounded by `CHUNK_BYTES` or a resync request.
fn len32(len: u64) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Engine {
    /// What verify and `verify --fix` need: a connection and both disks UpToDate.
    fn check_in_sync_and_connected(&self) -> Result<(), Refusal> {
        if self.st.cstate() != ConnState::Connected {
            return Err(Refusal::NeedConnection {
                cstate: self.st.cstate(),
            });
        }
        if self.st.disk() != DiskState::UpToDate || self.st.pdsk() != DiskState::UpToDate {
            return Err(Refusal::NoUpToDateDisk {
                disk: self.st.disk(),
                pdsk: self.st.pdsk(),
            });
        }
        Ok(())
    }

    pub(crate) fn cmd_verify(&mut self) -> Result<Option<String>, Refusal> {
        self.check_in_sync_and_connected()?;
        let alg = alg_of(self.cfg.peer.verify_alg)?;
        let _ = self.change_state(ChangeSet::new().cstate(ConnState::VerifyS));
        self.verify = Some(Verify::new(alg, self.last_now));
        self.verify_ranges.clear();
        tracing::info!(resource = %self.cfg.resource, "Online verify started ({} bytes, {:?})", self.usable_bytes, alg);
        self.pump_verify();
        Ok(Some("online verify started".into()))
    }

    fn pump_verify(&mut self) {
        let usable = self.usable_bytes;
        let Some(link) = self.link_id() else { return };
        let Some(v) = self.verify.as_mut() else {
            return;
        };
        for (id, offset, len) in v.next_chunks(usable) {
            let len = len32(len);
            self.send(Packet::OvRequest { id, offset, len });
            self.aux_read(Aux::VerifyMine { id, link }, offset, len);
        }
        if self.verify.as_ref().is_some_and(|v| v.finished(usable)) {
            self.finish_verify();
        }
    }

    fn finish_verify(&mut self) {
        let Some(v) = self.verify.take() else { return };
        let secs = v
            .started
            .zip(self.last_now)
            .map_or(0, |(s, n)| n.saturating_duration_since(s).as_secs());
        let mut done = format!(
            "Online verify done (total {secs} sec; {} K/sec); found {} 4k block out of sync",
            v.done_bytes / 1024 / secs.max(1),
            v.found
        );
        if v.settled > 0 || v.unsettled > 0 {
            done.push_str(&format!(
                " ({} mismatches seen during writes agreed when checked again; {} blocks kept being written and were not judged)",
                v.settled, v.unsettled
            ));
        }
        self.last_verify_oos = Some(v.found);
        self.send(Packet::OvDone {
            oos_blocks: v.found,
        });
        if v.found > 0 {
            // DRBD's out-of-sync helper: verify found blocks that differ.
            self.emit(Output::Handler {
                name: "out-of-sync",
            });
        }
        // The bits it set must survive a crash.
        let _ = self.change_state(
            ChangeSet::new()
                .cstate(ConnState::Connected)
                .why(done)
                .persist(),
        );
    }

    /// Read `len` bytes at `offset` for `aux`; the data then goes to the hashing pool.
    pub(crate) fn aux_read(&mut self, aux: Aux, offset: u64, len: u32) {
        let io = self.ios.start(IoOwner::AuxRead(aux));
        self.emit(Output::PeerDisk {
            io,
            op: PeerDiskOp::Read { offset, len },
        });
    }

    /// A verify/csums read completed: hash it (a failed read: verify counts the chunk as out
    /// of sync, csums falls back to sending the data).
    pub(crate) fn aux_read_done(&mut self, aux: Aux, data: Option<Vec<u8>>) {
        let alg = match &aux {
            Aux::VerifyMine { .. } | Aux::VerifyPeer { .. } => self
                .verify
                .as_ref()
                .map(|v| v.alg)
                .or(self.cfg.peer.verify_alg),
            Aux::CsumsMine { .. } => self.cfg.peer.csums_alg,
        };
        let (Some(data), Some(alg)) = (data, alg) else {
            self.aux_hashed(aux, None);
            return;
        };
        let io = self.ios.start(IoOwner::AuxHash(aux));
        self.emit(Output::Hash { io, alg, data });
    }

    pub(crate) fn aux_hashed(&mut self, aux: Aux, digests: Option<Vec<u8>>) {
        let digests = digests.unwrap_or_default();
        match aux {
            Aux::VerifyMine { id, link } => {
                if self.link_id() == Some(link) {
                    self.verify_digests(id, Whose::Mine, digests);
                }
            }
            Aux::VerifyPeer {
                id,
                offset,
                len,
                link,
            } => {
                if self.link_id() == Some(link) {
                    self.send(Packet::OvReply {
                        id,
                        offset,
                        len,
                        digest: digests,
                    });
                }
            }
            Aux::CsumsMine {
                id,
                offset,
                len,
                link,
            } => {
                if self.link_id() == Some(link) && self.resync.is_some() {
                    self.send(Packet::RsRequest {
                        id,
                        offset,
                        len,
                        digest: digests,
                    });
                }
            }
        }
    }

    pub(crate) fn on_ov_request(&mut self, id: u64, offset: u64, len: u32) {
        let end = offset
            .checked_add(u64::from(len))
            .filter(|e| *e <= self.usable_bytes);
        if end.is_none() || u64::from(len) > CHUNK_BYTES {
            self.protocol_error(format!("verify request {offset}+{len} is invalid"));
            return;
        }
        if self.cfg.peer.verify_alg.is_none() {
            self.protocol_error("peer started online verify but verify-alg is not set here".into());
            return;
        }
        if self.st.cstate() == ConnState::Connected {
            self.verify_ranges.clear();
            let _ = self.change_state(ChangeSet::new().cstate(ConnState::VerifyT));
        }
        let Some(link) = self.link_id() else { return };
        let aux = Aux::VerifyPeer {
            id,
            offset,
            len,
            link,
        };
        self.aux_read(aux, offset, len);
    }

    pub(crate) fn on_ov_reply(&mut self, id: u64, digest: Vec<u8>) {
        if !self.verify_digests(id, Whose::Theirs, digest) {
            self.protocol_error(format!("verify reply {id} without a request"));
        }
    }

    /// One side's digests of chunk `id`; once both are in, the differing blocks are marked
    /// out of sync here and reported to the peer. Whether the chunk was waiting for them.
    fn verify_digests(&mut self, id: u64, whose: Whose, digests: Vec<u8>) -> bool {
        let usable = self.usable_bytes;
        let Some(v) = self.verify.as_mut() else {
            return false;
        };
        if !v.record(id, whose, digests) {
            return false;
        }
        let Some(bad) = v.compare(id, usable) else {
            return true;
        };
        for (off, len) in bad {
            tracing::warn!(resource = %self.cfg.resource, "Out of sync: start={}, size={} (sectors)", off / 512, len / 512);
            push_range(&mut self.verify_ranges, off, len);
            if let Some(bm) = self.bitmap.as_mut() {
                bm.set_range(off, len);
            }
            self.send(Packet::OvResult {
                id,
                offset: off,
                len: len32(len),
                in_sync: false,
            });
        }
        self.pump_verify();
        true
    }

    pub(crate) fn on_ov_result(&mut self, offset: u64, len: u32, in_sync: bool) {
        if in_sync {
            return;
        }
        let ok = offset
            .checked_add(u64::from(len))
            .is_some_and(|e| e <= self.usable_bytes);
        if !ok {
            self.protocol_error(format!("verify result {offset}+{len} is invalid"));
            return;
        }
        if let Some(bm) = self.bitmap.as_mut() {
            bm.set_range(offset, u64::from(len));
        }
        push_range(&mut self.verify_ranges, offset, u64::from(len));
    }

    /// An application write (ours or the peer's) started or completed over `[offset,
    /// offset+len)`: a running verify must not trust a mismatch there.
    pub(crate) fn verify_note_write(&mut self, offset: u64, len: u64) {
        if let Some(v) = self.verify.as_mut() {
            v.note_write(offset, offset.saturating_add(len));
        }
    }

    /// The ranges the last verify found out of sync (on either side of it), merged.
    pub fn last_verify_ranges(&self) -> &[(u64, u64)] {
        &self.verify_ranges
    }

    pub(crate) fn on_ov_done(&mut self, oos_blocks: u64) {
        self.last_verify_oos = Some(oos_blocks);
        let why =
            format!("Online verify done on the peer; found {oos_blocks} 4k block out of sync");
        let mut cs = ChangeSet::new().why(why).persist();
        if self.st.cstate() == ConnState::VerifyT {
            cs = cs.cstate(ConnState::Connected);
        }
        let _ = self.change_state(cs);
        self.status_changed();
    }

    pub(crate) fn cmd_resync_out_of_sync(&mut self) -> Result<Option<String>, Refusal> {
        self.check_in_sync_and_connected()?;
        let bits = self
            .bitmap
            .as_ref()
            .map_or(0, crate::meta::bitmap::Bitmap::count_ones);
        if bits == 0 {
            return Ok(Some("nothing is marked out of sync".into()));
        }
        let (me, peer) = (self.st.role(), self.st.peer_role());
        if me == Role::Primary && peer == Role::Primary {
            return Err(Refusal::Unsupported {
                what: "verify --fix with two Primaries (which one holds the right data?)".into(),
            });
        }
        if peer == Role::Primary {
            // The Primary's data is the reference: it becomes the SyncSource.
            self.send(Packet::SyncStart {
                source: false,
                full: false,
            });
            return Ok(Some(format!(
                "{bits} out-of-sync blocks: the peer (Primary) resyncs them to this node"
            )));
        }
        self.start_sync_source(false);
        Ok(Some(format!(
            "resync of {bits} out-of-sync blocks to the peer started"
        )))
    }

    pub(crate) fn abort_verify(&mut self) {
        self.verify = None;
    }

    /// (done bytes, total bytes) of a running verify, for the progress bar.
    pub fn verify_progress(&self) -> Option<(u64, u64)> {
        self.verify
            .as_ref()
            .map(|v| (v.done_bytes, self.usable_bytes))
    }

    pub fn last_verify_oos(&self) -> Option<u64> {
        self.last_verify_oos
    }
}

/// Append a found range, merging it with the previous one when adjacent (found in order).
fn push_range(ranges: &mut Vec<(u64, u64)>, off: u64, len: u64) {
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
