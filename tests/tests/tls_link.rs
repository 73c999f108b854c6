//! Goal: with `net { tls yes; }` the replication link (full sync, resync, writes) runs over
//! TLS with both nodes' certificates checked against `tls-ca`, alongside `shared-secret`; a
//! plaintext node and a TLS node do not connect and both say why; a peer with a wrong
//! certificate, a plaintext peer, a TLS peer sending garbage and a replayed TLS session are
//! dropped, the node keeps serving and not a byte reaches its disk.
//!
//! Method: two nodes on 127.0.0.1/127.0.0.2 with certificates made by openssl at test time;
//! the hostile peers are `openssl s_client` and raw sockets from node-a's address while node-a
//! is down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rep_tests::assert::assert_same_data;
use rep_tests::pair::up_fresh;
use rep_tests::peer::connect_as_node_a;
use rep_tests::pki::{Ca, Leaf};
use rep_tests::{backing_bytes, wait_for, write_pattern, Cluster, ClusterOpts, Node};

struct TlsPair {
    c: Cluster,
    ca: Ca,
    a_cert: Leaf,
}

fn add_to_on(config: &std::path::Path, node: &str, lines: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    let marker = format!("  on {node} {{\n");
    let text = text.replacen(&marker, &format!("{marker}{lines}\n"), 1);
    std::fs::write(config, text).expect("write config");
}

fn tls_pair(test: &str) -> TlsPair {
    let extra = "  net {\n    connect-int 1;\n    ping-int 1;\n    cram-hmac-alg sha256;\n    shared-secret \"tls-and-secret\";\n    tls yes;\n    tls-ca CA;\n  }\n  disk {\n    c-plan-ahead 0;\n    resync-rate 40M;\n  }\n";
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 64,
            extra: extra.to_owned(),
            ..Default::default()
        },
    );
    let ca = Ca::new(&c.dir, "ca");
    let config = c.a().config.clone();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("tls-ca CA;", &format!("tls-ca {};", ca.cert.display())),
    )
    .expect("config");
    let mut a_cert = None;
    for n in ["node-a", "node-b"] {
        let leaf = ca.issue(n, &[&format!("DNS:{n}")]);
        add_to_on(
            &config,
            n,
            &format!(
                "    tls-certificate {};\n    tls-privkey {};",
                leaf.cert.display(),
                leaf.key.display()
            ),
        );
        if n == "node-a" {
            a_cert = Some(leaf);
        }
    }
    TlsPair {
        c,
        ca,
        a_cert: a_cert.expect("node-a cert"),
    }
}

fn field(n: &Node, key: &str) -> String {
    n.status_json()[key].as_str().unwrap_or_default().to_owned()
}

/// Both up, node-a Primary, the full sync done over TLS.
fn synced(t: &TlsPair) {
    up_fresh(&t.c, 30);
    let a = t.c.a();
    a.ok(&["primary", "--force", "r0"]);
    write_pattern(a, 0x5a, 1 << 20, 2 << 20);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);
    t.c.b().wait_state("Connected", "UpToDate", "UpToDate", 10);
    for n in &t.c.nodes {
        assert!(
            n.log().contains("TLS established"),
            "{} ran the link over TLS: {}",
            n.name,
            n.log_tail()
        );
    }
}

