//! Goal: the operations interfaces work on real repd processes — `repadm adjust` applies a
//! changed `.res` file to a running resource (live, by reconnecting, or refused), `wait-sync`
//! and `verify --wait` wait with the documented output and exit codes, `metrics-listen`
//! serves Prometheus text whose counters follow the I/O, and the JSON field sets are the ones
//! docs/json.md promises.
//!
//! Method: two nodes (node-a 127.0.0.1, node-b 127.0.0.2) sharing one configuration file that
//! the test rewrites between `adjust` calls; behaviour is checked from the outside (a peer
//! SIGSTOPped to observe ping-int, the replicated bytes on the peer's backing file, resync
//! completion times, metrics scraped over plain TCP).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use rep_tests::metrics::scrape;
use rep_tests::pair::up_fresh;
use rep_tests::qemu_io_ok;
use rep_tests::{free_port, require_tool, run, run_ok, wait_for, Cluster, ClusterOpts, Node};

fn cluster(test: &str, disk_mib: u64, extra: &str) -> Cluster {
    Cluster::new(
        test,
        ClusterOpts {
            disk_mib,
            extra: extra.to_string(),
            ..Default::default()
        },
    )
}

/// (exit code, stdout, stderr) of repadm.
fn repadm(n: &Node, args: &[&str]) -> (i32, String, String) {
    let out = n.repadm(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGCONT on drop, so a failing assertion never leaves a stopped daemon behind.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        run_ok(Command::new("kill").args(["-STOP", &pid.to_string()]));
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = run(Command::new("kill").args(["-CONT", &self.0.to_string()]));
    }
}

#[test]
fn adjust_changes_ping_int_live() {
    // ping-int 30: a silent peer would go unnoticed for half a minute.
    let c = cluster(
        "ops-ping",
        16,
        "  net {\n    connect-int 1;\n    ping-int 30;\n    ping-timeout 5;\n  }\n",
    );
    up_fresh(&c, 30);
    let (a, b) = (c.a(), c.b());
    c.edit_config(|t| t.replace("ping-int 30;", "ping-int 1;"));
    let (code, out, err) = repadm(a, &["adjust", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "r0: net ping-int 30 -> 1 (live)\n");
    assert_eq!(
        a.status_json()["cstate"],
        "Connected",
        "a live change keeps the link"
    );
    assert_eq!(a.ok(&["adjust", "r0"]), "r0: no changes\n");
    // The new ping-int is what the engine uses: a SIGSTOPped peer stops answering pings and
    // node-a notices after ping-int (1 s) + ping-timeout (0.5 s), not 30 s.
    let pid = b.pid().expect("node-b's pid");
    let stopped = Stopped::stop(pid);
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(8),
        "node-a to notice the silent peer",
        || (a.status_json()["cstate"] != "Connected").then_some(()),
    );
    let noticed = t0.elapsed();
    drop(stopped);
    assert!(
        noticed < Duration::from_secs(8),
        "noticed after {noticed:?}"
    );
    eprintln!(
        "adjust: ping-int 30 -> 1 noticed a stopped peer in {} ms",
        noticed.as_millis()
    );
    for n in &c.nodes {
        n.wait_state("Connected", "Inconsistent", "Inconsistent", 30);
    }
}

