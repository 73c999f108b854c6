//! `repadm verify --report FILE` and `verify --fix [--from NODE]`: after the verify ends, the
//! ranges it found go to FILE, and/or exactly those blocks are resynced while the link stays
//! up, from the node the operator names (else from the Primary).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rep_replicator::control::Status;
use rep_replicator::control::{Query, Request, Response};
use rep_replicator::core::{AdminCmd, ConnState, DiskState, FixSource, Role};
use rep_resources::NodeView;
use serde_json::json;

use crate::cli::Cli;
use crate::ctl::{Conn, Paths};

const POLL: Duration = Duration::from_millis(200);

fn report_ranges(p: &Paths, res: &str) -> anyhow::Result<Vec<[u64; 2]>> {
    match Conn::open(&p.ctl(res), res)?.call(&Request::Query(Query::VerifyReport))? {
        Response::VerifyReport { ranges, .. } => Ok(ranges),
        Response::Error { message, .. } => Err(anyhow!(message)),
        _ => bail!("unexpected answer to verify-report (older repd?)"),
    }
}

/// `--fix`, with the host `--from` names, if any.
pub struct Fix<'a> {
    pub from: Option<&'a str>,
    pub view: &'a NodeView,
}

/// drbdsetup's exit code for "need access to UpToDate data".
const EXIT_NOT_UPTODATE: i32 = 17;
/// drbdsetup's exit code for a refused state change (here: overwriting a Primary).
const EXIT_PRIMARY: i32 = 11;

/// Which side `--from NODE` names: a host of the resource, this node or its peer.
fn source_of(view: &NodeView, name: &str) -> Result<FixSource, String> {
    if name == view.node {
        return Ok(FixSource::This);
    }
    let peers: Vec<&str> = view
        .peers
        .iter()
        .map(|p| p.node.as_str())
        .chain(view.peer_node.as_deref())
        .collect();
    if peers.contains(&name) {
        return Ok(FixSource::Peer);
    }
    let mut hosts = vec![view.node.as_str()];
    hosts.extend(peers.iter().filter(|h| **h != view.node));
    hosts.dedup();
    Err(format!(
        "{name} is not a host of resource {} (its hosts: {})",
        view.resource,
        hosts.join(", ")
    ))
}

/// Refuse before the verify runs what the fix would refuse after it: a source that is not
/// UpToDate, or a Primary that would be overwritten.
fn check_source(s: &Status, name: &str, src: FixSource) -> Result<(), (i32, String)> {
    let peer = s.peer_node.as_deref().unwrap_or("the peer");
    let (disk, target, target_role) = match src {
        FixSource::This => (s.disk, peer, s.peer_role),
        FixSource::Peer => (s.peer_disk, s.node.as_str(), s.role),
    };
    if disk != DiskState::UpToDate {
        return Err((
            EXIT_NOT_UPTODATE,
            format!("{name}'s disk is {disk}, not UpToDate: it cannot be the source"),
        ));
    }
    if target_role == Role::Primary {
        return Err((
            EXIT_PRIMARY,
            format!(
                "the blocks would be resynced onto {target}, which is Primary (rep never makes a Primary Inconsistent); demote it first with `repadm secondary {}`, or name the Primary with --from",
                s.resource
            ),
        ));
    }
    Ok(())
}

pub fn run(
    cli: &Cli,
    p: &Paths,
    res: &str,
    timeout: Option<u64>,
    report: Option<&Path>,
    fix: Option<Fix>,
) -> anyhow::Result<i32> {
    let from = match fix.as_ref().and_then(|f| f.from.map(|n| (n, f.view))) {
        Some((name, view)) => match source_of(view, name) {
            Ok(src) => {
                let status = Conn::open(&p.ctl(res), res)?.status()?;
                if let Err((code, why)) = check_source(&status, name, src) {
                    eprintln!("{res}: verify --fix --from {name}: {why}");
                    return Ok(code);
                }
                Some(src)
            }
            Err(why) => {
                eprintln!("{res}: verify --fix --from: {why}");
                return Ok(crate::answer::EXIT_USAGE);
            }
        },
        None => None,
    };
    let code = crate::progress::verify_wait(cli, p, res, timeout)?;
    if code != 0 {
        return Ok(code);
    }
    let ranges = report_ranges(p, res)?;
    if let Some(file) = report {
        let status = Conn::open(&p.ctl(res), res)?.status()?;
        let blocks: u64 = ranges.iter().map(|r| r[1] / 4096).sum();
        let text = serde_json::to_string_pretty(&json!({
            "resource": res,
            "node": status.node,
            "blocks": blocks,
            "bytes": blocks * 4096,
            "ranges": ranges,
        }))
        .context("encode the report")?;
        std::fs::write(file, text + "\n")
            .with_context(|| format!("write the report {}", file.display()))?;
        if !cli.json {
            println!(
                "{res}: {} ranges ({blocks} blocks) written to {}",
                ranges.len(),
                file.display()
            );
        }
    }
    if fix.is_none() {
        return Ok(0);
    }
    let resp =
        Conn::open(&p.ctl(res), res)?.call(&Request::Admin(AdminCmd::ResyncOutOfSync { from }))?;
    let message = match resp {
        Response::Ok { message, .. } => message,
        other => return Ok(crate::answer::print_response(cli, other)),
    };
    if !cli.json {
        println!("{res}: {message}");
    }
    // The resync runs on the link that is up; wait until both sides are in sync again.
    let started = Instant::now();
    loop {
        let s = Conn::open(&p.ctl(res), res)?.status()?;
        if s.cstate == ConnState::Connected && s.oos_kib == 0 && s.sync.is_none() {
            if !cli.json {
                println!(
                    "{res}: fixed {} blocks in {:.1} s",
                    ranges.iter().map(|r| r[1] / 4096).sum::<u64>(),
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(0);
        }
        if s.cstate < ConnState::Connected {
            eprintln!("{res}: verify --fix: the connection went {}", s.cstate);
            return Ok(crate::progress::EXIT_CANNOT);
        }
        if timeout.is_some_and(|t| started.elapsed() >= Duration::from_secs(t)) {
            eprintln!("{res}: verify --fix timed out");
            return Ok(5);
        }
        std::thread::sleep(POLL);
    }
}
