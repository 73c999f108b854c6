//! The simulator's data model: which write every 512-byte sector must hold, on which node, and
//! when a disk image may be compared against it.
//!
//! Every client write gets an id in submission order; its sectors carry that id (see
//! `disk::fill_sector`), so a disk image is a list of write ids. Overlapping writes are applied
//! in submission order by the engine (on the Primary and on the peer), so for one sector a
//! higher id is a later write.
//!
//! Two kinds of floor, per sector:
//! - `dr[node]`: the write the node's *durable* image must hold at least ("durable-required").
//!   A write becomes durable-required on a node once it was acknowledged with FUA, or
//!   acknowledged before a FLUSH that was acknowledged:
//!   - on the node that served it, if its local disk completed the write (and, for a FLUSH, the
//!     local flush) without error;
//!   - on the peer, for a FLUSH, if every piece of the write went out on a link on which the
//!     peer then acknowledged a barrier sent after it (the peer flushed it; any protocol);
//!     for FUA, protocol C only, if the peer acknowledged every piece as written (it wrote them
//!     with FUA).
//!
//!   Under protocol C a SyncTarget inherits its SyncSource's floors when the resync completes
//!   (what the source holds was copied and flushed before the target claimed UpToDate). Under A
//!   and B a node's floors are forgotten when it becomes SyncTarget: the writes it acknowledged
//!   alone may legitimately be overwritten after a failover.
//! - `held[node]`: what the node must hold as long as it keeps running (its cache, or its
//!   disk once received writes are written), whatever happens to the other node. This is where
//!   the protocols differ (README "Promises"):
//!   - every protocol: the node's own acknowledged writes (its local disk completed them);
//!   - **C**: also the peer's writes it acknowledged as written (`WriteAck` for every piece);
//!   - **B**: also the peer's writes it acknowledged as received (`RecvAck` for every piece):
//!     it must still write them if the link, or the peer, is lost right after;
//!   - **A**: nothing of the peer's.
//!
//!   `held` includes `dr`. Power loss of the node lowers it to `dr`; becoming SyncTarget lowers
//!   it to `dr` under C and to nothing under A and B (the source's data replaces what it held);
//!   a completed resync gives the target the source's `held` under B and C (every write the
//!   source acknowledged was received or resynced by then; under A some may still travel).
//! - `conv`: what the converged cluster must hold, the last acknowledged write of the sector. A
//!   crash lowers it to the durable-required floors (unflushed writes may be lost, if the
//!   crashed node comes back as the source); a failover (promotion while disconnected) sets it
//!   to the new Primary's `held` floors: under C every write acknowledged while the pair was in
//!   sync, under B also those only received, under A what it wrote itself or had flushed.
//!
//! A sector holding write `v` satisfies floor `f` if `v` is `f` or any later write (one that
//! was in flight or unflushed); zeroes satisfy it if `f` is 0 or a zeroing write, or a zeroing
//! write later than `f` covered the sector. Raw bytes (bit rot, data at the wrong sector) never
//! do.

use std::collections::HashMap;

use super::disk::{decode_sector, Sector, SimDisk, SECTOR_BYTES};
use crate::core::LinkId;
use rep_resources::Protocol;

pub type WriteId = u32;
const SECTOR: u64 = SECTOR_BYTES as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WState {
    InFlight,
    Acked,
    Failed,
}

#[derive(Debug, Clone)]
pub struct WriteRec {
    pub node: usize,
    pub first: u64,
    pub count: u64,
    pub zero: bool,
    pub fua: bool,
    pub state: WState,
    /// The serving node's local disk completed it without error.
    pub local_ok: bool,
    /// The link its peer packets went out on (one link: a write is replicated once).
    pub link: Option<LinkId>,
    pub pieces: u32,
    /// Pieces the peer acknowledged as written (WriteAck).
    pub pieces_written: u32,
    /// Pieces the peer acknowledged as received (RecvAck, protocol B).
    pub pieces_received: u32,
    /// Send sequence number of the last piece on `link`.
    pub last_seq: u64,
    pub dr: [bool; 2],
}

#[derive(Debug)]
struct FlushRec {
    node: usize,
    /// Writes acknowledged before this FLUSH was submitted that were not durable everywhere.
    covered: Vec<WriteId>,
    local_ok: bool,
}

