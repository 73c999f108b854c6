//! Goal: a daemon crash (kill -9) of a Primary loses no acknowledged, flushed write, and the
//! node comes back as a crashed Primary whose activity-log extents are marked out of sync.
//! Method: write patterns with flush/FUA through qemu-io, kill -9 repd, `up` again, check
//! metadata flags and read the patterns back.

use std::process::Command;

use rep_tests::{require_tool, run_ok, Cluster, ClusterOpts};

#[test]
fn kill9_primary_keeps_flushed_writes_and_marks_al_extents() {
    require_tool("qemu-io", "qemu-utils");
    let c = Cluster::new("kill9", ClusterOpts::default());
    let a = c.a();
    a.ok(&["create-md", "r0"]);
    a.ok(&["up", "r0"]);
    a.ok(&["primary", "--force", "r0"]);
    let uri = a.nbd_uri();
    run_ok(
        Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "write -P 0x42 0 4M",
                "-c",
                "flush",
                "-c",
                "write -P 0x43 -f 20M 1M",
            ])
            .arg(&uri),
    );
    a.kill9();

    // The daemon is gone without cleaning up; up must cope with the stale socket/pid files.
    a.ok(&["up", "r0"]);
    let st = a.status_json();
    assert_eq!(
        st["disk"], "UpToDate",
        "a crashed single Primary comes back with its data: {st}"
    );
    // The activity log covered the written extents: they are out of sync for the peer now.
    let oos = st["oos_kib"].as_u64().expect("oos");
    assert!(
        oos >= 5 * 1024,
        "AL extents of the crashed Primary must be marked out of sync (oos {oos} KiB)"
    );
    a.ok(&["primary", "r0"]);
    run_ok(
        Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "read -P 0x42 0 4M",
                "-c",
                "read -P 0x43 20M 1M",
            ])
            .arg(&uri),
    );
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
    let gi = a.ok(&["get-gi", "r0"]);
    assert!(
        gi.trim().ends_with(":1"),
        "the crashed-primary flag (last get-gi field) must be set: {gi}"
    );
}
