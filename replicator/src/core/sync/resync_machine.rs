//! Resync with one peer as a machine of its own (docs/drbd-semantics.md §8.1,
//! docs/architecture.md §8.2): the running resync (`Resync`), which blocks the SyncTarget asks
//! for, what the SyncSource reads and sends for each request, what a csums-alg digest
//! comparison leaves to send, and when the walk is over. It owns the resync's state and works
//! on the bitmap kept for its peer, which it is lent for each step; it touches neither the
//! link, the disk, the connection state nor the generation. Each step takes what it needs
//! (`Ctx`) and pushes its effects (`ResyncOut`) in the order they must happen; the engine
//! applies them (sync/resync.rs), so packets leave in the order decided here.

use std::time::{Duration, Instant};

use crate::core::contract::ids::LinkId;
use crate::core::contract::io::{Extent, HashAlg, IoFailure};
use crate::core::contract::refusal::Refusal;
use crate::core::state::ConnState;
use crate::core::state::DiskState;
use crate::core::sync::pace::Pace;
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

/// What a step needs to know about the engine, read when the input arrives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    /// The engine's clock (absent before the first timed input).
    pub(crate) now: Option<Instant>,
    /// The current link to the peer: reads and hashes are tagged with it, nothing is asked
    /// for without one.
    pub(crate) link: Option<LinkId>,
    /// The connection state towards the peer.
    pub(crate) cstate: ConnState,
    /// Our own disk state.
    pub(crate) disk: DiskState,
    /// Our own usable size: no request may reach past it.
    pub(crate) usable: u64,
    /// `csums-alg` of the net section.
    pub(crate) csums: Option<HashAlg>,
}

/// Resynced bytes in KiB, in `/proc/drbd`'s counters (see `Engine::resync_write_done`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    /// Received from the network / written to our disk (SyncTarget).
    pub(crate) nr_kib: u64,
    pub(crate) dw_kib: u64,
    /// Read from our disk / sent to the network (SyncSource).
    pub(crate) dr_kib: u64,
    pub(crate) ns_kib: u64,
}

/// What the engine does for the machine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResyncOut {
    /// Send a packet to the peer.
    Send(Packet),
    /// SyncTarget with csums-alg: read and hash our copy before asking (`Engine::aux_read`).
    HashMine {
        aux: Aux,
        offset: u64,
        len: u32,
    },
    /// SyncSource: read `[offset, offset+len)` sparse (holes and zero blocks as zero runs)
    /// for request `id`.
    Read {
        id: u64,
        offset: u64,
        len: u32,
    },
    /// SyncSource with csums-alg: hash the block read for request `id`.
    Hash {
        id: u64,
        alg: HashAlg,
        data: Vec<u8>,
    },
    /// Add to the resync counters.
    Count(Moved),
    /// Log a warning / an error.
    Warn(String),
    Error(String),
    /// The peer broke the resync protocol: drop the link.
    ProtocolError(String),
    /// SyncTarget: no bit is left and nothing is in flight.
    FinishTarget,
    /// A SyncSource range unlocked: client writes waiting for it may go.
    AdmitWaiting,
}

/// How a finished SyncTarget resync went, for DRBD's "Resync done" line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) secs: u64,
    pub(crate) kib: u64,
}

/// Resync with one peer: the running one, if any.
#[derive(Debug, Default)]
pub(crate) struct ResyncMachine {
    run: Option<Resync>,
}

impl ResyncMachine {
    /// Whether a resync with this peer runs (paused or not).
    pub(crate) fn running(&self) -> bool {
        self.run.is_some()
    }

    /// The running resync, for its gauges (`limit_feed.rs`) and status.
    pub(crate) fn run(&self) -> Option<&Resync> {
        self.run.as_ref()
    }
    pub(crate) fn run_mut(&mut self) -> Option<&mut Resync> {
        self.run.as_mut()
    }

