//! Goal: repd's memory stays bounded when its peer stops reading (DRBD's `max-buffers`). Under
//! protocol A a write completes once queued for the peer, so without a bound a stalled peer lets
//! the Primary's send queue, and its RSS, grow with everything the application writes. With the
//! bound, application writes wait (they never fail) while the queue is full.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rep_tests::pair::up_pair;
use rep_tests::{require_tool, Cluster, ClusterOpts};

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The Primary's RSS may grow by at most this much over its idle RSS while the Secondary is
/// stopped: the send queue bound (max-buffers 2048 × 4 KiB = 8 MiB, plus one 1 MiB batch and
/// one request that may overshoot it) and the client buffers of QD32 × 1 MiB in flight, with
/// allocator slack. Without the bound it grows by the whole 30 s of writes (gigabytes).
const GROWTH_BOUND_KIB: u64 = 96 * 1024;

#[test]
fn a_stopped_secondary_does_not_grow_the_primary_under_protocol_a() {
    require_tool("fio", "fio");
    let c = Cluster::new(
        "boundedmem",
        ClusterOpts {
            disk_mib: 512,
            on_shm: true,
            // Pings far apart: the stall must show in the send queue, not end the link.
            extra: "  net {\n    protocol A;\n    max-buffers 2048;\n    connect-int 1;\n    ping-int 120;\n    ping-timeout 300;\n  }\n".into(),
        },
    );
    up_pair(&c);
    assert_eq!(c.a().status_json()["protocol"], "A");
    let a_pid = c.a().pid().expect("node-a runs");
    let b_pid = c.b().pid().expect("node-b runs");
    let idle = rss_kib(a_pid);
    let fio = Command::new("fio")
        .args([
            "--name=stall",
            "--ioengine=nbd",
            &format!("--uri={}", c.a().nbd_uri()),
            "--rw=randwrite",
            "--bs=1m",
            "--iodepth=32",
            "--size=448M",
            "--time_based",
            "--runtime=38",
            "--output-format=terse",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fio");
    std::thread::sleep(Duration::from_secs(2));
    let stop = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &b_pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {b_pid}");
    };
    stop("-STOP");
    let until = Instant::now() + Duration::from_secs(30);
    let mut peak = idle;
    while Instant::now() < until {
        peak = peak.max(rss_kib(a_pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop("-CONT");
    let out = fio.wait_with_output().expect("fio runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fio failed (writes must wait, not fail):\n{text}"
    );
    println!(
        "node-a RSS: idle {idle} KiB, peak {peak} KiB while node-b was stopped for 30 s (growth {} KiB, bound {GROWTH_BOUND_KIB} KiB)",
        peak.saturating_sub(idle)
    );
    assert!(
        peak.saturating_sub(idle) <= GROWTH_BOUND_KIB,
        "node-a's RSS grew from {idle} to {peak} KiB while its peer was stopped"
    );
    // The pair recovers and converges.
    c.a().wait_state("Connected", "UpToDate", "UpToDate", 60);
}
