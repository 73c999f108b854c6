//! The engine: one resource on one node, as a state machine that is fed inputs and drained of
//! outputs (DESIGN.md §3). It owns roles, connection and disk states, generation UUIDs, the
//! in-memory bitmap and activity log, and the table of client requests. It never does I/O,
//! never reads a clock and never draws entropy: everything arrives through `handle`.
//!
//! What can change `poll_output`'s answer: any `handle` call. What can change `next_timeout`:
//! any `handle` call.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::io::{AdminId, Input, IoId, Output};
use super::requests::Requests;
use super::rng::Rng;
use super::state::{ConnState, DiskState, Role};
use crate::meta::al::ActivityLog;
use crate::meta::bitmap::Bitmap;
use crate::meta::superblock::{GenerationUuids, MdFlags};
use rep_resources::Protocol;

/// Static facts about the resource on this node, from the `.res` file.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub resource: String,
    pub node: String,
    pub minor: u32,
    pub device: String,
    pub protocol: Protocol,
    /// A peer is configured (two host sections): `up` goes to WFConnection, not StandAlone.
    pub has_peer: bool,
    pub allow_two_primaries: bool,
    pub al_extents: u32,
    pub fencing: rep_resources::Fencing,
    pub on_io_error: OnIoError,
    pub peer: super::peer::PeerSettings,
}

pub use rep_resources::OnIoError;

/// What an admin command is waiting for before it can be answered.
#[derive(Debug)]
pub(crate) struct PendingAdmin {
    pub id: AdminId,
    pub message: String,
}

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

pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) role: Role,
    pub(crate) peer_role: Role,
    pub(crate) cstate: ConnState,
    pub(crate) disk: DiskState,
    pub(crate) pdsk: DiskState,
    pub(crate) usable_bytes: u64,
    pub(crate) uuids: GenerationUuids,
    pub(crate) flags: MdFlags,
    pub(crate) bitmap: Option<Bitmap>,
    pub(crate) al: Option<ActivityLog>,
    pub(crate) rng: Rng,
    pub(crate) requests: Requests,
    pub(crate) open_clients: u32,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) next_io: IoId,
    /// Admin replies that wait for a metadata write or an open/close to complete.
    pub(crate) admin_waiting: HashMap<IoId, PendingAdmin>,
    /// `secondary`/`detach` waiting for in-flight client requests to drain.
    pub(crate) admin_drain: Vec<(AdminId, super::io::AdminCmd)>,
    pub(crate) counters: Counters,
    pub(crate) last_now: Option<Instant>,
    /// Our own usable size; `usable_bytes` is the agreed (smaller) size while connected.
    pub(crate) local_usable_bytes: u64,
    pub(crate) link: Option<super::peer::Link>,
    /// `connect --discard-my-data`: this node volunteers to lose a split brain.
    pub(crate) discard_my_data: bool,
    /// `primary` waiting for the peer's consent: (admin id, --force).
    pub(crate) pending_primary: Option<(AdminId, bool)>,
    pub(crate) repl: super::replicate::Replication,
    pub(crate) rx: super::replicate::PeerRx,
    pub(crate) resync: Option<super::resync::Resync>,
    /// SyncSource reads in flight: io → the peer's request id.
    pub(crate) resync_read_ids: HashMap<IoId, u64>,
    /// csums-alg on the SyncSource: the target's digests by request id, and reads being hashed
    /// (hash io → (read io, request id, data, target's digests)).
    pub(crate) csums_expected: HashMap<u64, Vec<u8>>,
    pub(crate) csums_pending: HashMap<IoId, (IoId, u64, Vec<u8>, Vec<u8>)>,
    pub(crate) verify: Option<super::verify::Verify>,
    pub(crate) aux_reads: HashMap<IoId, super::verify::Aux>,
    pub(crate) aux_hashes: HashMap<IoId, super::verify::Aux>,
    pub(crate) last_verify_oos: Option<u64>,
    /// Last client write, for the resync controller's c-min-rate.
    pub(crate) last_app_write: Option<Instant>,
    /// The `resync-after` resource is resyncing now.
    pub(crate) dependency_syncing: bool,
    /// The `CloseDisk` under way (detach, or a Failed disk being closed): at most one, and a
    /// completion for any other is stale.
    pub(crate) closing_disk: Option<IoId>,
    /// A disk attached while a link existed: what its metadata says (UpToDate, Outdated, …)
    /// waits here, and the disk reports Negotiating, until the next handshake compares data
    /// generations (DRBD's D_NEGOTIATING): it must not claim data it may have missed.
    pub(crate) negotiating: Option<DiskState>,
}