    fn target(&mut self) -> Option<&mut ResyncTarget> {
        self.run.as_mut().and_then(Resync::target)
    }
    /// A SyncSource run is on: reads may wait to be admitted.
    pub(crate) fn is_source(&self) -> bool {
        self.run.as_ref().is_some_and(Resync::is_source)
    }
    fn source(&mut self) -> Option<&mut ResyncSource> {
        self.run.as_mut().and_then(Resync::source)
    }

    /// A resync begins, of `bits` set bits. `after_held`: `resync-after` holds it until the
    /// other resource's state is read (or that resource resyncs now). Returns whether it
    /// starts paused.
    pub(crate) fn begin(
        &mut self,
        side: Side,
        now: Option<Instant>,
        bits: u64,
        after_held: bool,
    ) -> bool {
        let mut rs = Resync::new(side, now, bits);
        rs.pause.set(PauseReason::After, after_held);
        let held = rs.pause.paused();
        self.run = Some(rs);
        held
    }

    /// The resync ends with the link, or is over: everything it held goes (reads and hashes
    /// still in flight complete and are dropped).
    pub(crate) fn abort(&mut self) {
        self.run = None;
    }

    /// SyncTarget: keep the window full within the rate limit; finish when no bit is left.
    /// `behind_received(start, end)`: a write received from the peer to that range is not on
    /// our disk yet.
    pub(crate) fn pump(
        &mut self,
        ctx: &Ctx,
        bm: &Bitmap,
        budget: Budget,
        behind_received: impl Fn(u64, u64) -> bool,
        out: &mut Vec<ResyncOut>,
    ) {
        // Paused (PausedSyncT) or not a target: nothing to ask for.
        let (ConnState::SyncTarget, Some(link), Some(now)) = (ctx.cstate, ctx.link, ctx.now) else {
            return;
        };
        let Some(rs) = self.run.as_mut() else { return };
        let started = *rs.started.get_or_insert(now);
        let Some(t) = rs.target() else { return };
        let requests = t.next_requests(now, started, bm, budget);
        let idle = t.idle();
        for (id, offset, len) in requests {
            // Our copy may be hashed only once the received writes to it are on our disk:
            // after a failover these are the dead Primary's writes, which its replacement (our
            // source now) may not have. Hashed before they land, our digest matches the
            // source's, the bits are cleared, and then the stale write lands (simulator seed
            // 9430). Without a digest the source sends its data, which queues behind those
            // writes.
            if ctx.csums.is_some() && !behind_received(offset, offset + u64::from(len)) {
                // Hash our copy first: the source sends only blocks whose digests differ.
                let aux = Aux::CsumsMine {
                    id,
                    offset,
                    len,
                    link,
                };
                out.push(ResyncOut::HashMine { aux, offset, len });
            } else {
                out.push(ResyncOut::Send(Packet::RsRequest {
                    id,
                    offset,
                    len,
                    digest: Vec::new(),
                }));
            }
        }
        if idle && bm.count_ones() == 0 {
            out.push(ResyncOut::FinishTarget);
        }
    }

    /// SyncTarget: a reply (data, zeroes, "in sync" or a refusal) must lie inside a request
    /// still in flight.
    pub(crate) fn reply_fits(&mut self, cstate: ConnState, id: u64, offset: u64, len: u64) -> bool {
        matches!(cstate, ConnState::SyncTarget | ConnState::PausedSyncT)
            && self.target().is_some_and(|t| t.reply_fits(id, offset, len))
    }

    fn progress(&mut self, id: u64, len: u64) {
        if let Some(t) = self.target() {
            t.progress(id, len);
        }
    }

    /// SyncTarget, csums-alg: the source found `[offset, offset+len)` identical; nothing to
    /// write. The caller checked `reply_fits`.
    pub(crate) fn in_sync(&mut self, id: u64, offset: u64, len: u32, bm: &mut Bitmap) {
        bm.clear_range(offset, u64::from(len));
        self.progress(id, u64::from(len));
    }

