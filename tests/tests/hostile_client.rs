//! Goal: NBD clients are untrusted. A malformed request, a client that never reads its
//! replies, a crowd of idle connections or a client killed in the middle of a request costs at
//! most that client's own connection: the daemon keeps serving everyone else at a normal pace,
//! its memory stays bounded, and no byte reaches the disk that a complete, valid request did
//! not carry.
//!
//! Method: raw NBD sockets (tests/src/nbdraw.rs) against a lone Primary, the backing file's
//! data area checksummed before and after, the daemon's RSS and descriptors read from /proc.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use rep_tests::nbdraw::{RawClient, CMD_READ, CMD_WRITE, REQUEST_MAGIC};
use rep_tests::pair;
use rep_tests::{require_tool, run, wait_for, Cluster, ClusterOpts, Node};

/// node-a alone (its peer never comes), Primary, with 0x77 in the first 64 KiB.
fn lone_primary(test: &str) -> Cluster {
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 96,
            on_shm: true,
            ..Default::default()
        },
    );
    let a = c.a();
    pair::lone_primary(a);
    let mut w = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    let (err, _) = w
        .request(CMD_WRITE, 0, 0, 65536, &[0x77; 65536])
        .expect("write");
    assert_eq!(err, 0);
    c
}

/// FNV-1a over the data area of the backing file (the metadata at its end may change).
fn checksum(n: &Node) -> u64 {
    let usable = n.status_json()["size_bytes"].as_u64().expect("size") as usize;
    let mut v = vec![0u8; usable];
    std::fs::File::open(&n.disk)
        .and_then(|mut f| f.read_exact(&mut v))
        .expect("read backing file");
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn header(magic: u32, flags: u16, cmd: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(28);
    r.extend_from_slice(&magic.to_be_bytes());
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&cmd.to_be_bytes());
    r.extend_from_slice(&cookie.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r.extend_from_slice(&len.to_be_bytes());
    r
}

fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn nofile_limit(pid: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

/// A good client's round trip (write, read back); returns how long it took.
fn probe(n: &Node, block: u64, fill: u8) -> Duration {
    let t = Instant::now();
    let mut c = RawClient::connect(&n.nbd_socket(), "r0").expect("a good client connects");
    let (err, _) = c
        .request(CMD_WRITE, 0, block * 4096, 4096, &[fill; 4096])
        .expect("write");
    assert_eq!(err, 0);
    let (err, data) = c
        .request(CMD_READ, 0, block * 4096, 4096, &[])
        .expect("read");
    assert_eq!((err, data), (0, vec![fill; 4096]));
    t.elapsed()
}

fn daemon_log(n: &Node) -> String {
    std::fs::read_to_string(n.run_dir.join(format!("{}.log", n.resource))).unwrap_or_default()
}

#[test]
fn malformed_requests_drop_or_fail_only_their_own_connection_and_write_nothing() {
    let c = lone_primary("hc-malformed");
    let a = c.a();
    let pid = a.pid().expect("pid");
    let mut good = RawClient::connect(&a.nbd_socket(), "r0").expect("good client");
    let size = good.size;
    // A block this test writes nothing to: its checksum must survive every attack.
    let before = checksum(a);
    let reply = |cl: &mut RawClient| cl.read_reply().expect("a reply");

    // Bad magic: framing is lost, the server hangs up.
    let mut cl = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    cl.s.write_all(&header(0x2560_9514, 0, CMD_WRITE, 1, 0, 4096))
        .expect("send");
    let _ = cl.s.write_all(&[0xee; 4096]);
    assert!(cl.is_closed(), "bad magic must close the connection");

    let mut cl = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    // A read longer than the 32 MiB maximum payload: EINVAL, connection usable.
    cl.s.write_all(&header(REQUEST_MAGIC, 0, CMD_READ, 2, 0, 64 << 20))
        .expect("send");
    assert_eq!(reply(&mut cl), (22, 2));
    // A write longer than the maximum payload whose data does follow: EINVAL after draining.
    cl.s.write_all(&header(REQUEST_MAGIC, 0, CMD_WRITE, 3, 0, 33 << 20))
        .expect("send");
    cl.s.write_all(&vec![0xee; 33 << 20]).expect("payload");
    assert_eq!(reply(&mut cl), (22, 3));
    // Unknown command, unknown flags.
    cl.s.write_all(&header(REQUEST_MAGIC, 0, 77, 4, 0, 0))
        .expect("send");
    assert_eq!(reply(&mut cl), (22, 4));
    cl.s.write_all(&header(REQUEST_MAGIC, 0x80, CMD_READ, 5, 0, 4096))
        .expect("send");
    assert_eq!(reply(&mut cl), (22, 5));
    // Reads beyond the end, and one whose offset + length overflows 64 bits.
    cl.s.write_all(&header(REQUEST_MAGIC, 0, CMD_READ, 6, size, 4096))
        .expect("send");
    assert_eq!(reply(&mut cl), (22, 6));
    cl.s.write_all(&header(REQUEST_MAGIC, 0, CMD_READ, 7, u64::MAX - 100, 4096))
        .expect("send");
    assert_eq!(reply(&mut cl), (22, 7));
    // A write straddling the end: ENOSPC, nothing of it written, framing kept.
    cl.s.write_all(&header(REQUEST_MAGIC, 0, CMD_WRITE, 8, size - 2048, 4096))
        .expect("send");
    cl.s.write_all(&[0xee; 4096]).expect("payload");
    assert_eq!(reply(&mut cl), (28, 8));
    let (err, data) = cl
        .request(CMD_READ, 0, 0, 65536, &[])
        .expect("the same connection still reads");
    assert_eq!((err, data), (0, vec![0x77; 65536]));

    // A write length too large even to skip: the server hangs up rather than read 4 GiB.
    let mut cl = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    cl.s.write_all(&header(REQUEST_MAGIC, 0, CMD_WRITE, 9, 0, 0xffff_f000))
        .expect("send");
    let _ = cl.s.write_all(&[0xee; 65536]);
    assert!(
        cl.is_closed(),
        "an unskippable write length must end the connection"
    );

    // A truncated header, then silence; and a truncated write payload, then close.
    let mut cl = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    cl.s.write_all(&header(REQUEST_MAGIC, 0, CMD_READ, 10, 0, 4096)[..13])
        .expect("send");
    let mut cl2 = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    cl2.s
        .write_all(&header(REQUEST_MAGIC, 0, CMD_WRITE, 11, 8192, 65536))
        .expect("send");
    cl2.s.write_all(&[0xee; 1000]).expect("partial payload");
    drop(cl2);

    // The well-behaved client was never disturbed.
    let (err, data) = good
        .request(CMD_READ, 0, 0, 65536, &[])
        .expect("good client still served");
    assert_eq!((err, data), (0, vec![0x77; 65536]));
    drop(cl);
    assert_eq!(checksum(a), before, "a malformed request changed the disk");
    assert_eq!(a.pid(), Some(pid), "the daemon must survive");
    assert!(!daemon_log(a).contains("panicked"), "{}", a.log_tail());
    probe(a, 100, 0x42);
}

#[test]
fn a_client_that_never_reads_its_replies_is_held_back_without_hurting_others() {
    let c = lone_primary("hc-noread");
    let a = c.a();
    let pid = a.pid().expect("pid");
    let rss0 = proc_status_kib(pid, "VmRSS:");

    // Pipeline 32 MiB reads and never read a byte back. Without back-pressure every reply
    // would sit in the daemon's memory (hundreds of GiB asked for).
    let mut hog = RawClient::connect(&a.nbd_socket(), "r0").expect("hog");
    hog.s
        .set_write_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let batch: Vec<u8> = (0..64)
        .flat_map(|i| header(REQUEST_MAGIC, 0, CMD_READ, i, 0, 32 << 20))
        .collect();
    let mut sent = 0u64;
    let limit_kib = 512 * 1024;
    let mut peak = rss0;
    let t0 = Instant::now();
    while sent < 64 * 400 && t0.elapsed() < Duration::from_secs(20) {
        if hog.s.write_all(&batch).is_err() {
            break; // the daemon stopped reading: back-pressure
        }
        sent += 64;
        peak = peak.max(proc_status_kib(pid, "VmRSS:"));
        assert!(
            peak - rss0 < limit_kib,
            "daemon RSS grew by {} MiB",
            (peak - rss0) / 1024
        );
    }
    // Let the daemon work through whatever it accepted, watching its memory.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        peak = peak.max(proc_status_kib(pid, "VmRSS:"));
        assert!(
            peak - rss0 < limit_kib,
            "daemon RSS grew by {} MiB",
            (peak - rss0) / 1024
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "non-reading client: {sent} requests of 32 MiB sent before back-pressure, daemon RSS {} -> peak {} MiB",
        rss0 / 1024,
        peak / 1024
    );
    assert!(
        sent < 64 * 400,
        "the daemon kept accepting requests whose replies nobody reads"
    );

    // Others are served at a normal pace meanwhile.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        slowest = slowest.max(probe(a, 200 + i, i as u8 + 1));
    }
    println!(
        "non-reading client: slowest round trip of another client {} ms",
        slowest.as_millis()
    );
    assert!(
        slowest < Duration::from_secs(2),
        "another client waited {slowest:?}"
    );

    drop(hog);
    wait_for(
        Duration::from_secs(20),
        "the hog's connection to close",
        || (a.status_json()["open_clients"] == 0).then_some(()),
    );
    assert_eq!(a.pid(), Some(pid));
    probe(a, 300, 0x55);
}

/// Raise this process's soft descriptor limit (the test itself holds the connections).
fn raise_own_nofile(want: u64) {
    let me = std::process::id().to_string();
    let _ = run(Command::new("prlimit")
        .args(["--pid", &me])
        .arg(format!("--nofile={want}:")));
    println!("fd limits: test {}", nofile_limit(&me));
}

#[test]
fn a_thousand_idle_connections_do_not_stop_other_clients() {
    require_tool("prlimit", "util-linux");
    raise_own_nofile(4096);
    let c = lone_primary("hc-idle");
    let a = c.a();
    let pid = a.pid().expect("pid");
    let fds0 = open_fds(pid);
    println!("fd limits: repd {}", nofile_limit(&pid.to_string()));

    // 500 connections that never say a word (stuck before the handshake) and 500 that reach
    // transmission and then idle.
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(UnixStream::connect(a.nbd_socket()).expect("connect"));
    }
    let t0 = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(RawClient::connect(&a.nbd_socket(), "r0").expect("negotiate"));
    }
    println!(
        "idle connections: 500 negotiated in {} ms while 500 others sat silent",
        t0.elapsed().as_millis()
    );
    // (`fds0` may have counted a connection of the setup that has closed since.)
    wait_for(
        Duration::from_secs(5),
        "the daemon to hold 1000 connections",
        || (open_fds(pid) + 5 >= fds0 + 1000).then_some(()),
    );
    let slowest = (0..20)
        .map(|i| probe(a, 400 + i, 0x33))
        .max()
        .unwrap_or_default();
    println!(
        "idle connections: daemon holds {} fds, a new client's slowest round trip {} ms",
        open_fds(pid),
        slowest.as_millis()
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a new client waited {slowest:?}"
    );
    assert_eq!(a.status_json()["open_clients"].as_u64(), Some(500));

    // The silent ones are dropped once the handshake limit passes; the idle ones stay.
    let limit = rep_nbd::server::HANDSHAKE_TIMEOUT;
    wait_for(
        limit + Duration::from_secs(10),
        "silent connections to be dropped",
        || {
            silent
                .iter_mut()
                .all(|s| {
                    s.set_read_timeout(Some(Duration::from_millis(1)))
                        .expect("timeout");
                    let mut greeting = [0u8; 64];
                    // Past the 18-byte greeting, the next read is EOF once the server hung up.
                    loop {
                        match s.read(&mut greeting) {
                            Ok(0) => return true,
                            Ok(_) => continue,
                            Err(_) => return false,
                        }
                    }
                })
                .then_some(())
        },
    );
    println!(
        "idle connections: the 500 silent ones were closed by the server within {} s",
        t0.elapsed().as_secs()
    );
    let mut c0 = idle.pop().expect("one");
    let (err, data) = c0
        .request(CMD_READ, 0, 0, 4096, &[])
        .expect("idle client reads");
    assert_eq!((err, data), (0, vec![0x77; 4096]));
    drop((silent, idle, c0));
    wait_for(
        Duration::from_secs(20),
        "all idle clients to be gone",
        || (a.status_json()["open_clients"] == 0).then_some(()),
    );
    assert_eq!(a.pid(), Some(pid));
}

