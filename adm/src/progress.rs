//! `repadm wait-sync` and `repadm verify --wait`: poll the daemon until the resync or verify
//! is over. On a terminal a live progress bar (percent, rate, ETA) is drawn on stdout; when
//! stdout is not a terminal a line when the wait starts and one when it ends; with `--json`
//! only one JSON object at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rep_replicator::control::{Request, Status};
use rep_replicator::core::{AdminCmd, ConnState, DiskState};

use crate::cli::Cli;
use crate::ctl::{Conn, Paths};

/// wait-sync / verify --wait ran out of time (drbdadm's wait-connect timeout code).
pub const EXIT_TIMEOUT: i32 = 5;
/// The wait cannot end well: StandAlone without UpToDate data, Diskless, verify aborted.
pub const EXIT_CANNOT: i32 = 11;

const POLL: Duration = Duration::from_millis(200);

/// A resync is running or about to (handshake and bitmap exchange included).
fn resyncing(c: ConnState) -> bool {
    use ConnState::*;
    matches!(
        c,
        WFReportParams
            | StartingSyncS
            | StartingSyncT
            | WFBitMapS
            | WFBitMapT
            | WFSyncUUID
            | SyncSource
            | SyncTarget
            | PausedSyncS
            | PausedSyncT
    )
}

fn verifying(c: ConnState) -> bool {
    matches!(c, ConnState::VerifyS | ConnState::VerifyT)
}

/// The bar (terminal only), fed from `Status::sync`.
struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(cli: &Cli) -> Bar {
        let on_tty = !cli.json && std::io::stdout().is_terminal();
        let bar = on_tty.then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b
        });
        Bar { bar }
    }

    fn update(&self, s: &Status) {
        let (Some(b), Some(p)) = (&self.bar, &s.sync) else {
            return;
        };
        b.set_prefix(format!("{} {}", s.resource, s.cstate));
        b.set_length(p.total_kib * 1024);
        b.set_position((p.total_kib - p.left_kib.min(p.total_kib)) * 1024);
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn percent(s: &Status) -> String {
    s.sync.as_ref().map_or_else(String::new, |p| {
        format!(", {:.1}% done", p.permille() as f64 / 10.0)
    })
}

fn deadline(timeout: Option<u64>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + Duration::from_secs(t))
}

fn finish_json(res: &str, result: &str, started: Instant, s: &Status) {
    println!(
        "{}",
        serde_json::json!({"resource": res, "result": result, "elapsed_s": started.elapsed().as_secs_f64(), "status": s})
    );
}

/// Wait until no resync runs and the local disk is UpToDate.
pub fn wait_sync(cli: &Cli, p: &Paths, res: &str, timeout: Option<u64>) -> anyhow::Result<i32> {
    let started = Instant::now();
    let until = deadline(timeout);
    let bar = Bar::new(cli);
    let mut announced = false;
    loop {
        let s = Conn::open(&p.ctl(res), res)?.status()?;
        bar.update(&s);
        if s.disk == DiskState::UpToDate && !resyncing(s.cstate) {
            bar.finish();
            if cli.json {
                finish_json(res, "synced", started, &s);
            } else if announced || !std::io::stdout().is_terminal() {
                println!(
                    "{res}: in sync: {} {}/{} after {:.1} s",
                    s.cstate,
                    s.disk,
                    s.peer_disk,
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(0);
        }
        let hopeless = match (s.disk, s.cstate) {
            (DiskState::Diskless, _) => Some("it has no local disk; run `repadm attach`"),
            (_, ConnState::StandAlone) => Some(
                "it is StandAlone and its data is not UpToDate; run `repadm connect` (or `primary --force` to declare it UpToDate)",
            ),
            _ => None,
        };
        if let Some(why) = hopeless {
            bar.finish();
            if cli.json {
                finish_json(res, "cannot-sync", started, &s);
            }
            eprintln!(
                "{res}: wait-sync: {} {}/{}: {why}",
                s.cstate, s.disk, s.peer_disk
            );
            return Ok(EXIT_CANNOT);
        }
        if until.is_some_and(|d| Instant::now() >= d) {
            bar.finish();
            if cli.json {
                finish_json(res, "timeout", started, &s);
            }
            eprintln!(
                "{res}: wait-sync timed out after {} s ({} {}/{}{})",
                timeout.unwrap_or(0),
                s.cstate,
                s.disk,
                s.peer_disk,
                percent(&s)
            );
            return Ok(EXIT_TIMEOUT);
        }
        if !announced {
            announced = true;
            if !cli.json && bar.bar.is_none() {
                println!(
                    "{res}: waiting for the resync: {} {}/{}{}",
                    s.cstate,
                    s.disk,
                    s.peer_disk,
                    percent(&s)
                );
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Start an online verify and wait for its result.
pub fn verify_wait(cli: &Cli, p: &Paths, res: &str, timeout: Option<u64>) -> anyhow::Result<i32> {
    let started = Instant::now();
    let until = deadline(timeout);
    let resp = Conn::open(&p.ctl(res), res)?.call(&Request::Admin(AdminCmd::Verify))?;
    if !matches!(resp, rep_replicator::control::Response::Ok { .. }) {
        // Refused (no verify-alg, not connected, …): the usual message and exit code.
        return Ok(crate::answer::print_response(cli, resp));
    }
    let bar = Bar::new(cli);
    if !cli.json && bar.bar.is_none() {
        println!("{res}: verify started");
    }
    loop {
        let s = Conn::open(&p.ctl(res), res)?.status()?;
        bar.update(&s);
        if !verifying(s.cstate) {
            bar.finish();
            if s.cstate < ConnState::Connected {
                if cli.json {
                    finish_json(res, "aborted", started, &s);
                }
                eprintln!("{res}: verify aborted: the connection is {}", s.cstate);
                return Ok(EXIT_CANNOT);
            }
            let oos = s.verify_oos_blocks.unwrap_or(0);
            if cli.json {
                finish_json(res, "verified", started, &s);
            } else {
                println!(
                    "{res}: verify done: {oos} blocks out of sync ({} KiB) after {:.1} s{}",
                    oos * 4,
                    started.elapsed().as_secs_f64(),
                    if oos > 0 {
                        "; disconnect and connect to resync them"
                    } else {
                        ""
                    }
                );
            }
            return Ok(0);
        }
        if until.is_some_and(|d| Instant::now() >= d) {
            bar.finish();
            if cli.json {
                finish_json(res, "timeout", started, &s);
            }
            eprintln!(
                "{res}: verify --wait timed out after {} s (still {}{})",
                timeout.unwrap_or(0),
                s.cstate,
                percent(&s)
            );
            return Ok(EXIT_TIMEOUT);
        }
        std::thread::sleep(POLL);
    }
}
