//! Goal: two real repd processes (node-a on 127.0.0.1, node-b on 127.0.0.2) replicate as DRBD
//! does: initial full sync after `primary --force`, protocol C writes on both disks, failover
//! after `kill -9` of the Primary with an ext4 filesystem intact on the survivor, a Secondary
//! killed under fio load resyncs, and handshake refusals (wrong secret, protocol mismatch).

use std::process::Command;
use std::time::Duration;

use rep_tests::assert::assert_same_data;
use rep_tests::pair::{up_fresh, PairConf};
use rep_tests::qemu_io_ok;
use rep_tests::{require_tool, run, run_ok, wait_for, Cluster, FuseMount, Node};

/// Small resyncs in tests: fast links, quick reconnects, an observable sync rate.
fn cluster(test: &str, disk_mib: u64) -> PairConf {
    PairConf::new(test).mib(disk_mib).resync_rate("40M")
}

fn field(n: &Node, key: &str) -> String {
    n.status_json()[key].as_str().unwrap_or_default().to_owned()
}

#[test]
fn initial_full_sync_then_protocol_c_writes_reach_both_disks() {
    require_tool("qemu-io", "qemu-utils");
    let c = cluster("repl-sync", 128).build();
    up_fresh(&c, 20);
    let (a, b) = (c.a(), c.b());
    assert_eq!(field(a, "role"), "Secondary");
    // A fresh Inconsistent disk cannot be promoted without --force.
    let (code, err) = a.fails(&["primary", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("UpToDate"), "{err}");
    a.ok(&["primary", "--force", "r0"]);
    // 128 MiB at 40 MiB/s: the sync is observable for a few seconds.
    let proc = wait_for(
        Duration::from_secs(10),
        "sync progress in status --proc",
        || {
            let p = a.ok(&["status", "--proc", "r0"]);
            p.contains("sync'ed:").then_some(p)
        },
    );
    assert!(
        proc.contains("cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C"),
        "{proc}"
    );
    assert_eq!(field(b, "cstate"), "SyncTarget");
    // The export is usable during the sync.
    qemu_io_ok(a, &["write -P 0x5a 1M 1M", "flush"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);
    b.wait_state("Connected", "UpToDate", "UpToDate", 10);
    qemu_io_ok(a, &["write -P 0x33 4M 2M", "read -P 0x5a 1M 1M"]);
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    // Secondary refuses I/O and promotion while the peer is Primary.
    let info = run(Command::new("nbdinfo").arg(b.nbd_uri()));
    assert!(!info.status.success(), "a Secondary must not serve NBD");
    let (_, err) = b.fails(&["primary", "r0"]);
    assert!(err.contains("Primary"), "{err}");
    a.ok(&["secondary", "r0"]);
    for n in &c.nodes {
        n.ok(&["down", "r0"]);
    }
    assert_same_data(c.a(), c.b(), usable);
}

#[test]
fn failover_after_kill9_keeps_every_fsynced_file() {
    require_tool("mkfs.ext4", "e2fsprogs");
    let c = cluster("repl-failover", 128).build();
    up_fresh(&c, 20);
    let (a, b) = (c.a(), c.b());
    a.ok(&["primary", "--force", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);

    let m = FuseMount::attach(&c.dir.join("on-a"), &a.nbd_socket());
    m.mkfs();
    m.mount();
    for i in 0..4 {
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "head -c {} /dev/urandom > {mnt}/f{i} && sync {mnt}/f{i}",
            (i + 1) << 20,
            mnt = m.mnt.display()
        )));
    }
    let sums = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && sha256sum f*", m.mnt.display())),
    );
    a.kill9();
    drop(m);

    wait_for(Duration::from_secs(10), "node-b to notice", || {
        (field(b, "cstate") != "Connected").then_some(())
    });
    b.ok(&["primary", "r0"]);
    let mut mb = FuseMount::attach(&c.dir.join("on-b"), &b.nbd_socket());
    run_ok(Command::new("fsck.ext4").args(["-n", "-f", &mb.loop_dev]));
    mb.mount();
    let got = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && sha256sum f*", mb.mnt.display())),
    );
    assert_eq!(got, sums, "fsync'ed files must survive the failover");
    mb.detach();

    // The old Primary comes back as a crashed primary and resyncs from the survivor.
    a.ok(&["up", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);
    assert_eq!(field(a, "role"), "Secondary");
    let usable = b.status_json()["size_bytes"].as_u64().expect("size");
    b.ok(&["secondary", "r0"]);
    for n in &c.nodes {
        n.ok(&["down", "r0"]);
    }
    assert_same_data(c.a(), c.b(), usable);
}

