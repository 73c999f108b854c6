//! Goal: after `adjust` changes a setting the two nodes agree on at the handshake, the engine
//! itself reconnects the link its peer refuses until the peer is adjusted too (no retry loop in
//! the daemon), and an explicit `disconnect` ends that.
//! Method: the deterministic simulator (two engines, simulated network); `Cluster::reconfigure`
//! is what the daemon's adjust feeds the engine.

use std::time::Duration;

use rep_replicator::core::{AdminCmd, ConnState};
use rep_replicator::sim::cluster::Cluster;
use rep_replicator::sim::config::SimConfig;
use rep_resources::Protocol;

const DEVICE: u64 = 16 << 20;

fn connected_pair(seed: u64) -> Cluster {
    let mut c = Cluster::with_config(seed, SimConfig::new(Protocol::C, DEVICE));
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
    assert!(
        run_until(&mut c, Duration::from_secs(10), both_connected),
        "never connected"
    );
    c
}

fn both_connected(c: &Cluster) -> bool {
    c.nodes
        .iter()
        .all(|n| n.engine.cstate() == ConnState::Connected)
}

/// Run the simulation until `cond` holds, at most `limit`; whether it held.
fn run_until(c: &mut Cluster, limit: Duration, cond: impl Fn(&Cluster) -> bool) -> bool {
    let step = Duration::from_millis(5);
    let mut t = Duration::ZERO;
    while !cond(c) {
        if t >= limit {
            return false;
        }
        c.run_for(step);
        t += step;
    }
    true
}

#[test]
fn adjusting_the_nodes_one_after_the_other_reconnects_them() {
    for seed in 1..=8 {
        let mut c = connected_pair(seed);
        c.reconfigure(0, |cfg| cfg.protocol = Protocol::A);
        // node-b still runs protocol C: every handshake is refused, the link stays down.
        assert!(
            !run_until(&mut c, Duration::from_secs(5), both_connected),
            "seed {seed}: connected with different protocols"
        );
        c.reconfigure(1, |cfg| cfg.protocol = Protocol::A);
        assert!(
            run_until(&mut c, Duration::from_secs(5), both_connected),
            "seed {seed}: the engines did not reconnect after both were adjusted: {:?}",
            c.nodes
                .iter()
                .map(|n| n.engine.cstate())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_disconnect_ends_the_reconnect_attempts_of_an_adjust() {
    for seed in 1..=4 {
        let mut c = connected_pair(seed);
        c.reconfigure(0, |cfg| cfg.protocol = Protocol::A);
        c.run_for(Duration::from_secs(2));
        // StandAlone or between two attempts: either way the operator's word is final.
        let _ = c.admin(0, AdminCmd::Disconnect { force: false });
        c.reconfigure(1, |cfg| cfg.protocol = Protocol::A);
        c.run_for(Duration::from_secs(5));
        assert_eq!(
            c.nodes[0].engine.cstate(),
            ConnState::StandAlone,
            "seed {seed}: node-a reconnected after its disconnect"
        );
    }
}
