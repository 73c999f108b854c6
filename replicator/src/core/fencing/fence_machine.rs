//! Fencing as a machine of its own (docs/drbd-semantics.md §4, §9; docs/architecture.md §9.3):
//! whether a lost peer must be fenced and I/O frozen for it, what a fence-peer verdict means for
//! the lost link or the `primary` that waited for it, and how a peer's request to outdate this
//! node is answered (refused, checked with a ping first, or carried out). It holds the one piece
//! of fencing state that is not a fence-peer run: the peer's outdate request waiting for its
//! ping. It touches neither the state, the link nor the handlers: each step takes what it needs
//! (`Ctx`) and pushes its effects (`FenceOut`) in the order they must happen; the engine applies
//! them (fencing/fence_peer.rs).
//!
//! The runs themselves (what each waits for, and the handshake count it was started at) stay
//! in the engine's I/O table (`HandlerWait::Fence`), which is how every operation the driver
//! completes finds its owner again (docs/architecture.md §4.2); the machine is told whether one
//! is out (`Ctx::lost_link_running`, `Ctx::promotion_running`) and is given the purpose back
//! when it returns.

use crate::core::contract::ids::{AdminId, NodeId};
use crate::core::contract::refusal::Refusal;
use crate::core::io_table::FencePurpose;
use crate::core::policy::fence_result::fence_result;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::promotion::peer_known_outdated;
use crate::core::state::{ConnState, DiskState, Role};
use rep_resources::Fencing;

/// What a step needs to know about the engine, read when the input arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The resource's name, for the log lines.
    pub(crate) resource: &'a str,
    pub(crate) fencing: Fencing,
    pub(crate) role: Role,
    pub(crate) disk: DiskState,
    /// The disk state this node reports (Negotiating during a handshake).
    pub(crate) reported_disk: DiskState,
    /// The data peer's node id and what we know of it.
    pub(crate) peer: NodeId,
    pub(crate) cstate: ConnState,
    pub(crate) pdsk: DiskState,
    /// Application I/O is frozen by fencing.
    pub(crate) susp_fen: bool,
    /// Links established with the peer so far (DRBD's `connect_cnt`).
    pub(crate) connects: u64,
    /// A fence-peer run for a lost link is out.
    pub(crate) lost_link_running: bool,
    /// A fence-peer run for our own `primary` is out.
    pub(crate) promotion_running: bool,
    /// A witness is configured, and whether this node has quorum.
    pub(crate) witness: bool,
    pub(crate) quorum: bool,
    /// The link to the peer has finished its handshake; a link (in handshake or ready) exists;
    /// a ping is out on it.
    pub(crate) link_ready: bool,
    pub(crate) link_present: bool,
    pub(crate) ping_out: bool,
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Warn,
    Error,
}

/// What the engine does for the machine, in order.
#[derive(Debug)]
pub(crate) enum FenceOut {
    Log(Level, String),
    /// Freeze application I/O until the handler returns (resource-and-stonith).
    Freeze,
    /// Run the fence-peer handler for this purpose.
    Run(FencePurpose),
    /// Change the state (a verdict; `primary --force` outdating the peer).
    Change(ChangeSet),
    /// Let frozen I/O go, saying why.
    Thaw(&'static str),
    /// Quorum is gone as well: `on-no-quorum` decides the frozen I/O (`fence_yields_to_quorum`).
    YieldToQuorum,
    /// A waiting `primary` decides again as if just given.
    PromoteAgain {
        admin: AdminId,
        force: bool,
    },
    /// A waiting `primary` goes on: the peer is fenced (or forced to be).
    FinishPrimary {
        admin: AdminId,
        force: bool,
    },
    Reply {
        id: AdminId,
        result: Result<String, Refusal>,
    },
    /// Send a ping on the link; `mark_sent`: it is the one the link's liveness waits for now.
    Ping {
        mark_sent: bool,
    },
    /// The link's liveness waits for the next PingAck again (no new ping is sent).
    MarkPingSent,
    /// Drop the link still believed in: the peer lost it.
    DropLink,
}

/// What a returned run's verdict left for the second step (`after_verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Judged {
    connected: bool,
    stale: bool,
}

/// How a peer's outdate request goes on once the effects are applied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PeerOutdate {
    /// The answer, now (`Ok(None)`: it follows later).
    Answer(Result<Option<String>, Refusal>),
    /// Outdate our disk for the peer (`outdate_self` says whether there is anything to do).
    Outdate,
}

/// Fencing's own state.
#[derive(Debug, Default)]
pub(crate) struct FenceMachine {
    /// A peer's outdate request that arrived while the link is up, and the PingAcks still to
    /// come before the one answering the ping sent for it (`peer_outdate`).
    pending_outdate: Option<(AdminId, u8)>,
}

