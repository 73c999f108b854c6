//! Goal: the fencing of README.md "## Fencing" (DRBD 8.4's, docs/drbd-semantics.md §4, §9) holds
//! with real daemons. A Primary that loses its peer runs `fence-peer` and records what its exit
//! code says about the peer (persisted); an Outdated node refuses `primary` until `--force`;
//! under `resource-and-stonith` application I/O is frozen until the handler returns;
//! `unfence-peer` runs once the fenced peer is UpToDate again; `before-resync-target` holds the
//! resync (a failing one drops the connection); without a handler the built-in outdater asks the
//! peer's repd over the replication address.
//!
//! Partitions are made with `repadm disconnect` on 127.0.0.0/8. The handlers are shell scripts
//! beside the configuration whose behaviour the test sets through files in the same folder
//! (`fence-exit`, `fence-block`, …); every run appends a line to `handlers.log`.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rep_tests::assert::assert_identical;
use rep_tests::nbdraw::{RawClient, CMD_FLUSH, CMD_WRITE};
use rep_tests::pair::{up_pair, PairConf};
use rep_tests::{backing_bytes, bin, require_tool, wait_for, write_pattern, Cluster, Node};

const MIB: u64 = 1 << 20;

/// The fence-peer handler. `fence-block` present: wait for `fence-release` first. Then exit with
/// the code in `fence-exit`; `outdate` (the default) runs `repadm outdate` on the peer — the
/// nodes share this machine, so the peer's run dir is beside ours — and exits 4 if it worked.
const FENCE_PEER_SH: &str = r#"#!/bin/sh
d=$(dirname "$DRBD_CONF")
echo "fence-peer start $REP_NODE peer=$DRBD_PEER" >> "$d/handlers.log"
first=
if [ -f "$d/fence-outdate-first" ]; then
  # As crm-fence-peer does (constraint first, then waiting): this run only.
  rm -f "$d/fence-outdate-first"
  REP_NODE="$DRBD_PEER" REP_RUN_DIR="$d/run-$DRBD_PEER" "@REPADM@" outdate "$DRBD_RESOURCE" >> "$d/handlers.log" 2>&1
  echo "fence-peer outdated-first $REP_NODE" >> "$d/handlers.log"
  first=4
