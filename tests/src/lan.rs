//! Hosts in network namespaces on one switch, for tests that cut links: each host `i` has
//! `eth0` with 10.S.K.(i+1)/24 (S picks the test family, K the test), and a bridge in a
//! namespace of its own joins them; the addresses exist only inside the namespaces. A cut is
//! iptables rules inside the hosts' namespaces, so it touches nothing else on the machine.
//! Everything is deleted on drop, with whatever still runs inside.

use std::process::{Command, Output};

use crate::{require_root, require_tool, run};

/// `ip ARGS` (iproute2), whatever its exit status.
pub fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// `ip ARGS`, which must succeed.
pub fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kill whatever still runs in the network namespaces `ns` (continuing stopped processes
/// first, so that they die), then delete them.
pub fn delete_namespaces(ns: &[String]) {
    for ns in ns {
        let pids = ip(&["netns", "pids", ns]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = run(Command::new("kill").args(["-CONT", pid]));
            let _ = run(Command::new("kill").args(["-9", pid]));
        }
        let _ = ip(&["netns", "del", ns]);
    }
}

/// `iptables -w ARGS` inside namespace `ns`, which must succeed.
pub fn iptables_in(ns: &str, args: &[&str]) {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w"])
        .args(args));
    assert!(
        out.status.success(),
        "iptables {args:?} in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Lan {
    /// The hosts' namespaces, then the switch's.
    pub ns: Vec<String>,
    /// The hosts' addresses, then the switch's when it is a host too (`with_switch_host`).
    pub ip: Vec<String>,
    /// The switch's end of each host's cable.
    ports: Vec<String>,
}

impl Lan {
    /// `hosts` namespaces named `rp-HOST-PID-K`, on subnet 10.`subnet`.`k`.0/24.
    pub fn new(subnet: u8, k: u8, hosts: &[&str]) -> Lan {
        Lan::build(subnet, k, hosts, None)
    }

    /// The same, and the switch's namespace is a host too, named `switch`, with the next
    /// address on its bridge (a client that sees every host: the failover tests' client).
    pub fn with_switch_host(subnet: u8, k: u8, hosts: &[&str], switch: &str) -> Lan {
        Lan::build(subnet, k, hosts, Some(switch))
    }

    fn build(subnet: u8, k: u8, hosts: &[&str], switch: Option<&str>) -> Lan {
        require_root("network namespaces need root");
        require_tool("ip", "iproute2");
        require_tool("iptables", "iptables");
        require_tool("ss", "iproute2");
        let pid = std::process::id();
        let mut ns: Vec<String> = hosts.iter().map(|h| format!("rp-{h}-{pid}-{k}")).collect();
        ns.push(format!("rp-{}-{pid}-{k}", switch.unwrap_or("sw")));
        let addresses = hosts.len() + usize::from(switch.is_some());
        let ip = (1..=addresses)
            .map(|i| format!("10.{subnet}.{k}.{i}"))
            .collect();
        let mut lan = Lan {
            ns,
            ip,
            ports: Vec::new(),
        };
        delete_namespaces(&lan.ns);
        for ns in &lan.ns {
            ip_ok(&["netns", "add", ns]);
            ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let sw = lan.ns[hosts.len()].clone();
        let sw = sw.as_str();
        ip_ok(&["-n", sw, "link", "add", "br0", "type", "bridge"]);
        if switch.is_some() {
            let addr = format!("{}/24", lan.ip[hosts.len()]);
            ip_ok(&["-n", sw, "addr", "add", &addr, "dev", "br0"]);
        }
        ip_ok(&["-n", sw, "link", "set", "br0", "up"]);
        for side in 0..hosts.len() {
            let (host, port) = (
                format!("rq{subnet}{k}h{side}{pid}"),
                format!("rq{subnet}{k}p{side}{pid}"),
            );
            let (host, port) = (trim(&host), trim(&port));
            ip_ok(&["link", "add", &host, "type", "veth", "peer", "name", &port]);
            ip_ok(&["link", "set", &host, "netns", &lan.ns[side]]);
            ip_ok(&["link", "set", &port, "netns", sw]);
            let ns = &lan.ns[side];
            ip_ok(&["-n", ns, "link", "set", &host, "name", "eth0"]);
            let addr = format!("{}/24", lan.ip[side]);
            ip_ok(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            ip_ok(&["-n", ns, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", sw, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", sw, "link", "set", &port, "up"]);
            lan.ports.push(port);
        }
        lan
    }

    /// Unplug (or plug back) host `side`'s cable at the switch.
    pub fn set_port(&self, side: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        let sw = &self.ns[self.ports.len()];
        ip_ok(&["-n", sw, "link", "set", &self.ports[side], state]);
    }

    /// `ip netns exec NS PROGRAM` for host `side`.
    pub fn exec(&self, side: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[side]]).arg(program);
        c
    }

    /// `iptables ARGS` inside host `side`'s namespace.
    pub fn iptables(&self, side: usize, args: &[&str]) {
        iptables_in(&self.ns[side], args);
    }

    /// Nothing passes between `x` and `y`, either way.
    pub fn cut(&self, x: usize, y: usize) {
        for (me, other) in [(x, y), (y, x)] {
            let other = self.ip[other].clone();
            self.iptables(me, &["-A", "INPUT", "-s", &other, "-j", "DROP"]);
            self.iptables(me, &["-A", "OUTPUT", "-d", &other, "-j", "DROP"]);
        }
    }

    /// Nothing `from` sends reaches `to`; the other way still works.
    pub fn cut_one_way(&self, from: usize, to: usize) {
        let to = self.ip[to].clone();
        self.iptables(from, &["-A", "OUTPUT", "-d", &to, "-j", "DROP"]);
    }

    /// Drop host `side`'s rules (all of them are the test's).
    pub fn heal(&self, side: usize) {
        self.iptables(side, &["-F"]);
    }

    pub fn heal_all(&self) {
        for side in 0..self.ip.len() {
            self.heal(side);
        }
    }

    /// Abort every TCP socket of host `side` towards host `to` (`ss -K`): the kernel resets
    /// both ends at once.
    pub fn kill_sockets(&self, side: usize, to: usize) {
        let out = run(self
            .exec(side, "ss")
            .args(["-K", "-t", "dst", &self.ip[to]]));
        assert!(
            out.status.success(),
            "ss -K failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Interface names have at most 15 bytes.
fn trim(name: &str) -> String {
    name.chars().take(15).collect()
}

impl Drop for Lan {
    fn drop(&mut self) {
        delete_namespaces(&self.ns);
    }
}
