//! Goal: the foundation's single-node lifecycle behaves like DRBD 8.4 on one node of a
//! two-node resource, and real NBD clients (nbdinfo, qemu-io, nbdcopy, fio) get correct data.
//! Method: real repd processes started by the real repadm, per-test directories.

use std::process::Command;
use std::time::Duration;

use rep_tests::pair::lone_primary;
use rep_tests::qemu_io_ok;
use rep_tests::{require_tool, run, run_ok, wait_for, Cluster, ClusterOpts};

#[test]
fn lifecycle_states_and_refusals_follow_drbd() {
    let c = Cluster::new("lifecycle", ClusterOpts::default());
    let a = c.a();
    a.ok(&["create-md", "r0"]);
    // Existing metadata is never overwritten silently.
    let (code, err) = a.fails(&["create-md", "r0"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--force"),
        "create-md refusal must name --force: {err}"
    );
    a.ok(&["create-md", "--force", "r0"]);

    a.ok(&["up", "r0"]);
    assert_eq!(a.ok(&["role", "r0"]).trim(), "Secondary/Unknown");
    assert_eq!(a.ok(&["cstate", "r0"]).trim(), "WFConnection");
    assert_eq!(a.ok(&["dstate", "r0"]).trim(), "Inconsistent/DUnknown");
    let (code, _) = a.fails(&["up", "r0"]);
    assert_eq!(
        code, 10,
        "second up must fail like drbdadm (device configured)"
    );

    // A fresh Inconsistent disk needs --force, as in DRBD.
    let (code, err) = a.fails(&["primary", "r0"]);
    assert_eq!(code, 17, "{err}");
    assert!(
        err.contains("State change failed: (-2) Need access to UpToDate data"),
        "{err}"
    );
    a.ok(&["primary", "--force", "r0"]);
    assert_eq!(a.ok(&["role", "r0"]).trim(), "Primary/Unknown");
    assert_eq!(a.ok(&["dstate", "r0"]).trim(), "UpToDate/DUnknown");

    let st = a.status_json();
    assert_eq!(st["role"], "Primary");
    assert_eq!(st["cstate"], "WFConnection");
    assert_eq!(st["disk"], "UpToDate");
    assert_eq!(st["peer_disk"], "DUnknown");
    let text = a.ok(&["status", "r0"]);
    assert_eq!(
        text,
        "r0 role:Primary\n  disk:UpToDate\n  node-b connection:Connecting\n"
    );
    let proc = a.ok(&["status", "--proc", "r0"]);
    assert!(
        proc.contains(" 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C r-----"),
        "{proc}"
    );
    let file = std::fs::read_to_string(a.run_dir.join("status")).expect("status file");
    assert!(
        file.contains("ro:Primary/Unknown"),
        "status file not rewritten on state change: {file}"
    );

    // disconnect / connect as DRBD: StandAlone; disconnecting again succeeds, as drbdsetup's
    // conn_try_disconnect makes SS_ALREADY_STANDALONE a success (runbooks disconnect first).
    a.ok(&["disconnect", "r0"]);
    assert_eq!(a.ok(&["cstate", "r0"]).trim(), "StandAlone");
    a.ok(&["disconnect", "r0"]);
    assert_eq!(a.ok(&["cstate", "r0"]).trim(), "StandAlone");
    a.ok(&["connect", "r0"]);
    assert_eq!(a.ok(&["cstate", "r0"]).trim(), "WFConnection");

    // Generation UUIDs: a forced promotion made a new current UUID with the Primary bit.
    let gi = a.ok(&["get-gi", "r0"]);
    let parts: Vec<&str> = gi.trim().split(':').collect();
    assert_eq!(
        parts.len(),
        11,
        "get-gi format CURRENT:BITMAP:H1:H2:c:u:p:n:f:o:C, got {gi}"
    );
    assert!(parts[..4].iter().all(|p| p.len() == 16), "{gi}");
    assert_ne!(
        parts[0], "0000000000000004",
        "primary --force must rotate the current UUID: {gi}"
    );

    a.ok(&["secondary", "r0"]);
    assert_eq!(a.ok(&["role", "r0"]).trim(), "Secondary/Unknown");
    // dump-md needs the device down.
    let (code, err) = a.fails(&["dump-md", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("down"), "{err}");
    a.ok(&["down", "r0"]);
    assert!(a.pid().is_none(), "down must remove the pid file");
    let md = a.ok(&["dump-md", "r0"]);
    assert!(!md.is_empty());
    // After a clean down the disk comes back UpToDate (fencing dont-care), so no --force needed.
    a.ok(&["up", "r0"]);
    assert_eq!(a.ok(&["dstate", "r0"]).trim(), "UpToDate/DUnknown");
    a.ok(&["primary", "r0"]);
    a.ok(&["down", "r0"]);
}

#[test]
fn nbd_clients_see_a_correct_device() {
    require_tool("nbdinfo", "libnbd-bin");
    require_tool("qemu-io", "qemu-utils");
    require_tool("nbdcopy", "libnbd-bin");
    require_tool("fio", "fio");
    let c = Cluster::new(
        "clients",
        ClusterOpts {
            disk_mib: 300,
            on_shm: true,
            ..Default::default()
        },
    );
    lone_primary(c.a());
    let a = c.a();
    let uri = a.nbd_uri();
    let size = a.status_json()["size_bytes"].as_u64().expect("size_bytes");
    assert!(
        size >= 256 << 20,
        "usable size {size} too small for the test"
    );

    let info: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new("nbdinfo").arg("--json").arg(&uri)))
            .expect("nbdinfo json");
    let export = &info["exports"][0];
    assert_eq!(export["export-size"].as_u64(), Some(size));
    for cap in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
    ] {
        assert_eq!(export[cap], true, "{cap} in {export}");
    }
    assert_eq!(export["is_read_only"], false);

    // qemu-io: pattern write, flush, pattern read; a wrong pattern must fail.
    qemu_io_ok(a, &["write -P 0x5a 0 1M", "flush", "read -P 0x5a 0 1M"]);
    let bad = run(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read -P 0x11 0 4k"])
        .arg(&uri));
    assert!(
        !bad.status.success(),
        "qemu-io pattern check must be able to fail"
    );
    qemu_io_ok(a, &["write -P 0x33 -f 8M 64k", "read -P 0x33 8M 64k"]);

    // nbdcopy 256 MiB of random data in and back out, byte-identical.
    let src = c.dir.join("src.img");
    let out = c.dir.join("out.img");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "head -c 268435456 /dev/urandom > {}",
        src.display()
    )));
    run_ok(Command::new("nbdcopy").arg(&src).arg(&uri));
    run_ok(Command::new("nbdcopy").arg(&uri).arg(&out));
    let out_prefix = c.dir.join("out256.img");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "head -c 268435456 {} > {}",
        out.display(),
        out_prefix.display()
    )));
    run_ok(Command::new("cmp").arg(&src).arg(&out_prefix));

    // fio with verification through the nbd engine.
    let fio = run(Command::new("fio")
        .args([
            "--name=verify",
            "--ioengine=nbd",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=64M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_state_save=0",
            "--output-format=terse",
        ])
        .arg(format!("--uri={uri}")));
    assert!(
        fio.status.success(),
        "fio verify failed: {}",
        String::from_utf8_lossy(&fio.stderr)
    );

    // Data survives down/up.
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
    a.ok(&["up", "r0"]);
    a.ok(&["primary", "r0"]);
    // fio's verified writes are still readable and still verify after the restart.
    let reverify = run(Command::new("fio")
        .args([
            "--name=verify",
            "--ioengine=nbd",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=64M",
            "--verify=crc32c",
            "--verify_only=1",
            "--verify_state_save=0",
            "--output-format=terse",
        ])
        .arg(format!("--uri={}", a.nbd_uri())));
    assert!(
        reverify.status.success(),
        "fio verify after down/up failed: {}",
        String::from_utf8_lossy(&reverify.stderr)
    );
    let again = c.dir.join("again.img");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "nbdcopy '{uri}' - | head -c 268435456 > {}",
        again.display()
    )));
    // The fio and qemu-io writes overwrote parts; compare only a region none of them touched.
    let tail = |p: &std::path::Path| {
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("tail -c 100000000 {} | sha256sum", p.display())),
        )
    };
    assert_eq!(tail(&src), tail(&again), "data changed across down/up");
}