impl Engine {
    /// A fresh engine: Secondary, Diskless, StandAlone, as after `drbdsetup new-minor`.
    pub fn new(cfg: EngineConfig, seed: u64) -> Engine {
        Engine {
            cfg,
            role: Role::Secondary,
            peer_role: Role::Unknown,
            cstate: ConnState::StandAlone,
            disk: DiskState::Diskless,
            pdsk: DiskState::DUnknown,
            usable_bytes: 0,
            uuids: GenerationUuids::default(),
            flags: MdFlags::default(),
            bitmap: None,
            al: None,
            rng: Rng::new(seed),
            requests: Requests::default(),
            open_clients: 0,
            outputs: VecDeque::new(),
            next_io: IoId(1),
            admin_waiting: HashMap::new(),
            admin_drain: Vec::new(),
            counters: Counters::default(),
            last_now: None,
            local_usable_bytes: 0,
            link: None,
            discard_my_data: false,
            pending_primary: None,
            repl: Default::default(),
            rx: Default::default(),
            resync: None,
            resync_read_ids: HashMap::new(),
            csums_expected: HashMap::new(),
            csums_pending: HashMap::new(),
            verify: None,
            aux_reads: HashMap::new(),
            aux_hashes: HashMap::new(),
            last_verify_oos: None,
            last_app_write: None,
            dependency_syncing: false,
            closing_disk: None,
            negotiating: None,
        }
    }

    /// Feed one input. Never blocks, never does I/O.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.last_now = Some(now);
        match input {
            Input::ClientOpened => self.open_clients += 1,
            Input::ClientClosed => {
                self.open_clients = self.open_clients.saturating_sub(1);
            }
            Input::Client { req, op } => {
                if op.write_range().is_some() {
                    self.last_app_write = Some(now);
                }
                self.client_request(req, op)
            }
            Input::DiskDone { io, result } => self.disk_done(io, result),
            Input::MetaDone { io, result } => self.meta_done(io, result),
            Input::DiskOpened { io, result } => self.disk_opened(io, result),
            Input::DiskClosed { io } => self.disk_closed(io),
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
            Input::PeerDiskDone { io, result } => self.peer_disk_done(io, result),
            Input::HashDone { io, digests } => self.hash_done(io, digests),
            Input::DependencySyncing { syncing } => self.dependency_changed(now, syncing),
            Input::Reconfigure { cfg } => self.reconfigure(*cfg),
        }
        self.retry_drained_admin();
        self.close_failed_disk_when_idle();
        self.announce_state();
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    /// Drain one output. Call until `None` after every `handle`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Earliest time `handle(now, Input::Timer)` is due: pings, ko-count, closing an aged epoch,
    /// resync throttling.
    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.peer_next_timeout(),
            self.epoch_deadline(),
            self.resync_wake(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Queue the bitmap pages changed since the last persist (metadata writes run in order).
    pub(crate) fn write_dirty_bitmap_pages(&mut self) {
        let Some(bm) = self.bitmap.as_mut() else {
            return;
        };
        let flush_data = bm.cleared_since_persist();
        let pages = bm.take_dirty_pages();
        if pages.is_empty() {
            return;
        }
        self.counters.bm_writes += pages.len() as u64;
        let io = self.alloc_io();
        self.emit(Output::Meta {
            io,
            op: super::io::MetaOpKind::BitmapPages { pages, flush_data },
        });
    }

    /// Write dirty bitmap pages, then the superblock, without an admin waiting on them.
    pub(crate) fn persist_superblock(&mut self) {
        if self.disk <= DiskState::Failed {
            return;
        }
        self.sync_flags_from_state();
        self.write_dirty_bitmap_pages();
        let io = self.alloc_io();
        let op = super::io::MetaOpKind::Superblock {
            uuids: self.uuids,
            flags: self.flags,
            clean: false,
        };
        self.emit(Output::Meta { io, op });
    }

    pub(crate) fn alloc_io(&mut self) -> IoId {
        let io = self.next_io;
        self.next_io = io.next();
        io
    }

    pub(crate) fn emit(&mut self, out: Output) {
        self.outputs.push_back(out);
    }

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn peer_role(&self) -> Role {
        self.peer_role
    }
    pub fn cstate(&self) -> ConnState {
        self.cstate
    }
    pub fn disk(&self) -> DiskState {
        self.disk
    }
    pub fn pdsk(&self) -> DiskState {
        self.pdsk
    }
    pub fn usable_bytes(&self) -> u64 {
        self.usable_bytes
    }
    pub fn uuids(&self) -> GenerationUuids {
        self.uuids
    }
    pub fn flags(&self) -> MdFlags {
        self.flags
    }
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.ap = self.requests.in_flight() as u64;
        c.lo = self.requests.local_pending() as u64;
        c
    }
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    pub fn open_clients(&self) -> u32 {
        self.open_clients
    }
    /// Bytes the peer sent that are not yet on our disk: the driver stops reading the data
    /// socket while this is over `max-buffers`, so a slow disk pushes back on the sender
    /// through TCP instead of growing this node.
    pub fn peer_rx_backlog_bytes(&self) -> u64 {
        self.rx.backlog_bytes()
    }

