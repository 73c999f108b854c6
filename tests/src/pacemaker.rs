//! A real one-node Pacemaker + Corosync cluster for the HA tests, started by hand (these
//! machines have no systemd; README.md "Testing notes") and torn down completely on drop.
//!
//! Corosync runs on 127.0.0.1 with its own config file in the test directory; the cluster's
//! only node is named `node-a`, the same name as the rep node it manages, so that Pacemaker's
//! node names and rep's agree as they would on a real pair. The CIB is seeded before Pacemaker
//! starts (dc-deadtime 2 s, no STONITH, quorum ignored): the DC is elected in about 5 s instead
//! of 20-30 s. Pacemaker's state directory (/var/lib/pacemaker) is fixed at build time, so
//! only one such cluster can run on a machine at a time: a lock file serializes the tests
//! that start one, and a cluster not started by these tests (or a CIB that is not ours) fails
//! the test instead of being overwritten.
//!
//! Teardown (also when the test fails): SIGTERM to pacemakerd (it stops its children), SIGKILL
//! to whatever of ours is left after a deadline, SIGTERM to corosync, then the CIB and
//! scheduler files, Corosync's ring id files and the libqb /dev/shm files this run created.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{require_root, require_tool, run, run_ok, wait_for};

/// The cluster's node name (and the rep node it runs on).
pub const NODE: &str = "node-a";
/// Corosync's cluster name; a CIB carrying it was left by one of these tests.
const CLUSTER_NAME: &str = "rep-test";
const CIB_DIR: &str = "/var/lib/pacemaker/cib";
const PENGINE_DIR: &str = "/var/lib/pacemaker/pengine";
const COROSYNC_STATE_DIR: &str = "/var/lib/corosync";
const LOCK_PATH: &str = "/run/lock/rep-test-pacemaker.lock";
/// Pacemaker's children need a few seconds to stop their resources' monitors and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const SEED_CIB: &str = r#"<cib validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="opt-dc-deadtime" name="dc-deadtime" value="2s"/>
        <nvpair id="opt-stonith-enabled" name="stonith-enabled" value="false"/>
        <nvpair id="opt-no-quorum-policy" name="no-quorum-policy" value="ignore"/>
        <nvpair id="opt-cluster-recheck" name="cluster-recheck-interval" value="1min"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
"#;

pub struct Pacemaker {
    pub dir: PathBuf,
    corosync: Option<Child>,
    pacemakerd: Option<Child>,
    shm_before: BTreeSet<String>,
}

/// Held for as long as a test uses the machine's Pacemaker (a cluster it starts, or agent
/// calls whose crm_attribute must not reach someone else's cluster); dropped last.
pub struct Exclusive {
    _lock: File,
}

/// Wait for, then hold, the machine-wide lock of the Pacemaker tests.
pub fn exclusive() -> Exclusive {
    std::fs::create_dir_all("/run/lock").expect("mkdir /run/lock");
    let lock = File::create(LOCK_PATH).expect("create the Pacemaker test lock file");
    lock.lock().expect("lock the Pacemaker test lock file");
    Exclusive { _lock: lock }
}

fn shm_qb_files() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("qb-"))
                .collect()
        })
        .unwrap_or_default()
}

fn pids_named(name: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == name)
                .unwrap_or(false)
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false)
        })
        .collect()
}