#[test]
fn adjust_protocol_c_to_a_reconnects_and_replicates_under_a() {
    require_tool("qemu-io", "qemu-utils");
    let c = cluster(
        "ops-proto",
        32,
        "  net {\n    connect-int 1;\n    ping-int 1;\n  }\n  disk {\n    c-plan-ahead 0;\n    resync-rate 100M;\n  }\n",
    );
    up_fresh(&c, 30);
    let (a, b) = (c.a(), c.b());
    a.ok(&["primary", "--force", "r0"]);
    let synced = b.ok(&["wait-sync", "--timeout", "60", "r0"]);
    assert!(synced.contains("r0: in sync"), "{synced}");
    a.wait_state("Connected", "UpToDate", "UpToDate", 20);
    c.edit_config(|t| t.replace("protocol C;", "protocol A;"));
    // node-a first: it renegotiates, node-b (still C) refuses the handshake.
    let (code, out, err) = repadm(a, &["adjust", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "r0: net protocol C -> A (reconnect)\n");
    let (code, out, err) = repadm(b, &["adjust", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "r0: net protocol C -> A (reconnect)\n");
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    for n in &c.nodes {
        assert_eq!(n.status_json()["protocol"], "A", "{}", n.name);
        assert_eq!(n.ok(&["adjust", "--dry-run", "r0"]), "r0: no changes\n");
    }
    let log = std::fs::read_to_string(a.run_dir.join("r0.log")).unwrap_or_default();
    assert!(log.contains("renegotiating"), "node-a's log:\n{log}");
    // Writes under protocol A reach node-b's disk.
    qemu_io_ok(a, &["write -P 0x5a 1M 1M", "flush"]);
    wait_for(
        Duration::from_secs(10),
        "node-b's disk to hold the write",
        || {
            let mut f = std::fs::File::open(&b.disk).ok()?;
            let mut buf = vec![0u8; 2 << 20];
            f.read_exact(&mut buf).ok()?;
            buf[1 << 20..].iter().all(|&x| x == 0x5a).then_some(())
        },
    );
}

/// 16 MiB at a fixed 1 MiB/s: a resync that lasts about 16 s unless adjust speeds it up.
fn slow_resync(test: &str, extra: &str) -> Cluster {
    let c = cluster(
        test,
        16,
        &format!(
            "  net {{\n    connect-int 1;\n    ping-int 1;\n    verify-alg sha1;\n  }}\n  disk {{\n    c-plan-ahead 0;\n    resync-rate 1M;\n  }}\n{extra}"
        ),
    );
    up_fresh(&c, 30);
    c.a().ok(&["primary", "--force", "r0"]);
    wait_for(Duration::from_secs(10), "the resync to start", || {
        (c.b().status_json()["cstate"] == "SyncTarget").then_some(())
    });
    c
}

#[test]
fn adjust_resync_rate_during_a_resync_and_wait_sync() {
    require_tool("script", "bsdutils");
    let c = slow_resync("ops-rate", "");
    let (a, b) = (c.a(), c.b());
    // The SyncTarget paces the resync (it sends the requests), as in DRBD.
    let want = b.status_json()["sync"]["want_kib_s"].as_u64();
    assert_eq!(want, Some(1024), "{}", b.status_json());
    // wait-sync with a timeout while the resync crawls: exit 5, plain lines (no terminal).
    let (code, out, err) = repadm(b, &["wait-sync", "--timeout", "1", "r0"]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(
        out.starts_with("r0: waiting for the resync: SyncTarget Inconsistent/UpToDate"),
        "{out}"
    );
    assert!(err.contains("wait-sync timed out after 1 s"), "{err}");
    // On a terminal: a live progress bar with percent and ETA.
    let tty = run(Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "env REP_CONFIG={} REP_NODE={} REP_RUN_DIR={} {} wait-sync --timeout 2 r0",
            b.config.display(),
            b.name,
            b.run_dir.display(),
            rep_tests::bin("repadm").display()
        ))
        .arg("/dev/null"));
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(5), "{screen}");
    assert!(screen.contains("r0 SyncTarget ["), "{screen}");
    assert!(screen.contains("ETA"), "{screen}");
    assert!(screen.contains("%"), "{screen}");
    // 16 MiB at 1 MiB/s would take ~16 s; at 200 MiB/s it ends at once.
    c.edit_config(|t| t.replace("resync-rate 1M;", "resync-rate 200M;"));
    for n in [a, b] {
        let (code, out, err) = repadm(n, &["adjust", "r0"]);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(out, "r0: disk resync-rate 1M -> 200M (live)\n");
    }
    let t0 = Instant::now();
    let (code, out, err) = repadm(b, &["--json", "wait-sync", "--timeout", "10", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("wait-sync --json");
    assert_eq!(v["result"], "synced");
    assert_eq!(v["status"]["disk"], "UpToDate");
    eprintln!(
        "adjust: resync finished {} ms after resync-rate 1M -> 200M",
        t0.elapsed().as_millis()
    );
    a.wait_state("Connected", "UpToDate", "UpToDate", 10);
    // verify --wait: a line with the result (no terminal), exit 0.
    let (code, out, err) = repadm(a, &["verify", "--wait", "--timeout", "60", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("r0: verify done: 0 blocks out of sync"),
        "{out}"
    );
}

#[test]
fn adjust_refuses_al_extents_and_dry_run_changes_nothing() {
    let c = cluster("ops-refuse", 16, "  net {\n    connect-int 1;\n  }\n");
    up_fresh(&c, 30);
    let a = c.a();
    assert_eq!(a.ok(&["adjust", "r0"]), "r0: no changes\n");
    c.edit_config(|t| {
        t.replace(
            "connect-int 1;",
            "connect-int 1;\n    ko-count 3;\n  }\n  disk {\n    al-extents 67;",
        )
    });
    // Dry run: the lines, nothing applied (a second dry run prints the same).
    let (code, dry, err) = repadm(a, &["adjust", "-d", "r0"]);
    assert_eq!(code, 10, "{dry}{err}");
    assert!(dry.contains("r0: net ko-count 7 -> 3 (live)\n"), "{dry}");
    assert!(
        dry.contains("r0: disk al-extents 1237 -> 67 (refused): "),
        "{dry}"
    );
    assert!(dry.contains("create-md"), "{dry}");
    assert!(dry.ends_with("r0: dry run: nothing was changed\n"), "{dry}");
    assert_eq!(repadm(a, &["adjust", "--dry-run", "r0"]).1, dry);
    // The real thing: ko-count applied, al-extents refused, exit 10.
    let (code, out, err) = repadm(a, &["--json", "adjust", "r0"]);
    assert_eq!(code, 10, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("adjust --json");
    assert_eq!(v["dry_run"], false);
    let changes = v["changes"].as_array().expect("changes");
    let find = |opt: &str| {
        changes
            .iter()
            .find(|c| c["option"] == opt)
            .unwrap_or_else(|| panic!("{opt} in {out}"))
    };
    assert_eq!(find("ko-count")["how"], "live");
    assert_eq!(find("ko-count")["old"], "7");
    assert_eq!(find("ko-count")["new"], "3");
    assert_eq!(find("al-extents")["how"], "refused");
    assert!(find("al-extents")["reason"]
        .as_str()
        .unwrap_or("")
        .contains("create-md"));
    // Only the refused change is left.
    let (code, out, _) = repadm(a, &["adjust", "r0"]);
    assert_eq!(code, 10);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("r0: disk al-extents 1237 -> 67 (refused)"),
        "{out}"
    );
    assert_eq!(a.status_json()["cstate"], "Connected");
    // A disk move on a Primary without an UpToDate peer is refused (11) and changes nothing.
    c.edit_config(|t| t.replace("al-extents 67;", ""));
    a.ok(&["primary", "--force", "r0"]);
    c.b().ok(&["down", "r0"]);
    let moved = c.dir.join("moved.img");
    std::fs::copy(&a.disk, &moved).expect("copy the disk");
    c.edit_config(|t| {
        t.replacen(
            &a.disk.display().to_string(),
            &moved.display().to_string(),
            1,
        )
    });
    let (code, out, err) = repadm(a, &["adjust", "r0"]);
    assert_eq!(code, 11, "{out}{err}");
    assert!(
        out.contains("on disk ") && out.contains("(refused): this node is Primary"),
        "{out}"
    );
    assert_eq!(
        a.status_json()["backing_disk"],
        a.disk.display().to_string()
    );
    assert_eq!(a.status_json()["disk"], "UpToDate");
}

#[test]
fn adjust_moves_the_disk_of_a_secondary() {
    let c = cluster("ops-move", 16, "  net {\n    connect-int 1;\n  }\n");
    up_fresh(&c, 30);
    let (a, b) = (c.a(), c.b());
    a.ok(&["primary", "--force", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);
    // A copy of node-b's disk taken while it is down (clean metadata, same data generation).
    b.ok(&["down", "r0"]);
    let moved = c.dir.join("b-moved.img");
    std::fs::copy(&b.disk, &moved).expect("copy node-b's disk");
    b.ok(&["up", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    c.edit_config(|t| {
        t.replacen(
            &b.disk.display().to_string(),
            &moved.display().to_string(),
            1,
        )
    });
    let (code, out, err) = repadm(b, &["adjust", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!(
            "r0: on disk {} -> {} (reattach)\n",
            b.disk.display(),
            moved.display()
        )
    );
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    assert_eq!(b.status_json()["backing_disk"], moved.display().to_string());
}

#[test]
fn adjust_moves_the_addresses_of_a_connected_pair() {
    let c = cluster("ops-addr", 16, "  net {\n    connect-int 1;\n  }\n");
    up_fresh(&c, 30);
    let (a, b) = (c.a(), c.b());
    let text = std::fs::read_to_string(&a.config).expect("config");
    let port = text
        .split("address 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .expect("node-a's port")
        .to_string();
    // node-a moves to 127.0.0.3: it now has the higher address, so node-b dials.
    c.edit_config(|t| t.replace("127.0.0.1:", "127.0.0.3:"));
    let (code, out, err) = repadm(a, &["adjust", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("r0: on address 127.0.0.1:{port} -> 127.0.0.3:{port} (reconnect)\n")
    );
    let (code, out, err) = repadm(b, &["adjust", "r0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("r0: on peer address 127.0.0.1:{port} -> 127.0.0.3:{port} (reconnect)\n")
    );
    for n in [a, b] {
        n.wait_state("Connected", "Inconsistent", "Inconsistent", 30);
    }
    assert_eq!(a.status_json()["address"], format!("127.0.0.3:{port}"));
    assert_eq!(b.status_json()["peer_address"], format!("127.0.0.3:{port}"));
    // The old listener is closed.
    wait_for(
        Duration::from_secs(10),
        "the old address to be released",
        || {
            TcpStream::connect(format!("127.0.0.1:{port}"))
                .is_err()
                .then_some(())
        },
    );
}

/// The value of the sample `name{...}` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split('{').next() == Some(name) && labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{text}"))
}

#[test]
fn metrics_follow_the_io_and_the_histogram_is_cumulative() {
    require_tool("qemu-io", "qemu-utils");
    let (pa, pb) = (free_port(), free_port());
    let c = cluster(
        "ops-metrics",
        32,
        "  net {\n    connect-int 1;\n  }\n  disk {\n    c-plan-ahead 0;\n    resync-rate 100M;\n  }\n  handlers {\n    after-resync-target \"exit 3\";\n  }\n",
    );
    rep_tests::metrics::listen_on(&c, "127.0.0.1", pa);
    rep_tests::metrics::listen_on(&c, "127.0.0.2", pb);
    // dump leaves the rep-only keyword out, so drbdadm can read the result.
    assert!(!c.a().ok(&["dump", "r0"]).contains("metrics-listen"));
    up_fresh(&c, 30);
    let (a, b) = (c.a(), c.b());
    let before = scrape(pa);
    assert_eq!(
        sample(&before, "rep_connection_state", &["state=\"Connected\""]),
        1.0
    );
    assert_eq!(
        sample(&before, "rep_connection_state", &["state=\"StandAlone\""]),
        0.0
    );
    assert_eq!(sample(&before, "rep_role", &["role=\"Secondary\""]), 1.0);
    a.ok(&["primary", "--force", "r0"]);
    b.ok(&["wait-sync", "--timeout", "60", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 20);
    // The handler ran on the SyncTarget with exit status 3.
    wait_for(
        Duration::from_secs(10),
        "the handler run in node-b's metrics",
        || {
            let t = scrape(pb);
            t.contains("rep_handler_runs_total{resource=\"r0\",node=\"node-b\",handler=\"after-resync-target\",exit=\"3\"} 1")
            .then_some(())
        },
    );
    let m0 = scrape(pa);
    let w0 = sample(&m0, "rep_io_requests_total", &["op=\"write\""]);
    let r0 = sample(&m0, "rep_io_requests_total", &["op=\"read\""]);
    let sent0 = sample(&m0, "rep_peer_sent_bytes_total", &[]);
    // 16 writes of 64 KiB, 8 reads of 64 KiB, 1 flush.
    let mut args: Vec<String> = Vec::new();
    for i in 0..16 {
        args.push(format!("write -P 0x{:02x} {}k 64k", i + 1, i * 64));
    }
    for i in 0..8 {
        args.push(format!("read {}k 64k", i * 64));
    }
    args.push("flush".into());
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for a in &args {
        cmd.arg("-c").arg(a);
    }
    run_ok(cmd.arg(a.nbd_uri()));
    let m = scrape(pa);
    let writes = sample(&m, "rep_io_requests_total", &["op=\"write\""]) - w0;
    let reads = sample(&m, "rep_io_requests_total", &["op=\"read\""]) - r0;
    assert!(writes >= 16.0, "writes counted: {writes}");
    assert!(reads >= 8.0, "reads counted: {reads}");
    assert!(sample(&m, "rep_io_requests_total", &["op=\"flush\""]) >= 1.0);
    assert!(sample(&m, "rep_io_bytes_total", &["op=\"write\""]) >= 16.0 * 65536.0);
    assert!(sample(&m, "rep_peer_sent_bytes_total", &[]) - sent0 >= 16.0 * 65536.0);
    assert_eq!(sample(&m, "rep_role", &["role=\"Primary\""]), 1.0);
    assert_eq!(sample(&m, "rep_disk_state", &["state=\"UpToDate\""]), 1.0);
    assert_eq!(
        sample(&m, "rep_peer_disk_state", &["state=\"UpToDate\""]),
        1.0
    );
    assert_eq!(sample(&m, "rep_out_of_sync_bytes", &[]), 0.0);
    assert_eq!(sample(&m, "rep_resync_running", &[]), 0.0);
    // The histogram: cumulative buckets, +Inf = count = every write request, sum > 0.
    let buckets: Vec<(String, f64)> = m
        .lines()
        .filter(|l| l.starts_with("rep_write_latency_seconds_bucket{"))
        .map(|l| {
            let le = l
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            let v: f64 = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0);
            (le.to_string(), v)
        })
        .collect();
    assert_eq!(buckets.len(), 20, "{m}");
    assert_eq!(buckets[0].0, "2.5e-5", "the first bound is 25 µs");
    assert_eq!(buckets[18].0, "1e1", "the last finite bound is 10 s");
    assert_eq!(buckets[19].0, "+Inf");
    for w in buckets.windows(2) {
        assert!(w[0].1 <= w[1].1, "not cumulative: {buckets:?}");
    }
    let count = sample(&m, "rep_write_latency_seconds_count", &[]);
    assert_eq!(buckets[19].1, count);
    assert_eq!(
        count,
        sample(&m, "rep_io_requests_total", &["op=\"write\""])
    );
    let sum = sample(&m, "rep_write_latency_seconds_sum", &[]);
    assert!(
        sum > 0.0 && sum < count * 10.0,
        "sum {sum} for {count} writes"
    );
    // Every sample line parses as `name{labels} number`.
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = l.rsplit_once(' ').expect("name and value");
        assert!(series.starts_with("rep_") && series.ends_with('}'), "{l}");
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }
    // Anything but GET /metrics.
    let mut s = TcpStream::connect(("127.0.0.1", pa)).expect("connect");
    s.write_all(b"GET /other HTTP/1.1\r\n\r\n").expect("send");
    let mut t = String::new();
    s.read_to_string(&mut t).expect("read");
    assert!(t.starts_with("HTTP/1.1 404"), "{t}");
}

/// The backticked names of the first column of the table under `heading` in docs/json.md.
fn documented_fields(doc: &str, heading: &str) -> Vec<String> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/json.md has no heading {heading}"));
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .filter_map(|cell| {
            cell.trim()
                .strip_prefix('`')?
                .strip_suffix('`')
                .map(String::from)
        })
        .collect()
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn json_field_sets_match_docs_json_md() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/json.md");
    let c = slow_resync("ops-json", "");
    let b = c.b();
    let s = b.status_json();
    assert_eq!(s["version"], 1);
    assert_eq!(
        keys(&s),
        sorted(documented_fields(&doc, "## `repadm status --json"))
    );
    assert_eq!(
        keys(&s["counters"]),
        sorted(documented_fields(&doc, "### `counters`"))
    );
    assert!(s["sync"].is_object(), "a resync runs: {s}");
    assert_eq!(
        keys(&s["sync"]),
        sorted(documented_fields(&doc, "### `sync`"))
    );
    let ev = b.ok(&["--json", "events", "--now", "r0"]);
    let ev: serde_json::Value = serde_json::from_str(ev.trim()).expect("events --json line");
    assert_eq!(ev["version"], 1);
    assert_eq!(ev["kind"], "exists");
    assert_eq!(
        keys(&ev),
        sorted(documented_fields(&doc, "## `repadm events --json"))
    );
    assert_eq!(keys(&ev["status"]), keys(&s));
}

/// `repadm help`'s command names (clap's "Commands:" list), without `help` itself.
fn subcommands() -> Vec<String> {
    let out = run_ok(Command::new(rep_tests::bin("repadm")).arg("help"));
    let list: Vec<String> = out
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|n| n != "help")
        .collect();
    assert!(list.len() > 30, "{out}");
    list
}

#[test]
fn completions_and_man_pages_list_every_command() {
    let repadm = rep_tests::bin("repadm");
    let subs = subcommands();
    for must in [
        "adjust",
        "wait-sync",
        "verify",
        "completions",
        "man",
        "status",
    ] {
        assert!(subs.iter().any(|s| s == must), "{must} in {subs:?}");
    }
    let bash = run_ok(Command::new(&repadm).args(["completions", "bash"]));
    assert!(bash.contains("complete -F _repadm"), "{bash}");
    for s in &subs {
        assert!(
            bash.contains(&format!("repadm,{s})")),
            "bash completion lacks {s}"
        );
    }
    assert!(bash.contains("--dry-run"), "adjust's flag");
    // roff escapes hyphens (`repadm\-create\-md`).
    let page = run_ok(Command::new(&repadm).arg("man")).replace("\\-", "-");
    assert!(
        page.starts_with(".ie") || page.contains(".TH repadm 8"),
        "{}",
        &page[..200.min(page.len())]
    );
    for s in &subs {
        assert!(page.contains(s.as_str()), "repadm.8 lacks {s}");
    }
    assert!(page.contains("Exit codes"), "exit codes in repadm.8");
    assert!(page.contains("SS_NO_UP_TO_DATE_DISK") || page.contains("needs UpToDate data"));
    let dir = tempfile::tempdir().expect("tempdir");
    run_ok(
        Command::new(&repadm)
            .arg("man")
            .arg("--dir")
            .arg(dir.path()),
    );
    for s in &subs {
        let p = dir.path().join(format!("repadm-{s}.8"));
        let text = std::fs::read_to_string(&p)
            .unwrap_or_else(|_| panic!("{} missing", p.display()))
            .replace("\\-", "-");
        assert!(text.contains(&format!(".TH repadm-{s}")), "{}", p.display());
    }
    assert!(dir.path().join("repadm.8").exists());
    // --help ends with the exit codes too.
    let help = run_ok(Command::new(&repadm).arg("--help"));
    assert!(
        help.contains("Exit codes") && help.contains("17  needs UpToDate data"),
        "{help}"
    );
}
