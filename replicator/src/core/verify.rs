//! Online verify (reference/drbd.md §7.4): the VerifyS side walks the device in chunks, both
//! sides hash each 4 KiB block with `verify-alg` (off the I/O thread), and blocks whose digests
//! differ are marked out of sync on both nodes. Nothing is repaired here: as in DRBD, a
//! disconnect/connect resyncs what verify found.

use std::collections::HashMap;
use std::time::Instant;

use super::engine::Engine;
use super::io::{HashAlg, IoId, LinkId, Output, PeerDiskOp};
use super::refusal::Refusal;
use super::state::{ConnState, DiskState};
use super::state_change::ChangeSet;
use crate::digest::Digests;
use crate::wire::Packet;

/// Verify requests in flight and their size.
const WINDOW: usize = 8;
const CHUNK_BYTES: u64 = 256 * 1024;
const BLOCK: u64 = 4096;

#[derive(Debug, Default)]
struct Chunk {
    offset: u64,
    len: u64,
    mine: Option<Vec<u8>>,
    theirs: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Verify {
    alg: HashAlg,
    next: u64,
    chunks: HashMap<u64, Chunk>,
    next_id: u64,
    pub found: u64,
    pub done_bytes: u64,
    pub started: Option<Instant>,
}

/// Reads and hashes done for verify and csums, keyed by the I/O that produces them.
#[derive(Debug, Clone)]
pub(crate) enum Aux {
    /// VerifyS: our copy of chunk `id`.
    VerifyMine { id: u64 },
    /// VerifyT: the peer asked for the digests of this chunk.
    VerifyPeer {
        id: u64,
        offset: u64,
        len: u32,
        link: LinkId,
    },
    /// SyncTarget with csums-alg: our digests, sent with the resync request.
    CsumsMine { id: u64, offset: u64, len: u32 },
}

fn alg_of(alg: Option<HashAlg>) -> Result<HashAlg, Refusal> {
    alg.ok_or_else(|| Refusal::Unsupported {
        what: "verify without `verify-alg` in the net section (e.g. verify-alg sha1;)".into(),
    })
}

impl Engine {
    pub(crate) fn cmd_verify(&mut self) -> Result<Option<String>, Refusal> {
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
        let alg = alg_of(self.cfg.peer.verify_alg)?;
        let _ = self.change_state(ChangeSet::new().cstate(ConnState::VerifyS));
        self.verify = Some(Verify {
            alg,
            next: 0,
            chunks: HashMap::new(),
            next_id: 1,
            found: 0,
            done_bytes: 0,
            started: self.last_now,
        });
        tracing::info!(resource = %self.cfg.resource, "Online verify started ({} bytes, {:?})", self.usable_bytes, alg);
        self.status_changed();
        self.pump_verify();
        Ok(Some("online verify started".into()))
    }

    fn pump_verify(&mut self) {
        let usable = self.usable_bytes;
        let mut reqs = Vec::new();
        {
            let Some(v) = self.verify.as_mut() else {
                return;
            };
            while v.chunks.len() < WINDOW && v.next < usable {
                let len = CHUNK_BYTES.min(usable - v.next);
                let id = v.next_id;
                v.next_id += 1;
                v.chunks.insert(
                    id,
                    Chunk {
                        offset: v.next,
                        len,
                        ..Default::default()
                    },
                );
                reqs.push((id, v.next, len));
                v.next += len;
            }
        }
        for (id, offset, len) in reqs {
            self.send(Packet::OvRequest {
                id,
                offset,
                len: len as u32,
            });
            self.aux_read(Aux::VerifyMine { id }, offset, len as u32);
        }
        let finished = self
            .verify
            .as_ref()
            .is_some_and(|v| v.chunks.is_empty() && v.next >= usable);
        if finished {
            self.finish_verify();
        }
    }

    fn finish_verify(&mut self) {
        let Some(v) = self.verify.take() else { return };
        let secs = v
            .started
            .zip(self.last_now)
            .map_or(0, |(s, n)| n.saturating_duration_since(s).as_secs());
        let _ = self.change_state(ChangeSet::new().cstate(ConnState::Connected));
        tracing::info!(
            resource = %self.cfg.resource,
            "Online verify done (total {secs} sec; {} K/sec); found {} 4k block out of sync",
            v.done_bytes / 1024 / secs.max(1),
            v.found
        );
        self.last_verify_oos = Some(v.found);
        self.send(Packet::OvDone {
            oos_blocks: v.found,
        });
        self.persist_superblock();
        self.status_changed();
    }

    /// Read `len` bytes at `offset` for `aux`; the data then goes to the hashing pool.
    pub(crate) fn aux_read(&mut self, aux: Aux, offset: u64, len: u32) {
        let io = self.alloc_io();
        self.aux_reads.insert(io, aux);
        self.emit(Output::PeerDisk {
            io,
            op: PeerDiskOp::Read { offset, len },
        });
    }

