//! Client requests on a Primary: admission, write ordering, activity-log gating, completion.
//!
//! Ordering rule (DESIGN.md §4 step 2): a write that overlaps an admitted or an earlier waiting
//! write waits in FIFO order; it is woken by the completion that clears the conflict, never by
//! polling. Reads are not ordered against writes (NBD allows it).
//! Activity log (step 3): a write to a cold 4 MiB extent waits until the AL transaction that
//! makes the extent hot is durable. Bits are set in the bitmap while the peer does not get the
//! write, so a reconnecting peer resyncs only what changed.

use std::collections::{HashMap, HashSet, VecDeque};

use super::engine::Engine;
use super::io::{
    nbd_errno, ClientError, ClientOp, DiskOpKind, IoId, IoResult, MetaOpKind, Output, ReqId,
};
use super::state::{ConnState, DiskState};
use crate::meta::al::{ActivityLog, AlBusy};
use crate::meta::layout::AL_EXTENT_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Behind an overlapping write, in `waiting`.
    WaitOverlap,
    /// Admitted, waiting for an activity-log transaction.
    WaitAl,
    /// Admitted, waiting for an activity-log slot (every slot has writes in flight).
    WaitAlSlot,
    /// Issued to the local disk.
    Submitted,
}

#[derive(Debug)]
pub(crate) struct Req {
    pub op: ClientOp,
    stage: Stage,
    /// The local disk's result, once it completed.
    pub local: Option<Result<(), ClientError>>,
    /// Waiting for the peer's ack (protocol B/C) or barrier ack (FLUSH).
    pub peer_wait: bool,
    /// Acks still to come: a write larger than one peer packet travels as several.
    pub peer_acks_left: u32,
    /// Activity-log extents this write holds in flight (released when it completes, or when
    /// the peer acknowledged its epoch, see `Engine::release_or_park_al`).
    pub al_held: Vec<u64>,
    /// The epoch it was replicated in.
    pub epoch: Option<u32>,
    /// Since when, for ko-count.
    pub peer_since: Option<std::time::Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub reqs: HashMap<ReqId, Req>,
    by_io: HashMap<IoId, ReqId>,
    /// Writes not yet admitted, in arrival order.
    waiting: VecDeque<ReqId>,
    /// Admitted writes: (req, start, end) byte ranges. Small (≤ queue depth): a Vec scan is
    /// cheaper than a tree at these sizes.
    admitted: Vec<(ReqId, u64, u64)>,
    /// AL extents whose transaction is being written, by the meta IoId.
    al_pending: HashMap<IoId, u64>,
    pub al_pending_extents: HashSet<u64>,
    /// Writes waiting for an activity-log slot, in arrival order.
    al_waiters: VecDeque<ReqId>,
    /// Extents written locally since the last FLUSH was issued, and those a FLUSH in flight
    /// covers: if the FLUSH fails they are what the disk may have lost.
    pub unflushed: std::collections::BTreeSet<u64>,
    pub flushing: HashMap<IoId, std::collections::BTreeSet<u64>>,
    /// Resync reads in flight on a SyncSource (io, start, end): client writes to these ranges
    /// wait, so the block sent to the peer is never older than a write sent before it.
    pub resync_reads: Vec<(IoId, u64, u64)>,
    /// Resync requests waiting for an overlapping client write: (peer id, offset, len).
    pub resync_waiting: VecDeque<(u64, u64, u32)>,
    /// Client reads sent to the peer (Diskless Primary), answered by DataReply.
    pub remote_reads: HashMap<ReqId, RemoteRead>,
}

/// A client read served by the peer, in pieces of at most one packet.
#[derive(Debug)]
pub(crate) struct RemoteRead {
    pub offset: u64,
    pub data: Vec<u8>,
    /// Pieces not yet answered: offset → length.
    pub pending: std::collections::BTreeMap<u64, u32>,
    pub failed: bool,
}

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