fi
if [ -f "$d/fence-block" ]; then
  i=0
  while [ ! -f "$d/fence-release" ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done
fi
code=$(cat "$d/fence-exit" 2>/dev/null || echo "${first:-outdate}")
if [ "$code" = outdate ]; then
  if REP_NODE="$DRBD_PEER" REP_RUN_DIR="$d/run-$DRBD_PEER" "@REPADM@" outdate "$DRBD_RESOURCE" >> "$d/handlers.log" 2>&1; then
    code=4
  else
    code=1
  fi
fi
echo "fence-peer done $REP_NODE exit=$code" >> "$d/handlers.log"
exit "$code"
"#;

/// unfence-peer: records this node's disk states as the handler sees them.
const UNFENCE_PEER_SH: &str = r#"#!/bin/sh
d=$(dirname "$DRBD_CONF")
echo "unfence-peer $REP_NODE peer=$DRBD_PEER dstate=$("@REPADM@" dstate "$DRBD_RESOURCE")" >> "$d/handlers.log"
"#;

/// before-resync-target: `bst-block` present: wait for `bst-release`; exit with `bst-exit` (0).
const BEFORE_RESYNC_TARGET_SH: &str = r#"#!/bin/sh
d=$(dirname "$DRBD_CONF")
echo "before-resync-target start $REP_NODE" >> "$d/handlers.log"
if [ -f "$d/bst-block" ]; then
  i=0
  while [ ! -f "$d/bst-release" ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done
fi
code=$(cat "$d/bst-exit" 2>/dev/null || echo 0)
echo "before-resync-target done $REP_NODE exit=$code" >> "$d/handlers.log"
exit "$code"
"#;

/// What goes into the resource: the fencing policy and which handlers are configured.
struct Setup {
    fencing: &'static str,
    fence_peer: bool,
    unfence_peer: bool,
    before_resync_target: bool,
}

fn handler(name: &str, script: &str) -> String {
    format!("    {name} \"sh $(dirname $DRBD_CONF)/{script}\";\n")
}

/// Two nodes with identical disks, fencing as `setup` says, node-a Primary.
fn fenced_pair(test: &str, setup: &Setup) -> Cluster {
    let mut handlers = String::new();
    if setup.fence_peer {
        handlers += &handler("fence-peer", "fence-peer.sh");
    }
    if setup.unfence_peer {
        handlers += &handler("unfence-peer", "unfence-peer.sh");
    }
    if setup.before_resync_target {
        handlers += &handler("before-resync-target", "before-resync-target.sh");
    }
    let c = PairConf::new(test)
        .disk(&format!("fencing {}", setup.fencing))
        .section(&format!("  handlers {{\n{handlers}  }}\n"))
        .build();
    let repadm = bin("repadm").display().to_string();
    for (file, text) in [
        ("fence-peer.sh", FENCE_PEER_SH),
        ("unfence-peer.sh", UNFENCE_PEER_SH),
        ("before-resync-target.sh", BEFORE_RESYNC_TARGET_SH),
    ] {
        std::fs::write(c.dir.join(file), text.replace("@REPADM@", &repadm))
            .expect("write a handler script");
    }
    up_pair(&c);
    c
}

/// A pair with `fencing resource-and-stonith` and only the fence-peer handler.
fn stonith_pair(test: &str) -> Cluster {
    fenced_pair(
        test,
        &Setup {
            fencing: "resource-and-stonith",
            fence_peer: true,
            unfence_peer: false,
            before_resync_target: false,
        },
    )
}

fn wait_cstate(n: &Node, cstate: &str, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{} to be {cstate}", n.name),
        || (n.status_json()["cstate"] == cstate).then_some(()),
    );
}

/// Wait until `n` reports disk `disk` and peer disk `pdsk`, whatever the connection state.
fn wait_disks(n: &Node, disk: &str, pdsk: &str, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{} to be {disk}/{pdsk}", n.name),
        || {
            let s = n.status_json();
            (s["disk"] == disk && s["peer_disk"] == pdsk).then_some(())
        },
    );
}

fn set_file(c: &Cluster, name: &str, text: &str) {
    std::fs::write(c.dir.join(name), text).expect("write a handler control file");
}

fn remove_file(c: &Cluster, name: &str) {
    let p = c.dir.join(name);
    if p.exists() {
        std::fs::remove_file(&p).expect("remove a handler control file");
    }
}

fn handlers_log(c: &Cluster) -> PathBuf {
    c.dir.join("handlers.log")
}

/// How many lines of `handlers.log` start with `prefix`.
fn log_count(c: &Cluster, prefix: &str) -> usize {
    std::fs::read_to_string(handlers_log(c))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// Wait until `handlers.log` has more than `before` lines starting with `prefix`.
fn wait_log(c: &Cluster, prefix: &str, before: usize, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("handlers.log line {prefix:?} number {}", before + 1),
        || (log_count(c, prefix) > before).then_some(()),
    );
}

fn log_text(c: &Cluster) -> String {
    std::fs::read_to_string(handlers_log(c)).unwrap_or_default()
}

/// `repadm get-gi --json` (live from a running daemon, from the superblock otherwise).
fn gi(n: &Node) -> serde_json::Value {
    let text = n.ok(&["get-gi", "--json", "r0"]);
    serde_json::from_str(&text).expect("get-gi --json is JSON")
}

