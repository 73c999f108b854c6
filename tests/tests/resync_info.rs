//! issue 24 §3 and §2: a resync that says what limits it, and `verify --fix --from NODE`.
//!
//! Each limit is set in turn on a real pair during a full sync (`invalidate` on node-b), and
//! `status --json`, `status`, `events` and the metrics must name it with the setting to
//! change. Then the limit is lifted (`adjust`, `fault clear`, the load stops) and the resync
//! must finish with both disks identical and the link up all along.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rep_tests::assert::{assert_same_data, down_and_assert_same_data};
use rep_tests::metrics::scrape;
use rep_tests::nbdraw::WriteLoad;
use rep_tests::pair::{same_random_data, up_pair, PairConf};
use rep_tests::{free_port, wait_for, Cluster, ClusterOpts, Node};

fn status(n: &Node) -> serde_json::Value {
    n.status_json()
}

/// A pair with `disk { … }` = `disk`, 128 MiB on /dev/shm, identical random contents, node-a
/// Primary, link pings every second.
fn pair(test: &str, disk: &str, net: &str, metrics: Option<u16>) -> Cluster {
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 128,
            on_shm: true,
            extra: format!(
                "  net {{\n    connect-int 1;\n    ping-int 1;\n{net}  }}\n  disk {{\n{disk}  }}\n"
            ),
        },
    );
    if let Some(port) = metrics {
        rep_tests::metrics::listen_on(&c, "127.0.0.1", port);
    }
    same_random_data(&c);
    up_pair(&c);
    c
}

/// Full sync node-a → node-b, as an operator starts one.
fn start_full_sync(c: &Cluster) {
    c.b().ok(&["invalidate", "r0"]);
    wait_for(Duration::from_secs(10), "the resync to start", || {
        (status(c.b())["cstate"] == "SyncTarget").then_some(())
    });
}

/// Wait until `n`'s status names `by` as the limit; returns the `sync` object then.
fn wait_limit(n: &Node, by: &str, secs: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        let s = status(n);
        if s["sync"]["limit"]["by"] == by {
            return s["sync"].clone();
        }
        last = s;
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{} never named {by} as the limit in {secs} s; last status:\n{last:#}",
        n.name
    );
}

/// Rewrite the shared config (`from` → `to`) and `adjust` both nodes.
fn adjust(c: &Cluster, from: &str, to: &str) {
    let cfg = &c.a().config;
    let text = std::fs::read_to_string(cfg).expect("config");
    assert!(text.contains(from), "{from} not in the config");
    std::fs::write(cfg, text.replace(from, to)).expect("config");
    for n in [c.a(), c.b()] {
        n.ok(&["adjust", "r0"]);
    }
}

/// The resync ends, the link never went down, both disks hold the same bytes.
fn finish_and_compare(c: &Cluster, secs: u64) {
    let (a, b) = (c.a(), c.b());
    b.wait_state("Connected", "UpToDate", "UpToDate", secs);
    let usable = status(a)["size_bytes"].as_u64().expect("size");
    for n in [a, b] {
        let log = n.log();
        let lost = ["NetworkFailure", "Timeout", "BrokenPipe", "ProtocolError"]
            .iter()
            .any(|s| log.contains(&format!("-> {s} )")));
        assert!(!lost, "{}: the link went down:\n{}", n.name, n.log_tail());
    }
    down_and_assert_same_data(a, b, usable);
}