impl Requests {
    pub fn in_flight(&self) -> usize {
        self.reqs.len()
    }
    pub fn local_pending(&self) -> usize {
        self.by_io.len()
    }
    fn overlaps_admitted(&self, start: u64, end: u64) -> bool {
        self.admitted.iter().any(|&(_, s, e)| s < end && start < e)
            || self
                .resync_reads
                .iter()
                .any(|&(_, s, e)| s < end && start < e)
    }

    /// A resync read may start when no client write to its range is admitted or waiting.
    pub fn resync_read_may_start(&self, start: u64, end: u64) -> bool {
        !self.admitted.iter().any(|&(_, s, e)| s < end && start < e)
            && !self.waiting.iter().any(|id| {
                self.reqs
                    .get(id)
                    .and_then(|r| r.op.write_range())
                    .is_some_and(|(s, l)| s < end && start < s + l)
            })
    }

    /// When the oldest request still waiting for the peer started waiting.
    pub fn oldest_peer_wait(&self) -> Option<std::time::Instant> {
        self.reqs
            .values()
            .filter(|r| r.peer_wait)
            .filter_map(|r| r.peer_since)
            .min()
    }
}

pub(crate) fn extents_of(start: u64, end: u64) -> std::ops::RangeInclusive<u64> {
    let last = end.saturating_sub(1).max(start);
    (start / AL_EXTENT_BYTES)..=(last / AL_EXTENT_BYTES)
}

impl Engine {
    pub(crate) fn client_request(&mut self, req: ReqId, op: ClientOp) {
        if let Err(message) = self.can_serve_io() {
            let nbd_errno = if self.st.role() == super::state::Role::Primary {
                nbd_errno::EIO
            } else {
                nbd_errno::ESHUTDOWN
            };
            self.reply(req, Err(ClientError { nbd_errno, message }));
            return;
        }
        if let Some((start, len)) = op.write_range() {
            let end = start.saturating_add(len);
            if end > self.usable_bytes {
                let message = format!(
                    "write {start}+{len} beyond device size {}",
                    self.usable_bytes
                );
                self.reply(
                    req,
                    Err(ClientError {
                        nbd_errno: nbd_errno::ENOSPC,
                        message,
                    }),
                );
                return;
            }
        }
        self.requests.reqs.insert(
            req,
            Req {
                op,
                stage: Stage::WaitOverlap,
                local: None,
                peer_wait: false,
                peer_acks_left: 0,
                al_held: Vec::new(),
                epoch: None,
                peer_since: None,
            },
        );
        match op.write_range() {
            None => self.submit(req, op),
            Some(_) => {
                self.requests.waiting.push_back(req);
                self.admit_waiting();
            }
        }
    }

    /// Admit waiting writes in FIFO order while they do not overlap an admitted write or an
    /// earlier write that still waits.
    pub(crate) fn admit_waiting(&mut self) {
        let mut blocked: Vec<(u64, u64)> = Vec::new();
        let mut still_waiting = VecDeque::new();
        while let Some(req) = self.requests.waiting.pop_front() {
            let Some(r) = self.requests.reqs.get(&req) else {
                continue;
            };
            let Some((start, len)) = r.op.write_range() else {
                continue;
            };
            let end = start + len;
            let conflict = self.requests.overlaps_admitted(start, end)
                || blocked.iter().any(|&(s, e)| s < end && start < e);
            if conflict {
                blocked.push((start, end));
                still_waiting.push_back(req);
            } else {
                self.requests.admitted.push((req, start, end));
                self.start_admitted(req);
            }
        }
        self.requests.waiting = still_waiting;
        self.admit_resync_reads();
    }