#[test]
fn at_the_descriptor_limit_new_clients_wait_and_the_daemon_survives() {
    require_tool("prlimit", "util-linux");
    raise_own_nofile(4096);
    let c = lone_primary("hc-fdlimit");
    let a = c.a();
    let pid = a.pid().expect("pid");
    // Both parities of free descriptors: a daemon that spends two descriptors per client (a
    // `dup` for shutdown) fails on the second one with an odd count left and drops a client it
    // had already accepted; with an even count its accept fails first and the bug hides.
    let base = open_fds(pid) as u64;
    for headroom in [40, 41] {
        exhaust_descriptors(a, pid, base + headroom);
    }
    let out = run(Command::new("prlimit")
        .args(["--pid", &pid.to_string()])
        .arg("--nofile=4096:"));
    assert!(out.status.success(), "prlimit: {out:?}");
    probe(a, 500, 0x66);
}

/// Caps the daemon at `cap` descriptors, opens more idle clients than fit, and checks that no
/// client is dropped: those accepted are greeted, the rest wait in the listen backlog and get in
/// once descriptors are free.
fn exhaust_descriptors(a: &Node, pid: i32, cap: u64) {
    let out = run(Command::new("prlimit")
        .args(["--pid", &pid.to_string()])
        .arg(format!("--nofile={cap}:")));
    assert!(out.status.success(), "prlimit: {out:?}");
    let marker = daemon_log(a).matches("Too many open files").count();

    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(UnixStream::connect(a.nbd_socket()).expect("connect (listen backlog)"));
    }
    wait_for(
        Duration::from_secs(10),
        "the daemon to run out of descriptors",
        || (daemon_log(a).matches("Too many open files").count() > marker).then_some(()),
    );
    // A newcomer is queued in the listen backlog: no greeting while the daemon is out of fds.
    let mut late = UnixStream::connect(a.nbd_socket()).expect("connect");
    late.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut g = [0u8; 18];
    let starved = match late.read(&mut g) {
        Ok(0) => panic!("fd limit {cap}: the daemon accepted a client and closed it at once"),
        Ok(n) => {
            late.read_exact(&mut g[n..]).expect("rest of the greeting");
            false
        }
        Err(_) => true,
    };
    println!(
        "fd limit {cap}: 60 idle connections exhaust it; a new client is {}",
        if starved {
            "held in the listen backlog"
        } else {
            "still served"
        }
    );
    // Each idle client was either greeted or is still waiting: none was closed on.
    let mut greeted = 0;
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let mut g = [0u8; 18];
        match s.read(&mut g) {
            Ok(0) => panic!("fd limit {cap}: idle client {i} was accepted and then closed"),
            Ok(_) => greeted += 1,
            Err(_) => {}
        }
    }
    println!("fd limit {cap}: {greeted} of 60 idle clients greeted, the rest wait");
    // Freeing descriptors (idle clients leaving) lets the newcomer in; nothing crashed.
    drop(idle);
    if starved {
        late.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        late.read_exact(&mut g)
            .expect("the greeting arrives once descriptors are free");
    }
    assert_eq!(&g[..8], b"NBDMAGIC");
    drop(late);
    assert_eq!(
        a.pid(),
        Some(pid),
        "the daemon must survive descriptor exhaustion"
    );
    wait_for(
        Duration::from_secs(20),
        "the idle clients to be gone",
        || (a.status_json()["open_clients"] == 0).then_some(()),
    );
}

