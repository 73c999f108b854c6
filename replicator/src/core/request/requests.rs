//! Client requests on a Primary (DRBD's `drbd_request`s): their table, write ordering, what
//! each waits for, and reads served by the peer.
//!
//! Ordering rule (docs/architecture.md §6.2, wait W4): a write that overlaps an admitted or an earlier waiting
//! write waits in FIFO order; it is admitted by the completion that clears the conflict, never
//! by polling. Reads are not ordered against writes (NBD allows it). A request completes (its
//! reply goes out) once its local part is done and the peer's acks, if it waits for any, came.
//!
//! Pure bookkeeping: the engine glue in `client.rs` issues the I/O and the replies.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::held::HeldExtents;
use crate::core::contract::ids::{IdMap, ReqId};
use crate::core::contract::io::{ClientError, ClientOp};
use crate::meta::layout::AL_EXTENT_BYTES;
use crate::wire::frame::MAX_DATA_BYTES;

/// Where a request is on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// A write behind an overlapping write, in the admission queue.
    WaitOverlap,
    /// Admitted, waiting for an activity-log transaction.
    WaitAl,
    /// Admitted, waiting for an activity-log slot (every slot has writes in flight).
    WaitAlSlot,
    /// Issued (to the local disk, or to the peer for a Diskless Primary).
    Submitted,
}

#[derive(Debug)]
struct Req {
    op: ClientOp,
    stage: Stage,
    /// The local result, once known.
    local: Option<Result<(), ClientError>>,
    /// Acks still to come from the peer (protocol B/C: one per data packet; a FLUSH waits for
    /// a barrier ack, counted as one), and since when it waits (for ko-count).
    peer_acks_left: u32,
    peer_wait: bool,
    peer_since: Option<Instant>,
    /// Activity-log extents this write holds (see `TransferLog::park_extents`).
    al_held: HeldExtents,
    /// The epoch it was replicated in.
    epoch: Option<u32>,
}

/// A request whose reply may go out now.
#[derive(Debug)]
pub(crate) struct Done {
    pub op: ClientOp,
    pub result: Result<(), ClientError>,
    pub al_held: HeldExtents,
    pub epoch: Option<u32>,
}

/// A client read served by the peer, in pieces of at most one packet.
#[derive(Debug)]
struct RemoteRead {
    offset: u64,
    data: Vec<u8>,
    /// Pieces not yet answered: offset → length.
    pending: BTreeMap<u64, u32>,
    failed: bool,
}

/// The outcome of a peer's reply to a piece of a remote read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RemoteReply {
    /// More pieces to come.
    Partial,
    /// The last piece: the whole read (`None` if a piece failed).
    Complete(Option<Vec<u8>>),
    /// The reply was never asked for, or its length is wrong: the peer is broken.
    Invalid(String),
    /// The read is no longer waiting (it failed when the link was lost).
    Stale,
}

#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// NBD clients connected now.
    pub(crate) open_clients: u32,
    /// Last client write, for the resync controller's c-min-rate.
    pub(crate) last_app_write: Option<Instant>,
    reqs: IdMap<ReqId, Req>,
    /// Writes not yet admitted, in arrival order.
    waiting: VecDeque<ReqId>,
    /// Admitted writes: (req, start, end) byte ranges. Small (≤ queue depth): a Vec scan is
    /// cheaper than a tree at these sizes.
    admitted: Vec<(ReqId, u64, u64)>,
    /// Writes waiting for an activity-log slot, in arrival order.
    al_waiters: VecDeque<ReqId>,
    /// Reads waiting for an overlapping write of the peer this node received and has not
    /// written yet (after a switchover: the old Primary acknowledged it, so a read must see it).
    reads_behind_peer: Vec<ReqId>,
    /// Extents written locally since the last FLUSH was issued: if that FLUSH fails they are
    /// what the disk may have lost.
    unflushed: BTreeSet<u64>,
    remote_reads: IdMap<ReqId, RemoteRead>,
    /// (since, req) of requests waiting for the peer, in the order they started waiting (time
    /// only moves forward, so the front is the oldest). Entries of requests that stopped
    /// waiting are dropped from the front as they get there: the front is always live, which
    /// makes `oldest_peer_wait` (read after every input, for ko-count) O(1).
    peer_waits: VecDeque<(Instant, ReqId)>,
    /// What the last `admit` let in, not yet taken; and its scratch list of held-back ranges.
    just_admitted: VecDeque<ReqId>,
    blocked: Vec<(u64, u64)>,
}