impl FenceMachine {
    /// Called as a link goes away, before its requests are completed: whether the peer must
    /// be fenced, and with `resource-and-stonith` I/O frozen from now on.
    pub(crate) fn on_link_loss(ctx: &Ctx, out: &mut Vec<FenceOut>) -> bool {
        let fence = ctx.fencing != Fencing::DontCare
            && ctx.role == Role::Primary
            && ctx.cstate >= ConnState::Connected
            && !peer_known_outdated(ctx.pdsk);
        if fence && ctx.fencing == Fencing::ResourceAndStonith {
            out.push(FenceOut::Freeze);
        }
        fence
    }

    /// The link is gone (see `on_link_loss`): outdate the peer, unless a run for an earlier
    /// loss is still out (its result decides for this one too, or is found stale).
    pub(crate) fn lost_peer(ctx: &Ctx, out: &mut Vec<FenceOut>) {
        if !ctx.lost_link_running {
            out.push(FenceOut::Run(FencePurpose::LostLink {
                connects: ctx.connects,
            }));
        }
    }

    /// `primary` waits for the peer to be outdated first.
    pub(crate) fn for_promotion(admin: AdminId, force: bool, ctx: &Ctx, out: &mut Vec<FenceOut>) {
        out.push(FenceOut::Run(FencePurpose::Promote {
            admin,
            force,
            connects: ctx.connects,
        }));
    }

    /// A run returned with `exit`: the first step, what the exit code says (the state change
    /// it asks for). `None`: the run was a stale one for a lost link and this step did all
    /// there is; otherwise the engine applies the effects and calls `after_verdict` with the
    /// state they left.
    pub(crate) fn verdict(
        purpose: FencePurpose,
        exit: Option<i32>,
        ctx: &Ctx,
        out: &mut Vec<FenceOut>,
    ) -> Option<Judged> {
        let connected = ctx.cstate >= ConnState::Connected;
        let stale = match purpose {
            FencePurpose::LostLink { connects } | FencePurpose::Promote { connects, .. } => {
                connects != ctx.connects
            }
        };
        if stale && !connected && matches!(purpose, FencePurpose::LostLink { .. }) {
            Self::stale(exit, ctx, out);
            return None;
        }
        if connected {
            out.push(FenceOut::Log(
                Level::Info,
                format!("fence-peer returned {exit:?}, but the connection is back: result ignored"),
            ));
        } else if stale {
            out.push(FenceOut::Log(Level::Info, format!("fence-peer returned {exit:?} for an earlier connection: result ignored, `primary` decides again")));
        } else {
            let (cs, why) = fence_result(ctx.peer, exit, ctx.disk, ctx.fencing);
            // Logged here as well: a result that changes nothing (a broken handler, exit 5
            // without UpToDate data) leaves no state-change line to carry it.
            out.push(FenceOut::Log(Level::Info, why.clone()));
            out.push(FenceOut::Change(cs.why(why)));
        }
        Some(Judged { connected, stale })
    }

