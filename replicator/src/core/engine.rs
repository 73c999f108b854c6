//! The engine: one resource on one node, as a state machine that is fed inputs and drained of
//! outputs (docs/architecture.md §3). It keeps what its parts share — the state (`NodeState`, changed only
//! through `change_state`), the generation UUIDs and flags, the bitmap and activity log, the
//! table of operations in flight (`IoTable`) — and hands each input to the part it concerns:
//! client requests (`Requests`), the transfer log (`TransferLog`), the peer's operations
//! (`PeerRx`), the handshake (`handshake::decide`), resync (`Resync`) and verify (`Verify`).
//! It never does I/O, never reads a clock and never draws entropy: everything arrives through
//! `handle`.
//!
//! What can change `poll_output`'s answer: any `handle` call. What can change `next_timeout`:
//! any `handle` call.

use std::collections::VecDeque;
use std::time::Instant;

use super::admin::pending::AdminWaits;
use super::connection::peers::{NodeId, Peers};
use super::contract::config::EngineConfig;
use super::contract::failure::OpenFailure;
use super::contract::io::{AttachInfo, Extent, Input, IoFailure, IoId, IoResult, Output};
use super::contract::rng::Rng;
use super::device::generation::{self, GenChange, GenEvent, Persist};
use super::device::local::Device;
use super::fencing::fence_machine::FenceMachine;
use super::fencing::freeze::Freeze;
use super::io_table::{IoOwner, IoTable};
use super::request::requests::Requests;
use super::state::node_state::{NodeState, PeerState};
use super::state::{ConnState, DiskState, Role};
use crate::meta::superblock::{GenerationUuids, MdFlags};

pub use super::contract::config::OnIoError;

/// Counters in `/proc/drbd` units (KiB for volumes, counts for metadata writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub ns_kib: u64,
    pub nr_kib: u64,
    pub dw_kib: u64,
    pub dr_kib: u64,
    pub al_writes: u64,
    pub bm_writes: u64,
    pub lo: u64,
    pub pe: u64,
    pub ua: u64,
    pub ap: u64,
    pub ep: u64,
}

/// What a completed operation brought back; routed by its `IoOwner`.
#[derive(Debug)]
enum Completion {
    Disk(IoResult),
    Meta(IoResult),
    Opened(Result<Box<AttachInfo>, OpenFailure>),
    Closed,
    PeerDisk(Result<Option<Vec<u8>>, IoFailure>),
    Sparse(Result<Vec<Extent>, IoFailure>),
    Hash(Vec<u8>),
    Handler(Option<i32>),
}

impl Completion {
    /// The I/O result, for owners that only look at success (a read's data is separate).
    fn result(&self) -> IoResult {
        match self {
            Completion::Disk(r) | Completion::Meta(r) => r.clone(),
            Completion::PeerDisk(r) => r.as_ref().map(|_| ()).map_err(Clone::clone),
            Completion::Sparse(r) => r.as_ref().map(|_| ()).map_err(Clone::clone),
            Completion::Opened(_)
            | Completion::Closed
            | Completion::Hash(_)
            | Completion::Handler(_) => Ok(()),
        }
    }

    fn into_peer_disk(self) -> Result<Option<Vec<u8>>, IoFailure> {
        match self {
            Completion::PeerDisk(r) => r,
            other => other.result().map(|()| None),
        }
    }
}

/// What the engine queues for the driver: outputs, and whether `status` changed.
#[derive(Debug, Default)]
pub(in crate::core) struct Outbox {
    pub(in crate::core) queue: VecDeque<Output>,
    /// Something `status` shows changed during this input: one `StateChanged` at its end.
    pub(in crate::core) status_dirty: bool,
}

