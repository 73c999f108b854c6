//! The faults a seeded schedule draws from, with and without fencing.

use std::time::Duration;

use crate::harness::{
    admin, connect, demote, drain, in_sync, ms, one_in, promote, rand, wait, write_for, R,
};
use rep_replicator::core::rng::Rng;
use rep_replicator::core::{AdminCmd, ConnState, DiskState, Refusal};
use rep_replicator::sim::cluster::Cluster;
use rep_resources::Protocol;

// ---- faults: each starts from a converged cluster with Primary `p`, returns who should be
// Primary after healing ----

pub(crate) type Fault = fn(&mut Cluster, &mut Rng, usize) -> R<usize>;

pub(crate) fn partition(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("partition");
    c.set_cut(true);
    write_for(c, ms(rand(rng, 800, 1600)));
    c.set_cut(false);
    Ok(p)
}

pub(crate) fn short_partition(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    // Shorter than the ping timeout: frames arrive late, nothing is lost (TCP).
    c.fault("short partition");
    c.set_cut(true);
    write_for(c, ms(rand(rng, 20, 400)));
    c.set_cut(false);
    Ok(p)
}

pub(crate) fn one_way(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let from = (rng.next_u64() % 2) as usize;
    c.fault(if from == p {
        "one-way partition (Primary's frames lost)"
    } else {
        "one-way partition (Secondary's frames lost)"
    });
    c.set_one_way(from, true);
    write_for(c, ms(rand(rng, 800, 1600)));
    c.set_one_way(from, false);
    Ok(p)
}

pub(crate) fn crash_secondary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("power loss: Secondary");
    c.crash(1 - p);
    write_for(c, ms(rand(rng, 50, 400)));
    c.restart(1 - p).map_err(|e| e.to_string())?;
    Ok(p)
}

/// The Primary dies. Its peer takes over if it may (protocol C: only if it held everything the
/// Primary acknowledged, as fencing would ensure; A and B: whenever its disk is UpToDate, losing
/// what was in flight), otherwise the old Primary comes back.
pub(crate) fn crash_primary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let s = 1 - p;
    let entitled = if c.protocol() == Protocol::C {
        in_sync(c)
    } else {
        c.nodes[s].engine.disk() == DiskState::UpToDate
    };
    c.fault("power loss: Primary");
    c.crash(p);
    c.run_for(ms(rand(rng, 1, 30)));
    if entitled && !one_in(rng, 4) {
        c.fault("failover");
        promote(c, s)?;
        write_for(c, ms(rand(rng, 100, 300)));
        c.restart(p).map_err(|e| e.to_string())?;
        return Ok(s);
    }
    c.restart(p).map_err(|e| e.to_string())?;
    promote(c, p)?;
    Ok(p)
}

pub(crate) fn crash_both(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("power loss: both at once");
    c.crash(p);
    c.crash(1 - p);
    c.run_for(ms(rand(rng, 1, 50)));
    let first = (rng.next_u64() % 2) as usize;
    c.restart(first).map_err(|e| e.to_string())?;
    c.restart(1 - first).map_err(|e| e.to_string())?;
    promote(c, p)?;
    Ok(p)
}

pub(crate) fn crash_one_after_the_other(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let s = 1 - p;
    if one_in(rng, 2) {
        c.fault("power loss: Secondary, then Primary");
        c.crash(s);
        write_for(c, ms(rand(rng, 20, 300)));
        c.crash(p);
        c.run_for(ms(5));
        c.restart(p).map_err(|e| e.to_string())?;
        c.restart(s).map_err(|e| e.to_string())?;
        promote(c, p)?;
        return Ok(p);
    }
    c.fault("power loss: Primary, then Secondary");
    let entitled = c.protocol() != Protocol::C || in_sync(c);
    let failover = entitled && c.nodes[s].engine.disk() == DiskState::UpToDate && one_in(rng, 2);
    c.crash(p);
    c.run_for(ms(rand(rng, 1, 20)));
    let newest = if failover {
        c.fault("failover");
        promote(c, s)?;
        write_for(c, ms(rand(rng, 20, 300)));
        s
    } else {
        p
    };
    c.crash(s);
    c.run_for(ms(5));
    c.restart(s).map_err(|e| e.to_string())?;
    c.restart(p).map_err(|e| e.to_string())?;
    promote(c, newest)?;
    Ok(newest)
}

