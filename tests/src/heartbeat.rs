//! Heartbeat (R1, `haresources`) as the failover manager of `ha::HaPair`: the real heartbeat
//! daemon on each node runs the repository's `ha/heartbeat/repdisk` and IPaddr2.
//!
//! Heartbeat names the local node by `uname -n` and keeps its state at fixed paths
//! (`/etc/ha.d`, `/run/heartbeat.pid`, `/run/heartbeat/`, `/var/lib/heartbeat/`: two daemons
//! sharing the last one see each other's generation numbers as a replay attack). So each node's
//! heartbeat runs in the node's network namespace plus its own UTS and mount namespaces, with
//! per-node copies of those directories bound over the fixed paths, and `/etc/default` bound to
//! a copy holding this node's `/etc/default/rep` (the file repdisk reads, as drbddisk reads
//! `/etc/default/drbd`). repd runs in the node's network namespace only (`HaPair` starts it);
//! its run dir lies outside the bound paths, so repdisk reaches its control socket through
//! `REP_RUN_DIR`. The namespaces end with their last process: killing every process of the
//! node's network namespace (`pids`) removes the mounts too.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::ha::{ha_dir, HaPair};
use crate::{bin, run, wait_for};

/// The daemon (Debian's heartbeat 3.0.6 package).
pub const HEARTBEAT: &str = "/usr/libexec/heartbeat/heartbeat";
const HB_STANDBY: &str = "/usr/share/heartbeat/hb_standby";

/// Heartbeat's timing: ha.cf takes milliseconds with an `ms` suffix and refuses a deadtime
/// of twice the keepalive or less (3 ms over 1 ms passes). 50 ms keepalives and a 200 ms
/// deadtime are far below the manual's advice (seconds); on the loaded 2-core test machine
/// keepalives arrive up to ~120 ms apart ("Late heartbeat" warnings, which the test counts),
/// so this deadtime leaves little margin against a false "dead". `REP_TEST_HB_KEEPALIVE_MS`
/// and `REP_TEST_HB_DEADTIME_MS` override them for experiments.
pub const KEEPALIVE_MS: u32 = 50;
pub const DEADTIME_MS: u32 = 200;

