//! Replication of client writes, the Primary's side (docs/architecture.md §6.2, docs/drbd-semantics.md §5):
//! every write goes to the peer as it goes to the local disk; the client gets its reply when
//! both are done (protocol C: the peer's WriteAck; B: RecvAck; A: once sent). The transfer
//! log (`TransferLog`) groups writes in epochs closed by barriers.

use std::time::Instant;

use crate::core::contract::io::{nbd_errno, ClientError, ClientOp, Output, ReqId};
use crate::core::engine::Engine;
use crate::core::state::DiskState;
use crate::wire::frame::MAX_DATA_BYTES;
use crate::wire::Packet;
use rep_resources::Protocol;

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
                // One packet's payload (1 MiB) fits a u32.
                let max = u32::try_from(MAX_DATA_BYTES).unwrap_or(u32::MAX);
                let mut sent = 0u32;
                let mut n = 0u32;
                while sent < len {
                    let piece = (len - sent).min(max);
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
            ClientOp::Trim { offset, len, fua } | ClientOp::WriteZeroes { offset, len, fua } => {
                self.send(Packet::Zero {
                    id: req.0,
                    offset,
                    len,
                    trim: matches!(op, ClientOp::Trim { .. }),
                    fua,
                });
                1
            }
            ClientOp::Read { .. } | ClientOp::Flush => return,
        };
        self.counters.ns_kib += len / 1024;
        let max_epoch = self.cfg.peer.max_epoch_size;
        let (epoch, full) =
            self.peers
                .data_mut()
                .tl
                .record_write(self.last_now, (start, len), max_epoch);
        self.requests.set_epoch(req, epoch);
        if self.cfg.protocol != Protocol::A {
            self.requests
                .wait_for_peer(req, packets, self.last_now, Some(epoch));
        }
        if let Some(full) = full {
            self.send_barrier(full);
        }
    }

    /// FLUSH: the reply also waits until the peer flushed everything sent before it.
    pub(crate) fn replicate_flush(&mut self, req: ReqId) {
        let epoch = self.peers.data_mut().tl.record_flush(req);
        self.send_barrier(epoch);
        self.requests.wait_for_peer(req, 1, self.last_now, None);
    }

    fn send_barrier(&mut self, epoch: u32) {
        self.send(Packet::Barrier { epoch });
    }

    /// When the open epoch is due to be closed by [`Self::close_aged_epoch`].
    pub(crate) fn epoch_deadline(&self) -> Option<Instant> {
        self.peers.data().link.as_ref()?;
        self.peers.data().tl.deadline()
    }

    /// Timer: close an open epoch that has aged (the idle sender's barrier).
    pub(crate) fn close_aged_epoch(&mut self, now: Instant) {
        if self.epoch_deadline().is_some_and(|due| now >= due) {
            let epoch = self.peers.data_mut().tl.close_epoch();
            self.send_barrier(epoch);
        }
    }

    pub(crate) fn on_barrier_ack(&mut self, epoch: u32) {
        let Some(acked) = self.peers.data_mut().tl.barrier_acked(epoch) else {
            tracing::debug!(resource = %self.cfg.resource, "BarrierAck for epoch {epoch} already covered");
            return;
        };
        for req in acked.flushes {
            self.peer_done(req);
        }
        if !acked.extents.is_empty() {
            self.al_release(acked.extents);
            self.al_slot_freed();
        }
    }

    pub(crate) fn on_peer_ack(&mut self, wire_id: u64, ok: bool) {
        let id = ReqId(wire_id);
        if !self.requests.waits_for_peer(id) {
            // Late ack for a request already completed after a link loss; harmless.
            return;
        }
        if !ok {
            if let Some((start, len)) = self.requests.op(id).and_then(|op| op.write_range()) {
                tracing::warn!(resource = %self.cfg.resource, "peer failed to write {start}+{len}; marked out of sync");
                if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
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
                self.requests.set_local(id, Err(e));
            }
        }
        if self.requests.peer_acked(id) == 0 {
            self.peer_done(id);
        }
    }

    pub(crate) fn peer_done(&mut self, req: ReqId) {
        self.requests.peer_done(req);
        self.maybe_complete(req);
    }

    /// The link is gone: whatever the peer may not have on disk is out of sync, and requests
    /// waiting for it complete on the local result (DRBD's tl_clear).
    pub(crate) fn fail_peer_requests(&mut self) {
        let cleared = self.peers.data_mut().tl.clear();
        let waiting = self.requests.peer_waiting();
        let mut ranges = cleared.ranges;
        ranges.extend(
            waiting
                .iter()
                .filter_map(|&id| self.requests.op(id).and_then(|op| op.write_range())),
        );
        if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
            for (start, len) in ranges {
                bm.set_range(start, len);
            }
        }
        self.fail_diskless_requests(&waiting);
        for id in waiting {
            self.peer_done(id);
        }
        // Their bits are set: the extents may go.
        if !cleared.extents.is_empty() {
            self.al_release(cleared.extents);
            self.al_slot_freed();
        }
    }
}