    /// The second step of a returned run, on the state the verdict left: thaw or stay frozen
    /// (a lost link), promote or refuse (a waiting `primary`).
    pub(crate) fn after_verdict(
        purpose: FencePurpose,
        exit: Option<i32>,
        judged: Judged,
        ctx: &Ctx,
        out: &mut Vec<FenceOut>,
    ) {
        let Judged { connected, stale } = judged;
        let fenced = peer_known_outdated(ctx.pdsk);
        match purpose {
            FencePurpose::LostLink { .. } => {
                if !ctx.susp_fen {
                    if !fenced && !connected {
                        out.push(FenceOut::Log(Level::Warn, format!("could not outdate the peer ({exit:?}); going on without it (fencing resource-only): a node promoted on the other side would miss the writes from now on")));
                    }
                } else if fenced || connected {
                    out.push(FenceOut::Thaw("the peer is fenced"));
                } else if ctx.witness && !ctx.quorum {
                    out.push(FenceOut::YieldToQuorum);
                } else {
                    let res = ctx.resource;
                    out.push(FenceOut::Log(Level::Error, format!("could not outdate the peer ({exit:?}); I/O stays frozen (fencing resource-and-stonith) until `repadm resume-io {res}`")));
                }
            }
            FencePurpose::Promote { admin, force, .. } => {
                if connected || stale {
                    // The peer is back (it may object now), or came and went again (what the
                    // handler did predates that connection): decide as for a new `primary`.
                    out.push(FenceOut::PromoteAgain { admin, force });
                } else if fenced {
                    out.push(FenceOut::FinishPrimary { admin, force });
                } else if force {
                    out.push(FenceOut::Log(
                        Level::Warn,
                        "Forced into split brain situation!".into(),
                    ));
                    out.push(FenceOut::Change(
                        ChangeSet::new()
                            .pdsk(ctx.peer, DiskState::Outdated)
                            .why("primary --force with the peer not outdated"),
                    ));
                    out.push(FenceOut::FinishPrimary { admin, force });
                } else {
                    out.push(FenceOut::Reply {
                        id: admin,
                        result: Err(Refusal::PrimaryNop { pdsk: ctx.pdsk }),
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
    fn stale(exit: Option<i32>, ctx: &Ctx, out: &mut Vec<FenceOut>) {
        out.push(FenceOut::Log(Level::Info, format!("fence-peer returned {exit:?} for an earlier connection (the peer connected and was lost again while it ran): result ignored")));
        let still_needed = ctx.fencing != Fencing::DontCare
            && ctx.role == Role::Primary
            && !peer_known_outdated(ctx.pdsk);
        if still_needed {
            Self::lost_peer(ctx, out);
        } else if ctx.susp_fen {
            out.push(FenceOut::Thaw("the peer is fenced"));
        }
    }

    /// The peer (its repd, over the network) asks us to outdate ourselves: it lost the
    /// connection and runs fence-peer. A Primary refuses (the peer learns it from our role);
    /// a link we still believe in is checked with a ping first, or dropped first (the peer no
    /// longer has it).
    pub(crate) fn peer_outdate(
        &mut self,
        id: AdminId,
        ctx: &Ctx,
        out: &mut Vec<FenceOut>,
    ) -> PeerOutdate {
        let answer = |s: String| PeerOutdate::Answer(Ok(Some(s)));
        if ctx.role == Role::Primary {
            return answer("Primary: not outdated".into());
        }
        if ctx.promotion_running {
            // Both nodes asked to outdate the other at once (each to be promoted, through the
            // witness, which relays one request at a time): the request relayed first loses,
            // so exactly one node is promoted (docs/quorum.md, "Losing the data link").
            return answer("our own promotion is outdating the peer: not outdated".into());
        }
        if ctx.cstate >= ConnState::Connected && ctx.pdsk < DiskState::UpToDate {
            // A request that predates the connection we have now (it reached us through the
            // witness after the link came back): the peer is behind us, so outdating our disk
            // would leave no UpToDate copy at all.
            return answer(format!(
                "connected to the peer, whose disk is {}: outdating ours would leave no UpToDate copy; not outdated",
                ctx.pdsk
            ));
        }
        if ctx.link_ready {
            // Connected: the request may come from a peer that lost this very link (one way
            // only, not noticed here yet), or be older than this link (it crossed a reconnect,
            // e.g. relayed by the witness). A peer that answers a ping on the link has not lost
            // it: the ping decides (the answer, or the link's loss, finishes the request).
            if self.pending_outdate.is_some() {
                return PeerOutdate::Answer(Err(Refusal::ConcurrentStateChange));
            }
            // A fresh ping, answered after any ping already out (acks come back in order).
            let acks = if ctx.ping_out { 2 } else { 1 };
            self.pending_outdate = Some((id, acks));
            out.push(FenceOut::Ping {
                mark_sent: !ctx.ping_out,
            });
            out.push(FenceOut::Log(Level::Info, "the peer asks to outdate our disk while our link to it is up: checking the link with a ping first".into()));
            return PeerOutdate::Answer(Ok(None));
        }
        if ctx.link_present {
            out.push(FenceOut::DropLink);
        }
        PeerOutdate::Outdate
    }

    /// A PingAck came: if it answers the ping of a waiting outdate request, the peer has not
    /// lost the link, so the request is older than it; not outdated.
    pub(crate) fn ping_answered(&mut self, out: &mut Vec<FenceOut>) {
        let Some((id, acks)) = self.pending_outdate.take() else {
            return;
        };
        if acks > 1 {
            self.pending_outdate = Some((id, acks - 1));
            out.push(FenceOut::MarkPingSent);
            return;
        }
        out.push(FenceOut::Log(Level::Info, "the peer answers on our link: its outdate request predates this connection; not outdated".into()));
        out.push(FenceOut::Reply {
            id,
            result: Ok("the peer answers on the link: not outdated".into()),
        });
    }

    /// The link went: the outdate request that waited for its ping, to be carried out now.
    pub(crate) fn take_pending_outdate(&mut self) -> Option<AdminId> {
        self.pending_outdate.take().map(|(id, _)| id)
    }

    /// Whether our disk is to be outdated for the peer (`None`), or the answer why not.
    pub(crate) fn outdate_self(ctx: &Ctx) -> Option<String> {
        let disk = ctx.reported_disk;
        if disk < DiskState::Outdated || ctx.disk <= DiskState::Failed {
            return Some(format!("disk is {disk}: nothing to outdate"));
        }
        if disk == DiskState::Outdated && ctx.disk == DiskState::Outdated {
            return Some("already Outdated".into());
        }
        None
    }
}

#[cfg(test)]
#[path = "fence_machine_tests.rs"]
mod tests;
