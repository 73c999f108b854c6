//! Resync (reference/drbd.md §7.1): the SyncTarget walks its bitmap and asks for blocks; the
//! SyncSource reads and sends them; both clear bits as blocks land. Client writes keep flowing
//! meanwhile: the source never reads a block under an in-flight client write, and sends the
//! block on the same ordered channel as writes, so stale resync data never overwrites newer data.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::io::{HashAlg, IoFailure, IoId, Output, PeerDiskOp};
use super::state::{ConnState, DiskState, Role};
use super::state_change::ChangeSet;
use super::verify::Aux;
use crate::digest::Digests;
use crate::meta::bitmap::Bitmap;
use crate::meta::layout::BITMAP_BLOCK_BYTES;
use crate::meta::superblock::UuidIndex;
use crate::wire::Packet;

/// Resync requests in flight at once (each ≤ `REQUEST_BYTES`).
const WINDOW: usize = 32;
const REQUEST_BYTES: u64 = 1024 * 1024;
/// The rate limit allows this much ahead of the average before it throttles.
const BURST_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    User,
    Peer,
    After,
}

#[derive(Debug)]
pub(crate) struct Resync {
    pub started: Option<Instant>,
    pub total_bits: u64,
    /// SyncTarget: next bit to look at, requests in flight by id, bytes asked for so far.
    cursor: u64,
    /// Requests in flight: id → (offset, len, bytes still to come).
    in_flight: HashMap<u64, (u64, u64, u64)>,
    /// `pause-sync` here / on the peer.
    pub paused_here: bool,
    pub paused_peer: bool,
    /// `resync-after`: the resource we wait for is resyncing.
    pub paused_after: bool,
    /// What we last told the peer about our own pause reasons.
    told_peer: bool,
    next_id: u64,
    requested: u64,
    /// Throttled until then.
    pub wake: Option<Instant>,
}

/// What `status` shows about a running resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncInfo {
    pub total_bits: u64,
    pub left_bits: u64,
    pub elapsed: Duration,
    pub rate_kib: u64,
}

impl Engine {
    fn new_resync(&self) -> Resync {
        Resync {
            started: self.last_now,
            total_bits: self.bitmap.as_ref().map_or(0, Bitmap::count_ones),
            cursor: 0,
            in_flight: HashMap::new(),
            paused_here: false,
            paused_peer: false,
            paused_after: self.dependency_syncing,
            told_peer: false,
            next_id: 1,
            requested: 0,
            wake: None,
        }
    }

    /// Both sides: the resync state (held if `resync-after` says so), persisted, logged as DRBD.
    fn begin_resync(&mut self, side: &str) {
        self.resync = Some(self.new_resync());
        if self.cfg.peer.resync_after.is_some() {
            // Held until the driver has read the other resource's state right now: a reading
            // up to one poll old could let this resync run ahead of the one it must follow.
            if let Some(rs) = self.resync.as_mut() {
                rs.paused_after = true;
            }
            self.emit(Output::CheckDependency);
        }
        if self.resync.as_ref().is_some_and(|r| r.paused_after) {
            if let Some(now) = self.last_now {
                self.apply_pause(now);
            }
        }
        self.persist_superblock();
        let bits = self.bitmap.as_ref().map_or(0, Bitmap::count_ones);
        tracing::info!(resource = %self.cfg.resource, "Began resync as {side} (will sync {} KB [{bits} bits set]).", bits * 4);
    }

    /// We have the newer data: rotate the bitmap UUID, tell the peer, and serve its requests.
    pub(crate) fn start_sync_source(&mut self, full: bool) {
        let v = self.rng.uuid();
        let sync_uuid = self.uuids.start_sync_source(v);
        let _ = self.change_state(
            ChangeSet::new()
                .cstate(ConnState::SyncSource)
                .pdsk(DiskState::Inconsistent),
        );
        self.begin_resync("SyncSource");
        // Our final bitmap first: writes during the handshake set bits after our report.
        self.send_bitmap();
        self.send(Packet::SyncStart { source: true, full });
        self.send(Packet::SyncUuid { uuid: sync_uuid });
    }

