//! The state of one resync (docs/drbd-semantics.md §8.1), owned in one place: what both sides share
//! (start, size, pause reasons), the SyncTarget's walk over its bitmap with its requests in
//! flight, and the SyncSource's reads for the peer. Dropping a `Resync` aborts all of it.
//!
//! Pure: the engine glue in `resync.rs` turns what these return into packets and disk reads.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::core::sync::limit::Stop;
use crate::meta::bitmap::Bitmap;
use crate::meta::layout::BITMAP_BLOCK_BYTES;

/// Resync requests in flight at once (each ≤ `REQUEST_BYTES`).
pub(crate) const WINDOW: usize = 32;
pub(crate) const REQUEST_BYTES: u64 = 1024 * 1024;
/// The rate limit allows this much ahead of the average before it throttles.
const BURST_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    /// `pause-sync` here.
    User,
    /// The peer paused (its `pause-sync`, or its `resync-after`).
    Peer,
    /// `resync-after`: the resource we follow is resyncing.
    After,
}

/// Why a resync is paused; it runs when none is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pause {
    here: bool,
    peer: bool,
    after: bool,
    /// What we last told the peer about our own reasons.
    told_peer: bool,
}

impl Pause {
    pub(crate) fn set(&mut self, reason: PauseReason, on: bool) {
        match reason {
            PauseReason::User => self.here = on,
            PauseReason::Peer => self.peer = on,
            PauseReason::After => self.after = on,
        }
    }
    pub(crate) fn paused(&self) -> bool {
        self.here || self.after || self.peer
    }
    /// Our own reasons changed since we last told the peer: tell it (`SyncPause { paused }`).
    pub(crate) fn news_for_peer(&mut self) -> Option<bool> {
        let local = self.here || self.after;
        (self.told_peer != local).then(|| {
            self.told_peer = local;
            local
        })
    }
}

/// A request of the SyncTarget in flight: its range and the bytes still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    offset: u64,
    len: u64,
    left: u64,
}

/// The SyncTarget's walk: it asks for runs of out-of-sync blocks within the rate limit.
#[derive(Debug, Default)]
pub(crate) struct ResyncTarget {
    cursor: u64,
    in_flight: HashMap<u64, Asked>,
    next_id: u64,
    /// Bytes asked for so far (the rate limit's measure).
    requested: u64,
    /// Throttled until then.
    wake: Option<Instant>,
    /// Why the last `next_requests` asked for no more (the resync's limiter, `limit.rs`).
    pub(crate) stop: Stop,
}

/// A SyncSource read that completed: its range, and the target's digests if it sent some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceRead {
    pub offset: u64,
    pub end: u64,
    pub theirs: Option<Vec<u8>>,
}

/// A SyncSource read being hashed (csums-alg): the data and the target's digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hashing {
    pub offset: u64,
    pub data: Vec<u8>,
    pub theirs: Vec<u8>,
}

/// The SyncSource's side: the target's requests waiting for a read, reads in flight (client
/// writes to their ranges wait, so the block sent is never older than a write sent before it),
/// and with csums-alg the target's digests.
#[derive(Debug, Default)]
pub(crate) struct ResyncSource {
    waiting: VecDeque<(u64, u64, u32)>,
    reading: HashMap<u64, (u64, u64)>,
    /// The target's digests of its copy, by request id.
    expected: HashMap<u64, Vec<u8>>,
    /// Data read and being hashed (csums-alg), by request id.
    hashing: HashMap<u64, Hashing>,
    /// The zero runs of the data being hashed (sent as `RsZero` where the digests differ).
    pub(crate) zeros: HashMap<u64, Vec<(u64, u64)>>,
}

#[derive(Debug)]
pub(crate) enum Side {
    Target(ResyncTarget),
    Source(ResyncSource),
}

/// One resync, from the handshake's decision until it finishes or the link goes.
#[derive(Debug)]
pub(crate) struct Resync {
    pub started: Option<Instant>,
    pub total_bits: u64,
    pub pause: Pause,
    pub side: Side,
    /// Rate marks and what limits the resync (`limit.rs`).
    pub(crate) gauge: crate::core::sync::limit::Gauge,
}