/// Counts for the summary of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelStats {
    pub writes: u64,
    pub acked: u64,
    pub failed: u64,
    pub flushes: u64,
    pub reads: u64,
    /// Acknowledged writes that a convergence check covered.
    pub checked: u64,
    /// Sector checks done against durable-required floors.
    pub sector_checks: u64,
}

pub struct Model {
    pub protocol: Protocol,
    sectors: u64,
    /// Index = write id; 0 is the zeroes every disk starts with.
    writes: Vec<WriteRec>,
    dr: [Vec<WriteId>; 2],
    held: [Vec<WriteId>; 2],
    conv: Vec<WriteId>,
    /// Last zeroing write submitted over each sector.
    last_zero: Vec<WriteId>,
    /// Acknowledged writes not yet covered by an acknowledged FLUSH.
    unflushed: Vec<WriteId>,
    flushes: HashMap<u64, FlushRec>,
    next_flush: u64,
    /// Per (link, sender): next send sequence number; barriers sent (epoch → seq); highest
    /// seq covered by an acknowledged barrier.
    send_seq: HashMap<(LinkId, usize), u64>,
    barriers: HashMap<(LinkId, usize, u32), u64>,
    barrier_acked: HashMap<(LinkId, usize), u64>,
    acked_since_check: u64,
    pub stats: ModelStats,
}

impl Model {
    pub fn new(protocol: Protocol, device_bytes: u64) -> Model {
        let sectors = device_bytes / SECTOR;
        let zero = WriteRec {
            node: 0,
            first: 0,
            count: 0,
            zero: true,
            fua: false,
            state: WState::Acked,
            local_ok: true,
            link: None,
            pieces: 0,
            pieces_written: 0,
            pieces_received: 0,
            last_seq: 0,
            dr: [true; 2],
        };
        Model {
            protocol,
            sectors,
            writes: vec![zero],
            dr: [vec![0; sectors as usize], vec![0; sectors as usize]],
            held: [vec![0; sectors as usize], vec![0; sectors as usize]],
            conv: vec![0; sectors as usize],
            last_zero: vec![0; sectors as usize],
            unflushed: Vec::new(),
            flushes: HashMap::new(),
            next_flush: 1,
            send_seq: HashMap::new(),
            barriers: HashMap::new(),
            barrier_acked: HashMap::new(),
            acked_since_check: 0,
            stats: ModelStats::default(),
        }
    }

    pub fn write(&self, id: WriteId) -> &WriteRec {
        &self.writes[id as usize]
    }

    /// A client write (or zeroing) of `count` sectors at `first` is submitted on `node`.
    pub fn new_write(
        &mut self,
        node: usize,
        first: u64,
        count: u64,
        zero: bool,
        fua: bool,
    ) -> WriteId {
        let id = WriteId::try_from(self.writes.len()).unwrap_or(WriteId::MAX);
        self.writes.push(WriteRec {
            node,
            first,
            count,
            zero,
            fua,
            state: WState::InFlight,
            local_ok: false,
            link: None,
            pieces: 0,
            pieces_written: 0,
            pieces_received: 0,
            last_seq: 0,
            dr: [false; 2],
        });
        if zero {
            for s in first..first + count {
                self.last_zero[s as usize] = id;
            }
        }
        self.stats.writes += 1;
        id
    }

    fn next_seq(&mut self, link: LinkId, sender: usize) -> u64 {
        let s = self.send_seq.entry((link, sender)).or_insert(0);
        *s += 1;
        *s
    }

    /// One peer packet of write `id` left `sender` on `link`.
    pub fn piece_sent(&mut self, id: WriteId, sender: usize, link: LinkId) {
        let seq = self.next_seq(link, sender);
        let w = &mut self.writes[id as usize];
        if w.link.is_some_and(|l| l != link) {
            // Pieces on two links: the write cannot count as replicated on either.
            w.pieces = u32::MAX / 2;
        }
        w.link = Some(link);
        w.pieces += 1;
        w.last_seq = seq;
    }

    pub fn barrier_sent(&mut self, sender: usize, link: LinkId, epoch: u32) {
        let seq = self.next_seq(link, sender);
        self.barriers.insert((link, sender, epoch), seq);
    }

