//! Goal: an ext4 filesystem on the Primary's export (nbdfuse + loop device) comes through a
//! seeded schedule of faults on the Secondary — `kill -9`, disconnect/connect (from either
//! side), an injected write error on its disk (it detaches; `attach` brings it back), a power
//! cut with a volatile cache — while a small writer creates files and fsyncs each one: the
//! mount stays usable throughout (the Primary stays up: nbdfuse cannot reconnect), `fsck -n`
//! on the unmounted device is clean, every fsync'd file is intact, verify finds 0 blocks out
//! of sync, and after a failover (demote, promote the other node) the other node's export
//! holds a clean filesystem with every fsync'd file intact.
//!
//! Method: two real repd processes (backing files on /dev/shm, volatile caches on both), the
//! harness's `FuseMount`; a writer thread writes files whose size and bytes derive from their
//! name, fsyncs each file and its directory, and records it only then; the main thread injects
//! the next fault once the writer has fsync'd a seeded number of further files, recovers the
//! Secondary, and either waits for the resync or lets the next fault hit it. Schedules are
//! seeded (`REP_FAULT_SEED`, `REP_FAULT_ROUNDS`; see `rep_tests::faults`). The summary line's
//! writes are fsync'd files (checked on each node).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rep_tests::faults::{
    fault, kill9, power_loss, run_schedules, schedule_seeds, suite_pair, up_volatile_pair,
    verify_oos, wait_in_sync, wait_no_clients, Rng, RoundStats,
};
use rep_tests::{require_root, require_tool, run, run_ok, wait_for, Cluster, FuseMount};

/// The writer stops after this many files (at most 24 KiB each, so they fit the 96 MiB disk
/// many times over) or this long, whatever comes first.
const FILES_MAX: usize = 2000;
const WRITER_SECS_MAX: u64 = 300;
/// The writer's pause between files: it paces the load (a fast writer would reach the file
/// limit while one resync runs), it synchronises nothing.
const WRITER_PAUSE: Duration = Duration::from_millis(3);

fn cluster(seed: u64) -> Cluster {
    suite_pair(&format!("e4-{seed}"))
        .mib(96)
        .resync_rate("200M")
        .build()
}

