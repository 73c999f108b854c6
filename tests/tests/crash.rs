//! Goal: a daemon crash (kill -9) of a Primary loses no acknowledged, flushed write, and the
//! node comes back as a crashed Primary whose activity-log extents are marked out of sync.
//! Method: write patterns with flush/FUA through qemu-io, kill -9 repd, `up` again, check
//! metadata flags and read the patterns back.

use rep_tests::pair::lone_primary;
use rep_tests::qemu_io_ok;
use rep_tests::{require_tool, Cluster, ClusterOpts};

#[test]
fn kill9_primary_keeps_flushed_writes_and_marks_al_extents() {
    require_tool("qemu-io", "qemu-utils");
    let c = Cluster::new("kill9", ClusterOpts::default());
    let a = c.a();
    lone_primary(a);
    qemu_io_ok(
        a,
        &["write -P 0x42 0 4M", "flush", "write -P 0x43 -f 20M 1M"],
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
    qemu_io_ok(a, &["read -P 0x42 0 4M", "read -P 0x43 20M 1M"]);
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
    let gi = a.ok(&["get-gi", "r0"]);
    assert!(
        gi.trim().ends_with(":1"),
        "the crashed-primary flag (last get-gi field) must be set: {gi}"
    );
}
