//! Client requests on a Primary, the engine's side (docs/architecture.md §6.2): admission (`Requests`),
//! the activity-log gate, replication and the local I/O, completion and the reply.
//!
//! Activity log (step 3): a write to a cold 4 MiB extent waits until the AL transaction that
//! makes the extent hot is durable. Bits are set in the bitmap while the peer does not get the
//! write, so a reconnecting peer resyncs only what changed.

use std::collections::BTreeSet;

use crate::core::contract::io::{
    nbd_errno, ClientError, ClientOp, DiskOpKind, IoResult, MetaOpKind, Output, ReqId,
};
use crate::core::engine::Engine;
use crate::core::io_table::IoOwner;
use crate::core::request::held::HeldExtents;
use crate::core::request::requests::{extents_of, Stage};
use crate::core::state::{ConnState, DiskState};
use crate::meta::al::{ActivityLog, AlBusy};
use crate::meta::layout::AL_EXTENT_BYTES;

/// What the activity log says about a write that wants to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AlGate {
    /// Every extent is hot and durable: issue the write.
    Ready,
    /// A transaction making an extent hot is being written.
    WaitTransaction,
    /// No slot is free of writes in flight; the extents taken were given back.
    WaitSlot,
    /// The write spans more extents than the AL has slots.
    TooLarge { extents: usize, capacity: usize },
}

pub(crate) fn eio(message: String) -> ClientError {
    ClientError {
        nbd_errno: nbd_errno::EIO,
        message,
    }
}

impl Engine {
    pub(crate) fn client_request(&mut self, req: ReqId, op: ClientOp) {
        if self.st.io_suspended() {
            // Frozen by fencing or for quorum: the request waits, it does not fail.
            self.freeze.queue(req, op);
            return;
        }
        if let Some((nbd_errno, message)) = self.io_refusal() {
            self.reply(req, Err(ClientError { nbd_errno, message }));
            return;
        }
        if let Some((start, len)) = op.write_range() {
            if start.saturating_add(len) > self.dev.usable_bytes {
                let message = format!(
                    "write {start}+{len} beyond device size {}",
                    self.dev.usable_bytes
                );
                let e = ClientError {
                    nbd_errno: nbd_errno::ENOSPC,
                    message,
                };
                self.reply(req, Err(e));
                return;
            }
        }
        self.requests.insert(req, op);
        match op {
            ClientOp::Read { offset, len }
                if self
                    .peers
                    .data_mut()
                    .rx
                    .writes_overlap(offset, offset + u64::from(len)) =>
            {
                self.requests.read_behind_peer(req);
            }
            _ if op.write_range().is_none() => self.submit(req, op),
            _ => self.admit_waiting(),
        }
    }

    /// Submit the reads that waited for received peer writes, now that those that overlapped
    /// them reached the disk.
    pub(crate) fn submit_reads_behind_peer(&mut self) {
        for req in self.requests.take_reads_behind_peer() {
            match self.requests.op(req) {
                Some(ClientOp::Read { offset, len })
                    if self
                        .peers
                        .data_mut()
                        .rx
                        .writes_overlap(offset, offset + u64::from(len)) =>
                {
                    self.requests.read_behind_peer(req);
                }
                Some(op) => self.submit(req, op),
                None => {}
            }
        }
    }

    /// Admit the waiting writes that may go now (in FIFO order), start them, and let resync
    /// reads in that no longer overlap a client write. A write also waits for the received
    /// peer writes it overlaps: after a switchover under protocol A or B the old Primary's
    /// writes may still be queued here, and they are older than anything our clients send.
    pub(crate) fn admit_waiting(&mut self) {
        loop {
            let resync = &self.peers.data().resync;
            let rx = &self.peers.data().rx;
            self.requests.admit(|s, e| {
                resync.run().is_some_and(|r| r.reading_overlaps(s, e)) || rx.writes_overlap(s, e)
            });
            let mut failed = false;
            while let Some(req) = self.requests.pop_admitted() {
                failed |= !self.start_admitted(req);
            }
            if !failed {
                break;
            }
            // A write refused at the gate left the admitted set: later ones may go now.
        }
        self.admit_resync_reads();
    }

