//! Goal: `kill -9` of either node at seeded points of a write + flush load through the NBD
//! export, with failover to the other node when the Primary dies and failback at the end,
//! loses no acknowledged write and leaves the pair identical (verify finds 0 blocks out of
//! sync).
//!
//! What is asserted (protocol C, no volatile cache: a process crash keeps the page cache, so
//! a write is on a node once that node completed it): every acknowledged write — in
//! particular every FUA write and every write acknowledged before an acknowledged FLUSH — is
//! read back from the node that ends Primary, and, after a clean failover and failback, from
//! each node as Primary. A write counts for the peer only while the schedule had it in sync
//! (Connected, UpToDate/UpToDate: protocol C's WriteAck means the peer wrote it); while the
//! peer is down or resyncing, only for the Primary, and a finished resync gives the target
//! what the source holds.
//!
//! Failover follows DRBD's rule: the survivor is promoted (without `--force`) only if it was
//! in sync when the Primary died; otherwise (it was down or still SyncTarget) the killed
//! Primary is restarted and promoted again, as a cluster manager with fencing would.
//!
//! Method: two real repd processes on /dev/shm, the harness's raw NBD client sending pipelined
//! batches of tagged writes (some FUA) and FLUSHes, 2–4 kills per schedule, a kill often with
//! requests in flight and sometimes while a resync runs. Schedules are seeded
//! (`REP_FAULT_SEED`, `REP_FAULT_ROUNDS`; see `rep_tests::faults`).

use std::time::Duration;

use rep_tests::faults::{
    check_node, credit, in_sync_now, kill9, promote, run_batches, run_schedules, schedule_seeds,
    suite_pair, verify_oos, wait_in_sync, wait_no_clients, Model, NodeIx, Proto, Rng, RoundStats,
    Workload, Writer,
};
use rep_tests::pair::up_pair_within;
use rep_tests::{wait_for, Cluster};

const DISK_MIB: u64 = 32;
/// The written area: the first 24 MiB, six activity-log extents.
const REGION_BLOCKS: u64 = 24 * 256;

fn cluster(seed: u64) -> Cluster {
    suite_pair(&format!("k9-{seed}")).mib(DISK_MIB).build()
}

/// Clean role switch: the client is gone, `from` demotes, `to` promotes.
fn switch(c: &Cluster, from: NodeIx, to: NodeIx) {
    wait_no_clients(&c.nodes[from]);
    c.nodes[from].ok(&["secondary", "r0"]);
    c.nodes[to].ok(&["primary", "r0"]);
}

fn round(seed: u64) -> RoundStats {
    let mut rng = Rng::new(seed);
    let wl = Workload::swarm(&mut rng);
    let c = cluster(seed);
    up_pair_within(&c, 30, 30);
    let mut st = RoundStats::default();
    let mut m = Model::new(Proto::C, REGION_BLOCKS);
    let kills = rng.range(2, 4);
    eprintln!("fault-suite: kill9 REP_FAULT_SEED={seed}: {kills} kills; {wl:?}");
    let mut prim: NodeIx = 0;
    let mut in_sync = true;
    let mut w = Writer::connect(c.a(), 0);
    for k in 0..kills {
        let batches = rng.range(3, 30);
        run_batches(&c, &mut w, &mut m, &mut rng, &wl, batches, in_sync);
        let victim = if rng.pct(50) { prim } else { 1 - prim };
        // The kill comes with a batch in flight, some of its replies read.
        w.send_batch(&mut m, &mut rng, &wl);
        let before = rng.below(w.inflight() as u64 + 1) as usize;
        let dones = w.collect(before);
        m.apply(&dones, prim, credit(&c, prim, in_sync));
        kill9(&c.nodes[victim]);
        st.faults += 1;
        let other = 1 - victim;
        if victim == prim {
            // Replies the Primary sent before it died; its status file shows its last state.
            let dones = w.collect(usize::MAX);
            m.apply(&dones, prim, credit(&c, prim, in_sync));
            let fail_over = in_sync && c.nodes[other].status_json()["disk"] == "UpToDate";
            eprintln!(
                "fault-suite: kill {k}: Primary {} killed; {}",
                c.nodes[victim].name,
                if fail_over {
                    "failover to the peer"
                } else {
                    "peer not in sync: the Primary restarts and is promoted again"
                }
            );
            if fail_over {
                wait_for(Duration::from_secs(20), "the survivor to notice", || {
                    (c.nodes[other].status_json()["cstate"] == "WFConnection").then_some(())
                });
                c.nodes[other].ok(&["primary", "r0"]);
                prim = other;
                c.nodes[victim].ok(&["up", "r0"]);
            } else {
                c.nodes[victim].ok(&["up", "r0"]);
                promote(&c, victim);
            }
            w = Writer::connect(&c.nodes[prim], prim);
        } else {
            eprintln!(
                "fault-suite: kill {k}: Secondary {} killed",
                c.nodes[victim].name
            );
            let dones = w.collect(usize::MAX);
            m.apply(&dones, prim, None);
            let alone = rng.range(0, 10);
            run_batches(&c, &mut w, &mut m, &mut rng, &wl, alone, false);
            c.nodes[victim].ok(&["up", "r0"]);
        }
        in_sync = false;
        // Either wait for the resync, or keep writing while it runs (the next kill may hit it).
        if rng.pct(50) {
            wait_in_sync(&c, 60);
            m.synced(prim, 1 - prim);
            in_sync = true;
        }
    }
    let batches = rng.range(3, 15);
    run_batches(&c, &mut w, &mut m, &mut rng, &wl, batches, in_sync);
    wait_in_sync(&c, 60);
    if !in_sync {
        m.synced(prim, 1 - prim);
    }
    assert!(in_sync_now(&c.nodes[prim]));
    assert_eq!(w.errors, 0, "requests failed with an NBD error");
    w.close();

    let other = 1 - prim;
    st.add_check(
        &format!("{} (ends Primary)", c.nodes[prim].name),
        &check_node(&c, &m, prim),
    );
    let oos = verify_oos(&c.nodes[prim]);
    if oos != 0 {
        st.fail(format!("verify found {oos} blocks out of sync"));
    }
    switch(&c, prim, other);
    st.add_check(
        &format!("{} (after failover)", c.nodes[other].name),
        &check_node(&c, &m, other),
    );
    switch(&c, other, prim);
    st.add_check(
        &format!("{} (after failback)", c.nodes[prim].name),
        &check_node(&c, &m, prim),
    );
    wait_no_clients(&c.nodes[prim]);
    c.nodes[prim].ok(&["secondary", "r0"]);
    st
}

#[test]
fn kill9_of_either_node_under_writes_loses_no_acknowledged_write() {
    let seeds = schedule_seeds(4000, 4);
    run_schedules("kill9", &seeds, round);
}