/// `repadm dump-md --json`'s flag names (the resource must be down).
fn md_flag_names(n: &Node) -> Vec<String> {
    let text = n.ok(&["dump-md", "--json", "r0"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("dump-md --json is JSON");
    v["flag_names"]
        .as_array()
        .expect("flag_names")
        .iter()
        .map(|f| f.as_str().expect("flag name").to_string())
        .collect()
}

fn dstate(n: &Node) -> String {
    n.ok(&["dstate", "r0"]).trim().to_string()
}

/// The resync that follows a reconnect is done: both Connected UpToDate/UpToDate, nothing
/// out of sync, and the backing files identical.
fn wait_in_sync(a: &Node, b: &Node, secs: u64) {
    b.wait_state("Connected", "UpToDate", "UpToDate", secs);
    a.wait_state("Connected", "UpToDate", "UpToDate", 10);
    wait_for(Duration::from_secs(10), "no blocks out of sync", || {
        (a.status_json()["oos_kib"] == 0 && b.status_json()["oos_kib"] == 0).then_some(())
    });
    assert_identical(a, b);
}

/// Test 1. resource-only, the handler outdates the peer: the Secondary is Outdated (durably),
/// refuses `primary` with the reason, and `primary --force` overrides it.
#[test]
fn resource_only_fence_peer_outdates_the_secondary_which_refuses_primary() {
    require_tool("qemu-io", "qemu-utils");
    let c = fenced_pair(
        "fence-res-only",
        &Setup {
            fencing: "resource-only",
            fence_peer: true,
            unfence_peer: false,
            before_resync_target: false,
        },
    );
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);

    // The link fails: node-a (Primary) runs fence-peer, which outdates node-b.
    b.ok(&["disconnect", "r0"]);
    wait_log(&c, "fence-peer done node-a", 0, 20);
    assert!(
        log_text(&c).contains("fence-peer done node-a exit=4"),
        "the handler outdated the peer:\n{}",
        log_text(&c)
    );
    wait_disks(b, "Outdated", "DUnknown", 10);
    wait_disks(a, "UpToDate", "Outdated", 10);
    assert_eq!(dstate(a), "UpToDate/Outdated");
    assert_eq!(dstate(b), "Outdated/DUnknown");
    assert_eq!(
        gi(a)["peer_out_dated"],
        true,
        "node-a persists that its peer is outdated"
    );
    assert_eq!(a.status_json()["role"], "Primary");
    assert_eq!(
        a.status_json()["suspended"],
        false,
        "resource-only: no freeze"
    );
    // resource-only: the Primary goes on writing without its peer.
    write_pattern(a, 0xaa, MIB, MIB);

    // node-a stops trying to reconnect, so that node-b's restart below stays disconnected.
    a.ok(&["disconnect", "r0"]);
    // Outdated is on disk: a down/up of node-b keeps it.
    b.ok(&["down", "r0"]);
    let flags = md_flag_names(b);
    assert!(
        flags.iter().any(|f| f == "consistent") && !flags.iter().any(|f| f == "was-up-to-date"),
        "dump-md shows an Outdated disk (consistent, not was-up-to-date): {flags:?}"
    );
    b.ok(&["up", "r0"]);
    wait_cstate(b, "WFConnection", 20);
    wait_disks(b, "Outdated", "DUnknown", 10);

    // An Outdated node refuses to be Primary, saying why and what to do.
    let (code, err) = b.fails(&["primary", "r0"]);
    assert_eq!(code, 17, "SS_NO_UP_TO_DATE_DISK's exit code: {err}");
    assert!(
        err.contains("(-2) Need access to UpToDate data")
            && err.contains("Outdated")
            && err.contains("primary --force"),
        "the refusal names the reason and the override: {err}"
    );
    assert_eq!(b.status_json()["role"], "Secondary");

    // `primary --force` overrides it (the operator knows node-a is gone).
    b.ok(&["primary", "--force", "r0"]);
    let s = b.status_json();
    assert_eq!(s["role"], "Primary");
    assert_eq!(s["disk"], "UpToDate");
    write_pattern(b, 0xbb, 2 * MIB, 4096);

    // Both were Primary apart: a split brain. node-b is the victim; node-a's acknowledged
    // writes (before and during the partition) must end up on node-b.
    b.ok(&["secondary", "r0"]);
    b.ok(&["disconnect", "r0"]);
    b.ok(&["connect", "--discard-my-data", "r0"]);
    a.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
    assert_eq!(backing_bytes(b, 0, 4096), vec![0x11; 4096]);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0xaa; 4096]);
    assert_eq!(backing_bytes(b, 2 * MIB, 4096), vec![0u8; 4096]);
}