/// The configured caps: `resync-rate` with the controller off, then (adjusted live, same
/// resync) `c-max-rate` with it on; lifting the cap finishes the resync. Status, its text,
/// events and the metrics all name the limit.
#[test]
fn status_names_the_configured_cap_and_raising_it_lifts_it() {
    let port = free_port();
    let c = pair(
        "rsinfo-cap",
        "    c-plan-ahead 0;\n    resync-rate 2M;\n    c-fill-target 1M;\n    c-max-rate 3M;\n    c-min-rate 0;\n",
        "",
        Some(port),
    );
    let (a, b) = (c.a(), c.b());
    start_full_sync(&c);
    let sync = wait_limit(b, "resync-rate", 15);
    assert_eq!(sync["limit"]["setting"], "resync-rate", "{sync:#}");
    let text = sync["limit"]["text"].as_str().expect("text");
    assert!(
        text.contains("resync-rate 2M") && text.contains("raise resync-rate in disk { }"),
        "{text}"
    );
    // The source mirrors it from its own settings (the same file).
    wait_limit(a, "resync-rate", 15);

    adjust(&c, "c-plan-ahead 0;", "c-plan-ahead 20;");
    let sync = wait_limit(b, "c-max-rate", 15);
    assert_eq!(sync["limit"]["setting"], "c-max-rate");
    assert_eq!(
        sync["limit"]["text"],
        "limited by c-max-rate 3M; raise c-max-rate in disk { }"
    );
    // Measured over the last seconds: about the cap (3 MiB/s), and the ETA follows it.
    std::thread::sleep(Duration::from_secs(4));
    let s = status(b);
    let sync = &s["sync"];
    let speed = sync["speed_kib_s"].as_u64().expect("speed");
    let left = sync["left_kib"].as_u64().expect("left");
    let eta = sync["eta_s"].as_u64().expect("eta");
    eprintln!(
        "c-max-rate 3M: speed {speed} KiB/s, avg {} KiB/s, eta {eta} s for {left} KiB",
        sync["avg_kib_s"]
    );
    assert!((2000..=4200).contains(&speed), "speed {speed} KiB/s");
    assert!(
        eta.abs_diff(left / speed) <= 1,
        "eta {eta} s, left {left} KiB at {speed} KiB/s"
    );
    let text = b.ok(&["status", "r0"]);
    assert!(
        text.contains("limited-by:c-max-rate")
            && text.contains("raise c-max-rate in disk { }")
            && text.contains("eta:"),
        "{text}"
    );
    let ev = b.ok(&["events", "--now", "r0"]);
    assert!(
        ev.lines()
            .any(|l| l.contains("peer-device") && l.contains("limited-by:c-max-rate")),
        "{ev}"
    );
    let m = scrape(port);
    assert!(
        m.lines().any(|l| l.starts_with("rep_resync_limited_by{")
            && l.contains("by=\"c-max-rate\"")
            && l.ends_with(" 1")),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("rep_resync_eta_seconds{") && !l.ends_with(" 0")),
        "{m}"
    );

    // The advice works: raise c-max-rate and the cap no longer holds the resync back.
    adjust(&c, "c-max-rate 3M;", "c-max-rate 1G;");
    wait_for(Duration::from_secs(20), "the cap to be lifted", || {
        let s = status(b);
        (s["cstate"] == "Connected" || s["sync"]["limit"]["by"] != "c-max-rate").then_some(())
    });
    finish_and_compare(&c, 60);
}

/// The controller's plan: `c-fill-target` small enough that the data in flight, not the
/// rate, holds the resync back.
#[test]
fn status_names_the_controllers_plan() {
    let c = pair(
        "rsinfo-plan",
        "    c-plan-ahead 20;\n    c-fill-target 4K;\n    c-max-rate 1G;\n    c-min-rate 0;\n",
        "",
        None,
    );
    let b = c.b();
    start_full_sync(&c);
    let sync = wait_limit(b, "controller", 15);
    assert_eq!(sync["limit"]["setting"], "c-fill-target", "{sync:#}");
    assert!(
        sync["limit"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("c-fill-target 4K") && t.contains("raise c-fill-target")),
        "{sync:#}"
    );
    adjust(&c, "c-fill-target 4K;", "c-fill-target 4M;");
    finish_and_compare(&c, 90);
}

