//! Posing as a peer: raw TCP connections from a chosen local address to a daemon's replication
//! port, hand-made handshake frames, and reading what the daemon answers. For the tests that
//! play a hostile or a half-finished peer (`hostile_peer.rs`, `dialing.rs`, `tls_link.rs`).

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rep_replicator::wire::Packet;

/// How long a [`connect_from`] connection's reads wait before they fail with a timeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection to `to` bound to `from_ip` (an address the daemon takes for its peer's, or
/// a stranger's), with no read timeout.
pub fn dial_from(from_ip: &str, to: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{from_ip}:0").parse().expect("addr");
    s.bind(&from.into())
        .unwrap_or_else(|e| panic!("bind {from_ip}: {e}"));
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    TcpStream::from(s)
}

/// [`dial_from`] with reads bounded by [`READ_TIMEOUT`].
pub fn connect_from(from_ip: &str, to: SocketAddr) -> TcpStream {
    let s = dial_from(from_ip, to);
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    s
}

/// [`connect_from`] node-a's address, 127.0.0.1.
pub fn connect_as_node_a(to: SocketAddr) -> TcpStream {
    connect_from("127.0.0.1", to)
}

/// `p` as it goes on the wire.
pub fn frame(p: &Packet) -> Vec<u8> {
    let mut v = Vec::new();
    p.encode(&mut v);
    v
}

/// The first frame on a data (`meta_socket` false) or meta socket, claiming to be `node`.
pub fn hello(node: &str, meta_socket: bool, session: u64) -> Vec<u8> {
    frame(&Packet::Hello {
        version_min: rep_replicator::wire::PROTOCOL_VERSION,
        version_max: rep_replicator::wire::PROTOCOL_VERSION,
        node: node.into(),
        meta_socket,
        session,
    })
}

/// One frame, or None at EOF, on a reset, on a read timeout or if it does not decode.
pub fn read_frame(s: &mut TcpStream) -> Option<Packet> {
    let mut head = [0u8; rep_replicator::wire::HEADER_BYTES];
    s.read_exact(&mut head).ok()?;
    let h = rep_replicator::wire::frame::decode_header(&head).ok()?;
    let mut payload = vec![0u8; h.len as usize];
    s.read_exact(&mut payload).ok()?;
    Packet::decode(&h, &payload).ok()
}

/// True once the daemon has closed `s` (EOF or reset), reading whatever it sends before;
/// false if it keeps the socket open past the socket's read timeout, or keeps sending (the
/// reads are bounded).
pub fn closed_by_daemon(s: &mut TcpStream) -> bool {
    let mut sink = [0u8; 65536];
    for _ in 0..1000 {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}
