//! Goal: the seeds' split-brain runbook works with `repadm` in place of `drbdadm`. The link
//! fails, the cluster manager promotes the Secondary, both nodes take writes; when the link comes
//! back both detect the split brain and drop to StandAlone, touching no data. The operator runs
//! `secondary` + `connect --discard-my-data` on the victim and `connect` on the survivor: the
//! victim resyncs from the survivor (only the blocks either side changed) and ends identical.

use std::time::Duration;

use rep_tests::{
    backing_bytes, require_tool, wait_for, wait_for_file_containing, write_pattern, Cluster,
    ClusterOpts, Node,
};

const MIB: u64 = 1 << 20;

fn wait_state(n: &Node, cstate: &str, disks: Option<(&str, &str)>, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{} to be {cstate} {disks:?}", n.name),
        || {
            let s = n.status_json();
            let disks_ok = disks.is_none_or(|(d, p)| s["disk"] == d && s["peer_disk"] == p);
            (s["cstate"] == cstate && disks_ok).then_some(())
        },
    );
}

fn oos_kib(n: &Node) -> u64 {
    n.status_json()["oos_kib"].as_u64().expect("oos_kib")
}

/// Handlers that append what they saw to `handlers.log` beside the configuration.
const LOGGING_HANDLERS: &str = r#"  handlers {
    split-brain "echo split-brain $DRBD_RESOURCE $DRBD_PEERS $DRBD_PEER_ADDRESS $REP_NODE >> $(dirname $DRBD_CONF)/handlers.log";
    initial-split-brain "echo initial-split-brain $REP_NODE >> $(dirname $DRBD_CONF)/handlers.log";
    after-resync-target "echo after-resync-target $REP_NODE >> $(dirname $DRBD_CONF)/handlers.log";
  }
"#;

/// Two nodes with identical disks, node-a Primary; `net_extra` goes into the net section.
fn identical_pair(test: &str, net_extra: &str) -> Cluster {
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 64,
            extra: format!("  net {{\n    connect-int 1;\n    ping-int 1;\n{net_extra}  }}\n  disk {{\n    c-plan-ahead 0;\n    resync-rate 100M;\n  }}\n{LOGGING_HANDLERS}"),
            ..Default::default()
        },
    );
    let (a, b) = (c.a(), c.b());
    for n in [a, b] {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    wait_state(b, "Connected", None, 20);
    a.ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 10);
    a.ok(&["primary", "r0"]);
    c
}

fn assert_identical(a: &Node, b: &Node) {
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    assert!(
        backing_bytes(a, 0, usable) == backing_bytes(b, 0, usable),
        "backing devices differ"
    );
}

#[test]
fn split_brain_is_detected_and_discard_my_data_on_the_victim_recovers() {
    require_tool("qemu-io", "qemu-utils");
    let c = identical_pair("split-brain", "");
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);

    // The link fails (node-b drops it) and the cluster manager promotes node-b.
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    write_pattern(a, 0xaa, MIB, MIB);
    write_pattern(b, 0xbb, 2 * MIB, MIB);
    write_pattern(b, 0xbc, 8 * MIB, 4096);

    // The link returns: both see the split brain and stop, no data moves.
    b.ok(&["connect", "r0"]);
    for n in [a, b] {
        wait_state(n, "StandAlone", None, 20);
        assert_eq!(n.status_json()["role"], "Primary", "{}", n.name);
    }
    assert!(
        a.log_tail().contains("Split-Brain detected but unresolved"),
        "node-a's log names the split brain:\n{}",
        a.log_tail()
    );
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0xbb; 4096]);
    // The split-brain handler ran on both nodes, with DRBD's environment.
    let handlers_log = c.dir.join("handlers.log");
    wait_for_file_containing(
        &handlers_log,
        &[
            "split-brain r0 node-b 127.0.0.2 node-a",
            "split-brain r0 node-a 127.0.0.1 node-b",
        ],
        "the split-brain handlers",
    );

    // Discarding data on a Primary is refused: the runbook demotes the victim first.
    let (code, err) = b.fails(&["connect", "--discard-my-data", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("Primary"), "refusal names the role: {err}");

    // node-b is the victim, node-a the survivor.
    b.ok(&["secondary", "r0"]);
    b.ok(&["connect", "--discard-my-data", "r0"]);
    a.ok(&["connect", "r0"]);
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 30);
    wait_state(a, "Connected", Some(("UpToDate", "UpToDate")), 10);
    assert_eq!(oos_kib(a), 0);
    wait_for_file_containing(
        &handlers_log,
        &["after-resync-target node-b"],
        "after-resync-target on node-b",
    );
    let nr = b.status_json()["counters"]["nr_kib"]
        .as_u64()
        .expect("nr_kib");
    // Only the blocks either side wrote while apart travel (1 MiB + 1 MiB + 4 KiB), not 64 MiB.
    assert!(
        (2 * 1024 + 4..=4 * 1024).contains(&nr),
        "node-b received {nr} KiB; expected only the split-brain blocks"
    );

    // The victim's changes are gone, the survivor's are there, both disks identical.
    assert_eq!(backing_bytes(b, 0, 4096), vec![0x11; 4096]);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0xaa; 4096]);
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0u8; 4096]);
    assert_eq!(backing_bytes(b, 8 * MIB, 4096), vec![0u8; 4096]);
    assert_identical(a, b);
}

/// The DRBD user guide's policies: `after-sb-0pri discard-zero-changes; after-sb-1pri
/// discard-secondary; after-sb-2pri disconnect;` resolve the common split brains on their own.
#[test]
fn after_sb_policies_resolve_split_brains_without_an_operator() {
    require_tool("qemu-io", "qemu-utils");
    let policies = "    after-sb-0pri discard-zero-changes;\n    after-sb-1pri discard-secondary;\n    after-sb-2pri disconnect;\n";
    let c = identical_pair("after-sb", policies);
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);

    // 1pri: node-b was promoted during the split and wrote; back as Secondary it is discarded.
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    write_pattern(b, 0xbb, 2 * MIB, MIB);
    write_pattern(a, 0xaa, MIB, MIB);
    b.ok(&["secondary", "r0"]);
    b.ok(&["connect", "r0"]);
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 30);
    assert!(
        b.log_tail()
            .contains("automatically solved. Sync from peer node"),
        "{}",
        b.log_tail()
    );
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0xaa; 4096]);
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0u8; 4096]);
    assert_identical(a, b);

    // 0pri: node-b promoted during a split but wrote nothing, node-a wrote; both Secondary at
    // reconnect. discard-zero-changes discards node-b's (empty) side whatever the roles were.
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    b.ok(&["secondary", "r0"]);
    write_pattern(a, 0xcc, 3 * MIB, 64 * 1024);
    a.ok(&["secondary", "r0"]);
    b.ok(&["connect", "r0"]);
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 30);
    assert!(
        b.log_tail().contains(
            "Split-Brain detected, 0 primaries, automatically solved. Sync from peer node"
        ),
        "{}",
        b.log_tail()
    );
    assert_eq!(backing_bytes(b, 3 * MIB, 4096), vec![0xcc; 4096]);
    assert_identical(a, b);

    // 2pri with `disconnect`: both stay StandAlone for the operator.
    a.ok(&["primary", "r0"]);
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    write_pattern(a, 0xdd, 4 * MIB, 4096);
    write_pattern(b, 0xee, 5 * MIB, 4096);
    b.ok(&["connect", "r0"]);
    for n in [a, b] {
        wait_state(n, "StandAlone", None, 20);
    }
}
