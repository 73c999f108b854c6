//! Goal: peer input is untrusted. Something that connects from the peer's address and then
//! sends a bad frame, an oversized frame or a packet that is out of place drops that link into
//! ProtocolError with a logged reason; the daemon keeps running, its data is untouched, and the
//! real peer still connects afterwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rep_replicator::wire::Packet;
use rep_tests::{wait_for, Cluster, ClusterOpts, Node};

fn data_area(n: &Node, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    std::fs::File::open(&n.disk)
        .and_then(|mut f| f.read_exact(&mut v))
        .expect("read backing file");
    v
}

/// A TCP connection from 127.0.0.1 (node-a's address) to node-b.
fn connect_as_node_a(to: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind 127.0.0.1");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect to node-b");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn hello(meta_socket: bool) -> Vec<u8> {
    let mut v = Vec::new();
    Packet::Hello {
        version_min: 1,
        version_max: 1,
        node: "node-a".into(),
        meta_socket,
        session: 77,
    }
    .encode(&mut v);
    v
}

/// Pose as node-a up to an established link, then send `evil` on the data socket; the
/// daemon must close the connection.
fn attack(to: SocketAddr, evil: &[u8]) {
    let mut data = connect_as_node_a(to);
    data.write_all(&hello(false)).expect("hello");
    let mut meta = connect_as_node_a(to);
    meta.write_all(&hello(true)).expect("hello");
    let mut head = [0u8; 12];
    data.read_exact(&mut head).expect("node-b answers Hello");
    data.write_all(evil).expect("send");
    // Drain until node-b hangs up (it may first send its own handshake packets).
    let mut sink = [0u8; 65536];
    let closed = (0..1000).any(|_| matches!(data.read(&mut sink), Ok(0) | Err(_)));
    assert!(closed, "node-b kept a link that sent garbage");
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
    let usable = b.status_json()["size_bytes"].as_u64().expect("size") as usize;
    let before = data_area(b, usable);

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
        data: vec![0xee; 4096],
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
        before == data_area(b, usable),
        "a hostile peer changed data"
    );

    // The real peer still gets in.
    a.ok(&["up", "r0"]);
    wait_for(Duration::from_secs(20), "the real peer to connect", || {
        (b.status_json()["cstate"] == "Connected").then_some(())
    });
}