    /// `BarrierAck { epoch }` reached `sender` (of the barrier) on `link`.
    pub fn barrier_acked(&mut self, sender: usize, link: LinkId, epoch: u32) {
        if let Some(seq) = self.barriers.remove(&(link, sender, epoch)) {
            let a = self.barrier_acked.entry((link, sender)).or_insert(0);
            *a = (*a).max(seq);
        }
    }

    /// The peer acknowledged a piece of write `id` as written (protocol C `WriteAck`).
    pub fn piece_written(&mut self, id: WriteId, link: LinkId) {
        if let Some(w) = self.writes.get_mut(id as usize) {
            if w.link == Some(link) {
                w.pieces_written += 1;
            }
        }
    }

    /// The peer acknowledged a piece of write `id` as received (protocol B `RecvAck`).
    pub fn piece_received(&mut self, id: WriteId, link: LinkId) {
        if let Some(w) = self.writes.get_mut(id as usize) {
            if w.link == Some(link) {
                w.pieces_received += 1;
            }
        }
    }

    pub fn local_done(&mut self, id: WriteId, ok: bool) {
        self.writes[id as usize].local_ok = ok;
    }

    fn peer_flushed(&self, w: &WriteRec) -> bool {
        let Some(link) = w.link else { return false };
        self.barrier_acked
            .get(&(link, w.node))
            .is_some_and(|&acked| acked > w.last_seq)
    }

    fn fully_written_on_peer(w: &WriteRec) -> bool {
        w.pieces > 0 && w.pieces_written >= w.pieces
    }

    /// Whether the peer of an acknowledged write `w` must hold it while it keeps running.
    fn peer_holds(&self, w: &WriteRec) -> bool {
        match self.protocol {
            Protocol::C => Self::fully_written_on_peer(w),
            Protocol::B => w.pieces > 0 && w.pieces_received >= w.pieces,
            Protocol::A => false,
        }
    }

    /// Raise `node`'s held floors over write `id`'s sectors.
    fn hold(&mut self, node: usize, id: WriteId) {
        let w = &self.writes[id as usize];
        let (first, count) = (w.first as usize, w.count as usize);
        for f in &mut self.held[node][first..first + count] {
            *f = (*f).max(id);
        }
    }

    /// Mark `id` durable-required on `node`; returns whether that is new.
    fn require(&mut self, node: usize, id: WriteId) -> bool {
        let w = &mut self.writes[id as usize];
        if w.dr[node] {
            return false;
        }
        w.dr[node] = true;
        let (first, count) = (w.first, w.count);
        for f in &mut self.dr[node][first as usize..(first + count) as usize] {
            *f = (*f).max(id);
        }
        self.hold(node, id);
        true
    }

    /// The client got its reply for write `id`. Returns the (node, write) pairs that just
    /// became durable-required.
    pub fn write_replied(&mut self, id: WriteId, ok: bool) -> Vec<(usize, WriteId)> {
        let mut newly = Vec::new();
        let w = &mut self.writes[id as usize];
        if !ok {
            w.state = WState::Failed;
            self.stats.failed += 1;
            return newly;
        }
        w.state = WState::Acked;
        self.stats.acked += 1;
        self.acked_since_check += 1;
        let w = self.writes[id as usize].clone();
        for f in &mut self.conv[w.first as usize..(w.first + w.count) as usize] {
            *f = (*f).max(id);
        }
        if w.local_ok {
            self.hold(w.node, id);
        }
        if self.peer_holds(&w) {
            self.hold(1 - w.node, id);
        }
        if w.fua {
            if w.local_ok && self.require(w.node, id) {
                newly.push((w.node, id));
            }
            let peer = 1 - w.node;
            if self.protocol == Protocol::C
                && Self::fully_written_on_peer(&w)
                && self.require(peer, id)
            {
                newly.push((peer, id));
            }
        }
        if !(w.dr[0] && w.dr[1]) {
            self.unflushed.push(id);
        }
        newly
    }

    pub fn flush_submitted(&mut self, node: usize) -> u64 {
        let id = self.next_flush;
        self.next_flush += 1;
        self.flushes.insert(
            id,
            FlushRec {
                node,
                covered: self.unflushed.clone(),
                local_ok: false,
            },
        );
        self.stats.flushes += 1;
        id
    }

