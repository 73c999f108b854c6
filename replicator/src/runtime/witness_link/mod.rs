//! A data node's link to the diskless witness (docs/quorum.md, "The witness"): one TCP
//! connection that this node dials (the witness only listens), opened by the greeting
//! (`greeting.rs`), kept alive by pings both ways, carrying our `State` (so the witness's
//! `status` shows our role and disk) and outdate relays: ours ("have the data peer outdated",
//! the fence-peer of a resource with a witness) and the data peer's, which the witness
//! forwards to us. The engine learns only whether the witness is there (`Input::WitnessSeen`),
//! which quorum's tiebreaker counts.

pub mod greeting;
pub mod state;

use std::rc::Rc;
use std::time::Duration;

use rep_nbd::server::stream::{Reader, Stream};
use tokio::sync::{mpsc, oneshot};

use super::driver::Driver;
use super::link::state::LinkSettings;
use super::link::wire::{connect_to_peer, read_packet};
use crate::core::fence_code::relay_exit_code;
use crate::core::{AdminCmd, Input};
use crate::runtime::tls::PeerStream;
use crate::wire::codes::{disk_code, disk_from, role_code, role_from};
use crate::wire::Packet;
use rep_resources::HmacAlg;
use state::WitnessLink;

/// How long a fence-peer waits for the witness's verdict (the witness itself waits for a
/// linked target as long as its link lives).
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the witness is, from the running configuration.
fn settings(driver: &Driver) -> Option<(LinkSettings, Duration, Duration)> {
    let view = driver.view();
    let w = view.witness()?;
    let my = w.my_address.or(view.address)?;
    let ping_int = Duration::from_secs(u64::from(view.net.ping_int_s.max(1)));
    let ping_timeout = Duration::from_millis(u64::from(view.net.ping_timeout_ds.max(1)) * 100);
    Some((
        LinkSettings {
            my_addr: my,
            peer_addr: w.address?,
            node: view.node.clone(),
            connect_int: Duration::from_secs(u64::from(view.net.connect_int_s.max(1))),
        },
        ping_int,
        ping_timeout,
    ))
}

/// Start dialling the witness, if the resource has one; the link lives until the daemon stops.
pub fn start(driver: &Rc<Driver>) {
    let Some(w) = driver.view().witness().map(|w| w.node.clone()) else {
        return;
    };
    if driver.witness.set(Rc::new(WitnessLink::new(w))).is_err() {
        return;
    }
    driver.feed(Input::WitnessSeen { connected: false });
    tokio_uring::spawn(dial_loop(Rc::clone(driver)));
}

async fn dial_loop(driver: Rc<Driver>) {
    let res = driver.paths.resource.clone();
    let mut warned = false;
    while !driver.shutting_down.get() {
        let Some((s, ping_int, ping_timeout)) = settings(&driver) else {
            return;
        };
        match connect_to_peer(&s).await {
            Ok(stream) => {
                warned = false;
                session(&driver, stream, ping_int, ping_timeout).await;
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(resource = %res, "cannot reach the witness at {}: {e} (retrying every {} s)", s.peer_addr, s.connect_int.as_secs());
            }
            Err(_) => {}
        }
        if driver.shutting_down.get() {
            break;
        }
        tokio::time::sleep(s.connect_int).await;
    }
}

