//! Admin commands: role changes, attach/detach, connect/disconnect, outdate, UUID commands.
//!
//! Rules are DRBD 8.4's `is_valid_state` and `drbd_set_role` (docs/drbd-semantics.md §1.3, §1.6).
//! A command that changes persistent state is answered only after its superblock write
//! completed, so `repadm primary` returning 0 means the new state survives a crash.

use crate::core::admin::pending::PendingAdmin;
use crate::core::connection::after::After;
use crate::core::contract::failure::OpenFailure;
use crate::core::contract::io::{AdminCmd, AdminId, AttachInfo, IoId, IoResult, Output};
use crate::core::contract::refusal::Refusal;
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::io_table::IoOwner;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::promotion;
use crate::core::state::{ConnState, DiskState, Role};
use rep_resources::Fencing;

impl Engine {
    pub(crate) fn admin(&mut self, id: AdminId, cmd: AdminCmd) {
        let result = match cmd.clone() {
            AdminCmd::Primary { force } => self.cmd_primary(id, force),
            AdminCmd::Secondary => self.cmd_secondary(id),
            AdminCmd::Attach => self.cmd_attach(id),
            AdminCmd::Detach { force } => self.cmd_detach(id, cmd, force),
            AdminCmd::Connect { discard_my_data } => self.cmd_connect(discard_my_data),
            AdminCmd::Disconnect { .. } => {
                self.admin.renegotiation.stop();
                self.cmd_disconnect()
            }
            AdminCmd::Outdate => self.cmd_outdate(id),
            AdminCmd::NewCurrentUuid { clear_bitmap } => {
                self.cmd_new_current_uuid(id, clear_bitmap)
            }
            AdminCmd::Invalidate => self.cmd_invalidate(id),
            AdminCmd::InvalidateRemote => self.cmd_invalidate_remote(),
            AdminCmd::ResumeIo => self.cmd_resume_io(),
            AdminCmd::PeerOutdate => self.cmd_peer_outdate(id),
            AdminCmd::Verify => self.cmd_verify(),
            AdminCmd::ResyncOutOfSync { from } => self.cmd_resync_out_of_sync(from),
            AdminCmd::PauseSync | AdminCmd::ResumeSync => match self.last_now {
                Some(now) => self.set_sync_paused(
                    now,
                    cmd == AdminCmd::PauseSync,
                    crate::core::sync::resync_state::PauseReason::User,
                ),
                None => Err(Refusal::NoResync {
                    cstate: self.data_st().cstate(),
                }),
            },
        };
        self.reply_unless_deferred(id, result);
    }

    /// Answer admin command `id` now, unless its reply was deferred (`Ok(None)`: it waits for a
    /// metadata write, an open or a drain, and is answered when that completes).
    pub(crate) fn reply_unless_deferred(
        &mut self,
        id: AdminId,
        result: Result<Option<String>, Refusal>,
    ) {
        if let Some(result) = result.transpose() {
            self.emit(Output::AdminReply { id, result });
        }
    }

    /// Answer admin `id` once superblock write `io` completed (at once if none was needed:
    /// without a disk the state lives in memory only, as in DRBD).
    pub(crate) fn reply_when_durable(&mut self, id: AdminId, message: String, io: Option<IoId>) {
        match io {
            Some(io) => self.ios.wait_for(io, PendingAdmin { id, message }),
            None => self.emit(Output::AdminReply {
                id,
                result: Ok(message),
            }),
        }
    }

    /// The handshake has sent our generation UUIDs and is about to decide who syncs from
    /// whom: a promotion (which may start a new generation) must wait for it (DRBD's
    /// SS_IN_TRANSIENT_STATE), or the two sides would decide on different UUIDs.
    fn not_in_handshake(&self) -> Result<(), Refusal> {
        if self.data_st().cstate() == ConnState::WFReportParams {
            return Err(Refusal::InTransientState {
                cstate: self.data_st().cstate(),
            });
        }
        Ok(())
    }

    fn need_disk(&self) -> Result<(), Refusal> {
        if self.st.disk() <= DiskState::Failed || self.st.disk() == DiskState::Attaching {
            return Err(Refusal::NoLocalDisk {
                disk: self.st.disk(),
            });
        }
        Ok(())
    }

