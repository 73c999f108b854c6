//! Failover-manager harness: two rep nodes and a client in network namespaces joined by a
//! bridge, keepalived or ucarp on the nodes running the repository's notify scripts (`ha/`),
//! and timing helpers.
//!
//! Topology (all created by the test, deleted on drop, names unique per process and `k`):
//! ```text
//!   ns node-a: eth0 10.231.K.1 ──┐
//!                                ├── br0 in ns client: 10.231.K.3   (crate::lan::Lan)
//!   ns node-b: eth0 10.231.K.2 ──┘
//!   floating address (VIP) 10.231.K.100, NBD over TCP on VIP:port (nbd-listen)
//! ```
//! The addresses exist only inside the namespaces: every client (the NBD probe, qemu-storage-
//! daemon) runs in the client namespace, never in the host's. The nodes' interfaces are named
//! `eth0`, so the shipped example configurations (`ha/keepalived/keepalived.conf.example`,
//! `ha/ucarp/ucarp.sh.example`, `ha/rep-ha.conf.example`) are used as they are, with only their
//! addresses and paths replaced. A node "dies" by `kill -9` of its failover manager and its
//! repd at once; `Death::Cut` also unplugs its bridge port at that moment (a powered-off host:
//! no FIN, no RST, the peer must notice by ping-timeout).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::lan::{ip, Lan};
use crate::{bin, free_port, require_tool, run, wait_for, Cluster, ClusterOpts, Node};

/// The repository's `ha/` directory (scripts and example configurations).
pub fn ha_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("ha")
}

/// Microseconds since the Unix epoch: the clock the notify script's log lines (`date +%s.%N`)
/// and the probe's answer share with the test.
pub fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Three namespaces and a bridge (see the module header): a `Lan` whose switch namespace is the
/// client, plus the floating address and the sysctls failover needs.
pub struct HaNet {
    lan: Lan,
    pub vip: String,
}

/// Namespaces, addresses, `exec`, `set_port` and the cuts are the `Lan`'s.
impl std::ops::Deref for HaNet {
    type Target = Lan;
    fn deref(&self) -> &Lan {
        &self.lan
    }
}

impl HaNet {
    pub fn new(k: u8) -> HaNet {
        let lan = Lan::with_switch_host(231, k, &["a", "b"], "c");
        let vip = format!("10.231.{k}.100");
        for ns in &lan.ns[..2] {
            // repd listens for NBD on the floating address before it holds it (nbd-listen).
            sysctl(ns, "net.ipv4.ip_nonlocal_bind", "1");
        }
        // A client must notice a Primary that died without a FIN (power off; or its address
        // removed before the kernel sent one) while it waits for replies: TCP keepalive, whose
        // first probe reaches the new holder of the floating address and is answered by a RST.
        for (key, val) in [
            ("net.ipv4.tcp_keepalive_time", "1"),
            ("net.ipv4.tcp_keepalive_intvl", "1"),
            ("net.ipv4.tcp_keepalive_probes", "3"),
        ] {
            sysctl(&lan.ns[2], key, val);
        }
        HaNet { lan, vip }
    }

    /// Remove the floating address from node `side` (a dead node no longer answers for it;
    /// keepalived and ucarp leave it behind after a kill -9).
    pub fn drop_vip(&self, side: usize) {
        let _ = ip(&[
            "-n",
            &self.ns[side],
            "addr",
            "del",
            &format!("{}/24", self.vip),
            "dev",
            "eth0",
        ]);
    }

    pub fn has_vip(&self, side: usize) -> bool {
        let out = ip(&["-n", &self.ns[side], "-o", "addr", "show", "dev", "eth0"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {}/", self.vip))
    }
}

/// `sysctl -w KEY=VAL` inside namespace `ns`, which must succeed.
fn sysctl(ns: &str, key: &str, val: &str) {
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "sysctl",
        "-q",
        "-w",
        &format!("{key}={val}"),
    ]));
    assert!(out.status.success(), "sysctl {key} in {ns} failed");
}

/// The failover times of the rounds whose node died as `death`.
pub fn times_of(out: &[(Death, u128)], death: Death) -> Vec<u128> {
    out.iter()
        .filter(|(d, _)| *d == death)
        .map(|(_, t)| *t)
        .collect()
}

/// Which failover manager runs on the nodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Manager {
    Keepalived,
    Ucarp,
    /// Heartbeat R1 with `repdisk` (`crate::heartbeat`).
    Heartbeat,
}