    /// An admitted write: make its extents hot, then issue it. Returns false if the write was
    /// refused (it spans more extents than the activity log holds).
    fn start_admitted(&mut self, req: ReqId) -> bool {
        let Some(op) = self.requests.op(req) else {
            return true;
        };
        let Some((start, len)) = op.write_range() else {
            return true;
        };
        if self.ios.closing() && self.st.disk() > DiskState::Failed {
            // `detach` is closing a healthy disk whose last superblock may already call it
            // clean: a write issued now would land after it, unrecorded, and reach the peer
            // before our Diskless state, so the peer would not mark it for us either. It waits
            // with the activity-log waiters and goes out once we are Diskless
            // (`disk_closed` announces the state first).
            self.requests.wait_for_al_slot(req);
            return true;
        }
        // Without a usable disk there is no local write to cover (a Failed disk's AL may not
        // even be writable any more).
        if self.st.disk() > DiskState::Failed {
            let mut held = self.requests.take_al_held(req);
            let gate = self.al_acquire(&mut held, start, len);
            self.requests.set_al_held(req, held);
            match gate {
                AlGate::Ready => {}
                AlGate::WaitTransaction => {
                    self.requests.set_stage(req, Stage::WaitAl);
                    return true;
                }
                AlGate::WaitSlot => {
                    self.requests.wait_for_al_slot(req);
                    return true;
                }
                AlGate::TooLarge { extents, capacity } => {
                    let held = self.requests.drop_request(req);
                    self.al_release(held);
                    let message = format!(
                        "write {start}+{len} spans {extents} activity-log extents but al-extents is {capacity}; recreate the metadata with a larger al-extents"
                    );
                    self.reply(req, Err(eio(message)));
                    return false;
                }
            }
        }
        if self.peer_gets_writes() {
            // Replicate first: the driver builds the packet from the client's buffer, which
            // the local write then takes.
            self.replicate(req, op);
        } else {
            // No peer receives it.
            self.peers.mark_all(start, len);
        }
        self.submit(req, op);
        true
    }

    /// Take activity-log references on every extent of `[start, start+len)` not yet in `held`,
    /// writing transactions for cold ones. On `WaitSlot` every reference is given back (no
    /// write holds slots while it waits for more, so waiting writes cannot block each other).
    pub(crate) fn al_acquire(&mut self, held: &mut HeldExtents, start: u64, len: u64) -> AlGate {
        let Some(capacity) = self.dev.al.as_ref().map(ActivityLog::capacity) else {
            return AlGate::Ready;
        };
        let exts = extents_of(start, start + len);
        let count = usize::try_from(exts.end() - exts.start() + 1).unwrap_or(usize::MAX);
        if count > capacity {
            return AlGate::TooLarge {
                extents: count,
                capacity,
            };
        }
        let mut waits = false;
        // `held` is a run from the range's first extent: go on after its last one.
        let from = held.next().unwrap_or(*exts.start());
        for ext in exts {
            if ext >= from {
                let Some(al) = self.dev.al.as_mut() else {
                    return AlGate::Ready;
                };
                // A cold extent in a full AL takes the slot of an idle one.
                let evicts = !al.is_hot(ext) && al.len() >= al.capacity();
                match al.begin_io(ext) {
                    Ok(None) => held.push(ext),
                    Ok(Some(tr)) => {
                        held.push(ext);
                        let block = tr.encode().to_vec();
                        self.write_al_transaction(ext, block, tr.ring_slot(), evicts);
                    }
                    Err(AlBusy) => {
                        self.al_release(held.take());
                        return AlGate::WaitSlot;
                    }
                }
            }
            waits |= self.dev.al_writing.contains(&ext);
        }
        if waits {
            AlGate::WaitTransaction
        } else {
            AlGate::Ready
        }
    }

    /// Give back activity-log references.
    pub(crate) fn al_release(&mut self, held: impl IntoIterator<Item = u64>) {
        if let Some(al) = self.dev.al.as_mut() {
            for ext in held {
                al.end_io(ext);
            }
        }
    }

    /// Retry the writes that waited for an activity-log slot, in arrival order.
    pub(crate) fn retry_al_waiters(&mut self) {
        for req in self.requests.take_al_waiters() {
            self.start_admitted(req);
        }
    }

