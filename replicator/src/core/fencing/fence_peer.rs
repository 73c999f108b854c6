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
//!
//! The decisions live in `FenceMachine` (fencing/fence_machine.rs); this is the engine's glue:
//! it gives the machine what it needs, applies what it asks for in order, and keeps the runs
//! in the I/O table (docs/architecture.md §4.2). Thawing frozen I/O is fencing/thaw.rs.

use crate::core::contract::io::{AdminId, Output};
use crate::core::contract::refusal::Refusal;
use crate::core::engine::Engine;
use crate::core::fencing::fence_machine::{Ctx, FenceMachine, FenceOut, Level, PeerOutdate};
use crate::core::io_table::{FencePurpose, HandlerWait, IoOwner};
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState};

impl Engine {
    /// Run handler `name` and wait for its exit status (`Input::HandlerDone`).
    pub(crate) fn run_handler(&mut self, name: &'static str, wait: HandlerWait) {
        let io = self.ios.start(IoOwner::Handler(wait));
        self.emit(Output::RunHandler { io, name });
    }

    /// Whether a fence-peer run of this kind is out.
    fn fence_runs(&self, promotion: bool) -> bool {
        self.ios.count(|o| match o {
            IoOwner::Handler(HandlerWait::Fence(p)) => {
                matches!(p, FencePurpose::Promote { .. }) == promotion
            }
            _ => false,
        }) > 0
    }

    pub(crate) fn fence_running(&self) -> bool {
        self.fence_runs(false)
    }

