//! Goal: peer input is untrusted. Something that connects from the peer's address and then
//! sends a bad frame, an oversized frame or a packet that is out of place drops that link into
//! ProtocolError with a logged reason; the daemon keeps running, its data is untouched, and the
//! real peer still connects afterwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rep_replicator::wire::Packet;
use rep_tests::faults::status_file;
use rep_tests::pair::up_pair_within;
use rep_tests::peer::{
    closed_by_daemon, connect_as_node_a, connect_from, frame, hello, read_frame,
};
use rep_tests::{backing_bytes, wait_for, Cluster, ClusterOpts, Node};

/// Pose as node-a up to an established link, then send `evil` on the data socket; the
/// daemon must close the connection.
fn attack(to: SocketAddr, evil: &[u8]) {
    let mut data = connect_as_node_a(to);
    data.write_all(&hello("node-a", false, 77)).expect("hello");
    let mut meta = connect_as_node_a(to);
    meta.write_all(&hello("node-a", true, 77)).expect("hello");
    let mut head = [0u8; 12];
    data.read_exact(&mut head).expect("node-b answers Hello");
    data.write_all(evil).expect("send");
    // Drain until node-b hangs up (it may first send its own handshake packets).
    assert!(
        closed_by_daemon(&mut data),
        "node-b kept a link that sent garbage"
    );
    drop(meta);
}