/// Make a resync happen, then lose power on the target, the source or both in the middle.
pub(crate) fn crash_during_resync(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let s = 1 - p;
    admin(c, s, AdminCmd::Disconnect { force: false })?;
    write_for(c, ms(rand(rng, 100, 400)));
    connect(c, s)?;
    wait(c, "the resync to start", Duration::from_secs(10), |c| {
        c.nodes[p].engine.cstate() == ConnState::SyncSource
            || c.nodes[p].engine.cstate() == ConnState::Connected && c.settled()
    })?;
    write_for(c, ms(rand(rng, 0, 20)));
    if !c.nodes[p].engine.cstate().is_sync() {
        c.fault("resync finished too fast to crash in it");
        return Ok(p);
    }
    match rng.next_u64() % 3 {
        0 => {
            c.fault("power loss during resync: SyncTarget");
            c.crash(s);
            write_for(c, ms(rand(rng, 10, 100)));
            c.restart(s).map_err(|e| e.to_string())?;
        }
        1 => {
            c.fault("power loss during resync: SyncSource");
            c.crash(p);
            c.run_for(ms(rand(rng, 1, 50)));
            c.restart(p).map_err(|e| e.to_string())?;
            promote(c, p)?;
        }
        _ => {
            c.fault("power loss during resync: both");
            c.crash(p);
            c.crash(s);
            c.restart(s).map_err(|e| e.to_string())?;
            c.restart(p).map_err(|e| e.to_string())?;
            promote(c, p)?;
        }
    }
    Ok(p)
}

pub(crate) fn crash_during_verify(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    if !in_sync(c) {
        return Ok(p);
    }
    admin(c, p, AdminCmd::Verify)?;
    write_for(c, ms(rand(rng, 0, 15)));
    let victim = either_node(
        c,
        rng,
        p,
        [
            "power loss during verify: VerifyS",
            "power loss during verify: VerifyT",
        ],
    );
    c.crash(victim);
    back_after(c, rng, victim, p, 50)
}

/// `victim` (down) comes back after 1 to `max_ms` ms; if it was the Primary `p`, it is promoted
/// again. The Primary afterwards.
fn back_after(c: &mut Cluster, rng: &mut Rng, victim: usize, p: usize, max_ms: u64) -> R<usize> {
    c.run_for(ms(rand(rng, 1, max_ms)));
    c.restart(victim).map_err(|e| e.to_string())?;
    if victim == p {
        promote(c, p)?;
    }
    Ok(p)
}

pub(crate) fn detach_secondary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let force = one_in(rng, 4);
    c.fault(if force {
        "detach --force: Secondary"
    } else {
        "detach: Secondary"
    });
    admin(c, 1 - p, AdminCmd::Detach { force })?;
    write_for(c, ms(rand(rng, 50, 300)));
    admin(c, 1 - p, AdminCmd::Attach)?;
    Ok(p)
}

/// The Primary gives up its disk and serves through its peer; sometimes it loses power like
/// that, or detaches with writes still in flight.
pub(crate) fn detach_primary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    if !in_sync(c) {
        return Ok(p);
    }
    let force = one_in(rng, 3);
    c.fault(if force {
        "detach --force: Primary"
    } else {
        "detach: Primary"
    });
    admin(c, p, AdminCmd::Detach { force })?;
    write_for(c, ms(rand(rng, 50, 300)));
    if one_in(rng, 2) {
        c.fault("power loss: Diskless Primary");
        c.crash(p);
        write_for(c, ms(rand(rng, 1, 20)));
        c.restart(p).map_err(|e| e.to_string())?;
    }
    Ok(p)
}

/// A Diskless Secondary is promoted and writes through its peer, then demotes and re-attaches.
/// Sometimes the peer, holding the only copy, loses power meanwhile.
pub(crate) fn diskless_promotion(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    if !in_sync(c) {
        return Ok(p);
    }
    let s = 1 - p;
    c.fault("Diskless Secondary promoted");
    drain(c, p)?;
    admin(c, s, AdminCmd::Detach { force: false })?;
    demote(c, p)?;
    promote(c, s)?;
    write_for(c, ms(rand(rng, 50, 300)));
    if one_in(rng, 2) {
        c.fault("power loss: the Secondary holding the only copy");
        c.crash(p);
        write_for(c, ms(rand(rng, 5, 50)));
        c.restart(p).map_err(|e| e.to_string())?;
        wait(
            c,
            "the Diskless Primary's peer",
            Duration::from_secs(10),
            |c| c.nodes[s].engine.cstate() == ConnState::Connected,
        )?;
        write_for(c, ms(rand(rng, 20, 100)));
    }
    demote(c, s)?;
    admin(c, s, AdminCmd::Attach)?;
    Ok(p)
}

