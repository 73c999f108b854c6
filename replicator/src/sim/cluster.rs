//! A two-node cluster in one thread: two engines, a simulated network (per-channel FIFO with
//! random latency, silent cuts and resets) and simulated disks (volatile cache lost on crash),
//! driven by a seeded event queue. Everything is deterministic in the seed, so a failing
//! schedule replays exactly.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::disk::SimDisk;
use crate::core::peer::PeerSettings;
use crate::core::rng::Rng;
use crate::core::{
    AdminCmd, AdminId, ClientOp, ConnState, DiskOpKind, DiskState, Engine, EngineConfig, Input,
    IoId, LinkId, LinkLoss, MetaOpKind, Output, PeerDiskOp, Refusal, ReqId, Role,
};
use crate::meta::layout::MetaDiskKind;
use crate::meta::store::{create_md, MetaDev, MetaStore};
use crate::wire::{Channel, Packet};
use rep_resources::Protocol;

pub const BLOCK: u64 = 4096;

/// Metadata device in memory; metadata writes are synchronous and durable in the runtime too.
#[derive(Clone)]
pub struct MemDev(Arc<Mutex<Vec<u8>>>);

impl MemDev {
    pub fn new(len: usize) -> MemDev {
        MemDev(Arc::new(Mutex::new(vec![0; len])))
    }
    fn with<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> io::Result<T> {
        let mut g = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        Ok(f(&mut g))
    }
}

impl MetaDev for MemDev {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.with(|v| {
            let s = off as usize;
            let src = v
                .get(s..s + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        })?
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.with(|v| {
            let s = off as usize;
            let dst = v
                .get_mut(s..s + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            dst.copy_from_slice(buf);
            Ok(())
        })?
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn size_bytes(&self) -> io::Result<u64> {
        self.with(|v| v.len() as u64)
    }
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        link: LinkId,
        packet: Packet,
    },
    LinkDown {
        to: usize,
        link: LinkId,
        loss: LinkLoss,
    },
    LinkUp {
        link: LinkId,
    },
    Disk {
        node: usize,
        gen: u64,
        io: IoId,
        req: ReqId,
        op: DiskOpKind,
        data: Option<Vec<u8>>,
    },
    PeerDisk {
        node: usize,
        gen: u64,
        io: IoId,
        op: PeerDiskOp,
    },
}

struct Client {
    op: ClientOp,
    data: Option<Vec<u8>>,
    pattern: u64,
}

pub struct Node {
    pub name: String,
    pub engine: Engine,
    pub disk: SimDisk,
    meta_dev: MemDev,
    meta: Option<MetaStore>,
    pub up: bool,
    gen: u64,
    wants_link: bool,
    clients: HashMap<ReqId, Client>,
    admin_replies: HashMap<AdminId, Result<String, Refusal>>,
    next_admin: AdminId,
    /// Data and metadata I/O on this node's disk fail with EIO (internal metadata).
    pub disk_failing: bool,
    /// Client requests answered with an error.
    pub failed_replies: u64,
}

/// Per block: the last acknowledged pattern and patterns written but not (yet) acknowledged.
#[derive(Debug, Clone, Default)]
struct BlockModel {
    acked: u64,
    maybe: Vec<u64>,
}

pub struct Cluster {
    pub nodes: [Node; 2],
    base: Instant,
    now: Duration,
    queue: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    rng: Rng,
    link: Option<LinkId>,
    next_link: LinkId,
    /// Silent partition: packets are dropped, nobody is told.
    pub cut: bool,
    /// Last delivery time per (from node, channel), so each channel stays FIFO.
    last_delivery: HashMap<(usize, bool), Duration>,
    next_req: ReqId,
    next_pattern: u64,
    model: Vec<BlockModel>,
    pub device_bytes: u64,
    pub protocol: Protocol,
    pub csums_alg: String,
    pub trace: Vec<String>,
    handlers_run: Vec<(usize, &'static str)>,
}

fn pattern_block(pattern: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(BLOCK as usize);
    while v.len() < BLOCK as usize {
        v.extend_from_slice(&pattern.to_le_bytes());
    }
    v
}

impl Cluster {
    pub fn new(seed: u64, protocol: Protocol, device_bytes: u64) -> Cluster {
        Cluster::with_csums(seed, protocol, device_bytes, "")
    }

