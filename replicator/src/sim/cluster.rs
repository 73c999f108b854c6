//! A two-node cluster in one thread: two engines, a simulated network and simulated storage,
//! driven by a seeded event queue. Everything is deterministic in the seed, so a failing
//! schedule replays exactly.
//!
//! - Network: two FIFO channels per direction (data, meta) with random latency; every frame
//!   passes the wire limits the real decoder enforces (a bulk frame beyond `MAX_DATA_BYTES`, or
//!   a small packet that does not survive encode → decode, drops the link as a protocol error
//!   at the receiver, as `runtime::link` does). A partition holds frames instead of losing
//!   them (TCP retransmits; a stream never skips a frame) until it heals or the link is closed;
//!   it can be one-way. No link can be set up while any direction is cut.
//! - Storage: `SimDisk` data devices and `SimMetaDev` external metadata devices, both with a
//!   volatile cache, failing on demand (`set_disk_failing`, `fail_flushes`), torn by power loss
//!   (`crash`, `cut_meta_power_after`). Writes still in flight when power is lost reach the
//!   cache in part.
//! - Clients: seeded writes from 512 B to the NBD maximum of 32 MiB at 512-byte granularity,
//!   FUA, FLUSH, TRIM, WRITE_ZEROES and reads, tracked by the data model (`model.rs`).
//! - Checks after every input an engine handles: both engines' `check_invariants`, never two
//!   connected Primaries, no protocol error on the link, reads return what the model allows, and
//!   a write that just became durable-required is in the durable image of every UpToDate node
//!   that must hold it. Whole durable images are checked whenever a node reports UpToDate anew
//!   (attach, restart, end of a resync) or is promoted, and at convergence (`check_converged`).
//!   Every change of a node's generation UUIDs and metadata flags obeys DRBD's rules
//!   (`generation_check.rs`).
//! - No silent "UpToDate with bits": `BITS_SETTLE_INPUTS` inputs (or `BITS_SETTLE_TIME`,
//!   whichever comes first) after a handshake decided, a
//!   node that is Connected and UpToDate/UpToDate has no bit set, unless it tells the operator
//!   why (`Engine::oos_notice`); a resync running meanwhile is fine.
//!   A violation panics with the reason; the test harness turns the panic into a failing seed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::disk::{fill_sector, SimDisk, SimMetaDev, SECTOR_BYTES};
use super::model::{Model, WriteId};
use super::watch::LogWatch;
use crate::core::failure::{Device, MetaProblem, Op};
use crate::core::rng::Rng;
use crate::core::{
    AdminCmd, AdminId, ClientOp, ConnState, DiskOpKind, DiskState, Engine, Input, IoId, LinkId,
    LinkLoss, MetaOpKind, OpenFailure, Output, PeerDiskOp, Refusal, ReqId, Role,
};
use crate::digest::Digests;
use crate::meta::layout::MetaDiskKind;
use crate::meta::store::{create_md, MetaDev, MetaStore};
use crate::wire::frame::{WireError, MAX_DATA_BYTES};
use crate::wire::{Channel, Packet};
use rep_resources::{DigestAlg, Fencing, Protocol};

pub const SECTOR: u64 = SECTOR_BYTES as u64;
pub const BLOCK: u64 = 4096;
/// The NBD maximum request size (docs/drbd-semantics.md §12).
pub const MAX_REQUEST_BYTES: u64 = 32 << 20;
/// How many inputs a node may take after its handshake decided before its bitmap must be
/// clear (or a resync running, or the condition shown to the operator): enough for the
/// peer's report, its final bitmap and the resync start to arrive.
pub const BITS_SETTLE_INPUTS: u32 = 200;
/// The same bound in simulated time, for an idle pair that takes few inputs.
pub const BITS_SETTLE_TIME: Duration = Duration::from_secs(1);
/// External metadata device: superblocks, AL ring and bitmap of a 64 MiB device fit easily.
const META_DEV_BYTES: usize = 256 * 1024;

/// What a simulated cluster is built with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub protocol: Protocol,
    pub device_bytes: u64,
    /// `al-extents` written by create-md (9 is the engine's minimum for 32 MiB requests).
    pub al_extents: u32,
    /// Empty: plain resync.
    pub csums_alg: Option<DigestAlg>,
    pub verify_alg: Option<DigestAlg>,
    pub resync_rate_kib: u64,
    /// `disk { fencing ...; }`. fence-peer is simulated as an outdate request over a
    /// management channel that partitions do not cut (as a cluster manager's messaging, or
    /// STONITH, would be): the peer outdates itself if it is up and not Primary, a peer that is
    /// down is reported unreachable (5).
    pub fencing: Fencing,
    /// How long fence-peer takes to reach the peer, drawn in this range (µs). Real handlers
    /// (crm-fence-peer.sh waiting for the cluster manager) take seconds; the default keeps
    /// them short, so a partition heals long after they returned. A long one lets the link
    /// come back while fence-peer still runs (DRBD 8.4's "connection established again").
    pub fence_peer_us: (u64, u64),
}

impl SimConfig {
    pub fn new(protocol: Protocol, device_bytes: u64) -> SimConfig {
        SimConfig {
            protocol,
            device_bytes,
            al_extents: 61,
            csums_alg: None,
            verify_alg: Some(DigestAlg::Crc32c),
            resync_rate_kib: 256 * 1024,
            fencing: Fencing::DontCare,
            fence_peer_us: (200, 5000),
        }
    }
}

/// The mix of client requests `client_io` draws from, in parts per thousand.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub flush: u32,
    pub read: u32,
    pub zero: u32,
    /// Writes of 1–32 MiB (at least one peer packet split).
    pub huge: u32,
    /// Writes of 64 KiB–1 MiB.
    pub large: u32,
    /// FUA among writes.
    pub fua: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            flush: 70,
            read: 40,
            zero: 20,
            huge: 4,
            large: 50,
            fua: 125,
        }
    }
}