/// Application I/O: while the Primary's clients write, the resync yields to `c-min-rate`;
/// both nodes say so.
#[test]
fn status_names_application_io_yielding_to_c_min_rate() {
    let c = pair(
        "rsinfo-app",
        "    c-plan-ahead 20;\n    c-fill-target 1M;\n    c-max-rate 1G;\n    c-min-rate 1M;\n",
        "",
        None,
    );
    let (a, b) = (c.a(), c.b());
    let usable = status(a)["size_bytes"].as_u64().expect("size");
    let stop = Arc::new(AtomicBool::new(false));
    let load = WriteLoad {
        depth: 4,
        pause: Duration::from_millis(2),
        seed: 0x2545_f491_4f6c_dd1d,
        random_data: false,
        limit: Duration::from_secs(60),
    }
    .spawn(&a.nbd_socket(), &a.resource, usable, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    start_full_sync(&c);
    let sync = wait_limit(b, "c-min-rate", 15);
    assert_eq!(sync["limit"]["setting"], "c-min-rate", "{sync:#}");
    assert!(
        sync["limit"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("application I/O") && t.contains("c-min-rate 1M")),
        "{sync:#}"
    );
    wait_limit(a, "c-min-rate", 15);
    stop.store(true, Ordering::Relaxed);
    let n = load.join().expect("load thread");
    eprintln!("{n} application writes during the resync");
    wait_for(
        Duration::from_secs(20),
        "the resync to stop yielding",
        || {
            let s = status(b);
            (s["cstate"] == "Connected" || s["sync"]["limit"]["by"] != "c-min-rate").then_some(())
        },
    );
    finish_and_compare(&c, 90);
}

/// The peer's disk: the SyncTarget's writes take 200 ms longer (fault hook). The SyncSource
/// names the peer's disk, the SyncTarget its own.
#[test]
fn status_names_the_slow_disk_of_the_sync_target() {
    let c = pair(
        "rsinfo-disk",
        "    c-plan-ahead 20;\n    c-fill-target 4M;\n    c-max-rate 1G;\n    c-min-rate 0;\n",
        "    ping-timeout 30;\n",
        None,
    );
    let (a, b) = (c.a(), c.b());
    let out = b.ok(&["fault", "r0", "disk-delay", "200"]);
    assert!(out.contains("disk-delay"), "{out}");
    start_full_sync(&c);
    let sync = wait_limit(a, "peer-disk", 20);
    assert!(sync["limit"]["setting"].is_null(), "{sync:#}");
    assert!(
        sync["limit"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("the peer's disk")),
        "{sync:#}"
    );
    let sync = wait_limit(b, "local-disk", 20);
    assert!(
        sync["limit"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("waits for its writes")),
        "{sync:#}"
    );
    b.ok(&["fault", "r0", "clear"]);
    finish_and_compare(&c, 90);
}

/// A network namespace whose loopback is rate limited (`tc … tbf`): both daemons run in it
/// and reach each other over its 127.0.0.0/8; deleted on drop.
struct SlowLoopback {
    ns: String,
}

impl SlowLoopback {
    fn new(test: &str) -> SlowLoopback {
        rep_tests::require_root("a network namespace with tc needs root");
        rep_tests::require_tool("tc", "iproute2");
        let ns = format!("rep-{test}-{}", std::process::id());
        let _ = rep_tests::lan::ip(&["netns", "del", &ns]);
        rep_tests::lan::ip_ok(&["netns", "add", &ns]);
        // Frames no larger than the token bucket's burst (lo's 64 KiB MTU would exceed it).
        rep_tests::lan::ip_ok(&["-n", &ns, "link", "set", "lo", "mtu", "1500"]);
        rep_tests::lan::ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        SlowLoopback { ns }
    }

    /// 40 Mbit/s (5 MB/s) on the loopback, or no limit.
    fn limit(&self, on: bool) {
        let mut args = vec!["netns", "exec", &self.ns, "tc", "qdisc"];
        if on {
            args.extend([
                "add", "dev", "lo", "root", "tbf", "rate", "40mbit", "burst", "32kb", "latency",
                "50ms",
            ]);
        } else {
            args.extend(["del", "dev", "lo", "root"]);
        }
        rep_tests::lan::ip_ok(&args);
    }

    fn runner(&self) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns,
            rep_tests::bin("repadm").to_str().expect("path"),
        ]);
        c
    }
}

impl Drop for SlowLoopback {
    fn drop(&mut self) {
        let _ = rep_tests::lan::ip(&["netns", "del", &self.ns]);
    }
}

/// The network: both daemons in a namespace whose loopback carries 5 MB/s, the controller off
/// and `resync-rate 1G`, so 32 requests of 1 MiB are asked for at once. The SyncSource's send
/// queue fills (the socket is not writable): it names the network; the SyncTarget, waiting for
/// replies, names its peer.
#[test]
fn status_names_the_network() {
    let net = SlowLoopback::new("rsinfo-net");
    let c = Cluster::new(
        "rsinfo-net",
        ClusterOpts {
            disk_mib: 128,
            on_shm: true,
            extra: "  net {\n    connect-int 1;\n    ping-int 1;\n    ping-timeout 50;\n  }\n  disk {\n    c-plan-ahead 0;\n    resync-rate 1G;\n  }\n".into(),
        },
    );
    same_random_data(&c);
    let (a, b) = (c.a(), c.b());
    for n in [a, b] {
        n.ok(&["create-md", "r0"]);
        n.succeeded(&["up", "r0"], &n.repadm_via(net.runner(), &["up", "r0"]));
    }
    for n in [a, b] {
        n.wait_state("Connected", "Inconsistent", "Inconsistent", 20);
    }
    a.ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    for n in [a, b] {
        n.wait_state("Connected", "UpToDate", "UpToDate", 10);
    }
    a.ok(&["primary", "r0"]);
    net.limit(true);
    start_full_sync(&c);
    let sync = wait_limit(a, "network", 20);
    assert_eq!(sync["limit"]["setting"], "sndbuf-size", "{sync:#}");
    let speed = sync["speed_kib_s"].as_u64().unwrap_or(0);
    eprintln!("through a 40 Mbit/s loopback: {speed} KiB/s");
    wait_limit(b, "peer", 20);
    net.limit(false);
    finish_and_compare(&c, 90);
}

// ---------------------------------------------------------------------------------------------
// verify --fix --from NODE (issue 24 §2)

/// Flip one byte of block `block` in `n`'s backing file.
fn flip(n: &Node, block: u64) {
    use std::io::{Seek, SeekFrom};
    let at = block * 4096 + 77;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&n.disk)
        .expect("open");
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&[byte[0] ^ 0xa5]).expect("flip");
}