    /// SyncTarget: the source could not send this block (its read failed, or it has no
    /// UpToDate data): the request is over, the bits stay set and are asked for again.
    pub(crate) fn refused(&mut self, id: u64, offset: u64, len: u32, out: &mut Vec<ResyncOut>) {
        out.push(ResyncOut::Warn(format!(
            "the SyncSource could not send {offset}+{len}; asking again later"
        )));
        self.progress(id, u64::from(len));
    }

    /// SyncTarget: a resync block or zero range landed on our disk (or failed to). The
    /// counters count resynced bytes either way (a zero range is "received" and "written" as
    /// zeroes); what the link carried is the runtime's `rep_peer_link_sent_bytes_total`.
    pub(crate) fn write_done(
        &mut self,
        (id, offset, len): (u64, u64, u64),
        ok: bool,
        bm: Option<&mut Bitmap>,
        out: &mut Vec<ResyncOut>,
    ) {
        self.progress(id, len);
        // A resync block is at most one request (1 MiB).
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        if ok {
            if let Some(bm) = bm {
                bm.clear_range(offset, len);
            }
            out.push(ResyncOut::Count(Moved {
                nr_kib: len / 1024,
                dw_kib: len / 1024,
                ..Moved::default()
            }));
            out.push(ResyncOut::Send(Packet::RsWriteAck {
                id,
                offset,
                len: len32,
            }));
        } else {
            out.push(ResyncOut::Error(format!(
                "resync write at {offset} failed; block stays out of sync"
            )));
            out.push(ResyncOut::Send(Packet::RsNegAck {
                id,
                offset,
                len: len32,
            }));
        }
    }

    /// SyncTarget: the resync is over; how long it took and how much it moved.
    pub(crate) fn finish_target(&mut self, now: Option<Instant>) -> Summary {
        let rs = self.run.take();
        let secs = rs
            .as_ref()
            .and_then(|r| r.started)
            .zip(now)
            .map_or(0, |(s, n)| n.saturating_duration_since(s).as_secs());
        let kib = rs.as_ref().map_or(0, |r| r.total_bits * 4);
        Summary { secs, kib }
    }

    /// SyncSource: the target says the resync is over.
    pub(crate) fn finish_source(&mut self, bm: Option<&Bitmap>, out: &mut Vec<ResyncOut>) {
        let left = bm.map_or(0, Bitmap::count_ones);
        if left > 0 {
            out.push(ResyncOut::Warn(format!(
                "peer finished the resync but {left} bits are still set here"
            )));
        }
        self.run = None;
    }

    /// SyncSource: the target asks for `[offset, offset+len)` (with its digests under
    /// csums-alg). Returns whether reads may be admitted now.
    pub(crate) fn request(
        &mut self,
        ctx: &Ctx,
        (id, offset, len): (u64, u64, u32),
        digest: Vec<u8>,
        out: &mut Vec<ResyncOut>,
    ) -> bool {
        let end = offset
            .checked_add(u64::from(len))
            .filter(|e| *e <= ctx.usable);
        if end.is_none() || len == 0 || u64::from(len) > REQUEST_BYTES {
            out.push(ResyncOut::ProtocolError(format!(
                "resync request {offset}+{len} is invalid"
            )));
            return false;
        }
        match self.source() {
            Some(s) if ctx.disk == DiskState::UpToDate => {
                s.request(id, offset, len, digest);
                true
            }
            // Not (or no longer) a source with UpToDate data: the block stays out of sync.
            _ => {
                out.push(ResyncOut::Send(Packet::RsNegAck { id, offset, len }));
                false
            }
        }
    }

    /// SyncSource: start the reads that `may_start` allows (no client write, nor a received
    /// write not yet on our disk, overlaps them).
    pub(crate) fn admit(&mut self, may_start: impl Fn(u64, u64) -> bool, out: &mut Vec<ResyncOut>) {
        let Some(s) = self.source() else { return };
        for (id, offset, len) in s.startable(may_start) {
            out.push(ResyncOut::Read { id, offset, len });
        }
    }