/// The 4 MiB activity-log extents `[start, end)` touches.
pub(crate) fn extents_of(start: u64, end: u64) -> std::ops::RangeInclusive<u64> {
    let last = end.saturating_sub(1).max(start);
    (start / AL_EXTENT_BYTES)..=(last / AL_EXTENT_BYTES)
}

impl Requests {
    pub(crate) fn insert(&mut self, req: ReqId, op: ClientOp) {
        self.reqs.insert(
            req,
            Req {
                op,
                stage: Stage::WaitOverlap,
                local: None,
                peer_acks_left: 0,
                peer_wait: false,
                peer_since: None,
                al_held: HeldExtents::default(),
                epoch: None,
            },
        );
        if op.write_range().is_some() {
            self.waiting.push_back(req);
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.reqs.len()
    }

    pub(crate) fn op(&self, req: ReqId) -> Option<ClientOp> {
        self.reqs.get(&req).map(|r| r.op)
    }

    pub(crate) fn stage(&self, req: ReqId) -> Option<Stage> {
        self.reqs.get(&req).map(|r| r.stage)
    }

    pub(crate) fn set_stage(&mut self, req: ReqId, stage: Stage) {
        if let Some(r) = self.reqs.get_mut(&req) {
            r.stage = stage;
        }
    }

    fn overlaps_admitted(&self, start: u64, end: u64) -> bool {
        self.admitted.iter().any(|&(_, s, e)| s < end && start < e)
    }

    /// Admit waiting writes in FIFO order while they overlap neither an admitted write, nor an
    /// earlier write that still waits, nor what `busy` says (resync reads in flight). The newly
    /// admitted writes are then taken, in order, with `pop_admitted`. Runs once or more per
    /// client write, so it allocates nothing once its buffers have grown.
    pub(crate) fn admit(&mut self, busy: impl Fn(u64, u64) -> bool) {
        self.blocked.clear();
        for _ in 0..self.waiting.len() {
            let Some(req) = self.waiting.pop_front() else {
                break;
            };
            let Some((start, len)) = self.reqs.get(&req).and_then(|r| r.op.write_range()) else {
                continue;
            };
            let end = start + len;
            let conflict = self.overlaps_admitted(start, end)
                || busy(start, end)
                || self.blocked.iter().any(|&(s, e)| s < end && start < e);
            if conflict {
                self.blocked.push((start, end));
                self.waiting.push_back(req);
            } else {
                self.admitted.push((req, start, end));
                self.just_admitted.push_back(req);
            }
        }
    }

    /// A read waits for received peer writes it overlaps (`PeerRx::writes_overlap`).
    pub(crate) fn read_behind_peer(&mut self, req: ReqId) {
        self.reads_behind_peer.push(req);
    }

    /// The reads that waited for received peer writes, to be submitted or put back.
    pub(crate) fn take_reads_behind_peer(&mut self) -> Vec<ReqId> {
        std::mem::take(&mut self.reads_behind_peer)
    }

    /// The next write `admit` let in.
    pub(crate) fn pop_admitted(&mut self) -> Option<ReqId> {
        self.just_admitted.pop_front()
    }

    /// A resync read of `[start, end)` may start: no client write to it is admitted or waiting.
    pub(crate) fn resync_read_may_start(&self, start: u64, end: u64) -> bool {
        !self.overlaps_admitted(start, end)
            && !self.waiting.iter().any(|id| {
                self.reqs
                    .get(id)
                    .and_then(|r| r.op.write_range())
                    .is_some_and(|(s, l)| s < end && start < s + l)
            })
    }

    pub(crate) fn take_al_held(&mut self, req: ReqId) -> HeldExtents {
        self.reqs
            .get_mut(&req)
            .map(|r| r.al_held.take())
            .unwrap_or_default()
    }

    pub(crate) fn set_al_held(&mut self, req: ReqId, held: HeldExtents) {
        if let Some(r) = self.reqs.get_mut(&req) {
            r.al_held = held;
        }
    }

    /// Activity-log references held by requests, for the invariant checks.
    pub(crate) fn held_extents(&self) -> impl Iterator<Item = u64> + '_ {
        self.reqs.values().flat_map(|r| r.al_held.iter())
    }

