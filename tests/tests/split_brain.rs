//! Goal: the seeds' split-brain runbook works with `repadm` in place of `drbdadm`. The link
//! fails, the cluster manager promotes the Secondary, both nodes take writes; when the link comes
//! back both detect the split brain and drop to StandAlone, touching no data. The operator runs
//! `secondary` + `connect --discard-my-data` on the victim and `connect` on the survivor: the
//! victim resyncs from the survivor (only the blocks either side changed) and ends identical.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rep_tests::assert::assert_identical;
use rep_tests::pair::{up_pair, PairConf};
use rep_tests::{
    backing_bytes, bin, require_root, require_tool, run_ok, wait_for, wait_for_file_containing,
    write_pattern, Cluster, Node,
};

const MIB: u64 = 1 << 20;

fn wait_state(n: &Node, cstate: &str, disks: Option<(&str, &str)>, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{} to be {cstate} {disks:?}", n.name),
        || {
            let s = n.status_json();
            let disks_ok = disks.is_none_or(|(d, p)| s["disk"] == d && s["peer_disk"] == p);
            (s["cstate"] == cstate && disks_ok).then_some(())
        },
    );
}

fn oos_kib(n: &Node) -> u64 {
    n.status_json()["oos_kib"].as_u64().expect("oos_kib")
}

/// Handlers that append what they saw to `handlers.log` beside the configuration.
const LOGGING_HANDLERS: &str = r#"  handlers {
    split-brain "echo split-brain $DRBD_RESOURCE $DRBD_PEERS $DRBD_PEER_ADDRESS $REP_NODE >> $(dirname $DRBD_CONF)/handlers.log";
    initial-split-brain "echo initial-split-brain $REP_NODE >> $(dirname $DRBD_CONF)/handlers.log";
    after-resync-target "echo after-resync-target $REP_NODE >> $(dirname $DRBD_CONF)/handlers.log";
  }
"#;

/// Two nodes with identical disks, node-a Primary; `net` statements go into the net section.
fn identical_pair(test: &str, net: &[&str]) -> Cluster {
    let conf = net
        .iter()
        .fold(PairConf::new(test), |conf, statement| conf.net(statement))
        .section(LOGGING_HANDLERS);
    let c = conf.build();
    up_pair(&c);
    c
}

/// `split-brain resolve r0 --keep node-a --save SAVE --peer-run-dir PEER_DIR`.
fn resolve_keeping_node_a<'a>(save: &'a str, peer_dir: &'a str) -> [&'a str; 9] {
    [
        "split-brain",
        "resolve",
        "r0",
        "--keep",
        "node-a",
        "--save",
        save,
        "--peer-run-dir",
        peer_dir,
    ]
}

