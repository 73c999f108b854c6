//! Goal: both nodes dial, as in DRBD, so a pair is connected within about a second of the
//! second node being ready, whatever `connect-int` is (here 60 s: a node that only waited for
//! its peer's next attempt would wait up to a minute). Crossed dials, both nodes dialling at
//! the same time, end in exactly one link: one handshake and one authentication per node.
//!
//! `REP_DIAL_CONNECT_INT` overrides connect-int (to measure with DRBD's default of 10 s).

use std::time::{Duration, Instant};

use rep_replicator::states::ConnState;
use rep_tests::assert::assert_identical;
use rep_tests::faults::status_file;
use rep_tests::peer::{self, dial_from, hello};
use rep_tests::{backing_bytes, wait_for, write_pattern, Cluster, ClusterOpts, Node};

/// Connected within this of the second node being ready: about a second is the target, the
/// rest is slack for a loaded 2-core machine; still far below connect-int.
const LIMIT: Duration = Duration::from_secs(2);

fn connect_int() -> u64 {
    std::env::var("REP_DIAL_CONNECT_INT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

fn cstate(n: &Node) -> Option<ConnState> {
    serde_json::from_value(status_file(n)["cstate"].clone()).ok()
}

/// The link is up: Connected, or any state past it (a resync after a crash).
fn linked(n: &Node) -> bool {
    cstate(n).is_some_and(|c| c >= ConnState::Connected)
}

fn count(n: &Node, needle: &str) -> usize {
    n.log().matches(needle).count()
}

/// How long until both nodes report the link up (status files, polled every 5 ms). Waits up to
/// connect-int and more, so that a slow connect is measured (and printed) before it fails.
fn time_until_linked(c: &Cluster, what: &str) -> Duration {
    let t0 = Instant::now();
    let patience = Duration::from_secs(connect_int() + 20);
    loop {
        if c.nodes.iter().all(linked) {
            let took = t0.elapsed();
            println!(
                "{what}: Connected after {} ms (connect-int {} s)",
                took.as_millis(),
                connect_int()
            );
            return took;
        }
        assert!(
            t0.elapsed() < patience,
            "{what}: not Connected after {patience:?}:\n{}\n{}",
            c.a().log_tail(),
            c.b().log_tail()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_fast(took: Duration, what: &str) {
    assert!(
        took < LIMIT,
        "{what}: Connected only after {took:?} (connect-int {} s); the target is about 1 s",
        connect_int()
    );
}

/// A connected pair, node-a (the lower address) Primary, both UpToDate; with a shared secret,
/// so that every link is authenticated.
fn primary_pair(test: &str) -> Cluster {
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 16,
            extra: format!(
                "  net {{\n    connect-int {};\n    ping-int 1;\n    cram-hmac-alg sha1;\n    shared-secret \"dial-test\";\n  }}\n",
                connect_int()
            ),
            on_shm: true,
        },
    );
    let (a, b) = (c.a(), c.b());
    for n in [a, b] {
        n.ok(&["create-md", "r0"]);
    }
    // node-b first: then node-a's first dial finds it, with or without dialling from both sides.
    b.ok(&["up", "r0"]);
    a.ok(&["up", "r0"]);
    wait_for(Duration::from_secs(20), "the pair to connect", || {
        c.nodes.iter().all(linked).then_some(())
    });
    a.ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 20);
    a.ok(&["primary", "r0"]);
    c
}

/// Wait until `n` waits for its peer, and a bit longer: its immediate redial has found nobody,
/// so it sleeps out connect-int, as after any restart that takes more than a moment.
fn wait_waiting(n: &Node) {
    wait_for(Duration::from_secs(20), "WFConnection", || {
        (cstate(n) == Some(ConnState::WFConnection)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
}

/// Restart a killed node (its status file is stale: remove it first).
fn restart(n: &Node) {
    let _ = std::fs::remove_file(n.run_dir.join("r0.status.json"));
    let t = Instant::now();
    n.ok(&["up", "r0"]);
    println!("`up` on {} took {} ms", n.name, t.elapsed().as_millis());
}

/// Both UpToDate, and both backing files identical over the usable size.
fn assert_in_sync(c: &Cluster) {
    let (a, b) = (c.a(), c.b());
    for n in [a, b] {
        n.wait_state("Connected", "UpToDate", "UpToDate", 30);
    }
    assert_identical(a, b);
}

#[test]
fn a_restarted_secondary_connects_at_once() {
    let c = primary_pair("dial-sec");
    let (a, b) = (c.a(), c.b());
    b.kill9();
    wait_waiting(a);
    // A write while the Secondary is away: it must reach it after the reconnect.
    write_pattern(a, 0x5a, 1 << 20, 64 << 10);
    restart(b);
    let took = time_until_linked(&c, "Secondary (node-b, higher address) restarted");
    assert_fast(took, "Secondary restarted");
    assert_in_sync(&c);
    assert_eq!(backing_bytes(b, 1 << 20, 64 << 10), vec![0x5a; 64 << 10]);
}

#[test]
fn a_restarted_primary_connects_at_once() {
    let c = primary_pair("dial-pri");
    let (a, b) = (c.a(), c.b());
    write_pattern(a, 0x6b, 2 << 20, 64 << 10);
    a.kill9();
    wait_waiting(b);
    restart(a);
    let took = time_until_linked(&c, "Primary (node-a, lower address) restarted");
    assert_fast(took, "Primary restarted");
    assert_in_sync(&c);
    assert_eq!(backing_bytes(b, 2 << 20, 64 << 10), vec![0x6b; 64 << 10]);
}

/// `disconnect` on both, then `connect` on `first`, a pause (its dial finds the other
/// StandAlone), then `connect` on `second`: Connected at once after the second.
fn reconnect_in_order(c: &Cluster, first: &Node, second: &Node) -> Duration {
    for n in [first, second] {
        n.ok(&["disconnect", "r0"]);
    }
    for n in [first, second] {
        wait_for(Duration::from_secs(20), "StandAlone", || {
            (cstate(n) == Some(ConnState::StandAlone)).then_some(())
        });
    }
    first.ok(&["connect", "r0"]);
    std::thread::sleep(Duration::from_millis(500));
    second.ok(&["connect", "r0"]);
    time_until_linked(
        c,
        &format!(
            "disconnect on both, connect on {} then {}",
            first.name, second.name
        ),
    )
}

#[test]
fn connect_on_both_after_a_disconnect_connects_at_once() {
    let c = primary_pair("dial-conn");
    let (a, b) = (c.a(), c.b());
    let a_first = reconnect_in_order(&c, a, b);
    let b_first = reconnect_in_order(&c, b, a);
    assert_fast(a_first, "connect on node-a, then node-b");
    assert_fast(b_first, "connect on node-b, then node-a");
    write_pattern(a, 0x7c, 3 << 20, 64 << 10);
    assert_in_sync(&c);
}

/// Both nodes `connect` at the same instant, over and over (bounded in rounds and time): each
/// round ends in one link that stays up, with exactly one handshake and one authentication on
/// each node, and no drop of the link once it is Connected.
#[test]
fn simultaneous_connects_always_end_in_one_link() {
    const ROUNDS: usize = 25;
    let c = primary_pair("dial-cross");
    let (a, b) = (c.a(), c.b());
    let needles = [
        "Handshake successful",
        "Peer authenticated",
        "conn( Connected -> ",
        "crossed",
    ];
    let counts = |n: &Node| needles.map(|s| count(n, s));
    let t_all = Instant::now();
    let (mut rounds, mut crossed, mut slowest) = (0, 0, Duration::ZERO);
    for round in 0..ROUNDS {
        if t_all.elapsed() > Duration::from_secs(180) {
            break;
        }
        for n in [a, b] {
            n.ok(&["disconnect", "r0"]);
        }
        for n in [a, b] {
            wait_for(Duration::from_secs(20), "StandAlone", || {
                (cstate(n) == Some(ConnState::StandAlone)).then_some(())
            });
        }
        let before = [counts(a), counts(b)];
        let gate = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for n in [a, b] {
                let gate = &gate;
                s.spawn(move || {
                    gate.wait();
                    n.ok(&["connect", "r0"]);
                });
            }
        });
        let took = time_until_linked(&c, &format!("round {round}: connect on both at once"));
        slowest = slowest.max(took);
        assert_fast(took, &format!("round {round}"));
        // Stable: both stay Connected for a while (a second link would knock one down).
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(400) {
            for n in [a, b] {
                assert!(
                    linked(n),
                    "round {round}: {} lost the link again:\n{}",
                    n.name,
                    n.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for (n, before) in [a, b].into_iter().zip(before) {
            let after = counts(n);
            assert_eq!(
                after[0] - before[0],
                1,
                "round {round}: {} did not handshake exactly once:\n{}",
                n.name,
                n.log_tail()
            );
            assert_eq!(
                after[1] - before[1],
                1,
                "round {round}: {} did not authenticate exactly once:\n{}",
                n.name,
                n.log_tail()
            );
            assert_eq!(
                after[2],
                before[2],
                "round {round}: {} dropped a Connected link:\n{}",
                n.name,
                n.log_tail()
            );
            crossed += after[3] - before[3];
        }
        rounds += 1;
    }
    println!(
        "{rounds} rounds of simultaneous connects, dials crossed {crossed} times, slowest {} ms",
        slowest.as_millis()
    );
    assert!(rounds >= 10, "only {rounds} rounds ran in the time bound");
    // Still a replicating pair: a write reaches both disks.
    assert_eq!(a.status_json()["role"], "Primary");
    write_pattern(a, 0x3d, 4 << 20, 64 << 10);
    assert_in_sync(&c);
    assert_eq!(backing_bytes(b, 4 << 20, 64 << 10), vec![0x3d; 64 << 10]);
}

// ---- Crossed dials, made deterministic: the test plays the other node ----
//
// It listens on that node's address, so the daemon's own attempt reaches the test, which
// answers it (or not) when it chooses; meanwhile it dials the daemon as that node would.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use rep_replicator::wire::Packet;

fn one_node(test: &str) -> Cluster {
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 16,
            extra: "  net {\n    connect-int 60;\n  }\n".into(),
            on_shm: true,
        },
    );
    for n in [c.a(), c.b()] {
        n.ok(&["create-md", "r0"]);
    }
    c
}

fn address(n: &Node) -> SocketAddr {
    let text = std::fs::read_to_string(&n.config).expect("config");
    let port = text
        .split("address 127.0.0.1:")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port in the config");
    let ip = if n.name == "node-a" {
        "127.0.0.1"
    } else {
        "127.0.0.2"
    };
    SocketAddr::new(ip.parse().expect("ip"), port)
}

/// One frame, or None at EOF, reset or after `wait`.
fn read_frame(s: &mut TcpStream, wait: Duration) -> Option<Packet> {
    s.set_read_timeout(Some(wait)).expect("timeout");
    peer::read_frame(s)
}

/// The daemon has closed `s` within `wait` (EOF or reset), whatever it sent before.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).expect("timeout");
    peer::closed_by_daemon(s)
}

/// Nothing arrives on `s` for `wait` (and it stays open).
fn silent_for(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// The daemon's attempt: its data and meta sockets, and the session id of its Hello.
fn accept_attempt(l: &TcpListener) -> (TcpStream, TcpStream, u64) {
    l.set_nonblocking(true).expect("nonblocking");
    let mut data = None;
    let mut meta = None;
    let mut session = 0;
    let t = Instant::now();
    while data.is_none() || meta.is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the daemon did not dial"
        );
        match l.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).expect("blocking");
                match read_frame(&mut s, Duration::from_secs(5)) {
                    Some(Packet::Hello {
                        meta_socket,
                        session: sid,
                        ..
                    }) => {
                        session = sid;
                        if meta_socket {
                            meta = Some(s);
                        } else {
                            data = Some(s);
                        }
                    }
                    other => panic!("the daemon's attempt opened with {other:?}"),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    (
        data.expect("data socket"),
        meta.expect("meta socket"),
        session,
    )
}

/// A pair dialled to `to` from `from_ip`, with Hello as `node`.
fn dial_pair(from_ip: &str, node: &str, to: SocketAddr, session: u64) -> (TcpStream, TcpStream) {
    let mut d = dial_from(from_ip, to);
    d.write_all(&hello(node, false, session)).expect("hello");
    let mut m = dial_from(from_ip, to);
    m.write_all(&hello(node, true, session)).expect("hello");
    (d, m)
}

fn wait_crossed(n: &Node, before: usize) {
    wait_for(Duration::from_secs(5), "the crossing to be logged", || {
        (count(n, "dials crossed") > before).then_some(())
    });
}

/// node-a has the lower address: while its own attempt is under way it never takes node-b's
/// pair; it takes it only if its attempt fails, and drops it if its attempt succeeds.
#[test]
fn crossed_dials_the_lower_address_keeps_its_own_pair() {
    let c = one_node("dial-fake-b");
    let a = c.a();
    let b_addr = address(c.b());
    let a_addr = address(a);
    let fake_b = TcpListener::bind(b_addr).expect("listen on node-b's address");
    a.ok(&["up", "r0"]);

    // 1. node-a's attempt fails: it takes the held pair.
    let (ad, am, _) = accept_attempt(&fake_b);
    let (mut d, m) = dial_pair("127.0.0.2", "node-b", a_addr, 0x51);
    wait_crossed(a, 0);
    assert!(
        silent_for(&mut d, Duration::from_millis(500)),
        "node-a took node-b's pair while its own attempt was under way"
    );
    drop((ad, am));
    match read_frame(&mut d, Duration::from_secs(3)) {
        Some(Packet::Hello { session, .. }) => assert_eq!(session, 0x51),
        other => panic!("node-a did not take the held pair after its attempt failed: {other:?}"),
    }
    wait_for(Duration::from_secs(5), "node-a to handshake", || {
        (cstate(a) >= Some(ConnState::WFReportParams)).then_some(())
    });
    drop((d, m));

    // 2. node-a's attempt succeeds (the fake node-b answers it): the held pair is dropped.
    let (mut ad, _am, session) = accept_attempt(&fake_b);
    let (mut d, _meta) = dial_pair("127.0.0.2", "node-b", a_addr, 0x52);
    wait_crossed(a, 1);
    ad.write_all(&hello("node-b", false, session))
        .expect("answer node-a's attempt");
    assert!(
        closed_within(&mut d, Duration::from_secs(3)),
        "node-a kept node-b's pair although its own was taken"
    );
    match read_frame(&mut ad, Duration::from_secs(3)) {
        Some(p) => assert!(
            !matches!(p, Packet::Hello { .. }),
            "node-a answered its own pair"
        ),
        None => panic!("node-a did not go on with its own pair:\n{}", a.log_tail()),
    }
    assert_eq!(count(a, "Handshake successful"), 2, "{}", a.log_tail());
}

/// node-b has the higher address: it takes node-a's pair at once, even while its own attempt
/// is under way (node-a, for its part, holds node-b's pair, as above).
#[test]
fn crossed_dials_the_higher_address_takes_the_peers_pair() {
    let c = one_node("dial-fake-a");
    let b = c.b();
    let a_addr = address(c.a());
    let b_addr = address(b);
    let fake_a = TcpListener::bind(a_addr).expect("listen on node-a's address");
    b.ok(&["up", "r0"]);
    let (_bd, _bm, _) = accept_attempt(&fake_a);
    let (mut d, _meta) = dial_pair("127.0.0.1", "node-a", b_addr, 0x61);
    match read_frame(&mut d, Duration::from_secs(3)) {
        Some(Packet::Hello { session, .. }) => assert_eq!(session, 0x61),
        other => panic!("node-b did not take node-a's pair during its own attempt: {other:?}"),
    }
    assert_eq!(count(b, "dials crossed"), 0);
    wait_for(Duration::from_secs(5), "node-b to handshake", || {
        (cstate(b) >= Some(ConnState::WFReportParams)).then_some(())
    });
}

/// The peer's attempt fails half way (its data socket arrives, its meta socket never does)
/// while node-a sleeps out connect-int: node-a dials the peer itself at once, instead of a
/// minute later.
#[test]
fn a_half_finished_dial_from_the_peer_makes_the_node_dial_back_at_once() {
    let c = one_node("dial-half");
    let a = c.a();
    let a_addr = address(a);
    a.ok(&["up", "r0"]);
    // Its first attempt finds nobody; it now sleeps out connect-int (60 s).
    wait_for(Duration::from_secs(10), "WFConnection", || {
        (cstate(a) == Some(ConnState::WFConnection)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let fake_b = TcpListener::bind(address(c.b())).expect("listen on node-b's address");
    let t = Instant::now();
    let mut d = dial_from("127.0.0.2", a_addr);
    d.write_all(&hello("node-b", false, 0x71)).expect("hello");
    let (_ad, _am, _) = accept_attempt(&fake_b);
    let took = t.elapsed();
    println!(
        "node-a dialled back {} ms after half a session",
        took.as_millis()
    );
    assert!(
        took < LIMIT,
        "node-a dialled back only after {took:?} (connect-int 60 s)"
    );
}