    pub fn flush_local_done(&mut self, flush: u64, ok: bool) {
        if let Some(f) = self.flushes.get_mut(&flush) {
            f.local_ok = ok;
        }
    }

    /// The FLUSH got its reply; returns the (node, write) pairs that became durable-required.
    pub fn flush_replied(&mut self, flush: u64, ok: bool) -> Vec<(usize, WriteId)> {
        let mut newly = Vec::new();
        let Some(f) = self.flushes.remove(&flush) else {
            return newly;
        };
        if !ok {
            return newly;
        }
        for &id in &f.covered {
            let w = self.writes[id as usize].clone();
            if w.node != f.node {
                // Written through the other node (before a failover): this FLUSH's barriers
                // say nothing about it.
                continue;
            }
            if w.local_ok && f.local_ok && self.require(w.node, id) {
                newly.push((w.node, id));
            }
            if self.peer_flushed(&w) && self.require(1 - w.node, id) {
                newly.push((1 - w.node, id));
            }
        }
        let covered: std::collections::HashSet<WriteId> = f.covered.into_iter().collect();
        self.unflushed.retain(|id| !covered.contains(id));
        newly
    }

    /// Node `node` lost power: unflushed acknowledged writes may be gone, and no later FLUSH
    /// on it covers the writes it held only in its cache.
    pub fn crashed(&mut self, node: usize) {
        let writes = &self.writes;
        self.unflushed
            .retain(|&id| writes[id as usize].node != node);
        let [d0, d1] = &self.dr;
        self.held[node].copy_from_slice([d0, d1][node]);
        for s in 0..self.sectors as usize {
            self.conv[s] = self.dr[0][s].max(self.dr[1][s]);
        }
    }

    /// Node `node` was promoted while its peer was down (a failover): the cluster holds what
    /// `node` was promised to hold (`held`, per protocol). Under A and B the old Primary's
    /// floors go too: what it acknowledged alone is legitimately overwritten when it returns.
    pub fn failover(&mut self, node: usize) {
        self.conv.copy_from_slice(&self.held[node]);
        if self.protocol != Protocol::C {
            self.dr[1 - node].fill(0);
            self.held[1 - node].fill(0);
        }
    }

    /// A split brain was resolved by throwing away `victim`'s changes: the converged cluster
    /// holds what the survivor holds.
    pub fn discarded(&mut self, victim: usize) {
        self.conv.copy_from_slice(&self.dr[1 - victim]);
        self.dr[victim].fill(0);
        self.held[victim].fill(0);
    }

    /// `node` became SyncTarget.
    pub fn sync_target(&mut self, node: usize) {
        if self.protocol != Protocol::C {
            self.dr[node].fill(0);
        }
        let [d0, d1] = &self.dr;
        self.held[node].copy_from_slice([d0, d1][node]);
    }

    /// `target` finished a resync from `source` (it is UpToDate now).
    pub fn resynced(&mut self, target: usize, source: usize) {
        if self.protocol == Protocol::A || target == source {
            return;
        }
        let [a, b] = &mut self.held;
        let (t, s) = if target == 0 { (a, &*b) } else { (b, &*a) };
        for (t, s) in t.iter_mut().zip(s.iter()) {
            *t = (*t).max(*s);
        }
        if self.protocol != Protocol::C {
            return;
        }
        let [a, b] = &mut self.dr;
        let (t, s) = if target == 0 { (a, &*b) } else { (b, &*a) };
        for (t, s) in t.iter_mut().zip(s.iter()) {
            *t = (*t).max(*s);
        }
    }

    fn acceptable(&self, s: u64, v: &Sector, floor: WriteId) -> bool {
        match v {
            Sector::Raw(_) => false,
            Sector::Tag(0) => {
                floor == 0 || self.writes[floor as usize].zero || self.last_zero[s as usize] > floor
            }
            Sector::Tag(t) => *t >= u64::from(floor) && *t < self.writes.len() as u64,
        }
    }

