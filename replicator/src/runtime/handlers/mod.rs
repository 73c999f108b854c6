//! DRBD's usermode helpers (`handlers { NAME "command"; }`, docs/drbd-semantics.md §4): the engine
//! asks for one by name, this runs the configured command with DRBD's environment (and rep's:
//! `REP_CONFIG`, `REP_NODE`, `REP_RUN_DIR`, so that a handler can call `repadm` for this
//! resource).
//!
//! Most helpers run in the background: their exit status is only logged and counted. The engine
//! waits for two, because their result matters (`run_waited`): `fence-peer` (the peer's disk
//! state, and with resource-and-stonith frozen I/O) and `before-resync-target` (the resync
//! starts only after it). A waited helper gets [`WAITED_TIMEOUT`]; one that runs longer is
//! killed, with its process group, and counts as failed.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use rep_resources::NodeView;

mod child;
mod run;

use super::metrics::HandlerRuns;

/// How long the engine waits for `fence-peer` or `before-resync-target`.
pub const WAITED_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the daemon runs: passed to helpers as `DRBD_CONF`, `REP_CONFIG` and `REP_RUN_DIR`.
pub struct HandlerEnv<'a> {
    pub config: &'a Path,
    pub run_dir: &'a Path,
}

fn count(runs: &HandlerRuns, name: &str, exit: String) {
    let mut g = match runs.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    *g.entry((name.to_owned(), exit)).or_insert(0) += 1;
}

/// Handler `name`'s command with its environment, if the resource configures it.
fn command(view: &NodeView, env: &HandlerEnv<'_>, name: &str) -> Option<(Command, String)> {
    let cmd = view.handlers.get(name)?;
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env("DRBD_RESOURCE", &view.resource)
        .env("DRBD_MINOR", view.minor.to_string())
        .env("DRBD_VOLUME", "0")
        .env("DRBD_CONF", env.config)
        .env("DRBD_BACKING_DEV", &view.disk)
        .env("REP_NODE", &view.node)
        .env("REP_CONFIG", env.config)
        .env("REP_RUN_DIR", env.run_dir);
    if let Some(peer) = &view.peer_node {
        c.env("DRBD_PEERS", peer).env("DRBD_PEER", peer);
    }
    if let Some(a) = view.peer_address {
        let af = if a.is_ipv4() { "ipv4" } else { "ipv6" };
        c.env("DRBD_PEER_AF", af)
            .env("DRBD_PEER_ADDRESS", a.ip().to_string());
    }
    if let Some(a) = view.address {
        let af = if a.is_ipv4() { "ipv4" } else { "ipv6" };
        c.env("DRBD_MY_AF", af)
            .env("DRBD_MY_ADDRESS", a.ip().to_string());
    }
    Some((c, cmd.clone()))
}

/// Whether the resource configures handler `name`.
pub fn configured(view: &NodeView, name: &str) -> bool {
    view.handlers.contains_key(name)
}

/// Start handler `name` in the background if the resource configures it; returns whether it
/// was started. Each run is counted in `runs` by its exit status (`0`, `1`…, `signal`,
/// `not-run`) when it ends.
pub fn run(view: &NodeView, env: &HandlerEnv<'_>, name: &str, runs: HandlerRuns) -> bool {
    let Some((c, cmd)) = command(view, env, name) else {
        return false;
    };
    tracing::info!(resource = %view.resource, "helper command: {name} ({cmd})");
    let (resource, name) = (view.resource.clone(), name.to_owned());
    spawn(&name.clone(), move || {
        let exit = wait_with_timeout(c, None);
        report(&resource, &name, &cmd, exit, &runs);
    })
}

