//! Goal: the test-only fault hook (`repadm fault`, feature `fault-injection`, README "Testing
//! notes") does what tests rely on: with a volatile cache a power cut leaves exactly the
//! durable image (flushed and FUA writes, nothing else) and the node comes back from it;
//! injected write errors make a Primary detach (EIO to the client without a peer, served by
//! the peer with one); ranged, counted read errors hit only their range, only that often;
//! turning the cache off, `clear` and a normal `down` write the cache out.
//! Method: real repd processes, a raw NBD client (no flush on close, FUA where asked), and the
//! backing files read directly.

use std::time::Duration;

use rep_tests::faults::fault;
use rep_tests::nbdraw::{
    RawClient, CMD_DISC, CMD_FLAG_FUA, CMD_FLUSH, CMD_READ, CMD_WRITE, REQUEST_MAGIC,
};
use rep_tests::pair::{lone_primary, up_pair, PairConf};
use rep_tests::{file_bytes, wait_for, Node};

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
/// NBD's EIO.
const NBD_EIO: u32 = 5;

/// A raw NBD connection: exactly the requests asked for (qemu-io flushes when it closes).
struct Nbd(RawClient);

impl Nbd {
    fn connect(n: &Node) -> Nbd {
        Nbd(RawClient::connect(&n.nbd_socket(), &n.resource).expect("NBD connect"))
    }

    /// Write `len` bytes of `byte` at `off`; the NBD error (0 = success).
    fn write(&mut self, off: u64, len: u64, byte: u8, fua: bool) -> u32 {
        let flags = if fua { CMD_FLAG_FUA } else { 0 };
        let data = vec![byte; len as usize];
        let len = u32::try_from(len).expect("request length");
        self.0
            .request(CMD_WRITE, flags, off, len, &data)
            .expect("NBD write")
            .0
    }

    fn write_ok(&mut self, off: u64, len: u64, byte: u8, fua: bool) {
        assert_eq!(self.write(off, len, byte, fua), 0, "write at {off}");
    }

    fn flush_ok(&mut self) {
        assert_eq!(
            self.0
                .request(CMD_FLUSH, 0, 0, 0, &[])
                .expect("NBD flush")
                .0,
            0,
            "flush"
        );
    }

    /// Read `len` bytes at `off`: the data, or the NBD error.
    fn read(&mut self, off: u64, len: u64) -> Result<Vec<u8>, u32> {
        let len = u32::try_from(len).expect("request length");
        match self
            .0
            .request(CMD_READ, 0, off, len, &[])
            .expect("NBD read")
        {
            (0, data) => Ok(data),
            (err, _) => Err(err),
        }
    }

    /// NBD_CMD_DISC, then wait until the daemon counts no client (`secondary` needs that).
    fn close(mut self, n: &Node) {
        let _ = self.0.send_request(REQUEST_MAGIC, CMD_DISC, 0, 0, 0);
        drop(self);
        wait_for(Duration::from_secs(10), "the NBD client to be gone", || {
            (n.status_json()["open_clients"] == 0).then_some(())
        });
    }

    fn assert_reads(&mut self, off: u64, len: u64, byte: u8, what: &str) {
        let data = self
            .read(off, len)
            .unwrap_or_else(|e| panic!("{what}: read at {off} failed with NBD error {e}"));
        assert!(
            data.iter().all(|&b| b == byte),
            "{what}: expected {byte:#04x} at {off}..{}, found {:#04x}",
            off + len,
            data.iter().copied().find(|&b| b != byte).unwrap_or(byte)
        );
    }
}

fn assert_file(n: &Node, off: u64, len: u64, byte: u8, what: &str) {
    let data = file_bytes(&n.disk, off, len);
    assert!(
        data.iter().all(|&b| b == byte),
        "{what}: {} holds {:#04x} at {off}..{}, expected {byte:#04x}",
        n.disk.display(),
        data.iter().copied().find(|&b| b != byte).unwrap_or(byte),
        off + len
    );
}

/// Wait until the daemon is gone: its process (or a zombie nobody reaped) and its control
/// socket (the leader of a multi-threaded process is a zombie before the last thread closed
/// the shared file table, so the socket can outlive the leader by a moment).
fn wait_gone(n: &Node, pid: i32) {
    let ctl = n.run_dir.join(format!("{}.ctl", n.resource));
    wait_for(Duration::from_secs(10), "repd to end", || {
        (!rep_replicator::control::process_alive(pid)
            && std::os::unix::net::UnixStream::connect(&ctl).is_err())
        .then_some(())
    });
}

