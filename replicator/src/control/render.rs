//! Text renderings of `Status`: `repadm status` (DRBD 9 style), `/proc/drbd` (8.4 layout),
//! `role` / `cstate` / `dstate` one-liners. Pure functions: repd writes the same text to the
//! status file that repadm prints.

use std::fmt::Write as _;

use super::{Status, SyncProgress};
use crate::core::ConnState;

/// `drbdadm role`: `Primary/Secondary` (local/peer).
pub fn role_line(s: &Status) -> String {
    format!("{}/{}", s.role, s.peer_role)
}

/// `drbdadm dstate`: `UpToDate/DUnknown` (local/peer).
pub fn dstate_line(s: &Status) -> String {
    format!("{}/{}", s.disk, s.peer_disk)
}

/// `drbdadm cstate`.
pub fn cstate_line(s: &Status) -> String {
    s.cstate.to_string()
}

/// `drbdadm status` as drbd-utils ≥ 8.9 prints it.
pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    let _ = write!(out, "{} role:{}", s.resource, s.role);
    if s.suspended {
        // Fencing froze I/O (DRBD's susp-fen).
        out.push_str(" suspended:fencing");
    } else if s.suspended_quorum {
        out.push_str(" suspended:quorum");
    }
    if s.split_brain {
        out.push_str(" split-brain:yes");
    }
    out.push('\n');
    let _ = write!(out, "  disk:{}", s.disk);
    if s.quorum_enabled {
        let _ = write!(out, " quorum:{}", if s.quorum { "yes" } else { "no" });
    }
    out.push('\n');
    let data_peer = s.peer_node.as_deref();
    if s.peers.is_empty() {
        data_peer_lines(&mut out, s, data_peer.unwrap_or("peer"));
    }
    // Every peer in node-id order, as DRBD 9 lists connections; the data peer's lines carry
    // the resync detail.
    for p in &s.peers {
        if Some(p.node.as_str()) == data_peer {
            data_peer_lines(&mut out, s, &p.node);
        } else if p.cstate < ConnState::Connected {
            let _ = writeln!(
                out,
                "  {} connection:{}",
                p.node,
                p.cstate.drbd9_connection()
            );
        } else {
            let _ = writeln!(out, "  {} role:{}", p.node, p.role);
            let _ = writeln!(out, "    peer-disk:{}", p.disk);
        }
    }
    if let Some(n) = &s.oos_notice {
        let _ = writeln!(out, "  out-of-sync: {n}");
    }
    out
}

fn data_peer_lines(out: &mut String, s: &Status, peer: &str) {
    if s.cstate < ConnState::Connected {
        let _ = writeln!(out, "  {peer} connection:{}", s.cstate.drbd9_connection());
        return;
    }
    let _ = writeln!(out, "  {peer} role:{}", s.peer_role);
    let _ = write!(out, "    ");
    if s.cstate != ConnState::Connected {
        let _ = write!(out, "replication:{} ", s.cstate.drbd9_replication());
    }
    let _ = write!(out, "peer-disk:{}", s.peer_disk);
    if let Some(p) = &s.sync {
        let _ = write!(out, " done:{:.2}", p.permille() as f64 / 10.0);
    }
    out.push('\n');
    if let Some(p) = s.sync.as_ref().filter(|_| resyncing(s.cstate)) {
        out.push_str(&resync_lines(p));
    }
}

fn resyncing(c: ConnState) -> bool {
    matches!(
        c,
        ConnState::SyncSource
            | ConnState::SyncTarget
            | ConnState::PausedSyncS
            | ConnState::PausedSyncT
    )
}

/// `status` during a resync: the rates, the ETA, what limits it and what to change.
pub fn resync_lines(p: &SyncProgress) -> String {
    let (h, m, sec) = (p.eta_s / 3600, (p.eta_s / 60) % 60, p.eta_s % 60);
    let mut out = format!(
        "    speed:{}K/s avg:{}K/s eta:{h}:{m:02}:{sec:02}",
        grouped(p.speed_kib_s),
        grouped(p.avg_kib_s)
    );
    if let Some(l) = &p.limit {
        let _ = write!(out, " limited-by:{}\n      {}", l.by.name(), l.text);
    }
    out.push('\n');
    out
}

