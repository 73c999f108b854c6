//! Goal (issue 24, item 4): a full sync ships data, not empty space. The SyncSource skips holes
//! (SEEK_DATA/SEEK_HOLE) and finds all-zero blocks it reads; both go as zero ranges
//! (`RsZero`), which the SyncTarget punches into its image. Measured on the wire with
//! `rep_peer_link_sent_bytes_total` (every byte written to the peer's sockets), the disks
//! compared whole, holes included, and the target's allocation read from st_blocks.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use rep_tests::metrics::scrape;
use rep_tests::pair::PairConf;
use rep_tests::{free_port, require_root, require_tool, run, run_ok, wait_for, Cluster, Node};

const MIB: u64 = 1 << 20;

/// A pair whose two nodes serve metrics (node-a on `ports.0`, node-b on `ports.1`).
fn pair_with_metrics(conf: PairConf) -> (Cluster, u16) {
    let c = conf.build();
    let (pa, pb) = (free_port(), free_port());
    let cfg = &c.a().config;
    let text = std::fs::read_to_string(cfg).expect("read config");
    let text = text
        .replace(
            "address 127.0.0.1:",
            &format!("metrics-listen 127.0.0.1:{pa};\n    address 127.0.0.1:"),
        )
        .replace(
            "address 127.0.0.2:",
            &format!("metrics-listen 127.0.0.1:{pb};\n    address 127.0.0.2:"),
        );
    std::fs::write(cfg, text).expect("write config");
    (c, pa)
}

/// One sample of `GET /metrics` on `port`.
fn metric(port: u16, name: &str) -> u64 {
    let text = scrape(port);
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {name} in the scrape:\n{text}"))
}

/// A seeded xorshift: the same "random" data every run, cheap to make.
struct Bytes(u64);
impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open backing file");
    f.write_all_at(data, offset).expect("write backing file");
    f.sync_all().expect("sync backing file");
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

/// The ranges of `[0, len)` that SEEK_DATA/SEEK_HOLE report as data.
fn data_ranges(path: &Path, len: u64) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open");
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < len {
        let Ok(d) = lseek(fd, at as i64, Whence::SeekData) else {
            break;
        };
        let d = d as u64;
        if d >= len {
            break;
        }
        let h = (lseek(fd, d as i64, Whence::SeekHole).expect("SEEK_HOLE") as u64).min(len);
        out.push((d, h));
        at = h;
    }
    out
}

/// The first `len` bytes of both backing files are equal, holes included: every range that
/// either file holds data in is compared byte for byte (outside them both read zeroes, by
/// definition of a hole); also a digest of each whole data area, for the report.
fn assert_identical_sparse(a: &Node, b: &Node, len: u64) {
    let mut ranges = data_ranges(&a.disk, len);
    ranges.extend(data_ranges(&b.disk, len));
    ranges.sort_unstable();
    let (fa, fb) = (
        std::fs::File::open(&a.disk).expect("open a"),
        std::fs::File::open(&b.disk).expect("open b"),
    );
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut done = 0u64;
    let mut compared = 0u64;
    for (s, e) in ranges {
        let mut at = s.max(done);
        while at < e {
            let n = (e - at).min(MIB) as usize;
            fa.read_exact_at(&mut x[..n], at).expect("read a");
            fb.read_exact_at(&mut y[..n], at).expect("read b");
            if let Some(p) = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q) {
                panic!("backing files differ at byte {}", at + p as u64);
            }
            compared += n as u64;
            at += n as u64;
        }
        done = done.max(e);
    }
    eprintln!(
        "identical: {compared} bytes with data on either side compared, the rest of {len} are holes on both"
    );
}

fn wait_synced(n: &Node, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!("{} Connected UpToDate/UpToDate", n.name),
        || {
            let s = n.status_json();
            (s["cstate"] == "Connected" && s["disk"] == "UpToDate" && s["peer_disk"] == "UpToDate")
                .then_some(())
        },
    );
}

/// `create-md` and `up` on both, wait for Connected Inconsistent/Inconsistent, then
/// `primary --force` on node-a: the full sync of `what`, holding `data` bytes of data. Prints
/// the time and the bytes node-a sent on the link, which must be the data and at most 5 %
/// more (headers, acks).
fn full_sync(c: &Cluster, metrics_a: u16, secs: u64, what: &str, data: u64) {
    for n in &c.nodes {
        n.ok(&["create-md", "r0"]);
        n.ok(&["up", "r0"]);
    }
    for n in &c.nodes {
        n.wait_state("Connected", "Inconsistent", "Inconsistent", 30);
    }
    let sent0 = metric(metrics_a, "rep_peer_link_sent_bytes_total");
    let t0 = Instant::now();
    c.a().ok(&["primary", "--force", "r0"]);
    for n in &c.nodes {
        wait_synced(n, secs);
    }
    let took = t0.elapsed().as_secs_f64();
    let sent = metric(metrics_a, "rep_peer_link_sent_bytes_total") - sent0;
    eprintln!(
        "full sync of {what}: {took:.2} s, {:.1} MiB on the wire",
        sent as f64 / MIB as f64
    );
    assert!(sent >= data, "only {sent} bytes sent for {data} of data");
    assert!(
        sent as f64 <= data as f64 * 1.05,
        "{sent} bytes on the wire for {data} bytes of data in {what}: the empty space went as data"
    );
}

