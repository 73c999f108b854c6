//! Goal: a client's ext4 stays mounted through a failover and a failback, with no I/O error,
//! a clean `fsck -n` and every fsync'd file intact (docs/client-reconnect.md), and the stall
//! the application sees is measured.
//!
//! Method: the HA topology of `rep_tests::ha` with keepalived on both nodes (the shipped
//! configuration and notify script). In the client namespace `qemu-storage-daemon` is the NBD
//! client of the floating address (`reconnect-delay`), exported through FUSE; the FUSE file is
//! loop-mounted as ext4 in the host (qsd enters only the client's network namespace, so its
//! FUSE mount is visible here). A writer creates files whose contents derive from their
//! names, fsyncs each file and the directory, and records when each fsync returned. Then:
//! 1. node-a (Primary) dies: `kill -9` of its keepalived and repd; keepalived promotes node-b
//!    through the notify script, qsd reconnects to the address, now on node-b;
//! 2. node-a returns as Secondary and resyncs;
//! 3. switch back: node-b's keepalived is stopped (SIGTERM): its notify_stop resets qsd's
//!    connection and demotes, node-a's notify_master promotes once node-b is Secondary;
//! 4. node-a dies again, this time with its cable cut (no FIN to anyone): node-b's engine
//!    notices by ping-timeout, qsd by TCP keepalive; node-a returns as Secondary.
//!
//! The writer must see no error. Afterwards: umount, `fsck -n` clean, and every recorded file
//! read back intact from the final Primary through a fresh client; both disks identical.
//! Prints `stall: failover_ms=… return_resync_ms=… switchback_ms=… cut_failover_ms=…
//! max_gap_ms=… files=N`: for each event the longest gap between two successive fsyncs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rep_tests::assert::assert_same_data;
use rep_tests::ha::{to_file, unix_us, Death, HaPair, Manager};
use rep_tests::{require_tool, run, run_ok, wait_for, FuseMount};

/// Longer than any failover here (the worst is a cut cable: ping-int + ping-timeout ≈ 1.5 s,
/// plus qsd's retry back-off: attempts 0, 1, 3, 7, 15 s after the loss).
const RECONNECT_DELAY_S: u32 = 20;
const FILE_BYTES: usize = 4096;
const MAX_FILES: u64 = 50_000;
const MAX_WRITE_TIME: Duration = Duration::from_secs(240);
/// How long after an event its stall is looked for (each event is followed by ≥ 50 files).
const EVENT_WINDOW: Duration = Duration::from_secs(5);

/// qemu-storage-daemon in the client namespace: NBD client of VIP:port, FUSE export at
/// `dir/dev`, loop device, ext4 at `dir/mnt`. Undone on drop in the safe order.
struct QsdMount {
    dev: PathBuf,
    mnt: PathBuf,
    loop_dev: String,
    qsd: Option<Child>,
}

impl QsdMount {
    fn start(p: &HaPair, dir: &Path) -> QsdMount {
        require_tool("qemu-storage-daemon", "qemu-utils");
        require_tool("nsenter", "util-linux");
        require_tool("losetup", "mount");
        require_tool("mkfs.ext4", "e2fsprogs");
        let dev = dir.join("dev");
        let mnt = dir.join("mnt");
        std::fs::write(&dev, b"").expect("create the FUSE export file");
        std::fs::create_dir_all(&mnt).expect("mkdir mnt");
        let (out, err) = to_file(&dir.join("qsd.log"));
        let blockdev = format!(
            "driver=nbd,node-name=n0,server.type=inet,server.host={},server.port={},server.keep-alive=on,export=r0,reconnect-delay={RECONNECT_DELAY_S}",
            p.net.vip, p.nbd_port
        );
        let export = format!(
            "type=fuse,id=e0,node-name=n0,mountpoint={},writable=on",
            dev.display()
        );
        // nsenter --net, not `ip netns exec`: the latter also makes a private mount namespace,
        // which would hide the FUSE mount from the host.
        let qsd = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", p.net.ns[2]))
            .arg("qemu-storage-daemon")
            .args(["--blockdev", &blockdev, "--export", &export])
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start qemu-storage-daemon");
        let mut m = QsdMount {
            dev,
            mnt,
            loop_dev: String::new(),
            qsd: Some(qsd),
        };
        let log = dir.join("qsd.log");
        wait_for(Duration::from_secs(20), "qsd's FUSE export", || {
            if let Some(Ok(Some(st))) = m.qsd.as_mut().map(Child::try_wait) {
                panic!(
                    "qemu-storage-daemon exited ({st}) (no NBD client or FUSE export support?): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::fs::metadata(&m.dev)
                .ok()
                .filter(|md| md.len() > 0)
                .map(|_| ())
        });
        m.loop_dev = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&m.dev))
            .trim()
            .to_string();
        m
    }

