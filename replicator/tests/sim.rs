//! Deterministic simulation (docs/architecture.md §11.4, §12.3): two engines, a simulated network and simulated
//! storage with volatile caches (see `rep_replicator::sim`), seeded schedules of partitions
//! (both ways and one way), power loss (one node, both one after the other, both at once,
//! during a resync, during a verify, in the middle of a metadata write), detach/attach, Diskless
//! promotion, disk and flush failures and `invalidate`, under a client load of 512 B to 32 MiB
//! requests with FUA, FLUSH, TRIM, WRITE_ZEROES and reads. After every fault the cluster is
//! healed and must converge: both nodes UpToDate, both durable images identical and holding
//! every acknowledged write the data model says must have survived. The invariants checked after
//! every input are listed in `sim/cluster.rs`.
//!
//! Seeds: `REP_SIM_SEEDS=N` runs N seeds (default 1000: half protocol C, a quarter each A and
//! B); `REP_SIM_SEED=S[,S2…]` replays exactly those seeds (add `REP_SIM_LOG=1` for the engines'
//! log). A failing seed prints `REP_SIM_SEED=S` and its schedule. Each seeded test prints a
//! summary: seeds run, faults injected by kind, writes checked, writes lost. A long run:
//! `REP_SIM_SEEDS=100000 cargo test --release -p rep-replicator --test sim seeded -- --nocapture`
//! (or in chunks with `REP_SIM_SEEDS_FROM`, see `seeds`).
//!
//! The `regression_*` tests reproduce, each with a small fixed set of seeds, the defects fixed in
//! the engine before this simulator could see them; each fails if its fix is reverted.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rep_replicator::core::rng::Rng;
use rep_replicator::core::{AdminCmd, ConnState, DiskState, Refusal, Role};
use rep_replicator::sim::cluster::{Cluster, SimConfig, SimStats, MAX_REQUEST_BYTES, SECTOR};
use rep_replicator::sim::model::ModelStats;
use rep_resources::{DigestAlg, Fencing, Protocol};

const DEVICE: u64 = 64 << 20;
const MIB: u64 = 1 << 20;

