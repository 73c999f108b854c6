//! What a simulated cluster is made of: the nodes, the pending events, the client requests in
//! flight and their buffers, and the small helpers every part of the driver uses (simulated
//! time, the seeded random source, the trace). The behaviour lives in the sibling files, each
//! an `impl Cluster` block over these types.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::witness_link::{WitnessEv, WitnessLinks};
use crate::core::rng::Rng;
use crate::core::{
    AdminId, ClientOp, ConnState, DiskOpKind, DiskState, Engine, IoId, LinkId, LinkLoss,
    MetaOpKind, PeerDiskOp, Refusal, ReqId, Role,
};
use crate::meta::store::MetaStore;
use crate::sim::config::{SimConfig, SimStats, Workload, SECTOR};
use crate::sim::disk::{fill_sector, SimDisk, SimMetaDev, SECTOR_BYTES};
use crate::sim::generation_check::GenerationCheck;
use crate::sim::model::{Model, WriteId};
use crate::sim::watch::LogWatch;
use crate::wire::Packet;
use rep_resources::{Fencing, Protocol};

#[derive(Debug)]
pub(super) enum Ev {
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
        data: Option<Buffer>,
    },
    PeerDisk {
        node: usize,
        gen: u64,
        io: IoId,
        op: PeerDiskOp,
    },
    /// A metadata write or the close after them, done in emission order by the metadata
    /// thread (runtime::metaio): it completes later, and is lost if power goes first.
    Meta {
        node: usize,
        gen: u64,
        io: IoId,
        op: MetaOpKind,
    },
    CloseDisk {
        node: usize,
        gen: u64,
        io: IoId,
    },
    /// A waited handler finished on `node` with `exit`.
    HandlerDone {
        node: usize,
        gen: u64,
        io: IoId,
        exit: Option<i32>,
    },
    /// `node`'s fence-peer reaches the peer now.
    Fence {
        node: usize,
        gen: u64,
        io: IoId,
    },
    /// Something on a data node's link to the witness (`SimConfig::witness`).
    Witness(WitnessEv),
}

#[derive(Debug)]
pub(super) enum ClientKind {
    Write {
        wid: WriteId,
        data: Option<Buffer>,
    },
    Flush {
        flush: u64,
    },
    Read {
        floors: Vec<WriteId>,
        data: Option<Vec<u8>>,
        /// `unreliable` of both nodes at submission: a write-back error since then may have
        /// taken acknowledged data away, which no engine can prevent.
        epoch: (u64, u64),
    },
}

#[derive(Debug)]
pub(super) struct Client {
    pub(super) op: ClientOp,
    pub(super) kind: ClientKind,
    /// Submitted to a node that was not Primary: it must be refused.
    pub(super) to_secondary: bool,
}

pub struct Node {
    pub name: String,
    pub engine: Engine,
    pub disk: SimDisk,
    pub(super) meta_dev: SimMetaDev,
    pub(super) meta: Option<MetaStore>,
    pub up: bool,
    pub(super) gen: u64,
    pub(super) wants_link: bool,
    pub(super) clients: HashMap<ReqId, Client>,
    pub(super) admin_replies: HashMap<AdminId, Result<String, Refusal>>,
    pub(super) next_admin: AdminId,
    pub(super) disk_failing: bool,
    /// Client requests answered with an error.
    pub failed_replies: u64,
    /// Power was lost in the middle of this input (a torn metadata write): nothing the engine
    /// does from here on happens.
    pub(super) dying: bool,
    /// Lose power right after the input in which the node notices its link is gone (what it
    /// did in that input happened; nothing it issued then has completed).
    pub(super) die_on_link_loss: bool,
    /// When the metadata thread is done with what it was given so far.
    pub(super) meta_free_at: Duration,
    /// The node started to claim UpToDate data (why): its whole durable image is checked once
    /// a superblock written after the claim is on disk. Metadata writes complete later than
    /// the claim is made in memory; a crash before then leaves the superblock claiming less.
    pub(super) claim_pending: Option<&'static str>,
    /// (role, disk, cstate) after the last input, to see transitions.
    pub(super) seen: (Role, DiskState, ConnState),
    /// Inputs left, and the time, until the bitmap check that follows a handshake.
    pub(super) bits_check_in: Option<(u32, Duration)>,
    /// Bumped by every lost write-back or crash on this node.
    pub(super) unreliable: u64,
    pub(super) last_timer: Duration,
    /// Added to every data write of this node's disk (a slow disk: received writes queue).
    pub(super) disk_delay: Duration,
}

