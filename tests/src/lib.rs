//! Integration-test harness: real `repd` processes driven by the real `repadm`, real NBD
//! clients, per-test directories and ports, cleanup on drop (docs/architecture.md §12.3).
//!
//! Tests wait for conditions with deadlines, never with blind sleeps. A missing external tool
//! fails the test loudly, naming the Debian package to install.

#![allow(clippy::missing_panics_doc)]

pub mod assert;
pub mod faults;
pub mod ha;
pub mod heartbeat;
pub mod lan;
pub mod metrics;
pub mod nbdraw;
pub mod pacemaker;
pub mod pair;
pub mod peer;
pub mod pki;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Where cargo put this test binary's sibling executables (target/<profile>).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} not built; run the test suite with `scripts/test.sh` (it builds all binaries first) or `cargo build --release --workspace --features rep-replicator/fault-injection`",
        p.display()
    );
    p
}

/// Fail (not skip) when a tool is missing: a test that needs it must not pass silently.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "this test needs `{tool}`: apt-get install -y {package} (scripts/deps.sh installs everything)");
}

pub fn require_root(why: &str) {
    assert!(nix_is_root(), "this test must run as root: {why}");
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Poll `f` every 20 ms until it returns Some, or panic after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `f` every 20 ms until its value has stayed the same for `quiet`, or panic after
/// `timeout` with `what`; returns that value. For quantities that have no "done" signal of
/// their own, such as a counter that stops moving once the work in flight has drained.
pub fn wait_settled<T: PartialEq + std::fmt::Debug>(
    timeout: Duration,
    quiet: Duration,
    what: &str,
    mut f: impl FnMut() -> T,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = f();
    let mut since = Instant::now();
    loop {
        if since.elapsed() >= quiet {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what} (still changing: {last:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
        let now = f();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// Run a command, return its output (never panics on non-zero exit).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static PORT_SEQ: AtomicU16 = AtomicU16::new(0);

/// A port unlikely to collide with parallel tests (per process and per call).
/// Ports stay below the kernel's ephemeral range (32768–60999 by default): a port in it can be
/// taken at any moment by some other test's outgoing connection ("Address already in use").
pub fn free_port() -> u16 {
    let base = 10000 + (std::process::id() % 400) as u16 * 50;
    base + PORT_SEQ.fetch_add(1, Ordering::Relaxed) % 50
}

/// One node of a test resource: its own run dir and backing file.
pub struct Node {
    pub name: String,
    pub run_dir: PathBuf,
    pub disk: PathBuf,
    pub config: PathBuf,
    pub resource: String,
}

impl Node {
    pub fn repadm(&self, args: &[&str]) -> Output {
        self.repadm_via(Command::new(bin("repadm")), args)
    }

    /// repadm for this node started by `runner`, a command that runs repadm (e.g. `ip netns
    /// exec NS repadm` for a node in a network namespace, so that `up` starts repd there).
    pub fn repadm_via(&self, mut runner: Command, args: &[&str]) -> Output {
        run(runner
            .args(args)
            .env("REP_CONFIG", &self.config)
            .env("REP_NODE", &self.name)
            .env("REP_RUN_DIR", &self.run_dir)
            .env("REP_REPD", bin("repd")))
    }

    /// repadm that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.succeeded(args, &self.repadm(args))
    }

    /// The stdout of `out`, a repadm run with `args` for this node that must have succeeded.
    pub fn succeeded(&self, args: &[&str], out: &Output) -> String {
        assert!(
            out.status.success(),
            "repadm {args:?} on {} failed ({}):\nstdout: {}\nstderr: {}\nlog: {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// repadm that must fail; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.repadm(args);
        assert!(
            !out.status.success(),
            "repadm {args:?} on {} unexpectedly succeeded",
            self.name
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn status_json(&self) -> serde_json::Value {
        let text = self.ok(&["status", "--json", &self.resource]);
        let v: serde_json::Value = serde_json::from_str(&text).expect("status --json is JSON");
        v[0].clone()
    }

    /// Wait until this node reports `cstate` and `disk`/`peer_disk` (status --json).
    pub fn wait_state(&self, cstate: &str, disk: &str, peer_disk: &str, secs: u64) {
        wait_for(
            Duration::from_secs(secs),
            &format!("{} to be {cstate} {disk}/{peer_disk}", self.name),
            || {
                let s = self.status_json();
                (s["cstate"] == cstate && s["disk"] == disk && s["peer_disk"] == peer_disk)
                    .then_some(())
            },
        );
    }

    /// Connected, UpToDate/UpToDate within `secs`.
    pub fn wait_uptodate(&self, secs: u64) {
        self.wait_state("Connected", "UpToDate", "UpToDate", secs);
    }

    /// One of the status's `counters` (`nr_kib`, `dw_kib`, …).
    pub fn counter(&self, name: &str) -> u64 {
        self.status_json()["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {}'s status", self.name))
    }

    /// Run `verify` to its end (back to Connected within `secs`) and return the blocks it
    /// found out of sync.
    pub fn verify_found(&self, secs: u64) -> u64 {
        self.ok(&["verify", &self.resource]);
        wait_for(Duration::from_secs(secs), "verify to finish", || {
            (self.status_json()["cstate"] == "Connected").then_some(())
        });
        self.status_json()["verify_oos_blocks"]
            .as_u64()
            .expect("verify result in status")
    }

    pub fn nbd_socket(&self) -> PathBuf {
        self.run_dir.join(format!("{}.nbd", self.resource))
    }

    pub fn nbd_uri(&self) -> String {
        format!(
            "nbd+unix:///{}?socket={}",
            self.resource,
            self.nbd_socket().display()
        )
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.run_dir.join(format!("{}.pid", self.resource)))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    /// The daemon's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join(format!("{}.log", self.resource)))
            .unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL the daemon (a crash), and wait for it to be gone.
    pub fn kill9(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            wait_for(Duration::from_secs(10), "repd to die", || {
                (!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid)).then_some(())
            });
            // The thread-group leader turns zombie before the process's last threads (accept
            // threads, io_uring's workers) let go of its files: until then the control socket
            // still takes connections, and `repadm up` would take the dead daemon for a live
            // one ("resource is already up"; seen in data_safety under load).
            let ctl = self.run_dir.join(format!("{}.ctl", self.resource));
            wait_for(Duration::from_secs(10), "repd's sockets to close", || {
                std::os::unix::net::UnixStream::connect(&ctl)
                    .is_err()
                    .then_some(())
            });
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

/// A resource with two nodes (node-a on 127.0.0.1, node-b on 127.0.0.2) in a fresh directory.
pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
}

pub struct ClusterOpts {
    pub disk_mib: u64,
    /// Extra statements for the resource body (e.g. `net { ... }`).
    pub extra: String,
    /// Put backing files on /dev/shm (fast) instead of /tmp (ext4, real O_DIRECT rules).
    pub on_shm: bool,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            disk_mib: 64,
            extra: String::new(),
            on_shm: false,
        }
    }
}

impl Cluster {
    pub fn new(test: &str, opts: ClusterOpts) -> Cluster {
        let root = if opts.on_shm { "/dev/shm" } else { "/tmp" };
        let dir = PathBuf::from(format!("{root}/rep-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let port = free_port();
        let res = "r0";
        let config = dir.join("rep.res");
        let text = format!(
            "resource {res} {{\n  protocol C;\n  device /dev/drbd0;\n  meta-disk internal;\n{extra}\n  on node-a {{\n    disk {a};\n    address 127.0.0.1:{port};\n  }}\n  on node-b {{\n    disk {b};\n    address 127.0.0.2:{port};\n  }}\n}}\n",
            extra = opts.extra,
            a = dir.join("a.img").display(),
            b = dir.join("b.img").display(),
        );
        std::fs::write(&config, text).expect("write config");
        let mut nodes = Vec::new();
        for (name, img) in [("node-a", "a.img"), ("node-b", "b.img")] {
            let disk = dir.join(img);
            let f = std::fs::File::create(&disk).expect("create backing file");
            f.set_len(opts.disk_mib << 20).expect("size backing file");
            let run_dir = dir.join(format!("run-{name}"));
            nodes.push(Node {
                name: name.into(),
                run_dir,
                disk,
                config: config.clone(),
                resource: res.into(),
            });
        }
        Cluster { dir, nodes }
    }

    pub fn a(&self) -> &Node {
        &self.nodes[0]
    }
    /// Rewrite the configuration file both nodes read.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let path = &self.a().config;
        let text = std::fs::read_to_string(path).expect("read config");
        std::fs::write(path, f(text)).expect("write config");
    }
    pub fn b(&self) -> &Node {
        &self.nodes[1]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            if let Some(pid) = n.pid() {
                let _ = n.repadm(&["down", &n.resource]);
                if Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                }
            }
        }
        if std::env::var_os("REP_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Wait until the text file at `path` contains every one of `needles` (a handler's output).
pub fn wait_for_file_containing(path: &Path, needles: &[&str], what: &str) {
    wait_for(Duration::from_secs(10), what, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        needles.iter().all(|n| text.contains(n)).then_some(())
    });
}

/// A file whose I/O fails on demand: nbdkit's error filter over a real file, through nbdfuse.
/// Creating the trigger file makes every read and write of the disk fail with EIO.
pub struct FailingDisk {
    dir: PathBuf,
    /// The file holding the data (read it to check contents behind the faulty layer).
    pub real: PathBuf,
    trigger: PathBuf,
    fuse_dir: PathBuf,
    nbdkit: Child,
    nbdfuse: Option<Child>,
}

impl FailingDisk {
    pub fn new(test: &str, mib: u64) -> FailingDisk {
        require_root("FUSE mounts need root");
        require_tool("nbdkit", "nbdkit");
        require_tool("nbdfuse", "libnbd-bin");
        let dir = PathBuf::from(format!(
            "/tmp/rep-test-{test}-faildisk-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let fuse_dir = dir.join("fuse");
        std::fs::create_dir_all(&fuse_dir).expect("mkdir fuse");
        let real = dir.join("real.img");
        std::fs::File::create(&real)
            .and_then(|f| f.set_len(mib << 20))
            .expect("create the real disk file");
        let trigger = dir.join("fail-now");
        let sock = dir.join("nbdkit.sock");
        let nbdkit = Command::new("nbdkit")
            .args(["-f", "--filter=error", "file"])
            .arg(&real)
            .args(["error=EIO", "error-rate=100%"])
            .arg(format!("error-file={}", trigger.display()))
            .arg("--unix")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nbdkit");
        wait_for(Duration::from_secs(20), "nbdkit's socket", || {
            sock.exists().then_some(())
        });
        let nbdfuse = start_nbdfuse(&fuse_dir.join("disk"), &sock);
        FailingDisk {
            dir,
            real,
            trigger,
            fuse_dir,
            nbdkit,
            nbdfuse: Some(nbdfuse),
        }
    }

    /// Replace `node`'s backing file with this disk.
    pub fn install_for(&self, node: &Node) {
        std::fs::remove_file(&node.disk).expect("remove the plain backing file");
        std::os::unix::fs::symlink(self.fuse_dir.join("disk"), &node.disk)
            .expect("link the failing disk");
    }

    pub fn fail(&self) {
        std::fs::write(&self.trigger, b"").expect("create the trigger file");
    }

    pub fn heal(&self) {
        std::fs::remove_file(&self.trigger).expect("remove the trigger file");
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg(&self.fuse_dir));
        if let Some(mut c) = self.nbdfuse.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.nbdkit.kill();
        let _ = self.nbdkit.wait();
        if std::env::var_os("REP_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Expose the NBD export on unix socket `socket` as the file `file` (its folder becomes a FUSE
/// mount); returns once the file has its size.
pub fn start_nbdfuse(file: &Path, socket: &Path) -> Child {
    start_nbdfuse_args(file, &["--unix".as_ref(), socket.as_os_str()], None)
}

/// [`start_nbdfuse`] for an NBD URI. nbdfuse refuses `tls-certificates=` in a URI; with
/// `home`, libnbd takes TLS credentials from `home/.pki/libnbd/`.
pub fn start_nbdfuse_uri(file: &Path, uri: &str, home: Option<&Path>) -> Child {
    start_nbdfuse_args(file, &[uri.as_ref()], home)
}

fn start_nbdfuse_args(file: &Path, target: &[&std::ffi::OsStr], home: Option<&Path>) -> Child {
    let mut cmd = Command::new("nbdfuse");
    if let Some(h) = home {
        cmd.env("HOME", h);
    }
    let child = cmd
        .arg(file)
        .args(target)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nbdfuse");
    wait_for(
        Duration::from_secs(20),
        "nbdfuse to expose the disk",
        || {
            std::fs::metadata(file)
                .ok()
                .filter(|m| m.len() > 0)
                .map(|_| ())
        },
    );
    child
}

/// An ext4 filesystem on an NBD export: nbdfuse → loop device → mount, undone on drop in the
/// safe order (filesystem, loop device, FUSE) so nothing is left behind.
pub struct FuseMount {
    pub fuse_dir: PathBuf,
    pub mnt: PathBuf,
    pub loop_dev: String,
    nbdfuse: Option<Child>,
}

impl FuseMount {
    /// Attach the export at `uri` as a file under `dir/fuse/disk` and a loop device.
    pub fn attach(dir: &Path, socket: &Path) -> FuseMount {
        Self::attach_with(dir, |disk| start_nbdfuse(disk, socket))
    }

    /// [`FuseMount::attach`] for an NBD URI (see [`start_nbdfuse_uri`] for `home`).
    pub fn attach_uri(dir: &Path, uri: &str, home: Option<&Path>) -> FuseMount {
        Self::attach_with(dir, |disk| start_nbdfuse_uri(disk, uri, home))
    }

    fn attach_with(dir: &Path, start: impl FnOnce(&Path) -> Child) -> FuseMount {
        require_root("nbdfuse, losetup and mount need root");
        require_tool("nbdfuse", "libnbd-bin");
        require_tool("losetup", "mount");
        let fuse_dir = dir.join("fuse");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&fuse_dir).expect("mkdir fuse");
        std::fs::create_dir_all(&mnt).expect("mkdir mnt");
        let disk = fuse_dir.join("disk");
        let child = start(&disk);
        let loop_dev = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&disk))
            .trim()
            .to_string();
        FuseMount {
            fuse_dir,
            mnt,
            loop_dev,
            nbdfuse: Some(child),
        }
    }

    pub fn mkfs(&self) {
        require_tool("mkfs.ext4", "e2fsprogs");
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F", &self.loop_dev]));
    }

    pub fn mount(&self) {
        run_ok(Command::new("mount").arg(&self.loop_dev).arg(&self.mnt));
    }

    pub fn umount_fs(&self) {
        let _ = run(Command::new("umount").arg(&self.mnt));
    }

    /// Full teardown; returns when nbdfuse has exited (its NBD connection is closed).
    pub fn detach(&mut self) {
        let _ = run(Command::new("umount").arg(&self.mnt));
        if !self.loop_dev.is_empty() {
            let _ = run(Command::new("losetup").arg("-d").arg(&self.loop_dev));
            self.loop_dev.clear();
        }
        let _ = run(Command::new("umount").arg(&self.fuse_dir));
        if let Some(mut child) = self.nbdfuse.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
        self.detach();
    }
}

/// Write `len` bytes of `pattern` at `offset` through `n`'s NBD export (qemu-io), then flush.
pub fn write_pattern(n: &Node, pattern: u8, offset: u64, len: u64) {
    run_ok(&mut qemu_io_write(&n.nbd_uri(), pattern, offset, len));
}

/// The qemu-io command that writes `len` bytes of `pattern` at `offset` through the NBD export
/// at `uri`, then flushes (for a test that expects it to fail, or runs it in a thread).
pub fn qemu_io_write(uri: &str, pattern: u8, offset: u64, len: u64) -> Command {
    let mut cmd = Command::new("qemu-io");
    cmd.args([
        "-f",
        "raw",
        "-c",
        &format!("write -P {pattern:#x} {offset} {len}"),
        "-c",
        "flush",
        uri,
    ]);
    cmd
}

/// `len` bytes at `offset` of `n`'s backing file, read directly (not through repd).
pub fn backing_bytes(n: &Node, offset: u64, len: u64) -> Vec<u8> {
    file_bytes(&n.disk, offset, len)
}

/// `len` bytes at `offset` of the file at `path`.
pub fn file_bytes(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut v = vec![0u8; usize::try_from(len).expect("length fits")];
    f.read_exact(&mut v)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    v
}

/// `qemu-io -f raw` on the node's export, bounded by a deadline (a hung request must fail the
/// test, not stall it); returns (clean, stdout+stderr). Clean means exit 0 and no failed
/// request, pattern mismatch or error reported.
pub fn qemu_io<S: AsRef<str>>(n: &Node, cmds: &[S]) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "qemu-io", "-f", "raw"]);
    for c in cmds {
        cmd.arg("-c").arg(c.as_ref());
    }
    let out = run(cmd.arg(n.nbd_uri()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let clean = out.status.success()
        && !text.contains("failed")
        && !text.contains("Pattern verification")
        && !text.contains("error");
    (clean, text)
}

/// [`qemu_io`] that must be clean.
pub fn qemu_io_ok<S: AsRef<str>>(n: &Node, cmds: &[S]) {
    let (clean, text) = qemu_io(n, cmds);
    let cmds: Vec<&str> = cmds.iter().map(AsRef::as_ref).collect();
    assert!(clean, "qemu-io {cmds:?} on {}:\n{text}", n.name);
}
