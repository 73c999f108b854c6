//! One data node's link at the witness: accepted, greeted (runtime/witness_link/greeting.rs),
//! then read until it goes quiet for longer than ping-int + ping-timeout (the data node pings
//! every ping-int) or closes.

use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::rc::Rc;

use rep_nbd::server::stream::{Reader, Stream};
use tokio::sync::mpsc;
use tokio_uring::net::TcpStream;

use super::{Linked, Witness};
use crate::core::{DiskState, Role};
use crate::runtime::link::wire::read_packet;
use crate::runtime::witness_link::greeting::{self, GREETING_TIMEOUT};
use crate::wire::codes::{disk_from, role_from};
use crate::wire::Packet;
use rep_resources::HmacAlg;

pub(super) async fn serve(w: Rc<Witness>, std_stream: StdTcpStream, from: SocketAddr) {
    let res = w.paths.resource.clone();
    let _ = std_stream.set_nodelay(true);
    let Some((stream, buffered)) = crate::runtime::tls::secure_accepted(
        TcpStream::from_std(std_stream),
        from,
        GREETING_TIMEOUT,
    )
    .await
    else {
        return;
    };
    let stream = Rc::new(stream);
    let mut reader = Reader::resume(Rc::clone(&stream), buffered);
    let net = &w.view.net;
    let secret = net
        .shared_secret
        .as_deref()
        .map(|s| (s, net.cram_hmac_alg.unwrap_or(HmacAlg::Sha1)));
    let peers = w.view.peers.clone();
    let greeted = greeting::greet(&stream, &mut reader, &w.view.node, secret, |node| {
        let Some(p) = peers.iter().find(|p| p.node == node) else {
            return Err(format!("{node} is not a host of resource {res}"));
        };
        match p.address {
            Some(a) if a.ip() != from.ip() => Err(format!(
                "{node} connected from {}, but its address is {} in the configuration",
                from.ip(),
                a.ip()
            )),
            _ => Ok(()),
        }
    })
    .await;
    let node = match greeted {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(resource = %res, "witness link from {from}: {e}");
            stream.close();
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel::<Packet>();
    let serial = w.next_serial.get() + 1;
    w.next_serial.set(serial);
    let replaced = w.links.borrow_mut().insert(
        node.clone(),
        Linked {
            tx: tx.clone(),
            serial,
            role: Role::Unknown,
            disk: DiskState::DUnknown,
        },
    );
    if replaced.is_some() {
        // The node reconnected before its old link timed out: that link is dead to it.
        let sends = w.relay.borrow_mut().unlinked(&node);
        w.send_all(sends);
    }
    w.relay.borrow_mut().linked(&node);
    tracing::info!(resource = %res, "{node} connected (from {from})");
    w.publish();
    let writer = greeting::spawn_writer(&stream, rx);
    drop(tx);
    let quiet = w.ping_int + w.ping_timeout;
    let why = loop {
        let packet = match tokio::time::timeout(quiet, read_packet(&mut reader)).await {
            Err(_) => {
                break format!(
                    "nothing for {} ms (ping-int + ping-timeout)",
                    quiet.as_millis()
                )
            }
            Ok(Ok(None)) => break "closed the connection".to_string(),
            Ok(Err(e)) => break e.to_string(),
            Ok(Ok(Some(p))) => p,
        };
        if !current(&w, &node, serial) {
            break "replaced by a newer connection".to_string();
        }
        match packet {
            Packet::Ping => reply(&w, &node, Packet::PingAck),
            Packet::PingAck => {}
            Packet::State { role, disk, .. } => {
                if let Some(l) = w.links.borrow_mut().get_mut(&node) {
                    l.role = role_from(role).unwrap_or(Role::Unknown);
                    l.disk = disk_from(disk).unwrap_or(DiskState::DUnknown);
                }
                w.publish();
            }
            Packet::RelayOutdate { id, node: target } => {
                tracing::info!(resource = %res, "{node} asks to have {target} outdated: relaying");
                let sends = w.relay.borrow_mut().request(&node, id, &target);
                w.send_all(sends);
            }
            Packet::RelayReply { id, role, disk, .. } => {
                let (r, d) = (role_from(role), disk_from(disk));
                tracing::info!(resource = %res, "{node} answers: {} / {}", r.unwrap_or(Role::Unknown), d.unwrap_or(DiskState::DUnknown));
                let sends = w.relay.borrow_mut().reply(&node, id, role, disk);
                w.send_all(sends);
            }
            other => {
                break format!(
                    "sent {}, which has no place on a witness link",
                    other.name()
                )
            }
        }
    };
    if current(&w, &node, serial) {
        w.links.borrow_mut().remove(&node);
        let sends = w.relay.borrow_mut().unlinked(&node);
        w.send_all(sends);
        tracing::warn!(resource = %res, "lost {node}: {why}");
        w.publish();
    }
    writer.abort();
    stream.close();
}

fn current(w: &Witness, node: &str, serial: u64) -> bool {
    w.links
        .borrow()
        .get(node)
        .is_some_and(|l| l.serial == serial)
}

fn reply(w: &Witness, node: &str, p: Packet) {
    if let Some(l) = w.links.borrow().get(node) {
        let _ = l.tx.send(p);
    }
}
