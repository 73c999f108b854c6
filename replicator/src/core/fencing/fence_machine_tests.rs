//! The fencing machine on its own: when it freezes and runs the handler, what a verdict leads
//! to, and how a peer's outdate request is answered.

use super::*;

const PEER: NodeId = NodeId(1);
const ADMIN: AdminId = AdminId(9);

/// A Primary with UpToDate data that just lost a connected peer, resource-and-stonith.
fn ctx() -> Ctx<'static> {
    Ctx {
        resource: "r0",
        fencing: Fencing::ResourceAndStonith,
        role: Role::Primary,
        disk: DiskState::UpToDate,
        reported_disk: DiskState::UpToDate,
        peer: PEER,
        cstate: ConnState::Connected,
        pdsk: DiskState::UpToDate,
        susp_fen: false,
        connects: 3,
        lost_link_running: false,
        promotion_running: false,
        witness: false,
        quorum: true,
        link_ready: false,
        link_present: false,
        ping_out: false,
    }
}

/// The same node once the link is gone (WFConnection, the peer's disk unknown).
fn lost() -> Ctx<'static> {
    Ctx {
        cstate: ConnState::WFConnection,
        pdsk: DiskState::DUnknown,
        ..ctx()
    }
}

fn runs(out: &[FenceOut]) -> Vec<FencePurpose> {
    out.iter()
        .filter_map(|o| match o {
            FenceOut::Run(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn thaws(out: &[FenceOut]) -> bool {
    out.iter().any(|o| matches!(o, FenceOut::Thaw(_)))
}

/// The peer disk states the state changes of `out` ask for (a broken handler's verdict is a
/// change that asks for none).
fn pdsk_changes(out: &[FenceOut]) -> Vec<DiskState> {
    out.iter()
        .filter_map(|o| match o {
            FenceOut::Change(cs) => cs.asked_pdsk(PEER),
            _ => None,
        })
        .collect()
}

/// A verdict and what follows it, the second step on the state `after` (what the verdict's
/// change led to).
fn done(purpose: FencePurpose, exit: i32, before: &Ctx, after: &Ctx) -> Vec<FenceOut> {
    let mut out = Vec::new();
    if let Some(j) = FenceMachine::verdict(purpose, Some(exit), before, &mut out) {
        FenceMachine::after_verdict(purpose, Some(exit), j, after, &mut out);
    }
    out
}

#[test]
fn link_loss_with_resource_and_stonith_freezes_and_asks_for_the_handler() {
    let mut out = Vec::new();
    assert!(FenceMachine::on_link_loss(&ctx(), &mut out));
    assert!(matches!(out[..], [FenceOut::Freeze]), "{out:?}");
    let mut out = Vec::new();
    FenceMachine::lost_peer(&lost(), &mut out);
    assert_eq!(runs(&out), [FencePurpose::LostLink { connects: 3 }]);

    let only = Ctx {
        fencing: Fencing::ResourceOnly,
        ..ctx()
    };
    let mut out = Vec::new();
    assert!(
        FenceMachine::on_link_loss(&only, &mut out),
        "resource-only fences too"
    );
    assert!(out.is_empty(), "but does not freeze: {out:?}");

    for (why, c) in [
        (
            "dont-care",
            Ctx {
                fencing: Fencing::DontCare,
                ..ctx()
            },
        ),
        (
            "a Secondary",
            Ctx {
                role: Role::Secondary,
                ..ctx()
            },
        ),
        (
            "a peer known Outdated",
            Ctx {
                pdsk: DiskState::Outdated,
                ..ctx()
            },
        ),
        (
            "a link that never connected",
            Ctx {
                cstate: ConnState::WFReportParams,
                ..ctx()
            },
        ),
    ] {
        let mut out = Vec::new();
        assert!(!FenceMachine::on_link_loss(&c, &mut out), "{why}");
        assert!(out.is_empty(), "{why}: {out:?}");
    }
}

#[test]
fn a_second_loss_while_the_handler_runs_starts_no_second_run() {
    let mut out = Vec::new();
    let c = Ctx {
        lost_link_running: true,
        ..lost()
    };
    FenceMachine::lost_peer(&c, &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn exit_4_while_disconnected_outdates_the_peer_and_thaws() {
    let purpose = FencePurpose::LostLink { connects: 3 };
    let frozen = Ctx {
        susp_fen: true,
        ..lost()
    };
    let fenced = Ctx {
        pdsk: DiskState::Outdated,
        ..frozen
    };
    let out = done(purpose, 4, &frozen, &fenced);
    assert_eq!(pdsk_changes(&out), [DiskState::Outdated]);
    assert!(
        matches!(out.last(), Some(FenceOut::Thaw("the peer is fenced"))),
        "{out:?}"
    );
    // The log line comes before the change, the thaw after it.
    assert!(matches!(&out[0], FenceOut::Log(Level::Info, l) if l.contains("returned 4")));
}

#[test]
fn a_broken_handler_keeps_io_frozen_or_yields_to_quorum() {
    let purpose = FencePurpose::LostLink { connects: 3 };
    let frozen = Ctx {
        susp_fen: true,
        ..lost()
    };
    let out = done(purpose, 1, &frozen, &frozen);
    assert!(!thaws(&out), "{out:?}");
    assert!(
        matches!(out.last(), Some(FenceOut::Log(Level::Error, l)) if l.contains("repadm resume-io r0")),
        "{out:?}"
    );
    let no_quorum = Ctx {
        witness: true,
        quorum: false,
        ..frozen
    };
    let out = done(purpose, 1, &no_quorum, &no_quorum);
    assert!(
        matches!(out.last(), Some(FenceOut::YieldToQuorum)),
        "{out:?}"
    );
    // resource-only (nothing frozen): going on is only warned about.
    let unfrozen = Ctx {
        fencing: Fencing::ResourceOnly,
        ..lost()
    };
    let out = done(purpose, 1, &unfrozen, &unfrozen);
    assert!(
        matches!(out.last(), Some(FenceOut::Log(Level::Warn, _))),
        "{out:?}"
    );
}

#[test]
fn a_result_after_the_connection_came_back_is_ignored_and_thaws() {
    let purpose = FencePurpose::LostLink { connects: 3 };
    let back = Ctx {
        susp_fen: true,
        connects: 4,
        ..ctx()
    };
    let out = done(purpose, 4, &back, &back);
    assert!(pdsk_changes(&out).is_empty(), "no verdict applied: {out:?}");
    assert!(thaws(&out), "{out:?}");
}

#[test]
fn a_stale_result_is_ignored_and_the_current_loss_gets_its_own_run() {
    // Started at connects 3; the peer connected (4) and was lost again meanwhile.
    let purpose = FencePurpose::LostLink { connects: 3 };
    let again = Ctx {
        susp_fen: true,
        connects: 4,
        ..lost()
    };
    let mut out = Vec::new();
    assert_eq!(
        FenceMachine::verdict(purpose, Some(4), &again, &mut out),
        None
    );
    assert!(
        pdsk_changes(&out).is_empty(),
        "exit 4 is not believed: {out:?}"
    );
    assert_eq!(runs(&out), [FencePurpose::LostLink { connects: 4 }]);
    assert!(!thaws(&out));
    // The peer is known outdated by now (the handshake said so): nothing to run, thaw.
    let known = Ctx {
        pdsk: DiskState::Outdated,
        ..again
    };
    let mut out = Vec::new();
    assert_eq!(
        FenceMachine::verdict(purpose, Some(4), &known, &mut out),
        None
    );
    assert!(runs(&out).is_empty() && thaws(&out), "{out:?}");
}

#[test]
fn a_promotion_waits_for_the_verdict() {
    let secondary = Ctx {
        role: Role::Secondary,
        ..lost()
    };
    let mut out = Vec::new();
    FenceMachine::for_promotion(ADMIN, false, &secondary, &mut out);
    let purpose = FencePurpose::Promote {
        admin: ADMIN,
        force: false,
        connects: 3,
    };
    assert_eq!(runs(&out), [purpose]);

    // Outdated: promoted (the rules are checked again there).
    let fenced = Ctx {
        pdsk: DiskState::Outdated,
        ..secondary
    };
    let out = done(purpose, 4, &secondary, &fenced);
    assert!(
        matches!(
            out.last(),
            Some(FenceOut::FinishPrimary {
                admin: ADMIN,
                force: false
            })
        ),
        "{out:?}"
    );
    // Not outdated: refused with the peer's disk state.
    let out = done(purpose, 1, &secondary, &secondary);
    assert!(
        matches!(
            out.last(),
            Some(FenceOut::Reply {
                id: ADMIN,
                result: Err(Refusal::PrimaryNop {
                    pdsk: DiskState::DUnknown
                })
            })
        ),
        "{out:?}"
    );
    // Not outdated, but forced: the peer is taken as Outdated, then promoted.
    let forced = FencePurpose::Promote {
        admin: ADMIN,
        force: true,
        connects: 3,
    };
    let out = done(forced, 1, &secondary, &secondary);
    assert_eq!(pdsk_changes(&out), [DiskState::Outdated]);
    assert!(matches!(
        out.last(),
        Some(FenceOut::FinishPrimary { force: true, .. })
    ));
    // The peer came back, or came and went: decide again, the verdict unapplied.
    for c in [
        Ctx {
            cstate: ConnState::Connected,
            ..secondary
        },
        Ctx {
            connects: 4,
            ..secondary
        },
    ] {
        let out = done(purpose, 4, &c, &c);
        assert!(pdsk_changes(&out).is_empty(), "{out:?}");
        assert!(matches!(
            out.last(),
            Some(FenceOut::PromoteAgain {
                admin: ADMIN,
                force: false
            })
        ));
    }
}

fn outdate(m: &mut FenceMachine, c: &Ctx) -> (PeerOutdate, Vec<FenceOut>) {
    let mut out = Vec::new();
    let next = m.peer_outdate(ADMIN, c, &mut out);
    (next, out)
}

#[test]
fn a_node_whose_own_promotion_fence_runs_refuses_to_be_outdated() {
    let mut m = FenceMachine::default();
    let promoting = Ctx {
        role: Role::Secondary,
        promotion_running: true,
        ..lost()
    };
    let (next, out) = outdate(&mut m, &promoting);
    assert!(
        matches!(&next, PeerOutdate::Answer(Ok(Some(s))) if s.contains("our own promotion")),
        "{next:?}"
    );
    assert!(out.is_empty());
    let primary = Ctx {
        promotion_running: false,
        role: Role::Primary,
        ..promoting
    };
    assert_eq!(
        outdate(&mut m, &primary).0,
        PeerOutdate::Answer(Ok(Some("Primary: not outdated".into())))
    );
    // Without either, the disk is outdated (dropping a link still in its handshake first).
    let secondary = Ctx {
        role: Role::Secondary,
        link_present: true,
        ..lost()
    };
    let (next, out) = outdate(&mut m, &secondary);
    assert_eq!(next, PeerOutdate::Outdate);
    assert!(matches!(out[..], [FenceOut::DropLink]), "{out:?}");
}

#[test]
fn an_outdate_request_on_a_live_link_waits_for_a_ping() {
    let mut m = FenceMachine::default();
    let up = Ctx {
        role: Role::Secondary,
        link_ready: true,
        link_present: true,
        ..ctx()
    };
    let (next, out) = outdate(&mut m, &up);
    assert_eq!(next, PeerOutdate::Answer(Ok(None)));
    assert!(
        matches!(out[0], FenceOut::Ping { mark_sent: true }),
        "{out:?}"
    );
    assert_eq!(
        outdate(&mut m, &up).0,
        PeerOutdate::Answer(Err(Refusal::ConcurrentStateChange)),
        "one request at a time"
    );
    let mut out = Vec::new();
    m.ping_answered(&mut out);
    assert!(
        matches!(
            out.last(),
            Some(FenceOut::Reply {
                id: ADMIN,
                result: Ok(_)
            })
        ),
        "{out:?}"
    );
    assert_eq!(m.take_pending_outdate(), None, "answered");

    // A ping already out: its ack does not answer ours.
    let pinging = Ctx {
        ping_out: true,
        ..up
    };
    let (_, out) = outdate(&mut m, &pinging);
    assert!(
        matches!(out[0], FenceOut::Ping { mark_sent: false }),
        "{out:?}"
    );
    let mut out = Vec::new();
    m.ping_answered(&mut out);
    assert!(matches!(out[..], [FenceOut::MarkPingSent]), "{out:?}");
    // The link goes before the second ack: the request is carried out.
    assert_eq!(m.take_pending_outdate(), Some(ADMIN));
}

#[test]
fn connected_to_a_peer_behind_us_nothing_is_outdated() {
    let mut m = FenceMachine::default();
    let behind = Ctx {
        role: Role::Secondary,
        pdsk: DiskState::Inconsistent,
        link_ready: true,
        link_present: true,
        ..ctx()
    };
    let (next, out) = outdate(&mut m, &behind);
    assert!(matches!(next, PeerOutdate::Answer(Ok(Some(_)))), "{next:?}");
    assert!(out.is_empty());
}

#[test]
fn outdating_ones_own_disk_needs_a_disk_newer_than_outdated() {
    let with = |reported, disk| Ctx {
        reported_disk: reported,
        disk,
        ..ctx()
    };
    use DiskState::*;
    assert_eq!(FenceMachine::outdate_self(&with(UpToDate, UpToDate)), None);
    assert_eq!(
        FenceMachine::outdate_self(&with(Consistent, Consistent)),
        None
    );
    assert_eq!(
        FenceMachine::outdate_self(&with(Outdated, Outdated)).as_deref(),
        Some("already Outdated")
    );
    assert!(FenceMachine::outdate_self(&with(Inconsistent, Inconsistent)).is_some());
    assert!(FenceMachine::outdate_self(&with(Diskless, Diskless)).is_some());
}
