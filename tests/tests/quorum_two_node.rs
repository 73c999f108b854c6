//! Goal: quorum between two data nodes (docs/quorum.md): with `quorum majority` a node has
//! quorum only while it sees its peer, unless the peer left gracefully (it outdates itself
//! and stops counting: last man standing). A Primary that loses quorum fails I/O with EIO
//! (`on-no-quorum io-error`) or freezes it until quorum returns (`suspend-io`); a node without
//! quorum is not promoted, and the refusal says why. `quorum:` shows in status, JSON, events
//! and metrics.
//!
//! Method: the real repadm/repd pair on 127.0.0.1/127.0.0.2; the peer is lost by SIGKILL (an
//! unannounced loss) or leaves with `down`; writes go through the NBD export with qemu-io.

use std::time::{Duration, Instant};

use rep_tests::assert::assert_identical;
use rep_tests::metrics::scrape;
use rep_tests::nbdraw::{RawClient, CMD_READ, CMD_WRITE};
use rep_tests::pair::{up_pair, PairConf};
use rep_tests::{
    backing_bytes, free_port, qemu_io_write, require_tool, wait_for, write_pattern, Cluster, Node,
};

const MIB: u64 = 1 << 20;

/// A connected pair with quorum on, node-a Primary; node-a's metrics on the returned port.
fn quorum_pair(test: &str, on_no_quorum: &str) -> (Cluster, u16) {
    require_tool("qemu-io", "qemu-utils");
    let marker = quorum_lost_marker(test);
    let _ = std::fs::remove_file(&marker);
    let c = PairConf::new(test)
        .section(&format!(
            "  options {{\n    quorum majority;\n    on-no-quorum {on_no_quorum};\n  }}\n  handlers {{\n    quorum-lost \"echo $DRBD_RESOURCE >> {}\";\n  }}\n",
            marker.display()
        ))
        .build();
    let port = free_port();
    rep_tests::metrics::listen_on(&c, "127.0.0.1", port);
    up_pair(&c);
    c.a().ok(&["primary", "r0"]);
    (c, port)
}

/// A write (and flush) through the export at `uri`: Ok, or what qemu-io printed about the failure.
fn try_write_uri(uri: &str, pattern: u8, offset: u64, len: u64) -> Result<(), String> {
    let out = qemu_io_write(uri, pattern, offset, len)
        .output()
        .expect("run qemu-io");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("failed") && !text.contains("error") {
        Ok(())
    } else {
        Err(text)
    }
}

/// The file the `quorum-lost` handler appends to.
fn quorum_lost_marker(test: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rep-{test}-{}-quorum-lost", std::process::id()))
}

fn wait_quorum(n: &Node, quorum: bool, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{} to report quorum {quorum}", n.name),
        || (n.status_json()["quorum"] == quorum).then_some(()),
    );
}

fn metric(port: u16, name: &str) -> Option<String> {
    scrape(port)
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
}

#[test]
fn a_primary_that_loses_its_peer_unannounced_fails_io_and_is_not_promoted_again() {
    let (c, port) = quorum_pair("quorum-io-error", "io-error");
    let (a, b) = (c.a(), c.b());
    let s = a.status_json();
    assert_eq!(
        (s["quorum_enabled"].clone(), s["quorum"].clone()),
        (true.into(), true.into())
    );
    let text = a.ok(&["status", "r0"]);
    assert!(text.contains("disk:UpToDate quorum:yes"), "{text}");
    assert_eq!(metric(port, "rep_quorum").as_deref(), Some("1"));
    write_pattern(a, 0x11, 0, MIB);
    // An application holding the device open across the loss.
    let mut app = RawClient::connect(&a.nbd_socket(), "r0").expect("NBD client");
    let (err, _) = app
        .request(CMD_WRITE, 0, 0, 4096, &[0x12; 4096])
        .expect("write");
    assert_eq!(err, 0);

    // node-b crashes: node-a sees 1 of 2 voters, which is no majority.
    b.kill9();
    wait_quorum(a, false, 20);
    let text = a.ok(&["status", "r0"]);
    assert!(text.contains("quorum:no"), "{text}");
    assert_eq!(metric(port, "rep_quorum").as_deref(), Some("0"));
    let events = a.ok(&["events", "--now", "r0"]);
    assert!(events.contains("quorum:no"), "{events}");
    // Its writes fail with EIO (5) and reach no disk; a new client is refused the export,
    // told why.
    let (err, _) = app
        .request(CMD_WRITE, 0, MIB, 4096, &[0x22; 4096])
        .expect("write");
    assert_eq!(err, 5, "EIO without quorum");
    let (err, _) = app.request(CMD_READ, 0, 0, 4096, &[]).expect("read");
    assert_eq!(err, 5, "reads fail too (DRBD's io-error fails all I/O)");
    drop(app);
    let err =
        try_write_uri(&a.nbd_uri(), 0x22, MIB, MIB).expect_err("a write without quorum must fail");
    assert!(err.contains("has lost quorum"), "{err}");
    assert_eq!(
        backing_bytes(a, MIB, 4096),
        vec![0u8; 4096],
        "nothing written"
    );
    assert!(a.log().contains("quorum( yes -> no )"), "{}", a.log_tail());
    let marker = quorum_lost_marker("quorum-io-error");
    wait_for(Duration::from_secs(10), "the quorum-lost handler", || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|t| t.trim() == "r0")
    });
    let _ = std::fs::remove_file(&marker);

    // Demoted, it may not be promoted again without quorum; the refusal says why.
    a.ok(&["secondary", "r0"]);
    let (code, err) = a.fails(&["primary", "r0"]);
    assert_eq!(code, 11, "{err}");
    assert!(
        err.contains("No quorum") && err.contains("1 of 2 nodes visible, need 2"),
        "{err}"
    );

    // node-b returns: quorum is back on both, I/O goes on, and the disks agree.
    b.ok(&["up", "r0"]);
    wait_quorum(a, true, 30);
    wait_quorum(b, true, 30);
    a.ok(&["primary", "r0"]);
    write_pattern(a, 0x33, 2 * MIB, MIB);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    assert_identical(a, b);
}

