//! The seeded runs: a cluster configured from the seed, set up, then three rounds of client
//! load, a drawn fault and convergence; the seeds a run covers (`REP_SIM_SEEDS`,
//! `REP_SIM_SEEDS_FROM`, `REP_SIM_SEED`) and the summary it prints.

use std::time::{Duration, Instant};

use crate::faults::{Fault, FAULTS, FENCING_FAULTS};
use crate::harness::{
    admin, connect, converge, ms, one_in, promote, rand, verify, wait, with_cluster, write_for,
    DEVICE, MIB, R,
};
use crate::witness::{WITNESS_DEATH_FAULTS, WITNESS_FAULTS};
use rep_replicator::core::rng::Rng;
use rep_replicator::core::{AdminCmd, ConnState, DiskState};
use rep_replicator::sim::cluster::Cluster;
use rep_replicator::sim::config::{SimConfig, SimStats};
use rep_replicator::sim::model::ModelStats;
use rep_resources::quorum::{OnNoQuorum, QuorumConf};
use rep_resources::{DigestAlg, Fencing, Protocol};

/// What one seed did, for the summary.
#[derive(Default)]
pub(crate) struct Summary {
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

/// How a seeded run is configured beyond the protocol: fencing, and quorum (`Some`: `quorum
/// majority` with that `on-no-quorum`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub fencing: Fencing,
    pub quorum: Option<OnNoQuorum>,
    /// A diskless witness as the third node (`SimConfig::witness`): the three-node schedules.
    pub witness: bool,
    /// The schedules in which the witness dies and restarts (`WITNESS_DEATH_FAULTS`).
    pub witness_dies: bool,
}

impl Policy {
    pub(crate) fn fencing(fencing: Fencing) -> Policy {
        Policy {
            fencing,
            quorum: None,
            witness: false,
            witness_dies: false,
        }
    }

    /// Quorum majority with a witness (fencing resource-and-stonith, as the engine's
    /// configuration makes it).
    pub(crate) fn witness(on_no_quorum: OnNoQuorum) -> Policy {
        Policy {
            fencing: Fencing::ResourceAndStonith,
            quorum: Some(on_no_quorum),
            witness: true,
            witness_dies: false,
        }
    }

    /// The same, with the schedules in which the witness dies.
    pub(crate) fn dying_witness(on_no_quorum: OnNoQuorum) -> Policy {
        Policy {
            witness_dies: true,
            ..Policy::witness(on_no_quorum)
        }
    }
    /// The engine, not the schedule, decides who may be promoted.
    fn engine_decides(&self) -> bool {
        self.fencing != Fencing::DontCare || self.quorum.is_some()
    }
}

pub(crate) fn seeded_cluster(seed: u64, protocol: Protocol, policy: Policy) -> Cluster {
    let mut rng = Rng::new(seed ^ 0xc0f1);
    let mut cfg = SimConfig::new(protocol, DEVICE);
    cfg.fencing = policy.fencing;
    if let Some(on_no_quorum) = policy.quorum {
        cfg.quorum = QuorumConf::majority(on_no_quorum);
    }
    cfg.witness = policy.witness;
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

pub(crate) fn setup(c: &mut Cluster, rng: &mut Rng) -> R {
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

pub(crate) fn run_seed(seed: u64, protocol: Protocol, policy: Policy, summary: &mut Summary) -> R {
    let mut c = seeded_cluster(seed, protocol, policy);
    let mut rng = Rng::new(seed ^ 0xfa);
    let faults: Vec<Fault> = if policy.witness_dies {
        WITNESS_DEATH_FAULTS.to_vec()
    } else if policy.witness {
        WITNESS_FAULTS.to_vec()
    } else if !policy.engine_decides() {
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
pub(crate) fn seeds(share: f64) -> Vec<u64> {
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

pub(crate) fn run_protocol(protocol: Protocol, share: f64, test: &str) {
    run_seeds(protocol, Policy::fencing(Fencing::DontCare), share, test);
}

pub(crate) fn run_seeds(protocol: Protocol, policy: Policy, share: f64, test: &str) {
    let started = Instant::now();
    let mut summary = Summary::default();
    for seed in seeds(share) {
        if let Err(e) = run_seed(seed, protocol, policy, &mut summary) {
            eprintln!(
                "seed {seed} (protocol {protocol}) FAILED: {e}\n  replay: REP_SIM_SEED={seed} cargo test --release -p rep-replicator --test sim {test} -- --nocapture"
            );
            summary.failed.push(seed);
        }
    }
    let mut quorum = policy.quorum.map_or(String::new(), |q| {
        format!(", quorum majority, on-no-quorum {q}")
    });
    if policy.witness {
        quorum.push_str(", a diskless witness");
    }
    summary.print(
        &format!("protocol {protocol}, fencing {}{quorum}", policy.fencing),
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