    /// A verify/csums read completed: hash it. Returns false if `io` was not one.
    pub(crate) fn aux_read_done(&mut self, io: IoId, data: Option<Vec<u8>>) -> bool {
        let Some(aux) = self.aux_reads.remove(&io) else {
            return false;
        };
        let alg = match &aux {
            Aux::VerifyMine { .. } | Aux::VerifyPeer { .. } => self
                .verify
                .as_ref()
                .map(|v| v.alg)
                .or(self.cfg.peer.verify_alg),
            Aux::CsumsMine { .. } => self.cfg.peer.csums_alg,
        };
        let (Some(data), Some(alg)) = (data, alg) else {
            // A failed read: verify counts the chunk as out of sync, csums falls back to data.
            self.aux_hashed(aux, None);
            return true;
        };
        let hio = self.alloc_io();
        self.aux_hashes.insert(hio, aux);
        self.emit(Output::Hash { io: hio, alg, data });
        true
    }

    pub(crate) fn hash_done(&mut self, io: IoId, digests: Vec<u8>) {
        if let Some(aux) = self.aux_hashes.remove(&io) {
            self.aux_hashed(aux, Some(digests));
        } else {
            self.csums_source_hashed(io, digests);
        }
    }

    fn aux_hashed(&mut self, aux: Aux, digests: Option<Vec<u8>>) {
        match aux {
            Aux::VerifyMine { id } => {
                if let Some(c) = self.verify.as_mut().and_then(|v| v.chunks.get_mut(&id)) {
                    c.mine = Some(digests.unwrap_or_default());
                }
                self.compare_chunk(id);
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
                        digest: digests.unwrap_or_default(),
                    });
                }
            }
            Aux::CsumsMine { id, offset, len } => {
                self.send_csums_request(id, offset, len, digests.unwrap_or_default())
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
            let _ = self.change_state(ChangeSet::new().cstate(ConnState::VerifyT));
        }
        let Some(link) = self.link_id() else { return };
        self.aux_read(
            Aux::VerifyPeer {
                id,
                offset,
                len,
                link,
            },
            offset,
            len,
        );
    }

    pub(crate) fn on_ov_reply(&mut self, id: u64, digest: Vec<u8>) {
        let Some(c) = self.verify.as_mut().and_then(|v| v.chunks.get_mut(&id)) else {
            self.protocol_error(format!("verify reply {id} without a request"));
            return;
        };
        c.theirs = Some(digest);
        self.compare_chunk(id);
    }

    fn compare_chunk(&mut self, id: u64) {
        let Some(v) = self.verify.as_mut() else {
            return;
        };
        let dlen = v.alg.digest_len();
        let ready = v
            .chunks
            .get(&id)
            .is_some_and(|c| c.mine.is_some() && c.theirs.is_some());
        if !ready {
            return;
        }
        let Some(c) = v.chunks.remove(&id) else {
            return;
        };
        let (mine, theirs) = (c.mine.unwrap_or_default(), c.theirs.unwrap_or_default());
        let blocks = c.len.div_ceil(BLOCK);
        let mut bad = Vec::new();
        for b in 0..blocks {
            let r = (b as usize * dlen)..((b as usize + 1) * dlen);
            if mine.get(r.clone()).is_none() || mine.get(r.clone()) != theirs.get(r) {
                bad.push(c.offset + b * BLOCK);
            }
        }
        v.done_bytes += c.len;
        v.found += bad.len() as u64;
        for off in bad {
            let len = BLOCK.min(self.usable_bytes - off);
            tracing::warn!(resource = %self.cfg.resource, "Out of sync: start={}, size={} (sectors)", off / 512, len / 512);
            if let Some(bm) = self.bitmap.as_mut() {
                bm.set_range(off, len);
            }
            self.send(Packet::OvResult {
                id,
                offset: off,
                len: len as u32,
                in_sync: false,
            });
        }
        self.pump_verify();
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
    }

    pub(crate) fn on_ov_done(&mut self, oos_blocks: u64) {
        if self.st.cstate() == ConnState::VerifyT {
            let _ = self.change_state(ChangeSet::new().cstate(ConnState::Connected));
        }
        self.last_verify_oos = Some(oos_blocks);
        tracing::info!(resource = %self.cfg.resource, "Online verify done on the peer; found {oos_blocks} 4k block out of sync");
        self.persist_superblock();
        self.status_changed();
    }

    pub(crate) fn abort_verify(&mut self) {
        self.verify = None;
        self.aux_reads.clear();
        self.aux_hashes.clear();
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