/// Test 2. resource-and-stonith: application I/O is frozen from the link loss until fence-peer
/// returns (the NBD write waits, status says suspended), then the write completes and is on
/// disk. A failing handler keeps I/O frozen until `resume-io`.
#[test]
fn resource_and_stonith_freezes_io_until_fence_peer_returns() {
    require_tool("qemu-io", "qemu-utils");
    let c = stonith_pair("fence-stonith");
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);
    let mut client = RawClient::connect(&a.nbd_socket(), "r0").expect("NBD client on node-a");

    // The handler blocks until `fence-release` appears.
    set_file(&c, "fence-block", "");
    b.ok(&["disconnect", "r0"]);
    wait_log(&c, "fence-peer start node-a", 0, 20);
    wait_for(Duration::from_secs(10), "node-a suspended", || {
        (a.status_json()["suspended"] == true).then_some(())
    });
    let text = a.ok(&["status", "r0"]);
    assert!(
        text.contains("suspended:fencing"),
        "status shows the freeze:\n{text}"
    );

    // A write sent now gets no reply while the handler runs. How long to watch is this case's
    // input, not a wait for a state.
    let data = vec![0x5a_u8; 64 * 1024];
    client
        .send_cmd(CMD_WRITE, 0, 1, 4 * MIB, data.len() as u32, &data)
        .expect("send a write");
    client
        .s
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("set read timeout");
    let mut byte = [0u8; 1];
    match client.s.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the write was answered while I/O is frozen: {other:?}"),
    }
    assert_eq!(
        log_count(&c, "fence-peer done"),
        0,
        "the handler still runs"
    );
    let s = a.status_json();
    assert_eq!(s["suspended"], true);
    assert_eq!(s["role"], "Primary");

    // The handler returns (it outdates node-b): I/O thaws, the write completes and is on disk.
    set_file(&c, "fence-release", "");
    wait_log(&c, "fence-peer done node-a", 0, 20);
    client
        .s
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set read timeout");
    let (err, cookie) = client
        .read_reply()
        .expect("the write's reply after the thaw");
    assert_eq!((err, cookie), (0, 1), "the frozen write succeeds");
    client
        .send_cmd(CMD_FLUSH, 0, 2, 0, 0, &[])
        .expect("send a flush");
    assert_eq!(client.read_reply().expect("flush reply"), (0, 2));
    let s = a.status_json();
    assert_eq!(s["suspended"], false);
    assert_eq!(
        (s["disk"].clone(), s["peer_disk"].clone()),
        ("UpToDate".into(), "Outdated".into())
    );
    wait_disks(b, "Outdated", "DUnknown", 10);
    assert_eq!(backing_bytes(a, 4 * MIB, data.len() as u64), data);

    // Reconnect: node-b resyncs and holds the write that was frozen.
    b.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
    assert_eq!(backing_bytes(b, 4 * MIB, data.len() as u64), data);

    // A failing handler (exit 1): I/O stays frozen until the operator's `resume-io`.
    remove_file(&c, "fence-block");
    set_file(&c, "fence-exit", "1");
    let done_before = log_count(&c, "fence-peer done node-a");
    b.ok(&["disconnect", "r0"]);
    wait_log(&c, "fence-peer done node-a", done_before, 20);
    wait_disks(a, "UpToDate", "DUnknown", 10);
    let data2 = vec![0x6b_u8; 64 * 1024];
    client
        .send_cmd(CMD_WRITE, 0, 3, 5 * MIB, data2.len() as u32, &data2)
        .expect("send a write");
    client
        .s
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("set read timeout");
    match client.s.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the write was answered although fence-peer failed: {other:?}"),
    }
    assert_eq!(a.status_json()["suspended"], true, "still frozen");
    a.ok(&["resume-io", "r0"]);
    client
        .s
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set read timeout");
    assert_eq!(client.read_reply().expect("reply after resume-io"), (0, 3));
    assert_eq!(a.status_json()["suspended"], false);
    let (code, err) = a.fails(&["resume-io", "r0"]);
    assert_ne!(code, 0);
    assert!(err.contains("not suspended"), "{err}");
    drop(client);

    set_file(&c, "fence-exit", "outdate");
    b.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
    assert_eq!(backing_bytes(b, 5 * MIB, data2.len() as u64), data2);

    // The link comes back while the handler still runs (DRBD 8.4: "the connection was
    // established again"): I/O thaws at the handshake, the handler's late verdict is ignored.
    remove_file(&c, "fence-release");
    set_file(&c, "fence-block", "");
    set_file(&c, "fence-exit", "1");
    let started_before = log_count(&c, "fence-peer start node-a");
    let done_before = log_count(&c, "fence-peer done node-a");
    let mut client = RawClient::connect(&a.nbd_socket(), "r0").expect("NBD client on node-a");
    b.ok(&["disconnect", "r0"]);
    wait_log(&c, "fence-peer start node-a", started_before, 20);
    wait_for(Duration::from_secs(10), "node-a suspended", || {
        (a.status_json()["suspended"] == true).then_some(())
    });
    let data3 = vec![0x7c_u8; 64 * 1024];
    client
        .send_cmd(CMD_WRITE, 0, 4, 6 * MIB, data3.len() as u32, &data3)
        .expect("send a write");
    b.ok(&["connect", "r0"]);
    client
        .s
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set read timeout");
    assert_eq!(
        client.read_reply().expect("reply after the reconnect"),
        (0, 4),
        "the frozen write completes once the peer is back"
    );
    assert_eq!(
        log_count(&c, "fence-peer done node-a"),
        done_before,
        "I/O thawed by the reconnect, not by the handler"
    );
    assert_eq!(a.status_json()["suspended"], false);
    set_file(&c, "fence-release", "");
    wait_log(&c, "fence-peer done node-a", done_before, 20);
    wait_in_sync(a, b, 30);
    assert_eq!(
        a.status_json()["suspended"],
        false,
        "the late verdict changes nothing"
    );
    assert_eq!(backing_bytes(b, 6 * MIB, data3.len() as u64), data3);
    drop(client);
}