pub struct Cluster {
    pub nodes: [Node; 2],
    pub cfg: SimConfig,
    pub workload: Workload,
    pub(super) base: Instant,
    pub(super) now: Duration,
    pub(super) queue: BTreeMap<(Duration, u64), Ev>,
    pub(super) seq: u64,
    pub(super) rng: Rng,
    pub(super) link: Option<LinkId>,
    pub(super) next_link: LinkId,
    /// Frames from node i are held (not lost) while `hold[i]`.
    pub(super) hold: [bool; 2],
    pub(super) held: [Vec<Ev>; 2],
    /// Last delivery time per (from node, meta channel), so each channel stays FIFO.
    pub(super) last_delivery: HashMap<(usize, bool), Duration>,
    pub(super) next_req: ReqId,
    pub model: Model,
    pub stats: SimStats,
    pub trace: Vec<String>,
    pub(super) handlers_run: Vec<(usize, &'static str)>,
    /// Node i's fence-peer outdated its peer and no `unfence-peer` ran since (a Pacemaker
    /// constraint would still forbid promoting the peer): it must run before the pair settles.
    pub(super) owes_unfence: [bool; 2],
    /// Outdate requests of fence-peer being carried out: (peer, its admin id) → the fencing
    /// node, its generation and its handler I/O.
    pub(super) fence_waits: HashMap<(usize, AdminId), (usize, u64, IoId)>,
    pub(super) watch: LogWatch,
    /// `REP_SIM_WATCH_SECTOR`: trace every change of this sector (debugging a failing seed).
    pub(super) watch_sector: Option<u64>,
    pub(super) _watch_guard: tracing::subscriber::DefaultGuard,
    pub(super) protocol_errors_seen: usize,
    /// The generation rules, over both nodes' history (sim/generation_check.rs).
    pub(super) generations: GenerationCheck,
    /// The diskless witness and its links (unused unless `cfg.witness`).
    pub(super) wit: WitnessLinks,
}

/// The bytes of write `wid` over `count` sectors starting at sector `first` (each byte
/// written once: no zeroed buffer first).
fn pattern(wid: WriteId, first: u64, count: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity((count * SECTOR) as usize);
    let mut sector = [0u8; SECTOR_BYTES];
    for lba in first..first + count {
        fill_sector(&mut sector, u64::from(wid), lba);
        v.extend_from_slice(&sector);
    }
    v
}

/// A client write's buffer: the pattern of write `wid` for sectors `first..first + count`.
/// Its bytes are made only where the engine takes them (a peer packet, a write torn by power
/// loss, a write to another place than the request's); a client write the engine puts where
/// the client asked goes to the disk as tags (`SimDisk::write_tag`). Most writes never exist as
/// bytes, and a 32 MiB request no longer costs 32 MiB of pattern per submission.
#[derive(Debug, Clone, Copy)]
pub(super) struct Buffer {
    pub(super) wid: WriteId,
    pub(super) first: u64,
    pub(super) count: u64,
}

impl Buffer {
    pub(super) fn len(&self) -> usize {
        (self.count * SECTOR) as usize
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        pattern(self.wid, self.first, self.count)
    }

    /// Bytes `at..at + len` of the buffer, if it has them.
    pub(super) fn piece(&self, at: usize, len: usize) -> Option<Vec<u8>> {
        if at.checked_add(len)? > self.len() {
            return None;
        }
        if at.is_multiple_of(SECTOR_BYTES) && len.is_multiple_of(SECTOR_BYTES) {
            let first = self.first + (at / SECTOR_BYTES) as u64;
            return Some(pattern(self.wid, first, (len / SECTOR_BYTES) as u64));
        }
        Some(self.bytes()[at..at + len].to_vec())
    }
}

impl Cluster {
    pub fn protocol(&self) -> Protocol {
        self.cfg.protocol
    }

    pub fn fencing(&self) -> Fencing {
        self.cfg.fencing
    }

    /// An operator resolved a split brain by discarding `victim`'s changes (`connect
    /// --discard-my-data`): what only it acknowledged is legitimately gone.
    pub fn split_brain_discarded(&mut self, victim: usize) {
        self.log(format!(
            "split brain: node {victim}'s changes are discarded"
        ));
        self.model.discarded(victim);
    }

    pub fn device_bytes(&self) -> u64 {
        self.cfg.device_bytes
    }

    /// Simulated time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    pub(super) fn at(&self) -> Instant {
        self.base + self.now
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub(super) fn schedule(&mut self, delay: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), ev);
    }

    /// The simulation's stand-in for the OS random source (deterministic in the seed).
    pub(super) fn nonce(&mut self) -> [u8; crate::wire::auth::NONCE_BYTES] {
        let mut n = [0u8; crate::wire::auth::NONCE_BYTES];
        for chunk in n.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_be_bytes());
        }
        n
    }

    pub(super) fn rand_us(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(lo + self.rng.next_u64() % (hi - lo).max(1))
    }

    pub fn log(&mut self, what: impl std::fmt::Display) {
        self.trace.push(format!("{:>10.3?} {what}", self.now));
    }

    /// Count a fault of `kind` and note it in the trace.
    pub fn fault(&mut self, kind: &'static str) {
        *self.stats.faults.entry(kind).or_insert(0) += 1;
        self.log(format!("fault: {kind}"));
    }

    /// With `REP_SIM_WATCH_SECTOR` set: note what node `i`'s disk holds there after `what`
    /// touched bytes `off..off + len`.
    pub(super) fn watch_disk(&mut self, i: usize, what: &str, off: u64, len: u64) {
        let Some(s) = self.watch_sector else { return };
        if off / SECTOR <= s && s < (off + len).div_ceil(SECTOR) {
            let d = &self.nodes[i].disk;
            let line = format!(
                "sector {s} on node {i} after {what}: cache {:?}, durable {:?}",
                d.cached(s),
                d.durable(s)
            );
            self.log(line);
        }
    }

    /// Handlers the engines asked for: (node, handler name).
    pub fn handlers(&self) -> &[(usize, &'static str)] {
        &self.handlers_run
    }
}
