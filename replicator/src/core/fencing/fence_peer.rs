//! Fencing (docs/drbd-semantics.md §4, §9; DRBD 8.4's conn_try_outdate_peer): with
//! `fencing resource-only` or `resource-and-stonith`, a Primary that loses its peer runs the
//! `fence-peer` handler to have the peer outdated, and a disconnected node is promoted only once
//! the peer is known Outdated. With `resource-and-stonith` application I/O is frozen (queued,
//! replies held) from the moment the link is lost until the handler returns, so that no write
//! is acknowledged that a node promoted on the other side of a partition would miss.
//!
//! The handler's exit code (DRBD's): 3 the peer is Inconsistent, 4 it was outdated, 5 it is
//! unreachable (taken as dead: Outdated only if our own data is UpToDate), 6 it is Primary
//! (then our data is the outdated one), 7 it was STONITHed; anything else: the handler failed.

use crate::core::contract::ids::IoId;
use crate::core::contract::io::{nbd_errno, ClientError, Output};
use crate::core::contract::refusal::Refusal;
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::io_table::{FencePurpose, HandlerWait, IoOwner};
use crate::core::policy::fence_result::fence_result;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::promotion::peer_known_outdated;
use crate::core::state::{ConnState, DiskState, Role};
use rep_resources::Fencing;

impl Engine {
    /// Run handler `name` and wait for its exit status (`Input::HandlerDone`).
    pub(crate) fn run_handler(&mut self, name: &'static str, wait: HandlerWait) {
        let io = self.ios.start(IoOwner::Handler(wait));
        self.emit(Output::RunHandler { io, name });
    }

    pub(crate) fn fence_running(&self) -> bool {
        self.ios.count(|o| {
            matches!(
                o,
                IoOwner::Handler(HandlerWait::Fence(FencePurpose::LostLink { .. }))
            )
        }) > 0
    }

    fn promotion_fence_running(&self) -> bool {
        self.ios.count(|o| {
            matches!(
                o,
                IoOwner::Handler(HandlerWait::Fence(FencePurpose::Promote { .. }))
            )
        }) > 0
    }

    /// Called as a link goes away, before its requests are completed: whether the peer must
    /// be fenced, and with `resource-and-stonith` I/O frozen from now on.
    pub(crate) fn fence_on_link_loss(&mut self) -> bool {
        let fence = self.cfg.fencing != Fencing::DontCare
            && self.st.role() == Role::Primary
            && self.data_st().cstate() >= ConnState::Connected
            && !peer_known_outdated(self.data_st().pdsk());
        if fence && self.cfg.fencing == Fencing::ResourceAndStonith {
            let _ = self.change_state(
                ChangeSet::new()
                    .susp_fen(true)
                    .why("fencing: I/O frozen until the fence-peer handler returns"),
            );
        }
        fence
    }

    /// The link is gone (see `fence_on_link_loss`): outdate the peer.
    pub(crate) fn fence_lost_peer(&mut self) {
        if !self.fence_running() {
            let connects = self.peers.data().connects;
            self.run_handler(
                "fence-peer",
                HandlerWait::Fence(FencePurpose::LostLink { connects }),
            );
        }
    }

    /// `primary` waits for the peer to be outdated first.
    pub(crate) fn fence_for_promotion(
        &mut self,
        admin: crate::core::contract::io::AdminId,
        force: bool,
    ) {
        self.run_handler(
            "fence-peer",
            HandlerWait::Fence(FencePurpose::Promote {
                admin,
                force,
                connects: self.peers.data().connects,
            }),
        );
    }

    pub(crate) fn handler_done(&mut self, wait: HandlerWait, exit: Option<i32>) {
        match wait {
            HandlerWait::Fence(purpose) => self.fence_done(purpose, exit),
            HandlerWait::BeforeResyncTarget { link } => self.before_resync_target_done(link, exit),
        }
    }