/// What `status` shows about a running resync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncInfo {
    pub total_bits: u64,
    pub left_bits: u64,
    pub elapsed: Duration,
    pub rate_kib: u64,
    /// KiB/s over the last few seconds (`None` in the first second).
    pub current_kib: Option<u64>,
    /// What limits it now (`None` until the first verdict, a second in).
    pub limit: Option<crate::core::sync::limit::LimitInfo>,
}

impl Resync {
    pub(crate) fn new(side: Side, started: Option<Instant>, total_bits: u64) -> Resync {
        Resync {
            started,
            total_bits,
            pause: Pause::default(),
            side,
            gauge: Default::default(),
        }
    }
    pub(crate) fn target(&mut self) -> Option<&mut ResyncTarget> {
        match &mut self.side {
            Side::Target(t) => Some(t),
            Side::Source(_) => None,
        }
    }
    pub(crate) fn is_source(&self) -> bool {
        matches!(self.side, Side::Source(_))
    }
    pub(crate) fn source(&mut self) -> Option<&mut ResyncSource> {
        match &mut self.side {
            Side::Source(s) => Some(s),
            Side::Target(_) => None,
        }
    }
    pub(crate) fn wake(&self) -> Option<Instant> {
        match &self.side {
            Side::Target(t) => t.wake,
            Side::Source(_) => None,
        }
    }
    /// Client writes to `[start, end)` wait while a resync read of it is in flight.
    pub(crate) fn reading_overlaps(&self, start: u64, end: u64) -> bool {
        match &self.side {
            Side::Source(s) => s.reading.values().any(|&(o, e)| o < end && start < e),
            Side::Target(_) => false,
        }
    }
}

/// What the SyncTarget may ask for now, from its rate limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Bytes per second.
    pub rate: u64,
    /// Bytes in flight at most (the controller's fill target), or the window only.
    pub in_flight: Option<u64>,
    /// The device's usable size: the bitmap may cover more.
    pub usable_bytes: u64,
}

impl ResyncTarget {
    /// The next requests `(id, offset, len)` that keep the window full within the budget:
    /// runs of set bits from the cursor on (wrapping once), never overlapping a request in
    /// flight. When the rate limit stops it, `wake` says when to try again.
    pub(crate) fn next_requests(
        &mut self,
        now: Instant,
        started: Instant,
        bm: &Bitmap,
        budget: Budget,
    ) -> Vec<(u64, u64, u32)> {
        let device_bits = budget.usable_bytes.div_ceil(BITMAP_BLOCK_BYTES);
        let mut requests = Vec::new();
        let mut rescanned = false;
        let mut throttled = false;
        let mut in_flight_bytes: u64 = self.in_flight.values().map(|a| a.left).sum();
        let max_request = budget
            .in_flight
            .map_or(REQUEST_BYTES, |b| b.min(REQUEST_BYTES))
            / BITMAP_BLOCK_BYTES;
        while self.in_flight.len() < WINDOW && budget.in_flight.is_none_or(|b| in_flight_bytes < b)
        {
            // Integer arithmetic in nanoseconds: bytes × ns / 10⁹ fits a u128 for any rate.
            let elapsed = now.saturating_duration_since(started).as_nanos();
            let rate = u128::from(budget.rate.max(1));
            let earned = u64::try_from(rate * elapsed / 1_000_000_000).unwrap_or(u64::MAX);
            let allowed = earned.saturating_add(BURST_BYTES);
            if self.requested >= allowed {
                let owed = u128::from(self.requested.saturating_sub(BURST_BYTES));
                let due = u64::try_from(owed * 1_000_000_000 / rate).unwrap_or(u64::MAX);
                self.wake = Some(started + Duration::from_nanos(due) + Duration::from_millis(1));
                throttled = true;
                break;
            }
            self.wake = None;
            let cursor = self.cursor;
            let next = bm
                .runs()
                .map(|r| r.start.max(cursor)..r.end)
                .find(|r| r.start < r.end && r.start < device_bits);
            let Some(run) = next else {
                if !rescanned && self.cursor > 0 {
                    self.cursor = 0;
                    rescanned = true;
                    continue;
                }
                break;
            };
            let end_bit = run.end.min(device_bits).min(run.start + max_request.max(1));
            let busy = self.in_flight.values().any(|a| {
                a.offset < end_bit * BITMAP_BLOCK_BYTES
                    && run.start * BITMAP_BLOCK_BYTES < a.offset + a.len
            });
            self.cursor = end_bit;
            if busy {
                continue;
            }
            let offset = run.start * BITMAP_BLOCK_BYTES;
            let len = (end_bit * BITMAP_BLOCK_BYTES).min(budget.usable_bytes) - offset;
            self.next_id += 1;
            let id = self.next_id;
            self.requested += len;
            in_flight_bytes += len;
            self.in_flight.insert(
                id,
                Asked {
                    offset,
                    len,
                    left: len,
                },
            );
            // A request is at most REQUEST_BYTES (1 MiB), which fits a u32.
            requests.push((id, offset, u32::try_from(len).unwrap_or(u32::MAX)));
        }
        // The rate limit binds when its bytes are spent, whichever check ended this round: it
        // lets one request overshoot, after which the plan or the window may look full.
        let elapsed = now.saturating_duration_since(started).as_nanos();
        let earned = u128::from(budget.rate.max(1)) * elapsed / 1_000_000_000;
        let spent = u128::from(self.requested) >= earned + u128::from(BURST_BYTES);
        self.stop = if throttled || spent {
            Stop::Rate
        } else if self.in_flight.len() >= WINDOW {
            Stop::Window
        } else if budget.in_flight.is_some_and(|b| in_flight_bytes >= b) {
            Stop::Plan
        } else {
            Stop::AllAsked
        };
        requests
    }

