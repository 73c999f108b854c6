//! repd on a diskless witness host (docs/quorum.md, "The witness"): no disk, no NBD export,
//! no engine. It listens on its address for the two data nodes' witness links (`session.rs`),
//! answers their pings, records the role and disk each announces, and relays outdate requests
//! between them one at a time (`crate::witness::relay`). Its control socket answers `status`
//! (every data node and the witness's own quorum), `events` and `down`; state-changing
//! commands are refused with the reason.

mod control;
mod session;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::paths::RunPaths;
use super::port::wait_for_stop;
use super::start_error::StartError;
use super::surface::status::{regenerate_proc_status, write_atomic, write_status_files};
use crate::control::{PeerStatus, Status};
use crate::core::quorum;
use crate::core::{ConnState, DiskState, Role};
use crate::wire::Packet;
use crate::witness::relay::{Relay, Send};
use rep_resources::NodeView;

/// A data node's live link.
struct Linked {
    tx: mpsc::UnboundedSender<Packet>,
    /// Which session holds it (a reconnect replaces the entry; the old session's end must
    /// not remove the new one).
    serial: u64,
    role: Role,
    disk: DiskState,
}

pub struct Witness {
    view: NodeView,
    paths: RunPaths,
    /// The configuration file repd was started with (`adjust` re-reads it).
    config_path: std::path::PathBuf,
    relay: RefCell<Relay>,
    links: RefCell<BTreeMap<String, Linked>>,
    next_serial: Cell<u64>,
    had_quorum: Cell<bool>,
    subscribers: RefCell<Vec<mpsc::UnboundedSender<Status>>>,
    shutdown: Notify,
    ping_int: Duration,
    ping_timeout: Duration,
}

impl Witness {
    fn send_all(&self, sends: Vec<Send>) {
        let links = self.links.borrow();
        for s in sends {
            if let Some(l) = links.get(&s.to) {
                let _ = l.tx.send(s.packet);
            }
        }
    }

    /// What `status` shows: this node Secondary and Diskless, every data node as its link
    /// and its announcements say, and the quorum they give (a pure read: `publish` keeps the
    /// answer).
    pub(crate) fn status(&self) -> Status {
        let links = self.links.borrow();
        let peers: Vec<PeerStatus> = self
            .view
            .peers
            .iter()
            .map(|p| match links.get(&p.node) {
                Some(l) => PeerStatus {
                    node: p.node.clone(),
                    node_id: p.node_id.unwrap_or_default(),
                    role: l.role,
                    cstate: ConnState::Connected,
                    disk: l.disk,
                    witness: false,
                },
                None => PeerStatus {
                    node: p.node.clone(),
                    node_id: p.node_id.unwrap_or_default(),
                    role: Role::Unknown,
                    cstate: ConnState::WFConnection,
                    disk: DiskState::DUnknown,
                    witness: false,
                },
            })
            .collect();
        let verdict = quorum::calc(&quorum::Inputs {
            quorum: self.view.quorum.quorum,
            minimum_redundancy: self.view.quorum.minimum_redundancy,
            disk: DiskState::Diskless,
            diskless_by_config: true,
            members: peers
                .iter()
                .map(|p| quorum::Member {
                    diskless_by_config: false,
                    connected: p.cstate == ConnState::Connected,
                    disk: p.disk,
                })
                .collect(),
            had_quorum: self.had_quorum.get(),
        });
        let all = peers.iter().all(|p| p.cstate == ConnState::Connected);
        Status {
            cstate: if all {
                ConnState::Connected
            } else {
                ConnState::WFConnection
            },
            protocol: self.view.net.protocol.to_string(),
            quorum_enabled: self.view.quorum.enabled(),
            quorum: verdict.quorum,
            address: self.view.address.map(|a| a.to_string()),
            peers,
            ..Status::without_disk(
                self.view.resource.clone(),
                self.view.node.clone(),
                self.view.minor,
                self.view.device.clone(),
            )
        }
    }

    /// After a change of the links or of what a data node announced: the quorum it gives is
    /// the witness's answer until now (sticky: the tiebreaker keeps quorum, it does not bring
    /// it back), and `events` listeners and the status files are told.
    fn publish(&self) {
        let status = self.status();
        self.had_quorum.set(status.quorum);
        self.subscribers
            .borrow_mut()
            .retain(|tx| tx.send(status.clone()).is_ok());
        if let Err(e) = write_status_files(&self.paths, &status) {
            tracing::warn!(
                "cannot write status file in {}: {e}",
                self.paths.dir.display()
            );
        }
    }
}

/// Run the witness for `view` (a diskless node of a resource with two data nodes).
pub fn run(
    view: NodeView,
    paths: RunPaths,
    config_path: std::path::PathBuf,
) -> Result<i32, StartError> {
    let net = &view.net;
    let ping_int = Duration::from_secs(u64::from(net.ping_int_s.max(1)));
    let ping_timeout = Duration::from_millis(u64::from(net.ping_timeout_ds.max(1)) * 100);
    let mut addrs: Vec<std::net::SocketAddr> =
        view.peers.iter().filter_map(|p| p.my_address).collect();
    addrs.sort();
    addrs.dedup();
    let mut listeners = Vec::new();
    for addr in addrs {
        let l = std::net::TcpListener::bind(addr).map_err(|source| StartError::PeerListen {
            addr,
            node: view.node.clone(),
            source,
        })?;
        listeners.push(l);
    }
    let w = Rc::new(Witness {
        view,
        paths,
        config_path,
        relay: RefCell::new(Relay::default()),
        links: RefCell::new(BTreeMap::new()),
        next_serial: Cell::new(0),
        had_quorum: Cell::new(false),
        subscribers: RefCell::new(Vec::new()),
        shutdown: Notify::new(),
        ping_int,
        ping_timeout,
    });
    tokio_uring::start(async move {
        for l in listeners {
            let w = Rc::clone(&w);
            super::port::spawn_listener("witness listener", async move {
                let mut conns = rep_nbd::server::spawn_acceptor("witness", move || l.accept())?;
                while let Some((stream, from)) = conns.recv().await {
                    tokio_uring::spawn(session::serve(Rc::clone(&w), stream, from));
                }
                Ok(())
            });
        }
        let security = w.view.security.clone();
        let ctl = super::sockets::bind_unix(
            &w.paths.ctl(),
            security.control_socket_group.as_deref(),
            "control-socket-group",
        )?;
        super::port::spawn_listener("control listener", control::serve(ctl, Rc::clone(&w)));
        write_atomic(
            &w.paths.pid(),
            format!("{}\n", std::process::id()).as_bytes(),
        )
        .map_err(|source| StartError::PidFile {
            path: w.paths.pid(),
            source,
        })?;
        w.publish();
        tracing::info!(resource = %w.paths.resource, node = %w.view.node, "up as the witness (no disk, no NBD export): waiting for {}", w.view.peers.iter().map(|p| p.node.as_str()).collect::<Vec<_>>().join(" and "));
        let bell = Rc::clone(&w);
        wait_for_stop(
            async move { bell.shutdown.notified().await },
            std::future::ready(()),
        )
        .await;
        let _ = std::fs::remove_file(w.paths.ctl());
        let _ = std::fs::remove_file(w.paths.pid());
        let _ = std::fs::remove_file(w.paths.status_json());
        let _ = regenerate_proc_status(&w.paths);
        tracing::info!(resource = %w.paths.resource, "down");
        Ok(0)
    })
}