#[test]
fn split_brain_is_detected_and_discard_my_data_on_the_victim_recovers() {
    require_tool("qemu-io", "qemu-utils");
    let c = identical_pair("split-brain", &[]);
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);

    // The link fails (node-b drops it) and the cluster manager promotes node-b.
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    write_pattern(a, 0xaa, MIB, MIB);
    write_pattern(b, 0xbb, 2 * MIB, MIB);
    write_pattern(b, 0xbc, 8 * MIB, 4096);

    // The link returns: both see the split brain and stop, no data moves.
    b.ok(&["connect", "r0"]);
    for n in [a, b] {
        wait_state(n, "StandAlone", None, 20);
        assert_eq!(n.status_json()["role"], "Primary", "{}", n.name);
    }
    assert!(
        a.log_tail().contains("Split-Brain detected but unresolved"),
        "node-a's log names the split brain:\n{}",
        a.log_tail()
    );
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0xbb; 4096]);
    // The split-brain handler ran on both nodes, with DRBD's environment.
    let handlers_log = c.dir.join("handlers.log");
    wait_for_file_containing(
        &handlers_log,
        &[
            "split-brain r0 node-b 127.0.0.2 node-a",
            "split-brain r0 node-a 127.0.0.1 node-b",
        ],
        "the split-brain handlers",
    );

    // Discarding data on a Primary is refused: the runbook demotes the victim first.
    let (code, err) = b.fails(&["connect", "--discard-my-data", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("Primary"), "refusal names the role: {err}");

    // node-b is the victim, node-a the survivor.
    b.ok(&["secondary", "r0"]);
    b.ok(&["connect", "--discard-my-data", "r0"]);
    a.ok(&["connect", "r0"]);
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 30);
    wait_state(a, "Connected", Some(("UpToDate", "UpToDate")), 10);
    assert_eq!(oos_kib(a), 0);
    wait_for_file_containing(
        &handlers_log,
        &["after-resync-target node-b"],
        "after-resync-target on node-b",
    );
    let nr = b.counter("nr_kib");
    // Only the blocks either side wrote while apart travel (1 MiB + 1 MiB + 4 KiB), not 64 MiB.
    assert!(
        (2 * 1024 + 4..=4 * 1024).contains(&nr),
        "node-b received {nr} KiB; expected only the split-brain blocks"
    );

    // The victim's changes are gone, the survivor's are there, both disks identical.
    assert_eq!(backing_bytes(b, 0, 4096), vec![0x11; 4096]);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0xaa; 4096]);
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0u8; 4096]);
    assert_eq!(backing_bytes(b, 8 * MIB, 4096), vec![0u8; 4096]);
    assert_identical(a, b);
}

/// The DRBD user guide's policies: `after-sb-0pri discard-zero-changes; after-sb-1pri
/// discard-secondary; after-sb-2pri disconnect;` resolve the common split brains on their own.
#[test]
fn after_sb_policies_resolve_split_brains_without_an_operator() {
    require_tool("qemu-io", "qemu-utils");
    let policies = [
        "after-sb-0pri discard-zero-changes",
        "after-sb-1pri discard-secondary",
        "after-sb-2pri disconnect",
    ];
    let c = identical_pair("after-sb", &policies);
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);

    // 1pri: node-b was promoted during the split and wrote; back as Secondary it is discarded.
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    write_pattern(b, 0xbb, 2 * MIB, MIB);
    write_pattern(a, 0xaa, MIB, MIB);
    b.ok(&["secondary", "r0"]);
    b.ok(&["connect", "r0"]);
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 30);
    assert!(
        b.log_tail()
            .contains("automatically solved. Sync from peer node"),
        "{}",
        b.log_tail()
    );
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0xaa; 4096]);
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0u8; 4096]);
    assert_identical(a, b);

    // 0pri: node-b promoted during a split but wrote nothing, node-a wrote; both Secondary at
    // reconnect. discard-zero-changes discards node-b's (empty) side whatever the roles were.
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    b.ok(&["secondary", "r0"]);
    write_pattern(a, 0xcc, 3 * MIB, 64 * 1024);
    a.ok(&["secondary", "r0"]);
    b.ok(&["connect", "r0"]);
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 30);
    assert!(
        b.log_tail().contains(
            "Split-Brain detected, 0 primaries, automatically solved. Sync from peer node"
        ),
        "{}",
        b.log_tail()
    );
    assert_eq!(backing_bytes(b, 3 * MIB, 4096), vec![0xcc; 4096]);
    assert_identical(a, b);

    // 2pri with `disconnect`: both stay StandAlone for the operator.
    a.ok(&["primary", "r0"]);
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    write_pattern(a, 0xdd, 4 * MIB, 4096);
    write_pattern(b, 0xee, 5 * MIB, 4096);
    b.ok(&["connect", "r0"]);
    for n in [a, b] {
        wait_state(n, "StandAlone", None, 20);
    }
}