#[test]
fn secondary_killed_under_fio_load_resyncs_and_disks_match() {
    require_tool("fio", "fio");
    let c = cluster("repl-kill-sec", 128).build();
    up_fresh(&c, 20);
    let (a, b) = (c.a(), c.b());
    a.ok(&["primary", "--force", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);
    let fio = Command::new("fio")
        .args([
            "--name=load",
            "--ioengine=nbd",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=96M",
            "--time_based=1",
            "--runtime=6",
            "--output-format=terse",
        ])
        .arg(format!("--uri={}", a.nbd_uri()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start fio");
    let sent = |n: &Node| n.counter("ns_kib");
    let ns0 = sent(a);
    wait_for(Duration::from_secs(10), "the load to replicate", || {
        (sent(a) > ns0).then_some(())
    });
    b.kill9();
    wait_for(Duration::from_secs(10), "node-a to notice", || {
        (field(a, "cstate") == "WFConnection").then_some(())
    });
    // Writes made while the Secondary is gone are what the resync must bring over.
    wait_for(Duration::from_secs(10), "writes while degraded", || {
        (a.status_json()["oos_kib"].as_u64() > Some(0)).then_some(())
    });
    b.ok(&["up", "r0"]);
    let out = fio.wait_with_output().expect("fio");
    assert!(
        out.status.success(),
        "fio failed while the Secondary died: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.wait_state("Connected", "UpToDate", "UpToDate", 60);
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    a.ok(&["secondary", "r0"]);
    for n in &c.nodes {
        n.ok(&["down", "r0"]);
    }
    assert_same_data(c.a(), c.b(), usable);
}

/// node-b gets its own copy of the config with `replace` applied.
fn diverge_config(c: &mut Cluster, from: &str, to: &str) {
    let text = std::fs::read_to_string(&c.nodes[1].config).expect("read config");
    let other = c.dir.join("rep-b.res");
    std::fs::write(&other, text.replace(from, to)).expect("write config");
    c.nodes[1].config = other;
}

/// Both nodes up with diverging configs; one must give up (StandAlone) and log `needle`.
fn expect_refusal(c: &Cluster, what: &str, needles: &[&str]) {
    for n in &c.nodes {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    wait_for(
        Duration::from_secs(20),
        &format!("StandAlone after {what}"),
        || {
            c.nodes
                .iter()
                .any(|n| field(n, "cstate") == "StandAlone")
                .then_some(())
        },
    );
    let logs = format!("{}{}", c.a().log_tail(), c.b().log_tail());
    assert!(
        needles.iter().any(|s| logs.contains(s)),
        "no clear log line about {what}:\n{logs}"
    );
}

#[test]
fn wrong_shared_secret_is_refused_and_both_go_standalone() {
    let mut c = cluster("repl-secret", 16)
        .net("cram-hmac-alg sha1")
        .net("shared-secret \"right\"")
        .build();
    diverge_config(&mut c, "\"right\"", "\"wrong\"");
    expect_refusal(&c, "a wrong shared-secret", &["Authentication of peer"]);
}

#[test]
fn protocol_mismatch_names_both_values() {
    let mut c = cluster("repl-proto", 16).build();
    diverge_config(&mut c, "protocol C;", "protocol A;");
    expect_refusal(
        &c,
        "a protocol mismatch",
        &["ours is C, the peer's is A", "ours is A, the peer's is C"],
    );
}