    /// An admitted write: make its extents hot, then issue it.
    fn start_admitted(&mut self, req: ReqId) {
        let Some(r) = self.requests.reqs.get_mut(&req) else {
            return;
        };
        let op = r.op;
        let Some((start, len)) = op.write_range() else {
            return;
        };
        // Without a usable disk there is no local write to cover (a Failed disk's AL may not
        // even be writable any more).
        if self.st.disk() > DiskState::Failed {
            let mut held = std::mem::take(&mut r.al_held);
            let gate = self.al_acquire(&mut held, start, len);
            let stage = match gate {
                AlGate::Ready => None,
                AlGate::WaitTransaction => Some(Stage::WaitAl),
                AlGate::WaitSlot => Some(Stage::WaitAlSlot),
                AlGate::TooLarge { extents, capacity } => {
                    self.requests.admitted.retain(|&(id, _, _)| id != req);
                    self.requests.reqs.remove(&req);
                    let message = format!(
                        "write {start}+{len} spans {extents} activity-log extents but al-extents is {capacity}; recreate the metadata with a larger al-extents"
                    );
                    self.reply(
                        req,
                        Err(ClientError {
                            nbd_errno: nbd_errno::EIO,
                            message,
                        }),
                    );
                    self.admit_waiting();
                    return;
                }
            };
            if let Some(r) = self.requests.reqs.get_mut(&req) {
                r.al_held = held;
                if let Some(stage) = stage {
                    r.stage = stage;
                }
            }
            match stage {
                Some(Stage::WaitAlSlot) => {
                    self.requests.al_waiters.push_back(req);
                    return;
                }
                Some(_) => return,
                None => {}
            }
        }
        if self.peer_gets_writes() {
            // Replicate first: the driver builds the packet from the client's buffer, which
            // the local write then takes.
            self.replicate(req, op);
            self.submit(req, op);
        } else {
            if let Some(bm) = self.bitmap.as_mut() {
                bm.set_range(start, len);
            }
            self.submit(req, op);
        }
    }

    /// Take activity-log references on every extent of `[start, start+len)` not yet in `held`,
    /// writing transactions for cold ones. On `WaitSlot` every reference is given back (no
    /// write holds slots while it waits for more, so waiting writes cannot block each other).
    pub(crate) fn al_acquire(&mut self, held: &mut Vec<u64>, start: u64, len: u64) -> AlGate {
        let Some(capacity) = self.al.as_ref().map(ActivityLog::capacity) else {
            return AlGate::Ready;
        };
        let exts: Vec<u64> = extents_of(start, start + len).collect();
        if exts.len() > capacity {
            return AlGate::TooLarge {
                extents: exts.len(),
                capacity,
            };
        }
        let mut waits = false;
        for ext in exts {
            if !held.contains(&ext) {
                let Some(al) = self.al.as_mut() else {
                    return AlGate::Ready;
                };
                // A cold extent in a full AL takes the slot of an idle one.
                let evicts = !al.is_hot(ext) && al.len() >= al.capacity();
                match al.begin_io(ext) {
                    Ok(None) => held.push(ext),
                    Ok(Some(tr)) => {
                        held.push(ext);
                        let block = (tr.encode().to_vec(), tr.ring_slot());
                        self.write_al_transaction(ext, block, evicts);
                    }
                    Err(AlBusy) => {
                        self.al_release(held);
                        return AlGate::WaitSlot;
                    }
                }
            }
            waits |= self.requests.al_pending_extents.contains(&ext);
        }
        if waits {
            AlGate::WaitTransaction
        } else {
            AlGate::Ready
        }
    }

    /// Give back activity-log references; writes waiting for a slot try again.
    pub(crate) fn al_release(&mut self, held: &mut Vec<u64>) {
        if let Some(al) = self.al.as_mut() {
            for ext in held.drain(..) {
                al.end_io(ext);
            }
        }
        held.clear();
    }