    pub(crate) fn on_sync_start(&mut self, now: Instant, peer_is_source: bool, full: bool) {
        if peer_is_source {
            if !matches!(
                self.st.cstate(),
                ConnState::WFSyncUUID | ConnState::Connected
            ) || self.st.disk() <= DiskState::Failed
            {
                self.protocol_error(format!(
                    "peer starts a resync while we are {} / {}",
                    self.st.cstate(),
                    self.st.disk()
                ));
                return;
            }
            if self.st.role() == Role::Primary && self.st.disk() >= DiskState::Consistent {
                self.protocol_error("peer wants to overwrite a Primary with UpToDate data".into());
                return;
            }
            if full {
                if let Some(bm) = self.bitmap.as_mut() {
                    bm.set_all();
                }
            }
            let _ = self.change_state(
                ChangeSet::new()
                    .disk(DiskState::Inconsistent)
                    .cstate(ConnState::WFSyncUUID),
            );
            let _ = now;
            return;
        }
        // The peer invalidated itself and asks us to be its source.
        if self.st.cstate() != ConnState::Connected || self.st.disk() != DiskState::UpToDate {
            self.protocol_error(format!(
                "peer asks for a full sync but we are {} / {}",
                self.st.cstate(),
                self.st.disk()
            ));
            return;
        }
        if let Some(bm) = self.bitmap.as_mut() {
            bm.set_all();
        }
        self.start_sync_source(true);
    }

    pub(crate) fn on_sync_uuid(&mut self, now: Instant, uuid: u64) {
        if self.st.cstate() != ConnState::WFSyncUUID {
            self.protocol_error(format!("SyncUuid while {}", self.st.cstate()));
            return;
        }
        self.uuids.set_no_history(UuidIndex::Current, uuid, false);
        self.uuids.bitmap = 0;
        let _ = self.change_state(ChangeSet::new().cstate(ConnState::SyncTarget));
        self.emit(Output::Handler {
            name: "before-resync-target",
        });
        self.begin_resync("SyncTarget");
        self.pump_resync(now);
    }