    /// A cluster whose resyncs use `csums_alg` (empty: plain resync).
    pub fn with_csums(
        seed: u64,
        protocol: Protocol,
        device_bytes: u64,
        csums_alg: &str,
    ) -> Cluster {
        let base = Instant::now();
        let mk = |i: usize| {
            let name = ["node-a", "node-b"][i].to_owned();
            let meta_dev = MemDev::new(4 << 20);
            let dummy = MemDev::new(device_bytes as usize);
            let _ = create_md(
                &dummy,
                Some(&meta_dev),
                device_bytes,
                MetaDiskKind::ExternalFlex,
                61,
                seed ^ i as u64,
                true,
            );
            Node {
                engine: Engine::new(
                    engine_config_with(&name, protocol, csums_alg),
                    seed.wrapping_mul(31).wrapping_add(i as u64),
                ),
                name,
                disk: SimDisk::new(device_bytes as usize),
                meta_dev,
                meta: None,
                up: true,
                gen: 0,
                wants_link: false,
                clients: HashMap::new(),
                admin_replies: HashMap::new(),
                disk_failing: false,
                failed_replies: 0,
                next_admin: 1,
            }
        };
        Cluster {
            nodes: [mk(0), mk(1)],
            base,
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            rng: Rng::new(seed),
            link: None,
            next_link: 1,
            cut: false,
            last_delivery: HashMap::new(),
            next_req: 1,
            next_pattern: 1,
            model: vec![BlockModel::default(); (device_bytes / BLOCK) as usize],
            device_bytes,
            protocol,
            csums_alg: csums_alg.to_owned(),
            trace: Vec::new(),
            handlers_run: Vec::new(),
        }
    }

    fn at(&self) -> Instant {
        self.base + self.now
    }

    fn schedule(&mut self, delay: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), ev);
    }

