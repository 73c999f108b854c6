//! Goal: bad input gets a clear error naming the place and the fix, and never starts a daemon,
//! loses data or hurts other clients. Method: break one thing per test against the real
//! binaries and raw sockets.

use std::process::Command;

use rep_tests::nbdraw::{RawClient, CMD_READ, CMD_WRITE, REQUEST_MAGIC};
use rep_tests::pair::lone_primary;
use rep_tests::qemu_io_ok;
use rep_tests::{require_tool, run, Cluster, ClusterOpts};

#[test]
fn broken_res_file_names_file_and_line_and_starts_nothing() {
    let c = Cluster::new("broken-res", ClusterOpts::default());
    let a = c.a();
    let text = std::fs::read_to_string(&a.config).expect("config");
    // Line 3 becomes an unknown keyword in a net section.
    let broken = text.replacen(
        "  device /dev/drbd0;",
        "  net { ping-intt 10; }\n  device /dev/drbd0;",
        1,
    );
    std::fs::write(&a.config, broken).expect("write");
    for cmd in [&["up", "r0"][..], &["create-md", "r0"], &["dump", "all"]] {
        let (code, err) = a.fails(cmd);
        assert_eq!(code, 10, "{cmd:?}: {err}");
        assert!(
            err.contains("rep.res:3"),
            "{cmd:?} error must name file:line: {err}"
        );
        assert!(
            err.contains("ping-int"),
            "{cmd:?} error must suggest the fix: {err}"
        );
    }
    assert!(a.pid().is_none(), "no daemon may start on a broken config");
}

#[test]
fn resource_not_defined_for_this_host() {
    let c = Cluster::new("not-for-host", ClusterOpts::default());
    let out = Command::new(rep_tests::bin("repadm"))
        .args(["up", "r0"])
        .env("REP_CONFIG", &c.a().config)
        .env("REP_NODE", "node-z")
        .env("REP_RUN_DIR", &c.a().run_dir)
        .output()
        .expect("run repadm");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not defined") && err.contains("node-z"),
        "{err}"
    );
}

#[test]
fn up_without_metadata_says_run_create_md() {
    let c = Cluster::new("no-md", ClusterOpts::default());
    let (code, err) = c.a().fails(&["up", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("create-md"), "{err}");
    assert!(c.a().pid().is_none());
}

#[test]
fn missing_or_too_small_backing_disk() {
    let c = Cluster::new("bad-disk", ClusterOpts::default());
    let a = c.a();
    std::fs::remove_file(&a.disk).expect("rm disk");
    let (code, err) = a.fails(&["create-md", "r0"]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&a.disk.display().to_string()),
        "error must name the disk: {err}"
    );
    let (_, err) = a.fails(&["up", "r0"]);
    assert!(
        err.contains(&a.disk.display().to_string()),
        "error must name the disk: {err}"
    );

    std::fs::write(&a.disk, vec![0u8; 8192]).expect("tiny disk");
    let (code, err) = a.fails(&["create-md", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("too small"), "{err}");
}

#[test]
fn malformed_nbd_requests_only_hurt_their_own_connection() {
    require_tool("nbdinfo", "libnbd-bin");
    require_tool("qemu-io", "qemu-utils");
    let c = Cluster::new("bad-nbd", ClusterOpts::default());
    let a = c.a();
    lone_primary(a);
    let uri = a.nbd_uri();
    qemu_io_ok(a, &["write -P 0x77 0 64k"]);

    // A healthy client stays connected throughout.
    let mut good = RawClient::connect(&a.nbd_socket(), "r0").expect("good client");

    // Bad magic: framing is lost, that connection is closed.
    let mut bad = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    bad.send_request(0xdead_beef, CMD_READ, 1, 0, 4096)
        .expect("send");
    assert!(bad.is_closed(), "bad magic must close that connection");

    // Read beyond the end: EINVAL (22), connection usable afterwards.
    let mut c2 = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    let size = c2.size;
    c2.send_request(REQUEST_MAGIC, CMD_READ, 2, size, 4096)
        .expect("send");
    assert_eq!(c2.read_reply().expect("reply"), (22, 2));
    // Write beyond the end: ENOSPC (28); the payload is drained so framing survives.
    c2.send_request(REQUEST_MAGIC, CMD_WRITE, 3, size - 2048, 4096)
        .expect("send");
    std::io::Write::write_all(&mut c2.s, &[0u8; 4096]).expect("payload");
    assert_eq!(c2.read_reply().expect("reply"), (28, 3));
    // Unknown command: EINVAL.
    c2.send_request(REQUEST_MAGIC, 77, 4, 0, 0).expect("send");
    assert_eq!(c2.read_reply().expect("reply"), (22, 4));
    c2.send_request(REQUEST_MAGIC, CMD_READ, 5, 0, 4096)
        .expect("send");
    assert_eq!(c2.read_reply().expect("reply"), (0, 5));

    // An absurd write length: error or disconnect, never a crash; the daemon keeps serving.
    let mut c3 = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    c3.send_request(REQUEST_MAGIC, CMD_WRITE, 6, 0, 0xffff_0000)
        .expect("send");
    let _ = c3.read_reply();

    good.send_request(REQUEST_MAGIC, CMD_READ, 9, 0, 4096)
        .expect("send");
    assert_eq!(good.read_reply().expect("good client still served"), (0, 9));
    drop((good, bad, c2, c3));
    // Data untouched, daemon alive, other clients fine.
    qemu_io_ok(a, &["read -P 0x77 0 64k"]);
    let out = run(Command::new("nbdinfo").arg("--size").arg(&uri));
    assert!(out.status.success());
    assert!(a.pid().is_some());
}

#[test]
fn commands_forbidden_by_state_exit_non_zero_naming_the_state() {
    let c = Cluster::new("forbidden", ClusterOpts::default());
    let a = c.a();
    // Not up: commands that need the daemon say so.
    let (code, err) = a.fails(&["primary", "r0"]);
    assert_eq!(code, 10);
    assert!(err.contains("not up"), "{err}");
    a.ok(&["create-md", "r0"]);
    a.ok(&["up", "r0"]);
    let (code, err) = a.fails(&["attach", "r0"]);
    assert_eq!(code, 10);
    assert!(
        err.contains("already attached") || err.contains("Disk already attached"),
        "{err}"
    );
    let (code, err) = a.fails(&["verify", "r0"]);
    assert_eq!(code, 11);
    assert!(
        err.contains("WFConnection"),
        "refusal must name the state: {err}"
    );
    a.ok(&["primary", "--force", "r0"]);
    let (code, err) = a.fails(&["invalidate", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("Primary"), "{err}");
    let (code, err) = a.fails(&["detach", "r0"]);
    assert_eq!(
        code, 17,
        "a Primary without a peer must keep its disk: {err}"
    );
    let out = run(Command::new(rep_tests::bin("repadm"))
        .args(["status", "--json", "r0"])
        .env("REP_CONFIG", &a.config)
        .env("REP_NODE", "node-a")
        .env("REP_RUN_DIR", &a.run_dir));
    assert!(out.status.success());
}
