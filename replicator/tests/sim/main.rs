//! Deterministic simulation (docs/architecture.md §11.4, §12.3): two engines, a simulated network and simulated
//! storage with volatile caches (see `rep_replicator::sim`), seeded schedules of partitions
//! (both ways and one way), power loss (one node, both one after the other, both at once,
//! during a resync, during a verify, in the middle of a metadata write), detach/attach, Diskless
//! promotion, disk and flush failures and `invalidate`, under a client load of 512 B to 32 MiB
//! requests with FUA, FLUSH, TRIM, WRITE_ZEROES and reads. After every fault the cluster is
//! healed and must converge: both nodes UpToDate, both durable images identical and holding
//! every acknowledged write the data model says must have survived. The invariants checked after
//! every input are listed in `sim/cluster/mod.rs`.
//!
//! Seeds: `REP_SIM_SEEDS=N` runs N seeds (default 1000: half protocol C, a quarter each A and
//! B); `REP_SIM_SEED=S[,S2…]` replays exactly those seeds (add `REP_SIM_LOG=1` for the engines'
//! log). A failing seed prints `REP_SIM_SEED=S` and its schedule. Each seeded test prints a
//! summary: seeds run, faults injected by kind, writes checked, writes lost. A long run:
//! `REP_SIM_SEEDS=100000 cargo test --release -p rep-replicator --test sim seeded -- --nocapture`
//! (or in chunks with `REP_SIM_SEEDS_FROM`, see `seeded::seeds`).
//!
//! The `regression_*` tests reproduce, each with a small fixed set of seeds, the defects fixed in
//! the engine before this simulator could see them; each fails if its fix is reverted.

mod faults;
mod harness;
mod regressions;
mod seeded;
mod targeted;
mod witness;

use crate::seeded::{run_protocol, run_seeds, Policy};
use rep_resources::quorum::OnNoQuorum;
use rep_resources::{Fencing, Protocol};

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
        Policy::fencing(Fencing::ResourceAndStonith),
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
        Policy::fencing(Fencing::ResourceOnly),
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

/// Quorum between the two data nodes (`quorum majority`), no fencing: the same schedules as
/// with fencing (partitions, the Primary dying, the Secondary restarting), the engine deciding
/// who may be promoted. After every input at most one node is Primary with quorum, and a node
/// promoted holds every acknowledged write.
#[test]
fn seeded_faults_converge_with_quorum_io_error() {
    run_seeds(
        Protocol::C,
        Policy {
            fencing: Fencing::DontCare,
            quorum: Some(OnNoQuorum::IoError),
            witness: false,
            witness_dies: false,
        },
        0.1,
        "seeded_faults_converge_with_quorum_io_error",
    );
}

/// As above with `on-no-quorum suspend-io`: a Primary that loses its peer freezes its I/O.
#[test]
fn seeded_faults_converge_with_quorum_suspend_io() {
    run_seeds(
        Protocol::C,
        Policy {
            fencing: Fencing::DontCare,
            quorum: Some(OnNoQuorum::SuspendIo),
            witness: false,
            witness_dies: false,
        },
        0.1,
        "seeded_faults_converge_with_quorum_suspend_io",
    );
}

/// Two data nodes and a diskless witness (`quorum majority`, `on-no-quorum io-error`; fencing
/// resource-and-stonith with fence-peer relayed through the witness): the three-node partition
/// schedules (tests/sim/witness.rs), promotions by a simulated notify script. After every input
/// at most one node can write, a node that comes to write without its data peer holds every
/// acknowledged write, and no reconnect is a split brain.
#[test]
fn seeded_faults_converge_with_a_witness_io_error() {
    run_seeds(
        Protocol::C,
        Policy::witness(OnNoQuorum::IoError),
        0.1,
        "seeded_faults_converge_with_a_witness_io_error",
    );
}

/// As above with `on-no-quorum suspend-io`.
#[test]
fn seeded_faults_converge_with_a_witness_suspend_io() {
    run_seeds(
        Protocol::C,
        Policy::witness(OnNoQuorum::SuspendIo),
        0.1,
        "seeded_faults_converge_with_a_witness_suspend_io",
    );
}

/// Seed 447 of the schedule above: node-b, being promoted, asks through the witness to have
/// node-a outdated; the data link comes back and node-a starts resyncing node-b before the
/// relayed request reaches it. node-a outdated itself although it held the only UpToDate copy
/// (Outdated/Inconsistent, stuck); now a node connected to a peer that is behind it refuses
/// (core/fencing/fence_peer.rs cmd_peer_outdate). Fails without that refusal.
#[test]
fn regression_a_late_relayed_outdate_leaves_the_only_good_copy_alone() {
    let mut summary = seeded::Summary::default();
    let r = seeded::run_seed(
        447,
        Protocol::C,
        Policy::witness(OnNoQuorum::SuspendIo),
        &mut summary,
    );
    assert!(r.is_ok(), "seed 447: {r:?}");
}

/// Seed 1944 of the witness io-error schedule: node-a's fence-peer, started while the data
/// link was down, reached node-b through the witness after the link was back; node-b took it
/// for a one-way loss, dropped the link and outdated itself, cutting a verify. Now a connected
/// node pings its peer first and is outdated only if the link does not answer
/// (core/fencing/fence_peer.rs cmd_peer_outdate). Failed before that (ada77ca).
#[test]
fn regression_an_outdate_request_older_than_the_link_is_answered_by_a_ping() {
    let mut summary = seeded::Summary::default();
    let r = seeded::run_seed(
        1944,
        Protocol::C,
        Policy::witness(OnNoQuorum::IoError),
        &mut summary,
    );
    assert!(r.is_ok(), "seed 1944: {r:?}");
}

/// The witness dies and restarts, fresh (its process or its host), while the pair is whole, while
/// the Secondary is cut off alone and while only the data link is cut; a notify script tries to
/// promote the Secondary during and after. The checks of the witness schedules; the engine never
/// takes a dead witness's silence for an answer.
#[test]
fn seeded_faults_converge_when_the_witness_dies_suspend_io() {
    run_seeds(
        Protocol::C,
        Policy::dying_witness(OnNoQuorum::SuspendIo),
        0.1,
        "seeded_faults_converge_when_the_witness_dies_suspend_io",
    );
}

/// As above with `on-no-quorum io-error`.
#[test]
fn seeded_faults_converge_when_the_witness_dies_io_error() {
    run_seeds(
        Protocol::C,
        Policy::dying_witness(OnNoQuorum::IoError),
        0.1,
        "seeded_faults_converge_when_the_witness_dies_io_error",
    );
}