/// A fence-peer run that returns after the peer connected and was lost again speaks of the
/// earlier connection (DRBD 8.4's conn_try_outdate_peer compares connect_cnt): its verdict is
/// ignored and the new loss gets a run of its own. Here the first run outdates node-b at once
/// and then waits, as crm-fence-peer does (constraint first); node-b reconnects, resyncs and is
/// UpToDate again; the link goes again; the first run then returns "outdated" — which node-b
/// no longer is. Taking that verdict would thaw I/O with a peer that could be promoted.
#[test]
fn a_fence_peer_verdict_from_before_a_reconnect_is_ignored() {
    let c = stonith_pair("fence-stale");
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x11, 0, MIB);
    set_file(&c, "fence-block", "");
    set_file(&c, "fence-outdate-first", "");
    b.ok(&["disconnect", "r0"]);
    wait_log(&c, "fence-peer outdated-first node-a", 0, 20);
    assert_eq!(dstate(b), "Outdated/DUnknown");

    // node-b comes back while the run waits: I/O thaws at the handshake, node-b resyncs and is
    // UpToDate again.
    b.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
    assert_eq!(a.status_json()["suspended"], false);

    // The link goes again, the first run still waiting: I/O freezes; no second run (one runs).
    b.ok(&["disconnect", "r0"]);
    wait_for(Duration::from_secs(10), "node-a suspended again", || {
        (a.status_json()["suspended"] == true).then_some(())
    });
    assert_eq!(log_count(&c, "fence-peer start node-a"), 1);
    assert_eq!(dstate(b), "UpToDate/DUnknown");

    // The first run returns "outdated" (exit 4), about the connection before.
    set_file(&c, "fence-release", "");
    wait_log(&c, "fence-peer done node-a exit=4", 0, 20);
    wait_for(Duration::from_secs(20), "node-a to thaw", || {
        (a.status_json()["suspended"] == false).then_some(())
    });
    assert_eq!(
        dstate(b),
        "Outdated/DUnknown",
        "node-a thawed I/O while node-b was UpToDate: the verdict of the run started for the \
         first link loss was taken for the second\n{}",
        log_text(&c)
    );
    assert_eq!(
        log_count(&c, "fence-peer start node-a"),
        2,
        "the second loss got its own run"
    );

    b.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
}