fn verify_pair(test: &str) -> Cluster {
    let c = PairConf::new(test)
        .mib(64)
        .on_shm()
        .net("verify-alg sha1")
        .build();
    same_random_data(&c);
    up_pair(&c);
    c
}

/// The good copy is on the Secondary: `verify --fix --from node-b` (run on either node, both
/// Secondary, as a Primary is never overwritten) takes the block from node-b; and the other
/// way round, `--from node-a` repairs node-b. Only the flipped block travels.
#[test]
fn verify_fix_from_names_the_source_and_either_side_may_be_it() {
    let c = verify_pair("fix-from");
    let (a, b) = (c.a(), c.b());
    let usable = status(a)["size_bytes"].as_u64().expect("size");
    let block = 1234;
    let good = rep_tests::backing_bytes(a, block * 4096, 4096);

    // node-a (Primary) holds the bad copy. Fixing onto a Primary is refused before the verify
    // runs, with the way out.
    flip(a, block);
    let (code, err) = a.fails(&["verify", "--fix", "--from", "node-b", "r0"]);
    assert_eq!(code, 11, "{err}");
    assert!(
        err.contains("node-a, which is Primary") && err.contains("repadm secondary r0"),
        "{err}"
    );
    a.ok(&["secondary", "r0"]);
    let nr_a = status(a)["counters"]["nr_kib"].as_u64().expect("nr");
    let out = a.ok(&["verify", "--fix", "--from", "node-b", "r0"]);
    assert!(
        out.contains("the peer resyncs them to this node") && out.contains("fixed 1 blocks"),
        "{out}"
    );
    a.wait_state("Connected", "UpToDate", "UpToDate", 10);
    assert_eq!(
        status(a)["counters"]["nr_kib"].as_u64().expect("nr") - nr_a,
        4,
        "only the flipped block came from node-b"
    );
    assert_eq!(rep_tests::backing_bytes(a, block * 4096, 4096), good);

    // The reverse: node-b holds the bad copy, node-a is named, the command runs on node-b.
    flip(b, block + 1);
    let good2 = rep_tests::backing_bytes(a, (block + 1) * 4096, 4096);
    let nr_b = status(b)["counters"]["nr_kib"].as_u64().expect("nr");
    let out = b.ok(&["verify", "--fix", "--from", "node-a", "r0"]);
    assert!(out.contains("fixed 1 blocks"), "{out}");
    b.wait_state("Connected", "UpToDate", "UpToDate", 10);
    assert_eq!(
        status(b)["counters"]["nr_kib"].as_u64().expect("nr") - nr_b,
        4
    );
    assert_eq!(rep_tests::backing_bytes(b, (block + 1) * 4096, 4096), good2);

    // And --from naming this node itself: node-a pushes to node-b.
    flip(b, block + 2);
    let out = a.ok(&["verify", "--fix", "--from", "node-a", "r0"]);
    assert!(
        out.contains("to the peer started") && out.contains("fixed 1 blocks"),
        "{out}"
    );
    b.wait_state("Connected", "UpToDate", "UpToDate", 10);
    let out = a.ok(&["verify", "--wait", "r0"]);
    assert!(out.contains("verify done: 0 blocks out of sync"), "{out}");
    for n in [a, b] {
        n.ok(&["down", "r0"]);
    }
    assert_same_data(a, b, usable);
}

/// `--from` must name a host of the resource, one that is UpToDate; `--from` needs `--fix`.
#[test]
fn verify_fix_from_refuses_an_unknown_host_and_a_source_that_is_not_uptodate() {
    let c = verify_pair("fix-from-refused");
    let (a, b) = (c.a(), c.b());
    let (code, err) = a.fails(&["verify", "--fix", "--from", "node-x", "r0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("node-x is not a host of resource r0")
            && err.contains("node-a")
            && err.contains("node-b"),
        "{err}"
    );
    let (code, err) = a.fails(&["verify", "--from", "node-b", "r0"]);
    assert_eq!(code, 2, "--from without --fix is a usage error: {err}");
    assert!(err.contains("--fix"), "{err}");
    // node-b not UpToDate: a resync towards it is running (held by pause-sync).
    b.ok(&["invalidate", "r0"]);
    b.ok(&["pause-sync", "r0"]);
    wait_for(Duration::from_secs(10), "node-b Inconsistent", || {
        (status(a)["peer_disk"] == "Inconsistent").then_some(())
    });
    let (code, err) = a.fails(&["verify", "--fix", "--from", "node-b", "r0"]);
    assert_eq!(code, 17, "{err}");
    assert!(
        err.contains("node-b's disk is Inconsistent, not UpToDate"),
        "{err}"
    );
    b.ok(&["resume-sync", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    let usable = status(a)["size_bytes"].as_u64().expect("size");
    down_and_assert_same_data(a, b, usable);
}