    /// Persist dirty bitmap pages first (an extent leaving the AL must not lose its bits), then
    /// the AL transaction; writes to `ext` wait for the latter. `evicts`: the data written to
    /// the evicted extent is flushed before the transaction (see `MetaOpKind::AlTransaction`).
    fn write_al_transaction(&mut self, ext: u64, block: Vec<u8>, ring_slot: u64, evicts: bool) {
        self.write_dirty_bitmap_pages();
        self.counters.al_writes += 1;
        self.dev.al_writing.insert(ext);
        let io = self.ios.start(IoOwner::AlTransaction { ext });
        self.emit(Output::Meta {
            io,
            op: MetaOpKind::AlTransaction {
                block,
                ring_slot,
                flush_data: evicts,
            },
        });
    }

    /// Whether replicated writes currently reach the peer's disk (else: set bitmap bits).
    pub(crate) fn peer_gets_writes(&self) -> bool {
        self.link_ready()
            && self.data_st().cstate() >= ConnState::Connected
            && self.data_st().pdsk() >= DiskState::Inconsistent
    }

    fn submit(&mut self, req: ReqId, op: ClientOp) {
        if self.st.disk() <= DiskState::Failed {
            self.submit_without_disk(req, op);
            return;
        }
        let disk_op = match op {
            ClientOp::Read { offset, len } => DiskOpKind::Read { offset, len },
            ClientOp::Write { offset, len, fua } => DiskOpKind::Write { offset, len, fua },
            ClientOp::Flush => DiskOpKind::Flush,
            ClientOp::Trim { offset, len, fua } => DiskOpKind::Trim { offset, len, fua },
            ClientOp::WriteZeroes { offset, len, fua } => {
                DiskOpKind::WriteZeroes { offset, len, fua }
            }
        };
        if let Some((start, len)) = op.write_range() {
            self.verify_note_write(start, len);
        }
        self.requests.set_stage(req, Stage::Submitted);
        let owner = if op == ClientOp::Flush {
            IoOwner::ClientFlush {
                req,
                covered: self.requests.take_unflushed(),
            }
        } else {
            IoOwner::Client { req }
        };
        let io = self.ios.start(owner);
        self.emit(Output::Disk {
            io,
            req,
            op: disk_op,
        });
        if op == ClientOp::Flush && self.peer_gets_writes() {
            self.replicate_flush(req);
        }
    }

    /// The local part of client request `req` completed; `covered`: the extents a FLUSH made
    /// durable (or, if it failed, may have lost).
    pub(crate) fn client_disk_done(
        &mut self,
        req: ReqId,
        covered: Option<BTreeSet<u64>>,
        result: IoResult,
    ) {
        let Some(op) = self.requests.op(req) else {
            return;
        };
        debug_assert_eq!(self.requests.stage(req), Some(Stage::Submitted));
        match op {
            ClientOp::Read { len, .. } => self.counters.dr_kib += u64::from(len) / 1024,
            ClientOp::Write { len, .. } | ClientOp::WriteZeroes { len, .. } => {
                self.counters.dw_kib += u64::from(len) / 1024;
            }
            ClientOp::Trim { .. } | ClientOp::Flush => {}
        }
        if let Some(covered) = covered {
            if result.is_err() {
                // What this FLUSH should have made durable may be lost on our disk: the peer's
                // copy is the data now.
                self.mark_extents_out_of_sync(covered);
                let since = self.requests.take_unflushed();
                self.mark_extents_out_of_sync(since);
            }
        } else if result.is_ok() {
            let fua = matches!(
                op,
                ClientOp::Write { fua: true, .. }
                    | ClientOp::Trim { fua: true, .. }
                    | ClientOp::WriteZeroes { fua: true, .. }
            );
            if let (Some((start, len)), false) = (op.write_range(), fua) {
                self.requests.written(start, len);
            }
        }
        let local = match result {
            Ok(()) => Ok(()),
            Err(e) => match self.local_io_failed(req, op, &e) {
                Some(local) => local,
                None => return,
            },
        };
        self.requests.set_local(req, local);
        self.maybe_complete(req);
    }