    /// Out-of-sync KiB (bitmap bits × 4), as `oos:` in /proc/drbd.
    pub fn oos_kib(&self) -> u64 {
        self.bitmap.as_ref().map_or(0, |b| b.count_ones() * 4)
    }

    /// May this node serve client I/O now? (DESIGN.md §4 step 1.)
    pub fn can_serve_io(&self) -> Result<(), String> {
        if self.role != Role::Primary {
            return Err(format!(
                "resource {} is {} on node {}; promote it with `repadm primary {}`",
                self.cfg.resource, self.role, self.cfg.node, self.cfg.resource
            ));
        }
        if self.disk != DiskState::UpToDate && !self.serves_via_peer() {
            return Err(format!(
                "resource {} on node {} has no UpToDate data (disk is {}, peer is {} {})",
                self.cfg.resource, self.cfg.node, self.disk, self.cstate, self.pdsk
            ));
        }
        Ok(())
    }

    /// Recompute the metadata flags from the current state (DRBD's drbd_md_sync rules).
    pub(crate) fn sync_flags_from_state(&mut self) {
        let f = &mut self.flags;
        if self.disk >= DiskState::Inconsistent {
            f.set_consistent(self.disk > DiskState::Inconsistent);
            if self.disk == DiskState::UpToDate {
                f.set_was_up_to_date(true);
            } else if self.disk <= DiskState::Outdated {
                f.set_was_up_to_date(false);
            }
        }
        f.set_primary_ind(self.role == Role::Primary);
        f.set_connected_ind(self.cstate >= ConnState::Connected);
        f.set_peer_out_dated(self.pdsk == DiskState::Outdated);
    }

    /// Assertions that must hold after every input (STYLE.md §6).
    pub fn check_invariants(&self) {
        // A Secondary never has client requests in flight.
        if self.role != Role::Primary {
            assert_eq!(
                self.requests.in_flight(),
                0,
                "Secondary with client I/O in flight"
            );
        }
        // Without a connection the peer's role is unknown.
        if self.link.is_none() {
            assert_eq!(self.peer_role, Role::Unknown);
        }
        // Sync states need a link; a link never coexists with StandAlone.
        if self.cstate >= ConnState::WFReportParams {
            assert!(self.link.is_some(), "{} without a link", self.cstate);
        }
        if self.cstate == ConnState::StandAlone {
            assert!(self.link.is_none(), "StandAlone with a link");
        }
        // Resync and verify only run in their states.
        if self.resync.is_some() {
            assert!(
                matches!(
                    self.cstate,
                    ConnState::SyncSource
                        | ConnState::SyncTarget
                        | ConnState::PausedSyncS
                        | ConnState::PausedSyncT
                ),
                "resync state in {}",
                self.cstate
            );
        }
        if self.verify.is_some() {
            assert_eq!(
                self.cstate,
                ConnState::VerifyS,
                "verify state in {}",
                self.cstate
            );
        }
        assert!(self.usable_bytes <= self.local_usable_bytes || self.disk <= DiskState::Failed);
        if self.disk == DiskState::Diskless {
            assert!(self.bitmap.is_none(), "Diskless node holds a bitmap");
        }
        if let Some(b) = &self.bitmap {
            // `size` in the disk section may export less than the bitmap covers, never more.
            assert!(
                b.len_bits() >= self.usable_bytes.div_ceil(4096),
                "bitmap shorter than the device"
            );
        }
        // The role bit of the current UUID mirrors the role.
        if self.disk > DiskState::Diskless && self.uuids.current > 4 {
            assert_eq!(
                self.uuids.current & 1 == 1,
                self.role == Role::Primary,
                "current UUID role bit disagrees with role"
            );
        }
    }
}
