//! Goal: what protocols A and B promise holds with real processes when the Secondary's disk
//! lags behind the writes it receives (`repadm fault RES disk-delay MS`), so that they queue
//! on the Secondary (behind overlapping writes still being written):
//!
//! - protocol B: every write the Secondary acknowledged on receipt (and the client therefore
//!   got acknowledged) survives a `kill -9` of the Primary: the Secondary, promoted, holds it
//!   (it still writes what was queued when the link went away);
//! - a switchover (`secondary` on one node, `primary` on the other) under A and B: the new
//!   Primary's write to a block lands after the old Primary's writes to it still queued there,
//!   its reads see them, and the newer write wins on both disks.

use std::time::Duration;

use rep_tests::faults::{
    block_bytes, check_node, credit, decode_block, fault, kill9, promote, read_export, suite_pair,
    verify_oos, wait_in_sync, wait_no_clients, Done, Model, Proto, Writer, BLOCK,
};
use rep_tests::pair::up_pair_within;
use rep_tests::{backing_bytes, wait_for, Cluster};

const DISK_MIB: u64 = 16;

fn cluster(name: &str, proto: Proto) -> Cluster {
    suite_pair(name).mib(DISK_MIB).protocol(proto).build()
}

/// Received operations of node `n` not yet on its disk (`ua:`).
fn unacked(c: &Cluster, n: usize) -> u64 {
    c.nodes[n].status_json()["counters"]["ua"]
        .as_u64()
        .unwrap_or(0)
}

/// The write sequence number block `block` of `image` holds.
fn seq_of(image: &[u8], block: u64) -> u64 {
    let b = &image[(block * BLOCK) as usize..((block + 1) * BLOCK) as usize];
    decode_block(b, block).unwrap_or_else(|e| panic!("block {block}: {e}"))
}

/// Protocol B, the Secondary's disk 400 ms slow: rounds of writes to the same 8 blocks, each
/// acknowledged (RecvAck) long before the Secondary wrote it, so later rounds queue behind
/// earlier ones. Then the Primary is killed; the Secondary, promoted, must hold every one of
/// them. Before the fix the queued writes were dropped when the link went down.
#[test]
fn protocol_b_failover_keeps_every_write_the_secondary_acknowledged() {
    let c = cluster("protob-kill", Proto::B);
    up_pair_within(&c, 30, 30);
    fault(c.b(), &["disk-delay", "400"]);
    let mut m = Model::new(Proto::B, 64);
    let mut w = Writer::connect(c.a(), 0);
    for round in 0..5u64 {
        for k in 0..8u64 {
            let block = (k * 3 + round) % 16;
            let done = w.write_one(&mut m, block, 1 + k % 2, false);
            let dones: Vec<Done> = done.into_iter().collect();
            assert_eq!(dones.len(), 1, "write {round}/{k} was not acknowledged");
            let peer = credit(&c, 0, true);
            assert_eq!(
                peer,
                Some(1),
                "node-b must stay in sync while the writes go"
            );
            m.apply(&dones, 0, peer);
        }
    }
    let queued = unacked(&c, 1);
    eprintln!("protocol B: node-b holds {queued} received writes not yet on its disk");
    assert!(
        queued >= 8,
        "the slow disk should hold writes back on node-b (ua {queued})"
    );
    kill9(c.a());
    wait_for(Duration::from_secs(20), "node-b to see the link go", || {
        (c.b().status_json()["cstate"] != "Connected").then_some(())
    });
    promote(&c, 1);
    // What was received is written before it is checked (the read order after a switchover
    // has its own test below): this test is about writes dropped, not read too early.
    wait_for(
        Duration::from_secs(30),
        "node-b to write what it received",
        || (unacked(&c, 1) == 0).then_some(()),
    );
    let rep = check_node(&c, &m, 1);
    assert!(
        rep.lost == 0 && rep.bad_blocks == 0 && rep.checked > 0,
        "node-b after the failover: {} of {} acknowledged writes lost, {} bad blocks: {:?}",
        rep.lost,
        rep.checked,
        rep.bad_blocks,
        rep.problems
    );
    eprintln!(
        "protocol B: node-b holds all {} acknowledged writes after the failover",
        rep.checked
    );
    // Failback: node-a comes back as SyncTarget of node-b; the pair ends identical.
    fault(c.b(), &["disk-delay", "0"]);
    c.a().ok(&["up", "r0"]);
    wait_in_sync(&c, 60);
    assert_eq!(verify_oos(c.b()), 0, "verify after the failback");
    let rep_b = check_node(&c, &m, 1);
    assert_eq!(rep_b.lost + rep_b.bad_blocks, 0, "{:?}", rep_b.problems);
}

/// Two writes to block 0 on node-a (the second queued behind the first on node-b's slow
/// disk), a switchover, then a third write to block 0 on node-b: the third must win on both
/// disks, and a read on node-b before it must see the second.
fn switchover_keeps_write_order(proto: Proto) {
    let c = cluster(&format!("switch-{}", proto.letter()), proto);
    up_pair_within(&c, 30, 30);
    fault(c.b(), &["disk-delay", "1500"]);
    let mut m = Model::new(proto, 16);
    let mut w = Writer::connect(c.a(), 0);
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let done = w.write_one(&mut m, 0, 1, false);
        let Some(Done::Write(seq)) = done else {
            panic!("a write on node-a was not acknowledged: {done:?}");
        };
        seqs.push(seq);
    }
    w.close();
    wait_no_clients(c.a());
    c.a().ok(&["secondary", "r0"]);
    promote(&c, 1);
    let queued = unacked(&c, 1);
    eprintln!(
        "protocol {}: node-b promoted with {queued} received writes not yet on its disk",
        proto.letter()
    );
    assert!(queued > 0, "node-b should still be writing node-a's writes");
    let seen = seq_of(&read_export(c.b(), BLOCK), 0);
    assert_eq!(
        seen, seqs[1],
        "a read on the new Primary must see the old Primary's last write"
    );
    let mut w = Writer::connect(c.b(), 1);
    let done = w.write_one(&mut m, 0, 1, false);
    let Some(Done::Write(newest)) = done else {
        panic!("the write on node-b was not acknowledged: {done:?}");
    };
    w.close();
    fault(c.b(), &["disk-delay", "0"]);
    for n in 0..2 {
        wait_for(
            Duration::from_secs(30),
            "the received writes to reach the disk",
            || (unacked(&c, n) == 0).then_some(()),
        );
    }
    let mut expect = vec![0u8; BLOCK as usize];
    block_bytes(newest, 0, &mut expect);
    for n in &c.nodes {
        let got = backing_bytes(n, 0, BLOCK);
        assert_eq!(
            seq_of(&got, 0),
            newest,
            "{}: block 0 must hold the newest write ({newest}), not an older one ({seqs:?})",
            n.name
        );
        assert_eq!(got, expect, "{}: block 0", n.name);
    }
    assert_eq!(verify_oos(c.b()), 0, "verify after the switchover");
}

#[test]
fn switchover_keeps_write_order_protocol_a() {
    switchover_keeps_write_order(Proto::A);
}

#[test]
fn switchover_keeps_write_order_protocol_b() {
    switchover_keeps_write_order(Proto::B);
}