/// A split brain with writes on both sides, one range written by both: node-a (Primary) writes
/// 0xa0+k at 1 MiB (1 MiB) and 6 MiB (64 KiB); node-b, promoted during the split, writes 0xb0+k
/// at 2 MiB (1 MiB) and 6 MiB + 32 KiB (64 KiB). Returns when both are StandAlone.
fn split_with_writes(a: &Node, b: &Node, k: u8) {
    b.ok(&["disconnect", "r0"]);
    wait_state(a, "WFConnection", None, 10);
    b.ok(&["primary", "r0"]);
    write_pattern(a, 0xa0 + k, MIB, MIB);
    write_pattern(a, 0xa0 + k, 6 * MIB, 64 * 1024);
    write_pattern(b, 0xb0 + k, 2 * MIB, MIB);
    write_pattern(b, 0xb0 + k, 6 * MIB + 32 * 1024, 64 * 1024);
    b.ok(&["connect", "r0"]);
    for n in [a, b] {
        wait_state(n, "StandAlone", None, 20);
    }
}

fn show_json(n: &Node, peer: Option<&Node>) -> serde_json::Value {
    let mut args = vec!["--json", "split-brain", "show", "r0"];
    let dir;
    if let Some(p) = peer {
        dir = p.run_dir.display().to_string();
        args.extend(["--peer-run-dir", dir.as_str()]);
    }
    serde_json::from_str(&n.ok(&args)).expect("show --json is JSON")
}

fn ranges(v: &serde_json::Value) -> Vec<(u64, u64)> {
    v.as_array()
        .expect("ranges")
        .iter()
        .map(|r| (r[0].as_u64().expect("offset"), r[1].as_u64().expect("len")))
        .collect()
}

fn flag_cleared_on_both(a: &Node, b: &Node) {
    wait_state(b, "Connected", Some(("UpToDate", "UpToDate")), 30);
    wait_state(a, "Connected", Some(("UpToDate", "UpToDate")), 10);
    for n in [a, b] {
        assert_eq!(n.status_json()["split_brain"], false, "{}", n.name);
        assert!(!n.ok(&["status", "r0"]).contains("split-brain"));
    }
}