#[test]
fn secondary_refuses_nbd_io_and_demotion_is_refused_while_open() {
    require_tool("nbdinfo", "libnbd-bin");
    let c = Cluster::new("secondary-io", ClusterOpts::default());
    let a = c.a();
    a.ok(&["create-md", "r0"]);
    a.ok(&["up", "r0"]);
    // Secondary: the export refuses, naming the role.
    let out = run(Command::new("nbdinfo").arg(a.nbd_uri()));
    assert!(!out.status.success(), "a Secondary must not serve NBD");
    let err = rep_tests::nbdraw::RawClient::connect(&a.nbd_socket(), "r0")
        .err()
        .expect("GO refused");
    assert!(
        err.to_string().contains("Secondary"),
        "refusal must name the role: {err}"
    );
    a.ok(&["primary", "--force", "r0"]);
    let mut client =
        rep_tests::nbdraw::RawClient::connect(&a.nbd_socket(), "r0").expect("GO on Primary");
    wait_for(
        Duration::from_secs(5),
        "the client to count as open",
        || (a.status_json()["open_clients"].as_u64() == Some(1)).then_some(()),
    );
    let (code, err) = a.fails(&["secondary", "r0"]);
    assert_eq!(code, 11);
    assert!(err.contains("held open"), "{err}");
    let (code, _) = a.fails(&["down", "r0"]);
    assert_eq!(
        code, 11,
        "down must refuse while the device is open, as drbdadm does"
    );
    client
        .send_request(
            rep_tests::nbdraw::REQUEST_MAGIC,
            rep_tests::nbdraw::CMD_READ,
            7,
            0,
            4096,
        )
        .expect("send");
    let (e, cookie) = client.read_reply().expect("reply");
    assert_eq!((e, cookie), (0, 7));
    drop(client);
    wait_for(Duration::from_secs(5), "the client to be gone", || {
        (a.status_json()["open_clients"].as_u64() == Some(0)).then_some(())
    });
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
}

