//! Goal: the notify script (`ha/rep-notify.sh`) never promotes data that must not be promoted,
//! says why, and otherwise promotes as soon as the engine allows it; the backup path demotes
//! cleanly; hooks run in the seeds' order (promote → mount → start; stop → unmount → demote).
//!
//! Method: real repd pairs on 127.0.0.1 / 127.0.0.2 (no failover manager: the script is run
//! the way keepalived runs it, with a configuration file), driven into each state the script
//! must refuse: Inconsistent, Outdated, Diskless without an UpToDate peer, StandAlone after a
//! real split brain and after `disconnect`. Each refusal must exit 2, leave the node Secondary
//! and log the state and the reason; `check` (the vrrp_script) must fail in the same states.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rep_tests::ha::ha_dir;
use rep_tests::nbdraw::{RawClient, CMD_WRITE};
use rep_tests::pair::{skip_initial_sync, up_fresh};
use rep_tests::{run, wait_for, Cluster, ClusterOpts, Node};

fn conf(c: &Cluster, n: &Node, extra: &str) -> PathBuf {
    let path = c.dir.join(format!("ha-{}.conf", n.name));
    let text = format!(
        "REP_HA_RESOURCE=r0\nREPADM={}\nREP_CONFIG={}\nREP_NODE={}\nREP_RUN_DIR={}\nREP_HA_LOG={}\nREP_HA_SYSLOG=0\n{extra}\n",
        rep_tests::bin("repadm").display(),
        n.config.display(),
        n.name,
        n.run_dir.display(),
        log_path(c, n).display(),
    );
    std::fs::write(&path, text).expect("write ha.conf");
    path
}

fn log_path(c: &Cluster, n: &Node) -> PathBuf {
    c.dir.join(format!("ha-{}.log", n.name))
}

fn notify(conf: &Path, action: &str) -> Output {
    run(Command::new(ha_dir().join("rep-notify.sh"))
        .arg("-c")
        .arg(conf)
        .arg(action))
}

/// Run the script; expect exit `code`; return its log lines for this call (stderr).
fn expect(conf: &Path, action: &str, code: i32) -> String {
    let out = notify(conf, action);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "rep-notify.sh {action}: expected exit {code}, got {:?}; stderr:\n{err}",
        out.status.code()
    );
    err
}

/// `master` refuses (exit 2) with a log naming every one of `why`, `check` fails, and the node
/// stays Secondary.
fn assert_refused(conf: &Path, n: &Node, why: &[&str]) {
    let log = expect(conf, "master", 2);
    assert!(why.iter().all(|w| log.contains(w)), "{why:?}: {log}");
    expect(conf, "check", 1);
    assert_eq!(role(n), "Secondary");
}

fn role(n: &Node) -> String {
    n.status_json()["role"].as_str().unwrap_or("").to_owned()
}

fn pair(test: &str) -> Cluster {
    let c = Cluster::new(
        test,
        ClusterOpts {
            extra: "  net {\n    ping-int 1;\n    connect-int 1;\n  }\n".into(),
            ..ClusterOpts::default()
        },
    );
    up_fresh(&c, 20);
    skip_initial_sync(&c, 20);
    c
}

fn write_block(n: &Node, fill: u8) {
    let mut c = RawClient::connect(&n.nbd_socket(), "r0").expect("client");
    let (err, _) = c
        .request(CMD_WRITE, 0, 0, 4096, &[fill; 4096])
        .expect("write");
    assert_eq!(err, 0);
}

#[test]
fn inconsistent_outdated_and_diskless_data_is_never_promoted() {
    let c = Cluster::new("ha-notify-states", ClusterOpts::default());
    let (a, b) = (c.a(), c.b());
    let ca = conf(&c, a, "");
    let cb = conf(&c, b, "");

    // A fresh disk alone: Inconsistent.
    a.ok(&["create-md", "r0"]);
    a.ok(&["up", "r0"]);
    let log = expect(&ca, "master", 2);
    assert!(
        log.contains("refused to promote") && log.contains("disk Inconsistent/DUnknown"),
        "{log}"
    );
    assert!(log.contains("not usable"), "{log}");
    expect(&ca, "check", 1);
    assert_eq!(role(a), "Secondary");

    // Connected and UpToDate: check passes on both.
    b.ok(&["create-md", "r0"]);
    b.ok(&["up", "r0"]);
    a.wait_state("Connected", "Inconsistent", "Inconsistent", 20);
    a.ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 20);
    expect(&ca, "check", 0);
    expect(&cb, "check", 0);

    // node-b Outdated, waiting for a peer that is gone (what fencing leaves behind).
    a.ok(&["down", "r0"]);
    b.wait_state("WFConnection", "UpToDate", "DUnknown", 20);
    b.ok(&["disconnect", "r0"]);
    b.ok(&["outdate", "r0"]);
    b.ok(&["connect", "r0"]);
    b.wait_state("WFConnection", "Outdated", "DUnknown", 20);
    assert_refused(&cb, b, &["disk is Outdated", "cstate WFConnection"]);

    // Diskless with no peer.
    b.ok(&["detach", "r0"]);
    b.wait_state("WFConnection", "Diskless", "DUnknown", 20);
    assert_refused(&cb, b, &["no UpToDate data reachable"]);

    // The log file has the same lines, with timestamps.
    let text = std::fs::read_to_string(log_path(&c, b)).expect("notify log file");
    assert!(text.contains("r0 master: refused to promote"), "{text}");
}

