//! Driving the engines: an input fed to a node, every output it asks for performed (disk and
//! metadata I/O scheduled, packets sent, handlers run, admin answers kept), then the checks.

use std::collections::HashMap;
use std::time::Duration;

use super::world::{Client, ClientKind, Cluster, Ev};
use crate::core::fence_code::outdate_exit_code;
use crate::core::{ConnState, DiskOpKind, Input, Output, PeerDiskOp, ReqId};
use crate::digest::Digests;
use crate::sim::config::{BLOCK, SECTOR};
use crate::sim::model::WriteId;
use crate::wire::Packet;
use rep_resources::{DigestAlg, Protocol};

/// `alg.digest_blocks(data)`, with the digest of an all-zero 4 KiB block computed once: most
/// of a simulated device is zeroes, and hashing them was a fifth of the simulator's time
/// (verify and checksum-based resync hash whole devices on both nodes).
fn digest_blocks(alg: DigestAlg, data: &[u8]) -> Vec<u8> {
    const BLOCK_BYTES: usize = BLOCK as usize;
    static ZERO: [u8; BLOCK_BYTES] = [0; BLOCK_BYTES];
    thread_local! {
        static ZERO_DIGESTS: std::cell::RefCell<HashMap<DigestAlg, Vec<u8>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    ZERO_DIGESTS.with(|memo| {
        let mut memo = memo.borrow_mut();
        let zero = memo.entry(alg).or_insert_with(|| alg.digest_blocks(&ZERO));
        let mut out = Vec::with_capacity(data.len().div_ceil(BLOCK_BYTES) * alg.digest_len());
        for block in data.chunks(BLOCK_BYTES) {
            if block == &ZERO[..] {
                out.extend_from_slice(zero);
            } else {
                out.extend_from_slice(&alg.digest_blocks(block));
            }
        }
        out
    })
}

impl Cluster {
    /// Feed one input to node `i`, perform everything it asks for, and check the invariants.
    pub fn feed(&mut self, i: usize, input: Input) {
        if !self.nodes[i].up {
            return;
        }
        let now = self.at();
        self.nodes[i].engine.handle(now, input);
        self.drain(i);
        // Before a power loss may replace the engine: what it changed, it may have sent.
        let changes = self.nodes[i].engine.take_generation_log();
        self.generations.check(i, &changes);
        if self.nodes[i].dying {
            self.power_loss(i);
            return;
        }
        if self.nodes[i].die_on_link_loss && self.nodes[i].engine.cstate() < ConnState::Connected {
            self.log(format!(
                "crash {} as it notices the link loss",
                self.nodes[i].name
            ));
            self.power_loss(i);
            return;
        }
        self.after_input(i);
    }

    pub(super) fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].engine.poll_output() {
            if self.nodes[i].dying {
                // The node lost power in the middle of this input: what it does from here on
                // never happens.
                continue;
            }
            self.perform(i, out);
        }
    }

    /// Feed an input from inside `perform` (completions the driver answers at once).
    pub(super) fn feed_nested(&mut self, i: usize, input: Input) {
        let now = self.at();
        self.nodes[i].engine.handle(now, input);
    }

    pub(super) fn perform(&mut self, i: usize, out: Output) {
        let gen = self.nodes[i].gen;
        match out {
            Output::Disk { io, req, op } => {
                let data = match op {
                    DiskOpKind::Write { .. } => match self.nodes[i].clients.get(&req) {
                        Some(Client {
                            kind: ClientKind::Write { data, .. },
                            ..
                        }) => *data,
                        _ => None,
                    },
                    _ => None,
                };
                let len = match op {
                    DiskOpKind::Read { len, .. } | DiskOpKind::Write { len, .. } => u64::from(len),
                    _ => 0,
                };
                // About 1 GiB/s plus a seek.
                let mut d = self.rand_us(10, 300) + Duration::from_nanos(len);
                if matches!(
                    op,
                    DiskOpKind::Write { .. }
                        | DiskOpKind::Trim { .. }
                        | DiskOpKind::WriteZeroes { .. }
                ) {
                    d += self.nodes[i].disk_delay;
                }
                self.schedule(
                    d,
                    Ev::Disk {
                        node: i,
                        gen,
                        io,
                        req,
                        op,
                        data,
                    },
                );
            }
            Output::Hash { io, alg, data } => {
                let digests = digest_blocks(alg, &data);
                self.feed_nested(i, Input::HashDone { io, digests });
            }
            Output::PeerDisk { io, op } => {
                let len = match &op {
                    PeerDiskOp::Write { data, .. } => data.len() as u64,
                    PeerDiskOp::Read { len, .. } | PeerDiskOp::ReadSparse { len, .. } => {
                        u64::from(*len)
                    }
                    _ => 0,
                };
                let mut d = self.rand_us(10, 300) + Duration::from_nanos(len);
                if matches!(op, PeerDiskOp::Write { .. } | PeerDiskOp::Zero { .. }) {
                    d += self.nodes[i].disk_delay;
                }
                self.schedule(
                    d,
                    Ev::PeerDisk {
                        node: i,
                        gen,
                        io,
                        op,
                    },
                );
            }
            Output::Meta { io, op } => {
                let delay = self.meta_queue_delay(i);
                self.schedule(
                    delay,
                    Ev::Meta {
                        node: i,
                        gen,
                        io,
                        op,
                    },
                );
            }
            Output::OpenDisk { io } => {
                let result = self.open_meta(i);
                self.feed_nested(i, Input::DiskOpened { io, result });
            }
            Output::CloseDisk { io } => {
                let delay = self.meta_queue_delay(i);
                self.schedule(delay, Ev::CloseDisk { node: i, gen, io });
            }
            Output::ClientReply { req, result } => {
                if let Err(e) = &result {
                    self.log(format!("node {i}: request {req} failed: {}", e.message));
                }
                self.client_reply(i, req, result.is_ok())
            }
            Output::ClientData { req, data } => {
                if let Some(Client {
                    kind: ClientKind::Read { data: d, .. },
                    ..
                }) = self.nodes[i].clients.get_mut(&req)
                {
                    *d = Some(data);
                }
            }
            Output::Handler { name } => {
                if name == "unfence-peer" {
                    self.owes_unfence[i] = false;
                }
                // With a witness (and protocol C) a partition never lets both sides write:
                // their reconnect is never a split brain. (The schedules force nothing but the
                // initial full sync.)
                if name == "split-brain" && self.cfg.witness && self.cfg.protocol == Protocol::C {
                    panic!("invariant violated: node {i} detected a split brain, with a witness");
                }
                self.handlers_run.push((i, name));
            }
            // No other resources in the simulation.
            Output::CheckDependency => {
                self.feed_nested(i, Input::DependencySyncing { syncing: false });
            }
            Output::AdminReply { id, result } => {
                if self.witness_outdate_answered(i, id) {
                    return;
                }
                if let Some((from, from_gen, hio)) = self.fence_waits.remove(&(i, id)) {
                    // The peer carried out fence-peer's outdate request: its answer.
                    let e = &self.nodes[i].engine;
                    let code = outdate_exit_code(e.role(), e.disk());
                    self.log(format!(
                        "fence-peer of node {from}: node {i} answers {code} ({result:?})"
                    ));
                    let (lo, hi) = self.cfg.fence_answer_us;
                    let d = self.rand_us(lo, hi);
                    self.schedule(
                        d,
                        Ev::HandlerDone {
                            node: from,
                            gen: from_gen,
                            io: hio,
                            exit: Some(code),
                        },
                    );
                    return;
                }
                self.nodes[i].admin_replies.insert(id, result);
            }
            Output::RunHandler { io, name } => {
                self.handlers_run.push((i, name));
                if name == "fence-peer" {
                    let (lo, hi) = self.cfg.fence_peer_us;
                    let d = self.rand_us(lo, hi);
                    self.schedule(d, Ev::Fence { node: i, gen, io });
                } else {
                    // Other waited handlers (before-resync-target) succeed after a while.
                    let d = self.rand_us(50, 3000);
                    self.schedule(
                        d,
                        Ev::HandlerDone {
                            node: i,
                            gen,
                            io,
                            exit: Some(0),
                        },
                    );
                }
            }
            Output::StateChanged => {}
            Output::Connect => {
                self.nodes[i].wants_link = true;
                self.maybe_link();
            }
            Output::Disconnect => {
                self.nodes[i].wants_link = false;
                self.drop_link(i);
            }
            Output::CloseLink { link } => {
                if self.link == Some(link) {
                    self.drop_link(i);
                }
            }
            Output::Send { link, packet } => {
                match &packet {
                    Packet::Zero { id, .. } => {
                        if let Some(wid) = self.write_id(i, ReqId(*id)) {
                            self.model.piece_sent(wid, i, link);
                        }
                    }
                    Packet::Barrier { epoch } => self.model.barrier_sent(i, link, *epoch),
                    _ => {}
                }
                self.send(i, link, packet)
            }
            Output::SendWrite {
                link,
                req,
                offset,
                buf_offset,
                len,
                fua,
            } => {
                let (wid, data) = match self.nodes[i].clients.get(&req) {
                    Some(Client {
                        kind: ClientKind::Write { wid, data },
                        ..
                    }) => {
                        let piece = data
                            .as_ref()
                            .and_then(|d| d.piece(buf_offset as usize, len as usize));
                        (Some(*wid), piece)
                    }
                    _ => (None, None),
                };
                let Some(data) = data else {
                    panic!(
                        "invariant violated: node {i} sends bytes {buf_offset}+{len} of request {req}, which has no such data"
                    );
                };
                if let Some(wid) = wid {
                    self.model.piece_sent(wid, i, link);
                }
                if let Some(s) = self.watch_sector {
                    if offset / SECTOR <= s && s < (offset + u64::from(len)) / SECTOR {
                        self.log(format!(
                            "node {i} sends write {wid:?} (request {req}) covering sector {s}"
                        ));
                    }
                }
                self.send(
                    i,
                    link,
                    Packet::Data {
                        id: req.0,
                        offset,
                        fua,
                        data: data.into(),
                    },
                );
            }
        }
    }

    pub(super) fn write_id(&self, i: usize, req: ReqId) -> Option<WriteId> {
        match self.nodes[i].clients.get(&req) {
            Some(Client {
                kind: ClientKind::Write { wid, .. },
                ..
            }) => Some(*wid),
            _ => None,
        }
    }
}