/// Faults and events of a run, for the summary.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub faults: BTreeMap<&'static str, u64>,
    pub wire_rejects: u64,
    pub max_request: u64,
    pub bytes_written: u64,
    /// Resync replies sent: bytes as data (`RsData`), bytes as zero ranges (`RsZero`).
    pub rs_data_bytes: u64,
    pub rs_zero_bytes: u64,
}

impl SimStats {
    pub fn merge(&mut self, o: &SimStats) {
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_insert(0) += v;
        }
        self.wire_rejects += o.wire_rejects;
        self.max_request = self.max_request.max(o.max_request);
        self.bytes_written += o.bytes_written;
        self.rs_data_bytes += o.rs_data_bytes;
        self.rs_zero_bytes += o.rs_zero_bytes;
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
}

#[derive(Debug)]
enum ClientKind {
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
struct Client {
    op: ClientOp,
    kind: ClientKind,
    /// Submitted to a node that was not Primary: it must be refused.
    to_secondary: bool,
}

pub struct Node {
    pub name: String,
    pub engine: Engine,
    pub disk: SimDisk,
    meta_dev: SimMetaDev,
    meta: Option<MetaStore>,
    pub up: bool,
    gen: u64,
    wants_link: bool,
    clients: HashMap<ReqId, Client>,
    admin_replies: HashMap<AdminId, Result<String, Refusal>>,
    next_admin: AdminId,
    disk_failing: bool,
    /// Client requests answered with an error.
    pub failed_replies: u64,
    /// Power was lost in the middle of this input (a torn metadata write): nothing the engine
    /// does from here on happens.
    dying: bool,
    /// Lose power right after the input in which the node notices its link is gone (what it
    /// did in that input happened; nothing it issued then has completed).
    die_on_link_loss: bool,
    /// When the metadata thread is done with what it was given so far.
    meta_free_at: Duration,
    /// The node started to claim UpToDate data (why): its whole durable image is checked once
    /// a superblock written after the claim is on disk. Metadata writes complete later than
    /// the claim is made in memory; a crash before then leaves the superblock claiming less.
    claim_pending: Option<&'static str>,
    /// (role, disk, cstate) after the last input, to see transitions.
    seen: (Role, DiskState, ConnState),
    /// Inputs left, and the time, until the bitmap check that follows a handshake.
    bits_check_in: Option<(u32, Duration)>,
    /// Bumped by every lost write-back or crash on this node.
    unreliable: u64,
    last_timer: Duration,
    /// Added to every data write of this node's disk (a slow disk: received writes queue).
    disk_delay: Duration,
}

pub struct Cluster {
    pub nodes: [Node; 2],
    pub cfg: SimConfig,
    pub workload: Workload,
    base: Instant,
    now: Duration,
    queue: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    rng: Rng,
    link: Option<LinkId>,
    next_link: LinkId,
    /// Frames from node i are held (not lost) while `hold[i]`.
    hold: [bool; 2],
    held: [Vec<Ev>; 2],
    /// Last delivery time per (from node, meta channel), so each channel stays FIFO.
    last_delivery: HashMap<(usize, bool), Duration>,
    next_req: ReqId,
    pub model: Model,
    pub stats: SimStats,
    pub trace: Vec<String>,
    handlers_run: Vec<(usize, &'static str)>,
    /// Node i's fence-peer outdated its peer and no `unfence-peer` ran since (a Pacemaker
    /// constraint would still forbid promoting the peer): it must run before the pair settles.
    owes_unfence: [bool; 2],
    /// Outdate requests of fence-peer being carried out: (peer, its admin id) → the fencing
    /// node, its generation and its handler I/O.
    fence_waits: HashMap<(usize, AdminId), (usize, u64, IoId)>,
    watch: LogWatch,
    /// `REP_SIM_WATCH_SECTOR`: trace every change of this sector (debugging a failing seed).
    watch_sector: Option<u64>,
    _watch_guard: tracing::subscriber::DefaultGuard,
    protocol_errors_seen: usize,
    /// The generation rules, over both nodes' history (sim/generation_check.rs).
    generations: super::generation_check::GenerationCheck,
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
struct Buffer {
    wid: WriteId,
    first: u64,
    count: u64,
}

impl Buffer {
    fn len(&self) -> usize {
        (self.count * SECTOR) as usize
    }

    fn bytes(&self) -> Vec<u8> {
        pattern(self.wid, self.first, self.count)
    }

    /// Bytes `at..at + len` of the buffer, if it has them.
    fn piece(&self, at: usize, len: usize) -> Option<Vec<u8>> {
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

fn io_failure(e: &std::io::Error) -> crate::core::IoFailure {
    crate::core::IoFailure {
        errno: e.raw_os_error().unwrap_or(5),
        message: e.to_string(),
    }
}

fn failing_disk() -> std::io::Error {
    std::io::Error::from_raw_os_error(5)
}

/// The wire limits a frame must pass on its way, as the real decoder applies them. Bulk
/// payloads are only measured (encoding megabytes per packet would dominate the run); every
/// other packet goes through encode → decode and must come out equal.
fn wire_check(p: &Packet) -> Result<(), WireError> {
    let bulk = match p {
        Packet::Data { data, .. }
        | Packet::RsData { data, .. }
        | Packet::DataReply { data, .. } => Some(data.len()),
        Packet::Bitmap { rle, .. } => Some(rle.len()),
        _ => None,
    };
    if let Some(n) = bulk {
        if n > MAX_DATA_BYTES {
            return Err(WireError::Invalid {
                cmd: p.name(),
                what: format!("{n} bytes of data: beyond the frame limit of {MAX_DATA_BYTES}"),
            });
        }
        return Ok(());
    }
    let mut buf = Vec::new();
    p.encode(&mut buf);
    match crate::wire::packet::decode_frame(&buf) {
        Ok((q, used)) if used == buf.len() && &q == p => Ok(()),
        Ok((q, _)) => Err(WireError::Invalid {
            cmd: p.name(),
            what: format!("{p:?} decodes as {q:?}"),
        }),
        Err(e) => Err(e),
    }
}

impl Cluster {
    pub fn new(seed: u64, protocol: Protocol, device_bytes: u64) -> Cluster {
        Cluster::with_config(seed, SimConfig::new(protocol, device_bytes))
    }

    /// A cluster whose resyncs use `csums_alg` (`None`: plain resync).
    pub fn with_csums(
        seed: u64,
        protocol: Protocol,
        device_bytes: u64,
        csums_alg: Option<DigestAlg>,
    ) -> Cluster {
        let mut cfg = SimConfig::new(protocol, device_bytes);
        cfg.csums_alg = csums_alg;
        Cluster::with_config(seed, cfg)
    }

    pub fn with_config(seed: u64, cfg: SimConfig) -> Cluster {
        let base = Instant::now();
        let mk = |i: usize| {
            let name = ["node-a", "node-b"][i].to_owned();
            let meta_dev = SimMetaDev::new(META_DEV_BYTES, seed ^ (0x3e7a << i));
            // create-md writes through the device and flushes: the result is durable.
            let data_stub = SimMetaDev::new(0, 0);
            if let Err(e) = create_md(
                &data_stub,
                Some(&meta_dev),
                cfg.device_bytes,
                MetaDiskKind::ExternalFlex,
                cfg.al_extents,
                seed ^ i as u64,
                true,
            ) {
                panic!("create-md for the simulated node failed: {e}");
            }
            Node {
                engine: Engine::new(
                    super::res::engine_config_for(&name, &cfg),
                    seed.wrapping_mul(31).wrapping_add(i as u64),
                ),
                name,
                disk: SimDisk::new(cfg.device_bytes as usize, seed ^ (0xd15c << i)),
                meta_dev,
                meta: None,
                up: true,
                gen: 0,
                wants_link: false,
                clients: HashMap::new(),
                admin_replies: HashMap::new(),
                disk_failing: false,
                failed_replies: 0,
                next_admin: AdminId(1),
                dying: false,
                die_on_link_loss: false,
                meta_free_at: Duration::ZERO,
                claim_pending: None,
                seen: (Role::Secondary, DiskState::Diskless, ConnState::StandAlone),
                bits_check_in: None,
                unreliable: 0,
                last_timer: Duration::ZERO,
                disk_delay: Duration::ZERO,
            }
        };
        let watch = LogWatch::new(std::env::var("REP_SIM_LOG").is_ok());
        let guard = tracing::subscriber::set_default(watch.clone());
        Cluster {
            nodes: [mk(0), mk(1)],
            model: Model::new(cfg.protocol, cfg.device_bytes),
            cfg,
            workload: Workload::default(),
            base,
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            rng: Rng::new(seed),
            link: None,
            next_link: LinkId(1),
            hold: [false; 2],
            held: [Vec::new(), Vec::new()],
            last_delivery: HashMap::new(),
            next_req: ReqId(1),
            stats: SimStats::default(),
            trace: Vec::new(),
            handlers_run: Vec::new(),
            owes_unfence: [false; 2],
            fence_waits: HashMap::new(),
            watch,
            watch_sector: std::env::var("REP_SIM_WATCH_SECTOR")
                .ok()
                .and_then(|v| v.parse().ok()),
            _watch_guard: guard,
            protocol_errors_seen: 0,
            generations: Default::default(),
        }
    }

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

    fn at(&self) -> Instant {
        self.base + self.now
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
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
    fn watch_disk(&mut self, i: usize, what: &str, off: u64, len: u64) {
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

    // ---- driving the engines ----

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

    fn drain(&mut self, i: usize) {
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
    fn feed_nested(&mut self, i: usize, input: Input) {
        let now = self.at();
        self.nodes[i].engine.handle(now, input);
    }

    fn perform(&mut self, i: usize, out: Output) {
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
                self.handlers_run.push((i, name));
            }
            // No other resources in the simulation.
            Output::CheckDependency => {
                self.feed_nested(i, Input::DependencySyncing { syncing: false });
            }
            Output::AdminReply { id, result } => {
                if let Some((from, from_gen, hio)) = self.fence_waits.remove(&(i, id)) {
                    // The peer carried out fence-peer's outdate request: its answer.
                    let e = &self.nodes[i].engine;
                    let code = if e.role() == Role::Primary {
                        6
                    } else if e.disk() == DiskState::Outdated {
                        4
                    } else if e.disk() < DiskState::Outdated {
                        3
                    } else {
                        1
                    };
                    self.log(format!(
                        "fence-peer of node {from}: node {i} answers {code} ({result:?})"
                    ));
                    let d = self.rand_us(100, 2000);
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
                        data,
                    },
                );
            }
        }
    }

    fn write_id(&self, i: usize, req: ReqId) -> Option<WriteId> {
        match self.nodes[i].clients.get(&req) {
            Some(Client {
                kind: ClientKind::Write { wid, .. },
                ..
            }) => Some(*wid),
            _ => None,
        }
    }

    /// How long from now until the metadata thread of node `i` finishes the next job: it
    /// works through its queue in order, each job taking a while.
    fn meta_queue_delay(&mut self, i: usize) -> Duration {
        let start = self.nodes[i].meta_free_at.max(self.now);
        let done = start + self.rand_us(20, 400);
        self.nodes[i].meta_free_at = done;
        done - self.now
    }

    fn apply_meta(&mut self, i: usize, op: &MetaOpKind) -> Result<(), crate::core::IoFailure> {
        let fail = |e: String| crate::core::IoFailure {
            errno: 5,
            message: e,
        };
        if op.flushes_data_first() {
            // The runtime flushes the data device before such metadata (driver.rs): model that
            // the flush really happened, and that it can fail.
            if self.nodes[i].disk_failing {
                return Err(fail(
                    "data flush before metadata: Input/output error".into(),
                ));
            }
            if let Err(e) = self.nodes[i].disk.flush() {
                self.nodes[i].unreliable += 1;
                return Err(fail(format!("data flush before metadata: {e}")));
            }
        }
        let n = &mut self.nodes[i];
        let store = n
            .meta
            .as_mut()
            .ok_or_else(|| fail("no metadata open".into()))?;
        let r = crate::meta::attach::apply(store, op).map_err(|e| fail(e.to_string()));
        if n.meta_dev.dead() {
            n.dying = true;
        }
        r
    }

    fn open_meta(&mut self, i: usize) -> Result<Box<crate::core::AttachInfo>, OpenFailure> {
        let dev: Box<dyn MetaDev> = Box::new(self.nodes[i].meta_dev.clone());
        let store = MetaStore::open_external(dev, None, self.cfg.device_bytes).map_err(|e| {
            OpenFailure::Metadata {
                device: Device::Meta,
                op: Op::OpenMetadata,
                path: format!("sim-meta-{}", self.nodes[i].name).into(),
                problem: MetaProblem::from(&e),
            }
        })?;
        let info = crate::meta::attach::attach_info(&store, None);
        self.nodes[i].meta = Some(store);
        Ok(Box::new(info))
    }

    /// Whether node `i`'s superblock, as its metadata device holds it now, says the disk was
    /// closed clean (no activity-log replay on the next attach).
    pub fn superblock_clean(&self, i: usize) -> Result<bool, String> {
        let dev: Box<dyn MetaDev> = Box::new(self.nodes[i].meta_dev.clone());
        let store = MetaStore::open_external(dev, None, self.cfg.device_bytes)
            .map_err(|e| e.to_string())?;
        Ok(!crate::meta::attach::attach_info(&store, None).unclean)
    }

    // ---- network ----

    fn send(&mut self, from: usize, link: LinkId, packet: Packet) {
        if self.link != Some(link) {
            return;
        }
        let bulk = match &packet {
            Packet::Data { data, .. }
            | Packet::RsData { data, .. }
            | Packet::DataReply { data, .. } => data.len() as u64,
            _ => 0,
        };
        match &packet {
            Packet::RsData { data, .. } => self.stats.rs_data_bytes += data.len() as u64,
            Packet::RsZero { len, .. } => self.stats.rs_zero_bytes += u64::from(*len),
            _ => {}
        }
        let ev = match wire_check(&packet) {
            Ok(()) => Ev::Deliver {
                to: 1 - from,
                link,
                packet,
            },
            Err(why) => {
                // The receiver's decoder refuses the frame and closes the connection.
                self.stats.wire_rejects += 1;
                self.log(format!("wire: {} → {}: {why}", from, 1 - from));
                Ev::LinkDown {
                    to: 1 - from,
                    link,
                    loss: LinkLoss::ProtocolError(why),
                }
            }
        };
        let meta = match &ev {
            Ev::Deliver { packet, .. } => packet.channel() == Channel::Meta,
            _ => false,
        };
        if self.hold[from] {
            self.held[from].push(ev);
            return;
        }
        // About 10 Gbit/s plus latency.
        let lat = self.rand_us(20, 400) + Duration::from_nanos(bulk);
        self.schedule_fifo(from, meta, lat, ev);
    }

    fn schedule_fifo(&mut self, from: usize, meta: bool, lat: Duration, ev: Ev) {
        let last = self
            .last_delivery
            .get(&(from, meta))
            .copied()
            .unwrap_or(Duration::ZERO);
        let when = (self.now + lat).max(last);
        self.last_delivery.insert((from, meta), when);
        self.seq += 1;
        self.queue.insert((when, self.seq), ev);
    }

    /// The link goes away (closed or reset by `closer`); the other side hears of it unless
    /// frames from `closer` are held, in which case it hears once they flow again.
    fn drop_link(&mut self, closer: usize) {
        let Some(link) = self.link.take() else {
            return;
        };
        for h in &mut self.held {
            h.retain(|ev| !matches!(ev, Ev::Deliver { link: l, .. } if *l == link));
        }
        let ev = Ev::LinkDown {
            to: 1 - closer,
            link,
            loss: LinkLoss::BrokenPipe,
        };
        if self.hold[closer] {
            self.held[closer].push(ev);
        } else {
            let d = self.rand_us(20, 400);
            self.schedule_fifo(closer, false, d, ev);
        }
    }

    fn maybe_link(&mut self) {
        let both = self.nodes.iter().all(|n| n.up && n.wants_link);
        if both && self.link.is_none() && !self.hold[0] && !self.hold[1] {
            let link = self.next_link;
            self.next_link = link.next();
            self.link = Some(link);
            let d = self.rand_us(100, 2000);
            self.schedule(d, Ev::LinkUp { link });
        }
    }

    /// Hold (or release) every frame node `from` sends: a one-way partition.
    pub fn set_one_way(&mut self, from: usize, cut: bool) {
        self.log(format!("frames from node {from} held={cut}"));
        self.hold[from] = cut;
        if !cut {
            for ev in std::mem::take(&mut self.held[from]) {
                let meta =
                    matches!(&ev, Ev::Deliver { packet, .. } if packet.channel() == Channel::Meta);
                let lat = self.rand_us(20, 400);
                self.schedule_fifo(from, meta, lat, ev);
            }
            self.maybe_link();
        }
    }

    /// Silent partition in both directions: only pings notice it.
    pub fn set_cut(&mut self, cut: bool) {
        self.set_one_way(0, cut);
        self.set_one_way(1, cut);
    }

    pub fn partitioned(&self) -> bool {
        self.hold[0] || self.hold[1]
    }

    // ---- the event loop ----

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

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, link, packet } => {
                if self.link != Some(link) && !matches!(packet, Packet::Bye) {
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

    /// Peer I/O (replicated and resync writes, reads, barrier flushes) on node `node`'s disk.
    fn peer_disk_op(&mut self, node: usize, op: PeerDiskOp) -> std::io::Result<Option<Vec<u8>>> {
        let n = &mut self.nodes[node];
        match op {
            _ if n.disk_failing => Err(failing_disk()),
            PeerDiskOp::Write { offset, data, fua } => {
                n.disk.write(&data, offset, fua).map(|()| None)
            }
            PeerDiskOp::Zero {
                offset, len, fua, ..
            } => n.disk.zero(offset, u64::from(len), fua).map(|()| None),
            PeerDiskOp::Read { offset, len } | PeerDiskOp::ReadSparse { offset, len } => {
                n.disk.read_vec(offset, len as usize).map(Some)
            }
            PeerDiskOp::Flush => {
                let r = n.disk.flush().map(|()| None);
                if r.is_err() {
                    n.unreliable += 1;
                }
                r
            }
        }
    }

    /// A client request's disk operation completes: do it on the SimDisk and tell the model.
    fn client_disk_op(
        &mut self,
        node: usize,
        req: ReqId,
        op: DiskOpKind,
        data: Option<Buffer>,
    ) -> std::io::Result<()> {
        let n = &mut self.nodes[node];
        let result = match op {
            _ if n.disk_failing => Err(failing_disk()),
            DiskOpKind::Read { offset, len } => {
                let (buf, r) = match n.disk.read_vec(offset, len as usize) {
                    Ok(buf) => (buf, Ok(())),
                    Err(e) => (vec![0; len as usize], Err(e)),
                };
                if let Some(Client {
                    kind: ClientKind::Read { data, .. },
                    ..
                }) = n.clients.get_mut(&req)
                {
                    *data = Some(buf);
                }
                r
            }
            DiskOpKind::Write { offset, len, fua } => match data {
                Some(d) if d.len() == len as usize && offset == d.first * SECTOR => {
                    n.disk.write_tag(u64::from(d.wid), d.first, d.count, fua)
                }
                Some(d) if d.len() == len as usize => n.disk.write(&d.bytes(), offset, fua),
                _ => panic!(
                    "invariant violated: node {node} writes {len} bytes for request {req}, whose buffer has {:?}",
                    data.map(|d| d.len())
                ),
            },
            DiskOpKind::Flush => {
                let r = n.disk.flush();
                if r.is_err() {
                    n.unreliable += 1;
                }
                r
            }
            DiskOpKind::Trim { offset, len, fua } | DiskOpKind::WriteZeroes { offset, len, fua } => {
                n.disk.zero(offset, u64::from(len), fua)
            }
        };
        match self.nodes[node].clients.get(&req).map(|c| &c.kind) {
            Some(ClientKind::Write { wid, .. }) => self.model.local_done(*wid, result.is_ok()),
            Some(ClientKind::Flush { flush }) => {
                self.model.flush_local_done(*flush, result.is_ok())
            }
            _ => {}
        }
        result
    }

    // ---- checks ----

    /// After every input node `i` handled.
    fn after_input(&mut self, i: usize) {
        for n in self.nodes.iter().filter(|n| n.up) {
            n.engine.check_invariants();
        }
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
            assert!(!connected, "invariant violated: two connected Primaries");
        }
        let errors = self.watch.protocol_errors();
        if errors.len() > self.protocol_errors_seen {
            self.protocol_errors_seen = errors.len();
            panic!(
                "invariant violated: two honest engines dropped their link as a protocol error: {}",
                errors[errors.len() - 1]
            );
        }
        self.observe(i);
        self.check_bits_settled(i);
    }

    /// Connected and UpToDate/UpToDate implies no bit set, or a resync running, or the
    /// operator told: checked once per handshake, `BITS_SETTLE_INPUTS` inputs after it.
    fn check_bits_settled(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some((left, deadline)) = n.bits_check_in else {
            return;
        };
        if n.engine.cstate() < ConnState::Connected {
            n.bits_check_in = None;
            return;
        }
        if left > 0 && now < deadline {
            n.bits_check_in = Some((left - 1, deadline));
            return;
        }
        n.bits_check_in = None;
        let e = &n.engine;
        if e.cstate() == ConnState::Connected
            && e.disk() == DiskState::UpToDate
            && e.pdsk() == DiskState::UpToDate
            && e.oos_kib() > 0
            && e.oos_notice().is_none()
        {
            panic!(
                "invariant violated: node {i} is Connected and UpToDate/UpToDate {} inputs after its handshake with {} KiB marked out of sync, no resync running and nothing telling the operator",
                BITS_SETTLE_INPUTS - left,
                e.oos_kib()
            );
        }
    }

    /// Follow node `i`'s state transitions for the model, and check whole images when a node
    /// starts to claim its data.
    fn observe(&mut self, i: usize) {
        let n = &self.nodes[i];
        let now = (n.engine.role(), n.engine.disk(), n.engine.cstate());
        let before = std::mem::replace(&mut self.nodes[i].seen, now);
        if now == before {
            return;
        }
        if now.1 != before.1 {
            self.log(format!("node {i} disk {:?} -> {:?}", before.1, now.1));
        }
        if before.2 == ConnState::WFReportParams && now.2 >= ConnState::Connected {
            self.nodes[i].bits_check_in = Some((BITS_SETTLE_INPUTS, self.now + BITS_SETTLE_TIME));
        }
        if now.2 == ConnState::SyncTarget && before.2 != ConnState::SyncTarget {
            self.model.sync_target(i);
        }
        let became_uptodate = now.1 == DiskState::UpToDate && before.1 != DiskState::UpToDate;
        if became_uptodate && before.2 == ConnState::SyncTarget && now.2 == ConnState::Connected {
            self.check_adopted_generation(i);
        }
        if became_uptodate {
            let j = 1 - i;
            let source_ok = self.nodes[j].up
                && self.nodes[j].engine.disk() == DiskState::UpToDate
                && now.2 >= ConnState::Connected;
            if before.1 == DiskState::Inconsistent && source_ok {
                self.model.resynced(i, j);
            }
            self.log(format!("node {i} reports UpToDate ({:?} before)", before.1));
            self.nodes[i].claim_pending = Some("reports UpToDate (and its superblock says so)");
        }
        if now.0 == Role::Primary && before.0 != Role::Primary {
            if now.2 < ConnState::Connected {
                self.model.failover(i);
            }
            self.log(format!("node {i} promoted, disk {:?}", now.1));
            if now.1 == DiskState::UpToDate {
                self.nodes[i].claim_pending = Some("was promoted (and its superblock says so)");
                // With fencing that freezes I/O, the fence-peer handler decides: a node it lets
                // be promoted holds every write a client got an acknowledgement for.
                if self.cfg.fencing == Fencing::ResourceAndStonith
                    && self.cfg.protocol == Protocol::C
                {
                    if let Err(e) = self.model.check_holds_acknowledged(i, &self.nodes[i].disk) {
                        panic!("invariant violated: node {i} was promoted (fencing resource-and-stonith) but lacks an acknowledged write: {e}");
                    }
                }
            }
        }
    }

    /// A SyncTarget that finished holds its source's data, so it must hold its source's
    /// generation too: a stale one makes the next handshake a false split brain (simulator
    /// seeds 2685 and 5195, which took a 20,000-seed sweep to meet without this check).
    fn check_adopted_generation(&self, i: usize) {
        let j = 1 - i;
        let source = &self.nodes[j];
        if !source.up || source.engine.disk() != DiskState::UpToDate {
            return;
        }
        let (own, theirs) = (
            self.nodes[i].engine.uuids().current,
            source.engine.uuids().current,
        );
        assert!(
            own & !1 == theirs & !1,
            "invariant violated: node {i} finished its resync with current generation {own:016X}, its source node {j} has {theirs:016X}"
        );
    }

    /// Node `i`'s durable image holds every write durable-required there (if it claims
    /// UpToDate data).
    pub fn check_node(&mut self, i: usize, why: &str) {
        let n = &self.nodes[i];
        if !n.up || n.engine.disk() != DiskState::UpToDate {
            return;
        }
        let sectors = self.cfg.device_bytes / SECTOR;
        if let Err(e) = self.model.check_durable(i, &self.nodes[i].disk, 0..sectors) {
            panic!("invariant violated: node {i} {why}, but {e}");
        }
    }

    fn check_newly_required(&mut self, newly: Vec<(usize, WriteId)>) {
        for (n, wid) in newly {
            let node = &self.nodes[n];
            if !node.up || node.engine.disk() != DiskState::UpToDate {
                continue;
            }
            if let Err(e) = self.model.check_write_durable(n, wid, &self.nodes[n].disk) {
                panic!(
                    "invariant violated: write {wid} became durable-required on node {n}, but {e}"
                );
            }
        }
    }

    // ---- admin and clients ----

    /// Run an admin command and the cluster until it is answered (at most 10 s).
    pub fn admin(&mut self, i: usize, cmd: AdminCmd) -> Result<String, Refusal> {
        let id = self.admin_nowait(i, cmd);
        for _ in 0..2000 {
            if let Some(r) = self.nodes[i].admin_replies.remove(&id) {
                if let Err(e) = &r {
                    self.log(format!("  refused: {e}"));
                }
                return r;
            }
            if !self.nodes[i].up {
                break;
            }
            self.run_for(Duration::from_millis(5));
        }
        Err(Refusal::MetaIo {
            message: "admin command not answered".into(),
        })
    }

    /// Hand node `i` an admin command and return at once (`admin` waits for the answer).
    pub fn admin_nowait(&mut self, i: usize, cmd: AdminCmd) -> AdminId {
        let id = self.nodes[i].next_admin;
        self.nodes[i].next_admin = self.nodes[i].next_admin.next();
        self.log(format!("{} {:?}", self.nodes[i].name, cmd));
        self.feed(i, Input::Admin { id, cmd });
        id
    }

    fn new_req(&mut self) -> ReqId {
        let r = self.next_req;
        self.next_req = self.next_req.next();
        r
    }

    /// Submit a write of `len` bytes at `offset` (multiples of 512) on node `i`.
    pub fn write_at(&mut self, i: usize, offset: u64, len: u64, fua: bool) -> ReqId {
        let (first, count) = (offset / SECTOR, len / SECTOR);
        let wid = self.model.new_write(i, first, count, false, fua);
        self.stats.max_request = self.stats.max_request.max(len);
        self.stats.bytes_written += len;
        let op = ClientOp::Write {
            offset,
            len: len as u32,
            fua,
        };
        self.submit(
            i,
            op,
            ClientKind::Write {
                wid,
                data: Some(Buffer { wid, first, count }),
            },
        )
    }

    /// Submit a TRIM (`trim`) or WRITE_ZEROES of `len` bytes at `offset` on node `i`.
    pub fn zero_at(&mut self, i: usize, offset: u64, len: u64, trim: bool, fua: bool) -> ReqId {
        let wid = self
            .model
            .new_write(i, offset / SECTOR, len / SECTOR, true, fua);
        let len = len as u32;
        let op = if trim {
            ClientOp::Trim { offset, len, fua }
        } else {
            ClientOp::WriteZeroes { offset, len, fua }
        };
        self.submit(i, op, ClientKind::Write { wid, data: None })
    }

    pub fn flush(&mut self, i: usize) -> ReqId {
        let flush = self.model.flush_submitted(i);
        self.submit(i, ClientOp::Flush, ClientKind::Flush { flush })
    }

    pub fn read_at(&mut self, i: usize, offset: u64, len: u64) -> ReqId {
        let floors = self.model.read_floors(offset / SECTOR, len / SECTOR);
        let epoch = (self.nodes[0].unreliable, self.nodes[1].unreliable);
        let op = ClientOp::Read {
            offset,
            len: len as u32,
        };
        self.submit(
            i,
            op,
            ClientKind::Read {
                floors,
                data: None,
                epoch,
            },
        )
    }

    fn submit(&mut self, i: usize, op: ClientOp, kind: ClientKind) -> ReqId {
        let req = self.new_req();
        let to_secondary = self.nodes[i].engine.role() != Role::Primary;
        self.nodes[i].clients.insert(
            req,
            Client {
                op,
                kind,
                to_secondary,
            },
        );
        self.feed(i, Input::Client { req, op });
        req
    }

    /// Draw a request size in sectors: mostly small, some up to 1 MiB, a few up to 32 MiB.
    fn draw_len(&mut self, w: &Workload) -> u64 {
        let r = self.rng.next_u64();
        let pick = r % 1000;
        let x = r >> 16;
        let sectors = if pick < u64::from(w.huge) {
            // 1 MiB + 1 sector ..= 32 MiB: always split into several peer packets.
            let lo = (1 << 20) / SECTOR + 1;
            let hi = MAX_REQUEST_BYTES / SECTOR;
            lo + x % (hi - lo + 1)
        } else if pick < u64::from(w.huge + w.large) {
            128 + x % (2048 - 128 + 1)
        } else {
            // 512 B .. 64 KiB, small ones more often.
            let cap = [8u64, 32, 128][(x % 3) as usize];
            1 + (x >> 4) % cap
        };
        sectors.min(self.cfg.device_bytes / SECTOR)
    }

    /// Submit one random client request on node `i` (see `Workload`).
    pub fn client_io(&mut self, i: usize) {
        let w = self.workload;
        let r = self.rng.next_u64() % 1000;
        let device_sectors = self.cfg.device_bytes / SECTOR;
        let place = |c: &mut Cluster| {
            let sectors = c.draw_len(&w);
            let r2 = c.rng.next_u64();
            let mut first = r2 % (device_sectors - sectors + 1);
            if (r2 >> 40).is_multiple_of(2) {
                // Half the requests are 4 KiB aligned, like a filesystem's.
                first -= first % 8;
            }
            (first * SECTOR, sectors * SECTOR)
        };
        if r < u64::from(w.flush) {
            self.flush(i);
        } else if r < u64::from(w.flush + w.read) {
            let (off, len) = place(self);
            self.read_at(i, off, len);
        } else if r < u64::from(w.flush + w.read + w.zero) {
            let (off, len) = place(self);
            let trim = self.rng.next_u64().is_multiple_of(2);
            let fua = self.rng.next_u64().is_multiple_of(8);
            self.zero_at(i, off, len, trim, fua);
        } else {
            let (off, len) = place(self);
            let fua = self.rng.next_u64() % 1000 < u64::from(w.fua);
            self.write_at(i, off, len, fua);
        }
    }

    /// Kept for older tests: one random request.
    pub fn client_write(&mut self, i: usize) {
        self.client_io(i);
    }

    fn client_reply(&mut self, i: usize, req: ReqId, ok: bool) {
        let Some(c) = self.nodes[i].clients.remove(&req) else {
            return;
        };
        if let (Some(s), Some((off, len))) = (self.watch_sector, c.op.write_range()) {
            if off / SECTOR <= s && s < (off + len) / SECTOR {
                let wid = match &c.kind {
                    ClientKind::Write { wid, .. } => *wid,
                    _ => 0,
                };
                self.log(format!(
                    "reply to request {req} (write {wid}) on node {i}: ok={ok}"
                ));
            }
        }
        // A request sent to a Secondary on purpose must fail: that is no client error.
        if !ok && !c.to_secondary {
            self.nodes[i].failed_replies += 1;
        }
        assert!(
            !(ok && c.to_secondary),
            "invariant violated: node {i} served {:?} as a Secondary",
            c.op
        );
        match c.kind {
            ClientKind::Write { wid, .. } => {
                let newly = self.model.write_replied(wid, ok);
                self.check_newly_required(newly);
            }
            ClientKind::Flush { flush } => {
                let newly = self.model.flush_replied(flush, ok);
                self.check_newly_required(newly);
            }
            ClientKind::Read {
                floors,
                data,
                epoch,
            } => {
                let ClientOp::Read { offset, len } = c.op else {
                    return;
                };
                let now = (self.nodes[0].unreliable, self.nodes[1].unreliable);
                if !ok || epoch != now {
                    return;
                }
                let Some(data) = data else {
                    panic!("invariant violated: read {req} on node {i} succeeded without data");
                };
                assert_eq!(
                    data.len(),
                    len as usize,
                    "invariant violated: read {req} returned {} bytes, {len} were asked",
                    data.len()
                );
                if let Err(e) = self.model.check_read(offset / SECTOR, &data, &floors) {
                    panic!("invariant violated: node {i}: {e}");
                }
            }
        }
    }

    pub fn outstanding_clients(&self, i: usize) -> usize {
        self.nodes[i].clients.len()
    }

    // ---- faults ----

    /// Node `i`'s data and metadata I/O fail with EIO (or work again).
    pub fn set_disk_failing(&mut self, i: usize, failing: bool) {
        self.log(format!("node {i} disk failing={failing}"));
        self.nodes[i].disk_failing = failing;
        self.nodes[i].meta_dev.set_failing(failing);
    }

    pub fn disk_failing(&self, i: usize) -> bool {
        self.nodes[i].disk_failing
    }

    /// Every data write of node `i`'s disk takes `delay` longer (zero: back to normal), like
    /// `repadm fault RES disk-delay MS`: writes the node receives from its peer queue up.
    pub fn set_disk_delay(&mut self, i: usize, delay: Duration) {
        self.log(format!("node {i}: data writes delayed by {delay:?}"));
        self.nodes[i].disk_delay = delay;
    }

    pub fn disk_delay(&self, i: usize) -> Duration {
        self.nodes[i].disk_delay
    }

    /// The next `n` flushes of node `i`'s data disk fail, losing what they should have written.
    pub fn fail_flushes(&mut self, i: usize, n: u32) {
        self.log(format!("node {i}: next {n} data flushes fail"));
        self.nodes[i].disk.flush_failures = n;
    }

    /// Node `i` loses power at its `n`-th metadata write from now, tearing that write.
    pub fn cut_meta_power_after(&mut self, i: usize, n: u32) {
        self.log(format!(
            "node {i}: power lost at metadata write #{n} from now"
        ));
        self.nodes[i].meta_dev.cut_power_after(n);
    }

    /// Node `i` (connected now) loses power right after the input in which it notices that
    /// its link is gone: replies and metadata writes it issued then are the only trace.
    pub fn crash_on_link_loss(&mut self, i: usize) {
        self.nodes[i].die_on_link_loss = true;
    }

    /// Power loss on node `i` (now).
    pub fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        self.log(format!("crash {}", self.nodes[i].name));
        self.power_loss(i);
    }

    fn power_loss(&mut self, i: usize) {
        // A fence-peer waiting for this node's answer hears that it is gone (unreachable).
        let waiting: Vec<(usize, AdminId)> = self
            .fence_waits
            .keys()
            .filter(|k| k.0 == i)
            .copied()
            .collect();
        for key in waiting {
            if let Some((from, from_gen, hio)) = self.fence_waits.remove(&key) {
                self.schedule(
                    Duration::from_millis(1),
                    Ev::HandlerDone {
                        node: from,
                        gen: from_gen,
                        io: hio,
                        exit: Some(5),
                    },
                );
            }
        }
        let seed = self.rng.next_u64();
        let gen = self.nodes[i].gen;
        // Writes in flight reached the cache in part.
        let mut partial = Rng::new(seed ^ 0x9a27);
        let disk = &mut self.nodes[i].disk;
        for ev in self.queue.values() {
            match ev {
                Ev::Disk {
                    node,
                    gen: g,
                    op: DiskOpKind::Write { offset, .. },
                    data: Some(d),
                    ..
                } if *node == i && *g == gen => {
                    disk.write_partial(&d.bytes(), *offset, &mut partial)
                }
                Ev::PeerDisk {
                    node,
                    gen: g,
                    op: PeerDiskOp::Write { offset, data, .. },
                    ..
                } if *node == i && *g == gen => disk.write_partial(data, *offset, &mut partial),
                _ => {}
            }
        }
        let n = &mut self.nodes[i];
        n.up = false;
        n.dying = false;
        n.die_on_link_loss = false;
        n.gen += 1;
        n.meta_free_at = Duration::ZERO;
        n.claim_pending = None;
        n.disk.crash(seed);
        if let Some(s) = self.watch_sector {
            let line = format!(
                "sector {s} on node {i} after the crash: {:?}",
                n.disk.durable(s)
            );
            self.log(line);
        }
        let n = &mut self.nodes[i];
        n.meta_dev.crash(seed.rotate_left(17));
        n.meta = None;
        n.clients.clear();
        n.admin_replies.clear();
        n.wants_link = false;
        n.unreliable += 1;
        n.seen = (Role::Secondary, DiskState::Diskless, ConnState::StandAlone);
        if self.link.is_some() {
            self.drop_link(i);
        }
        self.model.crashed(i);
    }

    /// Restart node `i` after a crash: a fresh engine, attach, connect.
    pub fn restart(&mut self, i: usize) -> Result<(), Refusal> {
        self.log(format!("restart {}", self.nodes[i].name));
        let seed = self.rng.next_u64();
        let n = &mut self.nodes[i];
        n.engine = Engine::new(super::res::engine_config_for(&n.name, &self.cfg), seed);
        n.up = true;
        n.bits_check_in = None;
        n.last_timer = self.now;
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

    /// Flip a byte of 4 KiB block `block` on node `i`'s disk behind rep's back (bit rot).
    pub fn corrupt(&mut self, i: usize, block: u64) {
        self.nodes[i].disk.rot(block * BLOCK / SECTOR);
    }

    // ---- state ----

    /// Both nodes connected, UpToDate, no resync running.
    pub fn settled(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.up && n.engine.cstate() == ConnState::Connected
                && n.engine.disk() == DiskState::UpToDate
                && n.engine.pdsk() == DiskState::UpToDate
        })
    }

    /// The node that is Primary, if one is.
    pub fn primary(&self) -> Option<usize> {
        (0..2).find(|&i| self.nodes[i].up && self.nodes[i].engine.role() == Role::Primary)
    }

    /// At convergence (settled, no client request outstanding): a FLUSH through the Primary,
    /// then both durable images must be identical and hold every acknowledged write. Returns how
    /// many acknowledged writes the check covered.
    pub fn check_converged(&mut self) -> Result<u64, String> {
        if !self.settled() {
            return Err("check_converged on a cluster that has not settled".into());
        }
        if let Some(p) = self.primary() {
            let req = self.flush(p);
            let mut waited = 0;
            while self.nodes[p].clients.contains_key(&req) {
                if waited > 10_000 {
                    return Err("the convergence FLUSH was not answered".into());
                }
                self.run_for(Duration::from_millis(1));
                waited += 1;
            }
        }
        for i in 0..2 {
            self.check_node(i, "is settled");
            if self.owes_unfence[i] && self.cfg.fencing != Fencing::DontCare {
                return Err(format!(
                    "node {i} fenced its peer, which is UpToDate again, but unfence-peer never ran"
                ));
            }
        }
        let usable = self.nodes[0].engine.usable_bytes();
        let (a, b) = (&self.nodes[0].disk, &self.nodes[1].disk);
        self.model.check_converged(a, b, usable)
    }

    /// Older name of `check_converged` for tests that only want the verdict.
    pub fn check_data(&mut self) -> Result<(), String> {
        self.check_converged().map(|_| ())
    }

    /// Both disks' caches are identical (what verify compares), ignoring the model.
    pub fn caches_identical(&self) -> bool {
        let sectors = self.nodes[0].engine.usable_bytes() / SECTOR;
        (0..sectors).all(|s| self.nodes[0].disk.cached(s) == self.nodes[1].disk.cached(s))
    }

    pub fn meta_torn_writes(&self) -> u64 {
        self.nodes.iter().map(|n| n.meta_dev.torn_writes()).sum()
    }
}