/// On the Primary's own disk a TRIM frees the blocks it covers and a WRITE_ZEROES keeps them
/// allocated (PUNCH_HOLE against ZERO_RANGE or written zeroes), and both read back as zeroes.
#[test]
fn trim_frees_blocks_and_write_zeroes_keeps_them() {
    use std::os::unix::fs::MetadataExt;
    require_tool("qemu-io", "qemu-utils");
    const MIB: u64 = 1 << 20;
    let c = Cluster::new(
        "zeroing",
        ClusterOpts {
            disk_mib: 64,
            on_shm: true,
            ..Default::default()
        },
    );
    lone_primary(c.a());
    let a = c.a();
    let allocated = || std::fs::metadata(&a.disk).expect("stat the disk").blocks() * 512;
    qemu_io_ok(a, &["write -P 0x5a 0 16M", "flush"]);
    let written = allocated();
    assert!(
        written >= 16 * MIB,
        "16 MiB written, {written} bytes allocated"
    );
    qemu_io_ok(a, &["write -z 0 8M", "flush"]);
    let zeroed = allocated();
    assert!(
        zeroed + MIB > written,
        "WRITE_ZEROES freed blocks: {written} bytes allocated before, {zeroed} after"
    );
    qemu_io_ok(a, &["discard 8M 8M", "flush"]);
    let trimmed = allocated();
    assert!(
        trimmed + 7 * MIB <= zeroed,
        "TRIM of 8 MiB freed {} bytes",
        zeroed.saturating_sub(trimmed)
    );
    qemu_io_ok(a, &["read -P 0 0 16M"]);
}