/// The Primary `p` or its peer, at even odds, with the fault recorded under the name given for
/// that choice (`[if the Primary, if the Secondary]`).
fn either_node(c: &mut Cluster, rng: &mut Rng, p: usize, names: [&'static str; 2]) -> usize {
    let victim = if one_in(rng, 2) { p } else { 1 - p };
    c.fault(names[usize::from(victim != p)]);
    victim
}

pub(crate) fn disk_fails(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let victim = either_node(
        c,
        rng,
        p,
        ["disk failure: Primary", "disk failure: Secondary"],
    );
    c.set_disk_failing(victim, true);
    write_for(c, ms(rand(rng, 50, 300)));
    Ok(p)
}

pub(crate) fn flush_fails(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let victim = either_node(
        c,
        rng,
        p,
        ["flush failure: Primary", "flush failure: Secondary"],
    );
    c.fail_flushes(victim, 1 + (rng.next_u64() % 2) as u32);
    write_for(c, ms(rand(rng, 100, 400)));
    Ok(p)
}

/// The Diskless Primary's peer, the only disk, fails: writes must fail, none may be acknowledged
/// and lost.
pub(crate) fn diskless_primarys_peer_fails(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    if !in_sync(c) {
        return Ok(p);
    }
    c.fault("disk failure: the Diskless Primary's peer");
    admin(c, p, AdminCmd::Detach { force: false })?;
    write_for(c, ms(rand(rng, 10, 100)));
    c.set_disk_failing(1 - p, true);
    write_for(c, ms(rand(rng, 50, 200)));
    Ok(p)
}

pub(crate) fn torn_metadata(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let victim = either_node(
        c,
        rng,
        p,
        [
            "power loss in a metadata write: Primary",
            "power loss in a metadata write: Secondary",
        ],
    );
    c.cut_meta_power_after(victim, 1 + (rng.next_u64() % 3) as u32);
    write_for(c, ms(rand(rng, 50, 200)));
    if c.nodes[victim].up {
        // A Secondary writes metadata on state changes: lose the link to make it write some.
        // The command is not answered if the power cut hits during it.
        let _ = c.admin(1 - p, AdminCmd::Disconnect { force: false });
        write_for(c, ms(20));
        if c.nodes[1 - p].up {
            connect(c, 1 - p)?;
        }
        write_for(c, ms(rand(rng, 20, 100)));
    }
    if c.nodes[victim].up {
        c.crash(victim);
    }
    back_after(c, rng, victim, p, 30)
}

pub(crate) fn invalidate(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let s = 1 - p;
    let apart = one_in(rng, 2);
    c.fault(if apart {
        "invalidate: disconnected Secondary"
    } else {
        "invalidate: connected Secondary"
    });
    if apart {
        admin(c, s, AdminCmd::Disconnect { force: false })?;
        write_for(c, ms(rand(rng, 10, 100)));
    }
    admin(c, s, AdminCmd::Invalidate)?;
    if one_in(rng, 3) {
        c.fault("power loss: invalidated Secondary");
        c.crash(s);
        write_for(c, ms(rand(rng, 1, 50)));
        c.restart(s).map_err(|e| e.to_string())?;
    }
    write_for(c, ms(rand(rng, 10, 100)));
    connect(c, s)?;
    Ok(p)
}

/// Requests on the Primary for `d`, all within 256 KiB: on a slow peer disk consecutive writes
/// overlap and queue behind each other on the receiving side. A quarter are reads (after a
/// switchover they must see the old Primary's writes still queued here).
pub(crate) fn hot_io(c: &mut Cluster, d: Duration) {
    for _ in 0..d.as_millis() {
        for _ in 0..4 {
            let Some(p) = c.primary() else { break };
            if c.outstanding_clients(p) >= 16 {
                break;
            }
            let r = c.rng().next_u64();
            let off = (r % 64) * 4096;
            let len = 4096 * (1 + (r >> 8) % 4);
            if (r >> 16).is_multiple_of(4) {
                c.read_at(p, off, len);
            } else {
                c.write_at(p, off, len, (r >> 20).is_multiple_of(8));
            }
        }
        c.run_for(ms(1));
    }
}

/// The Secondary's disk lags, so the writes it receives queue (behind overlapping ones still
/// being written); then the Primary dies. Under B the Secondary acknowledged those writes on
/// receipt: taking over, it must still write every one, and its own clients' writes and reads
/// come after them.
pub(crate) fn slow_secondary_then_primary_dies(
    c: &mut Cluster,
    rng: &mut Rng,
    p: usize,
) -> R<usize> {
    let s = 1 - p;
    c.fault("slow Secondary disk, then power loss: Primary");
    c.set_disk_delay(s, ms(rand(rng, 2, 20)));
    hot_io(c, ms(rand(rng, 5, 60)));
    let entitled = if c.protocol() == Protocol::C {
        in_sync(c)
    } else {
        c.nodes[s].engine.disk() == DiskState::UpToDate
    };
    let ua = c.nodes[s].engine.counters().ua;
    c.log(format!(
        "node {s} holds {ua} received operations not yet on its disk"
    ));
    c.crash(p);
    // Promoted as soon as it noticed: its disk is still busy with what it received.
    wait(
        c,
        "the Secondary to see the link go",
        Duration::from_secs(5),
        |c| c.nodes[s].engine.cstate() < ConnState::Connected,
    )?;
    c.run_for(ms(rand(rng, 0, 2)));
    if entitled && !one_in(rng, 4) {
        c.fault("failover");
        promote(c, s)?;
        hot_io(c, ms(rand(rng, 5, 100)));
        c.set_disk_delay(s, Duration::ZERO);
        write_for(c, ms(rand(rng, 20, 100)));
        c.restart(p).map_err(|e| e.to_string())?;
        return Ok(s);
    }
    c.set_disk_delay(s, Duration::ZERO);
    c.restart(p).map_err(|e| e.to_string())?;
    promote(c, p)?;
    Ok(p)
}

/// A planned switchover (`secondary` here, `primary` there) while the Secondary's disk lags
/// behind the writes it received: the new Primary's writes to a block land after the old
/// Primary's, and its reads see them.
pub(crate) fn switchover_behind_a_slow_disk(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let s = 1 - p;
    c.fault("switchover while the Secondary's disk lags");
    c.set_disk_delay(s, ms(rand(rng, 2, 20)));
    hot_io(c, ms(rand(rng, 5, 60)));
    demote(c, p)?;
    let ua = c.nodes[s].engine.counters().ua;
    c.log(format!(
        "node {s} holds {ua} received operations not yet on its disk"
    ));
    promote(c, s)?;
    hot_io(c, ms(rand(rng, 5, 100)));
    c.set_disk_delay(s, Duration::ZERO);
    Ok(s)
}

pub(crate) fn disconnect(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("disconnect/connect");
    admin(c, 1 - p, AdminCmd::Disconnect { force: false })?;
    write_for(c, ms(rand(rng, 50, 300)));
    connect(c, 1 - p)?;
    Ok(p)
}

// ---- faults with fencing: the engine, not the schedule, decides who may be promoted ----

/// Try to promote node `i` without --force; whether it was allowed.
pub(crate) fn try_promote(c: &mut Cluster, i: usize) -> bool {
    for _ in 0..100 {
        match c.admin(i, AdminCmd::Primary { force: false }) {
            Ok(_) => return true,
            Err(Refusal::InTransientState { .. }) => c.run_for(ms(20)),
            Err(e) => {
                c.log(format!("  promotion of node {i} refused: {e}"));
                return false;
            }
        }
    }
    false
}

/// The Secondary `s` is asked to take over from a dead Primary; if allowed it writes for up to
/// `write_ms` ms. Whether it was promoted.
pub(crate) fn fenced_takeover(c: &mut Cluster, rng: &mut Rng, s: usize, write_ms: u64) -> bool {
    let promoted = try_promote(c, s);
    c.fault(if promoted {
        "fencing: failover allowed"
    } else {
        "fencing: failover refused"
    });
    if promoted {
        write_for(c, ms(rand(rng, 50, write_ms)));
    }
    promoted
}

/// A partition long enough for the Primary to notice and fence its peer (the fence channel is
/// not cut), writes on the Primary alone, then the Primary dies: the Secondary must not be
/// promoted if it misses what was acknowledged meanwhile.
pub(crate) fn fenced_partition_then_primary_dies(
    c: &mut Cluster,
    rng: &mut Rng,
    p: usize,
) -> R<usize> {
    c.fault("fencing: partition, then the Primary dies");
    partition_then_primary_dies(c, rng, p)
}

/// As above, but the Primary dies in the very step in which it notices the partition, when
/// it has completed the writes its peer never confirmed and only begun to write its new
/// generation (seeds 88,066 and 89,362 needed a random crash to land there).
pub(crate) fn fenced_primary_dies_as_it_notices_a_partition(
    c: &mut Cluster,
    rng: &mut Rng,
    p: usize,
) -> R<usize> {
    c.fault("fencing: partition, the Primary dies as it notices");
    c.crash_on_link_loss(p);
    partition_then_primary_dies(c, rng, p)
}

pub(crate) fn partition_then_primary_dies(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let s = 1 - p;
    c.set_cut(true);
    write_for(c, ms(rand(rng, 600, 2000)));
    c.crash(p);
    c.run_for(ms(rand(rng, 1, 50)));
    let promoted = fenced_takeover(c, rng, s, 200);
    c.set_cut(false);
    c.restart(p).map_err(|e| e.to_string())?;
    Ok(if promoted { s } else { p })
}

/// The Primary dies while connected: the Secondary may take over (its fence-peer finds the
/// peer down), and holds everything acknowledged.
pub(crate) fn fenced_primary_dies(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let s = 1 - p;
    c.fault("fencing: the Primary dies");
    c.crash(p);
    c.run_for(ms(rand(rng, 1, 400)));
    let promoted = fenced_takeover(c, rng, s, 300);
    c.restart(p).map_err(|e| e.to_string())?;
    Ok(if promoted { s } else { p })
}

/// The Secondary dies and comes back (it cannot know what it missed: Consistent), then the
/// Primary dies before they reconnect: the Secondary must not take over.
pub(crate) fn fenced_secondary_back_then_primary_dies(
    c: &mut Cluster,
    rng: &mut Rng,
    p: usize,
) -> R<usize> {
    let s = 1 - p;
    c.fault("fencing: the Secondary restarts, then the Primary dies");
    c.crash(s);
    write_for(c, ms(rand(rng, 100, 600)));
    c.set_cut(true);
    c.restart(s).map_err(|e| e.to_string())?;
    c.crash(p);
    c.run_for(ms(rand(rng, 1, 50)));
    let promoted = fenced_takeover(c, rng, s, 200);
    c.set_cut(false);
    c.restart(p).map_err(|e| e.to_string())?;
    Ok(if promoted { s } else { p })
}

pub(crate) const FENCING_FAULTS: &[Fault] = &[
    fenced_partition_then_primary_dies,
    fenced_primary_dies_as_it_notices_a_partition,
    fenced_primary_dies,
    fenced_secondary_back_then_primary_dies,
    partition,
    one_way,
    crash_secondary,
    crash_both,
    disconnect,
    crash_during_resync,
];

/// Every fault, and whether it needs protocol C (a Diskless Primary under A or B acknowledges
/// writes that exist nowhere yet; DRBD documents that as the price of those protocols).
pub(crate) const FAULTS: &[(Fault, bool)] = &[
    (partition, false),
    (short_partition, false),
    (one_way, false),
    (crash_secondary, false),
    (crash_primary, false),
    (crash_both, false),
    (crash_one_after_the_other, false),
    (crash_during_resync, false),
    (crash_during_verify, false),
    (detach_secondary, false),
    (detach_primary, true),
    (diskless_promotion, true),
    (disk_fails, false),
    (flush_fails, false),
    (diskless_primarys_peer_fails, true),
    (torn_metadata, false),
    (invalidate, false),
    (disconnect, false),
    (slow_secondary_then_primary_dies, false),
    (switchover_behind_a_slow_disk, false),
];
