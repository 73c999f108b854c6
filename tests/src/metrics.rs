//! The Prometheus endpoint (`metrics-listen`) as tests read it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::Cluster;

/// Give the node at `ip` (127.0.0.1: node-a, 127.0.0.2: node-b) a `metrics-listen` on
/// 127.0.0.1:`port`.
pub fn listen_on(c: &Cluster, ip: &str, port: u16) {
    c.edit_config(|t| {
        t.replacen(
            &format!("address {ip}:"),
            &format!("metrics-listen 127.0.0.1:{port};\n    address {ip}:"),
            1,
        )
    });
}

/// GET /metrics over a plain TCP connection; returns the body after checking the head.
pub fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics-listen");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(len, body.len());
    body.to_string()
}