/// issue 24 §1: the sticky flag, `split-brain show` matching what was written, `resolve --keep`
/// run on either node (and on one that cannot reach the other), `--save` then `restore`
/// bringing the victim's data back byte for byte.
#[test]
fn split_brain_show_resolve_save_and_restore() {
    require_tool("qemu-io", "qemu-utils");
    let c = identical_pair("sb-tools", &[]);
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);
    split_with_writes(a, b, 1);

    // The flag: status, status --json, events, metrics-independent dump-md after a restart.
    for n in [a, b] {
        assert_eq!(n.status_json()["split_brain"], true, "{}", n.name);
        assert!(
            n.ok(&["status", "r0"]).contains("split-brain:yes"),
            "{}",
            n.ok(&["status", "r0"])
        );
        let ev = n.ok(&["--json", "events", "--now", "r0"]);
        assert!(ev.contains("\"split_brain\":true"), "{ev}");
        assert!(n.ok(&["events", "--now", "r0"]).contains("split-brain:yes"));
    }

    // show, from the handshake's record only (node-a) and with node-b's socket reachable.
    let want_a = vec![(MIB, MIB), (6 * MIB, 64 * 1024)];
    let want_b = vec![(2 * MIB, MIB), (6 * MIB + 32 * 1024, 64 * 1024)];
    for (me, peer, mine, theirs) in [(a, None, &want_a, &want_b), (b, Some(a), &want_b, &want_a)] {
        let s = show_json(me, peer);
        assert_eq!(s["split_brain"], true);
        assert!(s["common_generation"].is_string(), "{s}");
        assert_eq!(ranges(&s["sides"][0]["ranges"]), *mine, "{s}");
        assert_eq!(ranges(&s["sides"][1]["ranges"]), *theirs, "{s}");
        assert_eq!(
            s["sides"][0]["changed_blocks"].as_u64(),
            Some(mine.iter().map(|r| r.1 / 4096).sum::<u64>())
        );
        assert_eq!(
            ranges(&s["both_changed"]["ranges"]),
            vec![(6 * MIB + 32 * 1024, 32 * 1024)],
            "{s}"
        );
        assert!(s["sides"][0]["last_write_unix"].is_u64(), "{s}");
        let (pa, pb) = if me.name == "node-a" {
            ("Primary", "Secondary")
        } else {
            ("Secondary", "Primary")
        };
        assert_eq!(s["sides"][0]["role_at_split"], pa, "{s}");
        assert_eq!(s["sides"][1]["role_at_split"], pb, "{s}");
    }
    let s = show_json(b, Some(a));
    assert_eq!(s["sides"][1]["source"], "control-socket");
    assert!(s["sides"][1]["last_write_unix"].is_u64(), "{s}");
    let text = a.ok(&["split-brain", "show", "r0"]);
    assert!(
        text.contains("common generation") && text.contains("both changed: 8 blocks"),
        "{text}"
    );

    // The flag survives a restart of node-b (metadata flag), and the split brain is found
    // again when it reconnects.
    b.ok(&["down", "r0"]);
    assert!(b.ok(&["dump-md", "r0"]).contains("split-brain"));
    b.ok(&["up", "r0"]);
    // node-a stays StandAlone: node-b has had no handshake yet, the flag is the metadata's.
    wait_state(b, "WFConnection", None, 20);
    assert_eq!(b.status_json()["split_brain"], true);
    a.ok(&["connect", "r0"]);
    for n in [a, b] {
        wait_state(n, "StandAlone", None, 20);
    }
    // The cluster manager promotes it again.
    b.ok(&["primary", "r0"]);

    // dry run: the plan, nothing done.
    let a_dir = a.run_dir.display().to_string();
    let plan = b.ok(&[
        "split-brain",
        "resolve",
        "r0",
        "--keep",
        "node-a",
        "--dry-run",
        "--peer-run-dir",
        &a_dir,
    ]);
    assert!(
        plan.contains("on node-b: repadm secondary r0")
            && plan.contains("on node-b: repadm connect --discard-my-data r0")
            && plan.contains("on node-a: repadm connect r0"),
        "{plan}"
    );
    assert_eq!(b.status_json()["role"], "Primary");

    // Resolve on node-b (the victim) keeping node-a, saving node-b's blocks first.
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    let victim_image = backing_bytes(b, 0, usable);
    let save = c.dir.join("saved");
    let save_s = save.display().to_string();
    b.ok(&resolve_keeping_node_a(&save_s, &a_dir));
    flag_cleared_on_both(a, b);
    assert_identical(a, b);
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0u8; 4096]);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0xa1; 4096]);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(save.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(manifest["victim"], "node-b");

    // The operator chose wrong: restore node-b's blocks onto the Primary (node-a); they
    // replicate, and both disks are node-b's image at the split brain, byte for byte.
    a.ok(&["split-brain", "restore", "r0", &save_s]);
    assert!(
        backing_bytes(a, 0, usable) == victim_image,
        "node-a is node-b's image again"
    );
    wait_for(Duration::from_secs(10), "node-b to match", || {
        (backing_bytes(b, 0, usable) == victim_image).then_some(())
    });

    // Again, resolved from the survivor (node-a) with node-b's socket reachable.
    split_with_writes(a, b, 2);
    let b_dir = b.run_dir.display().to_string();
    let out = a.ok(&[
        "--json",
        "split-brain",
        "resolve",
        "r0",
        "--keep",
        "node-a",
        "--peer-run-dir",
        &b_dir,
    ]);
    // --json: one object and nothing else on stdout, naming what ran where.
    let report: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("resolve --json prints one JSON object ({e}): {out:?}"));
    let done: Vec<String> = report["done"]
        .as_array()
        .expect("done")
        .iter()
        .map(|s| {
            format!(
                "{}: {}",
                s["node"].as_str().unwrap_or(""),
                s["command"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        done,
        [
            "node-b: repadm secondary r0",
            "node-b: repadm connect --discard-my-data r0",
            "node-a: repadm connect r0"
        ],
        "{out}"
    );
    assert_eq!(report["todo"], serde_json::json!([]), "{out}");
    assert_eq!(report["victim"], "node-b");
    flag_cleared_on_both(a, b);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0xa2; 4096]);
    assert_eq!(
        backing_bytes(b, 2 * MIB, 4096),
        vec![0xb1; 4096],
        "restored, not round 2's"
    );
    assert_identical(a, b);

    // And from a node that cannot reach the other: keep node-b this time; node-b is told the
    // steps for node-a and runs them, then its own.
    split_with_writes(a, b, 3);
    let out = b.ok(&["split-brain", "resolve", "r0", "--keep", "node-b"]);
    assert!(
        out.contains("on node-a: repadm secondary r0")
            && out.contains("on node-a: repadm connect --discard-my-data r0")
            && out.contains("on node-b: repadm connect r0"),
        "{out}"
    );
    a.ok(&["secondary", "r0"]);
    a.ok(&["connect", "--discard-my-data", "r0"]);
    b.ok(&["connect", "r0"]);
    flag_cleared_on_both(b, a);
    assert_eq!(
        backing_bytes(a, MIB, 4096),
        vec![0xa2; 4096],
        "node-a's round 3 discarded"
    );
    assert_eq!(backing_bytes(a, 2 * MIB, 4096), vec![0xb3; 4096]);
    assert_identical(a, b);
}

