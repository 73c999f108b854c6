//! Goal: no pair is Connected and UpToDate/UpToDate while bits say its disks differ and nothing
//! repairs them (issue 19, item 3).
//!
//! - `invalidate` / `invalidate-remote` are refused without a connection as drbdsetup 8.4
//!   refuses them: "State change failed: (-15) Need a connection to start verify or resync",
//!   exit code 11. The offline forms DRBD keeps still work (`invalidate-remote` on a StandAlone
//!   Primary: a full sync on connect), and so do both commands while Connected.
//! - Equal data generations that meet set bits (a demoted node killed with -9 comes back with
//!   its hot activity-log extents marked) are shown in `status` and `events` with the command
//!   that settles them, and that command does.
//!
//! Method: two real repd processes on 127.0.0.1/127.0.0.2 with identical random contents
//! (skip-initial-sync), checked from the outside: repadm's exit codes and messages, status
//! --json, the backing files compared byte for byte after `down`, online verify.

use std::time::Duration;

use rep_tests::assert::assert_same_data;
use rep_tests::pair::{same_random_data, up_pair, PairConf};
use rep_tests::{require_tool, wait_for, write_pattern, Cluster, Node};

const MIB: u64 = 16;

/// Identical random contents on both (as after a completed sync), skip-initial-sync, node-a
/// Primary.
fn synced_pair(test: &str) -> Cluster {
    let c = PairConf::new(test)
        .mib(MIB)
        .on_shm()
        .net("verify-alg sha1")
        .resync_rate("1G")
        .build();
    same_random_data(&c);
    up_pair(&c);
    c
}

fn oos_kib(n: &Node) -> u64 {
    n.status_json()["oos_kib"].as_u64().expect("oos_kib")
}

/// Bring both down and compare the backing files over the usable size.
fn down_and_compare(c: &Cluster) {
    let usable = c.a().status_json()["size_bytes"].as_u64().expect("size");
    for n in &c.nodes {
        let _ = n.repadm(&["secondary", "r0"]);
        n.ok(&["down", "r0"]);
    }
    assert_same_data(c.a(), c.b(), usable);
}

/// The command is refused as drbdsetup refuses SS_NEED_CONNECTION, and sets no bit.
fn assert_needs_connection(n: &Node, cmd: &str, state: &str) {
    let before = oos_kib(n);
    let (code, stderr) = n.fails(&[cmd, "r0"]);
    assert_eq!(
        code, 11,
        "{cmd} on {} ({state}): exit code; {stderr}",
        n.name
    );
    assert!(
        stderr
            .contains("r0: State change failed: (-15) Need a connection to start verify or resync"),
        "{cmd} on {} ({state}): {stderr}",
        n.name
    );
    assert_eq!(oos_kib(n), before, "a refused {cmd} set bits on {}", n.name);
}