    fn fence_done(&mut self, purpose: FencePurpose, exit: Option<i32>) {
        let res = self.cfg.resource.clone();
        let connected = self.data_st().cstate() >= ConnState::Connected;
        let stale = match purpose {
            FencePurpose::LostLink { connects } | FencePurpose::Promote { connects, .. } => {
                connects != self.peers.data().connects
            }
        };
        if stale && !connected && matches!(purpose, FencePurpose::LostLink { .. }) {
            self.fence_stale(exit);
            return;
        }
        if connected {
            tracing::info!(resource = %res, "fence-peer returned {exit:?}, but the connection is back: result ignored");
        } else if stale {
            tracing::info!(resource = %res, "fence-peer returned {exit:?} for an earlier connection: result ignored, `primary` decides again");
        } else {
            let (cs, why) = fence_result(self.data_id(), exit, self.st.disk(), self.cfg.fencing);
            // Logged here as well: a result that changes nothing (a broken handler, exit 5
            // without UpToDate data) leaves no state-change line to carry it.
            tracing::info!(resource = %res, "{why}");
            let _ = self.change_state(cs.why(why));
        }
        let fenced = peer_known_outdated(self.data_st().pdsk());
        match purpose {
            FencePurpose::LostLink { .. } => {
                if !self.st.susp_fen() {
                    if !fenced && !connected {
                        tracing::warn!(resource = %res, "could not outdate the peer ({exit:?}); going on without it (fencing resource-only): a node promoted on the other side would miss the writes from now on");
                    }
                } else if fenced || connected {
                    self.thaw_io("the peer is fenced");
                } else if self.fence_yields_to_quorum() {
                } else {
                    tracing::error!(resource = %res, "could not outdate the peer ({exit:?}); I/O stays frozen (fencing resource-and-stonith) until `repadm resume-io {res}`");
                }
            }
            FencePurpose::Promote { admin, force, .. } => {
                if connected || stale {
                    // The peer is back (it may object now), or came and went again (what the
                    // handler did predates that connection): decide as for a new `primary`.
                    self.promote_again(admin, force);
                } else if fenced {
                    self.finish_primary(admin, force, true);
                } else if force {
                    tracing::warn!(resource = %res, "Forced into split brain situation!");
                    let _ = self.change_state(
                        ChangeSet::new()
                            .pdsk(self.data_id(), DiskState::Outdated)
                            .why("primary --force with the peer not outdated"),
                    );
                    self.finish_primary(admin, force, true);
                } else {
                    let refusal = Refusal::PrimaryNop {
                        pdsk: self.data_st().pdsk(),
                    };
                    self.emit(Output::AdminReply {
                        id: admin,
                        result: Err(refusal),
                    });
                }
            }
        }
    }

    /// A fence-peer started for an earlier link loss returned after the peer connected again
    /// and was lost again (DRBD 8.4's conn_try_outdate_peer compares `connect_cnt`): what it
    /// did to the peer predates that connection — a resync since may have made the peer
    /// UpToDate again, and the cluster manager's constraint may have been lifted by
    /// unfence-peer — so it says nothing about the peer now. The result is ignored, and the
    /// current loss gets its own run (none was started for it while this one ran).
    fn fence_stale(&mut self, exit: Option<i32>) {
        tracing::info!(
            resource = %self.cfg.resource,
            "fence-peer returned {exit:?} for an earlier connection (the peer connected and was lost again while it ran): result ignored"
        );
        let still_needed = self.cfg.fencing != Fencing::DontCare
            && self.st.role() == Role::Primary
            && !peer_known_outdated(self.data_st().pdsk());
        if still_needed {
            self.fence_lost_peer();
        } else if self.st.susp_fen() {
            self.thaw_io("the peer is fenced");
        }
    }

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