#[test]
fn power_loss_with_a_volatile_cache_leaves_exactly_the_flushed_and_fua_writes() {
    let c = PairConf::new("fault-power").build();
    let a = c.a();
    lone_primary(a);
    let mut nbd = Nbd::connect(a);
    // Old content over the first activity-log extent, durable before the cache turns volatile.
    nbd.write_ok(0, 3 * MIB, 0x11, false);
    nbd.flush_ok();

    let said = fault(a, &["volatile-cache", "on"]);
    assert!(said.contains("volatile-cache on"), "{said}");
    nbd.write_ok(0, 64 * KIB, 0xaa, false); // A, then a flush
    nbd.flush_ok();
    nbd.write_ok(MIB, 64 * KIB, 0xbb, false); // B: never flushed
    nbd.write_ok(2 * MIB, 64 * KIB, 0xcc, true); // C: FUA
                                                 // D: a cold extent, so an activity-log transaction (metadata, flushed) comes first.
    nbd.write_ok(8 * MIB, 64 * KIB, 0xdd, false);
    // Reads see the cache.
    nbd.assert_reads(MIB, 64 * KIB, 0xbb, "B before the power cut");
    nbd.assert_reads(8 * MIB, 64 * KIB, 0xdd, "D before the power cut");
    assert_file(a, MIB, 64 * KIB, 0x11, "B is only in the cache");

    let pid = a.pid().expect("repd pid");
    let said = fault(a, &["power-loss"]);
    assert!(said.contains("power-loss"), "{said}");
    wait_gone(a, pid);
    drop(nbd);

    // The backing file is the durable image.
    assert_file(a, 0, 64 * KIB, 0xaa, "A (flushed)");
    assert_file(a, 64 * KIB, MIB - 64 * KIB, 0x11, "old content next to A");
    assert_file(a, MIB, 64 * KIB, 0x11, "B (never flushed) must be lost");
    assert_file(a, 2 * MIB, 64 * KIB, 0xcc, "C (FUA)");
    assert_file(a, 8 * MIB, 64 * KIB, 0x00, "D (never flushed) must be lost");

    // The node comes back from it: metadata consistent, a crashed Primary's AL extents
    // (0 and 2: D's transaction was durable) out of sync, the durable data served.
    a.ok(&["up", "r0"]);
    let st = a.status_json();
    assert_eq!(st["disk"], "UpToDate", "{st}");
    let oos = st["oos_kib"].as_u64().expect("oos_kib");
    assert!(
        oos >= 8 * 1024,
        "both hot AL extents are out of sync after the power cut (oos {oos} KiB)"
    );
    a.ok(&["primary", "r0"]);
    let mut nbd = Nbd::connect(a);
    nbd.assert_reads(0, 64 * KIB, 0xaa, "A after up");
    nbd.assert_reads(MIB, 64 * KIB, 0x11, "B's range after up");
    nbd.assert_reads(2 * MIB, 64 * KIB, 0xcc, "C after up");
    nbd.assert_reads(8 * MIB, 64 * KIB, 0x00, "D's range after up");
    nbd.write_ok(MIB, 4 * KIB, 0x12, true);
    nbd.close(a);
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
    assert_file(a, MIB, 4 * KIB, 0x12, "a write after the restart");
}

#[test]
fn a_write_error_on_a_lone_primary_detaches_and_the_client_gets_eio() {
    let c = PairConf::new("fault-eio").build();
    let a = c.a();
    lone_primary(a);
    let mut nbd = Nbd::connect(a);
    nbd.write_ok(0, 64 * KIB, 0x11, false);
    nbd.flush_ok();
    let said = fault(a, &["disk-error", "write", "--count", "1"]);
    assert!(
        said.contains("write operations fail with EIO for the next 1"),
        "{said}"
    );
    assert_eq!(
        nbd.write(MIB, 64 * KIB, 0x22, false),
        NBD_EIO,
        "no peer: the write error reaches the client"
    );
    wait_for(Duration::from_secs(10), "on-io-error detach", || {
        (a.status_json()["disk"] == "Diskless").then_some(())
    });
    assert!(
        a.log_tail()
            .contains("fault hook: failing a write with EIO"),
        "the log names the injected error:\n{}",
        a.log_tail()
    );
    nbd.close(a);
}