#[test]
fn invalidate_and_invalidate_remote_need_a_connection() {
    let c = synced_pair("needconn");
    let (a, b) = (c.a(), c.b());
    // StandAlone Secondary: invalidate-remote has no peer to tell (invalidate stays allowed
    // there: DRBD's offline form, the Inconsistent disk is the next handshake's target).
    b.ok(&["disconnect", "r0"]);
    assert_needs_connection(b, "invalidate-remote", "StandAlone Secondary");
    b.ok(&["connect", "r0"]);
    b.wait_uptodate(20);
    // node-a StandAlone, node-b waiting for it (WFConnection).
    a.ok(&["disconnect", "r0"]);
    wait_for(
        Duration::from_secs(10),
        "node-b to wait for its peer",
        || (b.status_json()["cstate"] == "WFConnection").then_some(()),
    );
    assert_needs_connection(b, "invalidate", "WFConnection Secondary");
    assert_needs_connection(b, "invalidate-remote", "WFConnection Secondary");
    // A StandAlone Primary may invalidate its peer (DRBD: the full sync follows on connect).
    let nr_before = b.counter("nr_kib");
    a.ok(&["invalidate-remote", "r0"]);
    a.ok(&["connect", "r0"]);
    b.wait_uptodate(60);
    a.wait_uptodate(10);
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    let moved = (b.counter("nr_kib") - nr_before) * 1024;
    assert!(
        moved >= usable - 4096,
        "invalidate-remote of a StandAlone Primary moved only {moved} of {usable} bytes"
    );
    // Connected, both commands still start their full sync at once.
    let nr_before = b.counter("nr_kib");
    a.ok(&["invalidate-remote", "r0"]);
    wait_for(Duration::from_secs(20), "the full sync to node-b", || {
        (b.counter("nr_kib") >= nr_before + (usable >> 10) - 4).then_some(())
    });
    b.wait_uptodate(60);
    let nr_before = b.counter("nr_kib");
    b.ok(&["invalidate", "r0"]);
    wait_for(Duration::from_secs(20), "the full sync from node-a", || {
        (b.counter("nr_kib") >= nr_before + (usable >> 10) - 4).then_some(())
    });
    b.wait_uptodate(60);
    assert_eq!(a.verify_found(60), 0);
    for n in [a, b] {
        assert_eq!(oos_kib(n), 0, "{} has bits left", n.name);
    }
    down_and_compare(&c);
}

#[test]
fn equal_generations_with_bits_are_reported_and_invalidate_settles_them() {
    require_tool("qemu-io", "qemu-utils");
    let c = synced_pair("eqgen-bits");
    let (a, b) = (c.a(), c.b());
    for i in 0..4u64 {
        write_pattern(a, 0x40 + i as u8, i * (3 << 20), 64 << 10);
    }
    a.ok(&["secondary", "r0"]);
    wait_for(
        Duration::from_secs(10),
        "node-b to see the demotion",
        || (b.status_json()["peer_role"] == "Secondary").then_some(()),
    );
    // Unclean stop of a Secondary: no new generation anywhere, hot AL extents marked on attach.
    a.kill9();
    a.ok(&["up", "r0"]);
    a.wait_uptodate(30);
    b.wait_uptodate(10);
    // Let any resync the handshake might start show itself.
    std::thread::sleep(Duration::from_secs(1));
    let (sa, sb) = (a.status_json(), b.status_json());
    assert_eq!(
        sa["uuids"][0].as_u64().map(|u| u & !1),
        sb["uuids"][0].as_u64().map(|u| u & !1),
        "generations differ: not the case under test"
    );
    assert!(
        oos_kib(a) > 0,
        "the unclean stop marked nothing: not the case under test"
    );
    for (n, s) in [(a, &sa), (b, &sb)] {
        let notice = s["oos_notice"].as_str().unwrap_or_default();
        assert!(
            notice.contains("repadm invalidate r0"),
            "{} does not tell the operator: {s}",
            n.name
        );
        let text = n.ok(&["status", "r0"]);
        assert!(text.contains("out-of-sync: "), "{}: {text}", n.name);
        let events = n.ok(&["events", "--now", "r0"]);
        assert!(
            events.contains("out-of-sync name:r0") && events.contains("repadm invalidate r0"),
            "{}: {events}",
            n.name
        );
    }
    // node-a stopped uncleanly: its copy is the one to overwrite.
    a.ok(&["invalidate", "r0"]);
    wait_for(Duration::from_secs(60), "the resync to finish", || {
        let (sa, sb) = (a.status_json(), b.status_json());
        (sa["cstate"] == "Connected"
            && sa["disk"] == "UpToDate"
            && sb["peer_disk"] == "UpToDate"
            && sa["oos_kib"] == 0
            && sb["oos_kib"] == 0)
            .then_some(())
    });
    for n in [a, b] {
        assert!(
            n.status_json()
                .get("oos_notice")
                .is_none_or(|v| v.is_null()),
            "{} still shows the notice",
            n.name
        );
    }
    assert_eq!(b.verify_found(60), 0);
    down_and_compare(&c);
}