    /// Retry the writes that waited for an activity-log slot, in arrival order.
    pub(crate) fn retry_al_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.requests.al_waiters);
        for req in waiters {
            if self.requests.reqs.contains_key(&req) {
                self.start_admitted(req);
            }
        }
    }

    /// Persist dirty bitmap pages first (an extent leaving the AL must not lose its bits), then
    /// the AL transaction; writes to `ext` wait for the latter. `evicts`: the data written to
    /// the evicted extent is flushed before the transaction (see `MetaOpKind::AlTransaction`).
    fn write_al_transaction(&mut self, ext: u64, (block, ring_slot): (Vec<u8>, u64), evicts: bool) {
        self.write_dirty_bitmap_pages();
        let io = self.alloc_io();
        self.counters.al_writes += 1;
        self.requests.al_pending.insert(io, ext);
        self.requests.al_pending_extents.insert(ext);
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
            && self.st.cstate() >= ConnState::Connected
            && self.st.pdsk() >= DiskState::Inconsistent
    }

    fn submit(&mut self, req: ReqId, op: ClientOp) {
        if self.st.disk() <= DiskState::Failed {
            self.submit_without_disk(req, op);
            return;
        }
        let io = self.alloc_io();
        let disk_op = match op {
            ClientOp::Read { offset, len } => DiskOpKind::Read { offset, len },
            ClientOp::Write { offset, len, fua } => DiskOpKind::Write { offset, len, fua },
            ClientOp::Flush => DiskOpKind::Flush,
            ClientOp::Trim { offset, len, fua } => DiskOpKind::Trim { offset, len, fua },
            ClientOp::WriteZeroes { offset, len, fua } => {
                DiskOpKind::WriteZeroes { offset, len, fua }
            }
        };
        if let Some(r) = self.requests.reqs.get_mut(&req) {
            r.stage = Stage::Submitted;
        }
        self.requests.by_io.insert(io, req);
        if op == ClientOp::Flush {
            let covered = std::mem::take(&mut self.requests.unflushed);
            self.requests.flushing.insert(io, covered);
        }
        self.emit(Output::Disk {
            io,
            req,
            op: disk_op,
        });
        if op == ClientOp::Flush && self.peer_gets_writes() {
            self.replicate_flush(req);
        }
    }

    pub(crate) fn disk_done(&mut self, io: IoId, result: IoResult) {
        let Some(req) = self.requests.by_io.remove(&io) else {
            return;
        };
        let Some(r) = self.requests.reqs.get(&req) else {
            return;
        };
        debug_assert_eq!(r.stage, Stage::Submitted);
        let op = r.op;
        match op {
            ClientOp::Read { len, .. } => self.counters.dr_kib += u64::from(len) / 1024,
            ClientOp::Write { len, .. } | ClientOp::WriteZeroes { len, .. } => {
                self.counters.dw_kib += u64::from(len) / 1024;
            }
            ClientOp::Trim { .. } | ClientOp::Flush => {}
        }
        match (op, &result) {
            (ClientOp::Flush, _) => {
                let covered = self.requests.flushing.remove(&io).unwrap_or_default();
                if result.is_err() {
                    // What this FLUSH should have made durable may be lost on our disk: the
                    // peer's copy is the data now.
                    self.mark_extents_out_of_sync(covered);
                    let since = std::mem::take(&mut self.requests.unflushed);
                    self.mark_extents_out_of_sync(since);
                }
            }
            (_, Ok(())) => {
                if let Some((start, len)) = op.write_range() {
                    let fua = matches!(
                        op,
                        ClientOp::Write { fua: true, .. }
                            | ClientOp::Trim { fua: true, .. }
                            | ClientOp::WriteZeroes { fua: true, .. }
                    );
                    if !fua {
                        self.requests
                            .unflushed
                            .extend(extents_of(start, start + len));
                    }
                }
            }
            _ => {}
        }
        let local = match result {
            Ok(()) => Ok(()),
            Err(e) => match self.local_io_failed(req, op, &e) {
                Some(local) => local,
                None => return,
            },
        };
        if let Some(r) = self.requests.reqs.get_mut(&req) {
            r.local = Some(local);
        }
        self.maybe_complete(req);
    }

    /// Reply once both the local disk and (if it was asked) the peer are done.
    pub(crate) fn maybe_complete(&mut self, req: ReqId) {
        let done = self
            .requests
            .reqs
            .get(&req)
            .is_some_and(|r| r.local.is_some() && !r.peer_wait);
        if !done {
            return;
        }
        let Some(mut r) = self.requests.reqs.remove(&req) else {
            return;
        };
        let writes = r.op.write_range().is_some();
        if writes {
            self.requests.admitted.retain(|&(id, _, _)| id != req);
        }
        let released = !r.al_held.is_empty() && self.release_or_park_al(r.epoch, &mut r.al_held);
        self.reply(req, r.local.unwrap_or(Ok(())));
        if released {
            self.al_slot_freed();
        }
        if writes {
            self.admit_waiting();
        }
    }

    /// An activity-log reference was given back: writes waiting for a slot (client writes
    /// here, peer writes on a node holding the only copy) may go on.
    pub(crate) fn al_slot_freed(&mut self) {
        self.retry_al_waiters();
        self.rx_pump();
    }

    /// Completion of an AL transaction (other meta writes are handled by the admin code).
    /// Returns false if `io` was not an AL transaction.
    pub(crate) fn al_done(&mut self, io: IoId, result: &IoResult) -> bool {
        let Some(ext) = self.requests.al_pending.remove(&io) else {
            return false;
        };
        self.requests.al_pending_extents.remove(&ext);
        let parked: Vec<ReqId> = self
            .requests
            .reqs
            .iter()
            .filter(|(_, r)| r.stage == Stage::WaitAl)
            .map(|(&id, _)| id)
            .collect();
        // Restart in arrival order of admission (ReqIds are issued increasingly by drivers).
        let mut parked = parked;
        parked.sort_unstable();
        if let Err(e) = result {
            // Metadata I/O errors always detach (DRBD); the writes then go through the peer.
            let what = format!("activity log write: {}", e.message);
            self.fail_disk(&what);
        }
        let through_peer = self.serves_via_peer();
        for req in parked {
            if let (Err(e), false) = (result, through_peer) {
                self.requests.admitted.retain(|&(id, _, _)| id != req);
                if let Some(mut r) = self.requests.reqs.remove(&req) {
                    self.al_release(&mut r.al_held);
                }
                let message = format!("activity log write failed: {}", e.message);
                self.reply(
                    req,
                    Err(ClientError {
                        nbd_errno: nbd_errno::EIO,
                        message,
                    }),
                );
            } else {
                self.start_admitted(req);
            }
        }
        if result.is_err() {
            self.admit_waiting();
        }
        // Peer writes on a node that holds the only copy wait for the same transactions.
        self.rx_pump();
        true
    }

    /// Mark whole 4 MiB extents out of sync (a failed FLUSH does not say which blocks it lost).
    pub(crate) fn mark_extents_out_of_sync(&mut self, extents: std::collections::BTreeSet<u64>) {
        if let Some(bm) = self.bitmap.as_mut() {
            let size = bm.size_bytes();
            for ext in extents {
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
        if let Some(r) = self.requests.reqs.get_mut(&req) {
            r.stage = Stage::Submitted;
        }
        if let (Some((start, len)), Some(bm)) = (op.write_range(), self.bitmap.as_mut()) {
            // Our disk is Failed but not closed yet: it misses this write, and the peer may
            // have received it before our new state (sent after this input), so it did not
            // mark it either.
            bm.set_range(start, len);
        }
        if !self.serves_via_peer() {
            let e = self.no_data_error();
            if let Some(r) = self.requests.reqs.get_mut(&req) {
                r.local = Some(Err(e));
            }
            self.maybe_complete(req);
            return;
        }
        match op {
            ClientOp::Read { offset, len } => self.read_via_peer(req, offset, len),
            _ => {
                if op == ClientOp::Flush {
                    self.replicate_flush(req);
                }
                if let Some(r) = self.requests.reqs.get_mut(&req) {
                    r.local = Some(Ok(()));
                }
                self.maybe_complete(req);
            }
        }
    }

    pub(crate) fn reply(&mut self, req: ReqId, result: Result<(), ClientError>) {
        self.emit(Output::ClientReply { req, result });
    }
}
