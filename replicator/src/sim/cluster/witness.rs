//! The diskless witness in the simulation (`SimConfig::witness`, docs/quorum.md "The
//! witness"): each data node's witness link comes up when it can, is cut by partitions and
//! lost with its node, and each end notices a dead link on its own after its pings time out
//! (the data node tells its engine `Input::WitnessSeen`, the witness its relay). fence-peer is
//! what the daemon does with a witness: the request goes to the witness, whose `Relay` (the
//! daemon's) forwards it to the other data node over that node's own witness link, one at a
//! time; the target carries it out as `AdminCmd::PeerOutdate` and its role and disk come back
//! as DRBD's exit code. A target the witness has no link to is unreachable (5); a requester
//! without a witness link, or whose link goes before the answer, gets 1.

use std::time::Duration;

use super::witness_link::{End, WitnessEv};
use super::world::{Cluster, Ev};
use crate::core::fence_code::{outdate_exit_code, relay_exit_code};
use crate::core::{AdminCmd, AdminId, Input, IoId};
use crate::wire::codes::{disk_code, disk_from, role_code, role_from};
use crate::wire::Packet;
use crate::witness::relay::{Relay, Send};

/// How long an end takes to declare a cut link dead: like the data link's, `ping-int` (the
/// simulator's 500 ms) plus `ping-timeout` (300 ms) at most.
const DEAD_AFTER_US: (u64, u64) = (300_000, 800_000);
/// Dial and greeting.
const GREETING_US: (u64, u64) = (1_000, 20_000);
/// A frame held by a cut is retried this often (TCP retransmits while the link lives).
const RETRANSMIT: Duration = Duration::from_millis(50);

const NAMES: [&str; 2] = ["node-a", "node-b"];

impl Cluster {
    /// Cut (or heal) node `i`'s link to the witness. No-op without a witness.
    pub fn set_witness_cut(&mut self, i: usize, cut: bool) {
        if !self.cfg.witness || self.wit.cut[i] == cut {
            return;
        }
        self.log(format!("witness link of node {i} cut={cut}"));
        self.wit.cut[i] = cut;
        if cut {
            if let Some(conn) = self.wit.conn[i] {
                self.witness_timeouts(i, conn);
            }
        } else {
            self.maybe_witness_link(i);
        }
    }

    pub fn witness_cut(&self, i: usize) -> bool {
        self.wit.cut[i]
    }

    /// Whether node `i`'s end of its witness link sees it up (what its engine was told).
    pub fn witness_seen(&self, i: usize) -> bool {
        self.wit.node_view[i].is_some()
    }

    /// Whether the witness sees node `i`'s link up.
    pub fn witness_sees(&self, i: usize) -> bool {
        self.wit.witness_view[i].is_some()
    }

    fn witness_timeouts(&mut self, i: usize, conn: u64) {
        for end in [End::Node, End::Witness] {
            let d = self.rand_us(DEAD_AFTER_US.0, DEAD_AFTER_US.1);
            self.schedule(d, Ev::Witness(WitnessEv::Timeout { node: i, end, conn }));
        }
    }

    /// Dial node `i`'s witness link if it can be up and the node holds no link (the witness
    /// may still hold the old one: the new greeting replaces it there).
    pub(super) fn maybe_witness_link(&mut self, i: usize) {
        let w = &self.wit;
        if !self.cfg.witness
            || w.down
            || !self.nodes[i].up
            || w.cut[i]
            || w.conn[i].is_some()
            || w.node_view[i].is_some()
        {
            return;
        }
        self.wit.next_conn += 1;
        let conn = self.wit.next_conn;
        self.wit.conn[i] = Some(conn);
        for end in [End::Node, End::Witness] {
            let d = self.rand_us(GREETING_US.0, GREETING_US.1);
            self.schedule(d, Ev::Witness(WitnessEv::Up { node: i, end, conn }));
        }
    }

    /// The witness dies and keeps nothing: its relay (requests it waits on, forwarded ones),
    /// its links. With `power` its host goes too, so nothing resets the nodes' sockets and each
    /// notices when its pings time out; otherwise its kernel resets them and they notice at
    /// once. A fence-peer waiting on it gets 1 (its link went before the answer). Down, and
    /// not dialled, until `restart_witness`. No-op without a witness.
    pub fn crash_witness(&mut self, power: bool) {
        if !self.cfg.witness || self.wit.down {
            return;
        }
        self.log(format!("the witness dies (power={power})"));
        self.wit.down = true;
        self.wit.relay = Relay::default();
        for i in 0..2 {
            self.wit.witness_view[i] = None;
            if let Some(conn) = self.wit.conn[i].take() {
                let d = if power {
                    self.rand_us(DEAD_AFTER_US.0, DEAD_AFTER_US.1)
                } else {
                    self.rand_us(50, 2_000)
                };
                self.schedule(
                    d,
                    Ev::Witness(WitnessEv::Timeout {
                        node: i,
                        end: End::Node,
                        conn,
                    }),
                );
            }
        }
    }

