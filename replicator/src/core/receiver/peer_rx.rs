//! The receiving side of replication (DRBD's receiver): the peer's writes, resync blocks and
//! reads are applied in arrival order where they overlap (FIFO, like the Primary's admission;
//! non-overlapping ones run in parallel), and a barrier is flushed once every operation
//! received before it completed.
//!
//! Pure bookkeeping: the engine scans the queue for operations that may start (`scan`), gates
//! each (activity log, when this node holds the only copy), and issues it; completions come
//! back by sequence number.

use std::collections::VecDeque;

use crate::core::contract::ids::LinkId;
use crate::core::contract::io::PeerDiskOp;
use crate::core::request::held::HeldExtents;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxKind {
    /// A client write replicated by the Primary.
    App { id: u64 },
    /// A resync block on the SyncTarget.
    Resync { id: u64 },
    /// A read for a Diskless Primary, ordered after the writes it sent before it.
    Read { id: u64 },
}

#[derive(Debug)]
pub(crate) struct RxOp {
    pub seq: u64,
    pub start: u64,
    pub end: u64,
    pub link: LinkId,
    pub kind: RxKind,
    /// The disk operation, until it is issued.
    pub op: Option<PeerDiskOp>,
    /// Activity-log extents held while we hold the only copy of a peer write.
    pub al_held: HeldExtents,
    /// It was gated as the only copy (its bits are set): it stays gated by the activity log
    /// when the link is lost before it is issued.
    pub only_copy: bool,
}

impl RxOp {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

#[derive(Debug, Default)]
pub(crate) struct PeerRx {
    next_seq: u64,
    /// Sequence numbers received and not yet completed (barriers wait for the older ones).
    outstanding: Outstanding,
    /// Issued operations, in sequence order (issued mostly in order, completed mostly in
    /// order: inserts and removals are near the ends).
    in_flight: VecDeque<RxOp>,
    waiting: VecDeque<RxOp>,
    /// Barrier epochs waiting for every operation with a smaller sequence number.
    barriers: VecDeque<(u32, u64, LinkId)>,
    /// A barrier flush failed on this link: no later BarrierAck may claim the epochs before it
    /// durable (a later fdatasync succeeds although the earlier write-back was lost).
    flush_failed: Option<LinkId>,
    /// The pass over `waiting` under way (`begin_scan` .. `end_scan`): the position of the
    /// next operation to look at; operations before it are held back, and their ranges are in
    /// `blocked`. The queue stays where it is: a pass moves only what it issues.
    scan: Option<usize>,
    blocked: Vec<(u64, u64)>,
    /// Bytes of the operations queued, being scanned or in flight (kept, not summed: the
    /// driver asks after every input whether to stop reading the data socket).
    bytes: u64,
}

/// The sequence numbers received and not completed, in order (they are handed out in
/// increasing order, so appending keeps the queue sorted). Completions come mostly in order,
/// so a removal is mostly at the front; a barrier's question (anything older outstanding?) is
/// a look at the front. Holds only what is outstanding: memory follows the backlog, however
/// long one straggler takes (this runs for every packet of the peer).
#[derive(Debug, Default)]
struct Outstanding {
    seqs: VecDeque<u64>,
}

impl Outstanding {
    /// `seq` is the next sequence number handed out.
    fn insert(&mut self, seq: u64) {
        debug_assert!(
            self.seqs.back().is_none_or(|&b| b < seq),
            "sequence out of order"
        );
        self.seqs.push_back(seq);
    }

    fn remove(&mut self, seq: u64) {
        if let Ok(at) = self.seqs.binary_search(&seq) {
            self.seqs.remove(at);
        }
    }

    /// Whether a sequence number below `seq` is outstanding.
    fn any_before(&self, seq: u64) -> bool {
        self.seqs.front().is_some_and(|&f| f < seq)
    }