/// One resource on one node (docs/architecture.md §4.1): the coordinator of the parts below.
/// Its fields are visible to the `impl Engine` blocks of `core/` and nowhere else.
pub struct Engine {
    pub(in crate::core) cfg: EngineConfig,
    /// Role, connection and disk states: written only by `change_state`.
    pub(in crate::core) st: NodeState,
    /// Size, generation, bitmap and activity log of the local disk.
    pub(in crate::core) dev: Device,
    /// Everything kept per peer, keyed by node id.
    pub(in crate::core) peers: Peers,
    /// The client requests (and the clients' count and last write).
    pub(in crate::core) requests: Requests,
    /// Every operation in flight and who waits for it.
    pub(in crate::core) ios: IoTable,
    /// Client I/O held while fencing froze it (`NodeState::susp_fen`), replies held by the
    /// generation gate.
    pub(in crate::core) freeze: Freeze,
    /// Fencing's own state (the peer's outdate request waiting for its ping).
    pub(in crate::core) fence: FenceMachine,
    /// Admin commands waiting for a drain, a vote or a renegotiation.
    pub(in crate::core) admin: AdminWaits,
    pub(in crate::core) counters: Counters,
    /// The `resync-after` resource is resyncing now.
    pub(in crate::core) dependency_syncing: bool,
    pub(in crate::core) rng: Rng,
    pub(in crate::core) last_now: Option<Instant>,
    out: Outbox,
}

impl Engine {
    /// A fresh engine: Secondary, Diskless, StandAlone, as after `drbdsetup new-minor`.
    pub fn new(cfg: EngineConfig, seed: u64) -> Engine {
        let mut peers = Peers::new(cfg.peer_id, cfg.peer_node.clone());
        if let Some((id, name)) = &cfg.witness {
            peers = peers.with_witness(*id, name.clone());
        }
        // A fresh node sees no voter but itself, and has no disk yet: no quorum, unless quorum
        // is off (then always).
        let quorate = !cfg.quorum.enabled();
        Engine {
            cfg,
            st: NodeState::initial(peers.ids()).with_quorum(quorate, false),
            dev: Device::default(),
            peers,
            requests: Requests::default(),
            ios: IoTable::default(),
            freeze: Freeze::default(),
            fence: FenceMachine::default(),
            admin: AdminWaits::default(),
            counters: Counters::default(),
            dependency_syncing: false,
            rng: Rng::new(seed),
            last_now: None,
            out: Outbox::default(),
        }
    }