async fn session(
    driver: &Rc<Driver>,
    stream: PeerStream,
    ping_int: Duration,
    ping_timeout: Duration,
) {
    let Some(link) = driver.witness.get().cloned() else {
        return;
    };
    let res = driver.paths.resource.clone();
    let view = driver.view();
    let stream = Rc::new(stream);
    let mut reader = Reader::new(Rc::clone(&stream));
    let secret = view
        .net
        .shared_secret
        .as_deref()
        .map(|s| (s, view.net.cram_hmac_alg.unwrap_or(HmacAlg::Sha1)));
    let expect = link.name.clone();
    let greeted = greeting::greet(&stream, &mut reader, &view.node, secret, |node| {
        if node == expect {
            Ok(())
        } else {
            Err(format!(
                "{node} answered at the witness's address, but the witness is {expect}"
            ))
        }
    })
    .await;
    if let Err(e) = greeted {
        tracing::warn!(resource = %res, "witness {}: {e}", link.name);
        stream.close();
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel::<Packet>();
    *link.tx.borrow_mut() = Some(tx.clone());
    tracing::info!(resource = %res, "connected to the witness {}", link.name);
    let writer = greeting::spawn_writer(&stream, rx);
    let pinger = {
        let tx = tx.clone();
        tokio_uring::spawn(async move {
            loop {
                tokio::time::sleep(ping_int).await;
                if tx.send(Packet::Ping).is_err() {
                    break;
                }
            }
        })
    };
    driver.feed(Input::WitnessSeen { connected: true });
    let s = driver.status();
    link.announce(role_code(s.role), disk_code(s.disk));
    let why = loop {
        let next = tokio::time::timeout(ping_int + ping_timeout, read_packet(&mut reader)).await;
        let packet = match next {
            Err(_) => {
                break format!(
                    "nothing from the witness for {} ms (ping-int + ping-timeout)",
                    (ping_int + ping_timeout).as_millis()
                )
            }
            Ok(Ok(None)) => break "the witness closed the connection".to_string(),
            Ok(Err(e)) => break format!("{e}"),
            Ok(Ok(Some(p))) => p,
        };
        match packet {
            Packet::Ping => {
                let _ = tx.send(Packet::PingAck);
            }
            Packet::PingAck => {}
            Packet::RelayOutdate { id, node } => {
                tokio_uring::spawn(serve_relayed(Rc::clone(driver), tx.clone(), id, node));
            }
            Packet::RelayReply {
                id,
                reached,
                role,
                disk,
            } => {
                if let Some(waiter) = link.pending.borrow_mut().remove(&id) {
                    let _ = waiter.send((reached, role, disk));
                }
            }
            other => break format!("unexpected {} from the witness", other.name()),
        }
    };
    tracing::warn!(resource = %res, "lost the witness {}: {why}", link.name);
    link.gone();
    drop(tx);
    pinger.abort();
    writer.abort();
    stream.close();
    driver.feed(Input::WitnessSeen { connected: false });
}

/// The data peer asks, through the witness, that we outdate our disk: as the built-in
/// outdater's request (runtime/outdater.rs), answered on the witness link.
async fn serve_relayed(
    driver: Rc<Driver>,
    tx: mpsc::UnboundedSender<Packet>,
    id: u64,
    node: String,
) {
    let res = driver.paths.resource.clone();
    let view = driver.view();
    if view.peer_node.as_deref() == Some(node.as_str()) {
        tracing::info!(resource = %res, "the data peer {node} asks, through the witness, to outdate our disk");
        if let Err(refusal) = driver.admin(AdminCmd::PeerOutdate).await {
            tracing::warn!(resource = %res, "outdate request from {node}: {refusal}");
        }
    } else {
        tracing::warn!(resource = %res, "the witness relays an outdate request from {node}, which is not our data peer: not outdated");
    }
    let s = driver.status();
    let _ = tx.send(Packet::RelayReply {
        id,
        reached: true,
        role: role_code(s.role),
        disk: disk_code(s.disk),
    });
}

/// Our fence-peer through the witness: ask it to have the data peer outdated; DRBD's
/// fence-peer exit code (4 outdated, 3 Inconsistent or no disk, 6 the peer is Primary,
/// 5 the witness cannot reach it, 1 no answer).
pub async fn relay_outdate(driver: Rc<Driver>) -> i32 {
    let res = driver.paths.resource.clone();
    let Some(link) = driver.witness.get().cloned() else {
        return 1;
    };
    let peer = driver.view().peer_node.clone().unwrap_or_default();
    if driver.status().cstate >= crate::core::ConnState::Connected {
        // Connected again: the engine ignores a verdict now, and asking would only make the
        // peer outdate a disk we are connected to.
        tracing::info!(resource = %res, "fence-peer (through the witness): connected to {peer} again, not asking");
        return 1;
    }
    let id = link.next_id.get() + 1;
    link.next_id.set(id);
    let (answer_tx, answer) = oneshot::channel();
    link.pending.borrow_mut().insert(id, answer_tx);
    if !link.send(Packet::RelayOutdate {
        id,
        node: peer.clone(),
    }) {
        link.pending.borrow_mut().remove(&id);
        tracing::error!(resource = %res, "fence-peer: no connection to the witness {}: cannot have {peer} outdated", link.name);
        return 1;
    }
    tracing::info!(resource = %res, "fence-peer: asking the witness {} to have {peer} outdated", link.name);
    match tokio::time::timeout(RELAY_TIMEOUT, answer).await {
        Ok(Ok((reached, role, disk))) => {
            let answer = role_from(role).zip(disk_from(disk));
            let code = relay_exit_code(reached, answer);
            match (reached, answer) {
                (false, _) => {
                    tracing::warn!(resource = %res, "fence-peer: the witness has no connection to {peer} either: it has no quorum (taken as dead)")
                }
                (true, None) => {
                    tracing::error!(resource = %res, "fence-peer: an invalid answer from the witness")
                }
                (true, Some((role, disk))) => {
                    tracing::info!(resource = %res, "fence-peer (through the witness): {peer} is {role}/{disk}: exit code {code}")
                }
            }
            code
        }
        Ok(Err(_)) => {
            tracing::error!(resource = %res, "fence-peer: the connection to the witness went before its answer");
            1
        }
        Err(_) => {
            link.pending.borrow_mut().remove(&id);
            tracing::error!(resource = %res, "fence-peer: no answer from the witness within {} s", RELAY_TIMEOUT.as_secs());
            1
        }
    }
}
