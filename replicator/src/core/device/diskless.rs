//! Diskless operation and local I/O errors (docs/drbd-semantics.md §10).
//!
//! A Primary without a usable local disk keeps serving while its peer is Connected and
//! UpToDate: reads travel as `DataRequest`/`DataReply`, writes go only to the peer. A local I/O
//! error on a client request always marks the block out of sync; `on-io-error detach` (the
//! default) then drops the disk (Failed, peer told, Diskless) and finishes the failed request
//! through the peer, so a dying disk under a Primary costs the client nothing. The peer, seeing
//! a Primary lose its disk, starts a new data generation and records every write in its bitmap:
//! the disk that comes back is resynced from it.

use crate::core::contract::io::{nbd_errno, ClientError, ClientOp, IoFailure, Output, ReqId};
use crate::core::device::generation::GenEvent;
use crate::core::engine::{Engine, OnIoError};
use crate::core::receiver::peer_rx::RxKind;
use crate::core::request::requests::RemoteReply;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};
use crate::wire::Packet;

impl Engine {
    /// The peer's UpToDate disk is reachable over a decided link.
    fn peer_has_data(&self) -> bool {
        self.link_ready()
            && self.data_st().cstate() >= ConnState::Connected
            && self.data_st().pdsk() == DiskState::UpToDate
    }

    /// No usable local disk (never attached, detached, or failed), and the peer's UpToDate disk
    /// is reachable.
    pub(crate) fn serves_via_peer(&self) -> bool {
        matches!(self.st.disk(), DiskState::Diskless | DiskState::Failed) && self.peer_has_data()
    }

    pub(crate) fn no_data_error(&self) -> ClientError {
        ClientError {
            nbd_errno: nbd_errno::EIO,
            message: format!(
                "resource {} on node {}: no UpToDate data reachable (disk {}, peer {} {})",
                self.cfg.resource,
                self.cfg.node,
                self.st.disk(),
                self.data_st().cstate(),
                self.data_st().pdsk()
            ),
        }
    }

    /// Read through the peer, in pieces of at most one packet; the last reply completes the
    /// request.
    pub(crate) fn read_via_peer(&mut self, req: ReqId, offset: u64, len: u32) {
        // The local part is what the peer answers; until then the request waits for it.
        self.requests.wait_for_peer(req, 1, self.last_now, None);
        for (offset, len) in self.requests.start_remote_read(req, offset, len) {
            self.send(Packet::DataRequest {
                id: req.0,
                offset,
                len,
            });
        }
    }

    /// `DataReply` (`Some(data)`) or `NegDReply` (`None`) for one piece of a read sent through
    /// the peer.
    pub(crate) fn on_data_reply(&mut self, wire_id: u64, offset: u64, data: Option<Vec<u8>>) {
        let id = ReqId(wire_id);
        let result = match self.requests.remote_reply(id, offset, data.as_deref()) {
            // Still pieces to come, or the request already failed when the link was lost.
            RemoteReply::Partial | RemoteReply::Stale => return,
            RemoteReply::Invalid(why) => {
                self.protocol_error(why);
                return;
            }
            RemoteReply::Complete(Some(data)) => {
                self.emit(Output::ClientData { req: id, data });
                Ok(())
            }
            RemoteReply::Complete(None) => Err(ClientError {
                nbd_errno: nbd_errno::EIO,
                message: format!(
                    "resource {}: the peer could not read this block for us (we are {})",
                    self.cfg.resource,
                    self.st.disk()
                ),
            }),
        };
        self.requests.set_local(id, result);
        self.peer_done(id);
    }

    /// The peer (a Diskless Primary) reads from our disk.
    pub(crate) fn on_data_request(&mut self, id: u64, offset: u64, len: u32) {
        if !self.check_peer_range("read", offset, u64::from(len)) {
            return;
        }
        if self.st.disk() != DiskState::UpToDate {
            self.send(Packet::NegDReply { id, offset, len });
            return;
        }
        self.enqueue_peer_op(
            RxKind::Read { id },
            offset,
            u64::from(len),
            crate::core::contract::io::PeerDiskOp::Read { offset, len },
        );
    }