fn env_ms(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn keepalive_ms() -> u32 {
    env_ms("REP_TEST_HB_KEEPALIVE_MS", KEEPALIVE_MS)
}

pub fn deadtime_ms() -> u32 {
    env_ms("REP_TEST_HB_DEADTIME_MS", DEADTIME_MS)
}

/// For its first `initdead` after start heartbeat uses it as the deadtime: a node that dies
/// then is noticed only after initdead (1 s, the smallest whole-second value).
pub const INITDEAD_MS: u32 = 1000;

/// Fails loudly: a test that needs heartbeat must not pass without it.
pub fn require() {
    assert!(
        Path::new(HEARTBEAT).exists() && Path::new(HB_STANDBY).exists(),
        "{HEARTBEAT} is missing: install the heartbeat package (apt-get install -y heartbeat; scripts/deps.sh does)"
    );
    crate::require_tool("unshare", "util-linux");
    crate::require_tool("nsenter", "util-linux");
}

/// Node `side`'s private heartbeat directories: etc (bound on /etc/ha.d), run (/run), lib
/// (/var/lib/heartbeat), default (/etc/default).
pub fn node_dir(p: &HaPair, side: usize) -> PathBuf {
    p.c.dir.join(format!("hb-{}", p.node(side).name))
}

fn cp_a(from: &str, to: &Path) {
    let out = run(Command::new("cp").arg("-a").arg(from).arg(to));
    assert!(
        out.status.success(),
        "cp -a {from} {}: {}",
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The node's directories (the first time: copies of the installed ones, whose owners
/// heartbeat checks) and its configuration: ucast to the peer, `auto_failback off`, and
/// `haresources` with `repdisk::r0` then the floating address on eth0.
fn prepare(p: &HaPair, side: usize) {
    let dir = node_dir(p, side);
    if !dir.exists() {
        std::fs::create_dir_all(dir.join("run")).expect("create heartbeat dir");
        cp_a("/etc/ha.d", &dir.join("etc"));
        cp_a("/var/lib/heartbeat", &dir.join("lib"));
        cp_a("/etc/default", &dir.join("default"));
        cp_a("/run/heartbeat", &dir.join("run"));
    }
    // The script under test, as scripts/install.sh installs it.
    let out = run(Command::new("install")
        .args(["-m", "0755"])
        .arg(ha_dir().join("heartbeat/repdisk"))
        .arg(dir.join("etc/resource.d/repdisk")));
    assert!(out.status.success(), "install repdisk");
    // A restarted heartbeat would refuse to start over a pid file whose pid was reused.
    let _ = std::fs::remove_file(dir.join("run/heartbeat.pid"));
    let n = p.node(side);
    let peer = &p.net.ip[1 - side];
    write(
        &dir.join("etc/ha.cf"),
        &format!(
            "logfile {log}\ndebugfile {debug}\nuse_logd no\nudpport 694\nkeepalive {keepalive}ms\n\
             deadtime {deadtime}ms\nwarntime {warntime}ms\ninitdead {INITDEAD_MS}ms\n\
             ucast eth0 {peer}\nauto_failback off\nnode {a}\nnode {b}\ncrm no\n",
            log = p.manager_log(side).display(),
            debug = dir.join("ha-debug").display(),
            keepalive = keepalive_ms(),
            deadtime = deadtime_ms(),
            // Warn of late keepalives at half the deadtime.
            warntime = deadtime_ms() / 2,
            a = p.node(0).name,
            b = p.node(1).name,
        ),
    );
    write(
        &dir.join("etc/haresources"),
        &format!(
            "{} repdisk::{} IPaddr2::{}/24/eth0\n",
            p.node(0).name,
            n.resource,
            p.net.vip
        ),
    );
    let keys = dir.join("etc/authkeys");
    write(&keys, "auth 1\n1 sha1 rep-heartbeat-test\n");
    let out = run(Command::new("chmod").arg("600").arg(&keys));
    assert!(out.status.success(), "chmod authkeys");
    write(
        &dir.join("default/rep"),
        &format!(
            "# repdisk's settings on {name} (see ha/heartbeat/repdisk)\nREPADM={repadm}\n\
             REP_CONFIG={config}\nREP_NODE={name}\nREP_RUN_DIR={run}\nREPDISK_LOG={log}\n",
            name = n.name,
            repadm = bin("repadm").display(),
            config = n.config.display(),
            run = n.run_dir.display(),
            log = p.ha_log(side).display(),
        ),
    );
}

/// Start heartbeat on node `side` in its namespaces; `log`/`err` get what the starting shell
/// prints. heartbeat itself logs to the manager log (`logfile`, truncated at every start) and
/// to `ha-debug` in the node's directory (`debugfile`, kept across restarts). The child is
/// the starting `ip netns exec`, which ends when heartbeat has forked into the background.
pub fn start(p: &HaPair, side: usize, log: File, err: File) -> Child {
    prepare(p, side);
    let dir = node_dir(p, side);
    let d = dir.display();
    let script = format!(
        "set -e; hostname {name}; mount --bind {d}/etc /etc/ha.d; mount --bind {d}/run /run; \
         mount --bind {d}/lib /var/lib/heartbeat; mount --bind {d}/default /etc/default; \
         exec {HEARTBEAT} >>{d}/stdout 2>&1",
        name = p.node(side).name,
    );
    p.net
        .exec(side, "unshare")
        .args(["-m", "-u", "--propagation", "private", "sh", "-c", &script])
        .stdout(log)
        .stderr(err)
        .spawn()
        .expect("start heartbeat")
}

/// Every process in node `side`'s network namespace: heartbeat's master, its children and
/// resource scripts, and repd.
pub fn pids(p: &HaPair, side: usize) -> Vec<i32> {
    let out = run(Command::new("ip").args(["netns", "pids", &p.net.ns[side]]));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// heartbeat's master control process on node `side`.
fn master_pid(p: &HaPair, side: usize) -> Option<i32> {
    std::fs::read_to_string(node_dir(p, side).join("run/heartbeat.pid"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// Everything node `side`'s heartbeat logged since the test began (its debugfile).
pub fn log_text(p: &HaPair, side: usize) -> String {
    std::fs::read_to_string(node_dir(p, side).join("ha-debug")).unwrap_or_default()
}

const SETTLED: &str = "Initial resource acquisition complete";

/// How many times node `side`'s heartbeat has finished its start-up resource acquisition.
pub fn settled_count(p: &HaPair, side: usize) -> usize {
    log_text(p, side).matches(SETTLED).count()
}

/// Wait until node `side`'s heartbeat has finished its start-up resource acquisition (it waits
/// about 10 s for the other node's resource status) more than `before` times.
pub fn wait_settled(p: &HaPair, side: usize, before: usize, secs: u64) {
    wait_for(
        Duration::from_secs(secs),
        &format!(
            "{}'s heartbeat to finish its initial resource acquisition:\n{}",
            p.node(side).name,
            p.manager_log_tail(side)
        ),
        || (settled_count(p, side) > before).then_some(()),
    );
}

/// `hb_standby` on node `side`, inside its namespaces (it writes to heartbeat's FIFO under
/// /var/lib/heartbeat): the node gives up its resources and the other node takes them.
pub fn hb_standby(p: &HaPair, side: usize) {
    let pid = master_pid(p, side).expect("heartbeat pid file");
    let out = run(Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-u", "-n"])
        .arg(HB_STANDBY));
    assert!(
        out.status.success(),
        "hb_standby on {} failed: {}{}",
        p.node(side).name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many times heartbeat on `side` warned that a keepalive came late (near deadtime).
pub fn late_heartbeats(p: &HaPair, side: usize) -> usize {
    log_text(p, side).matches("Late heartbeat").count()
}