/// Thousands separators, as /proc/drbd prints speeds (`49,152`).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The `[====>.....] sync'ed:` and `finish:` lines (drbd_proc.c layout).
pub fn progress_lines(cstate: ConnState, p: &SyncProgress) -> String {
    let permille = p.permille();
    let x = (permille / 50).clamp(1, 20) as usize;
    let bar = format!("[{}>{}]", "=".repeat(x - 1), ".".repeat(20 - x));
    let word = if matches!(cstate, ConnState::VerifyS | ConnState::VerifyT) {
        "verified:"
    } else {
        "sync'ed:"
    };
    let (left, total, unit) = if p.total_kib > 4 * 1024 * 1024 {
        (p.left_kib / 1024, p.total_kib / 1024, "M")
    } else {
        (p.left_kib, p.total_kib, "K")
    };
    let mut out = format!(
        "\t{bar} {word}{:>3}.{}% ({left}/{total}){unit}\n",
        permille / 10,
        permille % 10
    );
    let (h, m, sec) = (p.eta_s / 3600, (p.eta_s / 60) % 60, p.eta_s % 60);
    let _ = write!(
        out,
        "\tfinish: {h}:{m:02}:{sec:02} speed: {} ({}) K/sec",
        grouped(p.speed_kib_s),
        grouped(p.avg_kib_s)
    );
    if let Some(w) = p.want_kib_s {
        let _ = write!(out, " want: {}", grouped(w));
    }
    out.push('\n');
    out
}

/// One device block of `/proc/drbd`.
pub fn proc_device(s: &Status) -> String {
    let c = &s.counters;
    let flags = format!("{}-----", if s.suspended { 's' } else { 'r' });
    let mut out = format!(
        "{:>2}: cs:{} ro:{}/{} ds:{}/{} {} {}\n",
        s.minor, s.cstate, s.role, s.peer_role, s.disk, s.peer_disk, s.protocol, flags
    );
    let _ = writeln!(
        out,
        "    ns:{} nr:{} dw:{} dr:{} al:{} bm:{} lo:{} pe:{} ua:{} ap:{} ep:{} wo:f oos:{}",
        c.ns_kib,
        c.nr_kib,
        c.dw_kib,
        c.dr_kib,
        c.al_writes,
        c.bm_writes,
        c.lo,
        c.pe,
        c.ua,
        c.ap,
        c.ep.max(1),
        s.oos_kib
    );
    if let Some(p) = &s.sync {
        out.push_str(&progress_lines(s.cstate, p));
    }
    out
}

