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

use crate::core::contract::io::{FixSource, HashAlg, Output, PeerDiskOp};
use crate::core::contract::refusal::Refusal;
use crate::core::engine::Engine;
use crate::core::io_table::IoOwner;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};
use crate::core::sync::verify_state::{len32, push_range, Aux, Verify, Whose, CHUNK_BYTES};
use crate::wire::Packet;

fn alg_of(alg: Option<HashAlg>) -> Result<HashAlg, Refusal> {
    alg.ok_or_else(|| Refusal::Unsupported {
        what: "verify without `verify-alg` in the net section (e.g. verify-alg sha1;)".into(),
    })
}

impl Engine {
    /// What verify and `verify --fix` need: a connection and both disks UpToDate.
    fn check_in_sync_and_connected(&self) -> Result<(), Refusal> {
        if self.data_st().cstate() != ConnState::Connected {
            return Err(Refusal::NeedConnection {
                cstate: self.data_st().cstate(),
            });
        }
        if self.st.disk() != DiskState::UpToDate || self.data_st().pdsk() != DiskState::UpToDate {
            return Err(Refusal::NoUpToDateDisk {
                disk: self.st.disk(),
                pdsk: self.data_st().pdsk(),
            });
        }
        Ok(())
    }

    pub(crate) fn cmd_verify(&mut self) -> Result<Option<String>, Refusal> {
        self.check_in_sync_and_connected()?;
        let alg = alg_of(self.cfg.peer.verify_alg)?;
        let _ = self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::VerifyS));
        self.peers.data_mut().verify = Some(Verify::new(alg, self.last_now));
        self.peers.data_mut().verify_ranges.clear();
        tracing::info!(resource = %self.cfg.resource, "Online verify started ({} bytes, {:?})", self.dev.usable_bytes, alg);
        self.pump_verify();
        Ok(Some("online verify started".into()))
    }

    fn pump_verify(&mut self) {
        let usable = self.dev.usable_bytes;
        let Some(link) = self.link_id() else { return };
        let Some(v) = self.peers.data_mut().verify.as_mut() else {
            return;
        };
        for (id, offset, len) in v.next_chunks(usable) {
            let len = len32(len);
            self.send(Packet::OvRequest { id, offset, len });
            self.aux_read(Aux::VerifyMine { id, link }, offset, len);
        }
        if self
            .peers
            .data()
            .verify
            .as_ref()
            .is_some_and(|v| v.finished(usable))
        {
            self.finish_verify();
        }
    }

    fn finish_verify(&mut self) {
        let Some(v) = self.peers.data_mut().verify.take() else {
            return;
        };
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
        self.peers.data_mut().last_verify_oos = Some(v.found);
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
                .cstate(self.data_id(), ConnState::Connected)
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
                .peers
                .data_mut()
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
                if self.link_id() == Some(link) && self.peers.data().resync.is_some() {
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
            .filter(|e| *e <= self.dev.usable_bytes);
        if end.is_none() || u64::from(len) > CHUNK_BYTES {
            self.protocol_error(format!("verify request {offset}+{len} is invalid"));
            return;
        }
        if self.cfg.peer.verify_alg.is_none() {
            self.protocol_error("peer started online verify but verify-alg is not set here".into());
            return;
        }
        if self.data_st().cstate() == ConnState::Connected {
            self.peers.data_mut().verify_ranges.clear();
            let _ = self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::VerifyT));
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
        let usable = self.dev.usable_bytes;
        let Some(v) = self.peers.data_mut().verify.as_mut() else {
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
            push_range(&mut self.peers.data_mut().verify_ranges, off, len);
            if let Some(bm) = self.dev.bitmap.as_mut() {
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
            .is_some_and(|e| e <= self.dev.usable_bytes);
        if !ok {
            self.protocol_error(format!("verify result {offset}+{len} is invalid"));
            return;
        }
        if let Some(bm) = self.dev.bitmap.as_mut() {
            bm.set_range(offset, u64::from(len));
        }
        push_range(
            &mut self.peers.data_mut().verify_ranges,
            offset,
            u64::from(len),
        );
    }

    /// An application write (ours or the peer's) started or completed over `[offset,
    /// offset+len)`: a running verify must not trust a mismatch there.
    pub(crate) fn verify_note_write(&mut self, offset: u64, len: u64) {
        if let Some(v) = self.peers.data_mut().verify.as_mut() {
            v.note_write(offset, offset.saturating_add(len));
        }
    }

    /// The ranges the last verify found out of sync (on either side of it), merged.
    pub fn last_verify_ranges(&self) -> &[(u64, u64)] {
        &self.peers.data().verify_ranges
    }

    pub(crate) fn on_ov_done(&mut self, oos_blocks: u64) {
        self.peers.data_mut().last_verify_oos = Some(oos_blocks);
        let why =
            format!("Online verify done on the peer; found {oos_blocks} 4k block out of sync");
        let mut cs = ChangeSet::new().why(why).persist();
        if self.data_st().cstate() == ConnState::VerifyT {
            cs = cs.cstate(self.data_id(), ConnState::Connected);
        }
        let _ = self.change_state(cs);
        self.status_changed();
    }

    pub(crate) fn cmd_resync_out_of_sync(
        &mut self,
        from: Option<FixSource>,
    ) -> Result<Option<String>, Refusal> {
        if let Some(f) = from {
            let (who, disk) = match f {
                FixSource::This => ("this node", self.st.disk()),
                FixSource::Peer => ("the peer", self.data_st().pdsk()),
            };
            if disk != DiskState::UpToDate {
                return Err(Refusal::FixSource {
                    why: format!("the source named with --from ({who}) is {disk}, not UpToDate"),
                    not_uptodate: true,
                });
            }
        }
        self.check_in_sync_and_connected()?;
        let bits = self
            .dev
            .bitmap
            .as_ref()
            .map_or(0, crate::meta::bitmap::Bitmap::count_ones);
        if bits == 0 {
            return Ok(Some("nothing is marked out of sync".into()));
        }
        let (me, peer) = (self.st.role(), self.data_st().role());
        if from.is_none() && me == Role::Primary && peer == Role::Primary {
            return Err(Refusal::Unsupported {
                what: "verify --fix with two Primaries (which one holds the right data?)".into(),
            });
        }
        // Without --from the Primary's data is the reference.
        let peer_is_source = match from {
            Some(FixSource::Peer) => true,
            Some(FixSource::This) => false,
            None => peer == Role::Primary,
        };
        let (target, target_role) = if peer_is_source {
            ("this node", me)
        } else {
            ("the peer", peer)
        };
        if target_role == Role::Primary {
            // A SyncTarget is Inconsistent, and rep never lets a Primary be Inconsistent: it
            // reads from the peer only without a disk of its own (state/promotion.rs).
            return Err(Refusal::FixSource {
                why: format!(
                    "the blocks would be resynced onto {target}, which is Primary; demote it first (`repadm secondary`), or name the Primary with --from"
                ),
                not_uptodate: false,
            });
        }
        if peer_is_source {
            self.send(Packet::SyncStart {
                source: false,
                full: false,
            });
            let who = if peer == Role::Primary {
                "the peer (Primary)"
            } else {
                "the peer"
            };
            return Ok(Some(format!(
                "{bits} out-of-sync blocks: {who} resyncs them to this node"
            )));
        }
        self.start_sync_source(false);
        Ok(Some(format!(
            "resync of {bits} out-of-sync blocks to the peer started"
        )))
    }

    pub(crate) fn abort_verify(&mut self) {
        self.peers.data_mut().verify = None;
    }

    /// (done bytes, total bytes) of a running verify, for the progress bar.
    pub fn verify_progress(&self) -> Option<(u64, u64)> {
        self.peers
            .data()
            .verify
            .as_ref()
            .map(|v| (v.done_bytes, self.dev.usable_bytes))
    }

    pub fn last_verify_oos(&self) -> Option<u64> {
        self.peers.data().last_verify_oos
    }
}
