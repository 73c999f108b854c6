//! Activity log (docs/drbd-semantics.md §7.3): the on-disk transaction block format, the in-memory
//! LRU of hot 4 MiB extents, and recovery of the active set from the ring after a crash.
//!
//! A write to a cold extent must first make it hot: `begin_write` returns a transaction that
//! the caller writes and flushes before the data write starts. Each transaction records
//! the slot it changed plus a rolling snapshot ("context") of `AL_CONTEXT_PER_TRANSACTION`
//! consecutive slots, so reading the whole ring recovers the full active set as long as
//! `al-extents ≤ AL_CONTEXT_PER_TRANSACTION × (ring blocks − 1)` — the "− 1" tolerates the
//! newest block being torn by the crash.
//!
//! Pure: no I/O. Every extent carries a count of the writes in flight to it (`begin_io` /
//! `end_io`): only an idle extent may be evicted, so a crash always finds every extent with
//! writes in flight in the ring and replays it. When every slot is busy, `begin_io` answers
//! `AlBusy` and the caller waits for a write to finish.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::layout::AL_TRANSACTION_BYTES;
use super::MetaError;

/// Magic of an AL transaction block (ours; DRBD uses 0x69cb65a2).
pub const AL_MAGIC: u32 = 0x5245_5041; // "REPA"
/// Transaction type "update" (the only one).
pub const AL_TR_UPDATE: u16 = 0;
/// Slot changes one transaction can carry (DRBD AL_UPDATES_PER_TRANSACTION).
pub const AL_UPDATES_PER_TRANSACTION: usize = 64;
/// Slots of the rolling snapshot per transaction (DRBD AL_CONTEXT_PER_TRANSACTION).
pub const AL_CONTEXT_PER_TRANSACTION: usize = 919;
/// `al-extents` bounds: DRBD's documented minimum, and what a u16 slot number can address
/// (0xffff is reserved).
pub const AL_EXTENTS_MIN: u32 = 7;
pub const AL_EXTENTS_MAX: u32 = 65534;
pub const AL_EXTENTS_DEFAULT: u32 = 1237;
/// Extents one request of the NBD maximum (32 MiB) can span at an unaligned offset: a smaller
/// AL could never hold all of them at once, so `create-md` raises `al-extents` to this.
pub const AL_EXTENTS_FOR_LARGEST_REQUEST: u32 = 9;
/// Marks an empty slot (DRBD LC_FREE).
pub const AL_SLOT_FREE: u32 = u32::MAX;
/// The end of the in-memory LRU list (slots are below `AL_EXTENTS_MAX`).
const NO_SLOT: u16 = u16::MAX;

const TR_LEN: usize = AL_TRANSACTION_BYTES as usize;
const CRC_OFFSET: usize = 8;
const HEADER_BYTES: usize = 36;
const UPDATE_SLOTS_OFFSET: usize = HEADER_BYTES;
const UPDATE_EXTENTS_OFFSET: usize = UPDATE_SLOTS_OFFSET + 2 * AL_UPDATES_PER_TRANSACTION;
const CONTEXT_OFFSET: usize = UPDATE_EXTENTS_OFFSET + 4 * AL_UPDATES_PER_TRANSACTION;
// The block is exactly full, like DRBD's al_transaction_on_disk.
const _: () = assert!(CONTEXT_OFFSET + 4 * AL_CONTEXT_PER_TRANSACTION == TR_LEN);
const _: () = assert!(AL_EXTENTS_MAX < u16::MAX as u32);
// The default fits the default 8-block ring.
const _: () = assert!(AL_EXTENTS_DEFAULT as usize <= AL_CONTEXT_PER_TRANSACTION * 7);

/// Check `al-extents` against the bounds and the ring's recovery capacity.
pub fn check_al_extents(al_extents: u32, ring_blocks: u32) -> Result<(), String> {
    let ring_max = (AL_CONTEXT_PER_TRANSACTION as u64) * u64::from(ring_blocks.saturating_sub(1));
    let max = ring_max.min(u64::from(AL_EXTENTS_MAX));
    if u64::from(al_extents) < u64::from(AL_EXTENTS_MIN) || u64::from(al_extents) > max {
        return Err(format!(
            "al-extents {al_extents} outside {AL_EXTENTS_MIN}..={max} (an AL ring of {ring_blocks} blocks recovers \
             at most {ring_max} extents; raise --al-stripe-size-kB or lower al-extents)"
        ));
    }
    Ok(())
}

