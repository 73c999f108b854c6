//! The Primary's transfer log (DRBD's `tl_*`): replicated writes grouped in epochs closed by
//! barriers. Until the peer acknowledges an epoch's barrier (its writes are on the peer's
//! stable storage) the epoch's ranges are kept, so a lost link marks exactly them out of sync;
//! FLUSH requests wait for the barrier of their epoch, and the activity-log extents of
//! completed writes stay referenced until then (see `park_extents`).
//!
//! An epoch is also closed once it is [`EPOCH_MAX_AGE`] old, as DRBD's sender closes the
//! current epoch whenever it runs idle: otherwise an epoch left open by a load without
//! FLUSHes (up to `max-epoch-size` writes, gigabytes with 1 MiB writes) would all be marked out
//! of sync, and resynced, when the link drops long after the peer acknowledged it.
//!
//! Pure bookkeeping: the engine sends the barriers it is told to and completes the requests
//! it gets back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::held::HeldExtents;
use crate::core::contract::ids::ReqId;

/// How long writes may sit in an open epoch before a barrier closes it. Bounds what a lost link
/// marks out of sync beyond the writes really in flight, at the cost of one peer flush per
/// interval under a steady load.
pub(crate) const EPOCH_MAX_AGE: Duration = Duration::from_millis(20);

/// A byte range `(start, len)` written in an epoch.
pub(crate) type Range = (u64, u64);

#[derive(Debug, Default)]
pub(crate) struct TransferLog {
    epoch: u32,
    epoch_writes: u32,
    /// Ranges written in the open epoch.
    open: Vec<Range>,
    /// When the first write of the open epoch was sent.
    open_since: Option<Instant>,
    /// Closed epochs not yet acknowledged by a BarrierAck.
    closed: VecDeque<(u32, Vec<Range>)>,
    /// FLUSH requests waiting for the BarrierAck of an epoch.
    flushes: Vec<(u32, ReqId)>,
    /// Activity-log extents of completed writes whose epoch the peer has not acknowledged.
    parked: Vec<(u32, HeldExtents)>,
}

/// What a BarrierAck settled.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Acked {
    /// FLUSH requests whose epochs are all on the peer's disk now.
    pub flushes: Vec<ReqId>,
    /// Activity-log references that may be given back.
    pub extents: Vec<u64>,
}

/// What a lost link leaves: every range the peer may not have, and every parked extent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Cleared {
    pub ranges: Vec<Range>,
    pub extents: Vec<u64>,
}

/// Whether writes of `epoch` still wait for the peer: it is the `current` epoch and that one
/// has writes (`open`), or it is closed and not acknowledged.
fn epoch_unacked(
    current: u32,
    open: bool,
    closed: &VecDeque<(u32, Vec<Range>)>,
    epoch: u32,
) -> bool {
    epoch == current && open || closed.iter().any(|(e, _)| *e == epoch)
}

impl TransferLog {
    /// A write sent in the open epoch; returns that epoch and, if the write filled it
    /// (`max-epoch-size`), the epoch whose barrier must be sent now.
    pub(crate) fn record_write(
        &mut self,
        now: Option<Instant>,
        range: Range,
        max_epoch_size: u32,
    ) -> (u32, Option<u32>) {
        let epoch = self.epoch;
        if self.open.is_empty() {
            self.open_since = now;
        }
        self.open.push(range);
        self.epoch_writes += 1;
        let full = (self.epoch_writes >= max_epoch_size.max(1)).then(|| self.close_epoch());
        (epoch, full)
    }

    /// A FLUSH: closes the open epoch (returned: send its barrier) and waits for its ack.
    pub(crate) fn record_flush(&mut self, req: ReqId) -> u32 {
        let epoch = self.close_epoch();
        self.flushes.push((epoch, req));
        epoch
    }

    /// Close the open epoch; returns its number, whose barrier the engine sends.
    pub(crate) fn close_epoch(&mut self) -> u32 {
        let epoch = self.epoch;
        let ranges = std::mem::take(&mut self.open);
        self.open_since = None;
        self.closed.push_back((epoch, ranges));
        self.epoch = epoch.wrapping_add(1);
        self.epoch_writes = 0;
        epoch
    }