/// A command runner in a private mount namespace where `disk` reads as /dev/null: a repadm it
/// starts sees the other node only through its control socket, as on another machine.
fn hiding(disk: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "-m",
        "sh",
        "-c",
        r#"mount --bind /dev/null "$0" && exec "$@""#,
    ])
    .arg(disk);
    c
}

/// The `read-data` control request, sent by hand: the bytes, or the daemon's error message.
fn read_data(n: &Node, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    let mut s = UnixStream::connect(n.run_dir.join("r0.ctl")).expect("control socket");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    writeln!(s, r#"{{"cmd":"read-data","offset":{offset},"len":{len}}}"#).expect("request");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("answer line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("answer is JSON");
    if v["result"] != "data" {
        return Err(v["message"].as_str().unwrap_or(&line).to_owned());
    }
    assert_eq!(
        (v["offset"].as_u64(), v["len"].as_u64()),
        (Some(offset), Some(len)),
        "{line}"
    );
    let mut buf = vec![0u8; usize::try_from(len).expect("fits")];
    r.read_exact(&mut buf).expect("the data behind the line");
    Ok(buf)
}

/// issue 24 §1, `--save` from the survivor: the victim's disk is not visible where `resolve`
/// runs (a mount namespace hides it), so its blocks come through its control socket. `restore`
/// then brings them back byte for byte, and the saved file holds exactly the victim's data area.
#[test]
fn split_brain_save_from_the_survivor_reads_the_victim_through_its_socket() {
    require_tool("qemu-io", "qemu-utils");
    require_tool("unshare", "util-linux");
    require_root("a mount namespace hides the victim's backing file from repadm");
    let c = identical_pair("sb-save-remote", &[]);
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);
    split_with_writes(a, b, 1);
    // More than one read-data request's worth, ending inside a request.
    write_pattern(b, 0xc1, 10 * MIB, 3 * MIB + 8192);
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    let victim_image = backing_bytes(b, 0, usable);

    let hidden = run_ok(hiding(&b.disk).arg("wc").arg("-c").arg(&b.disk));
    assert!(hidden.starts_with("0 "), "node-b's disk hidden: {hidden}");

    let save = c.dir.join("saved-remote");
    let save_s = save.display().to_string();
    let b_dir = b.run_dir.display().to_string();
    let args = resolve_keeping_node_a(&save_s, &b_dir);
    let mut runner = hiding(&b.disk);
    runner.arg(bin("repadm"));
    a.succeeded(&args, &a.repadm_via(runner, &args));
    flag_cleared_on_both(a, b);
    assert_identical(a, b);
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0u8; 4096]);
    assert_eq!(backing_bytes(b, 10 * MIB, 4096), vec![0u8; 4096]);

    // The data file holds the victim's data area at every saved range.
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(save.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    assert_eq!(
        (&m["victim"], &m["survivor"]),
        (&"node-b".into(), &"node-a".into())
    );
    let data = std::fs::read(save.join("blocks.bin")).expect("data file");
    let mut total = 0;
    for r in m["ranges"].as_array().expect("ranges") {
        let (off, len, at) = (
            r["offset"].as_u64().expect("offset") as usize,
            r["len"].as_u64().expect("len") as usize,
            r["file_offset"].as_u64().expect("file_offset") as usize,
        );
        assert!(
            data[at..at + len] == victim_image[off..off + len],
            "saved {off}+{len} is node-b's data"
        );
        total += len as u64;
    }
    // Either side's changes: 1 MiB + 1 MiB + 96 KiB at 6 MiB + node-b's 3 MiB + 8 KiB.
    assert_eq!(total, 5 * MIB + 104 * 1024, "{m}");
    assert_eq!(data.len() as u64, total);

    // restore on the Primary: node-b's image again, on both disks, matching what was written.
    a.ok(&["split-brain", "restore", "r0", &save_s]);
    assert!(
        backing_bytes(a, 0, usable) == victim_image,
        "node-a is node-b's image again"
    );
    assert_eq!(backing_bytes(a, 0, MIB), vec![0x11; MIB as usize]);
    assert_eq!(backing_bytes(a, MIB, MIB), vec![0u8; MIB as usize]);
    assert_eq!(backing_bytes(a, 2 * MIB, MIB), vec![0xb1; MIB as usize]);
    assert_eq!(backing_bytes(a, 6 * MIB, 32 * 1024), vec![0u8; 32 * 1024]);
    assert_eq!(
        backing_bytes(a, 6 * MIB + 32 * 1024, 64 * 1024),
        vec![0xb1; 64 * 1024]
    );
    assert_eq!(
        backing_bytes(a, 10 * MIB, 3 * MIB + 8192),
        vec![0xc1; 3 * MIB as usize + 8192]
    );
    wait_for(Duration::from_secs(10), "node-b to match", || {
        (backing_bytes(b, 0, usable) == victim_image).then_some(())
    });
}