/// Test 3. Each fence-peer exit code leaves the disk states README.md lists.
#[test]
fn fence_peer_exit_codes_set_the_disk_states() {
    require_tool("qemu-io", "qemu-utils");
    let c = fenced_pair(
        "fence-codes",
        &Setup {
            fencing: "resource-only",
            fence_peer: true,
            unfence_peer: false,
            before_resync_target: false,
        },
    );
    let (a, b) = (c.a(), c.b());
    // (exit code, node-a's peer disk afterwards, whether peer_out_dated is persisted: as in
    // DRBD 8.4, for a peer known Inconsistent as well as Outdated)
    let cases = [
        (3, "Inconsistent", Some(true)),
        (4, "Outdated", Some(true)),
        (5, "Outdated", Some(true)),
        (7, "Outdated", Some(true)),
        (1, "DUnknown", Some(false)),
        (0, "DUnknown", Some(false)),
    ];
    for (i, (code, pdsk, persisted)) in cases.into_iter().enumerate() {
        set_file(&c, "fence-exit", &code.to_string());
        let done_before = log_count(&c, "fence-peer done node-a");
        b.ok(&["disconnect", "r0"]);
        wait_log(&c, "fence-peer done node-a", done_before, 20);
        wait_disks(a, "UpToDate", pdsk, 10);
        assert_eq!(dstate(a), format!("UpToDate/{pdsk}"), "exit {code}");
        if let Some(persisted) = persisted {
            assert_eq!(gi(a)["peer_out_dated"], persisted, "exit {code}");
        }
        let s = a.status_json();
        assert_eq!(s["role"], "Primary", "exit {code}");
        assert_eq!(
            s["suspended"], false,
            "exit {code}: resource-only never freezes"
        );
        // The handler only reported: node-b itself is untouched.
        assert_eq!(dstate(b), "UpToDate/DUnknown", "exit {code}");
        let pattern = 0x20 + i as u8;
        write_pattern(a, pattern, i as u64 * MIB, 64 * 1024);

        if code == 1 {
            // A disconnected node-b cannot be promoted while node-a is not known outdated:
            // its own fence-peer (exit 1 too) fails, and `primary` is refused.
            let b_before = log_count(&c, "fence-peer done node-b");
            let (rc, err) = b.fails(&["primary", "r0"]);
            assert!(
                err.contains("(-7) Refusing to be Primary while peer is not outdated"),
                "{err}"
            );
            // drbdsetup's generic "state change failed" (docs/drbd-semantics.md §13.3): only
            // SS_NO_UP_TO_DATE_DISK has 17 of its own.
            assert_eq!(rc, 11, "the (-7) refusal's exit code: {err}");
            assert_eq!(log_count(&c, "fence-peer done node-b"), b_before + 1);
            assert_eq!(b.status_json()["role"], "Secondary");
        }
        b.ok(&["connect", "r0"]);
        wait_in_sync(a, b, 30);
        assert_eq!(
            backing_bytes(b, i as u64 * MIB, 64 * 1024),
            vec![pattern; 64 * 1024],
            "exit {code}: node-a's write during the partition reached node-b"
        );
        assert_eq!(
            gi(a)["peer_out_dated"],
            false,
            "exit {code}: cleared once in sync"
        );
    }

    // 6 when promoting a disconnected node-b: "the peer is Primary", so node-b's own data is
    // the outdated one, and it stays Secondary.
    set_file(&c, "fence-exit", "6");
    b.ok(&["disconnect", "r0"]);
    wait_disks(b, "UpToDate", "DUnknown", 10);
    let b_before = log_count(&c, "fence-peer done node-b");
    let (_, err) = b.fails(&["primary", "r0"]);
    assert!(err.contains("Refusing to be Primary"), "{err}");
    assert_eq!(log_count(&c, "fence-peer done node-b"), b_before + 1);
    wait_disks(b, "Outdated", "DUnknown", 10);
    assert_eq!(dstate(b), "Outdated/DUnknown");
    assert_eq!(b.status_json()["role"], "Secondary");
    b.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);

    // 6 on the Primary that lost its peer: node-a's disk is the Outdated one.
    let done_before = log_count(&c, "fence-peer done node-a");
    b.ok(&["disconnect", "r0"]);
    wait_log(&c, "fence-peer done node-a", done_before, 20);
    wait_disks(a, "Outdated", "DUnknown", 10);
    assert_eq!(dstate(a), "Outdated/DUnknown");
    assert_eq!(dstate(b), "UpToDate/DUnknown");
    // The link returns: both end UpToDate and identical again.
    set_file(&c, "fence-exit", "outdate");
    b.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
}