    /// Feed one input. Never blocks, never does I/O.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.last_now = Some(now);
        match input {
            Input::ClientOpened => self.requests.open_clients += 1,
            Input::ClientClosed => {
                self.requests.open_clients = self.requests.open_clients.saturating_sub(1);
            }
            Input::Client { req, op } => {
                if op.write_range().is_some() {
                    self.requests.last_app_write = Some(now);
                }
                self.client_request(req, op)
            }
            Input::DiskDone { io, result } => self.complete(io, Completion::Disk(result)),
            Input::MetaDone { io, result } => self.complete(io, Completion::Meta(result)),
            Input::DiskOpened { io, result } => self.complete(io, Completion::Opened(result)),
            Input::DiskClosed { io } => self.complete(io, Completion::Closed),
            Input::PeerDiskDone { io, result } => self.complete(io, Completion::PeerDisk(result)),
            Input::SparseReadDone { io, result } => self.complete(io, Completion::Sparse(result)),
            Input::HashDone { io, digests } => self.complete(io, Completion::Hash(digests)),
            Input::HandlerDone { io, exit } => self.complete(io, Completion::Handler(exit)),
            Input::Admin { id, cmd } => self.admin(id, cmd),
            Input::Timer => {
                self.peer_timers(now);
                self.close_aged_epoch(now);
                self.pump_resync(now);
            }
            Input::LinkUp {
                link,
                dialer,
                peer_node,
                nonce,
            } => self.link_up(now, link, dialer, peer_node, nonce),
            Input::Packet { link, packet } => self.packet(now, link, packet),
            Input::LinkDown { link, loss } => self.link_down(link, loss),
            Input::DependencySyncing { syncing } => self.dependency_changed(now, syncing),
            Input::Reconfigure { cfg } => self.reconfigure(*cfg),
            Input::WitnessSeen { connected } => self.witness_seen(connected),
        }
        self.resync_observe(now);
        self.retry_drained_admin();
        self.close_failed_disk_when_idle();
        self.renegotiate_step(now);
        self.announce_state();
        if std::mem::take(&mut self.out.status_dirty) {
            self.emit(Output::StateChanged);
        }
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    /// Route a completion to whoever waits for the operation (one table, one match).
    fn complete(&mut self, io: IoId, c: Completion) {
        let Some(owner) = self.ios.finish(io) else {
            // Never issued, or completed already: a stale or duplicate completion.
            tracing::debug!(resource = %self.cfg.resource, "completion for unknown I/O {io} ignored");
            return;
        };
        match owner {
            IoOwner::Client { req } => self.client_disk_done(req, None, c.result()),
            IoOwner::ClientFlush { req, covered } => {
                self.client_disk_done(req, Some(covered), c.result())
            }
            IoOwner::PeerOp { seq } => self.peer_op_done(seq, c.into_peer_disk()),
            IoOwner::PeerFlush { epoch, link } => {
                self.peer_flush_done(epoch, link, c.into_peer_disk())
            }
            IoOwner::ResyncRead { id, link } => {
                let extents = match c {
                    Completion::Sparse(r) => r,
                    other => other
                        .into_peer_disk()
                        .map(|d| d.map(Extent::Data).into_iter().collect()),
                };
                self.resync_read_done(id, link, extents)
            }
            IoOwner::CsumsHash { id, link } => {
                if let Completion::Hash(digests) = c {
                    self.csums_hashed(id, link, digests);
                }
            }
            IoOwner::AuxRead(aux) => {
                let data = c.into_peer_disk().ok().flatten();
                self.aux_read_done(aux, data);
            }
            IoOwner::AuxHash(aux) => {
                let digests = match c {
                    Completion::Hash(d) => Some(d),
                    _ => None,
                };
                self.aux_hashed(aux, digests);
            }
            IoOwner::AlTransaction { ext } => self.al_done(ext, &c.result()),
            IoOwner::Meta { admin } => {
                let result = c.result();
                let failed = result.as_ref().err().map(|e| e.message.clone());
                self.meta_done(admin, result);
                self.gate_written(io, failed.as_deref());
            }
            IoOwner::OpenDisk { admin } => match c {
                Completion::Opened(result) => self.disk_opened(admin, result),
                _ => self.disk_opened(admin, Err(OpenFailure::OtherCompletion)),
            },
            IoOwner::CloseDisk { admin } => self.disk_closed(admin),
            IoOwner::Handler(wait) => {
                let exit = match c {
                    Completion::Handler(exit) => exit,
                    _ => None,
                };
                self.handler_done(wait, exit);
            }
        }
    }

