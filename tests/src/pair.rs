//! Two-node set-ups shared by the integration tests: the resource file of a pair (one builder
//! for what used to be a `cluster()` per test file) and the usual ways to bring it up.
//!
//! Every bring-up waits for the states on both nodes, so a test starts from a pair that both
//! sides agree on.

use crate::faults::Proto;
use crate::{Cluster, ClusterOpts, Node};

/// The resource file of a two-node test ([`Cluster`]), described by what differs from the
/// usual test settings (see [`PairConf::new`]).
pub struct PairConf {
    test: String,
    opts: ClusterOpts,
    protocol: Option<Proto>,
    net: Vec<String>,
    disk: Vec<String>,
    tail: String,
}

impl PairConf {
    /// Reconnect and ping every second (`connect-int 1; ping-int 1;`), resync at a fixed
    /// rate without the controller (`c-plan-ahead 0; resync-rate 100M;`), protocol C, 64 MiB
    /// backing files in /tmp: the settings that keep a test's waits short.
    pub fn new(test: &str) -> PairConf {
        PairConf {
            test: test.into(),
            opts: ClusterOpts::default(),
            protocol: None,
            net: vec!["connect-int 1".into(), "ping-int 1".into()],
            disk: vec!["c-plan-ahead 0".into(), "resync-rate 100M".into()],
            tail: String::new(),
        }
    }

    pub fn mib(mut self, mib: u64) -> PairConf {
        self.opts.disk_mib = mib;
        self
    }

    /// Backing files on /dev/shm (fast) instead of /tmp (ext4, real O_DIRECT rules).
    pub fn on_shm(mut self) -> PairConf {
        self.opts.on_shm = true;
        self
    }

    /// One statement for the net section, after the usual ones (`"ping-timeout 20"`).
    pub fn net(mut self, statement: &str) -> PairConf {
        self.net.push(statement.into());
        self
    }

    /// One statement for the disk section, after the usual ones (`"al-extents 67"`).
    pub fn disk(mut self, statement: &str) -> PairConf {
        self.disk.push(statement.into());
        self
    }

    /// In place of the usual `resync-rate 100M`.
    pub fn resync_rate(mut self, rate: &str) -> PairConf {
        let rate = format!("resync-rate {rate}");
        for s in &mut self.disk {
            if s.starts_with("resync-rate ") {
                s.clone_from(&rate);
            }
        }
        self
    }

    /// Text for the resource body after the net and disk sections (a `handlers` section).
    pub fn section(mut self, text: &str) -> PairConf {
        self.tail.push_str(text);
        self
    }

    pub fn protocol(mut self, p: Proto) -> PairConf {
        self.protocol = Some(p);
        self
    }

    /// The resource body this describes (between `meta-disk` and the `on` sections).
    pub fn body(&self) -> String {
        let mut text = String::new();
        for (name, statements) in [("net", &self.net), ("disk", &self.disk)] {
            if statements.is_empty() {
                continue;
            }
            text += &format!("  {name} {{\n");
            for s in statements {
                text += &format!("    {s};\n");
            }
            text += "  }\n";
        }
        text + &self.tail
    }

    pub fn build(self) -> Cluster {
        let extra = self.body();
        let c = Cluster::new(&self.test, ClusterOpts { extra, ..self.opts });
        if let Some(p) = self.protocol {
            let cfg = &c.a().config;
            let text = std::fs::read_to_string(cfg).expect("read config");
            let text = text.replace("protocol C;", &format!("protocol {};", p.letter()));
            std::fs::write(cfg, text).expect("write config");
        }
        c
    }
}

/// Fill both backing files with the same random bytes, as after a completed sync (the
/// metadata area is rewritten by `create-md`).
pub fn same_random_data(c: &Cluster) {
    let len = std::fs::metadata(&c.a().disk)
        .expect("node-a's backing file")
        .len();
    crate::run_ok(std::process::Command::new("sh").arg("-c").arg(format!(
        "head -c {len} /dev/urandom > {a} && cp {a} {b}",
        a = c.a().disk.display(),
        b = c.b().disk.display()
    )));
}

/// `create-md` and `up` on both nodes; returns once both are Connected and
/// Inconsistent/Inconsistent (fresh metadata on both, nothing synced yet).
pub fn up_fresh(c: &Cluster, secs: u64) {
    for n in &c.nodes {
        n.ok(&["create-md", &n.resource]);
        n.ok(&["up", &n.resource]);
    }
    for n in &c.nodes {
        n.wait_state("Connected", "Inconsistent", "Inconsistent", secs);
    }
}

/// `new-current-uuid --clear-bitmap` on node-a, DRBD's way to skip the initial sync (the
/// backing files must already hold the same bytes); returns once both nodes are Connected and
/// UpToDate/UpToDate.
pub fn skip_initial_sync(c: &Cluster, secs: u64) {
    c.a()
        .ok(&["new-current-uuid", "--clear-bitmap", &c.a().resource]);
    for n in &c.nodes {
        n.wait_state("Connected", "UpToDate", "UpToDate", secs);
    }
}

/// The usual start of a two-node test: both up, the initial sync skipped, node-a Primary.
/// 20 s to connect, 10 s to be UpToDate.
pub fn up_pair(c: &Cluster) {
    up_pair_within(c, 20, 10);
}

/// [`up_pair`] with other deadlines for the connection and for UpToDate.
pub fn up_pair_within(c: &Cluster, connect_secs: u64, sync_secs: u64) {
    up_fresh(c, connect_secs);
    skip_initial_sync(c, sync_secs);
    c.a().ok(&["primary", &c.a().resource]);
}

/// `n` alone (its peer never comes up), with fresh metadata, forced Primary.
pub fn lone_primary(n: &Node) {
    n.ok(&["create-md", &n.resource]);
    n.ok(&["up", &n.resource]);
    n.ok(&["primary", "--force", &n.resource]);
}

#[cfg(test)]
mod tests {
    use super::PairConf;

    #[test]
    fn the_usual_settings_render_as_the_tests_wrote_them_by_hand() {
        assert_eq!(
            PairConf::new("t").body(),
            "  net {\n    connect-int 1;\n    ping-int 1;\n  }\n  disk {\n    c-plan-ahead 0;\n    resync-rate 100M;\n  }\n"
        );
        assert_eq!(
            crate::faults::suite_pair("t")
                .resync_rate("1G")
                .disk("al-extents 67")
                .body(),
            "  net {\n    connect-int 1;\n    ping-int 1;\n    ping-timeout 20;\n    verify-alg sha1;\n  }\n  disk {\n    c-plan-ahead 0;\n    resync-rate 1G;\n    al-extents 67;\n  }\n"
        );
    }
}