    /// The activity log is gone with the disk: references into it go too.
    pub(crate) fn forget_extents(&mut self) {
        for r in self.reqs.values_mut() {
            r.al_held = HeldExtents::default();
        }
    }

    pub(crate) fn wait_for_al_slot(&mut self, req: ReqId) {
        self.set_stage(req, Stage::WaitAlSlot);
        self.al_waiters.push_back(req);
    }

    /// The writes that waited for an activity-log slot, in arrival order.
    pub(crate) fn take_al_waiters(&mut self) -> Vec<ReqId> {
        self.al_waiters
            .drain(..)
            .filter(|r| self.reqs.contains_key(r))
            .collect()
    }

    /// Writes waiting for an activity-log transaction, in arrival order (ReqIds increase).
    pub(crate) fn waiting_for_al(&self) -> Vec<ReqId> {
        let mut w: Vec<ReqId> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.stage == Stage::WaitAl)
            .map(|(&id, _)| id)
            .collect();
        w.sort_unstable();
        w
    }

    /// The request goes away without a reply from here (the caller replies).
    pub(crate) fn drop_request(&mut self, req: ReqId) -> HeldExtents {
        self.admitted.retain(|&(id, _, _)| id != req);
        self.reads_behind_peer.retain(|&id| id != req);
        let held = self
            .reqs
            .remove(&req)
            .map(|r| r.al_held)
            .unwrap_or_default();
        self.changed_peer_wait(req);
        held
    }

    pub(crate) fn set_local(&mut self, req: ReqId, result: Result<(), ClientError>) {
        if let Some(r) = self.reqs.get_mut(&req) {
            r.local = Some(result);
        }
    }

    /// The request waits for `acks` acks of the peer from `now` on, replicated in `epoch`.
    pub(crate) fn wait_for_peer(
        &mut self,
        req: ReqId,
        acks: u32,
        now: Option<Instant>,
        epoch: Option<u32>,
    ) {
        if let Some(r) = self.reqs.get_mut(&req) {
            r.peer_wait = true;
            r.peer_acks_left = acks;
            r.peer_since = now;
            if epoch.is_some() {
                r.epoch = epoch;
            }
            if let Some(since) = now {
                self.peer_waits.push_back((since, req));
            }
        }
        self.changed_peer_wait(req);
    }

    /// `req` changed (stopped or restarted waiting, or left): if it is the front of
    /// `peer_waits`, drop the entries that no longer describe a waiting request from there. Only
    /// the front's request can make the front stale, so a change to any other request leaves
    /// nothing to do, and no table lookup.
    fn changed_peer_wait(&mut self, req: ReqId) {
        if self.peer_waits.front().is_some_and(|&(_, r)| r == req) {
            self.prune_peer_waits();
        }
    }

    /// Drop entries of `peer_waits` from the front that no longer describe a waiting request.
    fn prune_peer_waits(&mut self) {
        while let Some(&(since, req)) = self.peer_waits.front() {
            let live = self
                .reqs
                .get(&req)
                .is_some_and(|r| r.peer_wait && r.peer_since == Some(since));
            if live {
                break;
            }
            self.peer_waits.pop_front();
        }
    }

    pub(crate) fn set_epoch(&mut self, req: ReqId, epoch: u32) {
        if let Some(r) = self.reqs.get_mut(&req) {
            r.epoch = Some(epoch);
        }
    }

    pub(crate) fn waits_for_peer(&self, req: ReqId) -> bool {
        self.reqs.get(&req).is_some_and(|r| r.peer_wait)
    }

    /// One ack of the peer came; returns the acks still to come.
    pub(crate) fn peer_acked(&mut self, req: ReqId) -> u32 {
        self.reqs.get_mut(&req).map_or(0, |r| {
            r.peer_acks_left = r.peer_acks_left.saturating_sub(1);
            r.peer_acks_left
        })
    }

    /// The peer's part is over (acked, or the link is gone).
    pub(crate) fn peer_done(&mut self, req: ReqId) {
        if let Some(r) = self.reqs.get_mut(&req) {
            r.peer_wait = false;
            r.peer_acks_left = 0;
            r.peer_since = None;
        }
        self.changed_peer_wait(req);
    }

    /// Requests waiting for the peer, in arrival order.
    pub(crate) fn peer_waiting(&self) -> Vec<ReqId> {
        let mut w: Vec<ReqId> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.peer_wait)
            .map(|(&id, _)| id)
            .collect();
        w.sort_unstable();
        w
    }

    /// When the oldest request still waiting for the peer started waiting.
    pub(crate) fn oldest_peer_wait(&self) -> Option<Instant> {
        self.peer_waits.front().map(|&(since, _)| since)
    }

    /// `oldest_peer_wait` from the table itself, for the invariant checks.
    pub(crate) fn oldest_peer_wait_scanned(&self) -> Option<Instant> {
        self.reqs
            .values()
            .filter(|r| r.peer_wait)
            .filter_map(|r| r.peer_since)
            .min()
    }

    /// The request, if both its parts are done: it leaves the table and gets its reply.
    pub(crate) fn take_if_done(&mut self, req: ReqId) -> Option<Done> {
        let done = self
            .reqs
            .get(&req)
            .is_some_and(|r| r.local.is_some() && !r.peer_wait);
        if !done {
            return None;
        }
        let r = self.reqs.remove(&req)?;
        if r.op.write_range().is_some() {
            self.admitted.retain(|&(id, _, _)| id != req);
        }
        self.changed_peer_wait(req);
        Some(Done {
            op: r.op,
            result: r.local.unwrap_or(Ok(())),
            al_held: r.al_held,
            epoch: r.epoch,
        })
    }

    /// Local writes of these extents completed without FUA: a later FLUSH must make them
    /// durable.
    pub(crate) fn written(&mut self, start: u64, len: u64) {
        self.unflushed.extend(extents_of(start, start + len));
    }

    /// A FLUSH is issued: the extents it covers.
    pub(crate) fn take_unflushed(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.unflushed)
    }

    /// Read `len` bytes at `offset` from the peer; returns the pieces to ask for.
    pub(crate) fn start_remote_read(
        &mut self,
        req: ReqId,
        offset: u64,
        len: u32,
    ) -> Vec<(u64, u32)> {
        let mut pending = BTreeMap::new();
        let mut done = 0u32;
        // A piece is at most one packet (1 MiB), which fits a u32.
        let max = u32::try_from(MAX_DATA_BYTES).unwrap_or(u32::MAX);
        while done < len {
            let piece = (len - done).min(max);
            pending.insert(offset + u64::from(done), piece);
            done += piece;
        }
        let pieces = pending.iter().map(|(&o, &l)| (o, l)).collect();
        self.remote_reads.insert(
            req,
            RemoteRead {
                offset,
                data: vec![0; len as usize],
                pending,
                failed: false,
            },
        );
        pieces
    }

    /// A piece of a remote read was answered (`None`: the peer could not read it).
    pub(crate) fn remote_reply(
        &mut self,
        req: ReqId,
        offset: u64,
        data: Option<&[u8]>,
    ) -> RemoteReply {
        let Some(rr) = self.remote_reads.get_mut(&req) else {
            return RemoteReply::Stale;
        };
        let Some(want) = rr.pending.remove(&offset) else {
            return RemoteReply::Invalid(format!(
                "DataReply for request {req} at offset {offset}, which was not asked for"
            ));
        };
        match data {
            Some(d) if d.len() == want as usize => {
                // offset is within the read: it was one of its pieces.
                let at = usize::try_from(offset - rr.offset).unwrap_or(usize::MAX);
                if let Some(slot) = rr.data.get_mut(at..at + d.len()) {
                    slot.copy_from_slice(d);
                }
            }
            Some(d) => {
                return RemoteReply::Invalid(format!(
                    "DataReply for request {req} carries {} bytes, {want} were asked",
                    d.len()
                ))
            }
            None => rr.failed = true,
        }
        if !rr.pending.is_empty() {
            return RemoteReply::Partial;
        }
        match self.remote_reads.remove(&req) {
            Some(rr) if !rr.failed => RemoteReply::Complete(Some(rr.data)),
            _ => RemoteReply::Complete(None),
        }
    }

    /// Forget a remote read (the link went away); whether there was one.
    pub(crate) fn cancel_remote_read(&mut self, req: ReqId) -> bool {
        self.remote_reads.remove(&req).is_some()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;

    fn admit(r: &mut Requests, busy: impl Fn(u64, u64) -> bool) -> Vec<ReqId> {
        r.admit(busy);
        std::iter::from_fn(|| r.pop_admitted()).collect()
    }

    fn w(offset: u64, len: u32) -> ClientOp {
        ClientOp::Write {
            offset,
            len,
            fua: false,
        }
    }

    #[test]
    fn overlapping_writes_are_admitted_in_arrival_order() {
        let mut r = Requests::default();
        r.insert(ReqId(1), w(0, 4096));
        r.insert(ReqId(2), w(1024, 4096));
        r.insert(ReqId(3), w(8192, 4096));
        r.insert(ReqId(4), w(1024, 512));
        assert_eq!(admit(&mut r, |_, _| false), vec![ReqId(1), ReqId(3)]);
        assert!(admit(&mut r, |_, _| false).is_empty(), "2 and 4 wait for 1");
        r.set_local(ReqId(1), Ok(()));
        assert!(r.take_if_done(ReqId(1)).is_some());
        assert_eq!(
            admit(&mut r, |_, _| false),
            vec![ReqId(2)],
            "4 waits behind 2"
        );
    }

    #[test]
    fn a_busy_range_holds_writes_and_writes_hold_resync_reads() {
        let mut r = Requests::default();
        r.insert(ReqId(1), w(0, 4096));
        assert!(admit(&mut r, |s, _| s == 0).is_empty());
        assert!(!r.resync_read_may_start(0, 4096), "a waiting write counts");
        assert!(r.resync_read_may_start(4096, 8192));
        assert_eq!(admit(&mut r, |_, _| false), vec![ReqId(1)]);
        assert!(
            !r.resync_read_may_start(2048, 2049),
            "an admitted write counts"
        );
    }

    #[test]
    fn a_request_completes_when_both_parts_are_done() {
        let mut r = Requests::default();
        r.insert(ReqId(1), w(0, 3 << 20));
        admit(&mut r, |_, _| false);
        r.wait_for_peer(ReqId(1), 3, None, Some(0));
        r.set_local(ReqId(1), Ok(()));
        assert!(r.take_if_done(ReqId(1)).is_none());
        assert_eq!(r.peer_acked(ReqId(1)), 2);
        assert_eq!(r.peer_acked(ReqId(1)), 1);
        assert_eq!(r.peer_acked(ReqId(1)), 0);
        r.peer_done(ReqId(1));
        let d = r.take_if_done(ReqId(1));
        assert_eq!(d.map(|d| d.epoch), Some(Some(0)));
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn a_remote_read_is_reassembled_from_its_pieces() {
        let mut r = Requests::default();
        let len = (MAX_DATA_BYTES + 10) as u32;
        let pieces = r.start_remote_read(ReqId(9), 4096, len);
        assert_eq!(
            pieces,
            vec![
                (4096, MAX_DATA_BYTES as u32),
                (4096 + MAX_DATA_BYTES as u64, 10)
            ]
        );
        assert!(matches!(
            r.remote_reply(ReqId(9), 5, None),
            RemoteReply::Invalid(_)
        ));
        let first = vec![1u8; MAX_DATA_BYTES];
        assert_eq!(
            r.remote_reply(ReqId(9), 4096, Some(&first)),
            RemoteReply::Partial
        );
        let RemoteReply::Complete(Some(data)) =
            r.remote_reply(ReqId(9), 4096 + MAX_DATA_BYTES as u64, Some(&[2u8; 10]))
        else {
            panic!("the read is complete");
        };
        assert_eq!(data.len(), len as usize);
        assert_eq!(data[MAX_DATA_BYTES], 2);
        assert_eq!(
            r.remote_reply(ReqId(9), 4096, Some(&first)),
            RemoteReply::Stale
        );
    }

    #[test]
    fn extents_cover_the_range() {
        assert_eq!(extents_of(0, 1), 0..=0);
        assert_eq!(extents_of(AL_EXTENT_BYTES - 1, AL_EXTENT_BYTES + 1), 0..=1);
        assert_eq!(extents_of(5, 5), 0..=0);
    }
}
