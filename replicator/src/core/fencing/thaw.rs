//! Client I/O frozen by fencing and held by the generation gate (`Freeze`, fencing/freeze.rs),
//! on the engine's side: when it thaws (the fence-peer verdict, the connection coming back,
//! `resume-io`, quorum taking over) and how the held replies and queued requests go, in order
//! (docs/architecture.md §6.2 W3, §9.3).

use crate::core::contract::ids::IoId;
use crate::core::contract::io::{nbd_errno, ClientError, Output};
use crate::core::contract::refusal::Refusal;
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{DiskState, Role};

impl Engine {
    /// Let frozen I/O go: held replies first, then the requests that waited, in order.
    /// With a new generation started here, the replies wait for its superblock (`Freeze`).
    pub(crate) fn thaw_io(&mut self, why: &str) {
        let mut cs = ChangeSet::new().susp_fen(false).why(why.to_string());
        let new_generation = self.start_deferred_generation();
        if new_generation {
            cs = cs.persist();
            self.freeze.close_gate();
        }
        let written = self.change_state(cs);
        if new_generation {
            self.freeze.gate_on(written);
        }
        self.release_replies(None);
        for (req, op) in self.freeze.take_queued() {
            self.client_request(req, op);
        }
    }

    /// The superblock carrying a new generation was issued as `written` (see `Freeze`).
    pub(crate) fn gate_on(&mut self, written: Option<IoId>) {
        if self.freeze.gate_on(written) {
            self.release_replies(None);
        }
    }

    /// Metadata write `io` completed: if the generation gate waited for it, the held replies
    /// go, as errors if it failed (the disk is Failed then, and the writes exist only on it
    /// under a generation the peer's would overwrite).
    pub(crate) fn gate_written(&mut self, io: IoId, failed: Option<&str>) {
        if self.freeze.gate_written(io) {
            self.release_replies(failed);
        }
    }

    /// Send the held replies, in order, unless I/O is still frozen or gated.
    pub(crate) fn release_replies(&mut self, failed: Option<&str>) {
        if self.st.io_suspended() || self.freeze.gated() {
            return;
        }
        for (req, result) in self.freeze.take_replies() {
            let result = match (result, failed) {
                (Ok(()), Some(why)) => Err(ClientError {
                    nbd_errno: nbd_errno::EIO,
                    message: format!(
                        "resource {}: the new data generation could not be written ({why}); \
                         the request is not acknowledged",
                        self.cfg.resource
                    ),
                }),
                (r, _) => self.quorum_verdict_on(r),
            };
            self.emit(Output::ClientReply { req, result });
        }
    }

    /// The new data generation a link loss under frozen I/O put off (`new_uuid_on_thaw`):
    /// started when I/O thaws, or before a new handshake, whichever comes first — the writes
    /// that were in flight when the link went may be missing on the peer, and only a new
    /// generation makes the handshake resync them. Returns whether it started one.
    pub(crate) fn start_deferred_generation(&mut self) -> bool {
        // Without quorum nothing will be written (on-no-quorum fails or holds it): a new
        // generation would only turn the reconnect into a split brain (docs/quorum.md).
        let due = std::mem::take(&mut self.freeze.new_uuid_on_thaw)
            && self.st.quorum()
            && self.st.role() == Role::Primary
            && self.st.disk() == DiskState::UpToDate;
        // No new generation while a bitmap UUID is pending (the one the peer misses started
        // already): nothing to write, nothing to gate.
        due && self
            .gen_change(GenEvent::DeferredGeneration)
            .uuids_changed()
    }

    /// The connection came back while I/O was frozen for a fence-peer handler that has not
    /// returned (DRBD 8.4's after_state_ch, "case2: the connection was established again"):
    /// the peer is connected and behind us (SyncTarget, or in sync), so it cannot be promoted
    /// with data that misses our writes, and I/O goes on. The handler's result is ignored when
    /// it returns (`fence_done`).
    pub(crate) fn thaw_on_reconnect(&mut self) {
        if self.st.susp_fen() && self.st.role() == Role::Primary && self.link_ready() {
            self.thaw_io("the connection is back");
        }
    }

    /// `repadm resume-io`: thaw I/O whatever fencing found (the operator vouches for it).
    pub(crate) fn cmd_resume_io(&mut self) -> Result<Option<String>, Refusal> {
        if !self.st.susp_fen() {
            return Err(Refusal::NotSuspended);
        }
        self.thaw_io("resume-io");
        Ok(Some("I/O resumed".into()))
    }

    /// Whether client I/O is pending anywhere (in the request table, or frozen).
    pub(crate) fn client_io_pending(&self) -> bool {
        self.requests.in_flight() > 0 || !self.freeze.is_empty()
    }
}