    /// The peer (its repd, over the network) asks us to outdate ourselves: it lost the
    /// connection and runs fence-peer. A Primary refuses (the peer learns it from our role);
    /// a link we still believe in is dropped first (the peer no longer has it).
    pub(crate) fn cmd_peer_outdate(
        &mut self,
        id: crate::core::contract::io::AdminId,
    ) -> Result<Option<String>, Refusal> {
        if self.st.role() == Role::Primary {
            return Ok(Some("Primary: not outdated".into()));
        }
        if self.promotion_fence_running() {
            // Both nodes asked to outdate the other at once (each to be promoted, through the
            // witness, which relays one request at a time): the request relayed first loses,
            // so exactly one node is promoted (docs/quorum.md, "Losing the data link").
            return Ok(Some(
                "our own promotion is outdating the peer: not outdated".into(),
            ));
        }
        let peer = self.data_st();
        if peer.cstate() >= ConnState::Connected && peer.pdsk() < DiskState::UpToDate {
            // A request that predates the connection we have now (it reached us through the
            // witness after the link came back): the peer is behind us, so outdating our disk
            // would leave no UpToDate copy at all.
            return Ok(Some(format!(
                "connected to the peer, whose disk is {}: outdating ours would leave no UpToDate copy; not outdated",
                peer.pdsk()
            )));
        }
        if self.link_ready() {
            // Connected: the request may come from a peer that lost this very link (one way
            // only, not noticed here yet), or be older than this link (it crossed a reconnect,
            // e.g. relayed by the witness). A peer that answers a ping on the link has not lost
            // it: the ping decides (the answer, or the link's loss, finishes the request).
            if self.admin.pending_outdate.is_some() {
                return Err(Refusal::ConcurrentStateChange);
            }
            // A fresh ping, answered after any ping already out (acks come back in order).
            let now = self.last_now;
            let mut acks = 1;
            if let Some(l) = self.peers.data_mut().link.as_mut() {
                if l.ping_sent.is_some() {
                    acks = 2;
                } else {
                    l.ping_sent = now;
                }
            }
            self.admin.pending_outdate = Some((id, acks));
            self.send(crate::wire::Packet::Ping);
            tracing::info!(resource = %self.cfg.resource, "the peer asks to outdate our disk while our link to it is up: checking the link with a ping first");
            return Ok(None);
        }
        if self.peers.data().link.is_some() {
            self.lose_link(
                ConnState::NetworkFailure,
                "the peer lost the connection and asks to outdate us",
                crate::core::connection::after::After::Reconnect,
            );
        }
        self.outdate_for_peer(id)
    }

    /// The peer answered the ping of a waiting outdate request on the link: it has not lost
    /// the link, so the request is older than it; not outdated.
    pub(crate) fn outdate_request_answered(&mut self) {
        if let Some((id, acks)) = self.admin.pending_outdate.take() {
            if acks > 1 {
                self.admin.pending_outdate = Some((id, acks - 1));
                if let Some(l) = self.peers.data_mut().link.as_mut() {
                    l.ping_sent = self.last_now;
                }
                return;
            }
            tracing::info!(resource = %self.cfg.resource, "the peer answers on our link: its outdate request predates this connection; not outdated");
            self.emit(Output::AdminReply {
                id,
                result: Ok("the peer answers on the link: not outdated".into()),
            });
        }
    }

    /// The link went while an outdate request waited for its ping: carry it out.
    pub(crate) fn outdate_request_after_loss(&mut self) {
        if let Some((id, _)) = self.admin.pending_outdate.take() {
            match self.outdate_for_peer(id) {
                Ok(None) => {}
                Ok(Some(msg)) => self.emit(Output::AdminReply {
                    id,
                    result: Ok(msg),
                }),
                Err(refusal) => self.emit(Output::AdminReply {
                    id,
                    result: Err(refusal),
                }),
            }
        }
    }

    /// Outdate our disk for the peer, durably; the reply follows the superblock write.
    fn outdate_for_peer(
        &mut self,
        id: crate::core::contract::io::AdminId,
    ) -> Result<Option<String>, Refusal> {
        let disk = self.st.reported_disk();
        if disk < DiskState::Outdated || self.st.disk() <= DiskState::Failed {
            return Ok(Some(format!("disk is {disk}: nothing to outdate")));
        }
        if disk == DiskState::Outdated && self.st.disk() == DiskState::Outdated {
            return Ok(Some("already Outdated".into()));
        }
        let io = self.change_state(
            ChangeSet::new()
                .disk(DiskState::Outdated)
                .why("outdated by the peer (fence-peer)")
                .persist(),
        );
        self.reply_when_durable(id, "outdated".into(), io);
        Ok(None)
    }

    /// Whether client I/O is pending anywhere (in the request table, or frozen).
    pub(crate) fn client_io_pending(&self) -> bool {
        self.requests.in_flight() > 0 || !self.freeze.is_empty()
    }
}