/// How a node dies in a failover round.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Death {
    /// kill -9 of the manager and repd; the kernel lives on and closes repd's sockets (the
    /// peer sees the connection end at once), the floating address is removed.
    Kill,
    /// The same, and the node's bridge port goes down at the same moment: nothing more leaves
    /// or reaches it, the peer notices only by ping-timeout.
    Cut,
}

/// The net section of the failover tests: a silent peer is declared lost within
/// ping-int + ping-timeout = 1.5 s (DRBD's defaults would take up to 10.5 s).
pub const HA_NET: &str = "  net {\n    ping-int 1;\n    ping-timeout 5;\n    connect-int 1;\n  }\n";

/// Two rep nodes in `HaNet`, with a failover manager on each. Field order: the managers and
/// daemons go before the namespaces.
pub struct HaPair {
    managers: [Option<Child>; 2],
    pub c: Cluster,
    pub net: HaNet,
    pub nbd_port: u16,
    pub kind: Manager,
}

impl HaPair {
    /// Both nodes up, Connected, UpToDate/UpToDate (identical zeroed disks), both Secondary,
    /// no manager running yet. `extra` is added to the resource body (after `HA_NET`).
    pub fn new(test: &str, k: u8, kind: Manager, disk_mib: u64, extra: &str) -> HaPair {
        HaPair::build(test, k, kind, disk_mib, extra, false)
    }

    /// The same with a diskless witness (docs/quorum.md) in the client namespace, at the
    /// client's address, and `quorum majority`: the nodes outdate each other through it.
    pub fn with_witness(test: &str, k: u8, kind: Manager, disk_mib: u64, extra: &str) -> HaPair {
        HaPair::build(test, k, kind, disk_mib, extra, true)
    }

