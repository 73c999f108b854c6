//! Goal: a node that comes back resyncs only what changed (DRBD's reason to exist in the seeds'
//! setups). Disconnect, dirty 1% of a 1 GiB device at random 4 KiB offsets, reconnect: the bytes
//! resynced are within 5% of the bytes dirtied and both disks end up identical. Then
//! `invalidate` on the Secondary forces a full sync from the Primary.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use rep_tests::{require_tool, run_ok, wait_for, Cluster, ClusterOpts, Node};

fn status(n: &Node) -> serde_json::Value {
    n.status_json()
}

fn wait_uptodate(n: &Node, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{} Connected UpToDate/UpToDate", n.name),
        || {
            let s = status(n);
            (s["cstate"] == "Connected" && s["disk"] == "UpToDate" && s["peer_disk"] == "UpToDate")
                .then_some(())
        },
    );
}

fn nr_kib(n: &Node) -> u64 {
    status(n)["counters"]["nr_kib"]
        .as_u64()
        .expect("nr_kib counter")
}

fn assert_identical(c: &Cluster, usable: u64) {
    let read = |n: &Node| {
        let mut v = vec![0u8; usable as usize];
        std::fs::File::open(&n.disk)
            .and_then(|mut f| f.read_exact(&mut v))
            .expect("read backing file");
        v
    };
    let (a, b) = (read(c.a()), read(c.b()));
    if let Some(pos) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("backing devices differ at byte {pos}");
    }
}

#[test]
fn one_percent_dirty_resyncs_only_the_dirty_blocks_then_invalidate_resyncs_everything() {
    require_tool("qemu-io", "qemu-utils");
    let c = Cluster::new(
        "resync-1pct",
        ClusterOpts {
            disk_mib: 1024 + 64,
            on_shm: true,
            extra: "  net {\n    connect-int 1;\n    ping-int 1;\n  }\n  disk {\n    c-plan-ahead 0;\n    resync-rate 2G;\n  }\n".into(),
        },
    );
    let (a, b) = (c.a(), c.b());
    for n in [a, b] {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    wait_for(Duration::from_secs(20), "connection", || {
        (status(a)["cstate"] == "Connected").then_some(())
    });
    // Two fresh, identical (all-zero) disks: skip the initial sync.
    a.ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    wait_uptodate(b, 10);
    a.ok(&["primary", "r0"]);
    let usable = status(a)["size_bytes"].as_u64().expect("size");

    b.ok(&["disconnect", "r0"]);
    wait_for(Duration::from_secs(10), "node-a to lose its peer", || {
        (status(a)["cstate"] == "WFConnection").then_some(())
    });
    // 1% of the 4 KiB blocks, distinct, at seeded random offsets.
    let blocks = usable / 4096;
    let want = (blocks / 100) as usize;
    let mut chosen = std::collections::BTreeSet::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while chosen.len() < want {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chosen.insert(x % blocks);
    }
    let script = c.dir.join("dirty.qemu-io");
    let cmds: String = chosen
        .iter()
        .map(|blk| format!("write -P 0xd1 {} 4k\n", blk * 4096))
        .collect();
    std::fs::write(&script, cmds).expect("write script");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "qemu-io -f raw '{}' < {} > /dev/null",
        a.nbd_uri(),
        script.display()
    )));
    let dirtied = want as u64 * 4096;
    assert_eq!(
        status(a)["oos_kib"].as_u64(),
        Some(dirtied / 1024),
        "every dirtied block is in the bitmap"
    );

    let before = nr_kib(b);
    let t0 = Instant::now();
    b.ok(&["connect", "r0"]);
    wait_uptodate(b, 120);
    let took = t0.elapsed();
    let resynced = (nr_kib(b) - before) * 1024;
    eprintln!(
        "incremental resync: dirtied {dirtied} bytes ({want} blocks), resynced {resynced} bytes ({:.3}x) in {:.2} s",
        resynced as f64 / dirtied as f64,
        took.as_secs_f64()
    );
    assert!(
        resynced >= dirtied,
        "resynced {resynced} < dirtied {dirtied}: blocks were missed"
    );
    assert!(
        resynced as f64 <= 1.05 * dirtied as f64,
        "resynced {resynced} bytes for {dirtied} dirtied"
    );

    // invalidate on the Secondary: a full sync from the Primary.
    let before = nr_kib(b);
    b.ok(&["invalidate", "r0"]);
    wait_for(Duration::from_secs(20), "the full sync to start", || {
        let s = status(b);
        (s["cstate"] == "SyncTarget" || (s["disk"] == "UpToDate" && nr_kib(b) > before))
            .then_some(())
    });
    wait_uptodate(b, 300);
    let full = (nr_kib(b) - before) * 1024;
    assert!(
        full >= usable - 4096,
        "invalidate resynced only {full} of {usable} bytes"
    );

    a.ok(&["secondary", "r0"]);
    for n in [a, b] {
        n.ok(&["down", "r0"]);
    }
    assert_identical(&c, usable);
}