    /// The witness is started again (fresh: it remembers nothing); the nodes dial it.
    pub fn restart_witness(&mut self) {
        if !self.cfg.witness || !self.wit.down {
            return;
        }
        self.log("the witness restarts");
        self.wit.down = false;
        for i in 0..2 {
            self.maybe_witness_link(i);
        }
    }

    /// Node `i` lost power: its end of the witness link is gone at once; the witness notices
    /// when its pings time out.
    pub(super) fn witness_node_lost(&mut self, i: usize) {
        if !self.cfg.witness {
            return;
        }
        self.wit.node_view[i] = None;
        self.wit.asked.retain(|k, _| k.0 != i);
        self.wit.outdating.retain(|k, _| k.0 != i);
        self.wit.writer[i] = false;
        if let Some(conn) = self.wit.conn[i].take() {
            let d = self.rand_us(DEAD_AFTER_US.0, DEAD_AFTER_US.1);
            self.schedule(
                d,
                Ev::Witness(WitnessEv::Timeout {
                    node: i,
                    end: End::Witness,
                    conn,
                }),
            );
        }
    }

    fn view(&self, i: usize, end: End) -> Option<u64> {
        match end {
            End::Node => self.wit.node_view[i],
            End::Witness => self.wit.witness_view[i],
        }
    }

    fn set_view(&mut self, i: usize, end: End, conn: Option<u64>) {
        let up = conn.is_some();
        match end {
            End::Node => {
                self.wit.node_view[i] = conn;
                self.log(format!("node {i} sees its witness link up={up}"));
                if !up {
                    // fence-peer requests waiting on this link: "the connection to the witness
                    // went before its answer" (1).
                    let mut lost: Vec<(u64, (u64, IoId))> = self
                        .wit
                        .asked
                        .iter()
                        .filter(|(k, _)| k.0 == i)
                        .map(|(k, v)| (k.1, *v))
                        .collect();
                    lost.sort_by_key(|x| x.0);
                    for (id, (gen, io)) in lost {
                        self.wit.asked.remove(&(i, id));
                        self.log(format!(
                            "fence-peer of node {i}: its witness link went before the answer (1)"
                        ));
                        self.schedule(
                            Duration::ZERO,
                            Ev::HandlerDone {
                                node: i,
                                gen,
                                io,
                                exit: Some(1),
                            },
                        );
                    }
                }
                self.feed(i, Input::WitnessSeen { connected: up });
            }
            End::Witness => {
                let old = std::mem::replace(&mut self.wit.witness_view[i], conn);
                self.log(format!("the witness sees node {i}'s link up={up}"));
                if up && old.is_some() {
                    // A new greeting replaces the old link: what was forwarded on it is lost.
                    let out = self.wit.relay.unlinked(NAMES[i]);
                    self.relay_out(out);
                }
                if up {
                    self.wit.relay.linked(NAMES[i]);
                } else {
                    let out = self.wit.relay.unlinked(NAMES[i]);
                    self.relay_out(out);
                }
            }
        }
        self.maybe_witness_link(i);
    }

    pub(super) fn witness_event(&mut self, ev: WitnessEv) {
        match ev {
            WitnessEv::Up { node, end, conn } => {
                if self.wit.conn[node] != Some(conn) {
                    return;
                }
                if self.wit.cut[node] {
                    // Cut before the greeting completed: this connection never was.
                    self.wit.conn[node] = None;
                    return;
                }
                self.set_view(node, end, Some(conn));
            }
            WitnessEv::Timeout { node, end, conn } => {
                if self.view(node, end) != Some(conn) {
                    return;
                }
                let closed = self.wit.conn[node] != Some(conn);
                if !closed && !self.wit.cut[node] {
                    // The cut healed before the pings timed out.
                    return;
                }
                if !closed {
                    self.wit.conn[node] = None;
                    // The other end, if it still believes in the link, notices in its turn.
                    let other = match end {
                        End::Node => End::Witness,
                        End::Witness => End::Node,
                    };
                    if self.view(node, other) == Some(conn) {
                        let d = self.rand_us(DEAD_AFTER_US.0, DEAD_AFTER_US.1);
                        self.schedule(
                            d,
                            Ev::Witness(WitnessEv::Timeout {
                                node,
                                end: other,
                                conn,
                            }),
                        );
                    }
                }
                self.set_view(node, end, None);
            }
            WitnessEv::Frame {
                node,
                to,
                conn,
                packet,
            } => {
                let arrived = self.view(node, to) == Some(conn);
                // Before the receiving end has completed the greeting of a live connection,
                // the frame waits (it is behind the greeting in the stream).
                let greeting = !arrived && self.wit.conn[node] == Some(conn);
                if !arrived && !greeting {
                    return;
                }
                if self.wit.cut[node] || greeting {
                    self.schedule(
                        RETRANSMIT,
                        Ev::Witness(WitnessEv::Frame {
                            node,
                            to,
                            conn,
                            packet,
                        }),
                    );
                    return;
                }
                match to {
                    End::Witness => self.witness_receives(node, packet),
                    End::Node => self.node_receives_from_witness(node, conn, packet),
                }
            }
        }
    }