#[test]
fn a_write_error_under_a_connected_primary_is_served_by_the_peer() {
    let c = PairConf::new("fault-peer").build();
    up_pair(&c);
    let (a, b) = (c.a(), c.b());
    let mut nbd = Nbd::connect(a);
    nbd.write_ok(0, 64 * KIB, 0x11, false);
    nbd.flush_ok();
    fault(a, &["disk-error", "write", "--count", "1"]);
    nbd.write_ok(MIB, 64 * KIB, 0x22, false);
    nbd.flush_ok();
    // The failed disk goes Diskless once its last metadata write is done (Failed meanwhile).
    wait_for(Duration::from_secs(10), "on-io-error detach", || {
        (a.status_json()["disk"] == "Diskless").then_some(())
    });
    let s = a.status_json();
    assert_eq!(s["role"], "Primary", "{s}");
    assert_eq!(s["peer_disk"], "UpToDate", "{s}");
    assert_file(b, MIB, 64 * KIB, 0x22, "the write is on node-b");
    nbd.assert_reads(MIB, 64 * KIB, 0x22, "read through the peer");
    nbd.assert_reads(0, 64 * KIB, 0x11, "older data through the peer");
    nbd.close(a);
}

#[test]
fn ranged_counted_read_errors_hit_only_their_range_only_that_often() {
    let c = PairConf::new("fault-range")
        .disk("on-io-error pass_on")
        .build();
    let a = c.a();
    lone_primary(a);
    let mut nbd = Nbd::connect(a);
    nbd.write_ok(0, 2 * MIB, 0x33, false);
    nbd.flush_ok();
    // Malformed rules are refused before they reach the daemon.
    let (code, err) = a.fails(&["fault", "r0", "disk-error", "read", "--count", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("--count"), "{err}");
    fault(
        a,
        &[
            "disk-error",
            "read",
            "--offset",
            &MIB.to_string(),
            "--length",
            "4096",
            "--count",
            "2",
        ],
    );
    nbd.assert_reads(0, 64 * KIB, 0x33, "outside the range");
    nbd.write_ok(MIB, 4 * KIB, 0x34, false);
    assert_eq!(nbd.read(MIB, 4 * KIB), Err(NBD_EIO), "inside the range");
    assert_eq!(
        nbd.read(MIB - 4 * KIB, 8 * KIB),
        Err(NBD_EIO),
        "overlapping the range"
    );
    nbd.assert_reads(MIB, 4 * KIB, 0x34, "the count is spent");
    assert_eq!(
        a.status_json()["disk"],
        "UpToDate",
        "pass_on keeps the disk"
    );
    // Until `clear`: every flush fails, then none.
    fault(a, &["disk-error", "flush"]);
    for _ in 0..2 {
        assert_eq!(
            nbd.0.request(CMD_FLUSH, 0, 0, 0, &[]).expect("NBD flush").0,
            NBD_EIO
        );
    }
    fault(a, &["clear"]);
    nbd.flush_ok();
    nbd.close(a);
}

#[test]
fn cache_off_clear_and_a_normal_down_write_the_cache_out() {
    let c = PairConf::new("fault-writeout").build();
    let a = c.a();
    lone_primary(a);
    let mut nbd = Nbd::connect(a);
    fault(a, &["volatile-cache", "on"]);
    nbd.write_ok(0, 64 * KIB, 0x44, false);
    assert_file(a, 0, 64 * KIB, 0x00, "cached only");
    fault(a, &["volatile-cache", "off"]);
    assert_file(
        a,
        0,
        64 * KIB,
        0x44,
        "volatile-cache off writes the cache out",
    );

    fault(a, &["volatile-cache", "on"]);
    nbd.write_ok(64 * KIB, 64 * KIB, 0x55, false);
    assert_file(a, 64 * KIB, 64 * KIB, 0x00, "cached only");
    fault(a, &["clear"]);
    assert_file(a, 64 * KIB, 64 * KIB, 0x55, "clear writes the cache out");

    fault(a, &["volatile-cache", "on"]);
    nbd.write_ok(128 * KIB, 64 * KIB, 0x66, false);
    nbd.close(a);
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
    assert_file(
        a,
        128 * KIB,
        64 * KIB,
        0x66,
        "a normal down writes the cache out",
    );
    a.ok(&["up", "r0"]);
    assert_eq!(a.status_json()["disk"], "UpToDate");
    a.ok(&["down", "r0"]);
}
