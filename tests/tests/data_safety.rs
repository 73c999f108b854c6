//! Goal: no acknowledged write is lost, and no stale disk is judged in sync, in the corners where
//! DRBD 8.4 is careful: NBD writes and reads larger than one peer packet (up to the advertised
//! 32 MiB) replicate without dropping the link; a Diskless node promoted to Primary gets its
//! re-attached disk resynced; a Secondary holding the only copy keeps its out-of-sync bits across
//! a crash (DRBD's AL on the Secondary while the peer is Diskless); `invalidate` survives a crash;
//! a write the peer NegAcks under a Diskless Primary fails with EIO instead of succeeding.
//!
//! Each test is the user's sequence of `repadm` commands on a pair of real `repd` processes
//! (node-a on 127.0.0.1, node-b on 127.0.0.2) with `qemu-io` as the client. Data is checked in
//! the backing files (the data area precedes the internal metadata) and through NBD.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rep_tests::pair::{skip_initial_sync, up_fresh, PairConf};
use rep_tests::{
    file_bytes, qemu_io, qemu_io_ok, require_tool, run_ok, wait_for, Cluster, FailingDisk, Node,
};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// A pair with fast reconnects and a quick fixed-rate resync; backing files on /dev/shm.
fn cluster(test: &str, disk_mib: u64) -> Cluster {
    PairConf::new(test).mib(disk_mib).on_shm().build()
}

fn wait_role(n: &Node, role: &str) {
    wait_for(
        Duration::from_secs(10),
        &format!("{} to be {role}", n.name),
        || (n.status_json()["role"] == role).then_some(()),
    );
}

/// Both nodes Secondary, Connected, UpToDate/UpToDate, identical (zeroed) disks: create-md and up
/// on both, the initial sync skipped with `new-current-uuid --clear-bitmap`.
fn synced_pair(c: &Cluster) {
    up_fresh(c, 20);
    skip_initial_sync(c, 10);
}

/// qemu-io commands filling [offset, offset+len) with `byte` in requests of 256 KiB, well
/// within one peer packet: the tests other than the large-request one must not depend on it.
fn small_writes(byte: u8, offset: u64, len: u64) -> Vec<String> {
    (offset..offset + len)
        .step_by(256 << 10)
        .map(|o| {
            format!(
                "write -P 0x{byte:02x} {o} {}",
                (offset + len - o).min(256 * KIB)
            )
        })
        .collect()
}