    /// What `primary` asks for: the role, and with `--force` a disk that is not UpToDate
    /// taken as UpToDate (Negotiating too: no handshake will tell, the operator vouches for
    /// the attached data). A Consistent disk is UpToDate once the peer is known outdated
    /// (`fenced`, DRBD's drbd_set_role). Returns whether the disk was forced.
    fn promotion(&self, force: bool, fenced: bool) -> (ChangeSet, bool) {
        let mut cs = ChangeSet::new().role(Role::Primary);
        if force && !self.st.quorum() && self.data_st().cstate() < ConnState::Connected {
            // DRBD's CS_FP_OUTDATE_PEERS: the operator vouches that the peers we cannot see
            // are down; marked Outdated, they stop counting for quorum.
            cs = cs.pdsk(self.data_id(), DiskState::Outdated);
        }
        let disk = self.st.disk();
        let forceable = (DiskState::Negotiating..=DiskState::Consistent).contains(&disk);
        if force && forceable {
            (cs.disk(DiskState::UpToDate), true)
        } else if fenced && disk == DiskState::Consistent {
            (cs.disk(DiskState::UpToDate), false)
        } else {
            (cs, false)
        }
    }

    fn cmd_primary(&mut self, id: AdminId, force: bool) -> Result<Option<String>, Refusal> {
        if self.st.role() == Role::Primary {
            return Ok(Some("already Primary".into()));
        }
        if self.admin.pending_primary.is_some() {
            return Err(Refusal::ConcurrentStateChange);
        }
        self.promote_or_fence(id, force)?;
        Ok(None)
    }

    /// A `primary` that was waiting (for the peer's vote, for fence-peer) decides again as if
    /// just given; a refusal is its answer.
    pub(crate) fn promote_again(&mut self, id: AdminId, force: bool) {
        if let Err(refusal) = self.promote_or_fence(id, force) {
            self.emit(Output::AdminReply {
                id,
                result: Err(refusal),
            });
        }
    }

    /// Promote now, ask the connected peer first, or have a disconnected peer outdated first
    /// (fence-peer) when only that stands in the way; the reply to `id` follows.
    pub(crate) fn promote_or_fence(&mut self, id: AdminId, force: bool) -> Result<(), Refusal> {
        self.not_in_handshake()?;
        let cs = self.promotion(force, false).0;
        if let Err(refusal) = self.check_state(&cs) {
            let facts = self.promotion_facts(&self.st);
            if !promotion::fencing_may_help(&facts, &refusal) {
                return Err(refusal);
            }
            // The peer may hold newer data or be Primary itself: have it outdated first.
            tracing::info!(resource = %self.cfg.resource, "primary: {refusal}; running fence-peer first");
            self.fence_for_promotion(id, force);
            return Ok(());
        }
        if self.link_ready() {
            self.ask_peer_for_primary(id, force);
        } else {
            self.finish_primary(id, force, false);
        }
        Ok(())
    }

