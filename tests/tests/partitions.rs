//! Goal: a broken network between the two nodes is noticed within the time DRBD's liveness
//! settings promise (docs/drbd-semantics.md §5.3), the Primary keeps serving, and the pair heals by
//! resyncing only what changed.
//!
//! Method: each node's `repd` runs in its own network namespace (created by the test, joined by a
//! bridge, `rep_tests::lan`; 10.99.K.1 / 10.99.K.2 exist only inside them), so a partition is a firewall rule
//! in one namespace and touches nothing else on the machine. The NBD export and the control
//! socket are Unix sockets in the run dirs, usable from the host. Settings:
//! `ping-int 1; ping-timeout 5; timeout 10; ko-count 3; connect-int 1;` — a silent peer is
//! noticed within ping-int + ping-timeout = 1.5 s, an unacknowledged write within
//! timeout × ko-count = 3 s. Each case prints `partition: <kind> detected_in_ms=N`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rep_tests::assert::assert_same_data;
use rep_tests::nbdraw::{RawClient, CMD_WRITE};
// `status`: the daemon's own status file, rewritten on every state change: cheap to poll
// often for states, but its counters (oos_kib, nr_kib) are as of the last change; use
// `status_json` for those.
use rep_tests::faults::status_file as status;
use rep_tests::lan::Lan;
use rep_tests::{bin, run, wait_for, Cluster, ClusterOpts, Node};

const NET: &str = "  net {\n    ping-int 1;\n    ping-timeout 5;\n    timeout 10;\n    ko-count 3;\n    connect-int 1;\n  }\n";
/// ping-int + ping-timeout: a peer that answers nothing is declared lost by then.
const PING_WINDOW: Duration = Duration::from_millis(1500);
/// timeout × ko-count: no client write waits longer for the peer.
const KO_WINDOW: Duration = Duration::from_secs(3);
/// Allowance for this loaded 2-core machine (timer wake-ups, status file writes, polling).
const MARGIN: Duration = Duration::from_millis(1000);

/// The cases measure time: running them one at a time keeps the measurements honest.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pair of nodes, each in its own namespace. Field order matters: the daemons (Cluster) go
/// before the namespaces.
struct Pair {
    c: Cluster,
    net: Lan,
    usable: u64,
}

impl Pair {
    fn a(&self) -> &Node {
        self.c.a()
    }
    fn b(&self) -> &Node {
        self.c.b()
    }

    /// repadm as run on `node`, i.e. inside its namespace (so that `up` starts repd there).
    fn repadm(&self, side: usize, args: &[&str]) -> Output {
        let mut runner = Command::new("ip");
        runner
            .args(["netns", "exec", &self.net.ns[side]])
            .arg(bin("repadm"));
        self.c.nodes[side].repadm_via(runner, args)
    }

    fn ok(&self, side: usize, args: &[&str]) -> String {
        self.c.nodes[side].succeeded(args, &self.repadm(side, args))
    }

    /// Two nodes with identical (zeroed) disks, Connected, node-a Primary.
    fn up(test: &str, k: u8) -> Pair {
        Pair::up_with(test, k, NET)
    }

    fn up_with(test: &str, k: u8, net_section: &str) -> Pair {
        let net = Lan::new(99, k, &["a", "b"]);
        let c = Cluster::new(
            test,
            ClusterOpts {
                disk_mib: 64,
                extra: net_section.into(),
                on_shm: true,
            },
        );
        let text = std::fs::read_to_string(&c.a().config).expect("config");
        let text = text
            .replace("127.0.0.1:", &format!("{}:", net.ip[0]))
            .replace("127.0.0.2:", &format!("{}:", net.ip[1]));
        std::fs::write(&c.a().config, text).expect("write config");
        let mut p = Pair { c, net, usable: 0 };
        for side in 0..2 {
            p.ok(side, &["create-md", "r0"]);
            p.ok(side, &["up", "r0"]);
        }
        wait_for(Duration::from_secs(20), "the pair to connect", || {
            (cstate(p.a()) == "Connected" && cstate(p.b()) == "Connected").then_some(())
        });
        p.ok(0, &["new-current-uuid", "--clear-bitmap", "r0"]);
        wait_for(Duration::from_secs(20), "UpToDate/UpToDate", || {
            let s = status(p.b());
            (s["disk"] == "UpToDate" && s["peer_disk"] == "UpToDate").then_some(())
        });
        p.ok(0, &["primary", "r0"]);
        p.usable = status(p.a())["size_bytes"].as_u64().expect("size");
        p
    }