#[test]
fn a_client_killed_mid_request_leaves_the_write_whole_or_absent() {
    let c = lone_primary("hc-killed");
    let a = c.a();
    let pid = a.pid().expect("pid");
    let mib = 1u32 << 20;
    let region = 8 * u64::from(mib);
    let read = |off: u64| {
        let mut r = RawClient::connect(&a.nbd_socket(), "r0").expect("reader");
        let (err, data) = r.request(CMD_READ, 0, off, mib, &[]).expect("read");
        assert_eq!(err, 0);
        data
    };
    let gone = || {
        wait_for(
            Duration::from_secs(20),
            "the killed client to be gone",
            || (a.status_json()["open_clients"] == 0).then_some(()),
        );
    };

    // Killed while sending the payload: nothing of the write may land.
    let mut k = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    k.s.write_all(&header(REQUEST_MAGIC, 0, CMD_WRITE, 1, region, mib))
        .expect("header");
    k.s.write_all(&vec![0xab; (mib / 2) as usize])
        .expect("half");
    drop(k);
    gone();
    assert_eq!(
        read(region),
        vec![0u8; mib as usize],
        "a half-sent write landed"
    );

    // Killed right after sending it whole, without waiting for the reply: all of it lands
    // (or, were the daemon to drop it, none of it): never a torn mixture.
    let mut k = RawClient::connect(&a.nbd_socket(), "r0").expect("client");
    let mut req = header(REQUEST_MAGIC, 0, CMD_WRITE, 2, region, mib);
    req.extend_from_slice(&vec![0xcd; mib as usize]);
    k.s.write_all(&req).expect("request");
    drop(k);
    gone();
    let got = read(region);
    assert!(
        got == vec![0xcd; mib as usize] || got == vec![0u8; mib as usize],
        "a write from a killed client is torn"
    );
    println!(
        "killed client: half-sent write absent, whole write {}",
        if got[0] == 0xcd { "landed" } else { "absent" }
    );

    // A real process killed with SIGKILL in the middle of a stream of writes.
    require_tool("qemu-io", "qemu-utils");
    let mut child = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0xef 16M 32M"])
        .arg(a.nbd_uri())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-io");
    wait_for(Duration::from_secs(10), "qemu-io to connect", || {
        (a.status_json()["open_clients"] == 1).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    gone();
    assert_eq!(a.pid(), Some(pid), "the daemon must survive");
    probe(a, 600, 0x12);
}
