//! Goal: a slow metadata device stalls only what waits for metadata. While one activity-log
//! transaction takes 1.5 s (`repadm fault r0 meta-delay 1500`), writes to hot extents complete
//! in milliseconds, the control socket answers, and the link (a ping every second, 500 ms ping
//! timeout: a stalled node would lose it) stays Connected on both sides; the write that needed
//! the transaction completes after it, and reaches the peer.
//! Method: two real repd processes, node-a Primary; raw NBD clients (one for the cold write on
//! a thread of its own, one for the hot writes), status over the control socket, the peer's
//! backing file read directly.

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use rep_tests::nbdraw::{RawClient, CMD_WRITE};
use rep_tests::pair::up_pair;
use rep_tests::{wait_for, Cluster, ClusterOpts, Node};

const MIB: u64 = 1 << 20;
const DELAY: Duration = Duration::from_millis(1500);
/// A hot write or a status query slower than this waited for the metadata write.
const STALL: Duration = Duration::from_millis(500);
/// Bounds of the hot-write loop (it runs while the cold write waits).
const HOT_WRITES_MAX: u64 = 5000;
const HOT_LOOP_MAX: Duration = Duration::from_secs(15);

fn counter(n: &Node, name: &str) -> u64 {
    n.status_json()["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name}"))
}

fn write(c: &mut RawClient, off: u64, byte: u8) -> u32 {
    c.request(CMD_WRITE, 0, off, 4096, &[byte; 4096])
        .expect("NBD write")
        .0
}

#[test]
fn a_slow_metadata_write_stalls_neither_hot_writes_nor_pings_nor_the_control_socket() {
    let c = Cluster::new(
        "slow-meta",
        ClusterOpts {
            extra: "  net {\n    connect-int 1;\n    ping-int 1;\n    ping-timeout 5;\n  }\n"
                .into(),
            ..Default::default()
        },
    );
    let (a, b) = (c.a(), c.b());
    up_pair(&c);

    // Extent 0 becomes hot (its AL transaction at normal speed).
    let mut hot = RawClient::connect(&a.nbd_socket(), "r0").expect("NBD connect");
    assert_eq!(write(&mut hot, 0, 1), 0);
    let al_before = counter(a, "al_writes");
    a.ok(&["fault", "r0", "meta-delay", &DELAY.as_millis().to_string()]);

    // A write to a cold extent (32 MiB: extent 8) needs a slow AL transaction.
    let cold_off = 32 * MIB;
    let sock = a.nbd_socket();
    let cold = std::thread::spawn(move || {
        let mut cl = RawClient::connect(&sock, "r0").expect("NBD connect");
        let t = Instant::now();
        let err = write(&mut cl, cold_off, 0xc0);
        (err, t.elapsed())
    });
    wait_for(
        Duration::from_secs(10),
        "the cold write's activity-log transaction to be under way",
        || (counter(a, "al_writes") > al_before).then_some(()),
    );

    // While it is being written: hot writes, status queries, both links up.
    let (mut n, mut hot_max, mut status_max) = (0u64, Duration::ZERO, Duration::ZERO);
    let t_loop = Instant::now();
    while !cold.is_finished() && n < HOT_WRITES_MAX && t_loop.elapsed() < HOT_LOOP_MAX {
        let t = Instant::now();
        assert_eq!(write(&mut hot, (n % 512) * 4096, (n % 250) as u8 + 2), 0);
        hot_max = hot_max.max(t.elapsed());
        let t = Instant::now();
        for node in [a, b] {
            assert_eq!(
                node.status_json()["cstate"],
                "Connected",
                "{} lost the link while node-a wrote metadata",
                node.name
            );
        }
        status_max = status_max.max(t.elapsed() / 2);
        n += 1;
    }
    let (cold_err, cold_took) = cold.join().expect("cold writer");
    println!(
        "slow metadata ({} ms per write): cold write {} ms; meanwhile {n} hot writes, slowest {:.1} ms; slowest status query {:.1} ms",
        DELAY.as_millis(),
        cold_took.as_millis(),
        hot_max.as_secs_f64() * 1e3,
        status_max.as_secs_f64() * 1e3
    );
    assert_eq!(cold_err, 0, "the cold write failed");
    assert!(
        cold_took >= DELAY,
        "the cold write took {cold_took:?}: the metadata delay did not apply"
    );
    assert!(
        n >= 5,
        "only {n} hot writes ran while the metadata was written"
    );
    assert!(
        hot_max < STALL,
        "a hot write took {hot_max:?} while the metadata was written"
    );
    assert!(
        status_max < STALL,
        "a status query took {status_max:?} while the metadata was written"
    );

    a.ok(&["fault", "r0", "clear"]);
    drop(hot);
    wait_for(
        Duration::from_secs(10),
        "the NBD clients to be gone",
        || (a.status_json()["open_clients"] == 0).then_some(()),
    );
    a.ok(&["secondary", "r0"]);
    for n in [a, b] {
        n.ok(&["down", "r0"]);
    }
    let mut got = vec![0u8; 4096];
    let mut f = std::fs::File::open(&b.disk).expect("node-b's backing file");
    f.seek(SeekFrom::Start(cold_off)).expect("seek");
    f.read_exact(&mut got).expect("read");
    assert_eq!(
        got,
        vec![0xc0; 4096],
        "the cold write did not reach the peer"
    );
}
