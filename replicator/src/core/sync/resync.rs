//! Resync (docs/drbd-semantics.md §8.1), the engine's side: the SyncTarget walks its bitmap and
//! asks for blocks; the SyncSource reads and sends them; both clear bits as blocks land. Client
//! writes keep flowing meanwhile: the source never reads a block under an in-flight client
//! write, and sends the block on the same ordered channel as writes, so stale resync data never
//! overwrites newer data. What a resync decides lives in its own machine
//! (`resync_machine::ResyncMachine`, one per peer); this file is the engine's glue: the state
//! changes, generation steps and handlers around it, and the effects it asks for.

use std::time::Instant;

use crate::core::connection::after::After;
use crate::core::contract::ids::LinkId;
use crate::core::contract::io::{Extent, IoFailure, Output, PeerDiskOp};
use crate::core::contract::refusal::Refusal;
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::io_table::{HandlerWait, IoOwner};
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};
use crate::core::sync::resync_machine::{Ctx, ResyncOut, Summary};
use crate::core::sync::resync_state::{
    Budget, PauseReason, ResyncInfo, ResyncSource, ResyncTarget, Side,
};
use crate::wire::Packet;

impl Engine {
    /// Both sides: the resync state (held if `resync-after` says so), persisted, logged as DRBD.
    fn begin_resync(&mut self, side: Side) {
        let label = match side {
            Side::Target(_) => "SyncTarget",
            Side::Source(_) => "SyncSource",
        };
        let after = self.cfg.peer.resync_after.is_some();
        if after {
            // Held until the driver has read the other resource's state right now: a reading
            // up to one poll old could let this resync run ahead of the one it must follow.
            self.emit(Output::CheckDependency);
        }
        let held_by_after = self.dependency_syncing || after;
        let now = self.last_now;
        let peer = self.peers.data_mut();
        let bits = peer.oos_bits();
        let held = peer.resync.begin(side, now, bits, held_by_after);
        // A resync (e.g. the `invalidate` the notice asked for) settles what it said.
        if peer.oos_notice.take().is_some() {
            self.status_changed();
        }
        if held {
            if let Some(now) = now {
                self.apply_pause(now);
            }
        }
        self.persist_superblock();
        tracing::info!(resource = %self.cfg.resource, "Began resync as {label} (will sync {} KB [{bits} bits set]).", bits * 4);
    }

    /// We have the newer data: rotate the bitmap UUID, tell the peer, and serve its requests.
    pub(crate) fn start_sync_source(&mut self, full: bool) {
        self.emit(Output::Handler {
            name: "before-resync-source",
        });
        let sync_uuid = self
            .gen_change(GenEvent::StartSyncSource)
            .sent
            .unwrap_or_default();
        let _ = self.change_state(
            ChangeSet::new()
                .cstate(self.data_id(), ConnState::SyncSource)
                .pdsk(self.data_id(), DiskState::Inconsistent),
        );
        self.begin_resync(Side::Source(ResyncSource::default()));
        // Our final bitmap first: writes during the handshake set bits after our report.
        self.send_bitmap();
        self.send(Packet::SyncStart { source: true, full });
        self.send(Packet::SyncUuid { uuid: sync_uuid });
    }