/// Poll `problem` (None = all good) until it clears or `secs` pass; the last problem if it never
/// cleared. For data checks once the states are settled: a disk may show UpToDate for a moment
/// after `attach` before its resync begins, so one look is not enough.
fn eventually(secs: u64, mut problem: impl FnMut() -> Option<String>) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = problem();
        if p.is_none() || Instant::now() >= deadline {
            return p;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// None if `path` holds `byte` over [offset, offset+len); otherwise where and how much differs.
fn pattern_mismatch(path: &Path, offset: u64, len: u64, byte: u8) -> Option<String> {
    let data = file_bytes(path, offset, len);
    let bad = data.iter().filter(|&&x| x != byte).count();
    let first = data.iter().position(|&x| x != byte)?;
    Some(format!(
        "{} at [{offset}, +{len}) should be 0x{byte:02x}: {bad} bytes differ, first at byte {} (holds 0x{:02x})",
        path.display(),
        offset + first as u64,
        data[first]
    ))
}

/// Where two files differ over [offset, offset+len), if they do.
fn files_differ(x: &Path, y: &Path, offset: u64, len: u64) -> Option<String> {
    let (a, b) = (file_bytes(x, offset, len), file_bytes(y, offset, len));
    let first = a.iter().zip(&b).position(|(p, q)| p != q)?;
    let blocks = a
        .chunks(4096)
        .zip(b.chunks(4096))
        .filter(|(p, q)| p != q)
        .count();
    Some(format!(
        "{} and {} differ in {blocks} blocks of 4 KiB in [{offset}, +{len}), first at byte {}",
        x.display(),
        y.display(),
        offset + first as u64
    ))
}

/// The daemon's log without the terminal colour codes tracing puts there.
fn log(n: &Node) -> String {
    let raw =
        std::fs::read_to_string(n.run_dir.join(format!("{}.log", n.resource))).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last lines of both daemons' logs, for failure messages.
fn recent_logs(c: &Cluster) -> String {
    c.nodes
        .iter()
        .map(|n| {
            let text = log(n);
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "{} log:\n{}",
                n.name,
                lines[lines.len().saturating_sub(15)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Log lines of `n` matching any of `needles`.
fn log_lines(n: &Node, needles: &[&str]) -> Vec<String> {
    log(n)
        .lines()
        .filter(|l| needles.iter().any(|k| l.contains(k)))
        .map(str::to_owned)
        .collect()
}

/// State changes away from an established link, as the outside replication check greps them
/// (`conn( (Connected|SyncSource|SyncTarget|WFBitMap[ST]) -> `).
fn link_drops(n: &Node) -> Vec<String> {
    log_lines(
        n,
        &[
            "conn( Connected -> ",
            "conn( SyncSource -> ",
            "conn( SyncTarget -> ",
            "conn( WFBitMapS -> ",
            "conn( WFBitMapT -> ",
        ],
    )
}

/// The handshake's sync decision as logged (e.g. `NoSync by rule 40`), for failure messages.
fn sync_decisions(n: &Node) -> String {
    log_lines(n, &["by rule", "Resync done", "resync"]).join("\n")
}

/// Violations collected through a test so one failure names every broken property.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn some(&mut self, problem: Option<String>) {
        self.0.extend(problem);
    }

    fn assert_none(self, context: impl FnOnce() -> String) {
        assert!(
            self.0.is_empty(),
            "{} violation(s):\n- {}\n{}",
            self.0.len(),
            self.0.join("\n- "),
            context()
        );
    }
}

fn usable_bytes(n: &Node) -> u64 {
    n.status_json()["size_bytes"].as_u64().expect("size_bytes")
}

#[test]
fn writes_and_reads_larger_than_one_mib_replicate_without_dropping_the_link() {
    require_tool("qemu-io", "qemu-utils");
    let c = cluster("ds-bigio", 96);
    let (a, b) = (c.a(), c.b());
    synced_pair(&c);
    a.ok(&["primary", "r0"]);
    assert!(usable_bytes(a) >= 72 * MIB, "room for the writes below");

    // (pattern, offset, length): just over one peer packet, unaligned multi-MiB, 16 MiB, the
    // NBD maximum of 32 MiB, and small writes around them.
    let writes: [(u8, u64, u64); 7] = [
        (0x11, 0, MIB + 4 * KIB),
        (0x5a, 3 * MIB, 8 * MIB),
        (0x3c, 12 * MIB - 4 * KIB, 3 * MIB),
        (0x77, 16 * MIB, 16 * MIB),
        (0xa5, 32 * MIB, 32 * MIB),
        (0x01, 64 * MIB, 4 * KIB),
        (0x02, 68 * MIB + 512, 64 * KIB),
    ];
    let mut cmds: Vec<String> = writes
        .iter()
        .map(|(p, off, len)| format!("write -P 0x{p:02x} {off} {len}"))
        .collect();
    cmds.push("flush".into());
    let mut f = Findings::default();
    let (clean, text) = qemu_io(a, &cmds);
    f.check(clean, || format!("the writes on node-a: {text}"));

    for n in [a, b] {
        let drops = link_drops(n);
        f.check(drops.is_empty(), || {
            format!("{}'s link dropped:\n    {}", n.name, drops.join("\n    "))
        });
        let s = n.status_json();
        f.check(
            s["cstate"] == "Connected"
                && s["disk"] == "UpToDate"
                && s["peer_disk"] == "UpToDate"
                && s["oos_kib"] == 0,
            || {
                format!(
                    "{} is {} {}/{} oos_kib {} after the writes (want Connected UpToDate/UpToDate, 0)",
                    n.name, s["cstate"], s["disk"], s["peer_disk"], s["oos_kib"]
                )
            },
        );
    }
    for &(p, off, len) in &writes {
        f.some(pattern_mismatch(&a.disk, off, len, p));
        f.some(pattern_mismatch(&b.disk, off, len, p));
        f.some(files_differ(&a.disk, &b.disk, off, len));
    }

    // The read side: a Diskless Primary reads everything through node-b.
    let drops_before = [link_drops(a).len(), link_drops(b).len()];
    a.ok(&["detach", "r0"]);
    a.wait_state("Connected", "Diskless", "UpToDate", 10);
    let (clean, text) = qemu_io(
        a,
        &[
            format!("read -P 0x5a {} {}", 3 * MIB, 8 * MIB),
            format!("read -P 0xa5 {} {}", 32 * MIB, 32 * MIB),
            format!("read -P 0x11 0 {}", MIB + 4 * KIB),
        ],
    );
    f.check(clean, || {
        format!("8 and 32 MiB reads through node-b on Diskless node-a: {text}")
    });
    for (n, before) in [a, b].into_iter().zip(drops_before) {
        let drops = link_drops(n);
        f.check(drops.len() == before, || {
            format!(
                "{}'s link dropped during the reads:\n    {}",
                n.name,
                drops[before..].join("\n    ")
            )
        });
    }
    f.check(a.status_json()["cstate"] == "Connected", || {
        format!("node-a is {} after the reads", a.status_json()["cstate"])
    });
    f.assert_none(|| recent_logs(&c));
}

#[test]
fn a_diskless_node_that_was_primary_gets_its_reattached_disk_resynced() {
    require_tool("qemu-io", "qemu-utils");
    let c = cluster("ds-disklesspri", 64);
    let (a, b) = (c.a(), c.b());
    synced_pair(&c);
    b.ok(&["detach", "r0"]);
    b.wait_state("Connected", "Diskless", "UpToDate", 10);

    let mut f = Findings::default();
    let out = b.repadm(&["primary", "r0"]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    f.check(
        out.status.success() && !text.contains("Failure") && !text.contains("(119)"),
        || {
            format!(
                "`primary` on Diskless node-b with an UpToDate peer must succeed cleanly, got {}, output: {}",
                out.status,
                text.trim()
            )
        },
    );
    wait_role(b, "Primary");

    let (off, len) = (4 * MIB, MIB);
    let mut w = small_writes(0xb2, off, len);
    w.push("flush".into());
    qemu_io_ok(b, &w);
    // The write went to node-a's disk (the only one); node-b's own disk never saw it.
    assert_eq!(
        pattern_mismatch(&a.disk, off, len, 0xb2),
        None,
        "node-a holds the write"
    );
    b.ok(&["secondary", "r0"]);
    b.ok(&["attach", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    a.wait_state("Connected", "UpToDate", "UpToDate", 10);
    f.some(eventually(10, || pattern_mismatch(&b.disk, off, len, 0xb2)).map(|m| {
        format!("node-b's re-attached disk misses the write made while it was Diskless Primary: {m}")
    }));
    f.assert_none(|| {
        format!(
            "node-b's sync decisions:\n{}\nnode-a's:\n{}",
            sync_decisions(b),
            sync_decisions(a)
        )
    });
}

#[test]
fn a_secondary_holding_the_only_copy_keeps_its_out_of_sync_bits_across_a_crash() {
    require_tool("qemu-io", "qemu-utils");
    let c = cluster("ds-onlycopy", 64);
    let (a, b) = (c.a(), c.b());
    synced_pair(&c);
    a.ok(&["primary", "r0"]);
    a.ok(&["detach", "r0"]);
    a.wait_state("Connected", "Diskless", "UpToDate", 10);

    // Written only to node-b: its bitmap is the only record that node-a's disk misses it.
    let (off, len) = (8 * MIB, 4 * MIB);
    let mut w = small_writes(0xc3, off, len);
    w.push("flush".into());
    qemu_io_ok(a, &w);
    assert_eq!(pattern_mismatch(&b.disk, off, len, 0xc3), None);

    b.kill9();
    b.ok(&["up", "r0"]);
    b.wait_state("Connected", "UpToDate", "Diskless", 20);
    a.ok(&["secondary", "r0"]);
    a.ok(&["attach", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    b.wait_state("Connected", "UpToDate", "UpToDate", 10);
    if let Some(m) = eventually(10, || pattern_mismatch(&a.disk, off, len, 0xc3)) {
        panic!(
            "node-a was resynced without the write node-b alone held when it crashed: {m}\nnode-a's sync decisions:\n{}\nnode-b's:\n{}",
            sync_decisions(a),
            sync_decisions(b)
        );
    }
}

#[test]
fn invalidate_survives_a_crash_and_the_full_sync_repairs_the_disk() {
    require_tool("qemu-io", "qemu-utils");
    let c = cluster("ds-invalidate", 64);
    let (a, b) = (c.a(), c.b());
    synced_pair(&c);
    a.ok(&["primary", "r0"]);
    let mut w = small_writes(0x6b, 0, 16 * MIB);
    w.extend(small_writes(0x6c, 40 * MIB, 4 * MIB));
    w.push("flush".into());
    qemu_io_ok(a, &w);
    let usable = usable_bytes(a);
    b.ok(&["disconnect", "r0"]);
    wait_for(Duration::from_secs(10), "node-a to lose its peer", || {
        (a.status_json()["cstate"] == "WFConnection").then_some(())
    });
    // Junk in node-b's data area behind rep's back: only a full sync can repair it.
    for off in [4096, 5 * MIB + 512, 41 * MIB, 60 * MIB] {
        run_ok(Command::new("dd").args([
            "if=/dev/urandom",
            &format!("of={}", b.disk.display()),
            "bs=4096",
            "count=1",
            "oflag=seek_bytes",
            &format!("seek={off}"),
            "conv=notrunc",
            "status=none",
        ]));
    }
    assert!(files_differ(&a.disk, &b.disk, 0, usable).is_some());

    b.ok(&["invalidate", "r0"]);
    assert_eq!(
        b.status_json()["disk"],
        "Inconsistent",
        "invalidate makes the disk Inconsistent"
    );
    b.kill9();
    b.ok(&["up", "r0"]);
    b.wait_state("Connected", "UpToDate", "UpToDate", 60);
    a.wait_state("Connected", "UpToDate", "UpToDate", 10);
    if let Some(m) = eventually(10, || files_differ(&a.disk, &b.disk, 0, usable)) {
        panic!(
            "after `invalidate` and a crash node-b came back UpToDate without the full sync: {m}\nnode-b's sync decisions:\n{}",
            sync_decisions(b)
        );
    }
}

#[test]
fn a_write_the_peer_neg_acks_under_a_diskless_primary_fails_with_eio() {
    require_tool("qemu-io", "qemu-utils");
    let disk = FailingDisk::new("ds-negack", 64);
    let c = cluster("ds-negack", 64);
    let (a, b) = (c.a(), c.b());
    disk.install_for(b);
    synced_pair(&c);
    a.ok(&["primary", "r0"]);
    a.ok(&["detach", "r0"]);
    a.wait_state("Connected", "Diskless", "UpToDate", 10);
    qemu_io_ok(a, &["write -P 0x21 0 64k", "flush"]);

    // node-b's disk fails: the next write reaches no disk at all.
    disk.fail();
    let (_, text) = qemu_io(a, &[format!("write -P 0x22 {MIB} 64k")]);
    wait_for(
        Duration::from_secs(10),
        "node-b to detach its failed disk",
        || (b.status_json()["disk"] == "Diskless").then_some(()),
    );
    assert!(
        text.contains("write failed: Input/output error"),
        "a write stored on no disk (node-a Diskless, node-b's write failed) was acknowledged:\n{text}\n{}",
        recent_logs(&c)
    );
}

/// A loop device over `file`, detached on drop.
struct Loop(String);

impl Loop {
    fn over(file: &Path) -> Loop {
        require_tool("losetup", "mount");
        let dev = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(file));
        Loop(dev.trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Whether process `pid` holds `path` open with O_DIRECT (from /proc/PID/fdinfo).
fn holds_open_direct(pid: i32, path: &str) -> bool {
    const O_DIRECT: u32 = 0o40000;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        target.to_string_lossy() == path && flags & O_DIRECT != 0
    })
}

#[test]
fn a_block_device_is_written_with_o_direct_and_every_request_shape_replicates() {
    require_tool("qemu-io", "qemu-utils");
    let c = cluster("blockdev", 96);
    let lo = Loop::over(&c.a().disk);
    let config = std::fs::read_to_string(&c.a().config).expect("read config");
    let a_img = c.a().disk.display().to_string();
    std::fs::write(&c.a().config, config.replacen(&a_img, &lo.0, 1)).expect("write config");
    synced_pair(&c);
    c.a().ok(&["primary", "r0"]);
    let pid = c.a().pid().expect("node-a's repd runs");
    assert!(
        holds_open_direct(pid, &lo.0),
        "repd on node-a does not hold {} open with O_DIRECT",
        lo.0
    );
    // Aligned and unaligned, small and up to the NBD maximum; FUA and FLUSH among them.
    qemu_io_ok(
        c.a(),
        &[
            "write -P 0x11 0 4096",
            "write -P 0x12 513 1000",
            "write -P 0x13 65536 1048576",
            "write -f -P 0x14 3145216 4194816",
            "write -P 0x15 16777216 33554432",
            "flush",
            "read -P 0x12 513 1000",
            "read -P 0x14 3145216 4194816",
            "read -P 0x15 16777216 33554432",
        ],
    );
    c.a().wait_state("Connected", "UpToDate", "UpToDate", 10);
    let drops = log_lines(c.a(), &["conn( Connected -> "]);
    assert!(drops.is_empty(), "the link dropped: {drops:?}");
    assert_eq!(c.a().status_json()["oos_kib"], 0, "{}", recent_logs(&c));
    let usable = 60 * MIB;
    if let Some(d) = files_differ(&c.a().disk, &c.b().disk, 0, usable) {
        panic!("{d}\n{}", recent_logs(&c));
    }
    c.a().ok(&["secondary", "r0"]);
    c.a().ok(&["down", "r0"]);
}