    fn build(
        test: &str,
        k: u8,
        kind: Manager,
        disk_mib: u64,
        extra: &str,
        witness: bool,
    ) -> HaPair {
        require_tool("flock", "util-linux");
        require_tool("timeout", "coreutils");
        match kind {
            Manager::Keepalived => require_tool("keepalived", "keepalived"),
            Manager::Ucarp => require_tool("ucarp", "ucarp"),
            Manager::Heartbeat => crate::heartbeat::require(),
        }
        let net = HaNet::new(k);
        let c = Cluster::new(
            test,
            ClusterOpts {
                disk_mib,
                extra: format!("{HA_NET}{extra}"),
                on_shm: true,
            },
        );
        let nbd_port = free_port();
        let text = std::fs::read_to_string(&c.a().config).expect("config");
        let text = text
            .replace("127.0.0.1:", &format!("{}:", net.ip[0]))
            .replace("127.0.0.2:", &format!("{}:", net.ip[1]));
        // Both nodes export on the floating address; only the one holding it is reachable.
        let text: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("address ") {
                    format!("{l}\n    nbd-listen {}:{nbd_port};\n", net.vip)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let text = if witness {
            let port = free_port();
            let text = text
                .replacen("  on node-a {\n", "  on node-a {\n    node-id 0;\n", 1)
                .replacen("  on node-b {\n", "  on node-b {\n    node-id 1;\n", 1);
            let end = text.rfind('}').expect("resource end");
            format!(
                "{}  options {{\n    quorum majority;\n    on-no-quorum io-error;\n  }}\n  on witness {{\n    node-id 2;\n    disk none;\n    address {}:{port};\n  }}\n  connection-mesh {{\n    hosts node-a node-b witness;\n  }}\n}}\n",
                &text[..end],
                net.ip[2]
            )
        } else {
            text
        };
        std::fs::write(&c.a().config, text).expect("write config");
        let mut c = c;
        if witness {
            let w = Node {
                name: "witness".into(),
                run_dir: c.dir.join("run-witness"),
                disk: PathBuf::from("none"),
                config: c.a().config.clone(),
                resource: "r0".into(),
            };
            c.nodes.push(w);
        }
        let p = HaPair {
            managers: [None, None],
            c,
            net,
            nbd_port,
            kind,
        };
        if witness {
            p.ok(2, &["up", "r0"]);
        }
        for side in 0..2 {
            p.write_ha_conf(side);
            p.ok(side, &["create-md", "r0"]);
            p.ok(side, &["up", "r0"]);
        }
        p.wait_pair("the pair to connect", 20);
        p.ok(0, &["new-current-uuid", "--clear-bitmap", "r0"]);
        p.wait_healthy("UpToDate/UpToDate", 20);
        p
    }

    pub fn node(&self, side: usize) -> &Node {
        &self.c.nodes[side]
    }

    /// repadm as run on node `side`, inside its namespace (so that `up` starts repd there).
    pub fn repadm(&self, side: usize, args: &[&str]) -> Output {
        self.node(side)
            .repadm_via(self.net.exec(side, bin("repadm")), args)
    }

    pub fn ok(&self, side: usize, args: &[&str]) -> String {
        self.node(side).succeeded(args, &self.repadm(side, args))
    }

    /// The daemon's status file (rewritten on every state change): cheap to poll.
    pub fn status(&self, side: usize) -> serde_json::Value {
        let n = self.node(side);
        let path = n.run_dir.join(format!("{}.status.json", n.resource));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    pub fn role(&self, side: usize) -> String {
        self.status(side)["role"].as_str().unwrap_or("").to_owned()
    }

    pub fn wait_pair(&self, what: &str, secs: u64) {
        wait_for(Duration::from_secs(secs), what, || {
            (self.status(0)["cstate"] == "Connected" && self.status(1)["cstate"] == "Connected")
                .then_some(())
        });
    }

    pub fn wait_healthy(&self, what: &str, secs: u64) {
        wait_for(Duration::from_secs(secs), what, || {
            let ok = |s: serde_json::Value| {
                s["cstate"] == "Connected"
                    && s["disk"] == "UpToDate"
                    && s["peer_disk"] == "UpToDate"
            };
            (ok(self.status(0)) && ok(self.status(1))).then_some(())
        });
    }

    /// Wait until node `side` has `role`; on timeout the panic shows both nodes' notify logs
    /// and manager output as they are then.
    pub fn wait_role(&self, side: usize, role: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.role(side) != role {
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {} to be {role}; notify logs:\n{}\n--\n{}\nmanagers:\n{}\n--\n{}",
                self.node(side).name,
                self.ha_log_tail(0),
                self.ha_log_tail(1),
                self.manager_log_tail(0),
                self.manager_log_tail(1)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ha_conf(&self, side: usize) -> PathBuf {
        self.c.dir.join(format!("ha-{}.conf", self.node(side).name))
    }

    pub fn ha_log(&self, side: usize) -> PathBuf {
        self.c.dir.join(format!("ha-{}.log", self.node(side).name))
    }

    pub fn ha_log_text(&self, side: usize) -> String {
        std::fs::read_to_string(self.ha_log(side)).unwrap_or_default()
    }

    pub fn ha_log_tail(&self, side: usize) -> String {
        let t = self.ha_log_text(side);
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    pub(crate) fn manager_log(&self, side: usize) -> PathBuf {
        self.c
            .dir
            .join(format!("{:?}-{}.out", self.kind, self.node(side).name).to_lowercase())
    }

    /// The shipped `ha/rep-ha.conf.example` with this node's repadm, config, run dir and log.
    fn write_ha_conf(&self, side: usize) {
        let n = self.node(side);
        let example = std::fs::read_to_string(ha_dir().join("rep-ha.conf.example"))
            .expect("ha/rep-ha.conf.example");
        let text = example
            .replace(
                "REPADM=/usr/local/bin/repadm",
                &format!("REPADM={}", bin("repadm").display()),
            )
            .replace(
                "REP_CONFIG=/etc/rep/rep.conf",
                &format!("REP_CONFIG={}", n.config.display()),
            )
            .replace("#REP_NODE=node-a", &format!("REP_NODE={}", n.name))
            .replace(
                "#REP_RUN_DIR=/run/rep",
                &format!("REP_RUN_DIR={}", n.run_dir.display()),
            )
            .replace(
                "REP_HA_LOG=/var/log/rep-ha.log",
                &format!(
                    "REP_HA_LOG={}\nREP_HA_SYSLOG=0",
                    self.ha_log(side).display()
                ),
            )
            .replace(
                "REP_HA_NOTIFY=/etc/rep/ha/rep-notify.sh",
                &format!("REP_HA_NOTIFY={}", ha_dir().join("rep-notify.sh").display()),
            );
        let text = text.replace("10.0.0.100", &self.net.vip);
        assert!(
            text.contains(&n.run_dir.display().to_string()),
            "the example's REP_RUN_DIR line changed"
        );
        std::fs::write(self.ha_conf(side), text).expect("write ha.conf");
    }

    /// Replace the example's addresses (10.0.0.1 = this node, .2 = the peer, .100 = VIP) and
    /// paths with this node's.
    fn localize(&self, side: usize, example: &str) -> String {
        let (me, peer) = (&self.net.ip[side], &self.net.ip[1 - side]);
        example
            .replace("10.0.0.100", "@VIP@")
            .replace("10.0.0.1", "@ME@")
            .replace("10.0.0.2", "@PEER@")
            .replace("@VIP@", &self.net.vip)
            .replace("@ME@", me)
            .replace("@PEER@", peer)
            .replace(
                "/etc/rep/ha.conf",
                &self.ha_conf(side).display().to_string(),
            )
            .replace(
                "/etc/rep/ha/rep-notify.sh",
                &ha_dir().join("rep-notify.sh").display().to_string(),
            )
            .replace(
                "/etc/rep/ha/vip-up.sh",
                &ha_dir().join("ucarp/vip-up.sh").display().to_string(),
            )
            .replace(
                "/etc/rep/ha/vip-down.sh",
                &ha_dir().join("ucarp/vip-down.sh").display().to_string(),
            )
    }

    fn pid_file(&self, side: usize, what: &str) -> PathBuf {
        self.c
            .dir
            .join(format!("{}-{what}.pid", self.node(side).name))
    }

    /// Start this node's failover manager from the shipped example configuration.
    pub fn start_manager(&mut self, side: usize) {
        // A killed keepalived leaves its pid files, and its VRRP child may linger as a zombie
        // nobody reaps: keepalived would then refuse to start ("daemon is already running").
        for what in ["keepalived", "vrrp", "checkers"] {
            let _ = std::fs::remove_file(self.pid_file(side, what));
        }
        let log = std::fs::File::create(self.manager_log(side)).expect("manager log");
        let err = log.try_clone().expect("dup log");
        let child = match self.kind {
            Manager::Keepalived => {
                let example =
                    std::fs::read_to_string(ha_dir().join("keepalived/keepalived.conf.example"))
                        .expect("ha/keepalived/keepalived.conf.example");
                let mut text = self.localize(side, &example);
                if side == 1 {
                    text = text
                        .replace("router_id node-a", "router_id node-b")
                        .replace("priority 150", "priority 100");
                }
                let conf = self
                    .c
                    .dir
                    .join(format!("keepalived-{}.conf", self.node(side).name));
                std::fs::write(&conf, text).expect("write keepalived.conf");
                self.net
                    .exec(side, "keepalived")
                    .args(["-n", "-l", "-D", "-f"])
                    .arg(&conf)
                    .arg("-p")
                    .arg(self.pid_file(side, "keepalived"))
                    .arg("-r")
                    .arg(self.pid_file(side, "vrrp"))
                    .arg("-c")
                    .arg(self.pid_file(side, "checkers"))
                    .stdout(log)
                    .stderr(err)
                    .spawn()
                    .expect("start keepalived")
            }
            Manager::Ucarp => {
                let example = std::fs::read_to_string(ha_dir().join("ucarp/ucarp.sh.example"))
                    .expect("ha/ucarp/ucarp.sh.example");
                let script = self
                    .c
                    .dir
                    .join(format!("ucarp-{}.sh", self.node(side).name));
                std::fs::write(&script, self.localize(side, &example)).expect("write ucarp.sh");
                self.net
                    .exec(side, "sh")
                    .arg(&script)
                    .stdout(log)
                    .stderr(err)
                    .spawn()
                    .expect("start ucarp")
            }
            Manager::Heartbeat => crate::heartbeat::start(self, side, log, err),
        };
        self.managers[side] = Some(child);
    }

    /// Every process of node `side`'s manager (keepalived: main and VRRP child; heartbeat:
    /// every process in the node's namespaces, repd included).
    fn manager_pids(&self, side: usize) -> Vec<i32> {
        let mut pids: Vec<i32> = Vec::new();
        if let Some(c) = &self.managers[side] {
            pids.push(i32::try_from(c.id()).expect("pid"));
        }
        if self.kind == Manager::Heartbeat {
            pids.extend(crate::heartbeat::pids(self, side));
        }
        if self.kind == Manager::Keepalived {
            for what in ["vrrp", "checkers"] {
                if let Some(p) = std::fs::read_to_string(self.pid_file(side, what))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    pids.push(p);
                }
            }
        }
        pids
    }

    /// Node `side` dies: its manager and its repd get SIGKILL in one `kill` call, at the
    /// returned time (µs since the epoch, taken just before the kill); with `Death::Cut` its
    /// cable is unplugged first.
    pub fn kill_node(&mut self, side: usize, death: Death) -> u128 {
        let mut pids = self.manager_pids(side);
        pids.extend(self.node(side).pid());
        let t0 = unix_us();
        if death == Death::Cut {
            self.net.set_port(side, false);
        }
        let mut kill = Command::new("kill");
        kill.arg("-9").args(pids.iter().map(i32::to_string));
        let _ = run(&mut kill);
        self.net.drop_vip(side);
        if let Some(mut c) = self.managers[side].take() {
            let _ = c.wait();
        }
        t0
    }

    /// Stop node `side`'s manager gracefully (SIGTERM: keepalived sends priority 0 and runs
    /// notify_stop; ucarp runs its downscript with -z) and wait for it to exit.
    pub fn stop_manager(&mut self, side: usize) {
        if let Some(mut c) = self.managers[side].take() {
            let _ = run(Command::new("kill").args(["-TERM", &c.id().to_string()]));
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A dead node comes back: cable in, repd up (it connects as Secondary and resyncs from the
    /// Primary), then its manager (backup: nopreempt / same advskew keep it from taking over).
    pub fn revive(&mut self, side: usize) {
        self.net.set_port(side, true);
        self.net.drop_vip(side);
        self.ok(side, &["up", "r0"]);
        self.wait_healthy("the returning node to resync", 60);
        self.start_manager(side);
    }

    /// Wait until the manager's notify script on `side` has logged `needle` at least `count`
    /// times (e.g. its start-up "backup: already Secondary").
    pub fn wait_ha_log(&self, side: usize, needle: &str, count: usize, secs: u64) {
        wait_for(
            Duration::from_secs(secs),
            &format!(
                "{}'s notify log to show {needle:?} x{count}:\n{}",
                self.node(side).name,
                self.ha_log_tail(side)
            ),
            || (self.ha_log_text(side).matches(needle).count() >= count).then_some(()),
        );
    }

    /// Run the NBD probe in the client namespace against the floating address until it reads
    /// 4 KiB of `fill` (or `timeout` passes); returns the time it succeeded (µs since epoch).
    pub fn probe(&self, fill: u8, timeout: Duration) -> Result<u128, String> {
        let out = run(self
            .net
            .exec(2, bin("nbd-probe"))
            .arg(format!("{}:{}", self.net.vip, self.nbd_port))
            .arg("r0")
            .arg(fill.to_string())
            .arg(timeout.as_millis().to_string()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let us = text
            .strip_prefix("ok ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|t| t.parse().ok());
        us.ok_or(text)
    }

    /// Write 4 KiB of `fill` at offset 0 through node `side`'s export (its Unix socket, which
    /// needs no network) with FUA: what the next Primary must serve.
    pub fn write_marker(&self, side: usize, fill: u8) {
        let mut c = crate::nbdraw::RawClient::connect(&self.node(side).nbd_socket(), "r0")
            .expect("marker client");
        let (err, _) = c
            .request(
                crate::nbdraw::CMD_WRITE,
                crate::nbdraw::CMD_FLAG_FUA,
                0,
                4096,
                &[fill; 4096],
            )
            .expect("marker write");
        assert_eq!(err, 0, "marker write failed");
    }

    pub fn manager_log_tail(&self, side: usize) -> String {
        let t = std::fs::read_to_string(self.manager_log(side)).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for HaPair {
    fn drop(&mut self) {
        for side in 0..2 {
            if let Some(mut c) = self.managers[side].take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            for p in self.manager_pids(side) {
                let _ = run(Command::new("kill").args(["-9", &p.to_string()]));
            }
        }
    }
}

/// The first line of `log` at or after `from_us` containing `needle`: its timestamp (µs).
pub fn log_time_after(log: &str, needle: &str, from_us: u128) -> Option<u128> {
    log.lines().find_map(|l| {
        let t = parse_log_time(l)?;
        (t >= from_us && l.contains(needle)).then_some(t)
    })
}

/// `1700000000.123456789 rep-notify[…] …` → µs.
fn parse_log_time(line: &str) -> Option<u128> {
    let stamp = line.split_whitespace().next()?;
    let (s, frac) = stamp.split_once('.')?;
    let s: u128 = s.parse().ok()?;
    let frac = format!("{frac:0<6}");
    let us: u128 = frac.get(..6)?.parse().ok()?;
    Some(s * 1_000_000 + us)
}

/// min / median / max of a list of milliseconds.
pub fn summary(ms: &[u128]) -> (u128, u128, u128) {
    let mut v = ms.to_vec();
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Stdio for a child whose output goes to `path`.
pub fn to_file(path: &Path) -> (Stdio, Stdio) {
    let f = std::fs::File::create(path).expect("create log file");
    let g = f.try_clone().expect("dup log file");
    (Stdio::from(f), Stdio::from(g))
}
