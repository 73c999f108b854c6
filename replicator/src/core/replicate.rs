//! Replication of client writes (DESIGN.md §4, reference/drbd.md §4).
//!
//! Primary side: every write goes to the peer as it goes to the local disk; the client gets its
//! reply when both are done (protocol C: peer's WriteAck; B: RecvAck; A: once sent). Writes are
//! grouped in epochs closed by barriers; until the peer acknowledges a barrier the writes of
//! that epoch are kept in the transfer log, so a lost link marks exactly them out of sync.
//! An epoch is also closed once it is [`EPOCH_MAX_AGE`] old, as DRBD's sender closes the
//! current epoch whenever it runs idle: otherwise an epoch left open by a load without
//! FLUSHes (up to `max-epoch-size` writes, gigabytes with 1 MiB writes) would all be marked
//! out of sync, and resynced, when the link drops long after the peer acknowledged it.
//!
//! Receiving side: peer writes are applied in arrival order where they overlap (FIFO, like the
//! Primary's admission), acknowledged per protocol, and a barrier flushes the disk once every
//! write received before it completed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::engine::{Engine, OnIoError};
use super::io::{
    nbd_errno, ClientError, ClientOp, IoFailure, IoId, LinkId, Output, PeerDiskOp, ReqId,
};
use super::requests::AlGate;
use super::state::DiskState;
use crate::wire::frame::MAX_DATA_BYTES;
use crate::wire::Packet;
use rep_resources::Protocol;

/// How long writes may sit in an open epoch before a barrier closes it. Bounds what a lost link
/// marks out of sync beyond the writes really in flight, at the cost of one peer flush per
/// interval under a steady load.
pub(crate) const EPOCH_MAX_AGE: Duration = Duration::from_millis(20);