    /// Reply once both the local disk and (if it was asked) the peer are done.
    pub(crate) fn maybe_complete(&mut self, req: ReqId) {
        let Some(done) = self.requests.take_if_done(req) else {
            return;
        };
        let writes = done.op.write_range().is_some();
        if let Some((start, len)) = done.op.write_range() {
            self.verify_note_write(start, len);
        }
        let release = self
            .peers
            .data_mut()
            .tl
            .park_extents(done.epoch, done.al_held);
        let released = !release.is_empty();
        self.al_release(release);
        self.reply(req, done.result);
        if released {
            self.al_slot_freed();
        }
        if writes {
            self.admit_waiting();
        }
    }

    /// An activity-log reference was given back: writes waiting for a slot (client writes
    /// here, peer writes on a node that holds the only copy) may go on.
    pub(crate) fn al_slot_freed(&mut self) {
        self.retry_al_waiters();
        self.rx_pump();
    }

    /// Completion of the AL transaction that makes `ext` hot.
    pub(crate) fn al_done(&mut self, ext: u64, result: &IoResult) {
        self.dev.al_writing.remove(&ext);
        let parked = self.requests.waiting_for_al();
        if let Err(e) = result {
            // Metadata I/O errors always detach (DRBD); the writes then go through the peer.
            let what = format!("activity log write: {}", e.message);
            self.fail_disk(&what);
        }
        let through_peer = self.serves_via_peer();
        for req in parked {
            if let (Err(e), false) = (result, through_peer) {
                let held = self.requests.drop_request(req);
                self.al_release(held);
                let message = format!("activity log write failed: {}", e.message);
                self.reply(req, Err(eio(message)));
            } else {
                self.start_admitted(req);
            }
        }
        if result.is_err() {
            self.admit_waiting();
        }
        // Peer writes on a node that holds the only copy wait for the same transactions.
        self.rx_pump();
    }

    /// Mark whole 4 MiB extents out of sync (a failed FLUSH does not say which blocks it lost).
    pub(crate) fn mark_extents_out_of_sync(&mut self, extents: BTreeSet<u64>) {
        for bm in self.peers.bitmaps_mut() {
            let size = bm.size_bytes();
            for &ext in &extents {
                let start = ext * AL_EXTENT_BYTES;
                if start < size {
                    bm.set_range(start, AL_EXTENT_BYTES.min(size - start));
                }
            }
        }
    }

    /// Diskless Primary: reads go to the peer, writes were replicated at admission and have no
    /// local part; without a reachable UpToDate peer the request fails.
    fn submit_without_disk(&mut self, req: ReqId, op: ClientOp) {
        self.requests.set_stage(req, Stage::Submitted);
        if let Some((start, len)) = op.write_range() {
            // Our disk is Failed but not closed yet: it misses this write, and the peer may
            // have received it before our new state (sent after this input), so it did not
            // mark it either.
            self.peers.mark_all(start, len);
        }
        if !self.serves_via_peer() {
            let e = self.no_data_error();
            self.requests.set_local(req, Err(e));
            self.maybe_complete(req);
            return;
        }
        match op {
            ClientOp::Read { offset, len } => self.read_via_peer(req, offset, len),
            _ => {
                if op == ClientOp::Flush {
                    self.replicate_flush(req);
                }
                self.requests.set_local(req, Ok(()));
                self.maybe_complete(req);
            }
        }
    }

    /// The reply to a client; held while fencing froze I/O (a write completed now must not be
    /// acknowledged before the peer is known outdated) and while a generation started without
    /// the peer is not on disk yet (`Freeze`'s gate: a crash now would let the peer's older
    /// generation overwrite the write at the next handshake, without a split brain).
    pub(crate) fn reply(&mut self, req: ReqId, result: Result<(), ClientError>) {
        if self.st.io_suspended() || self.freeze.gated() {
            self.freeze.hold(req, result);
        } else {
            let result = self.quorum_verdict_on(result);
            self.emit(Output::ClientReply { req, result });
        }
    }

    /// A reply sent while this Primary has no quorum under `on-no-quorum io-error` is an
    /// error, whatever its request did: the peer that has quorum may not have it.
    pub(crate) fn quorum_verdict_on(
        &self,
        result: Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        match result {
            Ok(()) if self.fails_io_for_quorum() => Err(eio(self.no_quorum_message())),
            r => r,
        }
    }
}
