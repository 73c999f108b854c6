//! The receiving side of replication, the engine's side: the peer's writes, resync blocks and
//! reads go through `PeerRx` (ordering, barriers) to the disk, and are acknowledged per
//! protocol; a barrier is acknowledged once its flush completed.

use crate::core::contract::io::{IoFailure, PeerDiskOp};
use crate::core::engine::{Engine, OnIoError};
use crate::core::io_table::IoOwner;
use crate::core::receiver::peer_rx::RxKind;
use crate::core::request::client::AlGate;
use crate::core::state::DiskState;
use crate::wire::frame::MAX_DATA_BYTES;
use crate::wire::Packet;
use rep_resources::Protocol;

/// A length the peer sent that was checked against the 1 MiB packet limit (or the device size).
fn len32(len: u64) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Engine {
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
            self.dev.usable_bytes.max(self.dev.local_usable_bytes)
        } else {
            self.dev.local_usable_bytes
        }
    }

    pub(crate) fn on_peer_data(&mut self, id: u64, offset: u64, fua: bool, data: bytes::Bytes) {
        let len = data.len() as u64;
        if !self.check_peer_range("write", offset, len) {
            return;
        }
        self.enqueue_peer_op(
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
        self.enqueue_peer_op(
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

    pub(crate) fn enqueue_resync_write(&mut self, id: u64, offset: u64, data: bytes::Bytes) {
        let len = data.len() as u64;
        if !self.check_peer_range("resync block", offset, len) {
            return;
        }
        self.enqueue_peer_op(
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

    /// `RsZero`: zero the range like a resync block would have, deallocating it where the
    /// disk can (punch-hole on files, a deallocating WRITE_ZEROES on block devices), so that
    /// the image stays as sparse as the source's.
    pub(crate) fn enqueue_resync_zero(&mut self, id: u64, offset: u64, len: u32) {
        if !self.check_peer_range("resync zero range", offset, u64::from(len)) {
            return;
        }
        self.enqueue_peer_op(
            RxKind::Resync { id },
            offset,
            u64::from(len),
            PeerDiskOp::Zero {
                offset,
                len,
                trim: true,
                fua: false,
            },
        );
    }

    pub(crate) fn enqueue_peer_op(&mut self, kind: RxKind, start: u64, len: u64, op: PeerDiskOp) {
        let Some(link) = self.link_id() else { return };
        if matches!(kind, RxKind::App { .. }) {
            // The application writes through our peer: the resync controller backs off.
            self.requests.last_app_write = self.last_now;
            self.verify_note_write(start, len);
        }
        if self.st.disk() <= DiskState::Failed {
            let len = len32(len);
            match kind {
                RxKind::App { id } => self.send(Packet::NegAck { id }),
                RxKind::Resync { id } => self.send(Packet::RsNegAck {
                    id,
                    offset: start,
                    len,
                }),
                RxKind::Read { id } => self.send(Packet::NegDReply {
                    id,
                    offset: start,
                    len,
                }),
            }
            return;
        }
        if let (RxKind::App { id }, Protocol::B) = (kind, self.cfg.protocol) {
            self.send(Packet::RecvAck { id });
        }
        self.peers.data_mut().rx.enqueue(link, kind, start, len, op);
        self.rx_pump();
    }

    pub(crate) fn on_peer_barrier(&mut self, epoch: u32) {
        let Some(link) = self.link_id() else { return };
        self.peers.data_mut().rx.barrier(epoch, link);
        self.flush_ready_barriers();
    }

    /// Issue queued peer operations that overlap nothing in flight or earlier in the queue.
    /// While the peer has no disk, its writes exist only here: like DRBD, each is marked out of
    /// sync and covered by the activity log before it is written, so a crash of this node
    /// replays the extent into the bitmap instead of forgetting that the peer needs it.
    pub(crate) fn rx_pump(&mut self) {
        self.peers.data_mut().rx.begin_scan();
        while let Some(mut w) = self.peers.data_mut().rx.next_ready() {
            if w.only_copy || self.only_copy_here(w.kind) {
                w.only_copy = true;
                // No peer's disk has it: it exists only here.
                self.peers.mark_all(w.start, w.end - w.start);
                let mut held = w.al_held.take();
                let gate = self.al_acquire(&mut held, w.start, w.end - w.start);
                w.al_held = held;
                if matches!(gate, AlGate::WaitTransaction | AlGate::WaitSlot) {
                    self.peers.data_mut().rx.hold(w);
                    continue;
                }
            }
            let seq = w.seq;
            let Some(op) = self.peers.data_mut().rx.issue(w) else {
                continue;
            };
            let io = self.ios.start(IoOwner::PeerOp { seq });
            self.emit(crate::core::contract::io::Output::PeerDisk { io, op });
        }
        self.peers.data_mut().rx.end_scan();
    }

    /// A replicated write lands only on our disk: the peer is Diskless.
    fn only_copy_here(&self, kind: RxKind) -> bool {
        matches!(kind, RxKind::App { .. })
            && self.data_st().pdsk() < DiskState::Inconsistent
            && self.st.disk() > DiskState::Failed
    }

    fn flush_ready_barriers(&mut self) {
        for (epoch, link) in self.peers.data_mut().rx.ready_barriers() {
            let io = self.ios.start(IoOwner::PeerFlush { epoch, link });
            self.emit(crate::core::contract::io::Output::PeerDisk {
                io,
                op: PeerDiskOp::Flush,
            });
        }
    }

    /// Completion of a peer operation (`IoOwner::PeerOp`).
    pub(crate) fn peer_op_done(&mut self, seq: u64, result: Result<Option<Vec<u8>>, IoFailure>) {
        let Some(mut w) = self.peers.data_mut().rx.complete(seq) else {
            return;
        };
        if !w.al_held.is_empty() {
            self.al_release(w.al_held.take());
            self.retry_al_waiters();
        }
        let current = self.link_id() == Some(w.link);
        let len = w.end - w.start;
        match (w.kind, result) {
            (RxKind::App { id }, Ok(_)) => {
                self.verify_note_write(w.start, len);
                self.counters.nr_kib += len / 1024;
                self.counters.dw_kib += len / 1024;
                if self.data_st().pdsk() < DiskState::Inconsistent {
                    // A Diskless Primary's writes exist only here.
                    self.peers.mark_all(w.start, len);
                }
                if current && self.cfg.protocol == Protocol::C {
                    self.send(Packet::WriteAck { id });
                }
            }
            (RxKind::App { id }, Err(e)) => {
                tracing::error!(resource = %self.cfg.resource, "local write for the peer failed: {}", e.message);
                // Our disk missed what the peer has.
                self.peers.mark_all(w.start, len);
                if current {
                    self.send(Packet::NegAck { id });
                }
                if self.cfg.on_io_error != OnIoError::PassOn {
                    self.fail_disk(&e.message);
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
                        data: data.into(),
                    }),
                    _ if current => self.send(Packet::NegDReply {
                        id,
                        offset: w.start,
                        len: len32(len),
                    }),
                    _ => {}
                }
            }
        }
        self.rx_pump();
        self.flush_ready_barriers();
        // Local requests that waited for this write of the old Primary (after a switchover or
        // a failover) may go now.
        self.admit_waiting();
        self.submit_reads_behind_peer();
    }

    /// A barrier flush completed (`IoOwner::PeerFlush`).
    pub(crate) fn peer_flush_done(
        &mut self,
        epoch: u32,
        link: crate::core::contract::ids::LinkId,
        result: Result<Option<Vec<u8>>, IoFailure>,
    ) {
        if let Err(e) = &result {
            // The writes of this epoch (and any before it) may be lost on our disk, and a
            // later fdatasync would succeed regardless: never acknowledge a barrier on this
            // link again, and give up the disk (whatever on-io-error says, as DRBD does for
            // flush errors), so the Primary marks every unacknowledged epoch.
            tracing::error!(resource = %self.cfg.resource, "flush for the peer failed: {}", e.message);
            let what = format!("barrier flush: {}", e.message);
            self.fail_disk(&what);
        }
        if self.peers.data_mut().rx.flushed(link, result.is_ok()) && self.link_id() == Some(link) {
            self.send(Packet::BarrierAck { epoch });
        }
    }

    /// On link loss: received writes still go to the disk (see `PeerRx::reset`); queued resync
    /// blocks and reads are dropped. The Primary marked everything it had not seen a
    /// BarrierAck for out of sync, so a reconnect resyncs those blocks either way.
    pub(crate) fn peer_rx_reset(&mut self) {
        for mut w in self.peers.data_mut().rx.reset() {
            self.al_release(w.al_held.take());
        }
    }
}