    /// What a fencing step needs to know, read now.
    fn fence_ctx(&self) -> Ctx<'_> {
        let peer = self.data_st();
        let link = self.peers.data().link.as_ref();
        Ctx {
            resource: &self.cfg.resource,
            fencing: self.cfg.fencing,
            role: self.st.role(),
            disk: self.st.disk(),
            reported_disk: self.st.reported_disk(),
            peer: self.data_id(),
            cstate: peer.cstate(),
            pdsk: peer.pdsk(),
            susp_fen: self.st.susp_fen(),
            connects: self.peers.data().connects,
            lost_link_running: self.fence_runs(false),
            promotion_running: self.fence_runs(true),
            witness: self.peers.witness().is_some(),
            quorum: self.st.quorum(),
            link_ready: self.link_ready(),
            link_present: link.is_some(),
            ping_out: link.is_some_and(|l| l.ping_sent.is_some()),
        }
    }

    /// Do what the fencing machine asked for, in its order.
    fn apply_fencing(&mut self, out: Vec<FenceOut>) {
        for o in out {
            match o {
                FenceOut::Log(level, line) => {
                    let res = &self.cfg.resource;
                    match level {
                        Level::Info => tracing::info!(resource = %res, "{line}"),
                        Level::Warn => tracing::warn!(resource = %res, "{line}"),
                        Level::Error => tracing::error!(resource = %res, "{line}"),
                    }
                }
                FenceOut::Freeze => {
                    let _ = self.change_state(
                        ChangeSet::new()
                            .susp_fen(true)
                            .why("fencing: I/O frozen until the fence-peer handler returns"),
                    );
                }
                FenceOut::Run(purpose) => {
                    self.run_handler("fence-peer", HandlerWait::Fence(purpose));
                }
                FenceOut::Change(cs) => {
                    let _ = self.change_state(cs);
                }
                FenceOut::Thaw(why) => self.thaw_io(why),
                FenceOut::YieldToQuorum => {
                    self.fence_yields_to_quorum();
                }
                FenceOut::PromoteAgain { admin, force } => self.promote_again(admin, force),
                FenceOut::FinishPrimary { admin, force } => self.finish_primary(admin, force, true),
                FenceOut::Reply { id, result } => self.emit(Output::AdminReply { id, result }),
                FenceOut::Ping { mark_sent } => {
                    if mark_sent {
                        let now = self.last_now;
                        if let Some(l) = self.peers.data_mut().link.as_mut() {
                            l.ping_sent = now;
                        }
                    }
                    self.send(crate::wire::Packet::Ping);
                }
                FenceOut::MarkPingSent => {
                    let now = self.last_now;
                    if let Some(l) = self.peers.data_mut().link.as_mut() {
                        l.ping_sent = now;
                    }
                }
                FenceOut::DropLink => self.lose_link(
                    ConnState::NetworkFailure,
                    "the peer lost the connection and asks to outdate us",
                    crate::core::connection::after::After::Reconnect,
                ),
            }
        }
    }

    /// Called as a link goes away, before its requests are completed: whether the peer must
    /// be fenced, and with `resource-and-stonith` I/O frozen from now on.
    pub(crate) fn fence_on_link_loss(&mut self) -> bool {
        let mut out = Vec::new();
        let fence = FenceMachine::on_link_loss(&self.fence_ctx(), &mut out);
        self.apply_fencing(out);
        fence
    }

    /// The link is gone (see `fence_on_link_loss`): outdate the peer.
    pub(crate) fn fence_lost_peer(&mut self) {
        let mut out = Vec::new();
        FenceMachine::lost_peer(&self.fence_ctx(), &mut out);
        self.apply_fencing(out);
    }

    /// `primary` waits for the peer to be outdated first.
    pub(crate) fn fence_for_promotion(&mut self, admin: AdminId, force: bool) {
        let mut out = Vec::new();
        FenceMachine::for_promotion(admin, force, &self.fence_ctx(), &mut out);
        self.apply_fencing(out);
    }

    pub(crate) fn handler_done(&mut self, wait: HandlerWait, exit: Option<i32>) {
        match wait {
            HandlerWait::Fence(purpose) => self.fence_done(purpose, exit),
            HandlerWait::BeforeResyncTarget { link } => self.before_resync_target_done(link, exit),
        }
    }

    /// A fence-peer run returned: the verdict is applied first, and what follows from it is
    /// decided on the state it left.
    fn fence_done(&mut self, purpose: FencePurpose, exit: Option<i32>) {
        let mut out = Vec::new();
        let judged = FenceMachine::verdict(purpose, exit, &self.fence_ctx(), &mut out);
        self.apply_fencing(out);
        if let Some(judged) = judged {
            let mut out = Vec::new();
            FenceMachine::after_verdict(purpose, exit, judged, &self.fence_ctx(), &mut out);
            self.apply_fencing(out);
        }
    }

    /// The peer (its repd, over the network) asks us to outdate ourselves (`FenceMachine::
    /// peer_outdate`).
    pub(crate) fn cmd_peer_outdate(&mut self, id: AdminId) -> Result<Option<String>, Refusal> {
        // The machine is taken out while the context borrows the engine (it holds no
        // reference back).
        let mut fence = std::mem::take(&mut self.fence);
        let mut out = Vec::new();
        let next = fence.peer_outdate(id, &self.fence_ctx(), &mut out);
        self.fence = fence;
        self.apply_fencing(out);
        match next {
            PeerOutdate::Answer(answer) => answer,
            PeerOutdate::Outdate => self.outdate_for_peer(id),
        }
    }

    /// A PingAck came: it may answer the ping of a waiting outdate request.
    pub(crate) fn outdate_request_answered(&mut self) {
        let mut out = Vec::new();
        self.fence.ping_answered(&mut out);
        self.apply_fencing(out);
    }

    /// The link went while an outdate request waited for its ping: carry it out.
    pub(crate) fn outdate_request_after_loss(&mut self) {
        if let Some(id) = self.fence.take_pending_outdate() {
            let result = self.outdate_for_peer(id);
            self.reply_unless_deferred(id, result);
        }
    }

    /// Outdate our disk for the peer, durably; the reply follows the superblock write.
    fn outdate_for_peer(&mut self, id: AdminId) -> Result<Option<String>, Refusal> {
        if let Some(answer) = FenceMachine::outdate_self(&self.fence_ctx()) {
            return Ok(Some(answer));
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
}
