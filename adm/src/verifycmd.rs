//! `repadm verify --report FILE` and `verify --fix`: after the verify ends, the ranges it found
//! go to FILE, and/or exactly those blocks are resynced while the link stays up.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rep_replicator::control::{Query, Request, Response};
use rep_replicator::core::{AdminCmd, ConnState};
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

pub fn run(
    cli: &Cli,
    p: &Paths,
    res: &str,
    timeout: Option<u64>,
    report: Option<&Path>,
    fix: bool,
) -> anyhow::Result<i32> {
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
    if !fix {
        return Ok(0);
    }
    let resp = Conn::open(&p.ctl(res), res)?.call(&Request::Admin(AdminCmd::ResyncOutOfSync))?;
    let message = match resp {
        Response::Ok { message, .. } => message,
        other => return Ok(crate::commands::print_response(cli, other)),
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