    fn count(&self) -> usize {
        self.seqs.len()
    }
}

impl PeerRx {
    /// Queue an operation of the peer; returns its sequence number.
    pub(crate) fn enqueue(
        &mut self,
        link: LinkId,
        kind: RxKind,
        start: u64,
        len: u64,
        op: PeerDiskOp,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding.insert(seq);
        self.bytes += len;
        self.waiting.push_back(RxOp {
            seq,
            start,
            end: start + len,
            link,
            kind,
            op: Some(op),
            al_held: HeldExtents::default(),
            only_copy: false,
        });
        seq
    }

    /// Start a pass over the queue in arrival order: `next_ready` yields each operation that
    /// overlaps nothing in flight and nothing held back earlier in this pass; the caller
    /// `issue`s it or `hold`s it, then calls `end_scan`.
    pub(crate) fn begin_scan(&mut self) {
        debug_assert!(self.scan.is_none(), "nested scan of the peer's queue");
        self.scan = Some(0);
        self.blocked.clear();
    }

    pub(crate) fn next_ready(&mut self) -> Option<RxOp> {
        let at = self.scan.as_mut()?;
        while let Some(w) = self.waiting.get(*at) {
            let conflict = self.in_flight.iter().any(|f| f.overlaps(w.start, w.end))
                || self.blocked.iter().any(|&(s, e)| s < w.end && w.start < e);
            if !conflict {
                return self.waiting.remove(*at);
            }
            self.blocked.push((w.start, w.end));
            *at += 1;
        }
        None
    }

    /// `w` may not start yet (it waits for an activity-log transaction or slot); later
    /// operations overlapping it wait behind it.
    pub(crate) fn hold(&mut self, w: RxOp) {
        if let Some(at) = self.scan.as_mut() {
            self.blocked.push((w.start, w.end));
            self.waiting.insert(*at, w);
            *at += 1;
        }
    }

    /// `w` goes to the disk now; returns its operation.
    pub(crate) fn issue(&mut self, mut w: RxOp) -> Option<PeerDiskOp> {
        let op = w.op.take();
        let at = self.in_flight.partition_point(|f| f.seq < w.seq);
        self.in_flight.insert(at, w);
        op
    }

    pub(crate) fn end_scan(&mut self) {
        self.scan = None;
        self.blocked.clear();
    }

    /// Operation `seq` completed on the disk.
    pub(crate) fn complete(&mut self, seq: u64) -> Option<RxOp> {
        let at = self.in_flight.binary_search_by_key(&seq, |f| f.seq).ok()?;
        let w = self.in_flight.remove(at)?;
        self.outstanding.remove(seq);
        self.bytes -= w.end - w.start;
        Some(w)
    }

    /// A barrier: once everything received before it completed, its epoch is flushed.
    pub(crate) fn barrier(&mut self, epoch: u32, link: LinkId) {
        self.barriers.push_back((epoch, self.next_seq, link));
    }

    /// Barriers whose operations are all done, in order: flush them now.
    pub(crate) fn ready_barriers(&mut self) -> Vec<(u32, LinkId)> {
        let mut ready = Vec::new();
        while let Some(&(epoch, seq, link)) = self.barriers.front() {
            if self.outstanding.any_before(seq) {
                break;
            }
            self.barriers.pop_front();
            ready.push((epoch, link));
        }
        ready
    }

    /// A barrier flush completed; whether its BarrierAck may be sent on `link`.
    pub(crate) fn flushed(&mut self, link: LinkId, ok: bool) -> bool {
        if !ok {
            self.flush_failed = Some(link);
        }
        ok && self.flush_failed != Some(link)
    }

    /// The link is gone. Received writes of the peer's clients stay queued and still go to the
    /// disk, in order: under protocol B the peer may have acknowledged them to its client on
    /// our `RecvAck`, and if the link loss was the peer dying, this is the only copy left (DRBD
    /// never drops a received write either). Resync blocks and reads are dropped (returned, for
    /// their activity-log references): a resync block not written keeps its bit, and nobody
    /// waits for the read any more. Operations already issued complete as usual; barriers of
    /// the lost link are forgotten (nobody can be told).
    pub(crate) fn reset(&mut self) -> Vec<RxOp> {
        let (kept, dropped): (VecDeque<RxOp>, VecDeque<RxOp>) = self
            .waiting
            .drain(..)
            .partition(|w| matches!(w.kind, RxKind::App { .. }));
        self.waiting = kept;
        for w in &dropped {
            self.outstanding.remove(w.seq);
            self.bytes -= w.end - w.start;
        }
        self.barriers.clear();
        dropped.into()
    }

