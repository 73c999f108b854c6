//! Resync (docs/drbd-semantics.md §8.1), the engine's side: the SyncTarget walks its bitmap and
//! asks for blocks; the SyncSource reads and sends them; both clear bits as blocks land. Client
//! writes keep flowing meanwhile: the source never reads a block under an in-flight client
//! write, and sends the block on the same ordered channel as writes, so stale resync data never
//! overwrites newer data. The state of a resync lives in `resync_state::Resync`.

use std::time::{Duration, Instant};

use crate::core::connection::after::After;
use crate::core::contract::ids::LinkId;
use crate::core::contract::io::{Extent, HashAlg, IoFailure, Output, PeerDiskOp};
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::io_table::{HandlerWait, IoOwner};
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};
use crate::core::sync::resync_state::{
    Budget, Hashing, PauseReason, Resync, ResyncInfo, ResyncSource, ResyncTarget, Side, SourceRead,
    REQUEST_BYTES,
};
use crate::core::sync::sparse;
use crate::core::sync::verify_state::Aux;
use crate::digest::Digests;
use crate::meta::bitmap::Bitmap;
use crate::meta::layout::BITMAP_BLOCK_BYTES;
use crate::wire::Packet;

impl Engine {
    /// Both sides: the resync state (held if `resync-after` says so), persisted, logged as DRBD.
    fn begin_resync(&mut self, side: Side) {
        let label = match side {
            Side::Target(_) => "SyncTarget",
            Side::Source(_) => "SyncSource",
        };
        let bits = self.dev.bitmap.as_ref().map_or(0, Bitmap::count_ones);
        let mut rs = Resync::new(side, self.last_now, bits);
        rs.pause.set(PauseReason::After, self.dependency_syncing);
        if self.cfg.peer.resync_after.is_some() {
            // Held until the driver has read the other resource's state right now: a reading
            // up to one poll old could let this resync run ahead of the one it must follow.
            rs.pause.set(PauseReason::After, true);
            self.emit(Output::CheckDependency);
        }
        let held = rs.pause.paused();
        self.peers.data_mut().resync = Some(rs);
        // A resync (e.g. the `invalidate` the notice asked for) settles what it said.
        if self.peers.data_mut().oos_notice.take().is_some() {
            self.status_changed();
        }
        if held {
            if let Some(now) = self.last_now {
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
                if let Some(bm) = self.dev.bitmap.as_mut() {
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
            if let Some(bm) = self.dev.bitmap.as_mut() {
                bm.set_all();
            }
        }
        self.start_sync_source(full);
    }

    pub(crate) fn on_sync_uuid(&mut self, now: Instant, uuid: u64) {
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
        let _ = now;
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

    /// SyncTarget: keep the window full within the rate limit; finish when no bit is left.
    pub(crate) fn pump_resync(&mut self, now: Instant) {
        if self.data_st().cstate() != ConnState::SyncTarget {
            // Paused (PausedSyncT) or not a target: nothing to ask for.
            return;
        }
        let Some(link) = self.link_id() else { return };
        let (rate, in_flight) = self.cfg.peer.pace.limits(now, self.requests.last_app_write);
        let budget = Budget {
            rate,
            in_flight,
            usable_bytes: self.dev.local_usable_bytes,
        };
        let (Some(bm), Some(rs)) = (
            self.dev.bitmap.as_ref(),
            self.peers.data_mut().resync.as_mut(),
        ) else {
            return;
        };
        let started = *rs.started.get_or_insert(now);
        let Some(t) = rs.target() else { return };
        let requests = t.next_requests(now, started, bm, budget);
        let idle = t.idle();
        let left = bm.count_ones();
        let csums = self.cfg.peer.csums_alg.is_some();
        for (id, offset, len) in requests {
            // Our copy may be hashed only once the received writes to it are on our disk: after
            // a failover these are the dead Primary's writes, which its replacement (our source
            // now) may not have. Hashed before they land, our digest matches the source's, the
            // bits are cleared, and then the stale write lands (simulator seed 9430). Without a
            // digest the source sends its data, which queues behind those writes.
            let behind_received = self
                .peers
                .data_mut()
                .rx
                .writes_overlap(offset, offset + u64::from(len));
            if csums && !behind_received {
                // Hash our copy first: the source sends only blocks whose digests differ.
                let aux = Aux::CsumsMine {
                    id,
                    offset,
                    len,
                    link,
                };
                self.aux_read(aux, offset, len);
            } else {
                self.send(Packet::RsRequest {
                    id,
                    offset,
                    len,
                    digest: Vec::new(),
                });
            }
        }
        if idle && left == 0 {
            self.finish_sync_target();
        }
    }

    /// A resync reply (data or "in sync") must lie inside a request still in flight.
    fn rs_reply_fits(&mut self, id: u64, offset: u64, len: u64) -> bool {
        let target = matches!(
            self.data_st().cstate(),
            ConnState::SyncTarget | ConnState::PausedSyncT
        );
        target
            && self
                .peers
                .data_mut()
                .resync_target()
                .is_some_and(|t| t.reply_fits(id, offset, len))
    }

    fn rs_progress(&mut self, id: u64, len: u64) {
        if let Some(t) = self.peers.data_mut().resync_target() {
            t.progress(id, len);
        }
    }

    pub(crate) fn on_rs_data(&mut self, id: u64, offset: u64, data: Vec<u8>) {
        if !self.rs_reply_fits(id, offset, data.len() as u64) {
            self.protocol_error(format!(
                "unexpected resync block {id} at {offset} ({} bytes)",
                data.len()
            ));
            return;
        }
        self.enqueue_resync_write(id, offset, data);
    }

    /// The source has zeroes there (a hole, or blocks of zeroes): zero our copy, and clear
    /// the bits once that is done, exactly as for a block of data.
    pub(crate) fn on_rs_zero(&mut self, id: u64, offset: u64, len: u32) {
        if !self.rs_reply_fits(id, offset, u64::from(len)) {
            self.protocol_error(format!(
                "unexpected resync zero range {id} at {offset}+{len}"
            ));
            return;
        }
        self.enqueue_resync_zero(id, offset, len);
    }

    /// csums-alg: the source found these blocks identical; nothing to write.
    pub(crate) fn on_rs_in_sync(&mut self, now: Instant, id: u64, offset: u64, len: u32) {
        if !self.rs_reply_fits(id, offset, u64::from(len)) {
            self.protocol_error(format!("unexpected in-sync reply {id} at {offset}"));
            return;
        }
        if let Some(bm) = self.dev.bitmap.as_mut() {
            bm.clear_range(offset, u64::from(len));
        }
        self.rs_progress(id, u64::from(len));
        self.pump_resync(now);
    }

    /// A resync block or zero range landed on our disk (or failed to). The counters count
    /// resynced bytes either way (a zero range is "received" and "written" as zeroes);
    /// what the link carried is the runtime's `rep_peer_link_sent_bytes_total`.
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
        self.rs_progress(id, len);
        // A resync block is at most one request (1 MiB).
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        if ok {
            if let Some(bm) = self.dev.bitmap.as_mut() {
                bm.clear_range(offset, len);
            }
            self.counters.nr_kib += len / 1024;
            self.counters.dw_kib += len / 1024;
            self.send(Packet::RsWriteAck {
                id,
                offset,
                len: len32,
            });
        } else {
            tracing::error!(resource = %self.cfg.resource, "resync write at {offset} failed; block stays out of sync");
            self.send(Packet::RsNegAck {
                id,
                offset,
                len: len32,
            });
        }
        if let Some(now) = self.last_now {
            self.pump_resync(now);
        }
    }

    fn finish_sync_target(&mut self) {
        let secs = self
            .peers
            .data_mut()
            .resync
            .as_ref()
            .and_then(|r| r.started)
            .zip(self.last_now)
            .map_or(0, |(s, n)| n.saturating_duration_since(s).as_secs());
        let kib = self
            .peers
            .data()
            .resync
            .as_ref()
            .map_or(0, |r| r.total_bits * 4);
        self.peers.data_mut().resync = None;
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
        let left = self.dev.bitmap.as_ref().map_or(0, Bitmap::count_ones);
        if left > 0 {
            tracing::warn!(resource = %self.cfg.resource, "peer finished the resync but {left} bits are still set here");
        }
        self.peers.data_mut().resync = None;
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
        let end = offset
            .checked_add(u64::from(len))
            .filter(|e| *e <= self.dev.local_usable_bytes);
        if end.is_none() || len == 0 || u64::from(len) > REQUEST_BYTES {
            self.protocol_error(format!("resync request {offset}+{len} is invalid"));
            return;
        }
        let source = self.peers.data_mut().resync_source();
        match source {
            Some(s) if self.st.disk() == DiskState::UpToDate => s.request(id, offset, len, digest),
            // Not (or no longer) a source with UpToDate data: the block stays out of sync.
            _ => {
                self.send(Packet::RsNegAck { id, offset, len });
                return;
            }
        }
        self.admit_resync_reads();
    }

    /// Start the SyncSource reads that no client write (or received peer write) overlaps.
    pub(crate) fn admit_resync_reads(&mut self) {
        let Some(link) = self.link_id() else { return };
        let requests = &self.requests;
        let peer = self.peers.data_mut();
        let rx = &peer.rx;
        let Some(s) = peer.resync.as_mut().and_then(Resync::source) else {
            return;
        };
        // Nor a received write not yet on our disk (the old Primary's, after a failover).
        let start =
            s.startable(|o, e| requests.resync_read_may_start(o, e) && !rx.writes_overlap(o, e));
        for (id, offset, len) in start {
            let io = self.ios.start(IoOwner::ResyncRead { id, link });
            // Sparse: the driver tells which blocks read as zeroes (and skips holes), and
            // those go out as zero ranges instead of data.
            self.emit(Output::PeerDisk {
                io,
                op: PeerDiskOp::ReadSparse { offset, len },
            });
        }
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
        let Some(s) = self.peers.data_mut().resync_source() else {
            return;
        };
        let Some(SourceRead {
            offset,
            end,
            theirs,
        }) = s.read_done(id)
        else {
            return;
        };
        // The pieces must cover the range exactly; anything else is a read that failed.
        let result = result.and_then(|x| {
            let total: u64 = x.iter().map(Extent::len).sum();
            if total == end - offset {
                Ok(x)
            } else {
                Err(IoFailure {
                    errno: 5,
                    message: format!("sparse read returned {total} of {} bytes", end - offset),
                })
            }
        });
        if let (Some(theirs), Ok(extents), Some(alg)) = (theirs, &result, self.cfg.peer.csums_alg) {
            // The range stays locked until the reply is sent, so no client write can slip in
            // between this read and the data we send.
            let (data, zeros) = sparse::flatten(offset, extents);
            let hashing = Hashing {
                offset,
                data: data.clone(),
                theirs,
            };
            s.hash(id, hashing);
            if let Some(s) = self.peers.data_mut().resync_source() {
                s.zeros.insert(id, zeros);
            }
            let io = self.ios.start(IoOwner::CsumsHash { id, link });
            self.emit(Output::Hash { io, alg, data });
            return;
        }
        if let Some(s) = self.peers.data_mut().resync_source() {
            // A digest-less fallback (no csums-alg here, or the read failed) unlocks now.
            let _ = s.hashed(id);
        }
        let len = u32::try_from(end - offset).unwrap_or(u32::MAX);
        match result {
            Ok(extents) => {
                // Resynced bytes, whether they go as data or as a zero range (see
                // `resync_write_done`).
                self.counters.dr_kib += u64::from(len) / 1024;
                self.counters.ns_kib += u64::from(len) / 1024;
                let mut at = offset;
                for x in extents {
                    let n = x.len();
                    match x {
                        Extent::Data(data) if !data.is_empty() => {
                            self.send(Packet::RsData {
                                id,
                                offset: at,
                                data,
                            });
                        }
                        Extent::Zero(z) if z > 0 => self.send(Packet::RsZero {
                            id,
                            offset: at,
                            len: z,
                        }),
                        _ => {}
                    }
                    at += n;
                }
            }
            Err(e) => {
                tracing::error!(resource = %self.cfg.resource, "resync read at {offset} failed: {}", e.message);
                self.send(Packet::RsNegAck { id, offset, len });
            }
        }
        self.admit_waiting();
    }

    /// SyncSource with csums-alg: send only the runs of blocks whose digests differ.
    pub(crate) fn csums_hashed(&mut self, id: u64, link: LinkId, mine: Vec<u8>) {
        if self.link_id() != Some(link) {
            return;
        }
        let Some((
            Hashing {
                offset,
                data,
                theirs,
            },
            zeros,
        )) = self
            .peers
            .data_mut()
            .resync_source()
            .and_then(|s| Some((s.hashed(id)?, s.zeros.remove(&id).unwrap_or_default())))
        else {
            return;
        };
        let dlen = self.cfg.peer.csums_alg.map_or(20, HashAlg::digest_len);
        // 4 KiB.
        let block = usize::try_from(BITMAP_BLOCK_BYTES).unwrap_or(4096);
        let blocks = data.len().div_ceil(block);
        let same = |b: usize| {
            let r = b * dlen..(b + 1) * dlen;
            mine.get(r.clone()).is_some() && mine.get(r.clone()) == theirs.get(r)
        };
        let mut b = 0;
        while b < blocks {
            let equal = same(b);
            let mut e = b + 1;
            while e < blocks && same(e) == equal {
                e += 1;
            }
            let start = b * block;
            let end = (e * block).min(data.len());
            let off = offset + start as u64;
            // A run lies within one request (1 MiB).
            let len = u32::try_from(end - start).unwrap_or(u32::MAX);
            if equal {
                if let Some(bm) = self.dev.bitmap.as_mut() {
                    bm.clear_range(off, u64::from(len));
                }
                self.send(Packet::RsInSync {
                    id,
                    offset: off,
                    len,
                });
            } else {
                // What differs goes as data, except where it reads as zeroes here.
                self.counters.ns_kib += u64::from(len) / 1024;
                for (from, to, zero) in sparse::pieces(off, off + u64::from(len), &zeros) {
                    let n = u32::try_from(to - from).unwrap_or(u32::MAX);
                    if zero {
                        self.send(Packet::RsZero {
                            id,
                            offset: from,
                            len: n,
                        });
                    } else {
                        // Within the request (1 MiB) the piece is always there; were it
                        // not, a refusal still answers that part of the request.
                        let at = |x: u64| usize::try_from(x - offset).ok();
                        match at(from).zip(at(to)).and_then(|(a, z)| data.get(a..z)) {
                            Some(piece) => self.send(Packet::RsData {
                                id,
                                offset: from,
                                data: piece.to_vec(),
                            }),
                            None => self.send(Packet::RsNegAck {
                                id,
                                offset: from,
                                len: n,
                            }),
                        }
                    }
                }
            }
            b = e;
        }
        self.admit_waiting();
    }

    /// SyncTarget: the source could not send this block (its read failed, or it has no
    /// UpToDate data): the request is over, the bits stay set and are asked for again.
    pub(crate) fn on_rs_neg_reply(&mut self, id: u64, offset: u64, len: u32) {
        if !self.rs_reply_fits(id, offset, u64::from(len)) {
            self.protocol_error(format!("unexpected resync refusal {id} at {offset}"));
            return;
        }
        tracing::warn!(resource = %self.cfg.resource, "the SyncSource could not send {offset}+{len}; asking again later");
        self.rs_progress(id, u64::from(len));
    }

    /// SyncSource: the target has the block (or could not write it).
    pub(crate) fn on_rs_ack(&mut self, offset: u64, len: u32, ok: bool) {
        if !matches!(
            self.data_st().cstate(),
            ConnState::SyncSource | ConnState::PausedSyncS
        ) {
            return;
        }
        self.note_rs_acked(len);
        if ok {
            if let Some(bm) = self.dev.bitmap.as_mut() {
                bm.clear_range(offset, u64::from(len));
            }
        }
    }

    /// The resync ends with the link: everything it held goes (reads and hashes still in
    /// flight complete and are dropped).
    pub(crate) fn abort_resync(&mut self) {
        self.peers.data_mut().resync = None;
    }

    /// Why a resync is paused: `pause-sync` here, the peer's pause, or `resync-after`.
    pub(crate) fn set_sync_paused(
        &mut self,
        now: Instant,
        paused: bool,
        reason: PauseReason,
    ) -> Result<Option<String>, crate::core::contract::refusal::Refusal> {
        let Some(rs) = self.peers.data_mut().resync.as_mut() else {
            return Err(crate::core::contract::refusal::Refusal::NoResync {
                cstate: self.data_st().cstate(),
            });
        };
        rs.pause.set(reason, paused);
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
        let Some(rs) = self.peers.data_mut().resync.as_mut() else {
            return;
        };
        let pause = rs.pause.paused();
        let tell = rs.pause.news_for_peer();
        let next = match self.data_st().cstate() {
            ConnState::SyncSource | ConnState::PausedSyncS if pause => ConnState::PausedSyncS,
            ConnState::SyncSource | ConnState::PausedSyncS => ConnState::SyncSource,
            ConnState::SyncTarget | ConnState::PausedSyncT if pause => ConnState::PausedSyncT,
            ConnState::SyncTarget | ConnState::PausedSyncT => ConnState::SyncTarget,
            other => other,
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
        if self.peers.data().resync.is_some() {
            let _ = self.set_sync_paused(now, syncing, PauseReason::After);
        }
    }

    pub fn resync_info(&self) -> Option<ResyncInfo> {
        let rs = self.peers.data().resync.as_ref()?;
        let now = self.last_now?;
        Some(ResyncInfo {
            total_bits: rs.total_bits,
            left_bits: self.dev.bitmap.as_ref().map_or(0, Bitmap::count_ones),
            elapsed: rs
                .started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
            rate_kib: self
                .cfg
                .peer
                .pace
                .want_kib(now, self.requests.last_app_write),
            current_kib: rs
                .gauge
                .current_kib(now, self.dev.bitmap.as_ref().map_or(0, Bitmap::count_ones)),
            limit: rs.gauge.limit.map(|l| {
                let target = matches!(rs.side, Side::Target(_));
                crate::core::sync::limit::LimitInfo::new(l, &self.cfg.peer.pace, target)
            }),
        })
    }

    /// When the rate limit lets the SyncTarget ask for more (only while it may ask).
    pub(crate) fn resync_wake(&self) -> Option<Instant> {
        if self.data_st().cstate() != ConnState::SyncTarget {
            return None;
        }
        self.peers.data().resync.as_ref().and_then(Resync::wake)
    }
}