#[test]
fn primary_force_without_quorum_outdates_the_peer_it_cannot_see() {
    let (c, _) = quorum_pair("quorum-force", "io-error");
    let (a, b) = (c.a(), c.b());
    a.ok(&["secondary", "r0"]);
    b.kill9();
    wait_quorum(a, false, 20);
    assert!(a.fails(&["primary", "r0"]).1.contains("No quorum"));
    // The operator vouches that node-b is down for good (DRBD's CS_FP_OUTDATE_PEERS).
    a.ok(&["primary", "--force", "r0"]);
    let s = a.status_json();
    assert_eq!(
        (
            s["role"].clone(),
            s["peer_disk"].clone(),
            s["quorum"].clone()
        ),
        ("Primary".into(), "Outdated".into(), true.into())
    );
    write_pattern(a, 0x44, 0, MIB);
}

#[test]
fn a_peer_that_leaves_with_down_outdates_itself_and_the_primary_keeps_quorum() {
    let (c, _) = quorum_pair("quorum-last-man", "io-error");
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x55, 0, MIB);
    b.ok(&["down", "r0"]);
    wait_for(Duration::from_secs(10), "node-a to see node-b gone", || {
        (a.status_json()["cstate"] != "Connected").then_some(())
    });
    let s = a.status_json();
    assert_eq!(s["peer_disk"], "Outdated", "{s}");
    assert_eq!(s["quorum"], true, "last man standing: {s}");
    // node-a goes on writing alone.
    write_pattern(a, 0x66, MIB, MIB);

    // node-b's own copy is Outdated on disk: back up alone it has no quorum and may not be
    // promoted; connected, it resyncs what it missed.
    a.ok(&["disconnect", "r0"]);
    b.ok(&["up", "r0"]);
    wait_for(Duration::from_secs(10), "node-b attached", || {
        (b.status_json()["disk"] == "Outdated").then_some(())
    });
    assert_eq!(b.status_json()["quorum"], false);
    let (_, err) = b.fails(&["primary", "r0"]);
    assert!(
        err.contains("Need access to UpToDate data") || err.contains("No quorum"),
        "{err}"
    );
    a.ok(&["connect", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    wait_quorum(b, true, 10);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0x66; 4096]);
    assert_identical(a, b);
}

#[test]
fn suspend_io_freezes_a_write_until_quorum_returns() {
    let (c, _) = quorum_pair("quorum-suspend", "suspend-io");
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x77, 0, MIB);
    b.kill9();
    wait_quorum(a, false, 20);
    let s = a.status_json();
    assert_eq!(s["suspended_quorum"], true, "{s}");
    assert!(a.ok(&["status", "r0"]).contains("suspended:quorum"));

    // A write now waits: it neither fails nor completes while quorum is gone.
    let uri = a.nbd_uri();
    let writer = std::thread::spawn(move || {
        let t = Instant::now();
        (try_write_uri(&uri, 0x88, MIB, MIB), t.elapsed())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!writer.is_finished(), "the write must wait for quorum");

    b.ok(&["up", "r0"]);
    let (result, took) = writer.join().expect("writer thread");
    result.expect("the frozen write completes once quorum is back");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert_eq!(a.status_json()["suspended_quorum"], false);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    assert_eq!(backing_bytes(b, MIB, 4096), vec![0x88; 4096]);
    assert_identical(a, b);
}