#[test]
fn link_tls_full_sync_resync_and_writes() {
    let t = tls_pair("tls-link");
    synced(&t);
    let (a, b) = (t.c.a(), t.c.b());
    write_pattern(a, 0x33, 4 << 20, 1 << 20);
    // A resync over TLS: node-b away while node-a writes.
    b.ok(&["disconnect", "r0"]);
    write_pattern(a, 0x44, 8 << 20, 3 << 20);
    b.ok(&["connect", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);
    b.wait_state("Connected", "UpToDate", "UpToDate", 10);
    let usable = a.status_json()["size_bytes"].as_u64().expect("size");
    a.ok(&["secondary", "r0"]);
    for n in &t.c.nodes {
        n.ok(&["down", "r0"]);
    }
    assert_same_data(a, b, usable);
    assert!(backing_bytes(b, 0, 11 << 20)[8 << 20..]
        .iter()
        .all(|&x| x == 0x44));
}

#[test]
fn link_tls_node_and_plaintext_node_do_not_connect() {
    let mut t = tls_pair("tls-mixed");
    let text = std::fs::read_to_string(&t.c.nodes[1].config).expect("config");
    let other = t.c.dir.join("rep-b.res");
    std::fs::write(&other, text.replace("    tls yes;\n", "")).expect("config");
    t.c.nodes[1].config = other;
    for n in &t.c.nodes {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    for n in &t.c.nodes {
        wait_for(
            Duration::from_secs(20),
            &format!("{} to log the TLS mismatch", n.name),
            || n.log().contains("tls yes").then_some(()),
        );
    }
    for n in &t.c.nodes {
        assert_ne!(field(n, "cstate"), "Connected", "{} connected", n.name);
    }
}

/// `openssl s_client` to `to` as a TLS peer with `cert`, sending `input` after the handshake.
fn s_client(to: SocketAddr, cert: &Leaf, ca: &Ca, input: &[u8]) -> String {
    let mut child = Command::new("timeout")
        .args([
            "15",
            "openssl",
            "s_client",
            "-quiet",
            "-no_ign_eof",
            "-servername",
            "node-b",
        ])
        .arg("-connect")
        .arg(to.to_string())
        .arg("-cert")
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key)
        .arg("-CAfile")
        .arg(&ca.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().expect("s_client");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Relays one connection from a local port to `to` (from node-a's address), recording what
/// the client sent.
fn recording_proxy(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
    let addr = l.local_addr().expect("addr");
    let rec = Arc::new(Mutex::new(Vec::new()));
    let rec2 = Arc::clone(&rec);
    std::thread::spawn(move || {
        let Ok((mut client, _)) = l.accept() else {
            return;
        };
        let mut server = connect_as_node_a(to);
        let (mut c2, mut s2) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Both);
        });
        let mut buf = [0u8; 16384];
        loop {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    rec2.lock().expect("lock").extend_from_slice(&buf[..n]);
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server.shutdown(std::net::Shutdown::Write);
        let _ = back.join();
    });
    (addr, rec)
}

#[test]
fn link_tls_hostile_peers_are_dropped_and_write_nothing() {
    let t = tls_pair("tls-hostile");
    synced(&t);
    let (a, b) = (t.c.a(), t.c.b());
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
    wait_for(
        Duration::from_secs(10),
        "node-b to wait for its peer",
        || (field(b, "cstate") == "WFConnection").then_some(()),
    );
    let usable = b.status_json()["size_bytes"].as_u64().expect("size");
    let before = backing_bytes(b, 0, usable);
    let to: SocketAddr = {
        let text = std::fs::read_to_string(&b.config).expect("config");
        let at = text.find("address 127.0.0.2:").expect("b address") + "address ".len();
        text[at..at + text[at..].find(';').expect(";")]
            .parse()
            .expect("addr")
    };
    let mut hello = Vec::new();
    rep_replicator::wire::Packet::Hello {
        version_min: rep_replicator::wire::PROTOCOL_VERSION,
        version_max: rep_replicator::wire::PROTOCOL_VERSION,
        node: "node-a".into(),
        meta_socket: false,
        session: 7,
    }
    .encode(&mut hello);

    // A certificate from another CA, in node-a's name.
    let other = Ca::new(&t.c.dir, "other-ca");
    let rogue = other.issue("node-a", &["DNS:node-a"]);
    s_client(to, &rogue, &t.ca, &hello);
    // The right CA, but issued for another node.
    let stranger = t.ca.issue("node-c", &["DNS:node-c"]);
    s_client(to, &stranger, &t.ca, &hello);
    // A plaintext peer.
    let mut s = connect_as_node_a(to);
    let _ = s.write_all(&hello);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    // node-a's own certificate, then garbage instead of frames.
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    s_client(to, &t.a_cert, &t.ca, &garbage);
    // A recorded TLS session (node-a's certificate, a Hello, then writes' worth of bytes),
    // replayed byte for byte.
    let (proxy, rec) = recording_proxy(to);
    s_client(
        proxy,
        &t.a_cert,
        &t.ca,
        &[hello.clone(), garbage.clone()].concat(),
    );
    let recorded = rec.lock().expect("lock").clone();
    assert!(recorded.len() > 1000, "the proxy recorded the session");
    let mut s = connect_as_node_a(to);
    let _ = s.write_all(&recorded);
    let _ = s.read_to_end(&mut sink);

    // node-b logs a refusal after it has closed the socket the attacker waits on: wait for the
    // last one (the replay) instead of reading the log once.
    let blog = wait_for(
        Duration::from_secs(10),
        "node-b to log every refusal",
        || {
            let l = b.log();
            (l.matches("refusing 127.0.0.1").count() >= 4).then_some(l)
        },
    );
    for needle in [
        "TLS handshake failed",
        "not issued for the peer's name",
        "sent plaintext, but this node has `net { tls yes; }`",
    ] {
        assert!(blog.contains(needle), "node-b logs {needle:?}:\n{blog}");
    }
    let refusals = blog.matches("refusing 127.0.0.1").count();
    assert!(
        refusals >= 4,
        "each hostile TLS attempt refused ({refusals}):\n{blog}"
    );
    assert!(
        blog.contains("bad frame magic"),
        "the garbage after the handshake was refused:\n{blog}"
    );
    // Still serving, nothing written.
    assert_eq!(field(b, "disk"), "UpToDate");
    assert_eq!(field(b, "cstate"), "WFConnection");
    assert!(
        backing_bytes(b, 0, usable) == before,
        "hostile peers wrote nothing"
    );
    // The real node-a still gets in.
    a.ok(&["up", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    b.ok(&["down", "r0"]);
    a.ok(&["down", "r0"]);
    assert_same_data(a, b, usable);
}

#[test]
fn link_tls_carries_the_builtin_outdate_request() {
    let t = tls_pair("tls-outdate");
    let config = t.c.a().config.clone();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen(
            "    resync-rate 40M;\n",
            "    resync-rate 40M;\n    fencing resource-only;\n",
            1,
        ),
    )
    .expect("config");
    synced(&t);
    let (a, b) = (t.c.a(), t.c.b());
    a.ok(&["disconnect", "r0"]);
    wait_for(Duration::from_secs(20), "node-b outdated over TLS", || {
        (field(b, "disk") == "Outdated").then_some(())
    });
    assert!(
        b.log().contains("asks to outdate our disk"),
        "node-b was outdated by node-a's request:\n{}",
        b.log_tail()
    );
    a.ok(&["connect", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
}
