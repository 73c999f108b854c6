//! Goal: a backing disk that dies under the Primary costs the client nothing (DRBD's
//! `on-io-error detach`, docs/drbd-semantics.md §10). node-a's disk is a real file served through
//! `nbdkit --filter=error` and mounted back with `nbdfuse`, so creating a trigger file makes
//! every read and write of that disk fail with EIO. The Primary detaches (Diskless) and keeps
//! serving through node-b; the disk, once healed and re-attached, is resynced from node-b.
//! With `on-io-error pass_on` the error reaches the client instead, and the disk stays.

use std::time::Duration;

use rep_tests::pair::{up_pair, PairConf};
use rep_tests::{
    file_bytes, qemu_io, qemu_io_ok, require_tool, wait_for, wait_for_file_containing, FailingDisk,
};

const MIB: u64 = 1 << 20;

#[test]
fn a_failing_disk_under_the_primary_detaches_and_io_continues_through_the_peer() {
    require_tool("qemu-io", "qemu-utils");
    let disk = FailingDisk::new("diskfail-detach", 64);
    let c = PairConf::new("diskfail-detach").build();
    let (a, b) = (c.a(), c.b());
    disk.install_for(a);
    up_pair(&c);
    qemu_io_ok(a, &["write -P 0x11 0 1M", "flush"]);

    disk.fail();
    // Every I/O of node-a's disk fails from now on; the client must not notice.
    qemu_io_ok(
        a,
        &[
            "write -P 0x22 1M 1M",
            "read -P 0x22 1M 1M",
            "read -P 0x11 0 1M",
            "write -P 0x33 -f 4M 64k",
            "flush",
        ],
    );
    // Failed until its last metadata write (which fails too) is done, then Diskless.
    wait_for(Duration::from_secs(10), "on-io-error detach", || {
        (a.status_json()["disk"] == "Diskless").then_some(())
    });
    let s = a.status_json();
    assert_eq!(s["role"], "Primary");
    assert_eq!(s["peer_disk"], "UpToDate");
    assert!(
        a.log_tail().contains("Local IO failed"),
        "the log names the failure:\n{}",
        a.log_tail()
    );
    // The writes are on node-b's disk. The one that failed locally is in node-a's persisted
    // bitmap; node-b tracks those made while node-a was Diskless.
    assert_eq!(file_bytes(&b.disk, MIB, 4096), vec![0x22; 4096]);
    assert_eq!(file_bytes(&b.disk, 4 * MIB, 4096), vec![0x33; 4096]);
    assert!(b.status_json()["oos_kib"].as_u64().expect("oos") >= 64);

    // Re-attaching under the Diskless Primary is refused with the way out.
    let (code, err) = a.fails(&["attach", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("secondary"), "{err}");

    // The disk is replaced (healed); the node is demoted, re-attached and resynced from node-b.
    disk.heal();
    a.ok(&["secondary", "r0"]);
    a.ok(&["attach", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    b.wait_state("Connected", "UpToDate", "UpToDate", 10);
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    assert!(
        file_bytes(&disk.real, 0, usable) == file_bytes(&b.disk, 0, usable),
        "node-a's disk differs from node-b's after the resync"
    );
}

#[test]
fn with_pass_on_the_error_reaches_the_client_and_the_disk_stays_attached() {
    require_tool("qemu-io", "qemu-utils");
    let disk = FailingDisk::new("diskfail-passon", 64);
    let c = PairConf::new("diskfail-passon")
        .disk("on-io-error pass_on")
        .build();
    let a = c.a();
    disk.install_for(a);
    up_pair(&c);
    qemu_io_ok(a, &["write -P 0x11 0 1M", "flush"]);

    disk.fail();
    let (_, text) = qemu_io(a, &["write -P 0x22 1M 64k"]);
    assert!(
        text.contains("Input/output error"),
        "pass_on hands the EIO to the client:\n{text}"
    );
    // Reads are retried on the peer, as DRBD does with pass_on.
    qemu_io_ok(a, &["read -P 0x11 0 1M"]);
    let s = a.status_json();
    assert_eq!(s["disk"], "UpToDate", "pass_on keeps the disk: {s}");
    assert!(
        s["oos_kib"].as_u64().expect("oos") >= 64,
        "the failed write is marked out of sync: {s}"
    );
    disk.heal();
}

#[test]
fn detach_on_the_primary_keeps_serving_through_the_peer() {
    require_tool("qemu-io", "qemu-utils");
    let c = PairConf::new("detach-primary").build();
    let (a, b) = (c.a(), c.b());
    up_pair(&c);
    qemu_io_ok(a, &["write -P 0x44 0 1M", "flush"]);
    a.ok(&["detach", "r0"]);
    let s = a.status_json();
    assert_eq!(
        (s["role"].as_str(), s["disk"].as_str()),
        (Some("Primary"), Some("Diskless"))
    );
    assert_eq!(
        s["size_bytes"],
        b.status_json()["size_bytes"],
        "the device keeps its size"
    );
    qemu_io_ok(
        a,
        &[
            "read -P 0x44 0 1M",
            "write -P 0x55 2M 256k",
            "read -P 0x55 2M 256k",
        ],
    );
    assert_eq!(file_bytes(&b.disk, 2 * MIB, 4096), vec![0x55; 4096]);
    // Without the peer there is no data: I/O fails with a clear error, nothing is acknowledged.
    b.ok(&["disconnect", "r0"]);
    wait_for(Duration::from_secs(10), "node-a to lose its peer", || {
        (a.status_json()["cstate"] == "WFConnection").then_some(())
    });
    let (clean, text) = qemu_io(a, &["read 0 4k"]);
    assert!(
        !clean,
        "a Diskless Primary without its peer must fail I/O:\n{text}"
    );
}

#[test]
fn call_local_io_error_runs_the_handler_then_detaches() {
    require_tool("qemu-io", "qemu-utils");
    let disk = FailingDisk::new("diskfail-handler", 64);
    let c = PairConf::new("diskfail-handler")
        .disk("on-io-error call-local-io-error")
        .section("  handlers {\n    local-io-error \"echo local-io-error $DRBD_RESOURCE $DRBD_MINOR >> $(dirname $DRBD_CONF)/handler.log\";\n  }\n")
        .build();
    let a = c.a();
    disk.install_for(a);
    up_pair(&c);
    disk.fail();
    qemu_io_ok(a, &["write -P 0x66 0 64k", "read -P 0x66 0 64k"]);
    wait_for(Duration::from_secs(10), "the detach", || {
        (a.status_json()["disk"] == "Diskless").then_some(())
    });
    let log = c.dir.join("handler.log");
    wait_for_file_containing(&log, &["local-io-error r0 0"], "the local-io-error handler");
    disk.heal();
}