#[test]
fn standalone_after_a_split_brain_is_never_promoted() {
    let c = pair("ha-notify-sb");
    let (a, b) = (c.a(), c.b());
    let cb = conf(&c, b, "");
    // Both Primary while apart, both write: a real split brain when they meet again.
    a.ok(&["primary", "r0"]);
    a.ok(&["disconnect", "r0"]);
    b.ok(&["disconnect", "r0"]);
    b.ok(&["primary", "r0"]);
    write_block(a, 0xa1);
    write_block(b, 0xb1);
    a.ok(&["secondary", "r0"]);
    b.ok(&["secondary", "r0"]);
    a.ok(&["connect", "r0"]);
    b.ok(&["connect", "r0"]);
    wait_for(
        Duration::from_secs(20),
        "split brain: both StandAlone",
        || {
            (a.status_json()["cstate"] == "StandAlone" && b.status_json()["cstate"] == "StandAlone")
                .then_some(())
        },
    );
    let log = expect(&cb, "master", 2);
    assert!(log.contains("StandAlone (split brain"), "{log}");
    expect(&cb, "check", 1);
    assert_eq!(role(b), "Secondary");
}

#[test]
fn promotion_waits_while_the_peer_is_primary_and_happens_once_it_is_gone() {
    let c = pair("ha-notify-wait");
    let (a, b) = (c.a(), c.b());
    a.ok(&["primary", "r0"]);
    // The peer alive and Primary (a VRRP-only split): give up after the wait, stay Secondary.
    let cb = conf(&c, b, "REP_HA_PROMOTE_WAIT=1");
    let log = expect(&cb, "master", 3);
    assert!(
        log.contains("still seen as Primary after 1s") && log.contains("role Secondary/Primary"),
        "{log}"
    );
    assert_eq!(role(b), "Secondary");

    // The Primary dies while the script waits: it promotes as soon as the engine lets it.
    let cb = conf(&c, b, "REP_HA_PROMOTE_WAIT=20");
    let waiter = std::thread::spawn(move || {
        Command::new(ha_dir().join("rep-notify.sh"))
            .arg("-c")
            .arg(&cb)
            .arg("master")
            .output()
    });
    std::thread::sleep(Duration::from_millis(300));
    a.kill9();
    let out = waiter
        .join()
        .expect("script thread")
        .expect("run rep-notify.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("waiting (role Secondary/Primary"), "{err}");
    assert!(err.contains("Primary after"), "{err}");
    assert_eq!(role(b), "Primary");
}

#[test]
fn backup_path_runs_the_hooks_in_order_and_waits_for_clients() {
    let c = pair("ha-notify-hooks");
    let (a, b) = (c.a(), c.b());
    let order = c.dir.join("order");
    let hooks = format!(
        "REP_HA_START_CMD='echo start >> {o}'\nREP_HA_STOP_CMD='echo stop >> {o}'\nREP_HA_DEMOTE_WAIT=1",
        o = order.display()
    );
    let ca = conf(&c, a, &hooks);
    let log = expect(&ca, "master", 0);
    assert!(log.contains("Primary after"), "{log}");
    assert_eq!(role(a), "Primary");
    // Idempotent: a second master notification changes nothing.
    expect(&ca, "master", 0);

    // A client holds the export open: demotion is refused (after DEMOTE_WAIT), exit 5.
    let client = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    let log = expect(&ca, "backup", 5);
    assert!(
        log.contains("DeviceInUse") || log.contains("held open"),
        "{log}"
    );
    assert_eq!(role(a), "Primary");
    drop(client);
    let log = expect(&ca, "backup", 0);
    assert!(log.contains("Secondary"), "{log}");
    assert_eq!(role(a), "Secondary");
    let text = std::fs::read_to_string(&order).expect("hook output");
    assert_eq!(text, "start\nstart\nstop\nstop\n");
    // Nothing to do when already Secondary.
    let log = expect(&ca, "fault", 0);
    assert!(log.contains("already Secondary"), "{log}");

    // A notification older than the last one is superseded and does nothing.
    let cb = conf(&c, b, "");
    let out = run(Command::new(ha_dir().join("rep-notify.sh"))
        .arg("-c")
        .arg(&cb)
        .arg("master")
        .env("REP_HA_SEQ", "1"));
    // node-b never had a notification: seq 1 is the newest it knows, so this one promotes.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(Command::new(ha_dir().join("rep-notify.sh"))
        .arg("-c")
        .arg(&cb)
        .arg("backup")
        .env("REP_HA_SEQ", "0"));
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(role(b), "Primary");
}

/// Quorum on (docs/quorum.md): node-b, UpToDate but alone after node-a's crash, has no quorum;
/// `master` refuses saying so, `check` fails; once node-a is back, both pass and node-b may be
/// promoted after node-a steps down.
#[test]
fn a_node_without_quorum_is_never_promoted() {
    let c = Cluster::new(
        "ha-notify-quorum",
        ClusterOpts {
            extra: "  net {\n    ping-int 1;\n    connect-int 1;\n  }\n  options {\n    quorum majority;\n  }\n"
                .into(),
            ..ClusterOpts::default()
        },
    );
    up_fresh(&c, 20);
    skip_initial_sync(&c, 20);
    let (a, b) = (c.a(), c.b());
    let cb = conf(&c, b, "");
    a.ok(&["primary", "r0"]);
    write_block(a, 0x5a);
    a.kill9();
    b.wait_state("WFConnection", "UpToDate", "DUnknown", 20);
    assert_refused(&cb, b, &["refused to promote", "no quorum"]);

    a.ok(&["up", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    a.ok(&["secondary", "r0"]);
    wait_for(
        Duration::from_secs(10),
        "node-b to see node-a Secondary",
        || (b.status_json()["peer_role"] == "Secondary").then_some(()),
    );
    expect(&cb, "master", 0);
    assert_eq!(role(b), "Primary");
}
