//! What every simulation test uses: the cluster driven like an operator would (attach,
//! connect, promote, heal, converge, verify), waits with a deadline, seeded draws, and the
//! runner that turns an invariant violation (a panic) into a failing seed with its schedule.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use rep_replicator::core::rng::Rng;
use rep_replicator::core::{AdminCmd, ConnState, DiskState, Refusal, Role};
use rep_replicator::sim::cluster::Cluster;
use rep_replicator::sim::config::SimConfig;
use rep_resources::{Fencing, Protocol};

pub(crate) const DEVICE: u64 = 64 << 20;
pub(crate) const MIB: u64 = 1 << 20;

pub(crate) type R<T = ()> = Result<T, String>;

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn describe(c: &Cluster) -> String {
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

pub(crate) fn wait(
    c: &mut Cluster,
    what: &str,
    limit: Duration,
    cond: impl Fn(&Cluster) -> bool,
) -> R {
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
pub(crate) fn write_for(c: &mut Cluster, d: Duration) {
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

pub(crate) fn admin(c: &mut Cluster, i: usize, cmd: AdminCmd) -> R<String> {
    let what = format!("{cmd:?}");
    c.admin(i, cmd)
        .map_err(|e| format!("{what} on node {i} refused: {e} ({})", describe(c)))
}

pub(crate) fn drain(c: &mut Cluster, i: usize) -> R {
    wait(
        c,
        "client requests to drain",
        Duration::from_secs(30),
        |c| c.outstanding_clients(i) == 0,
    )
}

pub(crate) fn promote(c: &mut Cluster, i: usize) -> R {
    // Like a cluster manager: retry while the node is between states (a handshake or a
    // resync under way); with fencing a freshly restarted pair is still negotiating.
    for _ in 0..500 {
        let e = match c.admin(i, AdminCmd::Primary { force: false }) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // With quorum on, a node waits for its peer to come back before it may be Primary;
        // with a witness, fence-peer fails (1) until the witness links are up after a restart.
        let peer_coming = (matches!(e, Refusal::NoQuorum { .. })
            || c.cfg.witness && matches!(e, Refusal::PrimaryNop { .. }))
            && c.nodes[1 - i].up;
        let transient = matches!(e, Refusal::InTransientState { .. })
            || peer_coming
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

pub(crate) fn demote(c: &mut Cluster, i: usize) -> R {
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

pub(crate) fn connect(c: &mut Cluster, i: usize) -> R {
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
pub(crate) fn heal(c: &mut Cluster, prefer: usize) -> R<usize> {
    if c.partitioned() {
        c.set_cut(false);
    }
    for i in 0..2 {
        c.set_witness_cut(i, false);
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
    if c.cfg.witness {
        wait(c, "both witness links", Duration::from_secs(10), |c| {
            (0..2).all(|i| c.witness_seen(i) && c.witness_sees(i))
        })?;
    }
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
pub(crate) fn resolve_split_brain(c: &mut Cluster, prefer: usize) -> R {
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
pub(crate) fn converge(c: &mut Cluster, prefer: usize) -> R<usize> {
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
pub(crate) fn verify(c: &mut Cluster, from: usize) -> R<u64> {
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
pub(crate) fn in_sync(c: &Cluster) -> bool {
    c.settled()
}

/// True once in `n` draws.
pub(crate) fn one_in(rng: &mut Rng, n: u64) -> bool {
    rng.next_u64().is_multiple_of(n)
}

pub(crate) fn rand(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

thread_local! {
    /// Panics on this thread are invariant violations reported with their seed: keep the
    /// default hook (and its backtrace) quiet for them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub(crate) fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
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

pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Run `body` on a fresh cluster; a panic (invariant violation) becomes an error carrying the
/// schedule so far.
pub(crate) fn with_cluster(c: &mut Cluster, body: impl FnOnce(&mut Cluster) -> R) -> R {
    let r = quiet_panics(|| catch_unwind(AssertUnwindSafe(|| body(c))));
    let r = match r {
        Ok(r) => r,
        Err(p) => Err(panic_text(p.as_ref())),
    };
    r.map_err(|e| format!("{e}\n  schedule:\n    {}", c.trace.join("\n    ")))
}

// ---- targeted tests ----

/// Both nodes attached and connected (Secondary/Secondary, Inconsistent).
pub(crate) fn connected_pair(seed: u64, cfg: SimConfig) -> Cluster {
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
pub(crate) fn synced_pair(seed: u64, cfg: SimConfig) -> Cluster {
    let mut c = connected_pair(seed, cfg);
    c.admin(0, AdminCmd::NewCurrentUuid { clear_bitmap: true })
        .expect("new-current-uuid");
    c.admin(0, AdminCmd::Primary { force: false })
        .expect("primary");
    wait(&mut c, "settled", Duration::from_secs(10), Cluster::settled).expect("settled");
    c
}

pub(crate) fn cfg_c() -> SimConfig {
    SimConfig::new(Protocol::C, DEVICE)
}

/// Run a targeted scenario for each seed; fail with every failing seed's story.
pub(crate) fn for_seeds(
    name: &str,
    seeds: impl IntoIterator<Item = u64>,
    mut f: impl FnMut(u64) -> R,
) {
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

pub(crate) fn write_without_errors(c: &mut Cluster, p: usize, d: Duration) -> R {
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