/// Primary-side epoch bookkeeping (DRBD's transfer log).
#[derive(Debug, Default)]
pub(crate) struct Replication {
    epoch: u32,
    epoch_writes: u32,
    /// Ranges written in the open epoch.
    open: Vec<(u64, u64)>,
    /// When the first write of the open epoch was sent.
    open_since: Option<Instant>,
    /// Closed epochs not yet acknowledged by a BarrierAck.
    closed: VecDeque<(u32, Vec<(u64, u64)>)>,
    /// FLUSH requests waiting for the BarrierAck of an epoch.
    flushes: Vec<(u32, ReqId)>,
    /// Activity-log extents of completed writes whose epoch the peer has not acknowledged yet.
    pub(crate) al_parked: Vec<(u32, Vec<u64>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxKind {
    /// A client write replicated by the Primary.
    App { id: u64 },
    /// A resync block on the SyncTarget.
    Resync { id: u64 },
    /// A read for a Diskless Primary, ordered after the writes it sent before it.
    Read { id: u64 },
}

#[derive(Debug)]
pub(crate) struct RxOp {
    seq: u64,
    start: u64,
    end: u64,
    link: LinkId,
    kind: RxKind,
    op: Option<PeerDiskOp>,
    /// Activity-log extents held while we hold the only copy of a peer write.
    al_held: Vec<u64>,
}

/// Receiving side: ordering of the peer's writes and barriers.
#[derive(Debug, Default)]
pub(crate) struct PeerRx {
    next_seq: u64,
    outstanding: BTreeSet<u64>,
    in_flight: HashMap<IoId, RxOp>,
    waiting: VecDeque<RxOp>,
    /// Barrier epochs waiting for every write with a smaller sequence number.
    barriers: VecDeque<(u32, u64, LinkId)>,
    flushing: HashMap<IoId, (u32, LinkId)>,
    /// A barrier flush failed on this link: no later BarrierAck may claim the epochs before it
    /// durable (a later fdatasync succeeds although the earlier write-back was lost).
    flush_failed: Option<LinkId>,
}

impl PeerRx {
    /// Peer disk I/O in flight (writes, reads, barrier flushes).
    pub(crate) fn busy(&self) -> bool {
        !self.in_flight.is_empty() || !self.flushing.is_empty()
    }

    /// Bytes of peer writes received and not yet on disk (queued or in flight).
    pub(crate) fn backlog_bytes(&self) -> u64 {
        self.waiting
            .iter()
            .chain(self.in_flight.values())
            .map(|w| w.end - w.start)
            .sum()
    }
}

impl Engine {
    /// Ship an admitted client write to the peer. A write larger than one packet's payload
    /// travels as several `Data` packets carrying the same id (DRBD splits at max_bio_size);
    /// the client's reply waits for the ack of every one.
    pub(crate) fn replicate(&mut self, req: ReqId, op: ClientOp) {
        let Some(link) = self.link_id() else { return };
        let Some((start, len)) = op.write_range() else {
            return;
        };
        let packets = match op {
            ClientOp::Write { offset, fua, len } => {
                let mut sent = 0u32;
                let mut n = 0u32;
                while sent < len {
                    let piece = (len - sent).min(MAX_DATA_BYTES as u32);
                    self.emit(Output::SendWrite {
                        link,
                        req,
                        offset: offset + u64::from(sent),
                        buf_offset: sent,
                        len: piece,
                        fua,
                    });
                    sent += piece;
                    n += 1;
                }
                n
            }
            ClientOp::Trim { offset, len, fua } => {
                self.send(Packet::Zero {
                    id: req.0,
                    offset,
                    len,
                    trim: true,
                    fua,
                });
                1
            }
            ClientOp::WriteZeroes { offset, len, fua } => {
                self.send(Packet::Zero {
                    id: req.0,
                    offset,
                    len,
                    trim: false,
                    fua,
                });
                1
            }
            ClientOp::Read { .. } | ClientOp::Flush => return,
        };
        self.counters.ns_kib += len / 1024;
        let epoch = self.repl.epoch;
        if let Some(r) = self.requests.reqs.get_mut(&req) {
            r.epoch = Some(epoch);
        }
        if self.cfg.protocol != Protocol::A {
            let now = self.last_now;
            if let Some(r) = self.requests.reqs.get_mut(&req) {
                r.peer_wait = true;
                r.peer_acks_left = packets;
                r.peer_since = now;
            }
        }
        if self.repl.open.is_empty() {
            self.repl.open_since = self.last_now;
        }
        self.repl.open.push((start, len));
        self.repl.epoch_writes += 1;
        if self.repl.epoch_writes >= self.cfg.peer.max_epoch_size.max(1) {
            self.close_epoch();
        }
    }

    /// FLUSH: the reply also waits until the peer flushed everything sent before it.
    pub(crate) fn replicate_flush(&mut self, req: ReqId) {
        let epoch = self.close_epoch();
        let now = self.last_now;
        if let Some(r) = self.requests.reqs.get_mut(&req) {
            r.peer_wait = true;
            r.peer_since = now;
        }
        self.repl.flushes.push((epoch, req));
    }

    fn close_epoch(&mut self) -> u32 {
        let epoch = self.repl.epoch;
        self.send(Packet::Barrier { epoch });
        let ranges = std::mem::take(&mut self.repl.open);
        self.repl.open_since = None;
        self.repl.closed.push_back((epoch, ranges));
        self.repl.epoch = epoch.wrapping_add(1);
        self.repl.epoch_writes = 0;
        self.counters.ep = self.repl.closed.len() as u64;
        epoch
    }

    /// When the open epoch is due to be closed by [`Self::close_aged_epoch`].
    pub(crate) fn epoch_deadline(&self) -> Option<Instant> {
        self.link.as_ref()?;
        self.repl.open_since.map(|t| t + EPOCH_MAX_AGE)
    }

    /// Timer: close an open epoch that has aged (the idle sender's barrier).
    pub(crate) fn close_aged_epoch(&mut self, now: Instant) {
        // `open_since` is set exactly while the open epoch holds writes.
        if self.epoch_deadline().is_some_and(|due| now >= due) {
            self.close_epoch();
        }
    }

    pub(crate) fn on_barrier_ack(&mut self, epoch: u32) {
        if !self.repl.closed.iter().any(|(e, _)| *e == epoch) {
            // The peer's flushes may complete out of order; a later ack already covered this.
            tracing::debug!(resource = %self.cfg.resource, "BarrierAck for epoch {epoch} already covered");
            return;
        }
        while let Some((e, _)) = self.repl.closed.pop_front() {
            if e == epoch {
                break;
            }
        }
        self.counters.ep = self.repl.closed.len() as u64;
        let open: Vec<u32> = self.repl.closed.iter().map(|(e, _)| *e).collect();
        let (done, keep): (Vec<_>, Vec<_>) = self
            .repl
            .flushes
            .drain(..)
            .partition(|(e, _)| !open.contains(e));
        self.repl.flushes = keep;
        for (_, req) in done {
            self.peer_done(req);
        }
        self.release_parked_al(false);
    }

    /// A completed write keeps its activity-log extents until the peer acknowledged the barrier
    /// after it, as DRBD releases them only when the request is destroyed after the barrier ack:
    /// until then the write may exist only in the peer's volatile cache, and if both nodes lose
    /// power, the replay of this node's AL is what resyncs it. Returns true if they were
    /// released now.
    pub(crate) fn release_or_park_al(&mut self, epoch: Option<u32>, held: &mut Vec<u64>) -> bool {
        let unacked = epoch.filter(|&e| {
            self.link.is_some()
                && (e == self.repl.epoch && !self.repl.open.is_empty()
                    || self.repl.closed.iter().any(|(c, _)| *c == e))
        });
        match unacked {
            Some(e) => {
                self.repl.al_parked.push((e, std::mem::take(held)));
                false
            }
            None => {
                self.al_release(held);
                true
            }
        }
    }

    /// Give back the extents parked for epochs that are acknowledged now (or all of them: the
    /// link is gone and the bitmap has the writes).
    pub(crate) fn release_parked_al(&mut self, all: bool) {
        if self.repl.al_parked.is_empty() {
            return;
        }
        let open = (!self.repl.open.is_empty()).then_some(self.repl.epoch);
        let closed: Vec<u32> = self.repl.closed.iter().map(|(e, _)| *e).collect();
        let mut released = false;
        for (e, mut exts) in std::mem::take(&mut self.repl.al_parked) {
            if !all && (open == Some(e) || closed.contains(&e)) {
                self.repl.al_parked.push((e, exts));
            } else {
                self.al_release(&mut exts);
                released = true;
            }
        }
        if released {
            self.al_slot_freed();
        }
    }

    pub(crate) fn on_peer_ack(&mut self, wire_id: u64, ok: bool) {
        let id = ReqId(wire_id);
        let waiting = self.requests.reqs.get(&id).is_some_and(|r| r.peer_wait);
        if !waiting {
            // Late ack for a request already completed after a link loss; harmless.
            return;
        }
        if !ok {
            if let Some((start, len)) = self.requests.reqs.get(&id).and_then(|r| r.op.write_range())
            {
                tracing::warn!(resource = %self.cfg.resource, "peer failed to write {start}+{len}; marked out of sync");
                if let Some(bm) = self.bitmap.as_mut() {
                    bm.set_range(start, len);
                }
            }
            if self.st.disk() <= DiskState::Failed {
                // No local copy either: the write exists nowhere.
                let e = ClientError {
                    nbd_errno: nbd_errno::EIO,
                    message: format!(
                        "resource {}: the peer failed to write and there is no local disk ({})",
                        self.cfg.resource,
                        self.st.disk()
                    ),
                };
                if let Some(r) = self.requests.reqs.get_mut(&id) {
                    r.local = Some(Err(e));
                }
            }
        }
        let left = self.requests.reqs.get_mut(&id).map_or(0, |r| {
            r.peer_acks_left = r.peer_acks_left.saturating_sub(1);
            r.peer_acks_left
        });
        if left == 0 {
            self.peer_done(id);
        }
    }

    pub(crate) fn peer_done(&mut self, req: ReqId) {
        if let Some(r) = self.requests.reqs.get_mut(&req) {
            r.peer_wait = false;
            r.peer_acks_left = 0;
            r.peer_since = None;
        }
        self.maybe_complete(req);
    }

    pub(crate) fn oldest_peer_wait(&self) -> Option<std::time::Instant> {
        self.requests.oldest_peer_wait()
    }

    /// The link is gone: whatever the peer may not have on disk is out of sync, and requests
    /// waiting for it complete on the local result (DRBD's tl_clear).
    pub(crate) fn fail_peer_requests(&mut self) {
        let mut ranges: Vec<(u64, u64)> = std::mem::take(&mut self.repl.open);
        self.repl.open_since = None;
        for (_, r) in self.repl.closed.drain(..) {
            ranges.extend(r);
        }
        let waiting: Vec<ReqId> = self
            .requests
            .reqs
            .iter()
            .filter(|(_, r)| r.peer_wait)
            .map(|(&id, _)| id)
            .collect();
        for id in &waiting {
            if let Some(range) = self.requests.reqs.get(id).and_then(|r| r.op.write_range()) {
                ranges.push(range);
            }
        }
        if let Some(bm) = self.bitmap.as_mut() {
            for (start, len) in ranges {
                bm.set_range(start, len);
            }
        }
        self.repl.flushes.clear();
        self.counters.ep = 0;
        self.fail_diskless_requests(&waiting);
        let mut waiting = waiting;
        waiting.sort_unstable();
        for id in waiting {
            self.peer_done(id);
        }
        // Their bits are set: the extents may go.
        self.release_parked_al(true);
    }

    // ---- receiving side ----

    pub(crate) fn check_peer_range(&mut self, what: &str, offset: u64, len: u64) -> bool {
        let limit = self.peer_io_limit();
        let ok =
            len <= MAX_DATA_BYTES as u64 && offset.checked_add(len).is_some_and(|e| e <= limit);
        if !ok {
            self.protocol_error(format!(
                "{what} {offset}+{len} is beyond our device ({limit} bytes)"
            ));
        }
        ok
    }

    /// The device size the peer's requests are checked against. Without a disk (just detached,
    /// or failed) our own size is gone but requests the peer sent before it learned that are
    /// still legitimate: they are checked against the agreed size and answered with NegAck.
    fn peer_io_limit(&self) -> u64 {
        if self.st.disk() <= DiskState::Failed {
            self.usable_bytes.max(self.local_usable_bytes)
        } else {
            self.local_usable_bytes
        }
    }

    pub(crate) fn on_peer_data(&mut self, id: u64, offset: u64, fua: bool, data: Vec<u8>) {
        let len = data.len() as u64;
        if !self.check_peer_range("write", offset, len) {
            return;
        }
        self.enqueue_peer_write(
            RxKind::App { id },
            offset,
            len,
            PeerDiskOp::Write { offset, data, fua },
        );
    }

    pub(crate) fn on_peer_zero(&mut self, id: u64, offset: u64, len: u32, trim: bool, fua: bool) {
        // Zeroing has no payload, so it may cover more than one packet of data could.
        let limit = self.peer_io_limit();
        let ok = offset
            .checked_add(u64::from(len))
            .is_some_and(|e| e <= limit);
        if !ok {
            self.protocol_error(format!("zero {offset}+{len} is beyond our device"));
            return;
        }
        self.enqueue_peer_write(
            RxKind::App { id },
            offset,
            u64::from(len),
            PeerDiskOp::Zero {
                offset,
                len,
                trim,
                fua,
            },
        );
    }

    pub(crate) fn enqueue_resync_write(&mut self, id: u64, offset: u64, data: Vec<u8>) {
        let len = data.len() as u64;
        if !self.check_peer_range("resync block", offset, len) {
            return;
        }
        self.enqueue_peer_write(
            RxKind::Resync { id },
            offset,
            len,
            PeerDiskOp::Write {
                offset,
                data,
                fua: false,
            },
        );
    }

    pub(crate) fn enqueue_peer_write(
        &mut self,
        kind: RxKind,
        start: u64,
        len: u64,
        op: PeerDiskOp,
    ) {
        let Some(link) = self.link_id() else { return };
        if matches!(kind, RxKind::App { .. }) {
            // The application writes through our peer: the resync controller backs off.
            self.last_app_write = self.last_now;
        }
        if self.st.disk() <= DiskState::Failed {
            match kind {
                RxKind::App { id } => self.send(Packet::NegAck { id }),
                RxKind::Resync { id } => self.send(Packet::RsNegAck {
                    id,
                    offset: start,
                    len: len as u32,
                }),
                RxKind::Read { id } => self.send(Packet::NegDReply {
                    id,
                    offset: start,
                    len: len as u32,
                }),
            }
            return;
        }
        if let (RxKind::App { id }, Protocol::B) = (kind, self.cfg.protocol) {
            self.send(Packet::RecvAck { id });
        }
        let seq = self.rx.next_seq;
        self.rx.next_seq += 1;
        self.rx.outstanding.insert(seq);
        self.counters.ua = self.rx.outstanding.len() as u64;
        self.rx.waiting.push_back(RxOp {
            seq,
            start,
            end: start + len,
            link,
            kind,
            op: Some(op),
            al_held: Vec::new(),
        });
        self.rx_pump();
    }

    pub(crate) fn on_peer_barrier(&mut self, epoch: u32) {
        let Some(link) = self.link_id() else { return };
        self.rx.barriers.push_back((epoch, self.rx.next_seq, link));
        self.check_barriers();
    }

    /// Issue waiting peer writes that overlap nothing in flight or earlier in the queue. While
    /// the peer has no disk, its writes exist only here: like DRBD, each is marked out of sync
    /// and covered by the activity log before it is written, so a crash of this node replays
    /// the extent into the bitmap instead of forgetting that the peer needs it.
    pub(crate) fn rx_pump(&mut self) {
        let mut blocked: Vec<(u64, u64)> = Vec::new();
        let mut still = VecDeque::new();
        while let Some(mut w) = self.rx.waiting.pop_front() {
            let conflict = self
                .rx
                .in_flight
                .values()
                .any(|f| f.start < w.end && w.start < f.end)
                || blocked.iter().any(|&(s, e)| s < w.end && w.start < e);
            if conflict {
                blocked.push((w.start, w.end));
                still.push_back(w);
                continue;
            }
            if self.only_copy_here(w.kind) {
                if let Some(bm) = self.bitmap.as_mut() {
                    bm.set_range(w.start, w.end - w.start);
                }
                let mut held = std::mem::take(&mut w.al_held);
                let gate = self.al_acquire(&mut held, w.start, w.end - w.start);
                w.al_held = held;
                if matches!(gate, AlGate::WaitTransaction | AlGate::WaitSlot) {
                    blocked.push((w.start, w.end));
                    still.push_back(w);
                    continue;
                }
            }
            let Some(op) = w.op.take() else { continue };
            let io = self.alloc_io();
            self.rx.in_flight.insert(io, w);
            self.emit(Output::PeerDisk { io, op });
        }
        self.rx.waiting = still;
    }

    /// A replicated write lands only on our disk: the peer is Diskless.
    fn only_copy_here(&self, kind: RxKind) -> bool {
        matches!(kind, RxKind::App { .. })
            && self.st.pdsk() < DiskState::Inconsistent
            && self.st.disk() > DiskState::Failed
    }

    fn check_barriers(&mut self) {
        while let Some(&(epoch, seq, link)) = self.rx.barriers.front() {
            if self.rx.outstanding.range(..seq).next().is_some() {
                return;
            }
            self.rx.barriers.pop_front();
            let io = self.alloc_io();
            self.rx.flushing.insert(io, (epoch, link));
            self.emit(Output::PeerDisk {
                io,
                op: PeerDiskOp::Flush,
            });
        }
    }

    /// Completion of any `Output::PeerDisk`.
    pub(crate) fn peer_disk_done(&mut self, io: IoId, result: Result<Option<Vec<u8>>, IoFailure>) {
        if let Some(mut w) = self.rx.in_flight.remove(&io) {
            self.rx.outstanding.remove(&w.seq);
            if !w.al_held.is_empty() {
                self.al_release(&mut w.al_held);
                self.retry_al_waiters();
            }
            self.counters.ua = self.rx.outstanding.len() as u64;
            let current = self.link_id() == Some(w.link);
            let len = w.end - w.start;
            match (w.kind, result) {
                (RxKind::App { id }, Ok(_)) => {
                    self.counters.nr_kib += len / 1024;
                    self.counters.dw_kib += len / 1024;
                    if self.st.pdsk() < DiskState::Inconsistent {
                        // A Diskless Primary's writes exist only here.
                        if let Some(bm) = self.bitmap.as_mut() {
                            bm.set_range(w.start, len);
                        }
                    }
                    if current && self.cfg.protocol == Protocol::C {
                        self.send(Packet::WriteAck { id });
                    }
                }
                (RxKind::App { id }, Err(e)) => {
                    tracing::error!(resource = %self.cfg.resource, "local write for the peer failed: {}", e.message);
                    if let Some(bm) = self.bitmap.as_mut() {
                        bm.set_range(w.start, len);
                    }
                    if current {
                        self.send(Packet::NegAck { id });
                    }
                    if self.cfg.on_io_error != OnIoError::PassOn {
                        let what = e.message.clone();
                        self.fail_disk(&what);
                    }
                }
                (RxKind::Resync { id }, r) => {
                    self.resync_write_done(id, w.start, len, r.is_ok(), current)
                }
                (RxKind::Read { id }, r) => {
                    self.counters.dr_kib += len / 1024;
                    match r {
                        Ok(Some(data)) if current => self.send(Packet::DataReply {
                            id,
                            offset: w.start,
                            data,
                        }),
                        _ if current => self.send(Packet::NegDReply {
                            id,
                            offset: w.start,
                            len: len as u32,
                        }),
                        _ => {}
                    }
                }
            }
            self.rx_pump();
            self.check_barriers();
            return;
        }
        if let Some((epoch, link)) = self.rx.flushing.remove(&io) {
            if let Err(e) = &result {
                // The writes of this epoch (and any before it) may be lost on our disk, and a
                // later fdatasync would succeed regardless: never acknowledge a barrier on this
                // link again, and give up the disk (whatever on-io-error says, as DRBD does
                // for flush errors), so the Primary marks every unacknowledged epoch.
                tracing::error!(resource = %self.cfg.resource, "flush for the peer failed: {}", e.message);
                self.rx.flush_failed = Some(link);
                let what = format!("barrier flush: {}", e.message);
                self.fail_disk(&what);
            }
            if self.link_id() == Some(link) && result.is_ok() && self.rx.flush_failed != Some(link)
            {
                self.send(Packet::BarrierAck { epoch });
            }
            return;
        }
        let data = result.as_ref().ok().and_then(|d| d.clone());
        if self.requests.resync_reads.iter().any(|&(i, _, _)| i == io) {
            self.resync_read_done(io, result);
        } else {
            self.aux_read_done(io, data);
        }
    }

    /// On link loss: queued peer writes were never acknowledged, so the Primary has them in
    /// its transfer log; drop them. Writes already issued complete and are ignored.
    pub(crate) fn peer_rx_reset(&mut self) {
        let dropped: Vec<RxOp> = self.rx.waiting.drain(..).collect();
        for mut w in dropped {
            self.rx.outstanding.remove(&w.seq);
            self.al_release(&mut w.al_held);
        }
        self.rx.barriers.clear();
        self.counters.ua = self.rx.outstanding.len() as u64;
    }
}