#[test]
fn malformed_peer_packets_drop_the_link_not_the_daemon() {
    let c = Cluster::new(
        "hostile",
        ClusterOpts {
            disk_mib: 32,
            extra: "  net {\n    connect-int 1;\n    ping-int 1;\n  }\n".into(),
            ..Default::default()
        },
    );
    let (a, b) = (c.a(), c.b());
    for n in [a, b] {
        n.ok(&["create-md", "r0"]);
    }
    b.ok(&["up", "r0"]);
    let addr: SocketAddr = b.status_json()["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("socket address");
    let usable = b.status_json()["size_bytes"].as_u64().expect("size");
    let before = backing_bytes(b, 0, usable);

    // 1. A frame with a bad magic.
    attack(addr, &[0xde; 12]);
    // 2. A frame header claiming a 4 GiB payload.
    let mut huge = Vec::new();
    Packet::Ping.encode(&mut huge);
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    attack(addr, &huge);
    // 3. A well-formed write during the handshake, aimed past the end of the device.
    let mut data = Vec::new();
    Packet::Data {
        id: 1,
        offset: u64::MAX - 4095,
        fua: false,
        data: vec![0xee; 4096].into(),
    }
    .encode(&mut data);
    attack(addr, &data);

    let log = b.log_tail();
    assert!(
        log.contains("ProtocolError") || log.contains("bad frame magic"),
        "no logged reason:\n{log}"
    );
    assert_eq!(
        b.status_json()["cstate"],
        "WFConnection",
        "node-b must keep waiting for its real peer"
    );
    assert!(
        before == backing_bytes(b, 0, usable),
        "a hostile peer changed data"
    );

    // The real peer still gets in.
    a.ok(&["up", "r0"]);
    wait_for(Duration::from_secs(20), "the real peer to connect", || {
        (b.status_json()["cstate"] == "Connected").then_some(())
    });
}

// ---- A connected pair under attack, and a waiting Primary with `shared-secret` ----

const SECRET: &str = "s3cret-for-the-test";
const NET_WITH_SECRET: &str = "  net {\n    connect-int 1;\n    ping-int 1;\n    cram-hmac-alg sha1;\n    shared-secret \"s3cret-for-the-test\";\n  }\n";
/// The byte every attacker payload is made of; the real load never writes it.
const EVIL: u8 = 0xee;

/// One hostile session kind against `to`, posing as `node` from `from_ip`; returns the data
/// socket after the attack was sent (the caller checks that the daemon closes it).
fn hostile_session(kind: &str, from_ip: &str, to: SocketAddr, session: u64) -> TcpStream {
    let mut s = connect_from(from_ip, to);
    match kind {
        "garbage" => {
            let _ = s.write_all(&[EVIL; 64]);
        }
        "oversized" => {
            let mut h = hello("node-b", false, session);
            h[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
            let _ = s.write_all(&h[..12]);
        }
        "truncated" => {
            let h = hello("node-b", false, session);
            let _ = s.write_all(&h[..h.len() - 3]);
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        "out-of-order" => {
            let data = Packet::Data {
                id: 1,
                offset: 0,
                fua: false,
                data: vec![EVIL; 4096].into(),
            };
            let _ = s.write_all(&frame(&data));
        }
        other => panic!("unknown attack {other}"),
    }
    s
}

/// A full session posing as node-b: both sockets, Hello, then node-a's challenge. Returns the
/// data socket, the meta socket and the challenge's nonce.
fn session_to_challenge(to: SocketAddr, session: u64) -> (TcpStream, TcpStream, Vec<u8>) {
    let mut data = connect_from("127.0.0.2", to);
    data.write_all(&hello("node-b", false, session))
        .expect("hello");
    let mut meta = connect_from("127.0.0.2", to);
    meta.write_all(&hello("node-b", true, session))
        .expect("hello");
    for _ in 0..16 {
        match read_frame(&mut data) {
            Some(Packet::AuthChallenge { nonce }) => return (data, meta, nonce),
            Some(_) => {}
            None => panic!("node-a closed the session before its challenge"),
        }
    }
    panic!("no authentication challenge from node-a");
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// Wait until node's log holds `needle` more often than `before` times.
fn wait_logged(n: &Node, needle: &str, before: usize) {
    wait_for(
        Duration::from_secs(15),
        &format!("log line {needle:?}"),
        || (count(&n.log(), needle) > before).then_some(()),
    );
}

fn read_block0(n: &Node) {
    let mut c = rep_tests::nbdraw::RawClient::connect(&n.nbd_socket(), "r0").expect("NBD client");
    let (err, data) = c
        .request(rep_tests::nbdraw::CMD_READ, 0, 0, 4096, &[])
        .expect("read");
    assert_eq!(
        (err, data),
        (0, vec![0x77; 4096]),
        "the Primary keeps serving"
    );
}

#[test]
fn attacks_on_a_connected_pair_leave_its_link_and_its_disks_alone() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let c = Cluster::new(
        "hostile-pair",
        ClusterOpts {
            disk_mib: 32,
            extra: NET_WITH_SECRET.into(),
            on_shm: true,
        },
    );
    let (a, b) = (c.a(), c.b());
    up_pair_within(&c, 20, 20);
    let to: SocketAddr = a.status_json()["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("address");

    // A paced write load through node-a, bounded in count and time; records its slowest write.
    let stop = Arc::new(AtomicBool::new(false));
    let sock = a.nbd_socket();
    let s2 = Arc::clone(&stop);
    let load = std::thread::spawn(move || {
        let mut cl = rep_tests::nbdraw::RawClient::connect(&sock, "r0").expect("load client");
        let (mut n, mut slowest, t0) = (0u64, Duration::ZERO, std::time::Instant::now());
        let mut stamps = Vec::new();
        while !s2.load(Ordering::Relaxed) && n < 20_000 && t0.elapsed() < Duration::from_secs(60) {
            let fill = (n % 200) as u8 + 1; // never EVIL
            let t = std::time::Instant::now();
            let (err, _) = cl
                .request(
                    rep_tests::nbdraw::CMD_WRITE,
                    0,
                    (n % 2048) * 4096,
                    4096,
                    &[fill; 4096],
                )
                .expect("write");
            assert_eq!(err, 0, "a replicated write failed during the attack");
            slowest = slowest.max(t.elapsed());
            stamps.push(t0.elapsed());
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (n, slowest, stamps)
    });

    // A second of undisturbed load first: the pace to compare with.
    let t_load = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(1));

    // Attack node-a from node-b's address and from a stranger's for 2 s (at most 2,000
    // rounds of 7 sessions), watching the real link between rounds.
    let t_attack = std::time::Instant::now();
    let mut sessions = 0;
    for round in 0..2000u64 {
        if t_attack.elapsed() > Duration::from_secs(2) {
            break;
        }
        for kind in ["garbage", "oversized", "truncated", "out-of-order"] {
            let mut s = hostile_session(kind, "127.0.0.2", to, round);
            assert!(closed_by_daemon(&mut s), "{kind}: node-a kept the session");
            sessions += 1;
        }
        // A complete session (data + meta + Hello) with a wrong answer ready: refused at once,
        // the link is busy.
        let mut d = connect_from("127.0.0.2", to);
        let _ = d.write_all(&hello("node-b", false, 1000 + round));
        let mut m = connect_from("127.0.0.2", to);
        let _ = m.write_all(&hello("node-b", true, 1000 + round));
        let _ = d.write_all(&frame(&Packet::AuthResponse {
            mac: vec![EVIL; 20],
        }));
        assert!(closed_by_daemon(&mut d), "a second link was accepted");
        assert!(closed_by_daemon(&mut m), "a second link was accepted");
        // A stranger.
        let mut x = hostile_session("garbage", "127.0.0.3", to, round);
        assert!(closed_by_daemon(&mut x), "a stranger's connection was kept");
        sessions += 3;
        for n in [a, b] {
            assert_eq!(
                status_file(n)["cstate"],
                "Connected",
                "{}: the real link dropped during the attack",
                n.name
            );
        }
    }
    let (start, end) = (t_attack - t_load, t_attack.elapsed() + (t_attack - t_load));
    stop.store(true, Ordering::Relaxed);
    let (writes, slowest, stamps) = load.join().expect("load thread");
    let before = stamps.iter().filter(|t| **t < start).count() as f64 / start.as_secs_f64();
    let during = stamps.iter().filter(|t| **t >= start && **t <= end).count() as f64
        / (end - start).as_secs_f64();
    println!(
        "hostile peer vs connected pair: {sessions} hostile sessions in {} ms; {writes} replicated writes, {before:.0}/s before and {during:.0}/s during the attack, slowest {} ms",
        (end - start).as_millis(),
        slowest.as_millis()
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a replicated write took {slowest:?} during the attack"
    );
    assert!(
        during >= before / 2.0,
        "the attack slowed replication from {before:.0}/s to {during:.0}/s"
    );
    let log = a.log();
    assert!(
        !log.contains("conn( Connected ->"),
        "the real link suffered:\n{}",
        a.log_tail()
    );
    assert!(
        log.contains("refusing connection from 127.0.0.3"),
        "the stranger is logged"
    );
    // Both disks identical, and no attacker byte on either.
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    wait_for(Duration::from_secs(20), "the pair to settle", || {
        (status_file(b)["disk"] == "UpToDate" && status_file(a)["peer_disk"] == "UpToDate")
            .then_some(())
    });
    let (da, db) = (backing_bytes(a, 0, usable), backing_bytes(b, 0, usable));
    assert!(da == db, "the disks differ after the attack");
    assert!(!da.contains(&EVIL), "an attacker's byte reached a disk");
}

#[test]
fn hostile_sessions_against_a_waiting_primary_are_logged_dropped_and_write_nothing() {
    let c = Cluster::new(
        "hostile-wait",
        ClusterOpts {
            disk_mib: 32,
            extra: NET_WITH_SECRET.into(),
            on_shm: true,
        },
    );
    let (a, b) = (c.a(), c.b());
    for n in [a, b] {
        n.ok(&["create-md", "r0"]);
    }
    a.ok(&["up", "r0"]);
    a.ok(&["primary", "--force", "r0"]);
    {
        let mut w = rep_tests::nbdraw::RawClient::connect(&a.nbd_socket(), "r0").expect("client");
        let (err, _) = w
            .request(rep_tests::nbdraw::CMD_WRITE, 0, 0, 65536, &[0x77; 65536])
            .expect("write");
        assert_eq!(err, 0);
    }
    let to: SocketAddr = a.status_json()["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("address");
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    let before = backing_bytes(a, 0, usable);
    // What ended each attack: the log line, and whether DRBD's rule sends the node StandAlone
    // (a failed authentication does, "Discarding network configuration").
    let back_to_waiting = |why: &str| {
        let s = a.status_json();
        if s["cstate"] == "StandAlone" {
            a.ok(&["connect", "r0"]);
        }
        wait_for(Duration::from_secs(10), why, || {
            (status_file(a)["cstate"] == "WFConnection").then_some(())
        });
        read_block0(a);
    };

    // Frames that never make a link: logged by the listener, node-a keeps waiting.
    for (kind, needle) in [
        ("garbage", "bad frame magic"),
        ("oversized", "exceeds the limit"),
        ("truncated", "closed the connection"),
        ("out-of-order", "did not start with Hello"),
    ] {
        let n0 = count(&a.log(), needle);
        let mut s = hostile_session(kind, "127.0.0.2", to, 7);
        assert!(closed_by_daemon(&mut s), "{kind}: session kept");
        wait_logged(a, needle, n0);
        assert_eq!(status_file(a)["cstate"], "WFConnection", "{kind}");
        read_block0(a);
    }

    // Half a session: the data socket's partner never comes; dropped after the Hello timeout.
    let n0 = count(&a.log(), "but not the other");
    let t = std::time::Instant::now();
    let mut half = connect_from("127.0.0.2", to);
    half.write_all(&hello("node-b", false, 99)).expect("hello");
    assert!(closed_by_daemon(&mut half), "a half session was kept");
    wait_logged(a, "but not the other", n0);
    println!(
        "half-open session dropped after {} ms",
        t.elapsed().as_millis()
    );

    // A session that skips authentication.
    let n0 = count(&a.log(), "before authenticating");
    let (mut d, _m, _) = session_to_challenge(to, 1);
    let data = Packet::Data {
        id: 1,
        offset: 0,
        fua: false,
        data: vec![EVIL; 4096].into(),
    };
    let _ = d.write_all(&frame(&data));
    assert!(closed_by_daemon(&mut d));
    wait_logged(a, "before authenticating", n0);
    back_to_waiting("WFConnection after an unauthenticated packet");

    // A wrong shared-secret.
    let n0 = count(&a.log(), "Authentication of peer node-b failed");
    let (mut d, _m, nonce) = session_to_challenge(to, 2);
    let mac = rep_replicator::wire::auth::response(
        rep_resources::HmacAlg::Sha1,
        "wrong",
        &nonce,
        "node-b",
    );
    d.write_all(&frame(&Packet::AuthResponse { mac }))
        .expect("send");
    assert!(closed_by_daemon(&mut d));
    wait_logged(a, "Authentication of peer node-b failed", n0);
    back_to_waiting("WFConnection after a wrong secret");

    // A replayed answer: the first session answers its challenge correctly (the test knows
    // the secret, as an eavesdropper would know the exchange), the second replays that answer.
    let (mut d1, m1, nonce1) = session_to_challenge(to, 3);
    let mac1 = rep_replicator::wire::auth::response(
        rep_resources::HmacAlg::Sha1,
        SECRET,
        &nonce1,
        "node-b",
    );
    let n_ok = count(&a.log(), "Peer authenticated");
    d1.write_all(&frame(&Packet::AuthResponse { mac: mac1.clone() }))
        .expect("send");
    wait_logged(a, "Peer authenticated", n_ok);
    drop((d1, m1));
    wait_for(Duration::from_secs(10), "node-a to wait again", || {
        (status_file(a)["cstate"] == "WFConnection").then_some(())
    });
    let n0 = count(&a.log(), "Authentication of peer node-b failed");
    let (mut d2, _m2, nonce2) = session_to_challenge(to, 4);
    assert_ne!(nonce1, nonce2, "node-a reused a challenge");
    d2.write_all(&frame(&Packet::AuthResponse { mac: mac1 }))
        .expect("send");
    assert!(closed_by_daemon(&mut d2), "a replayed answer was accepted");
    wait_logged(a, "Authentication of peer node-b failed", n0);
    back_to_waiting("WFConnection after a replayed answer");

    assert!(
        before == backing_bytes(a, 0, usable),
        "a hostile session changed node-a's data"
    );
    assert!(a.pid().is_some());
    // The real peer still gets in, and syncs.
    b.ok(&["up", "r0"]);
    wait_for(Duration::from_secs(30), "the real peer to sync", || {
        (b.status_json()["disk"] == "UpToDate").then_some(())
    });
    assert!(backing_bytes(a, 0, usable) == backing_bytes(b, 0, usable));
}
