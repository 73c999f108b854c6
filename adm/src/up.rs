//! `up` and `down`: start the daemon in its own process group and wait until it answers on
//! its control socket (or report why it died), stop it and wait for it to exit.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use rep_replicator::control::{Query, Request, Response};
use rep_resources::NodeView;

use crate::cli::Cli;
use crate::ctl::{is_up, Conn, Paths};

/// How long `up` waits for the daemon to attach and listen.
const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `down` waits for the daemon to exit after it answered.
const DOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// repd lives next to repadm (cargo build, install); `REP_REPD` overrides.
fn repd_path() -> PathBuf {
    if let Some(p) = std::env::var_os("REP_REPD") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("repd");
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from("repd")
}

pub fn up(cli: &Cli, p: &Paths, view: &NodeView) -> anyhow::Result<i32> {
    let res = &view.resource;
    if is_up(&p.ctl(res)) {
        eprintln!("{res}: Failure: (124) Device is attached to a disk (resource is already up; run `repadm down {res}` first)");
        return Ok(crate::answer::EXIT_CONFIG);
    }
    // 0755 whatever the umask; repd checks it (and its socket modes) again.
    if !p.run_dir.exists() {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&p.run_dir)
            .and_then(|()| {
                std::fs::set_permissions(&p.run_dir, std::fs::Permissions::from_mode(0o755))
            })
            .with_context(|| format!("cannot create run dir {}", p.run_dir.display()))?;
    }
    let log_path = p.log(res);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
    let config = std::fs::canonicalize(&cli.config).unwrap_or_else(|_| cli.config.clone());
    let repd = repd_path();
    let mut child = Command::new(&repd)
        .arg("--resource")
        .arg(res)
        .arg("-c")
        .arg(&config)
        .arg("--node")
        .arg(&view.node)
        .arg("--run-dir")
        .arg(&p.run_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {}; is repd installed next to repadm?",
                repd.display()
            )
        })?;
    let deadline = Instant::now() + UP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("waiting for repd")? {
            let tail = read_from(&log_path, log_start);
            let errors: Vec<&str> = tail.lines().filter(|l| l.contains("error")).collect();
            let shown = if errors.is_empty() {
                tail.trim().to_string()
            } else {
                errors.join("\n")
            };
            eprintln!("{res}: repd failed to start: {shown}");
            return Ok(status.code().unwrap_or(crate::answer::EXIT_EXEC));
        }
        if is_up(&p.ctl(res))
            && Conn::open(&p.ctl(res), res)
                .and_then(|mut c| c.status())
                .is_ok()
        {
            return Ok(0);
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "{res}: repd did not come up within {} s; see {}",
                UP_TIMEOUT.as_secs(),
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_string(&mut s);
        }
    }
    s
}

pub fn down(p: &Paths, view: &NodeView) -> anyhow::Result<i32> {
    let res = &view.resource;
    if !is_up(&p.ctl(res)) {
        eprintln!("{res}: not up on this node (nothing to do)");
        return Ok(0);
    }
    let pid: Option<i32> = std::fs::read_to_string(p.pid(res))
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let mut conn = Conn::open(&p.ctl(res), res)?;
    match conn.call(&Request::Query(Query::Down))? {
        Response::Ok { .. }
        | Response::Adjusted { .. }
        | Response::SplitBrain { .. }
        | Response::VerifyReport { .. }
        | Response::Data { .. } => {}
        Response::Refused {
            rendered,
            exit_code,
            ..
        } => {
            eprintln!("{rendered}");
            return Ok(exit_code);
        }
        Response::Error { message, exit_code } => {
            eprintln!("repadm: {message}");
            return Ok(exit_code);
        }
    }
    let deadline = Instant::now() + DOWN_TIMEOUT;
    if let Some(pid) = pid {
        while rep_replicator::control::process_alive(pid) {
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "{res}: repd (pid {pid}) did not exit within {} s",
                    DOWN_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(0)
}