    /// SyncTarget: keep the window full within the rate limit; finish when no bit is left.
    pub(crate) fn pump_resync(&mut self, now: Instant) {
        if self.st.cstate() != ConnState::SyncTarget {
            // Paused (PausedSyncT) or not a target: nothing to ask for.
            return;
        }
        let (rate, budget) = self.cfg.peer.pace.limits(now, self.last_app_write);
        let Some(bm) = self.bitmap.as_ref() else {
            return;
        };
        let Some(rs) = self.resync.as_mut() else {
            return;
        };
        let device_bits = self.local_usable_bytes.div_ceil(BITMAP_BLOCK_BYTES);
        let mut requests = Vec::new();
        let mut rescanned = false;
        let started = *rs.started.get_or_insert(now);
        let mut in_flight_bytes: u64 = rs.in_flight.values().map(|&(_, _, left)| left).sum();
        let max_request =
            budget.map_or(REQUEST_BYTES, |b| b.min(REQUEST_BYTES)) / BITMAP_BLOCK_BYTES;
        while rs.in_flight.len() + requests.len() < WINDOW
            && budget.is_none_or(|b| in_flight_bytes < b)
        {
            let elapsed = now.saturating_duration_since(started).as_secs_f64();
            let allowed = (rate as f64 * elapsed) as u64 + BURST_BYTES;
            if rs.requested >= allowed {
                let due = (rs.requested - BURST_BYTES) as f64 / rate as f64;
                rs.wake = Some(
                    started + Duration::from_secs_f64(due.max(0.0)) + Duration::from_millis(1),
                );
                break;
            }
            rs.wake = None;
            let cursor = rs.cursor;
            let next = bm
                .runs()
                .map(|r| r.start.max(cursor)..r.end)
                .find(|r| r.start < r.end && r.start < device_bits);
            let Some(run) = next else {
                if !rescanned && rs.cursor > 0 {
                    rs.cursor = 0;
                    rescanned = true;
                    continue;
                }
                break;
            };
            let end_bit = run.end.min(device_bits).min(run.start + max_request.max(1));
            let busy = rs.in_flight.values().any(|&(o, l, _)| {
                o < end_bit * BITMAP_BLOCK_BYTES && run.start * BITMAP_BLOCK_BYTES < o + l
            });
            rs.cursor = end_bit;
            if busy {
                continue;
            }
            let offset = run.start * BITMAP_BLOCK_BYTES;
            let len = (end_bit * BITMAP_BLOCK_BYTES).min(self.local_usable_bytes) - offset;
            let id = rs.next_id;
            rs.next_id += 1;
            rs.requested += len;
            in_flight_bytes += len;
            rs.in_flight.insert(id, (offset, len, len));
            requests.push((id, offset, len as u32));
        }
        let idle = rs.in_flight.is_empty() && requests.is_empty();
        let left = bm.count_ones();
        let csums = self.cfg.peer.csums_alg.is_some();
        for (id, offset, len) in requests {
            if csums {
                // Hash our copy first: the source sends only blocks whose digests differ.
                self.aux_read(Aux::CsumsMine { id, offset, len }, offset, len);
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
    fn rs_reply_fits(&self, id: u64, offset: u64, len: u64) -> bool {
        let target = matches!(
            self.st.cstate(),
            ConnState::SyncTarget | ConnState::PausedSyncT
        );
        let req = self
            .resync
            .as_ref()
            .and_then(|r| r.in_flight.get(&id).copied());
        target
            && req.is_some_and(|(o, l, left)| {
                offset >= o && offset + len <= o + l && len <= left && len > 0
            })
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

    /// csums-alg: the source found these blocks identical; nothing to write.
    pub(crate) fn on_rs_in_sync(&mut self, now: Instant, id: u64, offset: u64, len: u32) {
        if !self.rs_reply_fits(id, offset, u64::from(len)) {
            self.protocol_error(format!("unexpected in-sync reply {id} at {offset}"));
            return;
        }
        if let Some(bm) = self.bitmap.as_mut() {
            bm.clear_range(offset, u64::from(len));
        }
        self.rs_request_progress(id, u64::from(len));
        self.pump_resync(now);
    }

    fn rs_request_progress(&mut self, id: u64, len: u64) {
        if let Some(rs) = self.resync.as_mut() {
            if let Some(e) = rs.in_flight.get_mut(&id) {
                e.2 = e.2.saturating_sub(len);
                if e.2 == 0 {
                    rs.in_flight.remove(&id);
                }
            }
        }
    }

    pub(crate) fn send_csums_request(&mut self, id: u64, offset: u64, len: u32, digest: Vec<u8>) {
        if self.resync.is_some() {
            self.send(Packet::RsRequest {
                id,
                offset,
                len,
                digest,
            });
        }
    }

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
        self.rs_request_progress(id, len);
        if ok {
            if let Some(bm) = self.bitmap.as_mut() {
                bm.clear_range(offset, len);
            }
            self.counters.nr_kib += len / 1024;
            self.counters.dw_kib += len / 1024;
            self.send(Packet::RsWriteAck {
                id,
                offset,
                len: len as u32,
            });
        } else {
            tracing::error!(resource = %self.cfg.resource, "resync write at {offset} failed; block stays out of sync");
            self.send(Packet::RsNegAck {
                id,
                offset,
                len: len as u32,
            });
        }
        if let Some(now) = self.last_now {
            self.pump_resync(now);
        }
    }

    fn finish_sync_target(&mut self) {
        let secs = self
            .resync
            .as_ref()
            .and_then(|r| r.started)
            .zip(self.last_now)
            .map_or(0, |(s, n)| n.saturating_duration_since(s).as_secs());
        let kib = self.resync.as_ref().map_or(0, |r| r.total_bits * 4);
        self.resync = None;
        // Adopt the source's generation (drbd_resync_finished): our sync UUID goes to history.
        if let Some((peer, _)) = self.link.as_ref().and_then(|l| l.peer_uuids) {
            let primary = self.st.role() == Role::Primary;
            let own = self.uuids.current;
            self.uuids.set(UuidIndex::Bitmap, own & !1, primary);
            self.uuids
                .set_no_history(UuidIndex::Current, peer.current, primary);
            self.uuids.clear_bitmap_uuid();
        }
        let done = format!(
            "Resync done (total {secs} sec; {} K/sec)",
            kib / secs.max(1)
        );
        let _ = self.change_state(
            ChangeSet::new()
                .disk(DiskState::UpToDate)
                .cstate(ConnState::Connected)
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
        let left = self.bitmap.as_ref().map_or(0, Bitmap::count_ones);
        if left > 0 {
            tracing::warn!(resource = %self.cfg.resource, "peer finished the resync but {left} bits are still set here");
        }
        self.resync = None;
        self.uuids.clear_bitmap_uuid();
        let _ = self.change_state(
            ChangeSet::new()
                .cstate(ConnState::Connected)
                .pdsk(DiskState::UpToDate)
                .why("Resync done as SyncSource")
                .persist(),
        );
    }

    /// SyncSource: read the block (after any overlapping client write) and send it.
    pub(crate) fn on_rs_request(&mut self, id: u64, offset: u64, len: u32, digest: Vec<u8>) {
        let end = offset
            .checked_add(u64::from(len))
            .filter(|e| *e <= self.local_usable_bytes);
        if end.is_none() || len == 0 || u64::from(len) > REQUEST_BYTES {
            self.protocol_error(format!("resync request {offset}+{len} is invalid"));
            return;
        }
        if self.st.disk() < DiskState::UpToDate {
            self.send(Packet::RsNegAck { id, offset, len });
            return;
        }
        if !digest.is_empty() {
            self.csums_expected.insert(id, digest);
        }
        self.requests.resync_waiting.push_back((id, offset, len));
        self.admit_resync_reads();
    }

    pub(crate) fn admit_resync_reads(&mut self) {
        let mut still = std::collections::VecDeque::new();
        while let Some((id, offset, len)) = self.requests.resync_waiting.pop_front() {
            let end = offset + u64::from(len);
            if !self.requests.resync_read_may_start(offset, end) {
                still.push_back((id, offset, len));
                continue;
            }
            let io = self.alloc_io();
            self.requests.resync_reads.push((io, offset, end));
            self.resync_read_ids.insert(io, id);
            self.emit(Output::PeerDisk {
                io,
                op: PeerDiskOp::Read { offset, len },
            });
        }
        self.requests.resync_waiting = still;
    }

    pub(crate) fn resync_read_done(
        &mut self,
        io: IoId,
        result: Result<Option<Vec<u8>>, IoFailure>,
    ) {
        let Some(pos) = self
            .requests
            .resync_reads
            .iter()
            .position(|&(i, _, _)| i == io)
        else {
            return;
        };
        let id = self.resync_read_ids.remove(&io).unwrap_or(0);
        if let (Some(theirs), Ok(Some(data))) = (self.csums_expected.remove(&id), &result) {
            if let Some(alg) = self.cfg.peer.csums_alg {
                // Keep the range in `resync_reads` until the reply is sent, so no client
                // write can slip in between this read and the data we send.
                let hio = self.alloc_io();
                self.csums_pending
                    .insert(hio, (io, id, data.clone(), theirs));
                self.emit(Output::Hash {
                    io: hio,
                    alg,
                    data: data.clone(),
                });
                return;
            }
        }
        let (_, offset, end) = self.requests.resync_reads.remove(pos);
        let len = (end - offset) as u32;
        match result {
            Ok(Some(data)) if data.len() as u64 == end - offset => {
                self.counters.dr_kib += u64::from(len) / 1024;
                self.counters.ns_kib += u64::from(len) / 1024;
                self.send(Packet::RsData { id, offset, data });
            }
            Ok(_) => self.send(Packet::RsNegAck { id, offset, len }),
            Err(e) => {
                tracing::error!(resource = %self.cfg.resource, "resync read at {offset} failed: {}", e.message);
                self.send(Packet::RsNegAck { id, offset, len });
            }
        }
        self.admit_waiting();
    }

    /// SyncSource with csums-alg: send only the runs of blocks whose digests differ.
    pub(crate) fn csums_source_hashed(&mut self, hio: IoId, mine: Vec<u8>) {
        let Some((rio, id, data, theirs)) = self.csums_pending.remove(&hio) else {
            return;
        };
        let Some(pos) = self
            .requests
            .resync_reads
            .iter()
            .position(|&(i, _, _)| i == rio)
        else {
            return;
        };
        let (_, offset, _) = self.requests.resync_reads.remove(pos);
        let dlen = self.cfg.peer.csums_alg.map_or(20, HashAlg::digest_len);
        let blocks = data.len().div_ceil(BITMAP_BLOCK_BYTES as usize);
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
            let start = b * BITMAP_BLOCK_BYTES as usize;
            let end = (e * BITMAP_BLOCK_BYTES as usize).min(data.len());
            let off = offset + start as u64;
            if equal {
                if let Some(bm) = self.bitmap.as_mut() {
                    bm.clear_range(off, (end - start) as u64);
                }
                self.send(Packet::RsInSync {
                    id,
                    offset: off,
                    len: (end - start) as u32,
                });
            } else {
                self.counters.ns_kib += (end - start) as u64 / 1024;
                self.send(Packet::RsData {
                    id,
                    offset: off,
                    data: data[start..end].to_vec(),
                });
            }
            b = e;
        }
        self.admit_waiting();
    }

    /// SyncSource: the target has the block (or could not write it).
    pub(crate) fn on_rs_ack(&mut self, _now: Instant, _id: u64, offset: u64, len: u32, ok: bool) {
        if !matches!(
            self.st.cstate(),
            ConnState::SyncSource | ConnState::PausedSyncS
        ) {
            return;
        }
        if ok {
            if let Some(bm) = self.bitmap.as_mut() {
                bm.clear_range(offset, u64::from(len));
            }
        }
    }

    pub(crate) fn abort_resync(&mut self) {
        self.resync = None;
        self.requests.resync_waiting.clear();
        self.csums_expected.clear();
    }

    /// Why a resync is paused: `pause-sync` here, the peer's pause, or `resync-after`.
    pub(crate) fn set_sync_paused(
        &mut self,
        now: Instant,
        paused: bool,
        reason: PauseReason,
    ) -> Result<Option<String>, super::refusal::Refusal> {
        let Some(rs) = self.resync.as_mut() else {
            return Err(super::refusal::Refusal::NoResync {
                cstate: self.st.cstate(),
            });
        };
        match reason {
            PauseReason::User => rs.paused_here = paused,
            PauseReason::Peer => rs.paused_peer = paused,
            PauseReason::After => rs.paused_after = paused,
        }
        self.apply_pause(now);
        let paused_now = matches!(
            self.st.cstate(),
            ConnState::PausedSyncS | ConnState::PausedSyncT
        );
        Ok(Some(if paused_now {
            format!("resync paused ({})", self.st.cstate())
        } else {
            "resync resumed".into()
        }))
    }

    /// Derive the cstate from the pause reasons and tell the peer about ours.
    pub(crate) fn apply_pause(&mut self, now: Instant) {
        let Some(rs) = self.resync.as_mut() else {
            return;
        };
        let local = rs.paused_here || rs.paused_after;
        let pause = local || rs.paused_peer;
        let tell = (rs.told_peer != local).then(|| {
            rs.told_peer = local;
            local
        });
        let next = match self.st.cstate() {
            ConnState::SyncSource | ConnState::PausedSyncS if pause => ConnState::PausedSyncS,
            ConnState::SyncSource | ConnState::PausedSyncS => ConnState::SyncSource,
            ConnState::SyncTarget | ConnState::PausedSyncT if pause => ConnState::PausedSyncT,
            ConnState::SyncTarget | ConnState::PausedSyncT => ConnState::SyncTarget,
            other => other,
        };
        if let Some(paused) = tell {
            self.send(Packet::SyncPause { paused });
        }
        let _ = self.change_state(ChangeSet::new().cstate(next));
        self.pump_resync(now);
    }

    /// The `resync-after` resource started or stopped resyncing.
    pub(crate) fn dependency_changed(&mut self, now: Instant, syncing: bool) {
        self.dependency_syncing = syncing;
        if self.resync.is_some() {
            let _ = self.set_sync_paused(now, syncing, PauseReason::After);
        }
    }

    pub fn resync_info(&self) -> Option<ResyncInfo> {
        let rs = self.resync.as_ref()?;
        let now = self.last_now?;
        Some(ResyncInfo {
            total_bits: rs.total_bits,
            left_bits: self.bitmap.as_ref().map_or(0, Bitmap::count_ones),
            elapsed: rs
                .started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
            rate_kib: self.cfg.peer.pace.want_kib(now, self.last_app_write),
        })
    }

    /// When the rate limit lets the SyncTarget ask for more (only while it may ask).
    pub(crate) fn resync_wake(&self) -> Option<Instant> {
        if self.st.cstate() != ConnState::SyncTarget {
            return None;
        }
        self.resync.as_ref().and_then(|r| r.wake)
    }
}
