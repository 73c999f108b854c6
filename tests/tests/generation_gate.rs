//! Goal: a Primary that goes on without its peer acknowledges a write only once the new data
//! generation that records it is durable (docs/architecture.md §9.3, "the generation gate").
//! Found by the simulator (seeds 88,066 and 89,362 of the long run): the writes the peer never
//! confirmed were acknowledged the moment the link was declared lost, while the superblock with
//! the new generation was still on its way; a power loss then left the old generation on disk,
//! the promoted Secondary's generation descended from it, and the restarted node became its
//! SyncTarget without a split brain: acknowledged FUA writes overwritten.
//!
//! Here with real processes: node-a's metadata disk is slow (`meta-delay`), node-b is frozen
//! (SIGSTOP) while FUA writes wait for its acks, node-a declares the link lost (ping-int 1,
//! ping-timeout 2 s), and dies (kill -9 with a volatile cache: what was not flushed is gone)
//! before its superblock lands; node-b is killed unread (the writes never reached it, as in a
//! partition), comes back and takes over; node-a comes back. Either a split brain is
//! detected (the new generation reached the disk), or no write acknowledged after the link
//! loss may be missing from the surviving data.

use std::process::Command;
use std::time::Duration;

use rep_tests::faults::{
    check_node, credit, fault, kill9, promote, suite_pair, up_volatile_pair, verify_oos,
    wait_in_sync, Done, Model, Proto, Writer,
};
use rep_tests::wait_for;

fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_primary_alone_acknowledges_only_once_its_new_generation_is_durable() {
    let c = suite_pair("gen-gate")
        .mib(16)
        .protocol(Proto::C)
        .net("ping-int 1")
        .build();
    up_volatile_pair(&c);
    let (a, b) = (c.a(), c.b());
    let mut m = Model::new(Proto::C, 64);
    let mut w = Writer::connect(a, 0);
    // Blocks 0..8 share one activity-log extent: hot after these, so the writes below need no
    // metadata write of their own.
    for block in 0..8 {
        let done: Vec<Done> = w.write_one(&mut m, block, 1, true).into_iter().collect();
        assert_eq!(done.len(), 1, "warm-up write {block} not acknowledged");
        m.apply(&done, 0, credit(&c, 0, true));
    }
    fault(a, &["meta-delay", "6000"]);
    let b_pid = b.pid().expect("node-b's repd pid");
    signal(b_pid, "-STOP");
    let sent: Vec<u64> = (0..8).map(|k| w.send_write(&mut m, k, 1, true)).collect();
    wait_for(
        Duration::from_secs(20),
        "node-a to declare the link lost",
        || (a.status_json()["cstate"] != "Connected").then_some(()),
    );
    // The superblock carrying node-a's new generation waits 6 s on the metadata thread; the
    // writes' replies must wait for it. Give them time to arrive if they were sent anyway.
    std::thread::sleep(Duration::from_millis(1500));
    kill9(a);
    let after_loss = w.collect(usize::MAX);
    eprintln!(
        "{} of the {} writes in flight at the link loss were acknowledged before node-a died",
        after_loss.len(),
        sent.len()
    );
    // node-b never got the writes: frozen, it read nothing of what TCP had queued for it, and
    // a kill drops that (as a partition would have). It comes back and takes over alone.
    kill9(b);
    b.ok(&["up", "r0"]);
    promote(&c, 1);
    a.ok(&["up", "r0"]);
    // node-a's superblock still holds the generation node-b's descends from: node-a becomes
    // node-b's SyncTarget, no split brain. The pair's data is then node-b's, and every write
    // the client was told is durable must be in it.
    wait_for(Duration::from_secs(60), "node-a back in sync", || {
        let s = a.status_json();
        assert!(
            s["split_brain"] != true,
            "split brain: node-a's new generation reached its disk before the power loss (the meta-delay did not hold it): {s}"
        );
        (s["cstate"] == "Connected" && s["disk"] == "UpToDate" && s["peer_disk"] == "UpToDate")
            .then_some(())
    });
    wait_in_sync(&c, 30);
    m.apply(&after_loss, 0, Some(1));
    let rep = check_node(&c, &m, 1);
    assert!(
        rep.lost == 0 && rep.bad_blocks == 0 && rep.checked >= 8,
        "node-b after the failover: {} of {} acknowledged writes lost, {} bad blocks: {:?}",
        rep.lost,
        rep.checked,
        rep.bad_blocks,
        rep.problems
    );
    assert_eq!(verify_oos(b), 0, "verify after node-a's resync");
}