/// Children of `parent` (by /proc/PID/stat's ppid field).
fn children_of(parent: u32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pacemaker {
    /// Start Corosync and Pacemaker and wait until `node-a` is the DC and online.
    pub fn start(test: &str, _held: &Exclusive) -> Pacemaker {
        require_root("Pacemaker and Corosync run as root");
        for (tool, package) in [
            ("corosync", "corosync"),
            ("pacemakerd", "pacemaker"),
            ("crm_mon", "pacemaker-cli-utils"),
            ("cibadmin", "pacemaker-cli-utils"),
            ("crm_attribute", "pacemaker-cli-utils"),
            ("crm", "crmsh"),
        ] {
            require_tool(tool, package);
        }
        for name in ["corosync", "pacemakerd"] {
            let pids = pids_named(name);
            assert!(
                pids.is_empty(),
                "{name} is already running (pid {pids:?}) and was not started by this test: stop it first (the tests need the machine's only Pacemaker state directory)"
            );
        }
        let cib = Path::new(CIB_DIR).join("cib.xml");
        if let Ok(text) = std::fs::read_to_string(&cib) {
            assert!(
                text.contains(&format!("value=\"{CLUSTER_NAME}\"")),
                "{} holds a cluster configuration that these tests did not create; refusing to overwrite it",
                cib.display()
            );
        }
        clear_state();
        let dir = PathBuf::from(format!("/tmp/rep-test-{test}-pcmk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Pacemaker test dir");
        std::fs::create_dir_all(CIB_DIR).expect("create the CIB dir");
        std::fs::write(&cib, SEED_CIB).expect("seed the CIB");
        run_ok(Command::new("chown").args(["-R", "hacluster:haclient", CIB_DIR]));
        run_ok(Command::new("chmod").arg("600").arg(&cib));
        let conf = dir.join("corosync.conf");
        std::fs::write(
            &conf,
            format!(
                "totem {{\n  version: 2\n  cluster_name: {CLUSTER_NAME}\n  crypto_cipher: none\n  crypto_hash: none\n}}\nlogging {{\n  to_stderr: yes\n  to_logfile: no\n  to_syslog: no\n}}\nquorum {{\n  provider: corosync_votequorum\n}}\nnodelist {{\n  node {{\n    name: {NODE}\n    nodeid: 1\n    ring0_addr: 127.0.0.1\n  }}\n}}\n"
            ),
        )
        .expect("write corosync.conf");
        let shm_before = shm_qb_files();
        let log = |name: &str| File::create(dir.join(name)).expect("create a log file");
        let corosync = Command::new("corosync")
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log("corosync.log"))
            .stderr(log("corosync.err"))
            .spawn()
            .expect("start corosync");
        let mut pm = Pacemaker {
            dir: dir.clone(),
            corosync: Some(corosync),
            pacemakerd: None,
            shm_before,
        };
        wait_for(Duration::from_secs(20), "corosync to be quorate", || {
            run(Command::new("corosync-quorumtool").arg("-s"))
                .status
                .success()
                .then_some(())
        });
        let pacemakerd = Command::new("pacemakerd")
            .arg("-f")
            .env("PCMK_logfile", dir.join("pacemaker.log"))
            .stdin(Stdio::null())
            .stdout(log("pacemakerd.out"))
            .stderr(log("pacemakerd.err"))
            .spawn()
            .expect("start pacemakerd");
        pm.pacemakerd = Some(pacemakerd);
        let t0 = Instant::now();
        wait_for(
            Duration::from_secs(90),
            "Pacemaker to elect node-a as DC",
            || {
                let out = run(Command::new("crm_mon").arg("-1"));
                let text = String::from_utf8_lossy(&out.stdout);
                (text.contains(&format!("Current DC: {NODE}"))
                    && text.contains("Online: [ node-a ]"))
                .then_some(())
            },
        );
        eprintln!("pacemaker: DC after {:?}", t0.elapsed());
        pm
    }

    /// `crm configure ...` (crmsh), which must succeed.
    pub fn crm(&self, args: &[&str]) -> String {
        run_ok(Command::new("crm").args(args))
    }

    pub fn crm_mon(&self) -> String {
        String::from_utf8_lossy(&run(Command::new("crm_mon").args(["-1", "-A", "-r"])).stdout)
            .into_owned()
    }

    /// The promotion score Pacemaker holds for `rsc` on node-a, if any.
    pub fn promotion_score(&self, rsc: &str) -> Option<i64> {
        let out = run(Command::new("crm_attribute").args([
            "-N",
            NODE,
            "-n",
            &format!("master-{rsc}"),
            "-l",
            "reboot",
            "-G",
            "-q",
        ]));
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// The CIB's constraints section.
    pub fn constraints(&self) -> String {
        run_ok(Command::new("cibadmin").args(["-Q", "-o", "constraints"]))
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("pacemaker.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.pacemakerd.take() {
            let pid = p.id();
            let kids = children_of(pid);
            signal(i32::try_from(pid).unwrap_or(0), "TERM");
            if !wait_child(&mut p, STOP_TIMEOUT) {
                let _ = p.kill();
                let _ = p.wait();
            }
            // Children that outlived their parent (a pacemakerd killed above) are ours too.
            for k in kids {
                if Path::new(&format!("/proc/{k}")).exists() {
                    signal(k, "KILL");
                }
            }
        }
        if let Some(mut c) = self.corosync.take() {
            signal(i32::try_from(c.id()).unwrap_or(0), "TERM");
            if !wait_child(&mut c, STOP_TIMEOUT) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        clear_state();
        for f in shm_qb_files().difference(&self.shm_before) {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(f));
        }
    }
}

/// The state a cluster run leaves: the CIB and its backups, the scheduler's inputs, Corosync's
/// ring ids.
fn clear_state() {
    for dir in [CIB_DIR, PENGINE_DIR] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.filter_map(Result::ok) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(COROSYNC_STATE_DIR) {
        for e in rd.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with("ringid_") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for Pacemaker {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("REP_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The repository's `ha/` directory (agent, handlers, install script).
pub fn ha_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("ha")
}

/// Installs the agent (ocf:rep:rep) and the handlers from this checkout with ha/install.sh;
/// what was not installed before is removed again on drop.
pub struct InstalledAgent {
    created: Vec<PathBuf>,
}

impl InstalledAgent {
    pub fn install(_held: &Exclusive) -> InstalledAgent {
        let created: Vec<PathBuf> = ["/usr/lib/ocf/resource.d/rep", "/usr/lib/rep"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        run_ok(Command::new("sh").arg(ha_dir().join("install.sh")));
        InstalledAgent { created }
    }
}

impl Drop for InstalledAgent {
    fn drop(&mut self) {
        for p in &self.created {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
