//! Goal: two data nodes and a diskless witness (docs/quorum.md, "The witness") never let two
//! nodes write, never lose an acknowledged write, and keep (or hand over) the service on the
//! side that has quorum and UpToDate data, through every partition of the three and a one-way
//! loss between the data nodes, with either data node as Primary; after healing, resync and
//! verify find nothing out of sync.
//!
//! Method: the real repadm/repd on three hosts, each in its own network namespace (created by
//! the test, joined by a bridge in a fourth; 10.98.K.1-3 exist only inside them), so that a
//! partition is iptables rules inside the namespaces. A writer thread writes numbered 4 KiB
//! blocks through the Primary's export, one at a time, and records which numbers were
//! acknowledged (the history). While a partition lasts, the test samples every node's status
//! and fails if two nodes could write at once (Primary, quorum, I/O not frozen). The test
//! plays the notify script: it promotes the other data node where it should take over, and
//! checks the refusal where it must not. After healing: Connected, UpToDate on both, `verify`
//! finds 0 blocks, the disks are identical, and every block holds its last acknowledged
//! number or a later attempted one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rep_tests::assert::assert_same_data;
use rep_tests::faults::status_file as status;
use rep_tests::lan::Lan;
use rep_tests::nbdraw::{RawClient, CMD_READ, CMD_WRITE};
use rep_tests::{bin, require_tool, wait_for, Cluster, ClusterOpts, Node};

/// A silent peer is lost within ping-int + ping-timeout = 1.5 s, on the data link and on the
/// witness links alike.
const NET: &str = "  net {\n    ping-int 1;\n    ping-timeout 5;\n    timeout 10;\n    ko-count 3;\n    connect-int 1;\n    verify-alg sha1;\n  }\n";
/// Blocks the writer cycles over.
const BLOCKS: u64 = 256;
const A: usize = 0;
const B: usize = 1;
const W: usize = 2;

/// The cases depend on timing: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The three nodes. Field order: the daemons (Cluster) go before the namespaces.
struct Trio {
    c: Cluster,
    net: Lan,
    usable: u64,
}

impl Trio {
    fn node(&self, side: usize) -> &Node {
        &self.c.nodes[side]
    }

    /// repadm as run on host `side`, inside its namespace.
    fn repadm(&self, side: usize, args: &[&str]) -> Output {
        let mut runner = Command::new("ip");
        runner
            .args(["netns", "exec", &self.net.ns[side]])
            .arg(bin("repadm"));
        self.node(side).repadm_via(runner, args)
    }

    fn ok(&self, side: usize, args: &[&str]) -> String {
        self.node(side).succeeded(args, &self.repadm(side, args))
    }