    /// Drain one output. Call until `None` after every `handle`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.queue.pop_front()
    }

    /// Earliest time `handle(now, Input::Timer)` is due: pings, ko-count, closing an aged epoch,
    /// resync throttling.
    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.peer_next_timeout(),
            self.epoch_deadline(),
            self.resync_wake(),
            self.admin.renegotiation.next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Queue the bitmap pages changed since the last persist (metadata writes run in order).
    pub(crate) fn write_dirty_bitmap_pages(&mut self) {
        // The metadata's one bitmap slot holds the data peer's bitmap (`Peers::attach_bitmap`).
        let Some(bm) = self.peers.data_mut().bitmap.as_mut() else {
            return;
        };
        let flush_data = bm.cleared_since_persist();
        let pages = bm.take_dirty_pages();
        if pages.is_empty() {
            return;
        }
        self.counters.bm_writes += pages.len() as u64;
        let io = self.ios.start(IoOwner::Meta { admin: None });
        self.emit(Output::Meta {
            io,
            op: super::contract::io::MetaOpKind::BitmapPages { pages, flush_data },
        });
    }

    /// What `status` shows changed: publish it at the end of this input.
    pub(crate) fn status_changed(&mut self) {
        self.out.status_dirty = true;
    }

    /// Write dirty bitmap pages, then the superblock. Returns the superblock write (none
    /// without a disk), for an admin reply that must wait until it is durable.
    pub(crate) fn persist_superblock(&mut self) -> Option<IoId> {
        if self.st.disk() <= DiskState::Failed {
            return None;
        }
        self.sync_flags_from_state();
        self.write_dirty_bitmap_pages();
        let io = self.ios.start(IoOwner::Meta { admin: None });
        let op = self.dev.gen.superblock(false);
        self.emit(Output::Meta { io, op });
        Some(io)
    }

    /// The one path by which generation UUIDs and metadata flags change (as `change_state` is
    /// for the state, device/generation.rs): logs the change with its reason and writes the
    /// superblock for a `Persist::Now` event; for the others the caller's state change or
    /// `persist_superblock` in the same input writes it (`check_invariants` checks).
    pub(crate) fn gen_change(&mut self, ev: GenEvent) -> GenChange {
        let mut change = self.dev.gen.apply(ev, &mut self.rng);
        if change.changed() {
            generation::log_change(&self.cfg.resource, &change);
            if ev.persist() == Persist::Now {
                change.written = self.persist_superblock();
            }
        }
        change
    }

    /// The generation changes since the last call, for the simulator's checks.
    #[cfg(feature = "sim")]
    pub(crate) fn take_generation_log(&mut self) -> Vec<GenChange> {
        self.dev.gen.take_log()
    }

    pub(crate) fn emit(&mut self, out: Output) {
        self.out.queue.push_back(out);
    }

    /// The node id of the data peer (the one peer with a disk; docs/architecture.md §13).
    pub(crate) fn data_id(&self) -> NodeId {
        self.peers.data().id
    }
    /// What we know of the data peer.
    pub(crate) fn data_st(&self) -> PeerState {
        self.st.peer(self.peers.data().id)
    }

    pub fn role(&self) -> Role {
        self.st.role()
    }
    /// The data peer's role, connection and disk states (`peers()` has every peer's).
    pub fn peer_role(&self) -> Role {
        self.data_st().role()
    }
    pub fn cstate(&self) -> ConnState {
        self.data_st().cstate()
    }
    pub fn disk(&self) -> DiskState {
        self.st.disk()
    }
    pub fn pdsk(&self) -> DiskState {
        self.data_st().pdsk()
    }
    /// Every peer (node id, host name, whether it is the witness, role, connection, disk), in
    /// node-id order.
    pub fn peer_list(&self) -> Vec<(u32, String, bool, Role, ConnState, DiskState)> {
        self.peers
            .iter()
            .map(|p| {
                let s = self.st.peer(p.id);
                (
                    p.id.0,
                    p.name.clone(),
                    Some(p.id) == self.peers.witness(),
                    s.role(),
                    s.cstate(),
                    s.pdsk(),
                )
            })
            .collect()
    }
    /// This node has quorum (always while quorum is off; docs/quorum.md).
    pub fn quorum(&self) -> bool {
        self.st.quorum()
    }
    /// Application I/O is frozen for lack of quorum (`on-no-quorum suspend-io`).
    pub fn suspended_by_quorum(&self) -> bool {
        self.st.susp_quorum()
    }
    /// Application I/O is frozen by fencing (`susp-fen`).
    pub fn suspended_by_fencing(&self) -> bool {
        self.st.susp_fen()
    }
    pub fn usable_bytes(&self) -> u64 {
        self.dev.usable_bytes
    }
    pub fn uuids(&self) -> GenerationUuids {
        self.dev.gen.uuids()
    }
    pub fn flags(&self) -> MdFlags {
        self.dev.gen.flags()
    }
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.ap = self.requests.in_flight() as u64;
        c.lo = self
            .ios
            .count(|o| matches!(o, IoOwner::Client { .. } | IoOwner::ClientFlush { .. }))
            as u64;
        c.ep = self.peers.data().tl.unacked() as u64;
        c.ua = self.peers.data().rx.unacked() as u64;
        c
    }
    /// Few requests in flight, here and from the peer: a request's latency then depends on how
    /// soon the next input is picked up (the busy-poll window spins only then).
    pub fn light_load(&self) -> bool {
        self.requests.in_flight() <= 2 && self.peers.data().rx.unacked() <= 2
    }
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    pub fn open_clients(&self) -> u32 {
        self.requests.open_clients
    }
    /// Bytes the peer sent that are not yet on our disk: the driver stops reading the data
    /// socket while this is over `max-buffers`, so a slow disk pushes back on the sender
    /// through TCP instead of growing this node.
    pub fn peer_rx_backlog_bytes(&self) -> u64 {
        self.peers.data().rx.backlog_bytes()
    }

    /// Out-of-sync KiB (bitmap bits × 4), as `oos:` in /proc/drbd.
    pub fn oos_kib(&self) -> u64 {
        self.peers.data().oos_bits() * 4
    }

    /// Out-of-sync blocks the handshake could not give a resync direction (see
    /// `handshake::equal_generations_with_bits`), with the command that settles them.
    pub fn oos_notice(&self) -> Option<&str> {
        self.peers.data().oos_notice.as_deref()
    }

    /// May this node serve client I/O now? (docs/architecture.md §6.2 step 2.)
    pub fn can_serve_io(&self) -> Result<(), String> {
        if self.st.role() != Role::Primary {
            return Err(format!(
                "resource {} is {} on node {}; promote it with `repadm primary {}`",
                self.cfg.resource,
                self.st.role(),
                self.cfg.node,
                self.cfg.resource
            ));
        }
        if self.st.disk() != DiskState::UpToDate && !self.serves_via_peer() {
            return Err(format!(
                "resource {} on node {} has no UpToDate data (disk is {}, peer is {} {})",
                self.cfg.resource,
                self.cfg.node,
                self.st.disk(),
                self.data_st().cstate(),
                self.data_st().pdsk()
            ));
        }
        if self.fails_io_for_quorum() {
            return Err(self.no_quorum_message());
        }
        Ok(())
    }

    /// Why a client request would be refused now, with the NBD error it gets: EIO on a
    /// Primary (its data is unreachable or it lost quorum), ESHUTDOWN elsewhere (not Primary:
    /// the client should go to the node that is).
    pub fn io_refusal(&self) -> Option<(u32, String)> {
        let errno = if self.st.role() == Role::Primary {
            crate::core::contract::io::nbd_errno::EIO
        } else {
            crate::core::contract::io::nbd_errno::ESHUTDOWN
        };
        self.can_serve_io().err().map(|m| (errno, m))
    }

    /// A Primary without quorum under `on-no-quorum io-error`: every request fails, and a
    /// request in flight as quorum went is not acknowledged (docs/quorum.md).
    pub(crate) fn fails_io_for_quorum(&self) -> bool {
        self.cfg.quorum.enabled()
            && self.cfg.quorum.on_no_quorum == rep_resources::quorum::OnNoQuorum::IoError
            && self.st.role() == Role::Primary
            && !self.st.quorum()
    }

    pub(crate) fn no_quorum_message(&self) -> String {
        format!(
            "resource {} on node {} has lost quorum (peer {} {}; on-no-quorum io-error): the request is not acknowledged",
            self.cfg.resource,
            self.cfg.node,
            self.data_st().cstate(),
            self.data_st().pdsk()
        )
    }

    /// Recompute the metadata flags from the current state (DRBD's drbd_md_sync rules).
    pub(crate) fn sync_flags_from_state(&mut self) {
        self.gen_change(GenEvent::StateFlags {
            disk: self.st.disk(),
            role: self.st.role(),
            cstate: self.data_st().cstate(),
            pdsk: self.data_st().pdsk(),
            peer_fenced: self.peers.data().fenced,
        });
    }

    /// Assertions that must hold after every input (docs/architecture.md §12.1).
    pub fn check_invariants(&self) {
        let (role, cstate, disk) = (self.st.role(), self.data_st().cstate(), self.st.disk());
        // A Secondary never has client requests in flight, frozen or not.
        if role != Role::Primary {
            assert!(
                !self.client_io_pending(),
                "Secondary with client I/O in flight"
            );
        }
        // The ko-count deadline is kept, not scanned.
        assert_eq!(
            self.requests.oldest_peer_wait(),
            self.requests.oldest_peer_wait_scanned(),
            "oldest peer wait drifted"
        );
        // The peer-write backlog the driver reads after every input is kept, not summed.
        assert_eq!(
            self.peers.data().rx.backlog_bytes(),
            self.peers.data().rx.backlog_bytes_recounted(),
            "peer backlog count drifted"
        );
        // I/O is frozen only by fencing or for quorum, on a Primary (held requests need it frozen); replies
        // are held only while frozen or while a new generation is being written.
        if !self.st.io_suspended() {
            assert!(
                !self.freeze.holds_requests(),
                "requests held while not frozen"
            );
            if !self.freeze.gated() {
                assert!(
                    self.freeze.is_empty(),
                    "replies held while not frozen or gated"
                );
            }
        }
        // Node ids are unique: no peer has ours.
        for p in self.peers.iter() {
            assert_ne!(p.id, self.cfg.node_id, "peer {} has our node id", p.name);
        }
        // Without a connection the peer's role is unknown.
        if self.peers.data().link.is_none() {
            assert_eq!(self.data_st().role(), Role::Unknown);
        }
        // Sync states need a link; a link never coexists with StandAlone.
        if cstate >= ConnState::WFReportParams {
            assert!(self.peers.data().link.is_some(), "{cstate} without a link");
        }
        if cstate == ConnState::StandAlone {
            assert!(self.peers.data().link.is_none(), "StandAlone with a link");
        }
        // Resync and verify only run in their states.
        if self.peers.data().resync.running() {
            assert!(cstate.is_sync(), "resync state in {cstate}");
        }
        if self.peers.data().verify.running() {
            assert_eq!(cstate, ConnState::VerifyS, "verify state in {cstate}");
        }
        assert!(self.dev.usable_bytes <= self.dev.local_usable_bytes || disk <= DiskState::Failed);
        if disk == DiskState::Diskless {
            assert!(
                self.peers.iter().all(|p| p.bitmap.is_none()),
                "Diskless node holds a bitmap"
            );
        }
        // Only a peer with a disk has a bitmap kept for it.
        if let Some(w) = self.peers.witness() {
            assert!(
                self.peers.iter().all(|p| p.id != w || p.bitmap.is_none()),
                "a bitmap kept for the diskless witness"
            );
        }
        for b in self.peers.iter().filter_map(|p| p.bitmap.as_ref()) {
            // `size` in the disk section may export less than the bitmap covers, never more.
            assert!(
                b.len_bits() >= self.dev.usable_bytes.div_ceil(4096),
                "bitmap shorter than the device"
            );
        }
        // The role bit of the current UUID mirrors the role.
        let uuids = self.dev.gen.uuids();
        if disk > DiskState::Diskless && uuids.current > 4 {
            assert_eq!(
                uuids.current & 1 == 1,
                role == Role::Primary,
                "current UUID role bit disagrees with role"
            );
        }
        // Every generation change reaches the superblock write issued in the input that made
        // it; a SyncTarget's sync UUID, the one that starts the resync (device/generation.rs).
        if disk > DiskState::Failed {
            if let Some(ev) = self.dev.gen.unsaved() {
                assert!(
                    ev.persist() == Persist::AtResyncStart && cstate == ConnState::WFSyncUUID,
                    "generation change not written: {ev:?} (cstate {cstate})"
                );
            }
        }
        // Every activity-log reference has a holder: a request, a peer write, or an epoch the
        // peer has not acknowledged (a leak would pin the extent forever, a missing one
        // would let it be evicted under a write in flight).
        if let Some(al) = &self.dev.al {
            let mut held: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
            for ext in self
                .requests
                .held_extents()
                .chain(self.peers.data().rx.held_extents())
                .chain(self.peers.data().tl.parked_extents())
            {
                *held.entry(ext).or_default() += 1;
            }
            for ext in al.active_extents() {
                assert_eq!(
                    al.in_flight(ext),
                    held.get(&ext).copied().unwrap_or(0),
                    "activity-log extent {ext}: references and holders disagree"
                );
            }
            for (ext, n) in &held {
                assert_eq!(
                    al.in_flight(*ext),
                    *n,
                    "extent {ext} held but not referenced"
                );
            }
        }
        // At most one close of the backing device at a time.
        assert!(
            self.ios.count(|o| matches!(o, IoOwner::CloseDisk { .. })) <= 1,
            "two closes of the backing device in flight"
        );
    }
}