    /// When the open epoch is due to be closed by the idle rule.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.open_since.map(|t| t + EPOCH_MAX_AGE)
    }

    /// Epochs closed and not yet acknowledged (`ep:` in /proc/drbd).
    pub(crate) fn unacked(&self) -> usize {
        self.closed.len()
    }

    /// Some replicated write is not yet known to be on the peer's stable storage (an open
    /// epoch with writes, or a closed one without its BarrierAck).
    pub(crate) fn waits_for_peer(&self) -> bool {
        !self.open.is_empty() || !self.closed.is_empty()
    }

    /// The peer has everything up to and including `epoch` on stable storage. `None`: an
    /// epoch a later ack already covered (the peer's flushes may complete out of order).
    pub(crate) fn barrier_acked(&mut self, epoch: u32) -> Option<Acked> {
        if !self.closed.iter().any(|(e, _)| *e == epoch) {
            return None;
        }
        while let Some((e, _)) = self.closed.pop_front() {
            if e == epoch {
                break;
            }
        }
        let mut acked = Acked::default();
        let (current, open, closed) = (self.epoch, !self.open.is_empty(), &self.closed);
        let unacked = |e: u32| epoch_unacked(current, open, closed, e);
        self.flushes.retain(|&(e, req)| {
            let keep = unacked(e);
            if !keep {
                acked.flushes.push(req);
            }
            keep
        });
        self.parked.retain(|&(e, x)| {
            let keep = unacked(e);
            if !keep {
                acked.extents.extend(x);
            }
            keep
        });
        Some(acked)
    }

    /// A write of `epoch` completed holding activity-log `extents`: they stay referenced while
    /// the epoch is unacknowledged (the write may exist only in the peer's volatile cache, and
    /// if both nodes lose power the replay of this node's AL is what resyncs it; DRBD frees
    /// them only after the barrier ack). Returns the extents to give back now, if any.
    pub(crate) fn park_extents(&mut self, epoch: Option<u32>, extents: HeldExtents) -> HeldExtents {
        if extents.is_empty() {
            return extents;
        }
        match epoch.filter(|&e| self.is_unacked(e)) {
            Some(e) => {
                self.parked.push((e, extents));
                HeldExtents::default()
            }
            None => extents,
        }
    }

    /// Parked extents, for the AL invariant checks.
    pub(crate) fn parked_extents(&self) -> impl Iterator<Item = u64> + '_ {
        self.parked.iter().flat_map(|(_, x)| x.iter())
    }

    /// Whether writes of `epoch` still wait for the peer's stable storage.
    fn is_unacked(&self, epoch: u32) -> bool {
        epoch_unacked(self.epoch, !self.open.is_empty(), &self.closed, epoch)
    }

    /// The link is gone (DRBD's tl_clear): everything not acknowledged is returned to be marked
    /// out of sync, waiting FLUSHes are forgotten (their requests complete on the local
    /// result), and parked extents may go (their bits are set).
    pub(crate) fn clear(&mut self) -> Cleared {
        let mut ranges = std::mem::take(&mut self.open);
        self.open_since = None;
        for (_, r) in self.closed.drain(..) {
            ranges.extend(r);
        }
        self.flushes.clear();
        let extents = self.parked.drain(..).flat_map(|(_, x)| x).collect();
        Cleared { ranges, extents }
    }

    /// The activity log is gone with the disk: parked references go with it.
    pub(crate) fn forget_extents(&mut self) {
        self.parked.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn an_epoch_closes_when_full_or_aged() {
        let now = t0();
        let mut tl = TransferLog::default();
        assert_eq!(tl.record_write(Some(now), (0, 4096), 2), (0, None));
        assert_eq!(tl.deadline(), Some(now + EPOCH_MAX_AGE));
        assert_eq!(tl.record_write(Some(now), (4096, 4096), 2), (0, Some(0)));
        assert_eq!(tl.deadline(), None, "a closed epoch has no deadline");
        assert_eq!(tl.record_write(Some(now), (0, 512), 2), (1, None));
        assert_eq!(tl.close_epoch(), 1);
        assert_eq!(tl.unacked(), 2);
    }

    #[test]
    fn a_barrier_ack_completes_the_flushes_and_extents_of_its_epochs_only() {
        let mut tl = TransferLog::default();
        let (e0, _) = tl.record_write(None, (0, 4096), 100);
        assert!(tl.park_extents(Some(e0), HeldExtents::run(7, 1)).is_empty());
        assert_eq!(tl.record_flush(ReqId(1)), 0);
        let (e1, _) = tl.record_write(None, (8192, 4096), 100);
        assert!(tl.park_extents(Some(e1), HeldExtents::run(9, 1)).is_empty());
        assert_eq!(tl.record_flush(ReqId(2)), 1);
        let a = tl.barrier_acked(0).unwrap_or_default();
        assert_eq!(a.flushes, vec![ReqId(1)]);
        assert_eq!(a.extents, vec![7]);
        assert!(tl.barrier_acked(0).is_none(), "an ack already covered");
        let a = tl.barrier_acked(1).unwrap_or_default();
        assert_eq!((a.flushes, a.extents), (vec![ReqId(2)], vec![9]));
    }

    #[test]
    fn a_later_ack_covers_earlier_epochs() {
        let mut tl = TransferLog::default();
        let _ = tl.record_write(None, (0, 1), 100);
        tl.record_flush(ReqId(1));
        let _ = tl.record_write(None, (1, 1), 100);
        tl.record_flush(ReqId(2));
        let a = tl.barrier_acked(1).unwrap_or_default();
        assert_eq!(a.flushes, vec![ReqId(1), ReqId(2)]);
        assert!(tl.barrier_acked(0).is_none());
        assert_eq!(tl.unacked(), 0);
    }

    #[test]
    fn extents_of_an_acknowledged_epoch_are_given_back_at_once() {
        let mut tl = TransferLog::default();
        let (e, _) = tl.record_write(None, (0, 1), 100);
        tl.close_epoch();
        tl.barrier_acked(e);
        assert_eq!(
            tl.park_extents(Some(e), HeldExtents::run(3, 1)),
            HeldExtents::run(3, 1)
        );
        assert_eq!(
            tl.park_extents(None, HeldExtents::run(4, 1)),
            HeldExtents::run(4, 1)
        );
    }

    #[test]
    fn a_lost_link_returns_every_unacknowledged_range() {
        let mut tl = TransferLog::default();
        let (e, _) = tl.record_write(None, (0, 10), 100);
        tl.close_epoch();
        let _ = tl.record_write(None, (100, 10), 100);
        tl.park_extents(Some(e), HeldExtents::run(1, 2));
        tl.record_flush(ReqId(5));
        let c = tl.clear();
        assert_eq!(c.ranges, vec![(0, 10), (100, 10)]);
        assert_eq!(c.extents, vec![1, 2]);
        assert_eq!(tl.unacked(), 0);
        assert!(tl.barrier_acked(0).is_none());
    }
}
