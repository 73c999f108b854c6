//! Assertions over the replication invariants that many tests end with.

use crate::{backing_bytes, Node};

/// The first `len` bytes of both nodes' backing files are the same (read directly, not through
/// repd); the panic names the first byte that differs.
pub fn assert_same_data(a: &Node, b: &Node, len: u64) {
    let (x, y) = (backing_bytes(a, 0, len), backing_bytes(b, 0, len));
    if let Some(pos) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!(
            "backing devices of {} and {} differ at byte {pos} (block {})",
            a.name,
            b.name,
            pos / 4096
        );
    }
}

/// The pair's last check: the Primary `a` demoted and both daemons down (nothing in flight,
/// everything on disk), then the first `len` bytes of both backing files compared.
pub fn down_and_assert_same_data(a: &Node, b: &Node, len: u64) {
    a.ok(&["secondary", &a.resource]);
    for n in [a, b] {
        n.ok(&["down", &n.resource]);
    }
    assert_same_data(a, b, len);
}

/// Both backing files hold the same data area: the usable size node `a`'s running daemon
/// reports (`size_bytes`; the internal metadata behind it may differ).
pub fn assert_identical(a: &Node, b: &Node) {
    let usable = a.status_json()["size_bytes"].as_u64().expect("size_bytes");
    assert_same_data(a, b, usable);
}