#[test]
fn a_full_sync_of_a_sparse_10g_image_moves_only_its_200m_of_data() {
    let gib10 = 10 * 1024;
    let (c, ma) = pair_with_metrics(PairConf::new("sparse-10g").mib(gib10).resync_rate("4G"));
    let (a, b) = (c.a(), c.b());
    // 200 pieces of 1 MiB at scattered 4 KiB-aligned offsets, one per 48 MiB slot (the
    // internal metadata lives behind 9600 MiB).
    let mut rng = Bytes(0x5eed_0024_0004);
    let mut written = 0;
    for slot in 0..200u64 {
        let jitter = (rng.next() % (47 * 256)) * 4096;
        write_at(&a.disk, slot * 48 * MIB + jitter, &rng.fill(MIB as usize));
        written += MIB;
    }
    // The target starts with garbage where the source has holes: the zero ranges must
    // really zero it, and give its space back.
    for slot in 0..50u64 {
        write_at(
            &b.disk,
            slot * 190 * MIB + 5 * MIB,
            &rng.fill(2 * MIB as usize),
        );
    }
    assert!(allocated(&a.disk) < written + 64 * MIB);

    full_sync(
        &c,
        ma,
        600,
        &format!(
            "a {gib10} MiB sparse image holding {} MiB (data area and metadata)",
            written / MIB
        ),
        written,
    );
    let usable = a.status_json()["size_bytes"].as_u64().expect("size_bytes");
    for n in [a, b] {
        n.ok(&["down", "r0"]);
    }
    assert_identical_sparse(a, b, usable);
    let kept = allocated(&b.disk);
    eprintln!("target allocates {} MiB", kept / MIB);
    assert!(
        kept < written + 256 * MIB,
        "the target image allocates {kept} bytes after syncing {written} bytes of data"
    );
}

#[test]
fn zeros_written_as_data_travel_as_a_zero_range_and_the_target_ends_identical() {
    let (c, ma) = pair_with_metrics(PairConf::new("sparse-zero-data").mib(96));
    let (a, b) = (c.a(), c.b());
    let mut rng = Bytes(0x2e40_0000_0001);
    // 64 MiB, every other MiB random data, the others zeroes written as data: allocated on the
    // source, not holes, so only the zero check can find them.
    for i in 0..64u64 {
        let piece = if i % 2 == 0 {
            rng.fill(MIB as usize)
        } else {
            vec![0u8; MIB as usize]
        };
        write_at(&a.disk, i * MIB, &piece);
    }
    // One zero 4 KiB block inside a data MiB too.
    write_at(&a.disk, 10 * MIB + 8192, &[0u8; 4096]);
    assert!(
        allocated(&a.disk) >= 64 * MIB,
        "the zeroes must be allocated data on the source, not holes"
    );
    // The target holds garbage everywhere.
    write_at(&b.disk, 0, &rng.fill(64 * MIB as usize));

    full_sync(
        &c,
        ma,
        120,
        "64 MiB (half zeroes written as data)",
        32 * MIB - 4096,
    );
    let usable = a.status_json()["size_bytes"].as_u64().expect("size_bytes");
    for n in [a, b] {
        n.ok(&["down", "r0"]);
    }
    assert_identical_sparse(a, b, usable);
    let kept = allocated(&b.disk);
    assert!(
        kept < 40 * MIB,
        "the target allocates {kept} bytes: the zero ranges were written, not punched"
    );
}

/// Loop devices over the backing files, detached when dropped (`losetup -d` on a device still
/// open detaches it once closed).
struct Loops(Vec<String>);
impl Drop for Loops {
    fn drop(&mut self) {
        for dev in self.0.drain(..) {
            let _ = run(std::process::Command::new("losetup").arg("-d").arg(&dev));
        }
    }
}

#[test]
fn on_block_devices_zero_blocks_travel_as_zero_ranges_and_the_target_is_deallocated() {
    require_root("losetup needs root");
    require_tool("losetup", "mount");
    let (c, ma) = pair_with_metrics(PairConf::new("sparse-loop").mib(1024));
    let (a, b) = (c.a(), c.b());
    let mut rng = Bytes(0x100b_0024_0004);
    let mut written = 0;
    for slot in 0..64u64 {
        let jitter = (rng.next() % (14 * 256)) * 4096;
        write_at(&a.disk, slot * 15 * MIB + jitter, &rng.fill(MIB as usize));
        written += MIB;
    }
    write_at(&b.disk, 0, &rng.fill(128 * MIB as usize));
    let mut loops = Loops(Vec::new());
    let cfg = &a.config;
    let mut text = std::fs::read_to_string(cfg).expect("read config");
    for n in [a, b] {
        let dev = run_ok(
            std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&n.disk),
        )
        .trim()
        .to_string();
        text = text.replace(
            &format!("disk {};", n.disk.display()),
            &format!("disk {dev};"),
        );
        loops.0.push(dev);
    }
    std::fs::write(cfg, text).expect("write config");
    // lseek reports a block device as all data: the source reads every block and the zero
    // check alone finds the empty space.
    full_sync(
        &c,
        ma,
        300,
        &format!("a 1 GiB loop device holding {} MiB", written / MIB),
        written,
    );
    let usable = a.status_json()["size_bytes"].as_u64().expect("size_bytes");
    for n in [a, b] {
        n.ok(&["down", "r0"]);
    }
    drop(loops);
    assert_identical_sparse(a, b, usable);
    // The loop driver turns the deallocating WRITE_ZEROES into holes in its file.
    let kept = allocated(&b.disk);
    eprintln!("target file allocates {} MiB", kept / MIB);
    assert!(
        kept < written + 32 * MIB,
        "the target allocates {kept} bytes: the zero ranges were written, not deallocated"
    );
}