/// One slot change: `slot` now holds `extent` (`AL_SLOT_FREE` = emptied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AlUpdate {
    pub slot: u16,
    pub extent: u32,
}

/// One AL transaction block (4 KiB, big-endian).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlTransaction {
    /// Monotonic (wrapping) transaction number; the newest valid block wins.
    pub tr_number: u32,
    pub tr_type: u16,
    /// Ring position this block belongs at; a block read elsewhere is a misdirected write.
    pub ring_slot: u32,
    pub updates: Vec<AlUpdate>,
    /// Number of AL slots (= al-extents).
    pub context_size: u16,
    pub context_start_slot: u16,
    /// Slots `context_start_slot ..` (wrapping at `context_size`) after this transaction;
    /// `min(AL_CONTEXT_PER_TRANSACTION, context_size)` entries.
    pub context: Vec<u32>,
}

fn context_len(context_size: u16) -> usize {
    AL_CONTEXT_PER_TRANSACTION.min(usize::from(context_size))
}

impl AlTransaction {
    /// Ring position to write this block at (see `MetaLayout::al_block_offset`).
    pub fn ring_slot(&self) -> u64 {
        u64::from(self.ring_slot)
    }

    /// Encode to one block; crc32c over the block with the crc field zeroed.
    pub fn encode(&self) -> [u8; TR_LEN] {
        assert!(
            self.updates.len() <= AL_UPDATES_PER_TRANSACTION,
            "too many AL updates"
        );
        assert!(self.context_size > 0);
        assert!(self.context_start_slot < self.context_size);
        assert_eq!(self.context.len(), context_len(self.context_size));
        let mut b = [0u8; TR_LEN];
        b[0..4].copy_from_slice(&AL_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.tr_number.to_be_bytes());
        b[12..14].copy_from_slice(&self.tr_type.to_be_bytes());
        let n_updates = self.updates.len() as u16; // ≤ 64, asserted above
        b[14..16].copy_from_slice(&n_updates.to_be_bytes());
        b[16..18].copy_from_slice(&self.context_size.to_be_bytes());
        b[18..20].copy_from_slice(&self.context_start_slot.to_be_bytes());
        b[20..24].copy_from_slice(&self.ring_slot.to_be_bytes());
        for i in 0..AL_UPDATES_PER_TRANSACTION {
            let u = self.updates.get(i).copied().unwrap_or(AlUpdate {
                slot: u16::MAX,
                extent: AL_SLOT_FREE,
            });
            let s = UPDATE_SLOTS_OFFSET + 2 * i;
            b[s..s + 2].copy_from_slice(&u.slot.to_be_bytes());
            let e = UPDATE_EXTENTS_OFFSET + 4 * i;
            b[e..e + 4].copy_from_slice(&u.extent.to_be_bytes());
        }
        for i in 0..AL_CONTEXT_PER_TRANSACTION {
            let v = self.context.get(i).copied().unwrap_or(AL_SLOT_FREE);
            let c = CONTEXT_OFFSET + 4 * i;
            b[c..c + 4].copy_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decode and validate the block read at ring position `at`. Corrupt input is an error,
    /// never a panic.
    pub fn decode(buf: &[u8], at: u32) -> Result<AlTransaction, MetaError> {
        if buf.len() != TR_LEN {
            return Err(MetaError::BadLength {
                what: "AL transaction length",
                expected: TR_LEN as u64,
                found: buf.len() as u64,
            });
        }
        let u16_at = |o: usize| u16::from_be_bytes([buf[o], buf[o + 1]]);
        let u32_at = |o: usize| u32::from_be_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let magic = u32_at(0);
        if magic != AL_MAGIC {
            return Err(MetaError::BadMagic { found: magic });
        }
        let stored_crc = u32_at(CRC_OFFSET);
        let mut copy = [0u8; TR_LEN];
        copy.copy_from_slice(buf);
        copy[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
        let crc = crc32c::crc32c(&copy);
        if crc != stored_crc {
            return Err(MetaError::BadCrc {
                slot: at,
                expected: stored_crc,
                found: crc,
            });
        }
        let bad = |field: &'static str, why: String| Err(MetaError::Inconsistent { field, why });
        let tr_type = u16_at(12);
        if tr_type != AL_TR_UPDATE {
            return bad("al.tr_type", format!("unknown transaction type {tr_type}"));
        }
        let n_updates = usize::from(u16_at(14));
        if n_updates > AL_UPDATES_PER_TRANSACTION {
            return bad(
                "al.n_updates",
                format!("{n_updates} > {AL_UPDATES_PER_TRANSACTION}"),
            );
        }
        let context_size = u16_at(16);
        let context_start_slot = u16_at(18);
        if context_size == 0
            || u32::from(context_size) > AL_EXTENTS_MAX
            || context_start_slot >= context_size
        {
            return bad(
                "al.context",
                format!("size {context_size}, start {context_start_slot}"),
            );
        }
        let ring_slot = u32_at(20);
        if ring_slot != at {
            return bad(
                "al.ring_slot",
                format!("block for ring slot {ring_slot} found at slot {at}"),
            );
        }
        let mut updates = Vec::with_capacity(n_updates);
        for i in 0..n_updates {
            let slot = u16_at(UPDATE_SLOTS_OFFSET + 2 * i);
            let extent = u32_at(UPDATE_EXTENTS_OFFSET + 4 * i);
            if slot >= context_size {
                return bad(
                    "al.update_slot_nr",
                    format!("slot {slot} ≥ context size {context_size}"),
                );
            }
            updates.push(AlUpdate { slot, extent });
        }
        let len = context_len(context_size);
        let context: Vec<u32> = (0..len).map(|i| u32_at(CONTEXT_OFFSET + 4 * i)).collect();
        if (len..AL_CONTEXT_PER_TRANSACTION).any(|i| u32_at(CONTEXT_OFFSET + 4 * i) != AL_SLOT_FREE)
        {
            return bad(
                "al.context",
                "entries beyond the context size are in use".into(),
            );
        }
        Ok(AlTransaction {
            tr_number: u32_at(4),
            tr_type,
            ring_slot,
            updates,
            context_size,
            context_start_slot,
            context,
        })
    }
}

/// What `recover` found in the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveredAl {
    /// Extents that were hot when the device went down: mark them out of sync after a crash.
    pub active_extents: BTreeSet<u64>,
    /// Number of the newest valid transaction; `None` for an empty (fresh) ring.
    pub last_tr: Option<u32>,
    /// Slot → extent (`AL_SLOT_FREE` if empty), so the AL continues with the same slots.
    pub slots: Vec<u32>,
    /// Ring position after the newest valid block (where the next transaction goes).
    pub next_ring_slot: u32,
    /// Context cursor after the newest valid block.
    pub next_context_slot: u16,
    pub valid_blocks: usize,
    /// Blocks that failed validation (torn, never written, or foreign), ignored.
    pub invalid_blocks: usize,
}

/// Rebuild the active set from all blocks of the ring (index = ring position). Invalid blocks
/// and blocks written for a different `al_extents` are ignored; the valid ones are replayed
/// oldest to newest (wrapping transaction numbers compared as serial numbers).
pub fn recover(blocks: &[[u8; TR_LEN]], al_extents: u32) -> RecoveredAl {
    let capacity = u16::try_from(al_extents).unwrap_or(u16::MAX);
    let ring_blocks = u32::try_from(blocks.len()).unwrap_or(u32::MAX);
    let mut valid: Vec<AlTransaction> = Vec::new();
    let mut invalid_blocks = 0;
    for (at, block) in (0..ring_blocks).zip(blocks) {
        match AlTransaction::decode(block, at) {
            Ok(tr) if tr.context_size == capacity => valid.push(tr),
            _ => invalid_blocks += 1,
        }
    }
    let mut slots = vec![AL_SLOT_FREE; usize::from(capacity)];
    let Some(reference) = valid.first().map(|t| t.tr_number) else {
        return RecoveredAl {
            active_extents: BTreeSet::new(),
            last_tr: None,
            slots,
            next_ring_slot: 0,
            next_context_slot: 0,
            valid_blocks: 0,
            invalid_blocks,
        };
    };
    // All blocks of one ring are within `ring_blocks` transactions of each other, so the
    // signed distance to any one of them orders them correctly across a u32 wrap.
    valid.sort_by_key(|t| t.tr_number.wrapping_sub(reference) as i32);
    for tr in &valid {
        for (i, &v) in tr.context.iter().enumerate() {
            slots[(usize::from(tr.context_start_slot) + i) % usize::from(capacity)] = v;
        }
        for u in &tr.updates {
            slots[usize::from(u.slot)] = u.extent;
        }
    }
    let newest = &valid[valid.len() - 1];
    let active_extents = slots
        .iter()
        .filter(|&&e| e != AL_SLOT_FREE)
        .map(|&e| u64::from(e))
        .collect();
    let next_context =
        (usize::from(newest.context_start_slot) + newest.context.len()) % usize::from(capacity);
    RecoveredAl {
        active_extents,
        last_tr: Some(newest.tr_number),
        slots,
        next_ring_slot: (newest.ring_slot + 1) % ring_blocks,
        next_context_slot: u16::try_from(next_context).unwrap_or(0),
        valid_blocks: valid.len(),
        invalid_blocks,
    }
}

/// Every AL slot has writes in flight: the write must wait until one finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlBusy;

/// In-memory activity log: LRU set of hot extents with fixed slots.
#[derive(Debug, Clone)]
pub struct ActivityLog {
    ring_blocks: u32,
    /// slot → extent or AL_SLOT_FREE; its length is `al-extents`.
    slots: Vec<u32>,
    by_extent: BTreeMap<u32, u16>,
    free: BTreeSet<u16>,
    /// The occupied slots from least to most recently used, as a list threaded through
    /// `prev`/`next` (`NO_SLOT` ends it): every client write touches its extent, and moving a
    /// slot to the end of a list is O(1) where re-keying a tick-ordered map was two tree
    /// operations per write (issue 20's profile).
    prev: Vec<u16>,
    next: Vec<u16>,
    oldest: u16,
    newest: u16,
    /// Writes in flight per slot; a slot with writes in flight is never evicted.
    refs: Vec<u32>,
    next_tr: u32,
    next_ring_slot: u32,
    next_context_slot: u16,
}

impl ActivityLog {
    /// An empty AL with `al_extents` slots over a ring of `ring_blocks` blocks.
    pub fn new(al_extents: u32, ring_blocks: u32) -> Result<ActivityLog, MetaError> {
        check_al_extents(al_extents, ring_blocks)
            .map_err(|why| MetaError::BadAlGeometry { why })?;
        let n = usize::from(u16::try_from(al_extents).unwrap_or(u16::MAX));
        let empty = RecoveredAl {
            active_extents: BTreeSet::new(),
            last_tr: None,
            slots: vec![AL_SLOT_FREE; n],
            next_ring_slot: 0,
            next_context_slot: 0,
            valid_blocks: 0,
            invalid_blocks: 0,
        };
        ActivityLog::from_recovered(&empty, ring_blocks)
    }

    /// Continue the log found by `recover` (same slots, next transaction number and position).
    pub fn from_recovered(rec: &RecoveredAl, ring_blocks: u32) -> Result<ActivityLog, MetaError> {
        let al_extents = u32::try_from(rec.slots.len()).unwrap_or(u32::MAX);
        check_al_extents(al_extents, ring_blocks)
            .map_err(|why| MetaError::BadAlGeometry { why })?;
        let mut al = ActivityLog {
            ring_blocks,
            slots: vec![AL_SLOT_FREE; rec.slots.len()],
            by_extent: BTreeMap::new(),
            free: BTreeSet::new(),
            prev: vec![NO_SLOT; rec.slots.len()],
            next: vec![NO_SLOT; rec.slots.len()],
            oldest: NO_SLOT,
            newest: NO_SLOT,
            refs: vec![0; rec.slots.len()],
            next_tr: rec.last_tr.map_or(0, |t| t.wrapping_add(1)),
            next_ring_slot: rec.next_ring_slot % ring_blocks,
            next_context_slot: rec.next_context_slot
                % u16::try_from(al_extents).unwrap_or(u16::MAX),
        };
        for (slot, &ext) in (0u16..).zip(&rec.slots) {
            if ext == AL_SLOT_FREE || al.by_extent.contains_key(&ext) {
                // A duplicate cannot come from our own writer; keep the first, and the
                // extent is still in `active_extents` for the crash replay.
                if ext != AL_SLOT_FREE {
                    tracing::warn!(
                        extent = ext,
                        slot,
                        "duplicate extent in recovered activity log; slot freed"
                    );
                }
                al.free.insert(slot);
            } else {
                al.slots[usize::from(slot)] = ext;
                al.by_extent.insert(ext, slot);
                al.touch(slot);
            }
        }
        al.check_invariants();
        Ok(al)
    }

    /// Make `slot` the most recently used (linking it if it was not in the list).
    fn touch(&mut self, slot: u16) {
        if self.newest == slot {
            return;
        }
        self.unlink(slot);
        let i = usize::from(slot);
        self.prev[i] = self.newest;
        self.next[i] = NO_SLOT;
        match self.newest {
            NO_SLOT => self.oldest = slot,
            n => self.next[usize::from(n)] = slot,
        }
        self.newest = slot;
    }

    /// Take `slot` out of the LRU list (nothing if it is not in it).
    fn unlink(&mut self, slot: u16) {
        let i = usize::from(slot);
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NO_SLOT && self.oldest != slot {
            return;
        }
        match p {
            NO_SLOT => self.oldest = n,
            p => self.next[usize::from(p)] = n,
        }
        match n {
            NO_SLOT => self.newest = p,
            n => self.prev[usize::from(n)] = p,
        }
        self.prev[i] = NO_SLOT;
        self.next[i] = NO_SLOT;
    }

    /// The occupied slots, least recently used first.
    fn lru_order(&self) -> impl Iterator<Item = u16> + '_ {
        std::iter::successors(Some(self.oldest).filter(|&s| s != NO_SLOT), |&s| {
            Some(self.next[usize::from(s)]).filter(|&n| n != NO_SLOT)
        })
    }

    /// Make `extent` hot before writing to it, without counting the write as in flight (for
    /// tools and tests that write transactions directly). See [`Self::begin_io`].
    pub fn begin_write(&mut self, extent: u64) -> Option<AlTransaction> {
        let tr = self.begin_io(extent).ok()?;
        self.end_io(extent);
        tr
    }

    /// A write to `extent` starts: count it in flight and make the extent hot. `Ok(None)` if it
    /// already was (only its LRU position changes); `Ok(Some(tr))`: the transaction to write and
    /// flush before the data write. When the AL is full the least recently used *idle* extent is
    /// evicted (the caller persists dirty bitmap pages before the transaction, so the evicted
    /// extent's bits are on disk); `Err(AlBusy)` when every slot has writes in flight.
    pub fn begin_io(&mut self, extent: u64) -> Result<Option<AlTransaction>, AlBusy> {
        let ext = u32::try_from(extent).ok().filter(|&e| e != AL_SLOT_FREE);
        let ext = ext.unwrap_or_else(|| panic!("AL extent {extent} beyond DEVICE_BYTES_MAX"));
        if let Some(&slot) = self.by_extent.get(&ext) {
            self.touch(slot);
            self.refs[usize::from(slot)] += 1;
            return Ok(None);
        }
        let slot = match self.free.pop_first() {
            Some(s) => s,
            None => {
                let victim = self.lru_order().find(|&s| self.refs[usize::from(s)] == 0);
                let Some(victim) = victim else {
                    return Err(AlBusy);
                };
                self.unlink(victim);
                let old = self.slots[usize::from(victim)];
                self.by_extent.remove(&old);
                victim
            }
        };
        self.slots[usize::from(slot)] = ext;
        self.by_extent.insert(ext, slot);
        self.touch(slot);
        self.refs[usize::from(slot)] = 1;
        let context_size = u16::try_from(self.slots.len()).unwrap_or(u16::MAX);
        let start = self.next_context_slot;
        let len = context_len(context_size);
        let context = (0..len)
            .map(|i| self.slots[(usize::from(start) + i) % self.slots.len()])
            .collect();
        self.next_context_slot =
            u16::try_from((usize::from(start) + len) % self.slots.len()).unwrap_or(0);
        let tr = AlTransaction {
            tr_number: self.next_tr,
            tr_type: AL_TR_UPDATE,
            ring_slot: self.next_ring_slot,
            updates: vec![AlUpdate { slot, extent: ext }],
            context_size,
            context_start_slot: start,
            context,
        };
        self.next_tr = self.next_tr.wrapping_add(1);
        self.next_ring_slot = (self.next_ring_slot + 1) % self.ring_blocks;
        self.check_invariants();
        Ok(Some(tr))
    }

    /// A write counted by [`Self::begin_io`] finished.
    pub fn end_io(&mut self, extent: u64) {
        let slot = u32::try_from(extent)
            .ok()
            .and_then(|e| self.by_extent.get(&e).copied());
        if let Some(slot) = slot {
            let r = &mut self.refs[usize::from(slot)];
            debug_assert!(*r > 0, "AL extent {extent} released more often than taken");
            *r = r.saturating_sub(1);
        }
    }

    /// Writes in flight to `extent`.
    pub fn in_flight(&self, extent: u64) -> u32 {
        u32::try_from(extent)
            .ok()
            .and_then(|e| self.by_extent.get(&e))
            .map_or(0, |&s| self.refs[usize::from(s)])
    }

    /// Whether `extent` is hot (writes to it need no AL transaction).
    pub fn is_hot(&self, extent: u64) -> bool {
        u32::try_from(extent).is_ok_and(|e| self.by_extent.contains_key(&e))
    }

    /// Hot extents, ascending.
    pub fn active_extents(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_extent.keys().map(|&e| u64::from(e))
    }

    pub fn len(&self) -> usize {
        self.by_extent.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_extent.is_empty()
    }
    /// `al-extents`.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
    pub fn ring_blocks(&self) -> u32 {
        self.ring_blocks
    }
    /// Number the next transaction will carry.
    pub fn next_tr_number(&self) -> u32 {
        self.next_tr
    }

    fn check_invariants(&self) {
        debug_assert_eq!(self.by_extent.len() + self.free.len(), self.slots.len());
        debug_assert_eq!(self.lru_order().count(), self.by_extent.len());
        debug_assert!(self.next_ring_slot < self.ring_blocks);
        if cfg!(debug_assertions) {
            for (&e, &s) in &self.by_extent {
                assert_eq!(
                    self.slots[usize::from(s)],
                    e,
                    "AL slot table disagrees with extent map"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive model: LRU list, least recently used first.
    struct Model {
        cap: usize,
        lru: Vec<u64>,
    }
    impl Model {
        /// Returns whether the access needed a transaction (extent was cold).
        fn access(&mut self, e: u64) -> bool {
            if let Some(i) = self.lru.iter().position(|&x| x == e) {
                self.lru.remove(i);
                self.lru.push(e);
                false
            } else {
                if self.lru.len() == self.cap {
                    self.lru.remove(0);
                }
                self.lru.push(e);
                true
            }
        }
        fn set(&self) -> BTreeSet<u64> {
            self.lru.iter().copied().collect()
        }
    }

    /// Goal: the LRU list evicts the least recently *used* idle extent, whatever order the
    /// extents became hot in, and skips the ones with writes in flight.
    #[test]
    fn eviction_follows_last_use_and_skips_busy_extents() {
        let mut al = ActivityLog::new(AL_EXTENTS_MIN, 8).unwrap();
        for ext in 0..u64::from(AL_EXTENTS_MIN) {
            assert!(al.begin_write(ext).is_some());
        }
        // Use order now 1, 2, 4, 5, 6, 0, 3 (oldest first); 1 is busy.
        for ext in [0, 3] {
            assert!(al.begin_write(ext).is_none());
        }
        assert!(al.begin_io(1).unwrap().is_none());
        let evicted = |al: &ActivityLog, before: &BTreeSet<u64>| {
            let now: BTreeSet<u64> = al.active_extents().collect();
            before.difference(&now).copied().collect::<Vec<_>>()
        };
        for (new, gone) in [(100, 2), (101, 4), (102, 5), (103, 6), (104, 0), (105, 3)] {
            let before: BTreeSet<u64> = al.active_extents().collect();
            assert!(al.begin_write(new).is_some());
            assert_eq!(evicted(&al, &before), vec![gone], "writing {new}");
        }
        // Only the busy extent and the new ones are left; once it is idle it goes next.
        al.end_io(1);
        let before: BTreeSet<u64> = al.active_extents().collect();
        assert!(al.begin_write(106).is_some());
        assert_eq!(evicted(&al, &before), vec![1]);
    }

    #[test]
    fn an_extent_with_writes_in_flight_is_never_evicted() {
        let mut al = ActivityLog::new(AL_EXTENTS_MIN, 8).unwrap();
        // Fill every slot; extent 0 keeps a write in flight, the others finish.
        for ext in 0..u64::from(AL_EXTENTS_MIN) {
            assert!(al.begin_io(ext).unwrap().is_some());
            if ext != 0 {
                al.end_io(ext);
            }
        }
        // Extent 0 is the least recently used, but busy: the next cold extent evicts extent 1.
        assert!(al.begin_io(100).unwrap().is_some());
        assert!(al.is_hot(0), "busy extent evicted");
        assert!(!al.is_hot(1));
        assert_eq!(al.in_flight(0), 1);
        // Every slot busy: the caller must wait.
        for ext in 2..u64::from(AL_EXTENTS_MIN) {
            assert!(al.begin_io(ext).unwrap().is_none());
        }
        assert_eq!(al.begin_io(200), Err(AlBusy));
        al.end_io(0);
        assert!(al.begin_io(200).unwrap().is_some());
        assert!(!al.is_hot(0), "the idle extent is the one evicted");
    }

    #[test]
    fn refcounts_stack_per_extent() {
        let mut al = ActivityLog::new(AL_EXTENTS_MIN, 8).unwrap();
        assert!(al.begin_io(5).unwrap().is_some());
        assert!(al.begin_io(5).unwrap().is_none());
        assert_eq!(al.in_flight(5), 2);
        al.end_io(5);
        assert_eq!(al.in_flight(5), 1);
        al.end_io(5);
        assert_eq!(al.in_flight(5), 0);
        assert!(al.is_hot(5), "finishing a write keeps the extent hot");
    }

    #[test]
    fn transaction_roundtrip_and_rejects() {
        let mut al = ActivityLog::new(AL_EXTENTS_DEFAULT, 8).unwrap();
        let tr = al.begin_write(42).unwrap();
        assert!(al.begin_write(42).is_none());
        let enc = tr.encode();
        assert_eq!(AlTransaction::decode(&enc, 0).unwrap(), tr);
        assert!(matches!(
            AlTransaction::decode(&enc, 1),
            Err(MetaError::Inconsistent {
                field: "al.ring_slot",
                ..
            })
        ));
        let mut torn = enc;
        torn[2000] ^= 0x10;
        assert!(matches!(
            AlTransaction::decode(&torn, 0),
            Err(MetaError::BadCrc { .. })
        ));
        assert!(matches!(
            AlTransaction::decode(&[0u8; TR_LEN], 0),
            Err(MetaError::BadMagic { .. })
        ));
        assert!(AlTransaction::decode(&enc[..100], 0).is_err());
    }

    #[test]
    fn al_extents_bounds() {
        assert!(check_al_extents(6433, 8).is_ok());
        assert!(check_al_extents(6434, 8).is_err());
        assert!(check_al_extents(6, 8).is_err());
        assert!(ActivityLog::new(65535, 4096).is_err());
    }

    #[test]
    fn empty_ring_recovers_nothing() {
        let rec = recover(&[[0u8; TR_LEN]; 8], 1237);
        assert!(rec.active_extents.is_empty());
        assert_eq!(rec.last_tr, None);
        assert_eq!(rec.invalid_blocks, 8);
    }

    #[test]
    fn recovery_orders_across_tr_number_wrap() {
        let mut al = ActivityLog::new(7, 2).unwrap();
        al.next_tr = u32::MAX - 1;
        let mut ring = [[0u8; TR_LEN]; 2];
        for e in 0..10u64 {
            let tr = al.begin_write(e).unwrap();
            ring[tr.ring_slot() as usize] = tr.encode();
        }
        let rec = recover(&ring, 7);
        assert_eq!(rec.active_extents, (3..10).collect());
        assert_eq!(rec.last_tr, Some((u32::MAX - 1).wrapping_add(9)));
    }

    fn run(cap: u32, ring_blocks: u32, ops: &[u64]) -> Result<(), TestCaseError> {
        let mut al = ActivityLog::new(cap, ring_blocks).unwrap();
        let mut model = Model {
            cap: cap as usize,
            lru: Vec::new(),
        };
        let mut ring = vec![[0u8; TR_LEN]; ring_blocks as usize];
        let mut before_last = BTreeSet::new();
        let mut last_slot = None;
        for &e in ops {
            let snapshot = model.set();
            let cold = model.access(e);
            let tr = al.begin_write(e);
            prop_assert_eq!(cold, tr.is_some());
            if let Some(tr) = tr {
                before_last = snapshot;
                last_slot = Some(tr.ring_slot() as usize);
                ring[tr.ring_slot() as usize] = tr.encode();
            }
        }
        prop_assert_eq!(al.active_extents().collect::<BTreeSet<_>>(), model.set());
        let rec = recover(&ring, cap);
        prop_assert_eq!(&rec.active_extents, &model.set());
        // Torn newest block: recovery yields the set before the last transaction.
        if let Some(s) = last_slot {
            let mut torn = ring.clone();
            torn[s][100] ^= 0xff;
            prop_assert_eq!(&recover(&torn, cap).active_extents, &before_last);
        }
        // Continue from the recovered log (its LRU order is by slot, not true recency, so
        // evictions may differ from the model): what it writes recovers to its own set.
        let mut al2 = ActivityLog::from_recovered(&rec, ring_blocks).unwrap();
        for &e in ops.iter().rev().take(50) {
            if let Some(tr) = al2.begin_write(e) {
                ring[tr.ring_slot() as usize] = tr.encode();
            }
        }
        prop_assert_eq!(
            recover(&ring, cap).active_extents,
            al2.active_extents().collect::<BTreeSet<_>>()
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Goal: recovering the encoded ring gives the model's active set, with small AL
        /// (context covers everything) and large AL (windows of 919 slots must tile).
        /// Method: random access sequences against a naive LRU list.
        #[test]
        fn small_al_matches_model(cap in 7u32..40, ring in 2u32..10, ops in proptest::collection::vec(0u64..80, 1..400)) {
            run(cap, ring, &ops)?;
        }

        /// Goal: hostile blocks never panic the decoder or recovery.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), TR_LEN), fix_magic: bool) {
            let mut b = [0u8; TR_LEN];
            b.copy_from_slice(&bytes);
            if fix_magic {
                b[0..4].copy_from_slice(&AL_MAGIC.to_be_bytes());
                b[CRC_OFFSET..CRC_OFFSET + 4].fill(0);
                let crc = crc32c::crc32c(&b);
                b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            }
            let _ = AlTransaction::decode(&b, 0);
            let _ = recover(&[b, b], 1237);
        }
    }

    proptest! {
        // Few cases: each runs thousands of AL operations over ~1000-slot logs.
        #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

        #[test]
        fn large_al_matches_model(n in 2u32..4, frac in 0.5f64..=1.0, ops in proptest::collection::vec(0u64..3000, 1..2500)) {
            let cap = (((AL_CONTEXT_PER_TRANSACTION as f64) * f64::from(n - 1) * frac) as u32).max(AL_EXTENTS_MIN);
            run(cap, n, &ops)?;
        }
    }
}
