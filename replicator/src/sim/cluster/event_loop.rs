//! The event queue: simulated time advanced to the next event or engine timer, and each event
//! (a delivered frame, a finished disk, metadata or handler job, a link change) handed to its
//! node.

use std::time::Duration;

use super::storage::{failing_disk, io_failure};
use super::world::{Cluster, Ev};
use crate::core::{
    AdminCmd, ConnState, DiskOpKind, DiskState, Input, MetaOpKind, PeerDiskOp, ReqId,
};
use crate::wire::Packet;

impl Cluster {
    /// Process events and timers up to `d` from now.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let next_ev = self.queue.keys().next().map(|k| k.0);
            let mut next_timer: Option<(Duration, usize)> = None;
            for i in 0..2 {
                let n = &self.nodes[i];
                if !n.up {
                    continue;
                }
                if let Some(t) = n.engine.next_timeout() {
                    let t = t.saturating_duration_since(self.base);
                    // At least a millisecond between timer inputs: a timer that is due but
                    // makes no progress must not spin.
                    let t = t.max(n.last_timer + Duration::from_millis(1));
                    if next_timer.is_none_or(|(nt, _)| t < nt) {
                        next_timer = Some((t, i));
                    }
                }
            }
            let ev_first = match (next_ev, next_timer) {
                (Some(e), Some((t, _))) => e <= t,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if ev_first {
                let Some(((t, _), _)) = self.queue.first_key_value() else {
                    break;
                };
                if *t > until {
                    break;
                }
                self.now = self.now.max(*t);
                if let Some((_, ev)) = self.queue.pop_first() {
                    self.event(ev);
                }
            } else if let Some((t, i)) = next_timer {
                if t > until {
                    break;
                }
                self.now = self.now.max(t);
                self.nodes[i].last_timer = self.now;
                self.feed(i, Input::Timer);
            }
        }
        self.now = until;
    }

    pub(super) fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, link, packet } => {
                if self.link != Some(link) && !matches!(packet, Packet::Bye | Packet::ByeOutdated) {
                    return;
                }
                if self.nodes[to].up {
                    match &packet {
                        Packet::WriteAck { id } => {
                            if let Some(wid) = self.write_id(to, ReqId(*id)) {
                                self.model.piece_written(wid, link);
                            }
                        }
                        Packet::RecvAck { id } => {
                            if let Some(wid) = self.write_id(to, ReqId(*id)) {
                                self.model.piece_received(wid, link);
                            }
                        }
                        Packet::BarrierAck { epoch } => self.model.barrier_acked(to, link, *epoch),
                        _ => {}
                    }
                }
                self.feed(to, Input::Packet { link, packet });
            }
            Ev::LinkDown { to, link, loss } => self.feed(to, Input::LinkDown { link, loss }),
            Ev::LinkUp { link } => {
                if self.link == Some(link) {
                    let nonces = [self.nonce(), self.nonce()];
                    self.feed(
                        0,
                        Input::LinkUp {
                            link,
                            dialer: true,
                            peer_node: "node-b".into(),
                            nonce: nonces[0],
                        },
                    );
                    self.feed(
                        1,
                        Input::LinkUp {
                            link,
                            dialer: false,
                            peer_node: "node-a".into(),
                            nonce: nonces[1],
                        },
                    );
                }
            }
            Ev::Disk {
                node,
                gen,
                io,
                req,
                op,
                data,
            } => {
                if self.nodes[node].gen != gen {
                    return;
                }
                let result = self.client_disk_op(node, req, op, data);
                match op {
                    DiskOpKind::Write { offset, len, .. }
                    | DiskOpKind::Trim { offset, len, .. }
                    | DiskOpKind::WriteZeroes { offset, len, .. } => self.watch_disk(
                        node,
                        &format!("client write {req} {op:?}"),
                        offset,
                        u64::from(len),
                    ),
                    DiskOpKind::Flush => self.watch_disk(node, "flush", 0, u64::MAX / 2),
                    DiskOpKind::Read { .. } => {}
                }
                self.feed(
                    node,
                    Input::DiskDone {
                        io,
                        result: result.map_err(|e| io_failure(&e)),
                    },
                );
            }
            Ev::Meta { node, gen, io, op } => {
                if self.nodes[node].gen != gen || !self.nodes[node].up {
                    return;
                }
                let result = self.apply_meta(node, &op);
                if self.nodes[node].dying {
                    // The write tore: power is gone in the middle of it.
                    self.power_loss(node);
                    return;
                }
                if result.is_ok() && matches!(op, MetaOpKind::Superblock { .. }) {
                    if let Some(why) = self.nodes[node].claim_pending.take() {
                        self.check_node(node, why);
                    }
                }
                self.feed(node, Input::MetaDone { io, result });
            }
            Ev::HandlerDone {
                node,
                gen,
                io,
                exit,
            } => {
                if self.nodes[node].gen == gen && self.nodes[node].up {
                    self.feed(node, Input::HandlerDone { io, exit });
                    // Only fence-peer answers 4, 5 or 7 here (before-resync-target answers 0).
                    let outdating = matches!(exit, Some(4 | 5 | 7));
                    if outdating && self.nodes[node].engine.pdsk() == DiskState::Outdated {
                        self.owes_unfence[node] = true;
                    }
                }
            }
            Ev::Fence { node, gen, io } => {
                if self.nodes[node].gen != gen || !self.nodes[node].up {
                    return;
                }
                if self.cfg.witness {
                    // The daemon with a witness: fence-peer is relayed through it.
                    self.witness_fence(node, gen, io);
                    return;
                }
                let peer = 1 - node;
                if self.nodes[node].engine.cstate() >= ConnState::Connected {
                    // Connected again: asking the peer now would only break the new link.
                    self.feed(node, Input::HandlerDone { io, exit: Some(1) });
                    return;
                }
                if !self.nodes[peer].up {
                    self.log(format!(
                        "fence-peer of node {node}: node {peer} is down (5)"
                    ));
                    self.feed(node, Input::HandlerDone { io, exit: Some(5) });
                    return;
                }
                let id = self.nodes[peer].next_admin;
                self.nodes[peer].next_admin = id.next();
                self.fence_waits.insert((peer, id), (node, gen, io));
                self.log(format!(
                    "fence-peer of node {node}: asks node {peer} to outdate itself"
                ));
                self.feed(
                    peer,
                    Input::Admin {
                        id,
                        cmd: AdminCmd::PeerOutdate,
                    },
                );
            }
            Ev::Witness(ev) => self.witness_event(ev),
            Ev::CloseDisk { node, gen, io } => {
                if self.nodes[node].gen != gen || !self.nodes[node].up {
                    return;
                }
                self.nodes[node].meta = None;
                self.feed(node, Input::DiskClosed { io });
            }
            Ev::PeerDisk { node, gen, io, op } => {
                if self.nodes[node].gen != gen {
                    return;
                }
                if let PeerDiskOp::ReadSparse { offset, len } = op {
                    let n = &self.nodes[node];
                    let result = if n.disk_failing {
                        Err(failing_disk())
                    } else {
                        n.disk.read_sparse(offset, len as usize)
                    };
                    self.feed(
                        node,
                        Input::SparseReadDone {
                            io,
                            result: result.map_err(|e| io_failure(&e)),
                        },
                    );
                    return;
                }
                let touched = match &op {
                    PeerDiskOp::Write { offset, data, .. } => Some((*offset, data.len() as u64)),
                    PeerDiskOp::Zero { offset, len, .. } => Some((*offset, u64::from(*len))),
                    PeerDiskOp::Flush => Some((0, u64::MAX / 2)),
                    PeerDiskOp::Read { .. } | PeerDiskOp::ReadSparse { .. } => None,
                };
                let r = self.peer_disk_op(node, op);
                if let Some((off, len)) = touched {
                    self.watch_disk(node, &format!("peer disk op io {io}"), off, len);
                }
                self.feed(
                    node,
                    Input::PeerDiskDone {
                        io,
                        result: r.map_err(|e| io_failure(&e)),
                    },
                );
            }
        }
    }
}