    /// The link is gone: requests that only the peer could complete fail (there is no copy of
    /// their data on any disk we can reach).
    pub(crate) fn fail_diskless_requests(&mut self, waiting: &[ReqId]) {
        let without_disk = self.st.disk() <= DiskState::Failed;
        for &id in waiting {
            let remote_read = self.requests.cancel_remote_read(id);
            if remote_read || without_disk {
                let e = self.no_data_error();
                self.requests.set_local(id, Err(e));
            }
        }
    }

    /// A client request failed on the local disk. Returns its local result, or `None` when it
    /// was re-issued through the peer.
    pub(crate) fn local_io_failed(
        &mut self,
        req: ReqId,
        op: ClientOp,
        e: &IoFailure,
    ) -> Option<Result<(), ClientError>> {
        if let Some((start, len)) = op.write_range() {
            // Whatever the policy: this block is not what the peer has.
            self.peers.mark_all(start, len);
        }
        let err = ClientError {
            nbd_errno: nbd_errno::EIO,
            message: format!("local disk I/O error: {} (errno {})", e.message, e.errno),
        };
        if self.cfg.on_io_error == OnIoError::PassOn {
            if let ClientOp::Read { offset, len } = op {
                if self.peer_has_data() {
                    self.read_via_peer(req, offset, len);
                    return None;
                }
            }
            return Some(Err(err));
        }
        self.fail_disk(&e.message);
        if !self.serves_via_peer() {
            return Some(Err(err));
        }
        match op {
            ClientOp::Read { offset, len } => {
                self.read_via_peer(req, offset, len);
                None
            }
            // Replicated when admitted: the peer's copy is the data now.
            _ => Some(Ok(())),
        }
    }

    /// `on-io-error detach`: Failed now (the peer is told with our next State), Diskless once
    /// the backing device is closed.
    pub(crate) fn fail_disk(&mut self, what: &str) {
        if self.st.disk() <= DiskState::Failed {
            return;
        }
        if self.cfg.on_io_error == OnIoError::CallLocalIoError {
            self.emit(Output::Handler {
                name: "local-io-error",
            });
        }
        tracing::error!(resource = %self.cfg.resource, "Local IO failed ({what}). Detaching...");
        // What was written since the last completed flush may be lost with this disk: a failed
        // data flush (before a metadata write as much as for a client FLUSH) drops write-back
        // for good. The peer's copy is the data now.
        let mut unflushed = self.requests.take_unflushed();
        unflushed.extend(self.ios.flushing_extents());
        self.mark_extents_out_of_sync(unflushed);
        let _ = self.change_state(ChangeSet::new().disk(DiskState::Failed));
        // Now, not at the end of this input: writes this input still replicates must reach
        // the peer after it knows it holds the only copy (it marks them out of sync then).
        self.announce_state();
        if self.data_st().cstate() > ConnState::Connected {
            // A resync or verify cannot go on without this disk: start over from a handshake,
            // which sees the disk gone.
            self.lose_link(
                ConnState::Disconnecting,
                "local disk failed during a resync or verify; reconnecting",
                crate::core::connection::after::After::Reconnect,
            );
        }
        self.close_failed_disk_when_idle();
    }

    /// A Failed disk is closed once no I/O is in flight on it: requests still out fail too, and
    /// their blocks must reach the bitmap before it is persisted for the last time.
    pub(crate) fn close_failed_disk_when_idle(&mut self) {
        if self.st.disk() != DiskState::Failed || self.ios.closing() {
            return;
        }
        if !self.ios.data_device_idle() {
            return;
        }
        self.close_disk(None);
    }

    /// The peer's disk went away while one of us is Primary: new writes now live only on our
    /// disk, so start a new generation (the returning disk then syncs from us) and track them in
    /// the bitmap.
    pub(crate) fn peer_lost_disk(&mut self, peer_role: Role) {
        let writes_here = self.st.role() == Role::Primary || peer_role == Role::Primary;
        if self.st.disk() != DiskState::UpToDate || !writes_here {
            return;
        }
        // No new generation while a bitmap UUID is pending (the one the peer misses started
        // already); the superblock is written at once (`Persist::Now`).
        let primary = self.st.role() == Role::Primary;
        self.gen_change(GenEvent::PeerDiskGone { primary });
    }
}
