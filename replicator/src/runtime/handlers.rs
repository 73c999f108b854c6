//! DRBD's usermode helpers (`handlers { NAME "command"; }`, reference/drbd.md §3.7): the engine
//! asks for one by name, this runs the configured command with DRBD's environment.
//!
//! DRBD blocks its state machine until a helper exits; rep runs it in the background and only
//! logs its exit status, so a slow helper never stalls I/O or the peer link (and, unlike DRBD,
//! `before-resync-target` does not hold the resync back until it returns).

use std::path::Path;
use std::process::Command;

use rep_resources::NodeView;

use super::metrics::HandlerRuns;

fn count(runs: &HandlerRuns, name: &str, exit: String) {
    let mut g = match runs.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    *g.entry((name.to_owned(), exit)).or_insert(0) += 1;
}

/// Start handler `name` if the resource configures it; returns whether it was started. Each
/// run is counted in `runs` by its exit status (`0`, `1`…, `signal`, `not-run`) when it ends.
pub fn run(view: &NodeView, config: &Path, name: &str, runs: HandlerRuns) -> bool {
    let Some(cmd) = view.handlers.get(name) else {
        return false;
    };
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .env("DRBD_RESOURCE", &view.resource)
        .env("DRBD_MINOR", view.minor.to_string())
        .env("DRBD_VOLUME", "0")
        .env("DRBD_CONF", config)
        .env("DRBD_BACKING_DEV", &view.disk)
        .env("REP_NODE", &view.node);
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
    tracing::info!(resource = %view.resource, "helper command: {name} ({cmd})");
    let (resource, name, cmd) = (view.resource.clone(), name.to_owned(), cmd.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("handler {name}"))
        .spawn(move || match c.status() {
            Ok(st) if st.success() => {
                count(&runs, &name, "0".into());
                tracing::info!(resource = %resource, "helper command: {name} ({cmd}) exit code 0");
            }
            Ok(st) => {
                let exit = st.code().map_or_else(|| "signal".into(), |c| c.to_string());
                count(&runs, &name, exit.clone());
                tracing::warn!(resource = %resource, "helper command: {name} ({cmd}) exit code {exit}");
            }
            Err(e) => {
                count(&runs, &name, "not-run".into());
                tracing::error!(resource = %resource, "helper command: {name} ({cmd}) could not run: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::error!("could not start a thread for handler: {e}");
        return false;
    }
    true
}