    pub(crate) fn on_sync_start(&mut self, peer_is_source: bool, full: bool) {
        if peer_is_source {
            if !matches!(
                self.data_st().cstate(),
                ConnState::WFSyncUUID | ConnState::Connected
            ) || self.st.disk() <= DiskState::Failed
            {
                self.protocol_error(format!(
                    "peer starts a resync while we are {} / {}",
                    self.data_st().cstate(),
                    self.st.disk()
                ));
                return;
            }
            if self.st.role() == Role::Primary && self.st.disk() >= DiskState::Consistent {
                self.protocol_error("peer wants to overwrite a Primary with UpToDate data".into());
                return;
            }
            if full {
                if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
                    bm.set_all();
                }
            }
            let _ = self.change_state(
                ChangeSet::new()
                    .disk(DiskState::Inconsistent)
                    .cstate(self.data_id(), ConnState::WFSyncUUID),
            );
            return;
        }
        // The peer invalidated itself (full) or asks for the blocks verify marked (`verify
        // --fix` on a Secondary): it asks us to be its source.
        if self.data_st().cstate() != ConnState::Connected || self.st.disk() != DiskState::UpToDate
        {
            self.protocol_error(format!(
                "peer asks for a sync but we are {} / {}",
                self.data_st().cstate(),
                self.st.disk()
            ));
            return;
        }
        if full {
            if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
                bm.set_all();
            }
        }
        self.start_sync_source(full);
    }

    pub(crate) fn on_sync_uuid(&mut self, uuid: u64) {
        if self.data_st().cstate() != ConnState::WFSyncUUID {
            self.protocol_error(format!("SyncUuid while {}", self.data_st().cstate()));
            return;
        }
        let Some(link) = self.link_id() else { return };
        let waiting = self.ios.count(|o| {
            matches!(
                o,
                IoOwner::Handler(HandlerWait::BeforeResyncTarget { link: l }) if *l == link
            )
        });
        if waiting > 0 {
            self.protocol_error("a second SyncUuid while the resync is about to start".into());
            return;
        }
        self.gen_change(GenEvent::SyncUuid(uuid));
        // The resync starts once before-resync-target returned (a snapshot hook: DRBD waits).
        self.run_handler(
            "before-resync-target",
            HandlerWait::BeforeResyncTarget { link },
        );
    }

    /// before-resync-target returned: start the resync, or drop the connection as DRBD does if
    /// the handler failed (a snapshot that did not happen must not be overwritten).
    pub(crate) fn before_resync_target_done(&mut self, link: LinkId, exit: Option<i32>) {
        if self.link_id() != Some(link) || self.data_st().cstate() != ConnState::WFSyncUUID {
            return;
        }
        if exit != Some(0) {
            let code = exit.map_or_else(|| "no exit code".to_string(), |c| c.to_string());
            let why = format!("before-resync-target handler returned {code}, dropping connection");
            self.lose_link(ConnState::Disconnecting, &why, After::StandAlone);
            return;
        }
        let _ = self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::SyncTarget));
        self.begin_resync(Side::Target(ResyncTarget::default()));
        if let Some(now) = self.last_now {
            self.pump_resync(now);
        }
    }

    /// What the resync machine needs to know, read now.
    fn resync_ctx(&self) -> Ctx {
        Ctx {
            now: self.last_now,
            link: self.link_id(),
            cstate: self.data_st().cstate(),
            disk: self.st.disk(),
            usable: self.dev.local_usable_bytes,
            csums: self.cfg.peer.csums_alg,
        }
    }

    /// Do what the resync machine asked for, in its order.
    fn apply_resync(&mut self, out: Vec<ResyncOut>) {
        for o in out {
            match o {
                ResyncOut::Send(packet) => self.send(packet),
                ResyncOut::HashMine { aux, offset, len } => self.aux_read(aux, offset, len),
                ResyncOut::Read { id, offset, len } => {
                    let Some(link) = self.link_id() else { continue };
                    let io = self.ios.start(IoOwner::ResyncRead { id, link });
                    // Sparse: the driver tells which blocks read as zeroes (and skips holes),
                    // and those go out as zero ranges instead of data.
                    self.emit(Output::PeerDisk {
                        io,
                        op: PeerDiskOp::ReadSparse { offset, len },
                    });
                }
                ResyncOut::Hash { id, alg, data } => {
                    let Some(link) = self.link_id() else { continue };
                    let io = self.ios.start(IoOwner::CsumsHash { id, link });
                    self.emit(Output::Hash { io, alg, data });
                }
                ResyncOut::Count(m) => {
                    self.counters.nr_kib += m.nr_kib;
                    self.counters.dw_kib += m.dw_kib;
                    self.counters.dr_kib += m.dr_kib;
                    self.counters.ns_kib += m.ns_kib;
                }
                ResyncOut::Warn(line) => tracing::warn!(resource = %self.cfg.resource, "{line}"),
                ResyncOut::Error(line) => tracing::error!(resource = %self.cfg.resource, "{line}"),
                ResyncOut::ProtocolError(why) => self.protocol_error(why),
                ResyncOut::FinishTarget => self.finish_sync_target(),
                ResyncOut::AdmitWaiting => self.admit_waiting(),
            }
        }
    }

    /// SyncTarget: keep the window full within the rate limit; finish when no bit is left.
    pub(crate) fn pump_resync(&mut self, now: Instant) {
        let (rate, in_flight) = self.cfg.peer.pace.limits(now, self.requests.last_app_write);
        let budget = Budget {
            rate,
            in_flight,
            usable_bytes: self.dev.local_usable_bytes,
        };
        let mut ctx = self.resync_ctx();
        ctx.now = Some(now);
        let mut out = Vec::new();
        let peer = self.peers.data_mut();
        if let Some(bm) = peer.bitmap.as_ref() {
            let rx = &peer.rx;
            peer.resync
                .pump(&ctx, bm, budget, |o, e| rx.writes_overlap(o, e), &mut out);
        }
        self.apply_resync(out);
    }

    /// A resync reply must lie inside a request still in flight; else the peer broke the
    /// protocol.
    fn rs_reply_fits(&mut self, what: &str, id: u64, offset: u64, len: u64) -> bool {
        let cstate = self.data_st().cstate();
        if self
            .peers
            .data_mut()
            .resync
            .reply_fits(cstate, id, offset, len)
        {
            return true;
        }
        self.protocol_error(format!("unexpected {what} {id} at {offset}+{len}"));
        false
    }

    pub(crate) fn on_rs_data(&mut self, id: u64, offset: u64, data: bytes::Bytes) {
        if self.rs_reply_fits("resync block", id, offset, data.len() as u64) {
            self.enqueue_resync_write(id, offset, data);
        }
    }

    /// The source has zeroes there (a hole, or blocks of zeroes): zero our copy, and clear
    /// the bits once that is done, exactly as for a block of data.
    pub(crate) fn on_rs_zero(&mut self, id: u64, offset: u64, len: u32) {
        if self.rs_reply_fits("resync zero range", id, offset, u64::from(len)) {
            self.enqueue_resync_zero(id, offset, len);
        }
    }

    /// csums-alg: the source found these blocks identical; nothing to write.
    pub(crate) fn on_rs_in_sync(&mut self, now: Instant, id: u64, offset: u64, len: u32) {
        if !self.rs_reply_fits("in-sync reply", id, offset, u64::from(len)) {
            return;
        }
        let peer = self.peers.data_mut();
        if let Some(bm) = peer.bitmap.as_mut() {
            peer.resync.in_sync(id, offset, len, bm);
        }
        self.pump_resync(now);
    }

    /// SyncTarget: the source could not send this block; it is asked for again later.
    pub(crate) fn on_rs_neg_reply(&mut self, id: u64, offset: u64, len: u32) {
        if self.rs_reply_fits("resync refusal", id, offset, u64::from(len)) {
            let mut out = Vec::new();
            self.peers
                .data_mut()
                .resync
                .refused(id, offset, len, &mut out);
            self.apply_resync(out);
        }
    }

    /// A resync block or zero range landed on our disk (or failed to), on the link that is
    /// still `current_link` or an older one (then it is nobody's any more).
    pub(crate) fn resync_write_done(
        &mut self,
        id: u64,
        offset: u64,
        len: u64,
        ok: bool,
        current_link: bool,
    ) {
        if !current_link {
            return;
        }
        let mut out = Vec::new();
        let peer = self.peers.data_mut();
        peer.resync
            .write_done((id, offset, len), ok, peer.bitmap.as_mut(), &mut out);
        self.apply_resync(out);
        if let Some(now) = self.last_now {
            self.pump_resync(now);
        }
    }

    fn finish_sync_target(&mut self) {
        let Summary { secs, kib } = self.peers.data_mut().resync.finish_target(self.last_now);
        // Adopt the source's generation (drbd_resync_finished): our sync UUID goes to history.
        if let Some((peer, _)) = self.peers.data().link.as_ref().and_then(|l| l.peer_uuids) {
            let primary = self.st.role() == Role::Primary;
            self.gen_change(GenEvent::FinishTarget {
                peer_current: peer.current,
                primary,
            });
        }
        let done = format!(
            "Resync done (total {secs} sec; {} K/sec)",
            kib / secs.max(1)
        );
        let _ = self.change_state(
            ChangeSet::new()
                .disk(DiskState::UpToDate)
                .cstate(self.data_id(), ConnState::Connected)
                .why(done)
                .persist(),
        );
        self.emit(Output::Handler {
            name: "after-resync-target",
        });
        self.send_uuids(0);
        self.send_state();
    }

    pub(crate) fn finish_sync_source(&mut self) {
        let mut out = Vec::new();
        let peer = self.peers.data_mut();
        peer.resync.finish_source(peer.bitmap.as_ref(), &mut out);
        self.apply_resync(out);
        self.gen_change(GenEvent::FinishSource);
        let _ = self.change_state(
            ChangeSet::new()
                .cstate(self.data_id(), ConnState::Connected)
                .pdsk(self.data_id(), DiskState::UpToDate)
                .why("Resync done as SyncSource")
                .persist(),
        );
    }

    /// SyncSource: read the block (after any overlapping client write) and send it.
    pub(crate) fn on_rs_request(&mut self, id: u64, offset: u64, len: u32, digest: Vec<u8>) {
        let ctx = self.resync_ctx();
        let mut out = Vec::new();
        let admit = self
            .peers
            .data_mut()
            .resync
            .request(&ctx, (id, offset, len), digest, &mut out);
        self.apply_resync(out);
        if admit {
            self.admit_resync_reads();
        }
    }

    /// Start the SyncSource reads that no client write (or received peer write) overlaps.
    pub(crate) fn admit_resync_reads(&mut self) {
        // Without a link a read admitted now could not start, and its range would stay locked
        // against client writes (`reading_overlaps`) until the resync is dropped. Nothing to
        // admit unless we are SyncSource: every client write comes here (`admit_waiting`).
        if self.link_id().is_none() || !self.peers.data().resync.is_source() {
            return;
        }
        let requests = &self.requests;
        let peer = self.peers.data_mut();
        let rx = &peer.rx;
        let mut out = Vec::new();
        // Nor a received write not yet on our disk (the old Primary's, after a failover).
        peer.resync.admit(
            |o, e| requests.resync_read_may_start(o, e) && !rx.writes_overlap(o, e),
            &mut out,
        );
        self.apply_resync(out);
    }

    /// A SyncSource read for request `id` completed: its pieces of data and runs of zeroes.
    pub(crate) fn resync_read_done(
        &mut self,
        id: u64,
        link: LinkId,
        result: Result<Vec<Extent>, IoFailure>,
    ) {
        if self.link_id() != Some(link) {
            return;
        }
        let ctx = self.resync_ctx();
        let mut out = Vec::new();
        self.peers
            .data_mut()
            .resync
            .read_done(&ctx, id, result, &mut out);
        self.apply_resync(out);
    }

    /// SyncSource with csums-alg: send only the runs of blocks whose digests differ.
    pub(crate) fn csums_hashed(&mut self, id: u64, link: LinkId, mine: Vec<u8>) {
        if self.link_id() != Some(link) {
            return;
        }
        let ctx = self.resync_ctx();
        let mut out = Vec::new();
        let peer = self.peers.data_mut();
        peer.resync
            .hashed(&ctx, id, &mine, peer.bitmap.as_mut(), &mut out);
        self.apply_resync(out);
    }

    /// SyncSource: the target has the block (or could not write it).
    pub(crate) fn on_rs_ack(&mut self, offset: u64, len: u32, ok: bool) {
        let cstate = self.data_st().cstate();
        let peer = self.peers.data_mut();
        peer.resync
            .acked(cstate, (offset, len), ok, peer.bitmap.as_mut());
    }

    /// The resync ends with the link: everything it held goes (reads and hashes still in
    /// flight complete and are dropped).
    pub(crate) fn abort_resync(&mut self) {
        self.peers.data_mut().resync.abort();
    }

    /// Why a resync is paused: `pause-sync` here, the peer's pause, or `resync-after`.
    pub(crate) fn set_sync_paused(
        &mut self,
        now: Instant,
        paused: bool,
        reason: PauseReason,
    ) -> Result<Option<String>, Refusal> {
        let cstate = self.data_st().cstate();
        self.peers
            .data_mut()
            .resync
            .set_paused(cstate, paused, reason)?;
        self.apply_pause(now);
        let paused_now = matches!(
            self.data_st().cstate(),
            ConnState::PausedSyncS | ConnState::PausedSyncT
        );
        Ok(Some(if paused_now {
            format!("resync paused ({})", self.data_st().cstate())
        } else {
            "resync resumed".into()
        }))
    }

    /// Derive the cstate from the pause reasons and tell the peer about ours.
    pub(crate) fn apply_pause(&mut self, now: Instant) {
        let cstate = self.data_st().cstate();
        let Some((next, tell)) = self.peers.data_mut().resync.pause_step(cstate) else {
            return;
        };
        if let Some(paused) = tell {
            self.send(Packet::SyncPause { paused });
        }
        let _ = self.change_state(ChangeSet::new().cstate(self.data_id(), next));
        self.pump_resync(now);
    }

    /// The `resync-after` resource started or stopped resyncing.
    pub(crate) fn dependency_changed(&mut self, now: Instant, syncing: bool) {
        self.dependency_syncing = syncing;
        if self.peers.data().resync.running() {
            let _ = self.set_sync_paused(now, syncing, PauseReason::After);
        }
    }

    pub fn resync_info(&self) -> Option<ResyncInfo> {
        let peer = self.peers.data();
        let left = peer.oos_bits();
        peer.resync.info(
            self.last_now?,
            left,
            &self.cfg.peer.pace,
            self.requests.last_app_write,
        )
    }

    /// When the rate limit lets the SyncTarget ask for more (only while it may ask).
    pub(crate) fn resync_wake(&self) -> Option<Instant> {
        self.peers.data().resync.wake(self.data_st().cstate())
    }
}