    /// SyncSource: the read for request `id` completed with its pieces of data and runs of
    /// zeroes: hash it (csums-alg, the target sent digests), else send it as it is.
    pub(crate) fn read_done(
        &mut self,
        ctx: &Ctx,
        id: u64,
        result: Result<Vec<Extent>, IoFailure>,
        out: &mut Vec<ResyncOut>,
    ) {
        let Some(s) = self.source() else { return };
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
        if let (Some(theirs), Ok(extents), Some(alg)) = (theirs, &result, ctx.csums) {
            // The range stays locked until the reply is sent, so no client write can slip in
            // between this read and the data we send.
            let (data, zeros) = sparse::flatten(offset, extents);
            let hashing = Hashing {
                offset,
                data: data.clone(),
                theirs,
            };
            s.hash(id, hashing);
            s.zeros.insert(id, zeros);
            out.push(ResyncOut::Hash { id, alg, data });
            return;
        }
        // A digest-less fallback (no csums-alg here, or the read failed) unlocks now.
        let _ = s.hashed(id);
        let len = u32::try_from(end - offset).unwrap_or(u32::MAX);
        match result {
            Ok(extents) => {
                // Resynced bytes, whether they go as data or as a zero range (see
                // `write_done`).
                out.push(ResyncOut::Count(Moved {
                    dr_kib: u64::from(len) / 1024,
                    ns_kib: u64::from(len) / 1024,
                    ..Moved::default()
                }));
                let mut at = offset;
                for x in extents {
                    let n = x.len();
                    match x {
                        Extent::Data(data) if !data.is_empty() => {
                            out.push(ResyncOut::Send(Packet::RsData {
                                id,
                                offset: at,
                                data: data.into(),
                            }));
                        }
                        Extent::Zero(z) if z > 0 => out.push(ResyncOut::Send(Packet::RsZero {
                            id,
                            offset: at,
                            len: z,
                        })),
                        _ => {}
                    }
                    at += n;
                }
            }
            Err(e) => {
                out.push(ResyncOut::Error(format!(
                    "resync read at {offset} failed: {}",
                    e.message
                )));
                out.push(ResyncOut::Send(Packet::RsNegAck { id, offset, len }));
            }
        }
        out.push(ResyncOut::AdmitWaiting);
    }