/// Full `/proc/drbd` text for these devices (sorted by minor).
pub fn proc_text(devices: &[Status]) -> String {
    let mut out = String::from("version: 8.4.11 (api:1/proto:86-101)\n");
    let _ = writeln!(
        out,
        "GIT-hash: rep-{} build by rep",
        env!("CARGO_PKG_VERSION")
    );
    let mut sorted: Vec<&Status> = devices.iter().collect();
    sorted.sort_by_key(|s| s.minor);
    let mut prev: Option<u32> = None;
    for s in sorted {
        if prev.is_some_and(|p| p + 1 != s.minor) {
            out.push('\n');
        }
        out.push_str(&proc_device(s));
        prev = Some(s.minor);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::{DiskState, Role};

    pub(crate) fn sample() -> Status {
        Status {
            peer_node: Some("node-b".into()),
            pid: 1,
            role: Role::Primary,
            cstate: ConnState::WFConnection,
            disk: DiskState::UpToDate,
            protocol: "C".into(),
            size_bytes: 1 << 30,
            backing_disk: "/tmp/a.img".into(),
            nbd_socket: "/run/rep/r0.nbd".into(),
            nbd_uri: "nbd+unix:///r0?socket=/run/rep/r0.nbd".into(),
            address: Some("127.0.0.1:7789".into()),
            peer_address: Some("127.0.0.2:7789".into()),
            ..Status::without_disk("r0".into(), "node-a".into(), 0, "/dev/drbd0".into())
        }
    }

    #[test]
    fn proc_layout_matches_drbd_84() {
        let text = proc_text(&[sample()]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("version: 8.4"));
        assert_eq!(
            lines[2],
            " 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C r-----"
        );
        assert_eq!(
            lines[3],
            "    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0"
        );
    }

    #[test]
    fn progress_bar_like_drbd() {
        let p = SyncProgress {
            total_kib: 3072 * 1024 * 2,
            left_kib: 2048 * 1024 * 2,
            speed_kib_s: 49152,
            avg_kib_s: 50000,
            want_kib_s: None,
            eta_s: 42,
            limit: None,
        };
        let text = progress_lines(ConnState::SyncSource, &p);
        assert!(
            text.starts_with("\t[=====>..............] sync'ed: 33.4% (4096/6144)M\n"),
            "{text}"
        );
        assert!(
            text.contains("finish: 0:00:42 speed: 49,152 (50,000) K/sec"),
            "{text}"
        );
    }

    #[test]
    fn status_text_during_a_resync_names_the_limit() {
        let mut s = sample();
        s.cstate = ConnState::SyncTarget;
        s.peer_role = Role::Primary;
        let pace = crate::core::Pace {
            c_max_rate_kib: 4096,
            ..crate::core::Pace::default()
        };
        s.sync = Some(SyncProgress {
            total_kib: 1000,
            left_kib: 250,
            speed_kib_s: 4096,
            avg_kib_s: 3000,
            want_kib_s: Some(4096),
            eta_s: 62,
            limit: Some(crate::core::LimitInfo::new(
                crate::core::Limit::CMaxRate,
                &pace,
                true,
            )),
        });
        let text = status_text(&s);
        assert!(
            text.ends_with(
                "done:75.00\n    speed:4,096K/s avg:3,000K/s eta:0:01:02 limited-by:c-max-rate\n      limited by c-max-rate 4M; raise c-max-rate in disk { }\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_text_disconnected_and_connected() {
        let mut s = sample();
        assert_eq!(
            status_text(&s),
            "r0 role:Primary\n  disk:UpToDate\n  node-b connection:Connecting\n"
        );
        s.cstate = ConnState::Connected;
        s.peer_role = Role::Secondary;
        s.peer_disk = DiskState::UpToDate;
        assert_eq!(
            status_text(&s),
            "r0 role:Primary\n  disk:UpToDate\n  node-b role:Secondary\n    peer-disk:UpToDate\n"
        );
        assert_eq!(role_line(&s), "Primary/Secondary");
        assert_eq!(dstate_line(&s), "UpToDate/UpToDate");
    }

    #[test]
    fn status_text_lists_every_peer_with_the_witness() {
        let mut s = sample();
        s.cstate = ConnState::Connected;
        s.peer_role = Role::Secondary;
        s.peer_disk = DiskState::UpToDate;
        s.quorum_enabled = true;
        let peer = |node: &str, id, cstate, role, disk, witness| crate::control::PeerStatus {
            node: String::from(node),
            node_id: id,
            role,
            cstate,
            disk,
            witness,
        };
        s.peers = vec![
            peer(
                "node-b",
                1,
                ConnState::Connected,
                Role::Secondary,
                DiskState::UpToDate,
                false,
            ),
            peer(
                "witness",
                2,
                ConnState::Connected,
                Role::Secondary,
                DiskState::Diskless,
                true,
            ),
        ];
        assert_eq!(
            status_text(&s),
            "r0 role:Primary\n  disk:UpToDate quorum:yes\n  node-b role:Secondary\n    peer-disk:UpToDate\n  witness role:Secondary\n    peer-disk:Diskless\n"
        );
        s.peers[1].cstate = ConnState::WFConnection;
        assert!(status_text(&s).ends_with("  witness connection:Connecting\n"));
    }
}