/// Run handler `name` (configured: check with [`configured`]) and call `done` with its exit
/// status, `None` if it could not run, was killed by a signal or ran past [`WAITED_TIMEOUT`].
pub fn run_waited(
    view: &NodeView,
    env: &HandlerEnv<'_>,
    name: &str,
    runs: HandlerRuns,
    done: impl FnOnce(Option<i32>) + Send + 'static,
) -> bool {
    let Some((c, cmd)) = command(view, env, name) else {
        return false;
    };
    tracing::info!(resource = %view.resource, "helper command: {name} ({cmd}), waiting for it (at most {} s)", WAITED_TIMEOUT.as_secs());
    let (resource, name) = (view.resource.clone(), name.to_owned());
    spawn(&name.clone(), move || {
        let exit = wait_with_timeout(c, Some(WAITED_TIMEOUT));
        let code = report(&resource, &name, &cmd, exit, &runs);
        done(code);
    })
}

/// How a helper ended.
enum Exit {
    Code(i32),
    Signal,
    TimedOut,
    NotRun(std::io::Error),
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> bool {
    match std::thread::Builder::new()
        .name(format!("handler {name}"))
        .spawn(f)
    {
        Ok(_) => true,
        Err(e) => {
            tracing::error!("could not start a thread for handler {name}: {e}");
            false
        }
    }
}

fn wait_with_timeout(mut c: Command, timeout: Option<Duration>) -> Exit {
    use std::os::unix::process::CommandExt;
    // Its own process group, so that a helper past its time is killed with its children.
    c.process_group(0);
    let mut child: Child = match c.spawn() {
        Ok(child) => child,
        Err(e) => return Exit::NotRun(e),
    };
    match child::wait(&mut child, timeout) {
        Ok(child::Waited::Exited(st)) => st.code().map_or(Exit::Signal, Exit::Code),
        Ok(child::Waited::TimedOut) => {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait();
            Exit::TimedOut
        }
        Err(e) => Exit::NotRun(e),
    }
}

/// Log and count how a helper ended; its exit code if it had one.
fn report(resource: &str, name: &str, cmd: &str, exit: Exit, runs: &HandlerRuns) -> Option<i32> {
    match exit {
        Exit::Code(0) => {
            count(runs, name, "0".into());
            tracing::info!(resource = %resource, "helper command: {name} ({cmd}) exit code 0");
            Some(0)
        }
        Exit::Code(c) => {
            count(runs, name, c.to_string());
            tracing::warn!(resource = %resource, "helper command: {name} ({cmd}) exit code {c}");
            Some(c)
        }
        Exit::Signal => {
            count(runs, name, "signal".into());
            tracing::warn!(resource = %resource, "helper command: {name} ({cmd}) killed by a signal");
            None
        }
        Exit::TimedOut => {
            count(runs, name, "timeout".into());
            tracing::error!(resource = %resource, "helper command: {name} ({cmd}) did not finish within {} s: killed", WAITED_TIMEOUT.as_secs());
            None
        }
        Exit::NotRun(e) => {
            count(runs, name, "not-run".into());
            tracing::error!(resource = %resource, "helper command: {name} ({cmd}) could not run: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// This thread's context switches so far.
    fn own_switches() -> u64 {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }

    #[test]
    fn a_waited_helper_is_waited_for_without_polling() {
        let mut c = Command::new("sleep");
        c.arg("0.5");
        let before = own_switches();
        let t = Instant::now();
        let exit = wait_with_timeout(c, Some(WAITED_TIMEOUT));
        let took = t.elapsed();
        let switches = own_switches() - before;
        assert!(matches!(exit, Exit::Code(0)));
        assert!(took >= Duration::from_millis(450), "{took:?}");
        // A 20 ms try_wait loop switches about 25 times in 0.5 s; a thread blocked on the
        // child's pidfd a few times (the spawn's own pipe read among them).
        assert!(switches <= 5, "{switches} context switches while waiting");
    }

    #[test]
    fn a_waited_helper_past_its_deadline_is_killed() {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("sleep 30 & sleep 30");
        let t = Instant::now();
        let exit = wait_with_timeout(c, Some(Duration::from_millis(200)));
        assert!(matches!(exit, Exit::TimedOut));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