    /// SyncSource with csums-alg: our digests of request `id` are in (`mine`); send only the
    /// runs of blocks whose digests differ, and clear the bits of those that match.
    pub(crate) fn hashed(
        &mut self,
        ctx: &Ctx,
        id: u64,
        mine: &[u8],
        mut bm: Option<&mut Bitmap>,
        out: &mut Vec<ResyncOut>,
    ) {
        let Some((
            Hashing {
                offset,
                data,
                theirs,
            },
            zeros,
        )) = self
            .source()
            .and_then(|s| Some((s.hashed(id)?, s.zeros.remove(&id).unwrap_or_default())))
        else {
            return;
        };
        let dlen = ctx.csums.map_or(20, HashAlg::digest_len);
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
                if let Some(bm) = bm.as_deref_mut() {
                    bm.clear_range(off, u64::from(len));
                }
                out.push(ResyncOut::Send(Packet::RsInSync {
                    id,
                    offset: off,
                    len,
                }));
            } else {
                // What differs goes as data, except where it reads as zeroes here.
                out.push(ResyncOut::Count(Moved {
                    ns_kib: u64::from(len) / 1024,
                    ..Moved::default()
                }));
                for (from, to, zero) in sparse::pieces(off, off + u64::from(len), &zeros) {
                    out.push(ResyncOut::Send(piece(id, offset, &data, (from, to), zero)));
                }
            }
            b = e;
        }
        out.push(ResyncOut::AdmitWaiting);
    }

    /// SyncSource: the target has the block (or could not write it). Returns whether it
    /// counts as acknowledged resync data (the limiter's gauge).
    pub(crate) fn acked(
        &mut self,
        cstate: ConnState,
        (offset, len): (u64, u32),
        ok: bool,
        bm: Option<&mut Bitmap>,
    ) -> bool {
        if !matches!(cstate, ConnState::SyncSource | ConnState::PausedSyncS) {
            return false;
        }
        if let Some(rs) = self.run.as_mut() {
            rs.gauge.acked += u64::from(len);
        }
        if let (true, Some(bm)) = (ok, bm) {
            bm.clear_range(offset, u64::from(len));
        }
        true
    }

    /// Pause or resume for `reason`: `pause-sync` here, the peer's pause, or `resync-after`.
    pub(crate) fn set_paused(
        &mut self,
        cstate: ConnState,
        paused: bool,
        reason: PauseReason,
    ) -> Result<(), Refusal> {
        let Some(rs) = self.run.as_mut() else {
            return Err(Refusal::NoResync { cstate });
        };
        rs.pause.set(reason, paused);
        Ok(())
    }

    /// The cstate the pause reasons give from `cstate`, and whether to tell the peer that our
    /// own pause changed. `None` without a resync.
    pub(crate) fn pause_step(&mut self, cstate: ConnState) -> Option<(ConnState, Option<bool>)> {
        let rs = self.run.as_mut()?;
        let pause = rs.pause.paused();
        let tell = rs.pause.news_for_peer();
        let next = match cstate {
            ConnState::SyncSource | ConnState::PausedSyncS if pause => ConnState::PausedSyncS,
            ConnState::SyncSource | ConnState::PausedSyncS => ConnState::SyncSource,
            ConnState::SyncTarget | ConnState::PausedSyncT if pause => ConnState::PausedSyncT,
            ConnState::SyncTarget | ConnState::PausedSyncT => ConnState::SyncTarget,
            other => other,
        };
        Some((next, tell))
    }

    /// What `status` shows of the running resync.
    pub(crate) fn info(
        &self,
        now: Instant,
        left_bits: u64,
        pace: &Pace,
        last_app_write: Option<Instant>,
    ) -> Option<ResyncInfo> {
        let rs = self.run.as_ref()?;
        Some(ResyncInfo {
            total_bits: rs.total_bits,
            left_bits,
            elapsed: rs
                .started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
            rate_kib: pace.want_kib(now, last_app_write),
            current_kib: rs.gauge.current_kib(now, left_bits),
            limit: rs.gauge.limit.map(|l| {
                let target = matches!(rs.side, Side::Target(_));
                crate::core::sync::limit::LimitInfo::new(l, pace, target)
            }),
        })
    }

    /// When the rate limit lets the SyncTarget ask for more (only while it may ask).
    pub(crate) fn wake(&self, cstate: ConnState) -> Option<Instant> {
        if cstate != ConnState::SyncTarget {
            return None;
        }
        self.run.as_ref().and_then(Resync::wake)
    }
}

/// One piece of a differing run: a zero range, or the data read (always within the request,
/// 1 MiB; were it not, a refusal still answers that part of the request).
fn piece(id: u64, offset: u64, data: &[u8], (from, to): (u64, u64), zero: bool) -> Packet {
    let n = u32::try_from(to - from).unwrap_or(u32::MAX);
    if zero {
        return Packet::RsZero {
            id,
            offset: from,
            len: n,
        };
    }
    let at = |x: u64| usize::try_from(x - offset).ok();
    match at(from).zip(at(to)).and_then(|(a, z)| data.get(a..z)) {
        Some(piece) => Packet::RsData {
            id,
            offset: from,
            data: bytes::Bytes::copy_from_slice(piece),
        },
        None => Packet::RsNegAck {
            id,
            offset: from,
            len: n,
        },
    }
}

#[cfg(test)]
#[path = "resync_machine_tests.rs"]
mod tests;
