//! Targeted scenarios: verify, a link lost while idle, failing disks, out-of-sync bits that
//! must be settled or shown, a clean close, the resync rate limit.

use std::time::Duration;

use crate::harness::{
    admin, cfg_c, connect, connected_pair, converge, demote, describe, drain, for_seeds, ms,
    synced_pair, verify, wait, write_for, write_without_errors, DEVICE, MIB,
};
use rep_replicator::core::{AdminCmd, ConnState, DiskState, Refusal, Role};
use rep_replicator::sim::config::SimConfig;
use rep_resources::{DigestAlg, Protocol};

#[test]
fn verify_finds_a_flipped_block_and_a_reconnect_repairs_it() {
    for (seed, csums) in [
        (1u64, None),
        (2, Some(DigestAlg::Sha1)),
        (3, Some(DigestAlg::Crc32c)),
    ] {
        let mut cfg = cfg_c();
        cfg.csums_alg = csums;
        let mut c = synced_pair(seed, cfg);
        write_for(&mut c, ms(100));
        converge(&mut c, 0).unwrap();
        assert_eq!(verify(&mut c, 0).unwrap(), 0);
        c.corrupt(1, 77);
        assert_eq!(verify(&mut c, 0).unwrap(), 1, "exactly the flipped block");
        assert_eq!(c.nodes[0].engine.oos_kib(), 4);
        assert!(
            c.check_data().is_err(),
            "the corruption is real until resynced"
        );
        // DRBD's recipe: disconnect/connect resyncs what verify found.
        c.admin(1, AdminCmd::Disconnect { force: false })
            .expect("disconnect");
        connect(&mut c, 1).unwrap();
        converge(&mut c, 0).unwrap();
        assert_eq!(verify(&mut c, 0).unwrap(), 0);
    }
}

/// A link lost after the Primary went idle marks nothing out of sync: the open epoch was closed
/// by the idle barrier and acknowledged, so no write is left in the transfer log.
#[test]
fn a_link_lost_while_idle_marks_nothing_out_of_sync() {
    for seed in 0..8u64 {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(50));
        drain(&mut c, 0).unwrap();
        c.run_for(ms(100));
        c.admin(1, AdminCmd::Disconnect { force: false })
            .expect("disconnect");
        c.run_for(ms(50));
        assert_eq!(c.nodes[0].engine.cstate(), ConnState::WFConnection);
        assert_eq!(
            c.nodes[0].engine.oos_kib(),
            0,
            "seed {seed}: acknowledged, barrier-acked writes were marked out of sync"
        );
    }
}

/// The Primary's disk fails under a write load (on-io-error detach): no client request fails,
/// the node goes Diskless and serves through the peer, and once the disk is healed, the node
/// demoted and the disk re-attached, the pair converges with every acknowledged write.
#[test]
fn a_failing_primary_disk_costs_the_clients_nothing() {
    for_seeds("failing Primary disk", 0..12, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(50));
        c.set_disk_failing(0, true);
        write_without_errors(&mut c, 0, ms(200))?;
        assert_eq!(c.nodes[0].engine.disk(), DiskState::Diskless);
        assert_eq!(c.nodes[0].engine.role(), Role::Primary);
        assert!(c.nodes[1].engine.oos_kib() > 0, "node-b tracks the writes");
        converge(&mut c, 0).map(|_| ())
    });
}

/// The Secondary's disk fails under the Primary's writes: the Secondary detaches, the Primary
/// keeps serving and marks what the peer misses; the healed, re-attached disk resyncs.
#[test]
fn a_failing_secondary_disk_is_detached_and_resynced_after_reattach() {
    for_seeds("failing Secondary disk", 0..12, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        c.set_disk_failing(1, true);
        write_without_errors(&mut c, 0, ms(200))?;
        assert_eq!(c.nodes[1].engine.disk(), DiskState::Diskless);
        assert_eq!(c.nodes[0].engine.pdsk(), DiskState::Diskless);
        converge(&mut c, 0).map(|_| ())
    });
}

/// A SyncTarget's disk fails in the middle of the initial full sync: the link restarts without
/// it, the Primary keeps serving, and the healed disk finishes the sync after re-attach.
#[test]
fn a_disk_failing_during_the_resync_restarts_it_after_reattach() {
    for_seeds("disk failing during resync", 0..8, |seed| {
        let mut cfg = cfg_c();
        cfg.resync_rate_kib = 20 * 1024;
        let mut c = connected_pair(seed, cfg);
        c.admin(0, AdminCmd::Primary { force: true })
            .expect("primary");
        write_for(&mut c, ms(3));
        assert_eq!(c.nodes[1].engine.cstate(), ConnState::SyncTarget);
        c.set_disk_failing(1, true);
        write_without_errors(&mut c, 0, ms(100))?;
        wait(&mut c, "node-b Diskless", Duration::from_secs(10), |c| {
            c.nodes[1].engine.disk() == DiskState::Diskless
        })?;
        // No resync state is left behind with a disk that is gone.
        wait(
            &mut c,
            "both to leave the resync",
            Duration::from_secs(10),
            |c| {
                c.nodes
                    .iter()
                    .all(|n| n.engine.cstate() == ConnState::Connected)
            },
        )?;
        converge(&mut c, 0).map(|_| ())
    });
}