/// Test 4. unfence-peer runs after the resync that brings the fenced peer back to UpToDate,
/// and the persisted peer_out_dated flag is cleared.
#[test]
fn unfence_peer_runs_once_the_fenced_peer_is_uptodate_again() {
    require_tool("qemu-io", "qemu-utils");
    let c = fenced_pair(
        "fence-unfence",
        &Setup {
            fencing: "resource-only",
            fence_peer: true,
            unfence_peer: true,
            before_resync_target: false,
        },
    );
    let (a, b) = (c.a(), c.b());
    b.ok(&["disconnect", "r0"]);
    wait_log(&c, "fence-peer done node-a", 0, 20);
    wait_disks(b, "Outdated", "DUnknown", 10);
    wait_disks(a, "UpToDate", "Outdated", 10);
    assert_eq!(gi(a)["peer_out_dated"], true);
    // Enough to resync that the resync is not over before the handshake is.
    write_pattern(a, 0x77, 0, 8 * MIB);
    assert_eq!(log_count(&c, "unfence-peer"), 0, "not unfenced while apart");

    b.ok(&["connect", "r0"]);
    wait_log(&c, "unfence-peer node-a", 0, 30);
    let log = log_text(&c);
    assert!(
        log.contains("unfence-peer node-a peer=node-b dstate=UpToDate/UpToDate"),
        "unfence-peer ran once the peer was UpToDate:\n{log}"
    );
    wait_in_sync(a, b, 30);
    assert_eq!(gi(a)["peer_out_dated"], false, "the flag is cleared");
    assert_eq!(log_count(&c, "unfence-peer"), 1, "once, on node-a only");
    assert_eq!(backing_bytes(b, 7 * MIB, 4096), vec![0x77; 4096]);
}