    fn describe(&self, s: u64, v: &Sector, floor: WriteId) -> String {
        let what = |id: u64| match self.writes.get(id as usize) {
            Some(w) if id > 0 => format!(
                "write {id} (node {}, sectors {}+{}, {:?}{}{}, durable-required on {:?})",
                w.node,
                w.first,
                w.count,
                w.state,
                if w.fua { ", FUA" } else { "" },
                if w.zero { ", zeroes" } else { "" },
                w.dr
            ),
            Some(_) => "zeroes".to_string(),
            None => format!("unknown write {id}"),
        };
        let got = match v {
            Sector::Tag(t) => what(*t),
            Sector::Raw(_) => "raw bytes that no client wrote there".to_string(),
        };
        format!(
            "sector {s} (byte {}) holds {got}, but must hold {} or a later write",
            s * SECTOR,
            what(u64::from(floor))
        )
    }

    /// Check `sectors` of node `node`'s durable image against its durable-required floors.
    pub fn check_durable(
        &mut self,
        node: usize,
        disk: &SimDisk,
        sectors: std::ops::Range<u64>,
    ) -> Result<(), String> {
        let end = sectors.end.min(self.sectors).min(disk.sectors());
        for s in sectors.start..end {
            let floor = self.dr[node][s as usize];
            if floor == 0 {
                continue;
            }
            self.stats.sector_checks += 1;
            let v = disk.durable(s);
            if !self.acceptable(s, v, floor) {
                return Err(format!(
                    "node {node}: durable image: {}",
                    self.describe(s, v, floor)
                ));
            }
        }
        Ok(())
    }

    /// What node `node` holds now (its cache, what it serves) against the last acknowledged
    /// write of every sector: a node being promoted must not lack one.
    pub fn check_holds_acknowledged(&mut self, node: usize, disk: &SimDisk) -> Result<(), String> {
        let end = self.sectors.min(disk.sectors());
        for s in 0..end {
            let floor = self.conv[s as usize];
            if floor == 0 {
                continue;
            }
            self.stats.sector_checks += 1;
            let v = disk.cached(s);
            if !self.acceptable(s, v, floor) {
                return Err(format!("node {node}: {}", self.describe(s, v, floor)));
            }
        }
        Ok(())
    }

    /// Check the sectors of write `id` on node `node`'s durable image.
    pub fn check_write_durable(
        &mut self,
        node: usize,
        id: WriteId,
        disk: &SimDisk,
    ) -> Result<(), String> {
        let w = &self.writes[id as usize];
        let r = w.first..w.first + w.count;
        self.check_durable(node, disk, r)
    }

    /// After convergence: both durable images identical over `usable` bytes and holding every
    /// acknowledged write (or a later one). Returns how many acknowledged writes this covered.
    pub fn check_converged(
        &mut self,
        a: &SimDisk,
        b: &SimDisk,
        usable: u64,
    ) -> Result<u64, String> {
        let end = (usable / SECTOR).min(self.sectors);
        for s in 0..end {
            let (x, y) = (a.durable(s), b.durable(s));
            if x != y {
                return Err(format!(
                    "durable images differ at sector {s} (byte {}): node 0 has {:?}, node 1 has {:?}; {}",
                    s * SECTOR,
                    x,
                    y,
                    self.describe(s, x, self.conv[s as usize])
                ));
            }
            let floor = self.conv[s as usize];
            if !self.acceptable(s, x, floor) {
                return Err(format!(
                    "an acknowledged write is lost: {}",
                    self.describe(s, x, floor)
                ));
            }
        }
        let checked = std::mem::take(&mut self.acked_since_check);
        self.stats.checked += checked;
        Ok(checked)
    }

    /// What a read of `count` sectors at `first` submitted now must see at least.
    pub fn read_floors(&mut self, first: u64, count: u64) -> Vec<WriteId> {
        self.stats.reads += 1;
        self.conv[first as usize..(first + count) as usize].to_vec()
    }

    /// Check the data a read returned against the floors taken when it was submitted.
    pub fn check_read(&self, first: u64, data: &[u8], floors: &[WriteId]) -> Result<(), String> {
        for (k, (chunk, &floor)) in data.chunks_exact(SECTOR_BYTES).zip(floors).enumerate() {
            let s = first + k as u64;
            let v = decode_sector(chunk, s);
            if !self.acceptable(s, &v, floor) {
                return Err(format!(
                    "a read returned stale data: {}",
                    self.describe(s, &v, floor)
                ));
            }
        }
        Ok(())
    }
}