type R<T = ()> = Result<T, String>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn describe(c: &Cluster) -> String {
    c.nodes
        .iter()
        .map(|n| {
            if !n.up {
                return format!("{} down", n.name);
            }
            format!(
                "{} {} {} {}/{} oos={}KiB clients={}",
                n.name,
                n.engine.role(),
                n.engine.cstate(),
                n.engine.disk(),
                n.engine.pdsk(),
                n.engine.oos_kib(),
                c.outstanding_clients(if n.name == "node-a" { 0 } else { 1 })
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn wait(c: &mut Cluster, what: &str, limit: Duration, cond: impl Fn(&Cluster) -> bool) -> R {
    let mut waited = Duration::ZERO;
    while !cond(c) {
        if waited >= limit {
            return Err(format!("timed out waiting for {what}: {}", describe(c)));
        }
        c.run_for(ms(5));
        waited += ms(5);
    }
    Ok(())
}

/// Client requests on whichever node is Primary, one per millisecond while fewer than 16 are
/// outstanding; now and then one to the other node, which must refuse it.
fn write_for(c: &mut Cluster, d: Duration) {
    for _ in 0..d.as_millis() {
        if let Some(p) = c.primary() {
            if c.outstanding_clients(p) < 16 {
                c.client_io(p);
            }
            if c.rng().next_u64().is_multiple_of(256) && c.nodes[1 - p].up {
                c.client_io(1 - p);
            }
        }
        c.run_for(ms(1));
    }
}

fn admin(c: &mut Cluster, i: usize, cmd: AdminCmd) -> R<String> {
    let what = format!("{cmd:?}");
    c.admin(i, cmd)
        .map_err(|e| format!("{what} on node {i} refused: {e} ({})", describe(c)))
}

fn drain(c: &mut Cluster, i: usize) -> R {
    wait(
        c,
        "client requests to drain",
        Duration::from_secs(30),
        |c| c.outstanding_clients(i) == 0,
    )
}

fn promote(c: &mut Cluster, i: usize) -> R {
    // Like a cluster manager: retry while the node is between states (a handshake or a
    // resync under way); with fencing a freshly restarted pair is still negotiating.
    for _ in 0..500 {
        let e = match c.admin(i, AdminCmd::Primary { force: false }) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let transient = matches!(e, Refusal::InTransientState { .. })
            || matches!(
                c.nodes[i].engine.cstate(),
                ConnState::WFReportParams
                    | ConnState::WFSyncUUID
                    | ConnState::SyncTarget
                    | ConnState::PausedSyncT
            );
        if !transient || !c.nodes[i].up {
            return Err(format!(
                "Primary on node {i} refused: {e} ({})",
                describe(c)
            ));
        }
        c.run_for(ms(20));
    }
    Err(format!(
        "node {i} stayed in transient states ({})",
        describe(c)
    ))
}

fn demote(c: &mut Cluster, i: usize) -> R {
    drain(c, i)?;
    admin(c, i, AdminCmd::Secondary)?;
    // The peer learns it from our next State packet; promoting it before would be refused.
    wait(
        c,
        "the peer to see the demotion",
        Duration::from_secs(5),
        |c| {
            let j = &c.nodes[1 - i];
            !j.up || j.engine.peer_role() != Role::Primary
        },
    )
}

fn connect(c: &mut Cluster, i: usize) -> R {
    if c.nodes[i].engine.cstate() == ConnState::StandAlone {
        admin(
            c,
            i,
            AdminCmd::Connect {
                discard_my_data: false,
            },
        )?;
    }
    Ok(())
}

/// Undo every fault and bring both nodes back: up, attached, connected, resynced, one Primary
/// (`prefer` unless another node already is). Returns the Primary.
fn heal(c: &mut Cluster, prefer: usize) -> R<usize> {
    if c.partitioned() {
        c.set_cut(false);
    }
    for i in 0..2 {
        if c.disk_failing(i) {
            c.set_disk_failing(i, false);
        }
        if c.disk_delay(i) > Duration::ZERO {
            c.set_disk_delay(i, Duration::ZERO);
        }
        if c.nodes[i].disk.flush_failures > 0 {
            c.fail_flushes(i, 0);
        }
    }
    for i in 0..2 {
        if !c.nodes[i].up {
            c.restart(i)
                .map_err(|e| format!("restart of node {i}: {e}"))?;
        }
    }
    wait(c, "failed disks to close", Duration::from_secs(10), |c| {
        c.nodes
            .iter()
            .all(|n| !matches!(n.engine.disk(), DiskState::Failed | DiskState::Attaching))
    })?;
    for i in 0..2 {
        if c.nodes[i].engine.disk() == DiskState::Diskless {
            if c.nodes[i].engine.role() == Role::Primary {
                // A Diskless Primary steps down to take its disk back.
                demote(c, i)?;
            }
            admin(c, i, AdminCmd::Attach)?;
        }
    }
    for i in 0..2 {
        connect(c, i)?;
    }
    if c.fencing() == Fencing::ResourceOnly {
        resolve_split_brain(c, prefer)?;
    }
    wait(
        c,
        "connected and UpToDate",
        Duration::from_secs(120),
        Cluster::settled,
    )?;
    match c.primary() {
        Some(p) => Ok(p),
        None => {
            promote(c, prefer)?;
            Ok(prefer)
        }
    }
}

/// With fencing resource-only a Primary that dies right after a partition may have written
/// alone while its peer was promoted: a real split brain. Resolve it as the runbook does, the
/// node that is not Primary (else the one not preferred) discarding its changes.
fn resolve_split_brain(c: &mut Cluster, prefer: usize) -> R {
    let seen = c.handlers().iter().filter(|h| h.1 == "split-brain").count();
    let _ = wait(c, "handshake", Duration::from_secs(3), |c| {
        c.settled() || c.handlers().iter().filter(|h| h.1 == "split-brain").count() > seen
    });
    if c.handlers().iter().filter(|h| h.1 == "split-brain").count() == seen {
        return Ok(());
    }
    let victim = match c.primary() {
        Some(p) => 1 - p,
        None => 1 - prefer,
    };
    c.fault("fencing resource-only: split brain after the Primary died alone");
    c.split_brain_discarded(victim);
    for i in 0..2 {
        if c.nodes[i].engine.cstate() != ConnState::StandAlone {
            admin(c, i, AdminCmd::Disconnect { force: false })?;
        }
    }
    admin(
        c,
        victim,
        AdminCmd::Connect {
            discard_my_data: true,
        },
    )?;
    connect(c, 1 - victim)
}

/// Heal, let the clients finish, and check the converged cluster against the data model.
fn converge(c: &mut Cluster, prefer: usize) -> R<usize> {
    let p = heal(c, prefer)?;
    wait(
        c,
        "client requests to drain",
        Duration::from_secs(30),
        |c| c.outstanding_clients(0) == 0 && c.outstanding_clients(1) == 0,
    )?;
    c.check_converged()?;
    Ok(p)
}

/// Run online verify from `from` and return the number of out-of-sync blocks it found.
fn verify(c: &mut Cluster, from: usize) -> R<u64> {
    admin(c, from, AdminCmd::Verify)?;
    wait(c, "verify to finish", Duration::from_secs(60), |c| {
        c.nodes
            .iter()
            .all(|n| n.engine.cstate() == ConnState::Connected)
    })?;
    c.nodes[from]
        .engine
        .last_verify_oos()
        .ok_or_else(|| "verify reported nothing".to_string())
}

/// Both nodes connected, UpToDate, in sync (and Connected at the moment of the check).
fn in_sync(c: &Cluster) -> bool {
    c.settled()
}

/// True once in `n` draws.
fn one_in(rng: &mut Rng, n: u64) -> bool {
    rng.next_u64().is_multiple_of(n)
}

fn rand(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

// ---- faults: each starts from a converged cluster with Primary `p`, returns who should be
// Primary after healing ----

type Fault = fn(&mut Cluster, &mut Rng, usize) -> R<usize>;

fn partition(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("partition");
    c.set_cut(true);
    write_for(c, ms(rand(rng, 800, 1600)));
    c.set_cut(false);
    Ok(p)
}

fn short_partition(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    // Shorter than the ping timeout: frames arrive late, nothing is lost (TCP).
    c.fault("short partition");
    c.set_cut(true);
    write_for(c, ms(rand(rng, 20, 400)));
    c.set_cut(false);
    Ok(p)
}

fn one_way(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

fn crash_secondary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("power loss: Secondary");
    c.crash(1 - p);
    write_for(c, ms(rand(rng, 50, 400)));
    c.restart(1 - p).map_err(|e| e.to_string())?;
    Ok(p)
}

/// The Primary dies. Its peer takes over if it may (protocol C: only if it held everything the
/// Primary acknowledged, as fencing would ensure; A and B: whenever its disk is UpToDate, losing
/// what was in flight), otherwise the old Primary comes back.
fn crash_primary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

fn crash_both(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

fn crash_one_after_the_other(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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
fn crash_during_resync(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

fn crash_during_verify(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    if !in_sync(c) {
        return Ok(p);
    }
    admin(c, p, AdminCmd::Verify)?;
    write_for(c, ms(rand(rng, 0, 15)));
    let victim = if one_in(rng, 2) { p } else { 1 - p };
    c.fault(if victim == p {
        "power loss during verify: VerifyS"
    } else {
        "power loss during verify: VerifyT"
    });
    c.crash(victim);
    c.run_for(ms(rand(rng, 1, 50)));
    c.restart(victim).map_err(|e| e.to_string())?;
    if victim == p {
        promote(c, p)?;
    }
    Ok(p)
}

fn detach_secondary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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
fn detach_primary(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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
fn diskless_promotion(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

fn disk_fails(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let victim = if one_in(rng, 2) { p } else { 1 - p };
    c.fault(if victim == p {
        "disk failure: Primary"
    } else {
        "disk failure: Secondary"
    });
    c.set_disk_failing(victim, true);
    write_for(c, ms(rand(rng, 50, 300)));
    Ok(p)
}

fn flush_fails(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let victim = if one_in(rng, 2) { p } else { 1 - p };
    c.fault(if victim == p {
        "flush failure: Primary"
    } else {
        "flush failure: Secondary"
    });
    c.fail_flushes(victim, 1 + (rng.next_u64() % 2) as u32);
    write_for(c, ms(rand(rng, 100, 400)));
    Ok(p)
}

/// The Diskless Primary's peer, the only disk, fails: writes must fail, none may be acknowledged
/// and lost.
fn diskless_primarys_peer_fails(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

fn torn_metadata(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    let victim = if one_in(rng, 2) { p } else { 1 - p };
    c.fault(if victim == p {
        "power loss in a metadata write: Primary"
    } else {
        "power loss in a metadata write: Secondary"
    });
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
    c.run_for(ms(rand(rng, 1, 30)));
    c.restart(victim).map_err(|e| e.to_string())?;
    if victim == p {
        promote(c, p)?;
    }
    Ok(p)
}

fn invalidate(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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
fn hot_io(c: &mut Cluster, d: Duration) {
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
fn slow_secondary_then_primary_dies(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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
fn switchover_behind_a_slow_disk(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

fn disconnect(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("disconnect/connect");
    admin(c, 1 - p, AdminCmd::Disconnect { force: false })?;
    write_for(c, ms(rand(rng, 50, 300)));
    connect(c, 1 - p)?;
    Ok(p)
}

// ---- faults with fencing: the engine, not the schedule, decides who may be promoted ----

/// Try to promote node `i` without --force; whether it was allowed.
fn try_promote(c: &mut Cluster, i: usize) -> bool {
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
fn fenced_takeover(c: &mut Cluster, rng: &mut Rng, s: usize, write_ms: u64) -> bool {
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
fn fenced_partition_then_primary_dies(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
    c.fault("fencing: partition, then the Primary dies");
    partition_then_primary_dies(c, rng, p)
}

/// As above, but the Primary dies in the very step in which it notices the partition, when
/// it has completed the writes its peer never confirmed and only begun to write its new
/// generation (seeds 88,066 and 89,362 needed a random crash to land there).
fn fenced_primary_dies_as_it_notices_a_partition(
    c: &mut Cluster,
    rng: &mut Rng,
    p: usize,
) -> R<usize> {
    c.fault("fencing: partition, the Primary dies as it notices");
    c.crash_on_link_loss(p);
    partition_then_primary_dies(c, rng, p)
}

fn partition_then_primary_dies(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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
fn fenced_primary_dies(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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
fn fenced_secondary_back_then_primary_dies(c: &mut Cluster, rng: &mut Rng, p: usize) -> R<usize> {
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

const FENCING_FAULTS: &[Fault] = &[
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
const FAULTS: &[(Fault, bool)] = &[
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

/// What one seed did, for the summary.
#[derive(Default)]
struct Summary {
    seeds: u64,
    failed: Vec<u64>,
    lost: u64,
    sim: SimStats,
    model: ModelStats,
    torn: u64,
}

impl Summary {
    fn add_model(&mut self, m: &ModelStats) {
        self.model.writes += m.writes;
        self.model.acked += m.acked;
        self.model.failed += m.failed;
        self.model.flushes += m.flushes;
        self.model.reads += m.reads;
        self.model.checked += m.checked;
        self.model.sector_checks += m.sector_checks;
    }

    fn print(&self, name: &str, elapsed: Duration) {
        let faults: Vec<String> = self
            .sim
            .faults
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let total: u64 = self.sim.faults.values().sum();
        eprintln!(
            "sim {name}: {} seeds in {:.1} s, {} failed {:?}\n  faults injected: {total} ({})\n  metadata writes torn by power loss: {}\n  client requests: {} writes ({} MiB, largest {} MiB), {} acknowledged, {} failed, {} flushes, {} reads checked\n  writes checked at convergence: {}; sector checks against durable-required floors: {}\n  writes lost: {}; frames rejected by the wire: {}\n  resync replies: {} MiB as data, {} MiB as zero ranges",
            self.seeds,
            elapsed.as_secs_f64(),
            self.failed.len(),
            self.failed,
            faults.join(", "),
            self.torn,
            self.model.writes,
            self.sim.bytes_written / MIB,
            self.sim.max_request / MIB,
            self.model.acked,
            self.model.failed,
            self.model.flushes,
            self.model.reads,
            self.model.checked,
            self.model.sector_checks,
            self.lost,
            self.sim.wire_rejects,
            self.sim.rs_data_bytes / MIB,
            self.sim.rs_zero_bytes / MIB,
        );
    }
}

thread_local! {
    /// Panics on this thread are invariant violations reported with their seed: keep the
    /// default hook (and its backtrace) quiet for them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = f();
    QUIET.with(|q| q.set(false));
    r
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Run `body` on a fresh cluster; a panic (invariant violation) becomes an error carrying the
/// schedule so far.
fn with_cluster(c: &mut Cluster, body: impl FnOnce(&mut Cluster) -> R) -> R {
    let r = quiet_panics(|| catch_unwind(AssertUnwindSafe(|| body(c))));
    let r = match r {
        Ok(r) => r,
        Err(p) => Err(panic_text(p.as_ref())),
    };
    r.map_err(|e| format!("{e}\n  schedule:\n    {}", c.trace.join("\n    ")))
}

fn seeded_cluster(seed: u64, protocol: Protocol, fencing: Fencing) -> Cluster {
    let mut rng = Rng::new(seed ^ 0xc0f1);
    let mut cfg = SimConfig::new(protocol, DEVICE);
    cfg.fencing = fencing;
    if one_in(&mut rng, 3) {
        // DRBD's minimum for 32 MiB requests, on a device of 16 extents: evictions all the time.
        cfg.al_extents = 9;
    }
    cfg.csums_alg = match rng.next_u64() % 8 {
        0 => Some(DigestAlg::Crc32c),
        1 => Some(DigestAlg::Sha1),
        _ => None,
    };
    if one_in(&mut rng, 16) {
        cfg.verify_alg = Some(DigestAlg::Sha1);
    }
    Cluster::with_config(seed, cfg)
}

fn setup(c: &mut Cluster, rng: &mut Rng) -> R {
    for i in 0..2 {
        admin(c, i, AdminCmd::Attach)?;
        connect(c, i)?;
    }
    wait(c, "first connection", Duration::from_secs(10), |c| {
        c.nodes
            .iter()
            .all(|n| n.engine.cstate() == ConnState::Connected)
    })?;
    if c.nodes[1].engine.disk() != DiskState::Inconsistent {
        return Err("fresh disks must be Inconsistent".into());
    }
    if one_in(rng, 4) {
        // The initial full sync, with writes while it runs.
        admin(c, 0, AdminCmd::Primary { force: true })?;
    } else {
        admin(c, 0, AdminCmd::NewCurrentUuid { clear_bitmap: true })?;
        promote(c, 0)?;
    }
    Ok(())
}

fn run_seed(seed: u64, protocol: Protocol, fencing: Fencing, summary: &mut Summary) -> R {
    let mut c = seeded_cluster(seed, protocol, fencing);
    let mut rng = Rng::new(seed ^ 0xfa);
    let faults: Vec<Fault> = if fencing == Fencing::DontCare {
        FAULTS
            .iter()
            .filter(|(_, c_only)| protocol == Protocol::C || !c_only)
            .map(|(f, _)| *f)
            .collect()
    } else {
        FENCING_FAULTS.to_vec()
    };
    let r = with_cluster(&mut c, |c| {
        setup(c, &mut rng)?;
        write_for(c, ms(50));
        let mut p = converge(c, 0)?;
        for _round in 0..3 {
            write_for(c, ms(rand(&mut rng, 20, 80)));
            let f = faults[(rng.next_u64() % faults.len() as u64) as usize];
            let prefer = f(c, &mut rng, p)?;
            write_for(c, ms(30));
            p = converge(c, prefer)?;
            if one_in(&mut rng, 4) {
                let found = verify(c, p)?;
                if found != 0 {
                    return Err(format!(
                        "verify found {found} blocks out of sync on converged disks"
                    ));
                }
            }
        }
        Ok(())
    });
    summary.seeds += 1;
    summary.sim.merge(&c.stats);
    summary.add_model(&c.model.stats);
    summary.torn += c.meta_torn_writes();
    if let Err(e) = &r {
        if e.contains("must hold") || e.contains("differ") {
            summary.lost += 1;
        }
    }
    r
}

/// Seeds for one protocol: `share` of REP_SIM_SEEDS (default 1000), or REP_SIM_SEED's list.
/// `REP_SIM_SEEDS_FROM=K` starts at the `share` of K instead of 0, so a long run can go in
/// chunks (FROM=0 SEEDS=20000, then FROM=20000 SEEDS=20000, …) that together cover exactly
/// the seeds one run of their total would.
fn seeds(share: f64) -> Vec<u64> {
    if let Ok(s) = std::env::var("REP_SIM_SEED") {
        return s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (from, n) = (env("REP_SIM_SEEDS_FROM", 0), env("REP_SIM_SEEDS", 1000));
    let at = |k: u64| (k as f64 * share).ceil() as u64;
    (at(from)..at(from + n)).collect()
}

fn run_protocol(protocol: Protocol, share: f64, test: &str) {
    run_seeds(protocol, Fencing::DontCare, share, test);
}

fn run_seeds(protocol: Protocol, fencing: Fencing, share: f64, test: &str) {
    let started = Instant::now();
    let mut summary = Summary::default();
    for seed in seeds(share) {
        if let Err(e) = run_seed(seed, protocol, fencing, &mut summary) {
            eprintln!(
                "seed {seed} (protocol {protocol}) FAILED: {e}\n  replay: REP_SIM_SEED={seed} cargo test --release -p rep-replicator --test sim {test} -- --nocapture"
            );
            summary.failed.push(seed);
        }
    }
    summary.print(
        &format!("protocol {protocol}, fencing {fencing}"),
        started.elapsed(),
    );
    assert!(
        summary.failed.is_empty(),
        "failing seeds (protocol {protocol}): {:?}",
        summary.failed
    );
    // Most of a simulated disk is never written: resyncs must answer it with zero ranges (the
    // disk model's sparse reads), so the seeds cover RsZero and its application.
    if summary.seeds >= 20 {
        assert!(
            summary.sim.rs_zero_bytes > 0,
            "{} seeds resynced {} bytes as data and none as zero ranges",
            summary.seeds,
            summary.sim.rs_data_bytes
        );
    }
}

#[test]
fn seeded_faults_converge_protocol_c() {
    run_protocol(Protocol::C, 0.5, "seeded_faults_converge_protocol_c");
}

/// Fencing resource-and-stonith: partitions and deaths of either node, with the engine (its
/// fence-peer and promotion rules) deciding who may be promoted; no promoted node may lack an
/// acknowledged write (checked on every promotion).
#[test]
fn seeded_faults_converge_with_fencing_stonith() {
    run_seeds(
        Protocol::C,
        Fencing::ResourceAndStonith,
        0.15,
        "seeded_faults_converge_with_fencing_stonith",
    );
}

/// Fencing resource-only: the same schedules; I/O is not frozen, so only the usual
/// durability checks apply (a Primary dying right after a partition may take the writes it
/// acknowledged alone with it, as DRBD documents).
#[test]
fn seeded_faults_converge_with_fencing_resource_only() {
    run_seeds(
        Protocol::C,
        Fencing::ResourceOnly,
        0.1,
        "seeded_faults_converge_with_fencing_resource_only",
    );
}

#[test]
fn seeded_faults_converge_protocol_a() {
    run_protocol(Protocol::A, 0.25, "seeded_faults_converge_protocol_a");
}

#[test]
fn seeded_faults_converge_protocol_b() {
    run_protocol(Protocol::B, 0.25, "seeded_faults_converge_protocol_b");
}

// ---- targeted tests ----

/// Both nodes attached and connected (Secondary/Secondary, Inconsistent).
fn connected_pair(seed: u64, cfg: SimConfig) -> Cluster {
    let mut c = Cluster::with_config(seed, cfg);
    for i in 0..2 {
        c.admin(i, AdminCmd::Attach).expect("attach");
        c.admin(
            i,
            AdminCmd::Connect {
                discard_my_data: false,
            },
        )
        .expect("connect");
    }
    wait(&mut c, "connection", Duration::from_secs(10), |c| {
        c.nodes
            .iter()
            .all(|n| n.engine.cstate() == ConnState::Connected)
    })
    .expect("connected");
    c
}

/// A settled pair (initial sync skipped), node 0 Primary.
fn synced_pair(seed: u64, cfg: SimConfig) -> Cluster {
    let mut c = connected_pair(seed, cfg);
    c.admin(0, AdminCmd::NewCurrentUuid { clear_bitmap: true })
        .expect("new-current-uuid");
    c.admin(0, AdminCmd::Primary { force: false })
        .expect("primary");
    wait(&mut c, "settled", Duration::from_secs(10), Cluster::settled).expect("settled");
    c
}

fn cfg_c() -> SimConfig {
    SimConfig::new(Protocol::C, DEVICE)
}

/// Run a targeted scenario for each seed; fail with every failing seed's story.
fn for_seeds(name: &str, seeds: impl IntoIterator<Item = u64>, mut f: impl FnMut(u64) -> R) {
    let mut failed = BTreeMap::new();
    for seed in seeds {
        let r = quiet_panics(|| catch_unwind(AssertUnwindSafe(|| f(seed))));
        let r = match r {
            Ok(r) => r,
            Err(p) => Err(panic_text(p.as_ref())),
        };
        if let Err(e) = r {
            eprintln!("{name}: seed {seed} FAILED: {e}");
            failed.insert(seed, e);
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: failing seeds {:?}",
        failed.keys().collect::<Vec<_>>()
    );
}

fn write_without_errors(c: &mut Cluster, p: usize, d: Duration) -> R {
    write_for(c, d);
    drain(c, p)?;
    if c.nodes[p].failed_replies != 0 {
        return Err(format!(
            "{} client requests failed",
            c.nodes[p].failed_replies
        ));
    }
    Ok(())
}

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

// ---- regressions: one per engine fix; each fails if its fix is reverted ----

/// Fix 1: writes larger than one peer packet (up to the NBD maximum of 32 MiB, at unaligned
/// offsets) travel as several ≤ 1 MiB `Data` packets, and reads through a Diskless Primary's
/// peer are split likewise. Before, the receiver's frame limit (or its range check) dropped the
/// link on every such request.
#[test]
fn regression_1_large_requests_travel_in_packets_within_the_frame_limit() {
    for_seeds("large requests", 0..3, |seed| {
        for protocol in [Protocol::C, Protocol::A] {
            let mut c = synced_pair(seed, SimConfig::new(protocol, DEVICE));
            let link_ups = |c: &Cluster| c.trace.len();
            let _ = link_ups;
            for (off, len, fua) in [
                (0, MAX_REQUEST_BYTES, false),
                (3 * SECTOR, MIB + SECTOR, true),
                (5 * MIB + 7 * SECTOR, 3 * MIB - SECTOR, false),
                (DEVICE - MAX_REQUEST_BYTES, MAX_REQUEST_BYTES, true),
            ] {
                c.write_at(0, off, len, fua);
            }
            c.flush(0);
            drain(&mut c, 0)?;
            if c.nodes[0].failed_replies != 0 || !c.settled() {
                return Err(format!("large writes disturbed the pair: {}", describe(&c)));
            }
            if protocol == Protocol::C {
                // Reads through the peer: the Primary detaches and serves from node-b.
                c.admin(0, AdminCmd::Detach { force: false })
                    .map_err(|e| e.to_string())?;
                for (off, len) in [(0, MAX_REQUEST_BYTES), (MIB - SECTOR, 2 * MIB + 3 * SECTOR)] {
                    c.read_at(0, off, len);
                }
                c.write_at(0, 9 * MIB + SECTOR, 4 * MIB, false);
                c.read_at(0, 8 * MIB, 8 * MIB);
                drain(&mut c, 0)?;
                if c.nodes[0].failed_replies != 0 {
                    return Err(format!("reads through the peer failed: {}", describe(&c)));
                }
            }
            if c.stats.wire_rejects != 0 {
                return Err("a frame beyond the limit was sent".into());
            }
            converge(&mut c, 0)?;
        }
        Ok(())
    });
}

/// Fix 2: a Diskless Secondary can be promoted (no metadata write without a disk), and its
/// UpToDate peer starts a new data generation, so the disk re-attached later resyncs the writes
/// it missed instead of being taken as current.
#[test]
fn regression_2_a_promoted_diskless_secondary_gets_its_writes_resynced() {
    // Seed 4 used to fail here: a request the workload sent on purpose to the Secondary (which
    // must refuse it) was counted as a client error of the later Diskless Primary.
    let seeds = 0u64..8;
    for_seeds("Diskless promotion", seeds, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(50));
        drain(&mut c, 0)?;
        admin(&mut c, 1, AdminCmd::Detach { force: false })?;
        demote(&mut c, 0)?;
        promote(&mut c, 1)?;
        write_without_errors(&mut c, 1, ms(200))?;
        demote(&mut c, 1)?;
        admin(&mut c, 1, AdminCmd::Attach)?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 2 without the detour that hid it: node-a is demoted *before* node-b's disk goes, so no
/// Primary sees the peer's disk leave and no new generation starts then. Only the promotion of
/// the Diskless node-b can start it (DRBD's after_state_ch); without that, node-b's re-attached
/// disk is taken as current and misses every write node-b made while Diskless. (The revert
/// table of issue 19 found regression_2 passing with this fix reverted.)
#[test]
fn regression_2_a_diskless_node_promoted_over_a_secondary_peer_gets_its_writes_resynced() {
    for_seeds("Diskless promotion over a Secondary", 0..8, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(50));
        drain(&mut c, 0)?;
        demote(&mut c, 0)?;
        admin(&mut c, 1, AdminCmd::Detach { force: false })?;
        promote(&mut c, 1)?;
        write_without_errors(&mut c, 1, ms(200))?;
        demote(&mut c, 1)?;
        admin(&mut c, 1, AdminCmd::Attach)?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// An attach while the link is up reports Negotiating until a handshake has compared data
/// generations (DRBD's D_NEGOTIATING): node-b's disk, detached while node-a went on writing,
/// must not claim UpToDate from its own metadata. Here node-a dies before that handshake, and
/// node-b must refuse an ordinary promotion: it would serve data without node-a's writes.
/// (Found by sim seed 2 in stop 16; the seeded runs stopped catching its revert when the fault
/// list grew, which the revert table of issue 19 showed.)
#[test]
fn regression_attach_reports_negotiating_until_the_handshake_decides() {
    for_seeds("attach before the handshake", 0..6, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(30));
        drain(&mut c, 0)?;
        admin(&mut c, 1, AdminCmd::Detach { force: false })?;
        write_without_errors(&mut c, 0, ms(100))?;
        drain(&mut c, 0)?;
        // The link stays up (no packet is lost yet), but nothing crosses it any more: the
        // handshake that would tell node-b what it missed cannot happen.
        c.set_cut(true);
        admin(&mut c, 1, AdminCmd::Attach)?;
        c.crash(0);
        if c.admin(1, AdminCmd::Primary { force: false }).is_ok() {
            return Err(format!(
                "node-b was promoted with a disk it attached before any handshake: {}",
                describe(&c)
            ));
        }
        c.set_cut(false);
        c.restart(0).map_err(|e| e.to_string())?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// `secondary` with client requests still in flight (a client that just went away) waits for
/// them to finish as Primary; a Secondary never has client I/O in flight (the engine's own
/// invariant, checked after every input). Found by the stateful engine fuzzer in stop 16; its
/// crash input no longer reaches the case since the fuzzer's input format grew (the revert
/// table of issue 19 showed the replay passing with the fix reverted).
#[test]
fn regression_demotion_waits_for_client_requests_in_flight() {
    for_seeds("demotion under load", 0..6, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(20));
        for k in 0..12u64 {
            c.write_at(0, k * MIB + 3 * SECTOR, 64 * SECTOR, k % 3 == 0);
        }
        admin(&mut c, 0, AdminCmd::Secondary)?;
        if c.outstanding_clients(0) != 0 {
            return Err(format!(
                "demoted with client requests outstanding: {}",
                describe(&c)
            ));
        }
        promote(&mut c, 0)?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// A `detach --force` while a Failed disk is already closing is answered "already under way":
/// one close at a time, so a quick `attach` after it is not undone by a second close's
/// completion (which left a Diskless node holding a bitmap). Found by the stateful engine
/// fuzzer in stop 16; see the test above for why its crash input no longer guards it.
#[test]
fn regression_one_disk_close_at_a_time() {
    for_seeds("detach --force of a closing disk", 0..6, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(20));
        drain(&mut c, 0)?;
        c.set_disk_failing(1, true);
        wait(
            &mut c,
            "node-b's disk to fail",
            Duration::from_secs(10),
            |c| c.nodes[1].engine.disk() <= DiskState::Failed,
        )?;
        // Whatever the force detach answers, the close under way must stay the only one.
        let _ = c.admin(1, AdminCmd::Detach { force: true });
        c.set_disk_failing(1, false);
        wait(&mut c, "node-b Diskless", Duration::from_secs(10), |c| {
            c.nodes[1].engine.disk() == DiskState::Diskless
        })?;
        admin(&mut c, 1, AdminCmd::Attach)?;
        write_for(&mut c, ms(50));
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 3: a Secondary holding the only copy (its peer is a Diskless Primary) marks the writes
/// out of sync under its activity log before writing them, so its power loss does not forget
/// what the peer's disk must get back.
#[test]
fn regression_3_the_only_copy_keeps_its_bits_through_a_power_loss() {
    for_seeds("only copy", 0..6, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(30));
        drain(&mut c, 0)?;
        admin(&mut c, 0, AdminCmd::Detach { force: false })?;
        write_without_errors(&mut c, 0, ms(200))?;
        c.crash(1);
        c.run_for(ms(20));
        c.restart(1).map_err(|e| e.to_string())?;
        wait(
            &mut c,
            "node-a serving again",
            Duration::from_secs(10),
            |c| {
                c.nodes[0].engine.cstate() == ConnState::Connected
                    && c.nodes[0].engine.pdsk() == DiskState::UpToDate
            },
        )?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 4: `invalidate` persists the all-set bitmap before the superblock that says
/// Inconsistent; a power loss right after it still ends in a full sync.
#[test]
fn regression_4_invalidate_survives_a_power_loss() {
    for_seeds("invalidate", 0..6, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(100));
        converge(&mut c, 0)?;
        admin(&mut c, 1, AdminCmd::Disconnect { force: false })?;
        // Bit rot on node-b: only a full sync repairs it.
        for block in [3u64, 1000, 9000, 16000] {
            c.corrupt(1, block);
        }
        admin(&mut c, 1, AdminCmd::Invalidate)?;
        c.crash(1);
        c.restart(1).map_err(|e| e.to_string())?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 5: under a Diskless Primary, a write its peer fails (NegAck) exists nowhere: the client
/// gets EIO, never a success.
#[test]
fn regression_5_a_write_the_only_disk_refuses_fails() {
    for_seeds("NegAck under a Diskless Primary", 0..6, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(30));
        drain(&mut c, 0)?;
        admin(&mut c, 0, AdminCmd::Detach { force: false })?;
        write_for(&mut c, ms(30));
        c.set_disk_failing(1, true);
        write_for(&mut c, ms(100));
        drain(&mut c, 0)?;
        if c.nodes[0].failed_replies == 0 {
            return Err("no client request failed although no disk took them".into());
        }
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 6: a failed flush never counts as durable. On the Secondary, no BarrierAck follows a
/// failed barrier flush and the disk is given up; on the Primary, every extent written since
/// the last good flush is marked out of sync (Linux forgets a write-back error once reported,
/// so the next fdatasync succeeds without the lost data).
#[test]
fn regression_6_a_failed_flush_is_never_taken_as_durable() {
    for_seeds("failed flush", 0..8, |seed| {
        let victim = (seed % 2) as usize;
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(50));
        c.fail_flushes(victim, 1);
        write_for(&mut c, ms(300));
        if c.nodes[victim].disk.flush_failures != 0 {
            return Err("no flush happened".into());
        }
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 7: metadata never claims data that is not durable yet: the data device is flushed before
/// a superblock write and before bitmap pages that clear bits. A SyncTarget losing power right
/// after its resync completed (no application writes, so no barrier flushed the resynced
/// blocks) must still hold them.
#[test]
fn regression_7_metadata_never_runs_ahead_of_the_data() {
    for_seeds("data flush before metadata", 0..6, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        admin(&mut c, 1, AdminCmd::Disconnect { force: false })?;
        for k in 0..24u64 {
            c.write_at(0, k * 2 * MIB + k * SECTOR, MIB + SECTOR * (k % 5), false);
        }
        c.flush(0);
        drain(&mut c, 0)?;
        c.run_for(ms(100));
        connect(&mut c, 1)?;
        wait(
            &mut c,
            "the resync to finish",
            Duration::from_secs(30),
            |c| c.nodes[1].engine.disk() == DiskState::UpToDate,
        )?;
        c.crash(1);
        c.restart(1).map_err(|e| e.to_string())?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 8: an activity-log extent with writes in flight is never evicted (al-extents 9 on a
/// device of 16 extents, many writes in flight, power loss of the Primary), and `detach
/// --force` with writes in flight leaves the superblock unclean, so the next attach replays the
/// activity log.
#[test]
fn regression_8_extents_with_writes_in_flight_stay_in_the_activity_log() {
    for_seeds("AL eviction under load", 0..10, |seed| {
        let mut cfg = cfg_c();
        cfg.al_extents = 9;
        let mut c = synced_pair(seed, cfg);
        let mut rng = Rng::new(seed);
        // Writes all over the device, many in flight at once.
        for _ in 0..40 {
            for _ in 0..12 {
                let first = rng.next_u64() % (DEVICE / SECTOR - 256);
                c.write_at(
                    0,
                    first * SECTOR,
                    (1 + rng.next_u64() % 256) * SECTOR,
                    false,
                );
            }
            c.run_for(Duration::from_micros(300));
        }
        c.crash(0);
        c.run_for(ms(10));
        c.restart(0).map_err(|e| e.to_string())?;
        promote(&mut c, 0)?;
        converge(&mut c, 0)?;
        // detach --force with writes in flight, then power loss of the Diskless Primary.
        for _ in 0..12 {
            let first = rng.next_u64() % (DEVICE / SECTOR - 256);
            c.write_at(0, first * SECTOR, 64 * SECTOR, false);
        }
        c.run_for(Duration::from_micros(50));
        admin(&mut c, 0, AdminCmd::Detach { force: true })?;
        write_for(&mut c, ms(20));
        c.crash(0);
        c.restart(0).map_err(|e| e.to_string())?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// Fix 9: a lost link always persists the bitmap, also when no new generation starts (here: the
/// link is lost during a resync, whose bitmap UUID is set). The bits of writes the peer never
/// confirmed, in extents the small activity log already evicted, must survive a power loss of
/// both nodes right after.
///
/// The revert table (issue 19 #6) found this fix redundant today, so no test can fail without
/// it: the superblock's connected flag changes on every loss of a link that was Connected (or
/// syncing, verifying), and a changed flag persists the superblock, bitmap pages first; a link
/// lost before the handshake decided sets no bits. With the `.persist()` removed, 2007 link
/// losses over 375 seeds and every targeted test never left a dirty bitmap page behind. The
/// activity log covers the same writes a second time (their extents stay in it until the
/// peer's BarrierAck, `regression_extents_stay_in_the_activity_log_until_the_barrier_ack`).
#[test]
fn regression_9_a_lost_link_persists_the_bitmap() {
    for_seeds("bitmap on link loss", 0..8, |seed| {
        let mut cfg = cfg_c();
        cfg.al_extents = 9;
        cfg.resync_rate_kib = 1024;
        let mut c = synced_pair(seed, cfg);
        let mut rng = Rng::new(seed);
        admin(&mut c, 1, AdminCmd::Disconnect { force: false })?;
        // 16 MiB to resync at 1 MiB/s (after a 4 MiB burst): it is still running below.
        for k in 0..16u64 {
            c.write_at(0, k * 4 * MIB + 2 * MIB, MIB, false);
        }
        drain(&mut c, 0)?;
        connect(&mut c, 1)?;
        wait(
            &mut c,
            "the resync to start",
            Duration::from_secs(10),
            |c| c.nodes[0].engine.cstate() == ConnState::SyncSource,
        )?;
        // node-b's acks stop reaching node-a, whose writes sweep every extent.
        c.set_one_way(1, true);
        for _ in 0..3 {
            for k in 0..16u64 {
                let off = k * 4 * MIB + (rng.next_u64() % 256) * 4096;
                c.write_at(0, off, 8 * SECTOR, false);
            }
            c.run_for(ms(5));
        }
        wait(
            &mut c,
            "node-a to lose the link",
            Duration::from_secs(10),
            |c| c.nodes[0].engine.cstate() < ConnState::Connected,
        )?;
        c.crash(0);
        c.crash(1);
        c.set_one_way(1, false);
        c.restart(0).map_err(|e| e.to_string())?;
        c.restart(1).map_err(|e| e.to_string())?;
        promote(&mut c, 0)?;
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

// ---- regressions found by the revert table (issue 19, item 6) ----

/// A synced pair under `fencing` whose fence-peer answers only after 1.5-2 s (a cluster
/// manager that takes its time), written for a while, then partitioned.
fn slow_fenced_pair_partitioned(seed: u64, fencing: Fencing) -> Cluster {
    let mut cfg = cfg_c();
    cfg.fencing = fencing;
    cfg.fence_peer_us = (1_500_000, 2_000_000);
    let mut c = synced_pair(seed, cfg);
    write_for(&mut c, ms(50));
    c.set_cut(true);
    c
}

/// Keep 16 requests outstanding on node-a (random I/O, or 4 KiB FUA writes), one step at a
/// time, until `done`; at most `steps` steps.
fn load_node_a_until(
    c: &mut Cluster,
    what: &str,
    step: Duration,
    steps: u32,
    fua_writes: bool,
    done: impl Fn(&Cluster) -> bool,
) -> R {
    for _ in 0..steps {
        if done(c) {
            return Ok(());
        }
        if c.outstanding_clients(0) < 16 {
            if fua_writes {
                let block = c.rng().next_u64() % 4096;
                c.write_at(0, block * 4096, 8 * SECTOR, true);
            } else {
                c.client_io(0);
            }
        }
        c.run_for(step);
    }
    Err(format!("timed out waiting for {what}: {}", describe(c)))
}

/// Stop 17: a new data generation that a link loss under frozen I/O put off (fencing
/// resource-and-stonith) starts before the next handshake. Here the partition heals while
/// fence-peer still runs (`fence_peer_us`: a cluster manager that answers after a second),
/// so the link is back before I/O thaws. The writes in flight at the link loss are on the
/// Primary only; without the new generation the handshake sees equal generations, which by
/// DRBD's rules means no resync. (rep resyncs them anyway since issue 19 #3: bits with equal
/// generations are resynced from the single Primary. The new generation is still what records
/// that the peer fell behind, in the UUID history every later handshake compares.)
#[test]
fn regression_deferred_generation_starts_before_the_next_handshake() {
    for_seeds("deferred generation", 0..6, |seed| {
        let mut c = slow_fenced_pair_partitioned(seed, Fencing::ResourceAndStonith);
        // Writes queue up behind the partition until node-a notices it and freezes I/O.
        load_node_a_until(&mut c, "node-a to freeze I/O", ms(1), 3000, false, |c| {
            c.nodes[0].engine.suspended_by_fencing()
        })?;
        let before = c.nodes[0].engine.uuids().current;
        c.set_cut(false);
        wait(&mut c, "the handshake", Duration::from_secs(5), |c| {
            c.nodes
                .iter()
                .all(|n| n.engine.cstate() >= ConnState::Connected)
        })?;
        if c.nodes[0].engine.uuids().current & !1 == before & !1 {
            return Err(format!(
                "node-a reconnected with the generation it had before the link loss: the handshake saw equal generations although the peer misses the writes in flight then ({})",
                describe(&c)
            ));
        }
        converge(&mut c, 0).map(|_| ())
    });
}

/// Stop 16 (a299bf4): activity-log extents of completed writes stay in the activity log
/// until the peer's BarrierAck says the writes are on its stable storage. Protocol A: the
/// Primary completes writes locally while the peer has not received them (its frames are held
/// up); more writes all over the device (al-extents 9) would evict those extents; then the
/// Primary loses power. Its activity-log replay is the only record of what the peer misses:
/// without the extents in it, the resync after the restart leaves those blocks different.
#[test]
fn regression_extents_stay_in_the_activity_log_until_the_barrier_ack() {
    for_seeds("AL extents until BarrierAck", 0..8, |seed| {
        let mut cfg = SimConfig::new(Protocol::A, DEVICE);
        cfg.al_extents = 9;
        let mut c = synced_pair(seed, cfg);
        let mut rng = Rng::new(seed ^ 0x16);
        write_for(&mut c, ms(30));
        drain(&mut c, 0)?;
        c.run_for(ms(100));
        // node-b gets nothing from now on (held, as TCP would over a dead path).
        c.set_one_way(0, true);
        for round in 0..6u64 {
            for k in 0..16u64 {
                let off = k * 4 * MIB + (rng.next_u64() % 1000 + round) * 4096;
                c.write_at(0, off, 8 * SECTOR, false);
            }
            c.run_for(ms(3));
        }
        c.run_for(ms(10));
        c.crash(0);
        c.set_one_way(0, false);
        c.run_for(ms(20));
        c.restart(0).map_err(|e| e.to_string())?;
        promote(&mut c, 0)?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// Seeds 2685 (C) and 5195 (A, B) of the 100,000-seed run: `new-current-uuid --clear-bitmap`
/// on node-a made node-b adopt node-a's new generation, but node-a's record of node-b's UUIDs
/// kept the handshake-time "just created" one. A SyncTarget finish on node-a (after an
/// `invalidate` there) adopted that stale current UUID, so at the next handshake the two
/// generations shared nothing: a false split brain, and both nodes StandAlone.
#[test]
fn regression_a_sync_target_adopts_the_peers_current_generation() {
    for_seeds("adopted generation", 0..4, |seed| {
        let mut c = synced_pair(seed, cfg_c());
        write_for(&mut c, ms(30));
        drain(&mut c, 0)?;
        admin(&mut c, 0, AdminCmd::Secondary)?;
        admin(&mut c, 1, AdminCmd::Primary { force: false })?;
        admin(&mut c, 0, AdminCmd::Invalidate)?;
        wait(
            &mut c,
            "the resync",
            Duration::from_secs(20),
            Cluster::settled,
        )?;
        let (a, b) = (c.nodes[0].engine.uuids(), c.nodes[1].engine.uuids());
        if a.current & !1 != b.current & !1 {
            return Err(format!(
                "after the resync node-a's current generation is {:016X}, node-b's {:016X}",
                a.current, b.current
            ));
        }
        for i in 0..2 {
            admin(&mut c, i, AdminCmd::Disconnect { force: false })?;
        }
        for i in 0..2 {
            admin(
                &mut c,
                i,
                AdminCmd::Connect {
                    discard_my_data: false,
                },
            )?;
        }
        wait(&mut c, "the reconnect", Duration::from_secs(20), |c| {
            c.settled()
                || c.nodes
                    .iter()
                    .any(|n| n.engine.cstate() == ConnState::StandAlone)
        })?;
        if !c.settled() {
            return Err(format!(
                "the reconnect after the resync failed: {}",
                describe(&c)
            ));
        }
        converge(&mut c, 1).map(|_| ())
    });
}

/// Seed 9430 of the 100,000-seed run: with csums-alg, a SyncTarget hashed its copy of a block
/// while the dead Primary's write to it was still queued for its slow disk. The new source
/// (the restarted Primary, which lost that unflushed write) had the same digest, so the bits
/// were cleared; then the stale write landed and the two disks differed for good.
#[test]
fn regression_a_sync_target_hashes_a_block_only_after_the_received_writes_to_it() {
    for_seeds("csums behind received writes", 0..12, |seed| {
        let mut cfg = SimConfig::new(Protocol::A, DEVICE);
        cfg.csums_alg = Some(DigestAlg::Crc32c);
        let mut c = synced_pair(seed, cfg);
        write_for(&mut c, ms(30));
        c.flush(0);
        drain(&mut c, 0)?;
        c.run_for(ms(20));
        c.set_disk_delay(1, ms(40));
        // Unflushed writes: node-b has them queued; node-a keeps each sector with even odds
        // through its power loss, so of 512 blocks a few lose every sector (as in the seed).
        for k in 0..512u64 {
            c.write_at(0, k * 4096, 8 * SECTOR, false);
        }
        c.run_for(Duration::from_micros(500));
        c.crash(0);
        c.run_for(ms(2));
        c.set_disk_delay(1, Duration::ZERO);
        c.restart(0).map_err(|e| e.to_string())?;
        converge(&mut c, 0).map(|_| ())
    });
}

/// Seeds 88,066 and 89,362 of the 100,000-seed run (fencing resource-only, C): a partition,
/// the Primary notices it and completes the writes the peer never confirmed, acknowledging
/// them at once; its new generation and their bits were still on their way to its metadata
/// disk when it lost power. The Secondary, promoted (the fence-peer finds the Primary down),
/// starts its own generation from the old one; the restarted node, holding the old
/// generation, became its SyncTarget without a split brain, and the acknowledged writes were
/// overwritten. The replies now wait for that superblock (`Freeze`'s generation gate).
#[test]
fn regression_a_primary_alone_acknowledges_only_once_its_new_generation_is_on_disk() {
    for_seeds("generation gate", 0..8, |seed| {
        let mut c = slow_fenced_pair_partitioned(seed, Fencing::ResourceOnly);
        // FUA writes (durable once acknowledged) wait for the peer's acks until node-a notices
        // the partition; it dies at once.
        load_node_a_until(
            &mut c,
            "node-a to notice the partition",
            Duration::from_micros(10),
            500_000,
            true,
            |c| c.nodes[0].engine.cstate() < ConnState::Connected,
        )?;
        c.crash(0);
        c.set_cut(false);
        promote(&mut c, 1)?;
        write_for(&mut c, ms(50));
        c.restart(0).map_err(|e| e.to_string())?;
        converge(&mut c, 1).map(|_| ())
    });
}

/// Seed 5110 of the long run's re-run on 162b0e0 (protocol C): `detach --force` on the
/// Primary found no data I/O in flight and wrote its last superblock clean; a client write that
/// was waiting for an activity-log transaction then went on, to the closing disk (after that
/// superblock) and to the peer, which did not know yet that we were going Diskless and so
/// recorded nothing. The Diskless Primary lost power with the write only in its disk's cache;
/// restarted, the disk was clean and UpToDate and the resync from the peer skipped the block:
/// UpToDate without an acknowledged write. A write that would start while a healthy disk
/// closes now waits, and goes out after our Diskless state. (The schedule, replayed: a
/// targeted test did not reach the window; see the closing note.)
#[test]
fn regression_writes_during_a_detach_go_out_after_the_diskless_state() {
    let mut summary = Summary::default();
    run_seed(5110, Protocol::C, Fencing::DontCare, &mut summary)
        .unwrap_or_else(|e| panic!("seed 5110 (protocol C): {e}"));
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