    /// Whether a received write (queued or on its way to the disk) overlaps `[start, end)`: a
    /// local request there must come after it. After a switchover or failover these are the
    /// old Primary's writes, older than anything this node's clients send now.
    pub(crate) fn writes_overlap(&self, start: u64, end: u64) -> bool {
        self.waiting
            .iter()
            .chain(self.in_flight.iter())
            .any(|w| !matches!(w.kind, RxKind::Read { .. }) && w.overlaps(start, end))
    }

    /// Operations received and not completed (`ua:` in /proc/drbd).
    pub(crate) fn unacked(&self) -> usize {
        self.outstanding.count()
    }

    /// Bytes of peer operations received and not yet on disk (queued or in flight).
    pub(crate) fn backlog_bytes(&self) -> u64 {
        self.bytes
    }

    /// `backlog_bytes` summed from the queues, for the invariant checks.
    pub(crate) fn backlog_bytes_recounted(&self) -> u64 {
        self.waiting
            .iter()
            .chain(self.in_flight.iter())
            .map(|w| w.end - w.start)
            .sum()
    }

    /// The activity log is gone with the disk: references into it go too.
    pub(crate) fn forget_extents(&mut self) {
        for w in self.waiting.iter_mut().chain(self.in_flight.iter_mut()) {
            w.al_held = HeldExtents::default();
        }
    }

    /// Activity-log extents held by queued and issued operations, for the invariant checks.
    pub(crate) fn held_extents(&self) -> impl Iterator<Item = u64> + '_ {
        self.waiting
            .iter()
            .chain(self.in_flight.iter())
            .flat_map(|w| w.al_held.iter())
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;

    const L: LinkId = LinkId(1);

    fn write(rx: &mut PeerRx, start: u64, len: u64) -> u64 {
        rx.enqueue(
            L,
            RxKind::App { id: start },
            start,
            len,
            PeerDiskOp::Write {
                offset: start,
                data: vec![0; len as usize].into(),
                fua: false,
            },
        )
    }

    fn issue_all(rx: &mut PeerRx) -> Vec<u64> {
        let mut issued = Vec::new();
        rx.begin_scan();
        while let Some(w) = rx.next_ready() {
            issued.push(w.seq);
            rx.issue(w);
        }
        rx.end_scan();
        issued
    }

    #[test]
    fn overlapping_writes_run_in_arrival_order_others_in_parallel() {
        let mut rx = PeerRx::default();
        let a = write(&mut rx, 0, 4096);
        let b = write(&mut rx, 2048, 4096);
        let c = write(&mut rx, 65536, 4096);
        assert_eq!(issue_all(&mut rx), vec![a, c]);
        assert_eq!(issue_all(&mut rx), Vec::<u64>::new(), "b waits for a");
        assert!(rx.complete(a).is_some());
        assert_eq!(issue_all(&mut rx), vec![b]);
    }

    #[test]
    fn a_held_operation_keeps_later_overlapping_ones_behind_it() {
        let mut rx = PeerRx::default();
        let a = write(&mut rx, 0, 4096);
        let b = write(&mut rx, 0, 512);
        let c = write(&mut rx, 8192, 512);
        rx.begin_scan();
        let first = rx.next_ready();
        assert_eq!(first.as_ref().map(|w| w.seq), Some(a));
        if let Some(w) = first {
            rx.hold(w);
        }
        let second = rx.next_ready();
        assert_eq!(
            second.as_ref().map(|w| w.seq),
            Some(c),
            "b overlaps the held a"
        );
        if let Some(w) = second {
            rx.issue(w);
        }
        assert!(rx.next_ready().is_none());
        rx.end_scan();
        rx.complete(c);
        assert_eq!(issue_all(&mut rx), vec![a], "a first, b still behind it");
        rx.complete(a);
        assert_eq!(issue_all(&mut rx), vec![b]);
    }