    /// The promotion itself, once the peer (if any) agreed, or fence-peer outdated it
    /// (`fenced`); the rules are checked again, the state may have changed meanwhile.
    pub(crate) fn finish_primary(&mut self, id: AdminId, force: bool, fenced: bool) {
        let (cs, forced) = self.promotion(force, fenced);
        if let Err(refusal) = self.not_in_handshake().and_then(|()| self.check_state(&cs)) {
            self.emit(Output::AdminReply {
                id,
                result: Err(refusal),
            });
            return;
        }
        if forced {
            tracing::warn!(resource = %self.cfg.resource, "Forced to consider local data as UpToDate!");
        }
        let degraded = self.data_st().cstate() < ConnState::Connected
            || self.data_st().pdsk() <= DiskState::Failed;
        if self.st.disk() > DiskState::Diskless {
            self.gen_change(GenEvent::Promote { degraded, forced });
        }
        let io = self.change_state(cs.persist());
        self.reply_when_durable(id, "promoted to Primary".into(), io);
        // `primary --force` on a connected pair with an Inconsistent peer: the initial full sync.
        if forced
            && self.data_st().cstate() == ConnState::Connected
            && self.data_st().pdsk() == DiskState::Inconsistent
        {
            if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
                bm.set_all();
            }
            self.send_uuids(0);
            self.start_sync_source(true);
        }
    }

    fn cmd_secondary(&mut self, id: AdminId) -> Result<Option<String>, Refusal> {
        if self.st.role() != Role::Primary {
            return Ok(Some("already Secondary".into()));
        }
        let cs = ChangeSet::new().role(Role::Secondary);
        self.check_state(&cs)?;
        if self.demotion_waits() {
            // A client that just went away may still have requests in flight: they finish
            // as Primary (replicated and acknowledged or failed), then the demotion goes on.
            self.admin.drain.push((id, AdminCmd::Secondary));
            return Ok(None);
        }
        self.gen_change(GenEvent::Demote);
        let io = self.change_state(cs.persist());
        self.reply_when_durable(id, "demoted to Secondary".into(), io);
        Ok(None)
    }

    fn cmd_attach(&mut self, id: AdminId) -> Result<Option<String>, Refusal> {
        if self.st.disk() != DiskState::Diskless {
            return Err(Refusal::DiskConfigured {
                disk: self.st.disk(),
            });
        }
        if self.st.role() == Role::Primary {
            return Err(Refusal::AttachWhilePrimary);
        }
        let _ = self.change_state(ChangeSet::new().disk(DiskState::Attaching));
        let admin = PendingAdmin {
            id,
            message: "attached".into(),
        };
        let io = self.ios.start(IoOwner::OpenDisk { admin });
        self.emit(Output::OpenDisk { io });
        Ok(None)
    }

    pub(crate) fn disk_opened(
        &mut self,
        pending: PendingAdmin,
        result: Result<Box<AttachInfo>, OpenFailure>,
    ) {
        if self.st.disk() != DiskState::Attaching {
            // An open that no longer belongs to the current state: drop it.
            self.emit(Output::AdminReply {
                id: pending.id,
                result: Err(Refusal::DiskConfigured {
                    disk: self.st.disk(),
                }),
            });
            return;
        }
        let info = match result {
            Ok(info) => info,
            Err(failure) => {
                let _ = self.change_state(ChangeSet::new().disk(DiskState::Diskless));
                let refusal = Refusal::AttachFailed {
                    message: failure.to_string(),
                };
                self.emit(Output::AdminReply {
                    id: pending.id,
                    result: Err(refusal),
                });
                return;
            }
        };
        let AttachInfo {
            usable_bytes,
            uuids,
            flags,
            unclean,
            mut bitmap,
            al,
        } = *info;
        if flags.full_sync() {
            bitmap.set_all();
        }
        self.dev.usable_bytes = usable_bytes;
        self.dev.local_usable_bytes = usable_bytes;
        self.gen_change(GenEvent::Attach {
            uuids,
            flags,
            unclean,
        });
        let flags = self.dev.gen.flags();
        self.peers.attach_bitmap(bitmap);
        self.dev.al = Some(al);
        let pdsk = if flags.peer_out_dated() {
            DiskState::Outdated
        } else {
            DiskState::DUnknown
        };
        let state = disk_state_on_attach(flags, pdsk, self.cfg.fencing);
        let io = self.change_state(
            ChangeSet::new()
                .disk(state)
                .pdsk(self.data_id(), pdsk)
                .persist(),
        );
        self.reply_when_durable(pending.id, pending.message, io);
        if self.peers.data().link.is_some() {
            let _ = self.change_state(
                ChangeSet::new()
                    .disk(DiskState::Negotiating)
                    .negotiating(Some(state)),
            );
            // The handshake decided without a disk; redo it so the UUIDs pick the resync.
            self.lose_link(
                ConnState::Disconnecting,
                "disk attached: reconnecting to compare data generations",
                After::Reconnect,
            );
        }
    }

    fn cmd_detach(
        &mut self,
        id: AdminId,
        cmd: AdminCmd,
        force: bool,
    ) -> Result<Option<String>, Refusal> {
        if self.st.disk() == DiskState::Diskless {
            return Ok(Some("already Diskless".into()));
        }
        if self.st.disk() == DiskState::Attaching {
            return Err(Refusal::NoLocalDisk {
                disk: self.st.disk(),
            });
        }
        // A Primary must keep access to UpToDate data (DRBD's rule 9).
        self.check_state(&ChangeSet::new().disk(DiskState::Diskless))?;
        if self.requests.in_flight() > 0 && !force {
            self.admin.drain.push((id, cmd));
            return Ok(None);
        }
        self.close_disk(Some(id));
        Ok(None)
    }

    /// Persist everything and close the backing device; `id` is answered when closed.
    pub(crate) fn close_disk(&mut self, id: Option<AdminId>) {
        if self.ios.closing() {
            // Already closing (a Failed disk, or an earlier detach): one close is enough.
            if let Some(id) = id {
                self.emit(Output::AdminReply {
                    id,
                    result: Ok("detach already under way".into()),
                });
            }
            return;
        }
        self.sync_flags_from_state();
        self.write_dirty_bitmap_pages();
        // With writes still in flight (`detach --force`, SIGTERM under load) the activity log
        // must be replayed on the next attach: only an idle disk closes clean. So must it
        // while epochs wait for the peer's BarrierAck: their writes may still be only in the
        // peer's volatile cache, and if the peer loses power they exist on stable storage
        // nowhere but here; the replayed extents resync them at the next handshake.
        let idle = self.ios.data_device_idle();
        let peer_unacked = self.peers.data_mut().tl.waits_for_peer();
        let clean = idle && !peer_unacked;
        if !idle {
            tracing::warn!(resource = %self.cfg.resource, "closing the disk with I/O in flight: the activity log will be replayed on the next attach");
        } else if peer_unacked {
            tracing::warn!(resource = %self.cfg.resource, "closing the disk while the peer has not acknowledged every epoch: the activity log will be replayed on the next attach");
        }
        let io = self.ios.start(IoOwner::Meta { admin: None });
        let op = self.dev.gen.superblock(clean);
        self.emit(Output::Meta { io, op });
        let admin = id.map(|id| PendingAdmin {
            id,
            message: "detached".into(),
        });
        let io = self.ios.start(IoOwner::CloseDisk { admin });
        self.emit(Output::CloseDisk { io });
    }

    pub(crate) fn disk_closed(&mut self, admin: Option<PendingAdmin>) {
        let _ = self.change_state(ChangeSet::new().disk(DiskState::Diskless));
        self.peers.detach_bitmaps();
        self.dev.al = None;
        // References into the activity log that is gone; writes that waited for one of its
        // slots go on without it (through the peer).
        self.peers.data_mut().tl.forget_extents();
        self.requests.forget_extents();
        self.peers.data_mut().rx.forget_extents();
        self.dev.al_writing.clear();
        self.announce_state();
        self.retry_al_waiters();
        // Connected, the device keeps the peer's size: a Diskless Primary serves through it.
        self.dev.usable_bytes = self
            .peers
            .data_mut()
            .link
            .as_ref()
            .filter(|l| l.decided)
            .and_then(|l| l.peer_usable)
            .unwrap_or(0);
        self.dev.local_usable_bytes = 0;
        self.status_changed();
        if let Some(p) = admin {
            self.emit(Output::AdminReply {
                id: p.id,
                result: Ok(p.message),
            });
        }
    }

    fn cmd_connect(&mut self, discard_my_data: bool) -> Result<Option<String>, Refusal> {
        if self.data_st().cstate() != ConnState::StandAlone {
            return Err(Refusal::NetConfigured {
                cstate: self.data_st().cstate(),
            });
        }
        if !self.cfg.has_peer {
            return Err(Refusal::NoPeerConfigured);
        }
        if discard_my_data && self.st.role() == Role::Primary {
            return Err(Refusal::IsPrimary);
        }
        self.peers.data_mut().discard_my_data = discard_my_data;
        // StandAlone → Unconnected → WFConnection; the driver dials and accepts.
        let _ = self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::WFConnection));
        self.emit(Output::Connect);
        Ok(Some("waiting for the peer (WFConnection)".into()))
    }

    fn cmd_disconnect(&mut self) -> Result<Option<String>, Refusal> {
        if self.data_st().cstate() == ConnState::StandAlone {
            return Err(Refusal::AlreadyStandAlone);
        }
        let outdate = self.leaves_outdated();
        self.send(if outdate {
            crate::wire::Packet::ByeOutdated
        } else {
            crate::wire::Packet::Bye
        });
        self.lose_link(
            ConnState::Disconnecting,
            "disconnect requested",
            After::StandAlone,
        );
        if outdate {
            // Quorum's last man standing: a Secondary that leaves marks its data Outdated (the
            // peer recorded it so from ByeOutdated), so that the peer keeps quorum without it
            // and this copy is not promoted with data the peer may go on to change
            // (docs/quorum.md). After the link: connected, Outdated would vanish at once.
            let _ = self.change_state(
                ChangeSet::new()
                    .disk(DiskState::Outdated)
                    .why("left gracefully under quorum")
                    .persist(),
            );
        }
        Ok(Some("StandAlone".into()))
    }

    /// `disconnect` (and `down`) of a connected Secondary with quorum on and data that counts.
    fn leaves_outdated(&self) -> bool {
        self.cfg.quorum.enabled()
            && self.st.role() == Role::Secondary
            && self.data_st().cstate() == ConnState::Connected
            && matches!(self.st.disk(), DiskState::UpToDate | DiskState::Consistent)
    }

    fn cmd_outdate(&mut self, id: AdminId) -> Result<Option<String>, Refusal> {
        self.need_disk()?;
        if self.st.role() == Role::Primary {
            return Err(Refusal::IsPrimary);
        }
        if self.st.disk() < DiskState::Outdated {
            return Err(Refusal::LowerThanOutdated {
                disk: self.st.disk(),
            });
        }
        if self.data_st().cstate() >= ConnState::Connected {
            // Connected, the data is the peer's: Outdated would vanish at once (DRBD refuses).
            return Err(Refusal::ConnectedOutdates {
                cstate: self.data_st().cstate(),
            });
        }
        let io = self.request_state(ChangeSet::new().disk(DiskState::Outdated).persist())?;
        self.reply_when_durable(id, "disk marked Outdated".into(), io);
        Ok(None)
    }

    fn cmd_new_current_uuid(
        &mut self,
        id: AdminId,
        clear_bitmap: bool,
    ) -> Result<Option<String>, Refusal> {
        self.need_disk()?;
        let just_created = self.dev.gen.just_created();
        let primary = self.st.role() == Role::Primary;
        self.gen_change(GenEvent::NewCurrentUuid { primary });
        let mut skip = ChangeSet::new();
        if clear_bitmap {
            for bm in self.peers.bitmaps_mut() {
                bm.clear_all();
            }
            // Two fresh disks: skip the initial sync, both sides become UpToDate (DRBD's
            // "new-current-uuid --clear-bitmap" shortcut).
            if just_created
                && self.data_st().cstate() == ConnState::Connected
                && self.data_st().pdsk() == DiskState::Inconsistent
            {
                self.gen_change(GenEvent::SkipInitialSync);
                skip = skip
                    .disk(DiskState::UpToDate)
                    .pdsk(self.data_id(), DiskState::UpToDate);
                self.send_uuids(crate::core::connection::handshake::UUID_FLAG_SKIP_INITIAL_SYNC);
                // The peer adopts this generation on receipt (`on_uuids`), so what we know of it
                // must say so: a SyncTarget finish here adopts the peer's current UUID from this
                // record, and a stale handshake-time one is a false split brain at the next
                // handshake (simulator seeds 2685 and 5195).
                if let Some((peer, _)) = self
                    .peers
                    .data_mut()
                    .link
                    .as_mut()
                    .and_then(|l| l.peer_uuids.as_mut())
                {
                    self.dev.gen.adopted_by_peer_on_skip(peer);
                }
            }
        }
        let io = self.change_state(skip.persist());
        self.status_changed();
        self.reply_when_durable(id, "new current UUID generated".into(), io);
        Ok(None)
    }

    /// Where `invalidate` / `invalidate-remote` may run (DRBD 8.4's drbd_adm_invalidate and
    /// drbd_adm_invalidate_peer): Connected and idle, with a peer disk to sync with; or, for
    /// `offline_ok`, StandAlone, where the command only marks the bitmap for the next
    /// handshake. Anything else (WFConnection, a lost link, a handshake under way) is DRBD's
    /// SS_NEED_CONNECTION: the bits would be set on a node that cannot tell its peer, and a
    /// handshake between equal generations would then find them without a direction.
    fn resync_command_allowed(&self, offline_ok: bool) -> Result<(), Refusal> {
        let cstate = self.data_st().cstate();
        if self.peers.data().resync.running()
            || self.peers.data().verify.running()
            || cstate > ConnState::Connected
        {
            return Err(Refusal::ResyncRunning { cstate });
        }
        if cstate == ConnState::StandAlone && offline_ok {
            return Ok(());
        }
        if cstate != ConnState::Connected {
            return Err(Refusal::NeedConnection { cstate });
        }
        if self.data_st().pdsk() < DiskState::Inconsistent {
            return Err(Refusal::NoRemoteDisk {
                pdsk: self.data_st().pdsk(),
            });
        }
        Ok(())
    }

    fn cmd_invalidate(&mut self, id: AdminId) -> Result<Option<String>, Refusal> {
        self.need_disk()?;
        if self.st.role() == Role::Primary {
            return Err(Refusal::IsPrimary);
        }
        // StandAlone (and Secondary, checked above): what `drbdmeta invalidate` does offline —
        // all bits set, Inconsistent; the Inconsistent disk is the SyncTarget of the next
        // handshake, whatever the UUIDs say. Connected: ask the peer to be our SyncSource now.
        self.resync_command_allowed(true)?;
        if self.data_st().cstate() == ConnState::Connected
            && self.data_st().pdsk() != DiskState::UpToDate
        {
            // Our disk becomes Inconsistent: the peer must hold the data.
            return Err(Refusal::NoUpToDateDisk {
                disk: self.st.disk(),
                pdsk: self.data_st().pdsk(),
            });
        }
        // Our data is no longer good: it differs from every peer's.
        for bm in self.peers.bitmaps_mut() {
            bm.set_all();
        }
        // Bits first (persist_superblock writes them before the superblock): a crash in
        // between must not leave a clean bitmap behind an Inconsistent disk.
        let io = self.change_state(ChangeSet::new().disk(DiskState::Inconsistent).persist());
        let message = if self.data_st().cstate() == ConnState::Connected {
            self.send(crate::wire::Packet::SyncStart {
                source: false,
                full: true,
            });
            "local data invalidated; full sync from the peer started"
        } else {
            "local data invalidated; full sync from the peer on connect"
        };
        self.reply_when_durable(id, message.into(), io);
        Ok(None)
    }

    fn cmd_invalidate_remote(&mut self) -> Result<Option<String>, Refusal> {
        self.need_disk()?;
        if self.st.disk() != DiskState::UpToDate {
            return Err(Refusal::NoUpToDateDisk {
                disk: self.st.disk(),
                pdsk: self.data_st().pdsk(),
            });
        }
        // StandAlone is allowed only for a Primary, as in DRBD: its generation is newer than
        // the peer's (it started one when it lost or never had the peer), so the next
        // handshake makes it SyncSource and the set bits make that a full sync.
        self.resync_command_allowed(self.st.role() == Role::Primary)?;
        if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
            bm.set_all();
        }
        if self.data_st().cstate() == ConnState::Connected {
            self.start_sync_source(true);
            return Ok(Some("full sync to the peer started".into()));
        }
        self.persist_superblock();
        self.status_changed();
        Ok(Some(
            "peer's data invalidated; full sync to the peer on connect".into(),
        ))
    }

    /// A superblock or bitmap write completed; an admin reply may have waited for it.
    pub(crate) fn meta_done(&mut self, admin: Option<PendingAdmin>, result: IoResult) {
        if let Err(e) = &result {
            tracing::error!(resource = %self.cfg.resource, "metadata write failed: {}", e.message);
            // Metadata I/O errors always detach, whatever on-io-error says (DRBD), also when
            // an admin command waited for this write.
            let what = format!("metadata write: {}", e.message);
            self.fail_disk(&what);
        }
        if let Some(p) = admin {
            let result = result
                .map(|()| p.message)
                .map_err(|e| Refusal::MetaIo { message: e.message });
            self.emit(Output::AdminReply { id: p.id, result });
        }
    }

    /// Re-run commands that waited for client I/O to drain.
    pub(crate) fn retry_drained_admin(&mut self) {
        if self.admin.drain.is_empty() || self.demotion_waits() {
            return;
        }
        for (id, cmd) in std::mem::take(&mut self.admin.drain) {
            self.admin(id, cmd);
        }
    }

    /// Whether `secondary` (and the other commands that wait for the clients) must wait for
    /// client I/O to finish first. Requests frozen for lack of quorum (`on-no-quorum
    /// suspend-io`) never finish while the node is Primary: the demotion is what lets them go,
    /// failed (docs/quorum.md, "Demoted meanwhile, held requests fail"); only requests still in
    /// flight are waited for then.
    fn demotion_waits(&self) -> bool {
        if self.st.susp_quorum() && !self.st.susp_fen() {
            self.requests.in_flight() > 0
        } else {
            self.client_io_pending()
        }
    }
}

/// DRBD's attach rule (drbd_nl.c): Inconsistent unless MDF_CONSISTENT; Outdated unless
/// MDF_WAS_UP_TO_DATE; Consistent is taken as UpToDate when the peer is known Outdated or
/// fencing is `dont-care`.
pub(crate) fn disk_state_on_attach(
    flags: crate::meta::superblock::MdFlags,
    pdsk: DiskState,
    fencing: Fencing,
) -> DiskState {
    if !flags.consistent() {
        return DiskState::Inconsistent;
    }
    if !flags.was_up_to_date() {
        return DiskState::Outdated;
    }
    if pdsk == DiskState::Outdated || fencing == Fencing::DontCare {
        DiskState::UpToDate
    } else {
        DiskState::Consistent
    }
}