// ---- no silent "UpToDate with bits" (issue 19, item 3) ----

/// `invalidate` / `invalidate-remote` need a connection, as in DRBD (SS_NEED_CONNECTION):
/// only the offline forms stay (invalidate on a StandAlone Secondary, invalidate-remote on a
/// StandAlone Primary), whose next handshake resyncs by disk state or generation.
#[test]
fn invalidate_without_a_connection_is_refused() {
    for_seeds("invalidate needs a connection", 0..3, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(50));
        converge(&mut c, 0)?;
        let need_connection = |r: Result<String, Refusal>, what: &str| match r {
            Err(e @ Refusal::NeedConnection { .. }) if e.code() == -15 && e.exit_code() == 11 => {
                Ok(())
            }
            other => Err(format!(
                "{what}: {other:?}, expected (-15) Need a connection"
            )),
        };
        admin(&mut c, 1, AdminCmd::Disconnect { force: false })?;
        need_connection(
            c.admin(1, AdminCmd::InvalidateRemote),
            "invalidate-remote on a StandAlone Secondary",
        )?;
        // Waiting for a peer that cannot come: WFConnection on both sides.
        c.set_cut(true);
        connect(&mut c, 1)?;
        c.run_for(ms(50));
        need_connection(
            c.admin(1, AdminCmd::Invalidate),
            "invalidate in WFConnection",
        )?;
        need_connection(
            c.admin(1, AdminCmd::InvalidateRemote),
            "invalidate-remote in WFConnection",
        )?;
        need_connection(
            c.admin(0, AdminCmd::InvalidateRemote),
            "invalidate-remote on a Primary in WFConnection",
        )?;
        if c.nodes[1].engine.oos_kib() != 0 {
            return Err("a refused invalidate set bits".into());
        }
        c.set_cut(false);
        converge(&mut c, 0)?;
        // Connected, both still work: a full sync each way.
        admin(&mut c, 0, AdminCmd::InvalidateRemote)?;
        converge(&mut c, 0)?;
        admin(&mut c, 1, AdminCmd::Invalidate)?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// A demoted node that stops uncleanly comes back with its hot activity-log extents marked out
/// of sync while the generations are equal (its peer, a Secondary, started none). DRBD's rule
/// 40 says "no resync" and only logs the bits; rep shows them in status on both nodes with the
/// command that settles them, and that command repairs them. Without the notice the simulator's
/// bits invariant fails this schedule.
#[test]
fn equal_generations_with_bits_are_reported_and_settled_by_invalidate() {
    for_seeds("equal generations with bits", 0..4, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_without_errors(&mut c, 0, ms(200))?;
        demote(&mut c, 0)?;
        c.fault("power loss: a demoted node");
        c.crash(0);
        c.run_for(ms(20));
        c.restart(0).map_err(|e| e.to_string())?;
        wait(&mut c, "the handshake", Duration::from_secs(10), |c| {
            c.nodes
                .iter()
                .all(|n| n.engine.cstate() >= ConnState::Connected)
        })?;
        // Past the invariant's window (BITS_SETTLE_TIME): whatever the handshake did has
        // happened, and the invariant has looked.
        c.run_for(ms(1500));
        let (a, b) = (&c.nodes[0].engine, &c.nodes[1].engine);
        if a.uuids().current & !1 != b.uuids().current & !1 {
            return Err("the generations differ: not the case under test".into());
        }
        if a.oos_kib() == 0 {
            return Err("the unclean stop marked nothing: not the case under test".into());
        }
        for (i, e) in [a, b].into_iter().enumerate() {
            let notice = e.oos_notice().unwrap_or_default();
            if !notice.contains("repadm invalidate r0") {
                return Err(format!("node {i} does not tell the operator: {notice:?}"));
            }
        }
        // The operator overwrites the node that stopped uncleanly (its cache may have lost
        // writes its peer holds).
        admin(&mut c, 0, AdminCmd::Invalidate)?;
        converge(&mut c, 1)?;
        for (i, n) in c.nodes.iter().enumerate() {
            if n.engine.oos_kib() != 0 || n.engine.oos_notice().is_some() {
                return Err(format!(
                    "node {i} still has bits or a notice: {}",
                    describe(&c)
                ));
            }
        }
        if verify(&mut c, 1)? != 0 {
            return Err("verify after the resync found blocks out of sync".into());
        }
        Ok(())
    });
}