    fn wait_healthy(&self, what: &str, secs: u64) {
        wait_for(Duration::from_secs(secs), what, || {
            let (a, b) = (status(self.a()), status(self.b()));
            let ok = |s: &serde_json::Value| {
                s["cstate"] == "Connected"
                    && s["disk"] == "UpToDate"
                    && s["peer_disk"] == "UpToDate"
            };
            (ok(&a) && ok(&b)).then_some(())
        });
    }

    fn assert_identical(&self) {
        assert_same_data(self.a(), self.b(), self.usable);
    }
}

fn cstate(n: &Node) -> String {
    status(n)["cstate"].as_str().unwrap_or("").to_owned()
}

/// Milliseconds from `t0` until each node has left Connected (None: not within `limit`).
fn detect(nodes: &[&Node], t0: Instant, limit: Duration) -> Vec<Option<u128>> {
    let mut seen: Vec<Option<u128>> = vec![None; nodes.len()];
    while t0.elapsed() < limit && seen.iter().any(Option::is_none) {
        for (i, n) in nodes.iter().enumerate() {
            if seen[i].is_none() && cstate(n) != "Connected" {
                seen[i] = Some(t0.elapsed().as_millis());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

fn report(kind: &str, times: &[Option<u128>], names: &[&str]) -> u128 {
    let worst = times
        .iter()
        .map(|t| t.unwrap_or(u128::MAX))
        .max()
        .unwrap_or(0);
    let each: Vec<String> = names
        .iter()
        .zip(times)
        .map(|(n, t)| format!("{n}={}", t.map_or("never".into(), |t| t.to_string())))
        .collect();
    println!(
        "partition: {kind} detected_in_ms={worst} ({})",
        each.join(", ")
    );
    worst
}

/// One 4 KiB write through the Primary's export; returns how long it took.
fn write_block(c: &mut RawClient, block: u64, fill: u8) -> Duration {
    let t = Instant::now();
    let data = vec![fill; 4096];
    let (err, _) = c
        .request(CMD_WRITE, 0, block * 4096, 4096, &data)
        .expect("write request");
    assert_eq!(err, 0, "write of block {block} failed with errno {err}");
    t.elapsed()
}

/// A paced write load through the Primary's export over blocks [0, LOAD_BLOCKS): one 4 KiB
/// write every 2 ms, bounded in count and time.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    handle: Option<JoinHandle<LoadReport>>,
}

const LOAD_BLOCKS: u64 = 1024;
const LOAD_MAX_WRITES: u64 = 20_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(60);

struct LoadReport {
    writes: u64,
    max_latency: Duration,
}

impl Load {
    fn start(sock: PathBuf) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d) = (Arc::clone(&stop), Arc::clone(&done));
        let handle = std::thread::spawn(move || load_loop(&sock, &s, &d));
        Load {
            stop,
            done,
            handle: Some(handle),
        }
    }

    fn writes(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Wait until `n` more writes have completed.
    fn wait_progress(&self, n: u64, what: &str) {
        let from = self.writes();
        wait_for(Duration::from_secs(20), what, || {
            (self.writes() >= from + n).then_some(())
        });
    }

    fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("the load thread panicked")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn load_loop(sock: &Path, stop: &AtomicBool, done: &AtomicU64) -> LoadReport {
    let mut c = RawClient::connect(sock, "r0").expect("load client");
    let t0 = Instant::now();
    let mut max_latency = Duration::ZERO;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && i < LOAD_MAX_WRITES && t0.elapsed() < LOAD_MAX_TIME {
        let took = write_block(&mut c, i % LOAD_BLOCKS, (i % 251) as u8 + 1);
        max_latency = max_latency.max(took);
        i += 1;
        done.store(i, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
    LoadReport {
        writes: i,
        max_latency,
    }
}

/// Dirty `count` blocks spread over the upper half of the device while the peer is away;
/// returns the bytes dirtied. Every write must complete (the Primary carries on alone).
fn dirty_while_apart(p: &Pair, count: u64, fill: u8) -> u64 {
    let mut c = RawClient::connect(&p.a().nbd_socket(), "r0").expect("client");
    let blocks = p.usable / 4096;
    let step = (blocks / 2) / count;
    for i in 0..count {
        let took = write_block(&mut c, blocks / 2 + i * step, fill);
        assert!(
            took < KO_WINDOW + MARGIN,
            "a write while apart took {took:?}"
        );
    }
    count * 4096
}

/// Heal, wait for the pair, check that the resync moved what was dirtied (and not much more)
/// and that both disks hold the same bytes.
fn heal_and_check(p: &Pair, kind: &str, dirtied: u64, nr_before: u64) {
    let t = Instant::now();
    p.net.heal(0);
    p.net.heal(1);
    p.wait_healthy(&format!("{kind}: reconnect and resync"), 60);
    let resynced = (p.b().counter("nr_kib") - nr_before) * 1024;
    println!(
        "{kind}: healed in {} ms, dirtied {dirtied} bytes, node-b received {resynced} bytes",
        t.elapsed().as_millis()
    );
    assert!(resynced >= dirtied, "{kind}: resync missed blocks");
    assert!(
        resynced <= dirtied + 64 * 4096,
        "{kind}: resynced {resynced} bytes for {dirtied} dirtied"
    );
    p.assert_identical();
}

#[test]
fn silent_drop_is_noticed_within_ping_int_plus_ping_timeout_and_resyncs_only_the_changes() {
    let _serial = serial();
    let p = Pair::up("part-drop", 11);
    let (a, b) = (p.a(), p.b());

    // Blackhole both directions inside node-b's namespace.
    let t0 = Instant::now();
    p.net
        .iptables(1, &["-A", "INPUT", "-s", &p.net.ip[0], "-j", "DROP"]);
    p.net
        .iptables(1, &["-A", "OUTPUT", "-d", &p.net.ip[0], "-j", "DROP"]);
    let times = detect(&[a, b], t0, Duration::from_secs(10));
    let worst = report("silent-drop", &times, &["node-a", "node-b"]);
    assert!(
        worst <= (PING_WINDOW + MARGIN).as_millis(),
        "silent drop noticed after {worst} ms (ping-int + ping-timeout = {} ms)",
        PING_WINDOW.as_millis()
    );

    // The Primary keeps serving; what it writes now is out of sync.
    let oos_before = a.status_json()["oos_kib"].as_u64().expect("oos_kib");
    let dirtied = dirty_while_apart(&p, 64, 0xd1);
    let oos = a.status_json()["oos_kib"].as_u64().expect("oos_kib");
    assert_eq!(
        oos - oos_before,
        dirtied / 1024,
        "every write made while apart is marked out of sync"
    );
    assert_eq!(
        oos_before, 0,
        "nothing was in flight when the link went silent"
    );
    assert_eq!(status(a)["role"], "Primary");

    let nr_before = b.counter("nr_kib");
    heal_and_check(&p, "silent-drop", dirtied, nr_before);
}

#[test]
fn reset_connections_are_noticed_at_once() {
    let _serial = serial();
    let p = Pair::up("part-reset", 12);
    let (a, b) = (p.a(), p.b());

    // Refuse new connections with a reset, then abort the established ones on both sides.
    for (side, dir) in [(1, "INPUT"), (1, "OUTPUT")] {
        let peer = if dir == "INPUT" { "-s" } else { "-d" };
        p.net.iptables(
            side,
            &[
                "-A",
                dir,
                peer,
                &p.net.ip[0],
                "-p",
                "tcp",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        );
    }
    let t0 = Instant::now();
    p.net.kill_sockets(1, 0);
    p.net.kill_sockets(0, 1);
    let times = detect(&[a, b], t0, Duration::from_secs(10));
    let worst = report("reset", &times, &["node-a", "node-b"]);
    assert!(
        worst <= MARGIN.as_millis(),
        "a reset link was noticed only after {worst} ms"
    );
    let log = std::fs::read_to_string(a.run_dir.join("r0.log")).unwrap_or_default();
    assert!(
        !log.contains("PingAck did not arrive"),
        "node-a waited for a ping timeout instead of seeing the reset"
    );

    let nr_before = b.counter("nr_kib");
    let dirtied = dirty_while_apart(&p, 16, 0xd2);
    heal_and_check(&p, "reset", dirtied, nr_before);
}

#[test]
fn one_way_loss_is_noticed_by_both_and_never_hangs_client_writes() {
    let _serial = serial();
    let p = Pair::up("part-oneway", 13);
    let (a, b) = (p.a(), p.b());
    let load = Load::start(a.nbd_socket());
    load.wait_progress(100, "the write load to run");

    // Everything node-a sends to node-b is lost; node-b's packets still arrive.
    let t0 = Instant::now();
    p.net
        .iptables(0, &["-A", "OUTPUT", "-d", &p.net.ip[1], "-j", "DROP"]);
    let times = detect(&[a, b], t0, Duration::from_secs(10));
    let worst = report("one-way", &times, &["node-a", "node-b"]);
    assert!(
        worst <= (PING_WINDOW + MARGIN).as_millis(),
        "one-way loss noticed after {worst} ms"
    );
    load.wait_progress(200, "client writes to go on without the peer");
    let nr_before = b.counter("nr_kib");
    let report = load.finish();
    println!(
        "one-way: {} writes, slowest {} ms",
        report.writes,
        report.max_latency.as_millis()
    );
    assert!(
        report.max_latency <= KO_WINDOW + MARGIN,
        "a client write hung for {:?} (timeout × ko-count = {KO_WINDOW:?})",
        report.max_latency
    );
    let oos = a.status_json()["oos_kib"].as_u64().expect("oos_kib");
    assert!(oos > 0, "writes made during the loss must be out of sync");
    heal_and_check(&p, "one-way", oos * 1024, nr_before);
}

/// SIGCONTs the process on drop, so a failing test never leaves a stopped daemon behind.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        assert!(run(Command::new("kill").args(["-STOP", &pid.to_string()]))
            .status
            .success());
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = run(Command::new("kill").args(["-CONT", &self.0.to_string()]));
    }
}

#[test]
fn a_stalled_secondary_survives_a_short_stall_and_is_expelled_after_a_long_one() {
    let _serial = serial();
    let p = Pair::up("part-stall", 14);
    let (a, b) = (p.a(), p.b());
    let pid_b = b.pid().expect("node-b's pid");
    let load = Load::start(a.nbd_socket());
    load.wait_progress(100, "the write load to run");

    // Short: well inside ping-int + ping-timeout, the link survives and writes resume.
    let short = Duration::from_millis(600);
    let stopped = Stopped::stop(pid_b);
    let t0 = Instant::now();
    let n0 = load.writes();
    while t0.elapsed() < short {
        assert_eq!(
            cstate(a),
            "Connected",
            "the link dropped during a short stall"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let during = load.writes() - n0;
    drop(stopped);
    load.wait_progress(100, "writes to resume after the short stall");
    assert_eq!(cstate(a), "Connected");
    assert_eq!(cstate(b), "Connected");
    assert!(
        during <= 1,
        "protocol C writes completed while the Secondary was stopped ({during})"
    );
    println!(
        "stall: a {} ms stall was survived, writes resumed",
        short.as_millis()
    );

    // Long: beyond both windows. The Primary expels the peer and carries on.
    let nr_before = b.counter("nr_kib");
    let stopped = Stopped::stop(pid_b);
    let t0 = Instant::now();
    let times = detect(&[a], t0, Duration::from_secs(10));
    let worst = report("stall", &times, &["node-a"]);
    assert!(
        worst <= (PING_WINDOW + MARGIN).as_millis(),
        "a stopped peer was expelled after {worst} ms"
    );
    load.wait_progress(100, "the Primary to carry on alone");
    let log = std::fs::read_to_string(a.run_dir.join("r0.log")).unwrap_or_default();
    assert!(
        log.contains("PingAck did not arrive") || log.contains("timeout × ko-count"),
        "node-a must log why it dropped the peer"
    );
    // The stall's length is the input of this case, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(t0.elapsed()));
    // The load stops and the out-of-sync amount is read while node-b is still stopped: once it
    // runs again it reconnects at once, and a resync already under way would shrink `oos_kib`
    // below what the resync moves, and writes replicated after the reconnect would add to it.
    let report = load.finish();
    println!(
        "stall: {} writes, slowest {} ms",
        report.writes,
        report.max_latency.as_millis()
    );
    assert!(
        report.max_latency <= KO_WINDOW + MARGIN,
        "a client write hung for {:?}",
        report.max_latency
    );
    let oos = a.status_json()["oos_kib"].as_u64().expect("oos_kib");
    assert!(
        oos > 0,
        "writes made while the peer was stopped are out of sync"
    );
    drop(stopped);
    heal_and_check(&p, "stall", oos * 1024, nr_before);
}

#[test]
fn a_stall_of_several_seconds_inside_wider_windows_is_survived() {
    // ping-int 3 s, ping-timeout 3 s, timeout 3 s × ko-count 3: a peer may be silent for up to
    // 6 s and a write unacknowledged for up to 9 s. A 4 s stall outlasts ping-int (node-a's ping
    // goes unanswered for a while) but not the windows: the link must survive it.
    let _serial = serial();
    let net = "  net {\n    ping-int 3;\n    ping-timeout 30;\n    timeout 30;\n    ko-count 3;\n    connect-int 1;\n  }\n";
    let p = Pair::up_with("part-stall-wide", 15, net);
    let (a, b) = (p.a(), p.b());
    let pid_b = b.pid().expect("node-b's pid");
    let load = Load::start(a.nbd_socket());
    load.wait_progress(100, "the write load to run");
    let stall = Duration::from_secs(4);
    let stopped = Stopped::stop(pid_b);
    let t0 = Instant::now();
    while t0.elapsed() < stall {
        assert_eq!(cstate(a), "Connected", "the link dropped during the stall");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stopped);
    load.wait_progress(100, "writes to resume after the stall");
    let report = load.finish();
    assert_eq!(cstate(a), "Connected");
    assert_eq!(cstate(b), "Connected");
    let log = std::fs::read_to_string(a.run_dir.join("r0.log")).unwrap_or_default();
    assert!(!log.contains("conn( Connected ->"), "the link dropped");
    println!(
        "stall: a {} s stall inside a 6 s ping window was survived; slowest write {} ms",
        stall.as_secs(),
        report.max_latency.as_millis()
    );
    assert!(report.max_latency >= stall - Duration::from_millis(500));
    assert_eq!(
        a.status_json()["oos_kib"].as_u64(),
        Some(0),
        "nothing to resync"
    );
    p.assert_identical();
}