/// `read-data` answers only on a Secondary, names the fix on a Primary, stays inside the data
/// area (the internal metadata behind it is not readable) and within one MiB per request.
#[test]
fn read_data_is_refused_on_a_primary_and_bounded_to_the_data_area() {
    require_tool("qemu-io", "qemu-utils");
    let c = identical_pair("sb-read-data", &[]);
    let (a, b) = (c.a(), c.b());
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    write_pattern(a, 0x5a, 0, MIB);
    write_pattern(a, 0x77, usable - 4096, 4096);

    let err = read_data(a, 0, 4096).expect_err("a Primary refuses");
    assert!(
        err.contains("Primary") && err.contains("repadm secondary r0"),
        "{err}"
    );

    // node-b (Secondary, connected): the data area from offset 0, its last block included.
    assert_eq!(read_data(b, 0, MIB), Ok(vec![0x5a; MIB as usize]));
    assert_eq!(
        read_data(b, usable - 4096, 4096),
        Ok(backing_bytes(b, usable - 4096, 4096))
    );
    assert_eq!(read_data(b, usable - 4096, 4096), Ok(vec![0x77; 4096]));
    let err = read_data(b, usable - 4096, 8192).expect_err("past the data area");
    assert!(err.contains("beyond the data area"), "{err}");
    let err = read_data(b, 0, MIB + 1).expect_err("over the bound");
    assert!(err.contains("per request"), "{err}");
    let err = read_data(b, 0, 0).expect_err("empty");
    assert!(err.contains("per request"), "{err}");

    // Demoted, node-a answers too.
    a.ok(&["secondary", "r0"]);
    assert_eq!(read_data(a, 0, 4096), Ok(vec![0x5a; 4096]));
    assert_identical(a, b);
}
