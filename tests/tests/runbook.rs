//! Goal: docs/from-drbdadm.md's walk-through of the MooseFS runbook (shared seeds 003/004)
//! keeps working: scripts/moosefs-runbook.sh runs every DRBD step of it with repadm on two
//! local nodes — create-md, up, primary --force and the initial sync, mkfs and mount through
//! nbdfuse + loop, a failover by hand, a split brain with both sides written to and its
//! recovery with `connect --discard-my-data`, verify — and checks each outcome.
//!
//! Method: run the script itself (not a copy of its steps) against the binaries under test.

use std::process::Command;

use rep_tests::{bin, free_port, require_root, require_tool, run};

#[test]
fn moosefs_runbook_script_passes() {
    require_root("the runbook mounts ext4 through nbdfuse and a loop device");
    require_tool("nbdfuse", "libnbd-bin");
    require_tool("mkfs.ext4", "e2fsprogs");
    require_tool("python3", "python3");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/moosefs-runbook.sh");
    let out = run(Command::new("timeout")
        .arg("400")
        .arg("bash")
        .arg(script)
        .env("REPADM", bin("repadm"))
        .env("REP_REPD", bin("repd"))
        .env("RUNBOOK_PORT", free_port().to_string()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("runbook: every step passed"),
        "moosefs-runbook.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every drbdadm step of the seed appears next to its repadm command.
    for step in [
        "drbdadm create-md mfs_meta0",
        "drbdadm up mfs_meta0",
        "drbdadm primary mfs_meta0 --force",
        "drbdadm secondary mfs_meta0",
        "drbdadm disconnect mfs_meta0",
        "drbdadm connect --discard-my-data mfs_meta0",
        "drbdadm connect mfs_meta0",
    ] {
        assert!(stdout.contains(step), "{step} not shown:\n{stdout}");
    }
}