    /// Send `packet` from `from`'s end of node `i`'s witness link, if that end sees
    /// connection `conn` (any connection: `None`). Whether it was sent.
    fn witness_frame(&mut self, i: usize, from: End, conn: Option<u64>, packet: Packet) -> bool {
        let Some(c) = self.view(i, from) else {
            return false;
        };
        if conn.is_some_and(|want| want != c) {
            return false;
        }
        let to = match from {
            End::Node => End::Witness,
            End::Witness => End::Node,
        };
        let lat = self.rand_us(20, 400);
        let slot = &mut self.wit.last_frame[i][usize::from(to == End::Witness)];
        let when = (self.now + lat).max(*slot);
        *slot = when;
        self.seq += 1;
        self.queue.insert(
            (when, self.seq),
            Ev::Witness(WitnessEv::Frame {
                node: i,
                to,
                conn: c,
                packet,
            }),
        );
        true
    }

    fn relay_out(&mut self, out: Vec<Send>) {
        for s in out {
            let Some(i) = NAMES.iter().position(|n| *n == s.to) else {
                continue;
            };
            self.witness_frame(i, End::Witness, None, s.packet);
        }
    }

    fn witness_receives(&mut self, from: usize, packet: Packet) {
        let out = match packet {
            Packet::RelayOutdate { id, node } => {
                self.log(format!(
                    "the witness: node {from} asks to have {node} outdated"
                ));
                self.wit.relay.request(NAMES[from], id, &node)
            }
            Packet::RelayReply { id, role, disk, .. } => {
                self.wit.relay.reply(NAMES[from], id, role, disk)
            }
            _ => Vec::new(),
        };
        self.relay_out(out);
    }

    fn node_receives_from_witness(&mut self, i: usize, conn: u64, packet: Packet) {
        match packet {
            Packet::RelayOutdate { id, node } => {
                let admin = self.nodes[i].next_admin;
                self.nodes[i].next_admin = admin.next();
                self.wit.outdating.insert((i, admin), (id, conn));
                self.log(format!(
                    "the witness asks node {i} to outdate itself (for {node})"
                ));
                self.feed(
                    i,
                    Input::Admin {
                        id: admin,
                        cmd: AdminCmd::PeerOutdate,
                    },
                );
            }
            Packet::RelayReply {
                id,
                reached,
                role,
                disk,
            } => {
                let Some((gen, io)) = self.wit.asked.remove(&(i, id)) else {
                    return;
                };
                let exit = relay_exit_code(reached, role_from(role).zip(disk_from(disk)));
                self.log(format!(
                    "fence-peer of node {i} through the witness: exit {exit}"
                ));
                self.schedule(
                    Duration::ZERO,
                    Ev::HandlerDone {
                        node: i,
                        gen,
                        io,
                        exit: Some(exit),
                    },
                );
            }
            _ => {}
        }
    }

    /// Node `i`'s answer to an outdate request the witness forwarded, if `id` was one: its
    /// role and disk go back over the link the request came on.
    pub(super) fn witness_outdate_answered(&mut self, i: usize, id: AdminId) -> bool {
        let Some((relay_id, conn)) = self.wit.outdating.remove(&(i, id)) else {
            return false;
        };
        let e = &self.nodes[i].engine;
        let (role, disk) = (e.role(), e.disk());
        self.log(format!(
            "node {i} answers the witness: {role}/{disk} ({})",
            outdate_exit_code(role, disk)
        ));
        let packet = Packet::RelayReply {
            id: relay_id,
            reached: true,
            role: role_code(role),
            disk: disk_code(disk),
        };
        self.witness_frame(i, End::Node, Some(conn), packet);
        true
    }

    /// `node`'s fence-peer, with a witness: the request goes to the witness (as
    /// runtime/outdater.rs does, whether or not the data link is back).
    pub(super) fn witness_fence(&mut self, i: usize, gen: u64, io: IoId) {
        self.wit.next_id += 1;
        let id = self.wit.next_id;
        let packet = Packet::RelayOutdate {
            id,
            node: NAMES[1 - i].to_owned(),
        };
        if self.witness_frame(i, End::Node, None, packet) {
            self.log(format!(
                "fence-peer of node {i}: asks the witness to have node {} outdated",
                1 - i
            ));
            self.wit.asked.insert((i, id), (gen, io));
        } else {
            self.log(format!(
                "fence-peer of node {i}: no link to the witness (1)"
            ));
            self.feed(i, Input::HandlerDone { io, exit: Some(1) });
        }
    }
}