/// A disk closed while epochs still wait for the peer's BarrierAck is not clean: those writes
/// may exist only in the peer's volatile cache, and the activity log must be replayed on the
/// next attach. Protocol A completes writes locally; the peer's acks are held back by a one-way
/// partition, so the epochs are certainly unacknowledged at the detach.
#[test]
fn a_disk_closed_with_unacked_epochs_is_not_clean() {
    for_seeds("close with unacked epochs", 0..4, |seed| {
        let mut c = synced_pair(seed, SimConfig::new(Protocol::A, DEVICE));
        write_for(&mut c, ms(30));
        drain(&mut c, 0)?;
        c.run_for(ms(100));
        c.set_one_way(1, true);
        // Plain writes (a FLUSH would wait for the held BarrierAck).
        for k in 0..8u64 {
            c.write_at(0, (k * 37 + seed) % 64 * MIB / 4, 64 << 10, false);
        }
        drain(&mut c, 0)?;
        // Idle past the epoch age: the open epoch is closed, its ack held.
        c.run_for(ms(30));
        if c.nodes[0].engine.counters().ep == 0
            || c.nodes[0].engine.cstate() != ConnState::Connected
        {
            return Err(format!("no epoch waits for its ack: {}", describe(&c)));
        }
        admin(&mut c, 0, AdminCmd::Detach { force: false })?;
        if c.superblock_clean(0)? {
            return Err("the disk was marked clean with epochs unacknowledged".into());
        }
        c.set_one_way(1, false);
        c.run_for(ms(50));
        demote(&mut c, 0)?;
        admin(&mut c, 0, AdminCmd::Attach)?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// issue 24 §3: under a fixed `resync-rate` both sides name it as the limit, the current rate
/// is about that rate, and `pause-sync` turns the limit into `paused`.
#[test]
fn a_fixed_resync_rate_is_named_as_the_limit_on_both_sides() {
    use rep_replicator::core::Limit;
    for_seeds("resync limit", 0..3, |seed| {
        let mut cfg = cfg_c();
        cfg.resync_rate_kib = 4 * 1024;
        let mut c = connected_pair(seed, cfg);
        c.admin(0, AdminCmd::Primary { force: true })
            .expect("primary");
        c.run_for(Duration::from_secs(4));
        for (i, side) in [(0, "SyncSource"), (1, "SyncTarget")] {
            let info = c.nodes[i]
                .engine
                .resync_info()
                .ok_or(format!("{side}: no resync"))?;
            let by = info.limit.as_ref().map(|l| l.by);
            if by != Some(Limit::ResyncRate) {
                return Err(format!("{side}: limit {by:?}, want resync-rate ({info:?})"));
            }
            let kib = info.current_kib.unwrap_or(0);
            if !(3000..=5200).contains(&kib) {
                return Err(format!(
                    "{side}: current rate {kib} KiB/s at resync-rate 4M"
                ));
            }
        }
        c.admin(1, AdminCmd::PauseSync).expect("pause-sync");
        c.run_for(Duration::from_secs(2));
        let by = c.nodes[1]
            .engine
            .resync_info()
            .and_then(|i| i.limit)
            .map(|l| l.by);
        if by != Some(Limit::Paused) {
            return Err(format!("paused: limit {by:?}"));
        }
        c.admin(1, AdminCmd::ResumeSync).expect("resume-sync");
        converge(&mut c, 0).map(|_| ())
    });
}

/// Quorum with fencing (a Pacemaker setup that also turns quorum on): a partition takes the
/// Primary's quorum, and its fence-peer handler, outdating the peer, gives it back (an Outdated
/// peer leaves the count, as in DRBD 9): I/O goes on without errors; the outdated peer may not be
/// promoted; healed, the pair converges.
#[test]
fn fencing_that_outdates_the_peer_gives_the_primary_its_quorum_back() {
    use rep_resources::quorum::{OnNoQuorum, QuorumConf};
    for_seeds("quorum with fencing", 0..8, |seed| {
        let mut cfg = cfg_c();
        cfg.fencing = rep_resources::Fencing::ResourceOnly;
        cfg.quorum = QuorumConf::majority(OnNoQuorum::IoError);
        let mut c = synced_pair(seed, cfg);
        write_for(&mut c, ms(50));
        c.set_cut(true);
        wait(&mut c, "the peer fenced", Duration::from_secs(10), |c| {
            c.nodes[0].engine.pdsk() == DiskState::Outdated
        })?;
        if !c.nodes[0].engine.quorum() {
            return Err(format!(
                "no quorum with the peer Outdated: {}",
                describe(&c)
            ));
        }
        drain(&mut c, 0)?;
        let failed = c.nodes[0].failed_replies;
        write_for(&mut c, ms(200));
        drain(&mut c, 0)?;
        if c.nodes[0].failed_replies != failed {
            return Err(format!(
                "{} requests failed after fencing restored quorum",
                c.nodes[0].failed_replies - failed
            ));
        }
        match c.admin(1, AdminCmd::Primary { force: false }) {
            Err(Refusal::NoQuorum { .. } | Refusal::NoUpToDateDisk { .. }) => {}
            other => return Err(format!("the fenced peer was not refused: {other:?}")),
        }
        c.set_cut(false);
        converge(&mut c, 0).map(|_| ())
    });
}