    fn up(test: &str, k: u8) -> Trio {
        require_tool("iptables", "iptables");
        let net = Lan::new(98, k, &["a", "b", "w"]);
        let mut c = Cluster::new(
            test,
            ClusterOpts {
                disk_mib: 32,
                extra: String::new(),
                on_shm: true,
            },
        );
        let port = rep_tests::free_port();
        let witness = Node {
            name: "witness".into(),
            run_dir: c.dir.join("run-witness"),
            disk: PathBuf::from("none"),
            config: c.a().config.clone(),
            resource: "r0".into(),
        };
        let text = format!(
            "resource r0 {{\n  protocol C;\n  device /dev/drbd0;\n  meta-disk internal;\n{NET}  options {{\n    quorum majority;\n    on-no-quorum io-error;\n  }}\n  on node-a {{\n    node-id 0;\n    disk {a};\n    address {ia}:{port};\n  }}\n  on node-b {{\n    node-id 1;\n    disk {b};\n    address {ib}:{port};\n  }}\n  on witness {{\n    node-id 2;\n    disk none;\n    address {iw}:{port};\n  }}\n  connection-mesh {{\n    hosts node-a node-b witness;\n  }}\n}}\n",
            a = c.a().disk.display(),
            b = c.b().disk.display(),
            ia = net.ip[0],
            ib = net.ip[1],
            iw = net.ip[2],
        );
        std::fs::write(&c.a().config, text).expect("write config");
        c.nodes.push(witness);
        let mut t = Trio { c, net, usable: 0 };
        for side in [A, B, W] {
            t.ok(side, &["create-md", "r0"]);
            t.ok(side, &["up", "r0"]);
        }
        t.wait_all_connected("the three nodes to connect");
        t.ok(A, &["new-current-uuid", "--clear-bitmap", "r0"]);
        t.wait_healthy("UpToDate/UpToDate after the fresh start");
        t.usable = status(t.node(A))["size_bytes"].as_u64().expect("size");
        // Every peer shows in `status` and `events`, on the data nodes and on the witness.
        let a = t.ok(A, &["status", "r0"]);
        assert!(
            a.contains("  node-b role:Secondary\n")
                && a.contains("  witness role:Secondary\n    peer-disk:Diskless\n"),
            "{a}"
        );
        let w = t.ok(W, &["status", "r0"]);
        assert!(
            w.contains("disk:Diskless quorum:yes")
                && w.contains("  node-a role:Secondary\n    peer-disk:UpToDate\n"),
            "{w}"
        );
        let ev = t.ok(A, &["events", "--now", "r0"]);
        assert!(
            ev.contains("exists connection name:r0 conn-name:witness connection:Connected role:Secondary")
                && ev.contains("exists peer-device name:r0 conn-name:witness volume:0 replication:Established peer-disk:Diskless"),
            "{ev}"
        );
        let ev = t.ok(W, &["events", "--now", "r0"]);
        assert!(
            ev.contains("conn-name:node-a connection:Connected")
                && ev.contains("conn-name:node-b connection:Connected")
                && !ev.contains("conn-name:peer"),
            "{ev}"
        );
        // A runbook's `adjust` on every host: nothing to change anywhere.
        for side in [A, B, W] {
            assert_eq!(t.ok(side, &["adjust", "r0"]), "r0: no changes\n");
        }
        let out = t.repadm(W, &["primary", "r0"]);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && text.contains("is the witness"),
            "{text}"
        );
        t
    }

    fn peer_cstate(&self, side: usize, peer: &str) -> String {
        let s = status(self.node(side));
        s["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["node"] == peer))
            .and_then(|p| p["cstate"].as_str())
            .unwrap_or("?")
            .to_string()
    }

    fn wait_all_connected(&self, what: &str) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            let ok = self.peer_cstate(A, "node-b") == "Connected"
                && self.peer_cstate(A, "witness") == "Connected"
                && self.peer_cstate(B, "witness") == "Connected"
                && self.peer_cstate(W, "node-a") == "Connected"
                && self.peer_cstate(W, "node-b") == "Connected";
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut report = String::new();
        for side in [A, B, W] {
            let n = self.node(side);
            report += &format!("\n--- {}: {}\n{}", n.name, status(n), n.log_tail());
        }
        panic!("timed out after 30 s waiting for {what}{report}");
    }

    fn wait_healthy(&self, what: &str) {
        wait_for(Duration::from_secs(60), what, || {
            let ok = |s: serde_json::Value| {
                s["cstate"] == "Connected"
                    && s["disk"] == "UpToDate"
                    && s["peer_disk"] == "UpToDate"
            };
            (ok(status(self.node(A))) && ok(status(self.node(B)))).then_some(())
        });
    }

    /// `side` Primary, the other data node Secondary.
    fn make_primary(&self, side: usize) {
        let other = 1 - side;
        if status(self.node(other))["role"] == "Primary" {
            self.ok(other, &["secondary", "r0"]);
        }
        if status(self.node(side))["role"] != "Primary" {
            self.ok(side, &["primary", "r0"]);
        }
    }

    /// Nodes that could acknowledge a write now.
    fn writers(&self) -> Vec<usize> {
        [A, B]
            .into_iter()
            .filter(|&s| {
                let st = status(self.node(s));
                st["role"] == "Primary"
                    && st["quorum"] == true
                    && st["suspended"] == false
                    && st["suspended_quorum"] == false
            })
            .collect()
    }

    /// Sample who could write for `d`; never two.
    fn watch(&self, d: Duration, case: &str) {
        let t0 = Instant::now();
        while t0.elapsed() < d {
            let w = self.writers();
            assert!(w.len() <= 1, "{case}: two nodes could write at once: {w:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the writer learned: for each block, the numbers acknowledged and attempted.
#[derive(Default)]
struct History {
    acked: HashMap<u64, u64>,
    attempted: HashMap<u64, u64>,
    ok: u64,
    failed: u64,
}

struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Numbered writes through `node`'s export, one at a time, until stopped (at most 60 s and
/// 50,000 writes). Numbers continue from `next`; a failed write (EIO without quorum, a closed
/// export) is recorded as attempted only, and the writer reconnects and goes on.
fn start_writer(node: &Node, hist: Arc<Mutex<History>>, next: u64) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let sock = node.nbd_socket();
    let s = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut seq = next;
        let mut client: Option<RawClient> = None;
        while !s.load(Ordering::Relaxed)
            && t0.elapsed() < Duration::from_secs(60)
            && seq < next + 50_000
        {
            let c = match client.as_mut() {
                Some(c) => c,
                None => match RawClient::connect(&sock, "r0") {
                    Ok(c) => client.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            let block = seq % BLOCKS;
            let data: Vec<u8> = seq
                .to_le_bytes()
                .iter()
                .copied()
                .cycle()
                .take(4096)
                .collect();
            hist.lock().unwrap().attempted.insert(block, seq);
            match c.request(CMD_WRITE, 0, block * 4096, 4096, &data) {
                Ok((0, _)) => {
                    let mut h = hist.lock().unwrap();
                    h.acked.insert(block, seq);
                    h.ok += 1;
                }
                Ok(_) => {
                    hist.lock().unwrap().failed += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => {
                    hist.lock().unwrap().failed += 1;
                    client = None;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            seq += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    Writer {
        stop,
        handle: Some(handle),
    }
}

impl Writer {
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
    }
}

/// Every block read through `node`'s export holds its last acknowledged number, or a later
/// attempted one (a write whose answer was lost may have landed).
fn check_history(node: &Node, hist: &History, case: &str) {
    let mut c = RawClient::connect(&node.nbd_socket(), "r0").expect("NBD connect to check");
    for (&block, &acked) in &hist.acked {
        let (err, data) = c
            .request(CMD_READ, 0, block * 4096, 4096, &[])
            .expect("read");
        assert_eq!(err, 0, "{case}: read of block {block} failed");
        let got = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let last = hist.attempted.get(&block).copied().unwrap_or(acked);
        assert!(
            got >= acked && got <= last && got % BLOCKS == block,
            "{case}: block {block} holds write {got}; acknowledged up to {acked}, attempted up to {last}: an acknowledged write was lost"
        );
    }
}

/// After healing: the pair Connected and UpToDate, verify finds nothing, the disks are the
/// same, and the Primary's data holds every acknowledged write.
fn heal_and_check(t: &Trio, primary: usize, hist: &History, case: &str) {
    t.net.heal_all();
    t.wait_all_connected(&format!(
        "{case}: the three nodes to reconnect after healing"
    ));
    t.wait_healthy(&format!("{case}: resync after healing"));
    let out = t.ok(primary, &["verify", "--wait", "--timeout", "120", "r0"]);
    assert!(
        out.contains("verify done: 0 blocks out of sync"),
        "{case}: {out}"
    );
    assert_same_data(t.node(A), t.node(B), t.usable);
    check_history(t.node(primary), hist, case);
    eprintln!(
        "witness: {case}: ok ({} writes acknowledged, {} failed while apart)",
        hist.ok, hist.failed
    );
}

/// A promotion the rules must refuse; the refusal names why.
fn refused_promotion(t: &Trio, side: usize, case: &str) -> String {
    let out = t.repadm(side, &["primary", "r0"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "{case}: {} was promoted: {text}",
        t.node(side).name
    );
    assert_ne!(status(t.node(side))["role"], "Primary", "{case}");
    text
}

fn name(side: usize) -> &'static str {
    ["a", "b", "w"][side]
}

/// A fresh history and a writer on Primary `x`, running for half a second already.
fn begin(t: &Trio, x: usize) -> (Arc<Mutex<History>>, Writer) {
    let hist = Arc::new(Mutex::new(History::default()));
    let w = start_writer(t.node(x), Arc::clone(&hist), 1_000_000 * (x as u64 + 1));
    std::thread::sleep(Duration::from_millis(500));
    (hist, w)
}

/// Writes are still acknowledged, a second later.
fn assert_still_writing(hist: &Mutex<History>, case: &str) {
    let before = hist.lock().unwrap().ok;
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        hist.lock().unwrap().ok > before,
        "{case}: the Primary's writes stopped"
    );
}

/// Runs `case` with node-a, then node-b, as Primary.
fn both_ways(test: &str, k: u8, case: impl Fn(&Trio, usize, usize, &str)) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = Trio::up(test, k);
    for (x, y) in [(A, B), (B, A)] {
        t.make_primary(x);
        let label = format!("{test} with {} Primary", name(x));
        case(&t, x, y, &label);
    }
}

#[test]
fn primary_cut_off_alone_the_other_side_takes_over() {
    both_ways("wq-alone", 1, |t, x, y, case| {
        let (hist, w) = begin(t, x);
        t.net.cut(x, y);
        t.net.cut(x, W);
        t.watch(Duration::from_secs(3), case);
        assert_eq!(
            status(t.node(x))["quorum"],
            false,
            "{case}: the lone Primary keeps quorum"
        );
        w.finish();
        // The notify script on y: it has quorum (the witness) and UpToDate data.
        assert_eq!(status(t.node(y))["quorum"], true, "{case}: y lost quorum");
        t.ok(y, &["primary", "r0"]);
        assert_eq!(t.writers(), vec![y], "{case}");
        let w = start_writer(t.node(y), Arc::clone(&hist), 2_000_000 * (x as u64 + 1));
        t.watch(Duration::from_secs(2), case);
        w.finish();
        // x's own notify script demotes it as it loses the floating address.
        t.ok(x, &["secondary", "r0"]);
        let h = hist.lock().unwrap();
        heal_and_check(t, y, &h, case);
    });
}

#[test]
fn secondary_cut_off_alone_the_primary_goes_on() {
    both_ways("wq-sec", 2, |t, x, y, case| {
        let (hist, w) = begin(t, x);
        t.net.cut(y, x);
        t.net.cut(y, W);
        t.watch(Duration::from_secs(4), case);
        assert_eq!(
            t.writers(),
            vec![x],
            "{case}: the Primary with the witness stopped"
        );
        let why = refused_promotion(t, y, case);
        assert!(why.contains("quorum"), "{case}: {why}");
        assert_still_writing(&hist, case);
        w.finish();
        let h = hist.lock().unwrap();
        heal_and_check(t, x, &h, case);
    });
}

#[test]
fn witness_cut_off_changes_nothing() {
    both_ways("wq-wit", 3, |t, x, y, case| {
        let (hist, w) = begin(t, x);
        t.net.cut(W, x);
        t.net.cut(W, y);
        t.watch(Duration::from_secs(3), case);
        assert_eq!(t.writers(), vec![x], "{case}");
        w.finish();
        let h = hist.lock().unwrap();
        assert_eq!(
            h.failed, 0,
            "{case}: writes failed with the data link intact"
        );
        assert_eq!(status(t.node(x))["cstate"], "Connected", "{case}");
        drop(h);
        // The witness dying changes nothing either; it comes back with `up`.
        t.net.heal_all();
        t.wait_all_connected(&format!("{case}: the witness links back"));
        let w = start_writer(t.node(x), Arc::clone(&hist), 3_000_000 * (x as u64 + 1));
        t.node(W).kill9();
        t.watch(Duration::from_secs(3), case);
        assert_eq!(
            t.writers(),
            vec![x],
            "{case}: the witness's death stopped the Primary"
        );
        assert_still_writing(&hist, case);
        w.finish();
        t.ok(W, &["up", "r0"]);
        let h = hist.lock().unwrap();
        assert_eq!(h.failed, 0, "{case}: writes failed as the witness died");
        heal_and_check(t, x, &h, case);
    });
}

#[test]
fn everyone_cut_off_nobody_writes() {
    both_ways("wq-all", 4, |t, x, y, case| {
        let (hist, w) = begin(t, x);
        t.net.cut(x, y);
        t.net.cut(x, W);
        t.net.cut(y, W);
        t.watch(Duration::from_secs(3), case);
        assert!(t.writers().is_empty(), "{case}: a node still writes");
        let why = refused_promotion(t, y, case);
        assert!(why.contains("quorum"), "{case}: {why}");
        w.finish();
        let h = hist.lock().unwrap();
        assert!(h.failed > 0, "{case}: no write failed without quorum");
        // Seeing the witness again does not give quorum back: x's data may be stale by now
        // for all it knows; it needs its data peer.
        t.net.heal_all();
        t.net.cut(x, y);
        t.net.cut(y, W);
        wait_for(Duration::from_secs(20), "x's witness link back", || {
            (t.peer_cstate(x, "witness") == "Connected").then_some(())
        });
        t.watch(Duration::from_secs(2), case);
        assert_eq!(
            status(t.node(x))["quorum"],
            false,
            "{case}: the witness alone gave quorum back"
        );
        heal_and_check(t, x, &h, case);
    });
}

#[test]
fn one_way_loss_between_the_data_nodes_outdates_the_secondary_through_the_witness() {
    both_ways("wq-oneway", 5, |t, x, y, case| {
        let (hist, w) = begin(t, x);
        t.net.cut_one_way(x, y);
        t.watch(Duration::from_secs(4), case);
        assert_eq!(t.writers(), vec![x], "{case}: the Primary did not go on");
        assert_eq!(
            status(t.node(y))["disk"],
            "Outdated",
            "{case}: y was not outdated"
        );
        refused_promotion(t, y, case);
        assert_still_writing(&hist, case);
        w.finish();
        let h = hist.lock().unwrap();
        heal_and_check(t, x, &h, case);
    });
}

/// Explicit `connection` sections (each pair on its own port) and a `shared-secret`: the
/// witness links authenticate both ways; a witness with another secret is never counted.
/// Loopback (127.0.0.1-3), no partitions.
#[test]
fn explicit_connections_and_a_shared_secret_on_the_witness_links() {
    let mut c = Cluster::new("wq-auth", ClusterOpts::default());
    let (ab, aw, bw) = (
        rep_tests::free_port(),
        rep_tests::free_port(),
        rep_tests::free_port(),
    );
    let conf = |secret: &str| {
        format!(
            "resource r0 {{\n  device /dev/drbd0;\n  meta-disk internal;\n  net {{\n    ping-int 1;\n    ping-timeout 5;\n    connect-int 1;\n    cram-hmac-alg sha256;\n    shared-secret \"{secret}\";\n  }}\n  options {{\n    quorum majority;\n  }}\n  on node-a {{\n    node-id 0;\n    disk {a};\n    address 127.0.0.1:{ab};\n  }}\n  on node-b {{\n    node-id 1;\n    disk {b};\n    address 127.0.0.2:{ab};\n  }}\n  on witness {{\n    node-id 2;\n    disk none;\n    address 127.0.0.3:{aw};\n  }}\n  connection {{\n    host node-a address 127.0.0.1:{ab};\n    host node-b address 127.0.0.2:{ab};\n  }}\n  connection {{\n    host node-a address 127.0.0.1:{aw};\n    host witness address 127.0.0.3:{aw};\n  }}\n  connection {{\n    host node-b address 127.0.0.2:{bw};\n    host witness address 127.0.0.3:{bw};\n  }}\n}}\n",
            a = c.a().disk.display(),
            b = c.b().disk.display(),
        )
    };
    std::fs::write(&c.a().config, conf("right")).expect("write config");
    let wrong = c.dir.join("witness-wrong.res");
    std::fs::write(&wrong, conf("wrong")).expect("write config");
    c.nodes.push(Node {
        name: "witness".into(),
        run_dir: c.dir.join("run-witness"),
        disk: PathBuf::from("none"),
        config: wrong,
        resource: "r0".into(),
    });
    for n in &c.nodes {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    let peer = |n: &Node, p: &str| {
        status(n)["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|x| x["node"] == p).cloned())
            .map(|x| x["cstate"].as_str().unwrap_or("?").to_string())
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(20), "the data nodes to connect", || {
        (peer(&c.nodes[0], "node-b") == "Connected").then_some(())
    });
    wait_for(Duration::from_secs(10), "a refused greeting", || {
        c.nodes[2]
            .log()
            .contains("failed authentication (a different shared-secret)")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(peer(&c.nodes[0], "witness"), "WFConnection");
    assert_eq!(peer(&c.nodes[2], "node-a"), "WFConnection");
    // The right secret: both witness links come up (each on its own connection's port).
    c.nodes[2].ok(&["down", "r0"]);
    c.nodes[2].config = c.a().config.clone();
    c.nodes[2].ok(&["up", "r0"]);
    wait_for(Duration::from_secs(20), "the witness links", || {
        let ok = peer(&c.nodes[0], "witness") == "Connected"
            && peer(&c.nodes[1], "witness") == "Connected"
            && peer(&c.nodes[2], "node-a") == "Connected"
            && peer(&c.nodes[2], "node-b") == "Connected";
        ok.then_some(())
    });
    // Both control servers answer a bad line with an error and go on with the next one.
    for n in [&c.nodes[0], &c.nodes[2]] {
        use std::io::{BufRead, BufReader, Write};
        let ctl = n.run_dir.join("r0.ctl");
        let mut s = std::os::unix::net::UnixStream::connect(&ctl).expect("control socket");
        s.write_all(b"not json\n{\"cmd\":\"status\"}\n")
            .expect("write");
        let mut r = BufReader::new(s);
        let (mut first, mut second) = (String::new(), String::new());
        r.read_line(&mut first).expect("first answer");
        r.read_line(&mut second).expect("second answer");
        assert!(
            first.contains("\"result\":\"error\"") && first.contains("bad control request"),
            "{}: {first}",
            n.name
        );
        assert!(
            second.contains("\"result\":\"ok\"") && second.contains("\"resource\":\"r0\""),
            "{}: {second}",
            n.name
        );
    }
    for n in &c.nodes {
        n.ok(&["down", "r0"]);
    }
}