    /// Bytes asked for and not answered yet.
    pub(crate) fn outstanding_bytes(&self) -> u64 {
        self.in_flight.values().map(|a| a.left).sum()
    }

    /// A reply (data or "in sync") must lie inside a request still in flight.
    pub(crate) fn reply_fits(&self, id: u64, offset: u64, len: u64) -> bool {
        self.in_flight.get(&id).is_some_and(|a| {
            offset >= a.offset && offset + len <= a.offset + a.len && len <= a.left && len > 0
        })
    }

    /// `len` bytes of request `id` were answered.
    pub(crate) fn progress(&mut self, id: u64, len: u64) {
        if let Some(a) = self.in_flight.get_mut(&id) {
            a.left = a.left.saturating_sub(len);
            if a.left == 0 {
                self.in_flight.remove(&id);
            }
        }
    }

    pub(crate) fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}

impl ResyncSource {
    /// Bytes the target asked for that wait for a read here (or for its digests).
    pub(crate) fn pending_read_bytes(&self) -> u64 {
        let waiting: u64 = self.waiting.iter().map(|w| u64::from(w.2)).sum();
        let reading: u64 = self.reading.values().map(|r| r.1 - r.0).sum();
        waiting + reading
    }

    /// The target asked for `[offset, offset+len)` (with its digests under csums-alg).
    pub(crate) fn request(&mut self, id: u64, offset: u64, len: u32, digest: Vec<u8>) {
        if !digest.is_empty() {
            self.expected.insert(id, digest);
        }
        self.waiting.push_back((id, offset, len));
    }

    /// Requests whose read may start now (`may_start`: no client write to the range is
    /// admitted or waiting), in arrival order; they count as reading until `read_done`.
    pub(crate) fn startable(
        &mut self,
        may_start: impl Fn(u64, u64) -> bool,
    ) -> Vec<(u64, u64, u32)> {
        let mut start = Vec::new();
        let mut still = VecDeque::new();
        while let Some((id, offset, len)) = self.waiting.pop_front() {
            let end = offset + u64::from(len);
            if may_start(offset, end) {
                self.reading.insert(id, (offset, end));
                start.push((id, offset, len));
            } else {
                still.push_back((id, offset, len));
            }
        }
        self.waiting = still;
        start
    }

    /// The read for request `id` completed: its range, and the target's digests if it sent
    /// some. The range stays locked while the digests are compared (`hash`).
    pub(crate) fn read_done(&mut self, id: u64) -> Option<SourceRead> {
        let (offset, end) = *self.reading.get(&id)?;
        let theirs = self.expected.remove(&id);
        if theirs.is_none() {
            self.reading.remove(&id);
        }
        Some(SourceRead {
            offset,
            end,
            theirs,
        })
    }

    /// Keep the data read for `id` while its digests are computed.
    pub(crate) fn hash(&mut self, id: u64, h: Hashing) {
        self.hashing.insert(id, h);
    }