/// Test 5. before-resync-target holds the resync until it returns; a failing one takes the
/// connection to StandAlone.
#[test]
fn before_resync_target_holds_the_resync_and_a_failing_one_disconnects() {
    require_tool("qemu-io", "qemu-utils");
    let c = fenced_pair(
        "fence-bst",
        &Setup {
            fencing: "resource-only",
            fence_peer: true,
            unfence_peer: false,
            before_resync_target: true,
        },
    );
    let (a, b) = (c.a(), c.b());
    b.ok(&["disconnect", "r0"]);
    wait_disks(b, "Outdated", "DUnknown", 20);
    write_pattern(a, 0x31, 0, 4 * MIB);
    let oos = a.status_json()["oos_kib"].as_u64().expect("oos_kib");
    assert!(oos >= 4 * 1024, "the writes are out of sync: {oos} KiB");

    set_file(&c, "bst-block", "");
    let nr_before = b.counter("nr_kib");
    b.ok(&["connect", "r0"]);
    wait_log(&c, "before-resync-target start node-b", 0, 20);
    wait_cstate(b, "WFSyncUUID", 10);
    // While the handler runs nothing moves. How long to watch is this case's input.
    let watch = Instant::now() + Duration::from_millis(1500);
    let mut samples = 0;
    while Instant::now() < watch && samples < 1000 {
        let s = b.status_json();
        assert_eq!(
            s["cstate"], "WFSyncUUID",
            "the resync waits for the handler"
        );
        assert_eq!(
            s["counters"]["nr_kib"].as_u64(),
            Some(nr_before),
            "no resync data moves while before-resync-target runs"
        );
        assert_eq!(a.status_json()["oos_kib"].as_u64(), Some(oos));
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    set_file(&c, "bst-release", "");
    wait_in_sync(a, b, 30);
    assert!(
        log_text(&c).contains("before-resync-target done node-b exit=0"),
        "{}",
        log_text(&c)
    );
    assert_eq!(backing_bytes(b, 3 * MIB, 4096), vec![0x31; 4096]);

    // A failing before-resync-target: the SyncTarget drops the connection (StandAlone).
    remove_file(&c, "bst-block");
    set_file(&c, "bst-exit", "1");
    b.ok(&["disconnect", "r0"]);
    wait_disks(b, "Outdated", "DUnknown", 20);
    write_pattern(a, 0x32, 8 * MIB, MIB);
    let started = log_count(&c, "before-resync-target done node-b");
    b.ok(&["connect", "r0"]);
    wait_log(&c, "before-resync-target done node-b", started, 20);
    wait_cstate(b, "StandAlone", 10);
    assert!(
        b.log_tail()
            .contains("before-resync-target handler returned 1"),
        "{}",
        b.log_tail()
    );
    assert_ne!(
        backing_bytes(b, 8 * MIB, 4096),
        vec![0x32; 4096],
        "no resync happened"
    );
    wait_cstate(a, "WFConnection", 10);

    // The operator fixes the hook and reconnects: the resync completes.
    set_file(&c, "bst-exit", "0");
    b.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
    assert_eq!(backing_bytes(b, 8 * MIB, 4096), vec![0x32; 4096]);
}

/// Test 6. No fence-peer handler: `disconnect` of a Primary with fencing outdates the peer
/// through the built-in outdater, over the replication address.
#[test]
fn builtin_outdater_outdates_the_peer_on_disconnect_of_a_primary() {
    require_tool("qemu-io", "qemu-utils");
    let c = fenced_pair(
        "fence-builtin",
        &Setup {
            fencing: "resource-only",
            fence_peer: false,
            unfence_peer: false,
            before_resync_target: false,
        },
    );
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x41, 0, MIB);
    a.ok(&["disconnect", "r0"]);
    wait_disks(b, "Outdated", "DUnknown", 20);
    wait_disks(a, "UpToDate", "Outdated", 10);
    assert_eq!(gi(a)["peer_out_dated"], true);
    assert!(
        std::fs::read_to_string(b.run_dir.join("r0.log"))
            .unwrap_or_default()
            .contains("asks to outdate our disk"),
        "node-b was outdated by node-a's request:\n{}",
        b.log_tail()
    );
    assert_eq!(log_count(&c, "fence-peer"), 0, "no handler is configured");
    let (code, err) = b.fails(&["primary", "r0"]);
    assert_eq!(code, 17, "{err}");
    assert!(err.contains("Outdated"), "{err}");
    write_pattern(a, 0x42, MIB, MIB);

    a.ok(&["connect", "r0"]);
    wait_in_sync(a, b, 30);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0x42; 4096]);
    assert_eq!(gi(a)["peer_out_dated"], false);
}