    /// The simulation's stand-in for the OS random source (deterministic in the seed).
    fn nonce(&mut self) -> [u8; crate::wire::auth::NONCE_BYTES] {
        let mut n = [0u8; crate::wire::auth::NONCE_BYTES];
        for chunk in n.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_be_bytes());
        }
        n
    }

    fn rand_us(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(lo + self.rng.next_u64() % (hi - lo).max(1))
    }

    /// Feed one input to node `i` and perform everything it asks for.
    pub fn feed(&mut self, i: usize, input: Input) {
        if !self.nodes[i].up {
            return;
        }
        let now = self.at();
        self.nodes[i].engine.handle(now, input);
        while let Some(out) = self.nodes[i].engine.poll_output() {
            self.perform(i, out);
        }
        self.check_cluster_invariants();
    }

    fn perform(&mut self, i: usize, out: Output) {
        let gen = self.nodes[i].gen;
        match out {
            Output::Disk { io, req, op } => {
                let data = match op {
                    DiskOpKind::Write { .. } => self.nodes[i]
                        .clients
                        .get_mut(&req)
                        .and_then(|c| c.data.take()),
                    _ => None,
                };
                let d = self.rand_us(10, 300);
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
                let now = self.at();
                let digests = alg.digest_blocks(&data);
                self.nodes[i]
                    .engine
                    .handle(now, Input::HashDone { io, digests });
            }
            Output::PeerDisk { io, op } => {
                let d = self.rand_us(10, 300);
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
                let result = self.apply_meta(i, &op);
                let now = self.at();
                self.nodes[i]
                    .engine
                    .handle(now, Input::MetaDone { io, result });
            }
            Output::OpenDisk { io } => {
                let result = self.open_meta(i);
                let now = self.at();
                self.nodes[i]
                    .engine
                    .handle(now, Input::DiskOpened { io, result });
            }
            Output::CloseDisk { io } => {
                self.nodes[i].meta = None;
                let now = self.at();
                self.nodes[i].engine.handle(now, Input::DiskClosed { io });
            }
            Output::ClientReply { req, result } => self.client_reply(i, req, result.is_ok()),
            // The simulated clients only write.
            Output::ClientData { .. } => {}
            Output::Handler { name } => self.handlers_run.push((i, name)),
            // No other resources in the simulation.
            Output::CheckDependency => {
                let now = self.at();
                self.nodes[i]
                    .engine
                    .handle(now, Input::DependencySyncing { syncing: false });
            }
            Output::AdminReply { id, result } => {
                self.nodes[i].admin_replies.insert(id, result);
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
            Output::Send { link, packet } => self.send(i, link, packet),
            Output::SendWrite {
                link,
                req,
                offset,
                buf_offset,
                len,
                fua,
            } => {
                let data = self.nodes[i]
                    .clients
                    .get(&req)
                    .and_then(|c| c.data.as_ref())
                    .and_then(|d| {
                        d.get(buf_offset as usize..(buf_offset + len) as usize)
                            .map(<[u8]>::to_vec)
                    })
                    .unwrap_or_default();
                self.send(
                    i,
                    link,
                    Packet::Data {
                        id: req,
                        offset,
                        fua,
                        data,
                    },
                );
            }
        }
    }

    fn apply_meta(&mut self, i: usize, op: &MetaOpKind) -> Result<(), crate::core::IoFailure> {
        let fail = |e: String| crate::core::IoFailure {
            errno: 5,
            message: e,
        };
        if self.nodes[i].disk_failing {
            // Internal metadata: it fails with the disk.
            return Err(fail("Input/output error (simulated failing disk)".into()));
        }
        if op.flushes_data_first() {
            self.nodes[i].disk.flush();
        }
        let store = self.nodes[i]
            .meta
            .as_mut()
            .ok_or_else(|| fail("no metadata open".into()))?;
        crate::meta::attach::apply(store, op).map_err(|e| fail(e.to_string()))
    }

    fn open_meta(&mut self, i: usize) -> Result<Box<crate::core::AttachInfo>, String> {
        let dev = Box::new(self.nodes[i].meta_dev.clone());
        let store =
            MetaStore::open_external(dev, None, self.device_bytes).map_err(|e| e.to_string())?;
        let info = crate::meta::attach::attach_info(&store, None);
        self.nodes[i].meta = Some(store);
        Ok(Box::new(info))
    }

    fn send(&mut self, from: usize, link: LinkId, packet: Packet) {
        if self.link != Some(link) || self.cut {
            return;
        }
        let meta = packet.channel() == Channel::Meta;
        let lat = self.rand_us(20, 400);
        let last = self
            .last_delivery
            .get(&(from, meta))
            .copied()
            .unwrap_or(Duration::ZERO);
        let when = (self.now + lat).max(last);
        self.last_delivery.insert((from, meta), when);
        self.seq += 1;
        self.queue.insert(
            (when, self.seq),
            Ev::Deliver {
                to: 1 - from,
                link,
                packet,
            },
        );
    }

    fn drop_link(&mut self, closer: usize) {
        if let Some(link) = self.link.take() {
            let d = self.rand_us(20, 400);
            self.schedule(
                d,
                Ev::LinkDown {
                    to: 1 - closer,
                    link,
                    loss: LinkLoss::BrokenPipe,
                },
            );
        }
    }

    fn maybe_link(&mut self) {
        let both = self.nodes.iter().all(|n| n.up && n.wants_link);
        if both && self.link.is_none() && !self.cut {
            let link = self.next_link;
            self.next_link += 1;
            self.link = Some(link);
            let d = self.rand_us(100, 2000);
            self.schedule(d, Ev::LinkUp { link });
        }
    }

    fn check_cluster_invariants(&self) {
        let primaries = self
            .nodes
            .iter()
            .filter(|n| n.up && n.engine.role() == Role::Primary)
            .count();
        // Two Primaries can exist only while they cannot see each other (a failover during a
        // partition): never while connected.
        if primaries == 2 {
            let connected = self
                .nodes
                .iter()
                .all(|n| n.engine.cstate() >= ConnState::Connected);
            assert!(!connected, "two connected Primaries");
        }
    }

    /// Process events up to `until` (relative to the start).
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let mut next_timer = self.now;
        loop {
            let next_ev = self.queue.keys().next().map(|k| k.0);
            let step_to = match next_ev {
                Some(t) if t <= until && t <= next_timer => t,
                _ if next_timer <= until => next_timer,
                _ => break,
            };
            self.now = step_to;
            if Some(step_to) == next_ev {
                if let Some((_, ev)) = self.queue.pop_first() {
                    self.event(ev);
                }
            } else {
                for i in 0..2 {
                    let due = self.nodes[i]
                        .engine
                        .next_timeout()
                        .is_some_and(|t| t <= self.at());
                    if due {
                        self.feed(i, Input::Timer);
                    }
                }
                next_timer = self.now + Duration::from_millis(10);
            }
        }
        self.now = until;
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, link, packet } => {
                if self.link == Some(link) || matches!(packet, Packet::Bye) {
                    self.feed(to, Input::Packet { link, packet });
                }
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
                let disk = &self.nodes[node].disk;
                let result = match op {
                    _ if self.nodes[node].disk_failing => Err(failing_disk()),
                    DiskOpKind::Read { offset, len } => {
                        let mut buf = vec![0; len as usize];
                        disk.read(&mut buf, offset)
                    }
                    DiskOpKind::Write { offset, fua, .. } => {
                        disk.write(&data.unwrap_or_default(), offset, fua)
                    }
                    DiskOpKind::Flush => {
                        disk.flush();
                        Ok(())
                    }
                    DiskOpKind::Trim { offset, len, fua }
                    | DiskOpKind::WriteZeroes { offset, len, fua } => {
                        disk.write(&vec![0; len as usize], offset, fua)
                    }
                };
                let result = result.map_err(|e| crate::core::IoFailure {
                    errno: 5,
                    message: e.to_string(),
                });
                let _ = req;
                self.feed(node, Input::DiskDone { io, result });
            }
            Ev::PeerDisk { node, gen, io, op } => {
                if self.nodes[node].gen != gen {
                    return;
                }
                let disk = &self.nodes[node].disk;
                let result = match op {
                    _ if self.nodes[node].disk_failing => Err(failing_disk()),
                    PeerDiskOp::Write { offset, data, fua } => {
                        disk.write(&data, offset, fua).map(|()| None)
                    }
                    PeerDiskOp::Zero {
                        offset, len, fua, ..
                    } => disk
                        .write(&vec![0; len as usize], offset, fua)
                        .map(|()| None),
                    PeerDiskOp::Read { offset, len } => {
                        let mut buf = vec![0; len as usize];
                        disk.read(&mut buf, offset).map(|()| Some(buf))
                    }
                    PeerDiskOp::Flush => {
                        disk.flush();
                        Ok(None)
                    }
                };
                let result = result.map_err(|e| crate::core::IoFailure {
                    errno: 5,
                    message: e.to_string(),
                });
                self.feed(node, Input::PeerDiskDone { io, result });
            }
        }
    }

    // ---- admin and clients ----

    /// Run an admin command and the cluster until it is answered (at most `limit`).
    pub fn admin(&mut self, i: usize, cmd: AdminCmd) -> Result<String, Refusal> {
        let id = self.nodes[i].next_admin;
        self.nodes[i].next_admin += 1;
        self.trace
            .push(format!("{:?} {} {:?}", self.now, self.nodes[i].name, cmd));
        self.feed(i, Input::Admin { id, cmd });
        for _ in 0..2000 {
            if let Some(r) = self.nodes[i].admin_replies.remove(&id) {
                return r;
            }
            self.run_for(Duration::from_millis(5));
        }
        Err(Refusal::MetaIo {
            message: "admin command not answered".into(),
        })
    }

    /// Submit one random client write (or flush) on node `i`.
    pub fn client_write(&mut self, i: usize) {
        let blocks = self.device_bytes / BLOCK;
        let r = self.rng.next_u64();
        let req = self.next_req;
        self.next_req += 1;
        if r.is_multiple_of(16) {
            self.nodes[i].clients.insert(
                req,
                Client {
                    op: ClientOp::Flush,
                    data: None,
                    pattern: 0,
                },
            );
            self.feed(
                i,
                Input::Client {
                    req,
                    op: ClientOp::Flush,
                },
            );
            return;
        }
        let nblocks = 1 + (r >> 8) % 4;
        let first = (r >> 16) % (blocks - nblocks + 1);
        let pattern = self.next_pattern;
        self.next_pattern += 1;
        let mut data = Vec::with_capacity((nblocks * BLOCK) as usize);
        for _ in 0..nblocks {
            data.extend_from_slice(&pattern_block(pattern));
        }
        for b in first..first + nblocks {
            self.model[b as usize].maybe.push(pattern);
        }
        let op = ClientOp::Write {
            offset: first * BLOCK,
            len: (nblocks * BLOCK) as u32,
            fua: (r >> 40).is_multiple_of(8),
        };
        self.nodes[i].clients.insert(
            req,
            Client {
                op,
                data: Some(data),
                pattern,
            },
        );
        self.feed(i, Input::Client { req, op });
    }

    fn client_reply(&mut self, i: usize, req: ReqId, ok: bool) {
        let Some(c) = self.nodes[i].clients.remove(&req) else {
            return;
        };
        if !ok {
            self.nodes[i].failed_replies += 1;
        }
        let ClientOp::Write { offset, len, .. } = c.op else {
            return;
        };
        if !ok {
            return;
        }
        for b in offset / BLOCK..(offset + u64::from(len)) / BLOCK {
            let m = &mut self.model[b as usize];
            m.acked = c.pattern;
            // Writes to a block are applied in submission order: older ones are superseded.
            m.maybe.retain(|&p| p > c.pattern);
        }
    }

    pub fn outstanding_clients(&self, i: usize) -> usize {
        self.nodes[i].clients.len()
    }

    // ---- faults ----

    /// Kill node `i` (power loss): volatile cache lost, metadata kept, peer sees a reset.
    pub fn crash(&mut self, i: usize) {
        self.trace
            .push(format!("{:?} crash {}", self.now, self.nodes[i].name));
        let seed = self.rng.next_u64();
        let n = &mut self.nodes[i];
        n.up = false;
        n.gen += 1;
        n.disk = n.disk.crash(seed);
        n.meta = None;
        n.clients.clear();
        n.admin_replies.clear();
        n.wants_link = false;
        if self.link.is_some() {
            self.drop_link(i);
        }
    }

    /// Restart node `i`: attach its disk, connect.
    pub fn restart(&mut self, i: usize) -> Result<(), Refusal> {
        self.trace
            .push(format!("{:?} restart {}", self.now, self.nodes[i].name));
        let seed = self.rng.next_u64();
        let name = self.nodes[i].name.clone();
        let n = &mut self.nodes[i];
        n.engine = Engine::new(
            engine_config_with(&name, self.protocol, &self.csums_alg),
            seed,
        );
        n.up = true;
        self.admin(i, AdminCmd::Attach)?;
        self.admin(
            i,
            AdminCmd::Connect {
                discard_my_data: false,
            },
        )?;
        Ok(())
    }

    /// Handlers the engines asked for: (node, handler name).
    pub fn handlers(&self) -> &[(usize, &'static str)] {
        &self.handlers_run
    }

    pub fn set_cut(&mut self, cut: bool) {
        self.trace.push(format!("{:?} cut={cut}", self.now));
        self.cut = cut;
        if !cut {
            self.maybe_link();
        }
    }

    /// Flip one byte of block `block` on node `i`'s disk behind rep's back (bit rot).
    pub fn corrupt(&mut self, i: usize, block: u64) {
        let disk = &self.nodes[i].disk;
        let mut b = [0u8; 1];
        if disk.read(&mut b, block * BLOCK + 100).is_ok() {
            b[0] ^= 0xff;
            let _ = disk.write(&b, block * BLOCK + 100, true);
        }
    }

    /// Both nodes connected, UpToDate, no resync running.
    pub fn settled(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.up && n.engine.cstate() == ConnState::Connected
                && n.engine.disk() == DiskState::UpToDate
                && n.engine.pdsk() == DiskState::UpToDate
        })
    }

    /// Both disks are identical, and every block holds its last acknowledged write or a
    /// write that was still in flight when something failed.
    pub fn check_data(&self) -> Result<(), String> {
        let a = self.nodes[0].disk.snapshot();
        let b = self.nodes[1].disk.snapshot();
        let usable = self.nodes[0].engine.usable_bytes() as usize;
        if let Some(pos) = (0..usable).find(|&k| a[k] != b[k]) {
            let blk = pos / BLOCK as usize;
            let word = |d: &[u8]| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&d[blk * BLOCK as usize..blk * BLOCK as usize + 8]);
                u64::from_le_bytes(w)
            };
            return Err(format!(
                "disks differ at byte {pos} (block {blk}): node-a has pattern {}, node-b {}; acknowledged {} (in flight {:?})",
                word(&a),
                word(&b),
                self.model[blk].acked,
                self.model[blk].maybe
            ));
        }
        if self.protocol != Protocol::C {
            return Ok(());
        }
        for (blk, m) in self.model.iter().enumerate() {
            let off = blk * BLOCK as usize;
            let mut word = [0u8; 8];
            word.copy_from_slice(&a[off..off + 8]);
            let got = u64::from_le_bytes(word);
            if got != m.acked && !m.maybe.contains(&got) {
                return Err(format!(
                    "block {blk} holds pattern {got}, acknowledged {} (in flight {:?})",
                    m.acked, m.maybe
                ));
            }
        }
        Ok(())
    }
}

fn failing_disk() -> std::io::Error {
    std::io::Error::from_raw_os_error(5)
}

pub fn engine_config(node: &str, protocol: Protocol) -> EngineConfig {
    engine_config_with(node, protocol, "")
}

/// `csums_alg` empty = plain resync; verify always uses sha1.
pub fn engine_config_with(node: &str, protocol: Protocol, csums_alg: &str) -> EngineConfig {
    EngineConfig {
        resource: "r0".into(),
        node: node.into(),
        minor: 0,
        device: "/dev/drbd0".into(),
        protocol,
        has_peer: true,
        allow_two_primaries: false,
        al_extents: 61,
        fencing: rep_resources::Fencing::DontCare,
        on_io_error: crate::core::OnIoError::Detach,
        peer: PeerSettings {
            ping_int: Duration::from_secs(1),
            ping_timeout: Duration::from_millis(500),
            timeout: Duration::from_secs(6),
            ko_count: 7,
            max_epoch_size: 64,
            pace: crate::core::pace::Pace::fixed(400 * 1024),
            verify_alg: "sha1".into(),
            csums_alg: csums_alg.into(),
            ..PeerSettings::default()
        },
    }
}