    /// The digests of `id`'s read are in: the data and the target's digests; the range unlocks.
    pub(crate) fn hashed(&mut self, id: u64) -> Option<Hashing> {
        self.reading.remove(&id);
        self.hashing.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap_with(bits: &[(u64, u64)], total_bytes: u64) -> Bitmap {
        let mut bm = Bitmap::new(total_bytes);
        for &(start, len) in bits {
            bm.set_range(start, len);
        }
        bm
    }

    fn budget(usable: u64) -> Budget {
        Budget {
            rate: 1 << 40,
            in_flight: None,
            usable_bytes: usable,
        }
    }

    #[test]
    fn the_target_asks_for_runs_of_set_bits_in_requests_of_at_most_1_mib() {
        let now = Instant::now();
        let bm = bitmap_with(&[(0, 3 << 20), (8 << 20, 4096)], 16 << 20);
        let mut t = ResyncTarget::default();
        let reqs = t.next_requests(now, now, &bm, budget(16 << 20));
        assert_eq!(
            reqs.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
            vec![
                (0, 1 << 20),
                (1 << 20, 1 << 20),
                (2 << 20, 1 << 20),
                (8 << 20, 4096)
            ]
        );
        assert!(
            t.next_requests(now, now, &bm, budget(16 << 20)).is_empty(),
            "all asked"
        );
        assert!(t.reply_fits(reqs[3].0, 8 << 20, 4096));
        assert!(
            !t.reply_fits(reqs[3].0, 8 << 20, 8192),
            "beyond the request"
        );
        t.progress(reqs[3].0, 4096);
        assert!(!t.reply_fits(reqs[3].0, 8 << 20, 4096), "answered already");
    }

    #[test]
    fn the_rate_limit_throttles_and_says_when_to_wake() {
        let now = Instant::now();
        let bm = bitmap_with(&[(0, 64 << 20)], 64 << 20);
        let mut t = ResyncTarget::default();
        let b = Budget {
            rate: 1 << 20,
            in_flight: None,
            usable_bytes: 64 << 20,
        };
        let first = t.next_requests(now, now, &bm, b);
        let asked: u64 = first.iter().map(|r| u64::from(r.2)).sum();
        assert!(
            (BURST_BYTES..=BURST_BYTES + REQUEST_BYTES).contains(&asked),
            "{asked}"
        );
        assert!(t.wake.is_some_and(|w| w > now));
    }

    #[test]
    fn the_source_locks_a_range_until_its_block_is_sent() {
        let mut s = ResyncSource::default();
        s.request(1, 0, 4096, Vec::new());
        s.request(2, 8192, 4096, vec![1, 2, 3]);
        let busy = 8192u64;
        assert_eq!(s.startable(|o, _| o != busy), vec![(1, 0, 4096)]);
        assert_eq!(s.startable(|_, _| true), vec![(2, 8192, 4096)]);
        let r = Resync::new(Side::Source(s), None, 0);
        assert!(r.reading_overlaps(0, 1));
        let Side::Source(mut s) = r.side else { return };
        let plain = SourceRead {
            offset: 0,
            end: 4096,
            theirs: None,
        };
        assert_eq!(s.read_done(1), Some(plain));
        let digests = s
            .read_done(2)
            .and_then(|r| (r.offset == 8192).then_some(r.theirs));
        assert_eq!(digests, Some(Some(vec![1, 2, 3])));
        s.hash(
            2,
            Hashing {
                offset: 8192,
                data: vec![0; 4096],
                theirs: vec![1, 2, 3],
            },
        );
        let r = Resync::new(Side::Source(s), None, 0);
        assert!(r.reading_overlaps(8192, 8193), "locked while hashing");
        let Side::Source(mut s) = r.side else { return };
        assert!(s.hashed(2).is_some());
        assert!(s.reading.is_empty());
    }

    #[test]
    fn pause_reasons_add_up_and_the_peer_hears_only_about_ours() {
        let mut p = Pause::default();
        p.set(PauseReason::Peer, true);
        assert!(p.paused());
        assert_eq!(p.news_for_peer(), None);
        p.set(PauseReason::User, true);
        assert_eq!(p.news_for_peer(), Some(true));
        p.set(PauseReason::After, true);
        p.set(PauseReason::User, false);
        assert_eq!(p.news_for_peer(), None, "still paused by resync-after");
        p.set(PauseReason::After, false);
        assert_eq!(p.news_for_peer(), Some(false));
        p.set(PauseReason::Peer, false);
        assert!(!p.paused());
    }
}
