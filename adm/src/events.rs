//! `repadm events`: one line per state change, in drbdsetup events2's vocabulary.

use rep_replicator::control::{Event, Query, Request, Status};
use rep_resources::NodeView;

use crate::cli::Cli;
use crate::ctl::{Conn, Paths};

/// The events2 objects of one resource (single volume): the resource, the device, and a
/// connection and a peer device for every peer (the data peer, and the witness if any; on a
/// witness, both data nodes).
pub fn lines(kind: &str, s: &Status) -> Vec<String> {
    let peer = s.peer_node.as_deref().unwrap_or("peer");
    let data_peer = s.peer_node.is_some() || s.peers.is_empty();
    let mut out = vec![format!(
        "{kind} resource name:{} role:{} suspended:{}",
        s.resource,
        s.role,
        if s.suspended {
            "fencing"
        } else if s.suspended_quorum {
            "quorum"
        } else {
            "no"
        }
    )];
    if data_peer {
        out.push(format!(
            "{kind} connection name:{} conn-name:{peer} connection:{} role:{}{}",
            s.resource,
            s.cstate.drbd9_connection(),
            s.peer_role,
            // Only while flagged: the line stays as drbdsetup prints it otherwise.
            if s.split_brain {
                " split-brain:yes"
            } else {
                ""
            }
        ));
    }
    out.push(format!(
        "{kind} device name:{} volume:0 minor:{} disk:{}{}",
        s.resource,
        s.minor,
        s.disk,
        // DRBD 9's events2 prints quorum on the device line.
        if !s.quorum_enabled {
            ""
        } else if s.quorum {
            " quorum:yes"
        } else {
            " quorum:no"
        }
    ));
    let data_line = out.len();
    if data_peer {
        out.push(format!(
            "{kind} peer-device name:{} conn-name:{peer} volume:0 replication:{} peer-disk:{} resync-suspended:no",
            s.resource,
            s.cstate.drbd9_replication(),
            s.peer_disk
        ));
    }
    for p in s
        .peers
        .iter()
        .filter(|p| s.peer_node.as_deref() != Some(p.node.as_str()))
    {
        out.push(format!(
            "{kind} connection name:{} conn-name:{} connection:{} role:{}",
            s.resource,
            p.node,
            p.cstate.drbd9_connection(),
            p.role
        ));
        out.push(format!(
            "{kind} peer-device name:{} conn-name:{} volume:0 replication:{} peer-disk:{} resync-suspended:no",
            s.resource,
            p.node,
            p.cstate.drbd9_replication(),
            p.disk
        ));
    }
    if let Some(p) = s.sync.as_ref().filter(|_| {
        use rep_replicator::core::ConnState::*;
        matches!(
            s.cstate,
            SyncSource | SyncTarget | PausedSyncS | PausedSyncT
        )
    }) {
        // drbdsetup events2 --statistics prints done:; the rest is rep's (issue 24 §3).
        if let Some(line) = out.get_mut(data_line).filter(|_| data_peer) {
            line.push_str(&format!(
                " done:{:.2} speed-kib:{} avg-kib:{} eta:{} limited-by:{}",
                p.permille() as f64 / 10.0,
                p.speed_kib_s,
                p.avg_kib_s,
                p.eta_s,
                p.limit.as_ref().map_or("-", |l| l.by.name())
            ));
        }
    }
    if let Some(n) = &s.oos_notice {
        // Not an events2 object: rep's word that bits are set which no resync will clear.
        out.push(format!(
            "{kind} out-of-sync name:{} conn-name:{peer} volume:0 oos-kib:{} text:\"{n}\"",
            s.resource, s.oos_kib
        ));
    }
    out
}

pub fn run(cli: &Cli, p: &Paths, views: &[NodeView], now: bool) -> anyhow::Result<i32> {
    // One resource is streamed; with `all`, the first that is up (one daemon per resource).
    let mut conns = Vec::new();
    for v in views {
        if let Ok(c) = Conn::open(&p.ctl(&v.resource), &v.resource) {
            conns.push(c);
        }
    }
    let Some(mut conn) = conns.into_iter().next() else {
        eprintln!("repadm: no resource is up on this node");
        return Ok(crate::answer::EXIT_CONFIG);
    };
    conn.send(&Request::Query(Query::Events))?;
    while let Some(line) = conn.read_line()? {
        if cli.json {
            print!("{line}");
        } else {
            let ev: Event = serde_json::from_str(&line)?;
            for l in lines(&ev.kind, &ev.status) {
                println!("{l}");
            }
            if ev.kind == "exists" {
                println!("exists -");
            }
        }
        if now {
            break;
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    Ok(0)
}