    #[test]
    fn outstanding_sequence_numbers_complete_in_any_order() {
        let mut o = Outstanding::default();
        for seq in 5..10 {
            o.insert(seq);
        }
        o.remove(7);
        o.remove(5);
        assert_eq!(o.count(), 3);
        assert!(!o.any_before(6), "5 is done");
        assert!(o.any_before(7), "6 is not");
        o.remove(6);
        assert!(!o.any_before(8), "5, 6 and 7 are done");
        o.remove(7);
        o.remove(3);
        assert_eq!(
            o.count(),
            2,
            "a second or a stale completion changes nothing"
        );
        assert!(o.any_before(9));
        o.remove(9);
        assert!(o.any_before(9), "8 is still out");
        o.remove(8);
        assert_eq!(o.count(), 0);
        assert!(!o.any_before(u64::MAX));
        o.insert(10);
        assert!(o.any_before(11) && !o.any_before(10));
    }

    #[test]
    fn a_barrier_waits_for_everything_received_before_it() {
        let mut rx = PeerRx::default();
        let a = write(&mut rx, 0, 4096);
        rx.barrier(7, L);
        let b = write(&mut rx, 8192, 4096);
        issue_all(&mut rx);
        assert!(rx.ready_barriers().is_empty());
        rx.complete(b);
        assert!(rx.ready_barriers().is_empty(), "b came after the barrier");
        rx.complete(a);
        assert_eq!(rx.ready_barriers(), vec![(7, L)]);
        assert!(rx.flushed(L, true));
    }

    #[test]
    fn after_a_failed_flush_no_barrier_of_that_link_is_acknowledged() {
        let mut rx = PeerRx::default();
        rx.barrier(1, L);
        rx.barrier(2, L);
        assert_eq!(rx.ready_barriers().len(), 2);
        assert!(!rx.flushed(L, false));
        assert!(
            !rx.flushed(L, true),
            "a later flush succeeds, but epoch 1 may be lost"
        );
        rx.barrier(3, LinkId(2));
        rx.ready_barriers();
        assert!(rx.flushed(LinkId(2), true), "a new link starts clean");
    }

    #[test]
    fn a_reset_keeps_received_writes_and_drops_the_barriers() {
        let mut rx = PeerRx::default();
        let a = write(&mut rx, 0, 4096);
        let b = write(&mut rx, 0, 4096);
        rx.barrier(1, L);
        issue_all(&mut rx);
        assert_eq!(rx.backlog_bytes(), 8192);
        assert!(
            rx.reset().is_empty(),
            "b was received: it must reach the disk"
        );
        assert!(rx.ready_barriers().is_empty());
        assert_eq!(rx.unacked(), 2);
        assert!(rx.writes_overlap(512, 1024));
        rx.complete(a);
        assert_eq!(issue_all(&mut rx), vec![b], "b still follows a");
        rx.complete(b);
        assert_eq!(rx.unacked(), 0);
        assert!(!rx.writes_overlap(0, 4096));
    }

    #[test]
    fn a_reset_drops_queued_resync_blocks() {
        let mut rx = PeerRx::default();
        let a = write(&mut rx, 0, 4096);
        rx.enqueue(
            L,
            RxKind::Resync { id: 9 },
            0,
            4096,
            PeerDiskOp::Write {
                offset: 0,
                data: vec![0; 4096].into(),
                fua: false,
            },
        );
        issue_all(&mut rx);
        let dropped = rx.reset();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].kind, RxKind::Resync { id: 9 });
        rx.complete(a);
        assert_eq!(rx.unacked(), 0);
        assert_eq!(rx.backlog_bytes(), 0);
    }
}