    fn umount_fs(&self) {
        let out = run(Command::new("timeout")
            .arg("60")
            .arg("umount")
            .arg(&self.mnt));
        assert!(
            out.status.success(),
            "umount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Clean order (filesystem, loop device, qsd); after a failure qsd is killed first, which
    /// aborts the FUSE connection, so that nothing stays blocked on a stalled export (a hung
    /// FUSE file blocks every `losetup -a` on the machine).
    fn teardown(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            self.stop_qsd(Duration::ZERO);
        }
        let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
        if !self.loop_dev.is_empty() {
            let _ = run(Command::new("losetup").arg("-d").arg(&self.loop_dev));
            self.loop_dev.clear();
        }
        self.stop_qsd(Duration::from_secs(10));
        // A qsd that had to be killed leaves its FUSE mount behind.
        let _ = run(Command::new("umount").arg("-l").arg(&self.dev));
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop_qsd(&mut self, grace: Duration) {
        if let Some(mut c) = self.qsd.take() {
            let _ = run(Command::new("kill").args(["-TERM", &c.id().to_string()]));
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for QsdMount {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// File `i`'s contents: derived from its number, so any file can be checked alone.
fn contents(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..FILE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// What the writer did: each durable file with the time its fsync returned (µs since epoch).
#[derive(Default)]
struct Written {
    files: Vec<(u64, u128)>,
    error: Option<String>,
}

struct Writer {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    written: Arc<Mutex<Written>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(dir: PathBuf) -> Writer {
        std::fs::create_dir_all(&dir).expect("mkdir the writer's directory");
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let written = Arc::new(Mutex::new(Written::default()));
        let (s, c, w) = (Arc::clone(&stop), Arc::clone(&count), Arc::clone(&written));
        let handle = std::thread::spawn(move || write_loop(&dir, &s, &c, &w));
        Writer {
            stop,
            count,
            written,
            handle: Some(handle),
        }
    }

    /// Wait until `n` more files are durable (the writer is past whatever happened).
    fn wait_progress(&self, n: u64, what: &str) {
        let from = self.count.load(Ordering::Relaxed);
        wait_for(Duration::from_secs(30), what, || {
            let w = self.written.lock().unwrap_or_else(|e| e.into_inner());
            assert!(w.error.is_none(), "the writer failed: {:?}", w.error);
            drop(w);
            (self.count.load(Ordering::Relaxed) >= from + n).then_some(())
        });
    }

    fn finish(mut self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("the writer panicked");
        }
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Writer {
    /// No join: after a failure the writer may be blocked in fsync on a stalled export until
    /// the QsdMount drop (which runs later) kills qsd; the thread then ends by itself.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn write_loop(dir: &Path, stop: &AtomicBool, count: &AtomicU64, out: &Mutex<Written>) {
    let t0 = Instant::now();
    let mut i = 0;
    let fail = |e: String| out.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e);
    while !stop.load(Ordering::Relaxed) && i < MAX_FILES && t0.elapsed() < MAX_WRITE_TIME {
        let path = dir.join(format!("f{i:06}"));
        let r = std::fs::File::create(&path)
            .and_then(|mut f| {
                f.write_all(&contents(i))?;
                f.sync_all()
            })
            .and_then(|()| std::fs::File::open(dir)?.sync_all());
        if let Err(e) = r {
            fail(format!("file {i}: {e}"));
            return;
        }
        out.lock()
            .unwrap_or_else(|e| e.into_inner())
            .files
            .push((i, unix_us()));
        i += 1;
        count.store(i, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The client-visible stall of an event at `t`: the longest gap between two successive fsyncs
/// that ends in (`t`, `until`] (`until`: the next event, at most `t + EVENT_WINDOW`): the
/// effect on the client may come a little after `t`, e.g. once keepalived moved the address.
fn stall_after(files: &[(u64, u128)], t: u128, until: u128) -> u128 {
    let gaps: Vec<u128> = files
        .windows(2)
        .filter(|w| w[1].1 > t && w[1].1 <= until)
        .map(|w| (w[1].1 - w[0].1) / 1000)
        .collect();
    assert!(!gaps.is_empty(), "no fsync around the event");
    gaps.into_iter().max().unwrap_or(0)
}

fn max_gap(files: &[(u64, u128)]) -> u128 {
    files
        .windows(2)
        .map(|w| (w[1].1 - w[0].1) / 1000)
        .max()
        .unwrap_or(0)
}

#[test]
fn ext4_stays_mounted_through_failover_and_failback() {
    // The returning node resyncs its activity-log extents while the writer goes on: at a
    // fixed rate, not the controller's c-min-rate (250 KiB/s under application writes).
    let mut p = HaPair::new(
        "ha-mounted",
        2,
        Manager::Keepalived,
        256,
        "  disk {\n    c-plan-ahead 0;\n    resync-rate 400M;\n  }\n",
    );
    p.start_manager(0);
    p.wait_role(0, "Primary", 20);
    p.start_manager(1);
    p.wait_ha_log(1, "already Secondary", 1, 20);

    let dir = p.c.dir.join("client");
    std::fs::create_dir_all(&dir).expect("mkdir client");
    let q = QsdMount::start(&p, &dir);
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &q.loop_dev]));
    run_ok(Command::new("mount").arg(&q.loop_dev).arg(&q.mnt));
    let writer = Writer::start(q.mnt.join("w"));
    writer.wait_progress(100, "the writer to start");

    // 1. node-a dies; keepalived moves the address and the notify script promotes node-b.
    let t_kill = p.kill_node(0, Death::Kill);
    p.wait_role(1, "Primary", 20);
    writer.wait_progress(100, "the writer to carry on after the failover");

    // 2. node-a returns as Secondary and resyncs what it missed (the writer keeps writing).
    let settled = p.ha_log_text(0).matches("already Secondary").count();
    let t_return = unix_us();
    p.revive(0);
    p.wait_ha_log(0, "already Secondary", settled + 1, 20);
    writer.wait_progress(100, "the writer to carry on after node-a's return");

    // 3. Switch back: node-b's keepalived stops (notify_stop: reset clients, demote), node-a
    //    takes the address and is promoted once node-b is Secondary.
    let t_switch = unix_us();
    p.stop_manager(1);
    p.wait_role(0, "Primary", 30);
    writer.wait_progress(100, "the writer to carry on after the switch back");
    let settled = p.ha_log_text(1).matches("already Secondary").count();
    p.start_manager(1);
    p.wait_ha_log(1, "already Secondary", settled + 1, 20);
    writer.wait_progress(50, "the writer to carry on");

    // 4. node-a dies as a powered-off host would (its cable cut: no FIN to anyone). node-b's
    //    engine notices by ping-timeout, the client by TCP keepalive (its probe reaches
    //    node-b, now holding the address, which resets the dead connection).
    let t_cut = p.kill_node(0, Death::Cut);
    p.wait_role(1, "Primary", 20);
    writer.wait_progress(100, "the writer to carry on after the cut");
    let settled = p.ha_log_text(0).matches("already Secondary").count();
    p.revive(0);
    p.wait_ha_log(0, "already Secondary", settled + 1, 20);
    writer.wait_progress(50, "the writer to carry on after node-a's second return");

    let w = writer.finish();
    assert!(w.error.is_none(), "the writer saw an error: {:?}", w.error);
    let events = [
        ("failover_ms", t_kill),
        ("return_resync_ms", t_return),
        ("switchback_ms", t_switch),
        ("cut_failover_ms", t_cut),
    ];
    let mut line = String::from("stall:");
    for (i, (name, t)) in events.iter().enumerate() {
        let until = events
            .get(i + 1)
            .map_or(t + EVENT_WINDOW.as_micros(), |e| e.1)
            .min(t + EVENT_WINDOW.as_micros());
        line += &format!(" {name}={}", stall_after(&w.files, *t, until));
    }
    let max_ms = max_gap(&w.files);
    line += &format!(
        " max_gap_ms={max_ms} files={} reconnect_delay_s={RECONNECT_DELAY_S}",
        w.files.len()
    );
    println!("{line}");
    eprintln!("{line}");
    let qsd_log = std::fs::read_to_string(dir.join("qsd.log")).unwrap_or_default();
    assert!(
        max_ms < u128::from(RECONNECT_DELAY_S) * 1000,
        "a stall of {max_ms} ms; qsd: {qsd_log}"
    );

    // Clean unmount and fsck through the same client, then the files from a fresh one.
    q.umount_fs();
    let fsck = run(Command::new("timeout").args(["120", "fsck.ext4", "-n", "-f", &q.loop_dev]));
    assert!(
        fsck.status.success(),
        "fsck -n found problems:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    drop(q);
    p.wait_healthy("both UpToDate after the client left", 30);
    assert_eq!(p.role(1), "Primary");

    let check_dir = p.c.dir.join("check");
    let mut m = FuseMount::attach(&check_dir, &p.node(1).nbd_socket());
    run_ok(
        Command::new("mount")
            .args(["-o", "ro"])
            .arg(&m.loop_dev)
            .arg(&m.mnt),
    );
    let mut bad = Vec::new();
    for (i, _) in &w.files {
        let path = m.mnt.join("w").join(format!("f{i:06}"));
        match std::fs::read(&path) {
            Ok(data) if data == contents(*i) => {}
            Ok(_) => bad.push(format!("f{i:06}: wrong contents")),
            Err(e) => bad.push(format!("f{i:06}: {e}")),
        }
    }
    m.detach();
    assert!(
        bad.is_empty(),
        "{} of {} fsync'd files are not intact: {:?}",
        bad.len(),
        w.files.len(),
        &bad[..bad.len().min(10)]
    );
    assert_identical(&p);
}

/// Both backing files hold the same data area (the pair is idle and in sync).
fn assert_identical(p: &HaPair) {
    let len = p.status(0)["size_bytes"].as_u64().expect("size_bytes");
    assert_same_data(p.node(0), p.node(1), len);
}