/// A file's contents, derived from its name: 1 byte to 24 KiB of name-seeded bytes.
fn contents(name: &str) -> Vec<u8> {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut r = Rng::new(seed);
    let len = 1 + r.below(24 * 1024) as usize;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Files fsync'd so far (name order = write order), and why the writer stopped early.
#[derive(Default)]
struct Written {
    names: Vec<String>,
    error: Option<String>,
}

fn write_one(dir: &Path, name: &str) -> std::io::Result<()> {
    let mut f = std::fs::File::create(dir.join(name))?;
    f.write_all(&contents(name))?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// The writer thread: files `f00000`, `f00001`, … in `dir`, each fsync'd with its directory.
fn writer(dir: PathBuf, stop: Arc<AtomicBool>, out: Arc<Mutex<Written>>) {
    let started = Instant::now();
    for i in 0..FILES_MAX {
        if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(WRITER_SECS_MAX)
        {
            return;
        }
        let name = format!("f{i:05}");
        match write_one(&dir, &name) {
            Ok(()) => {
                out.lock().expect("lock").names.push(name);
                std::thread::sleep(WRITER_PAUSE);
            }
            Err(e) => {
                out.lock().expect("lock").error = Some(format!("{name}: {e}"));
                return;
            }
        }
    }
}

fn written(out: &Arc<Mutex<Written>>) -> usize {
    let w = out.lock().expect("lock");
    assert!(
        w.error.is_none(),
        "the writer failed on the Primary's mount: {:?}",
        w.error
    );
    w.names.len()
}

/// Every fsync'd file in `dir` with its exact contents; the names of those that are not.
fn damaged(dir: &Path, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| std::fs::read(dir.join(n)).ok() != Some(contents(n)))
        .cloned()
        .collect()
}

fn fsck_clean(dev: &str) -> Result<(), String> {
    let out = run(Command::new("fsck.ext4").args(["-n", "-f", dev]));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fsck.ext4 -n -f {dev} ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill9,
    Disconnect,
    DiskErrorWrite,
    PowerLoss,
}

/// Inject `f` on the Secondary (node-b) and bring it back (not necessarily resynced).
fn inject(c: &Cluster, f: Fault, rng: &mut Rng) {
    let b = c.b();
    match f {
        Fault::Kill9 => {
            kill9(b);
            b.ok(&["up", "r0"]);
            fault(b, &["volatile-cache", "on"]);
        }
        Fault::Disconnect => {
            let n = if rng.pct(50) { c.a() } else { b };
            n.ok(&["disconnect", "r0"]);
            n.ok(&["connect", "r0"]);
        }
        Fault::DiskErrorWrite => {
            fault(b, &["disk-error", "write", "--count", "1"]);
            // The writer's next replicated write fails on node-b: it detaches.
            wait_for(
                Duration::from_secs(60),
                "node-b to detach after the write error",
                || (b.status_json()["disk"] == "Diskless").then_some(()),
            );
            b.ok(&["attach", "r0"]);
        }
        Fault::PowerLoss => {
            power_loss(b);
            b.ok(&["up", "r0"]);
            fault(b, &["volatile-cache", "on"]);
        }
    }
}

fn round(seed: u64) -> RoundStats {
    require_root("nbdfuse, losetup and mount need root");
    require_tool("mkfs.ext4", "e2fsprogs");
    require_tool("fsck.ext4", "e2fsprogs");
    let mut rng = Rng::new(seed);
    let c = cluster(seed);
    up_volatile_pair(&c);
    let (a, b) = (c.a(), c.b());
    let mut st = RoundStats::default();
    let mut mount = FuseMount::attach(&c.dir.join("on-a"), &a.nbd_socket());
    mount.mkfs();
    mount.mount();
    let dir = mount.mnt.join("files");
    std::fs::create_dir(&dir).expect("mkdir files");

    let faults: Vec<Fault> = (0..rng.range(4, 6))
        .map(|_| match rng.below(4) {
            0 => Fault::Kill9,
            1 => Fault::Disconnect,
            2 => Fault::DiskErrorWrite,
            _ => Fault::PowerLoss,
        })
        .collect();
    eprintln!("fault-suite: ext4 REP_FAULT_SEED={seed}: faults on node-b {faults:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Written::default()));
    let thread = {
        let (dir, stop, out) = (dir.clone(), Arc::clone(&stop), Arc::clone(&out));
        std::thread::spawn(move || writer(dir, stop, out))
    };
    // Stop the writer even when a step below panics.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(Arc::clone(&stop));

    for (i, &f) in faults.iter().enumerate() {
        let target = (written(&out) + rng.range(5, 40) as usize).min(FILES_MAX);
        wait_for(
            Duration::from_secs(120),
            "the writer to fsync more files",
            || (written(&out) >= target).then_some(()),
        );
        eprintln!(
            "fault-suite: fault {i}: {f:?} after {} files",
            written(&out)
        );
        inject(&c, f, &mut rng);
        st.faults += 1;
        if rng.pct(50) || i + 1 == faults.len() {
            wait_in_sync(&c, 120);
        }
    }
    let target = (written(&out) + 10).min(FILES_MAX);
    wait_for(
        Duration::from_secs(120),
        "the writer to fsync more files",
        || (written(&out) >= target).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("writer thread");
    let names = {
        let w = out.lock().expect("lock");
        assert!(
            w.error.is_none(),
            "the writer failed on the Primary's mount: {:?}",
            w.error
        );
        w.names.clone()
    };
    eprintln!("fault-suite: {} files fsync'd", names.len());

    // On the Primary: fsck of the unmounted device, then every file.
    mount.umount_fs();
    if let Err(e) = fsck_clean(&mount.loop_dev) {
        st.fail(format!("node-a: {e}"));
    }
    mount.mount();
    let bad = damaged(&dir, &names);
    st.writes_checked += names.len() as u64;
    st.writes_lost += bad.len() as u64;
    if !bad.is_empty() {
        st.fail(format!(
            "node-a: {} fsync'd files damaged or missing: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        ));
    }
    mount.detach();
    wait_in_sync(&c, 60);
    let oos = verify_oos(a);
    if oos != 0 {
        st.fail(format!("verify found {oos} blocks out of sync"));
    }

    // Failover: node-b's export, fsck'd and mounted read-only.
    wait_no_clients(a);
    a.ok(&["secondary", "r0"]);
    b.ok(&["primary", "r0"]);
    let on_b = FuseMount::attach(&c.dir.join("on-b"), &b.nbd_socket());
    if let Err(e) = fsck_clean(&on_b.loop_dev) {
        st.fail(format!("node-b after failover: {e}"));
    }
    run_ok(
        Command::new("mount")
            .args(["-o", "ro", &on_b.loop_dev])
            .arg(&on_b.mnt),
    );
    let bad = damaged(&on_b.mnt.join("files"), &names);
    st.writes_checked += names.len() as u64;
    st.writes_lost += bad.len() as u64;
    if !bad.is_empty() {
        st.fail(format!(
            "node-b after failover: {} fsync'd files damaged or missing: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        ));
    }
    drop(on_b);
    wait_no_clients(b);
    b.ok(&["secondary", "r0"]);
    st
}

#[test]
fn ext4_on_the_primary_survives_secondary_faults_and_fails_over_intact() {
    let seeds = schedule_seeds(5000, 3);
    run_schedules("ext4", &seeds, round);
}
