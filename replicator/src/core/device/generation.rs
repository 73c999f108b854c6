//! The one path by which the data generation changes (docs/drbd-semantics.md §2,
//! docs/architecture.md §4.5): the generation UUIDs and the metadata flags of the attached
//! disk, as `change_state` is for the visible state. A change is a [`GenEvent`];
//! `Generation::apply` carries out DRBD's rule for it; `Engine::gen_change` is its only
//! caller, logs the change with its reason and writes the superblock when the event's
//! [`Persist`] says so. The fields are private to this module, so no other code can rotate a
//! UUID or set a flag (the compiler enforces it; `core_is_sans_io`'s
//! `generation_changes_only_through_gen_change` catches a copy written back).
//!
//! Every change a restart must see reaches the superblock write issued in the same input (or,
//! for a SyncTarget's sync UUID, the one that starts the resync): `unsaved` remembers a
//! change no superblock write has carried yet, and `Engine::check_invariants` asserts it is
//! gone after each input.
//!
//! In simulation builds (feature `sim`) every change is also kept in a log the simulator
//! drains after each input and checks (`sim/generation_check.rs`).

use crate::core::contract::io::MetaOpKind;
use crate::core::contract::rng::Rng;
use crate::core::state::{ConnState, DiskState, Role};
use crate::meta::superblock::{GenerationUuids, MdFlags, UuidIndex, UUID_JUST_CREATED};

/// Log entries kept between two drains (simulation builds): bounded should a simulation stop
/// draining it; the simulator drains it after every input, long before this.
#[cfg(feature = "sim")]
const LOG_MAX: usize = 4096;

/// What happened to the data generation (docs/drbd-semantics.md §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GenEvent {
    /// `primary` (drbd_set_role): a node that will write without its peer (`degraded`, and no
    /// bitmap UUID yet), or one `forced`, starts a new generation; otherwise only the role bit
    /// is set.
    Promote { degraded: bool, forced: bool },
    /// `secondary`, or a split-brain victim's demotion: the role bit is cleared.
    Demote,
    /// A disk attached: its generation and flags as read. The role bit is cleared; a Primary
    /// that went down without demoting is remembered as a crashed primary (its AL extents were
    /// replayed into the bitmap by the driver, UUID flag 2 at the handshake); a pending full
    /// sync is taken over by the bitmap (the caller set every bit).
    Attach {
        uuids: GenerationUuids,
        flags: MdFlags,
        unclean: bool,
    },
    /// A Primary with UpToDate data lost its connected peer: a new current UUID (unless a
    /// bitmap UUID is pending already), so that the returning peer resyncs from us.
    LostPeer,
    /// The new generation a link loss under frozen I/O put off: I/O thaws, or a new
    /// handshake starts (DRBD's NEW_CUR_UUID).
    DeferredGeneration,
    /// The peer's disk went away while a Primary writes (`primary`: this node is it): a new
    /// current UUID unless a bitmap UUID is pending, written at once.
    PeerDiskGone { primary: bool },
    /// `new-current-uuid`: the bitmap UUID goes to history, a new current UUID.
    NewCurrentUuid { primary: bool },
    /// `new-current-uuid --clear-bitmap` between two fresh disks: no bitmap UUID (nothing to
    /// resync).
    SkipInitialSync,
    /// The peer skipped the initial sync (UUID flag 8): adopt its current UUID, no bitmap
    /// UUID.
    PeerSkippedInitialSync { peer_current: u64 },
    /// This node becomes SyncSource: a new bitmap UUID (`drbd_gen_and_send_sync_uuid`), sent
    /// to the target as its sync UUID.
    StartSyncSource,
    /// The SyncTarget adopts the source's sync UUID as its current (no history), no bitmap
    /// UUID.
    SyncUuid(u64),
    /// The SyncTarget finished (drbd_resync_finished): its sync UUID goes to history, the
    /// source's current is adopted.
    FinishTarget { peer_current: u64, primary: bool },
    /// The SyncSource finished: its bitmap UUID goes to history.
    FinishSource,
    /// A handshake found a split brain it could not resolve (true), or reached a decision.
    SplitBrain(bool),
    /// Both disks are UpToDate again: a crashed primary's replay is no longer owed.
    ClearCrashedPrimary,
    /// The flags that follow the visible state (DRBD's drbd_md_sync rules).
    StateFlags {
        disk: DiskState,
        role: Role,
        cstate: ConnState,
        pdsk: DiskState,
        peer_fenced: bool,
    },
}

/// Which superblock write carries a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persist {
    /// `gen_change` issues it at once.
    Now,
    /// The caller issues it in the same input: the state change that goes with the event
    /// (with `.persist()`), or `persist_superblock`. The caller needs that write's `IoId`: an
    /// admin reply waits for it, and so does the generation gate (`Freeze`).
    Caller,
    /// The SyncTarget's sync UUID: written when the resync starts (`begin_resync`), once
    /// before-resync-target returned, as DRBD's receive_sync_uuid leaves it to
    /// drbd_start_resync.
    AtResyncStart,
}

impl GenEvent {
    /// Which superblock write carries the change.
    pub(crate) fn persist(&self) -> Persist {
        match self {
            GenEvent::PeerDiskGone { .. }
            | GenEvent::SplitBrain(_)
            | GenEvent::ClearCrashedPrimary => Persist::Now,
            GenEvent::SyncUuid(_) => Persist::AtResyncStart,
            _ => Persist::Caller,
        }
    }

    /// Why, for the log line.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            GenEvent::Promote { forced: true, .. } => "forced promotion",
            GenEvent::Promote { degraded: true, .. } => "promoted without the peer",
            GenEvent::Promote { .. } => "promoted",
            GenEvent::Demote => "demoted",
            GenEvent::Attach { .. } => "disk attached",
            GenEvent::LostPeer => "Primary lost its peer",
            GenEvent::DeferredGeneration => "writes go on without the peer after fencing froze I/O",
            GenEvent::PeerDiskGone { .. } => "peer's disk is gone while a Primary writes",
            GenEvent::NewCurrentUuid { .. } => "new-current-uuid",
            GenEvent::SkipInitialSync => "new-current-uuid --clear-bitmap: initial sync skipped",
            GenEvent::PeerSkippedInitialSync { .. } => "peer skipped the initial sync",
            GenEvent::StartSyncSource => "resync starts as SyncSource",
            GenEvent::SyncUuid(_) => "resync starts as SyncTarget (sync UUID)",
            GenEvent::FinishTarget { .. } => "resync done as SyncTarget",
            GenEvent::FinishSource => "resync done as SyncSource",
            GenEvent::SplitBrain(true) => "unresolved split brain",
            GenEvent::SplitBrain(false) => "split brain resolved",
            GenEvent::ClearCrashedPrimary => "both disks UpToDate",
            GenEvent::StateFlags { .. } => "state change",
        }
    }

    /// The events after which the current UUID may be a fresh random one (drbd-semantics
    /// §2.3): `drbd_uuid_new_current`.
    #[cfg(feature = "sim")]
    pub(crate) fn starts_generation(&self) -> bool {
        matches!(
            self,
            GenEvent::Promote { .. }
                | GenEvent::LostPeer
                | GenEvent::DeferredGeneration
                | GenEvent::PeerDiskGone { .. }
                | GenEvent::NewCurrentUuid { .. }
        )
    }

    /// The events that replace the current UUID with one from elsewhere: the disk, or the
    /// peer (the peer's value: `adopted_from_peer`).
    #[cfg(feature = "sim")]
    pub(crate) fn adopts_current(&self) -> bool {
        matches!(self, GenEvent::Attach { .. }) || self.adopted_from_peer().is_some()
    }

    /// The peer's UUID an event adopts as the current one.
    #[cfg(feature = "sim")]
    pub(crate) fn adopted_from_peer(&self) -> Option<u64> {
        match *self {
            GenEvent::PeerSkippedInitialSync { peer_current }
            | GenEvent::FinishTarget { peer_current, .. } => Some(peer_current),
            GenEvent::SyncUuid(u) => Some(u),
            _ => None,
        }
    }
}

/// What an event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GenChange {
    pub(crate) event: GenEvent,
    pub(crate) before: (GenerationUuids, MdFlags),
    pub(crate) after: (GenerationUuids, MdFlags),
    /// The UUID the event made for the peer (`StartSyncSource`'s sync UUID).
    pub(crate) sent: Option<u64>,
    /// The superblock write `gen_change` issued for a `Persist::Now` change.
    pub(crate) written: Option<crate::core::contract::ids::IoId>,
}

impl GenChange {
    /// The current UUID (role bit aside) changed.
    #[cfg(test)]
    pub(crate) fn rotated(&self) -> bool {
        self.before.0.current & !1 != self.after.0.current & !1
    }
    pub(crate) fn uuids_changed(&self) -> bool {
        self.before.0 != self.after.0
    }
    pub(crate) fn flags_changed(&self) -> bool {
        self.before.1 != self.after.1
    }
    pub(crate) fn changed(&self) -> bool {
        self.uuids_changed() || self.flags_changed()
    }
}

/// The generation UUIDs and metadata flags of the attached disk.
#[derive(Debug, Default)]
pub(crate) struct Generation {
    uuids: GenerationUuids,
    flags: MdFlags,
    /// The first change no superblock write has carried yet.
    unsaved: Option<GenEvent>,
    /// Every change, for the simulator's checks (drained after each input).
    #[cfg(feature = "sim")]
    log: Vec<GenChange>,
}

impl Generation {
    pub(crate) fn uuids(&self) -> GenerationUuids {
        self.uuids
    }
    pub(crate) fn flags(&self) -> MdFlags {
        self.flags
    }

    /// The current UUID is the one create-md wrote (no data generation yet).
    pub(crate) fn just_created(&self) -> bool {
        self.uuids.current & !1 == UUID_JUST_CREATED
    }

    /// A change no superblock write has carried yet.
    pub(crate) fn unsaved(&self) -> Option<GenEvent> {
        self.unsaved
    }

    /// The superblock write that carries the generation as it is now; every change so far is
    /// saved with it.
    pub(crate) fn superblock(&mut self, clean: bool) -> MetaOpKind {
        self.unsaved = None;
        MetaOpKind::Superblock {
            uuids: self.uuids,
            flags: self.flags,
            clean,
        }
    }

    /// What the peer holds once it has adopted our generation after we sent it
    /// skip-initial-sync: the mirror of `PeerSkippedInitialSync`, for our record of the
    /// peer's UUIDs (a SyncTarget finish here adopts the peer's current UUID from that
    /// record, and a stale one is a false split brain at the next handshake: simulator seeds
    /// 2685 and 5195).
    pub(crate) fn adopted_by_peer_on_skip(&self, peer: &mut GenerationUuids) {
        peer.current = self.uuids.current & !1;
        peer.bitmap = 0;
    }

    /// Carry out `ev`. Draws from `rng` only when a fresh UUID is made, as DRBD does.
    pub(crate) fn apply(&mut self, ev: GenEvent, rng: &mut Rng) -> GenChange {
        let before = (self.uuids, self.flags);
        let mut sent = None;
        let u = &mut self.uuids;
        match ev {
            GenEvent::Promote { degraded, forced } => {
                if (degraded && u.bitmap == 0) || forced {
                    u.new_current(rng.uuid(), true);
                } else {
                    u.current |= 1;
                }
            }
            GenEvent::Demote => u.current &= !1,
            GenEvent::Attach {
                uuids,
                mut flags,
                unclean,
            } => {
                if unclean && (flags.primary_ind() || flags.crashed_primary()) {
                    flags.set_crashed_primary(true);
                }
                flags.set_full_sync(false);
                *u = uuids;
                u.current &= !1;
                self.flags = flags;
            }
            GenEvent::LostPeer | GenEvent::DeferredGeneration => {
                if u.bitmap == 0 {
                    u.new_current(rng.uuid(), true);
                }
            }
            GenEvent::PeerDiskGone { primary } => {
                if u.bitmap == 0 {
                    u.new_current(rng.uuid(), primary);
                }
            }
            GenEvent::NewCurrentUuid { primary } => {
                u.clear_bitmap_uuid();
                u.new_current(rng.uuid(), primary);
            }
            GenEvent::SkipInitialSync => u.bitmap = 0,
            GenEvent::PeerSkippedInitialSync { peer_current } => {
                u.current = peer_current & !1;
                u.bitmap = 0;
            }
            GenEvent::StartSyncSource => sent = Some(u.start_sync_source(rng.uuid())),
            GenEvent::SyncUuid(uuid) => {
                u.set_no_history(UuidIndex::Current, uuid, false);
                u.bitmap = 0;
            }
            GenEvent::FinishTarget {
                peer_current,
                primary,
            } => {
                let own = u.current;
                u.set(UuidIndex::Bitmap, own & !1, primary);
                u.set_no_history(UuidIndex::Current, peer_current, primary);
                u.clear_bitmap_uuid();
            }
            GenEvent::FinishSource => u.clear_bitmap_uuid(),
            GenEvent::SplitBrain(on) => self.flags.set_split_brain(on),
            GenEvent::ClearCrashedPrimary => self.flags.set_crashed_primary(false),
            GenEvent::StateFlags {
                disk,
                role,
                cstate,
                pdsk,
                peer_fenced,
            } => {
                let f = &mut self.flags;
                if disk >= DiskState::Inconsistent {
                    f.set_consistent(disk > DiskState::Inconsistent);
                    if disk == DiskState::UpToDate {
                        f.set_was_up_to_date(true);
                    } else if disk <= DiskState::Outdated {
                        f.set_was_up_to_date(false);
                    }
                }
                f.set_primary_ind(role == Role::Primary);
                f.set_connected_ind(cstate >= ConnState::Connected);
                // As DRBD 8.4's __drbd_set_state: a peer known Inconsistent or Outdated (a
                // fence-peer exit 3 as well as 4/5/7) is not promotable, and a restart must
                // still know it. Kept through the resync that follows a fencing, so that a
                // restart still owes `unfence-peer`.
                f.set_peer_out_dated(
                    matches!(pdsk, DiskState::Inconsistent | DiskState::Outdated)
                        || (peer_fenced && pdsk != DiskState::UpToDate),
                );
            }
        }
        let change = GenChange {
            event: ev,
            before,
            after: (self.uuids, self.flags),
            sent,
            written: None,
        };
        if change.changed() {
            // A change that must be written in this input takes over from one that may wait.
            if self
                .unsaved
                .is_none_or(|u| u.persist() == Persist::AtResyncStart)
            {
                self.unsaved = Some(ev);
            }
            #[cfg(feature = "sim")]
            {
                if self.log.len() >= LOG_MAX {
                    self.log.drain(..LOG_MAX / 2);
                }
                self.log.push(change);
            }
        }
        change
    }

    /// The changes since the last call (simulation builds).
    #[cfg(feature = "sim")]
    pub(crate) fn take_log(&mut self) -> Vec<GenChange> {
        std::mem::take(&mut self.log)
    }
}

/// DRBD's drbd_print_uuids order: current, bitmap, history.
fn fmt_uuids(u: &GenerationUuids) -> String {
    format!(
        "{:016X}:{:016X}:{:016X}:{:016X}",
        u.current, u.bitmap, u.history[0], u.history[1]
    )
}

/// Log a change the way `change_state` logs one: what changed and why. UUID changes and the
/// flags a node owes its peer (split brain, crashed primary) at info; the flags that follow
/// the visible state (logged there already) at debug.
pub(crate) fn log_change(resource: &str, c: &GenChange) {
    let why = c.event.reason();
    if c.uuids_changed() {
        tracing::info!(resource = %resource, "uuids( {} -> {} ): {why}", fmt_uuids(&c.before.0), fmt_uuids(&c.after.0));
    }
    if c.flags_changed() {
        let (old, new) = (c.before.1.names().join(","), c.after.1.names().join(","));
        if matches!(c.event, GenEvent::StateFlags { .. }) {
            tracing::debug!(resource = %resource, "flags( {old} -> {new} ): {why}");
        } else {
            tracing::info!(resource = %resource, "flags( {old} -> {new} ): {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(current: u64) -> (Generation, Rng) {
        let mut g = Generation::default();
        let mut rng = Rng::new(1);
        let attach = GenEvent::Attach {
            uuids: GenerationUuids {
                current,
                ..Default::default()
            },
            flags: MdFlags::default(),
            unclean: false,
        };
        g.apply(attach, &mut rng);
        (g, rng)
    }

    #[test]
    fn a_degraded_promotion_starts_a_generation_and_keeps_the_old_one() {
        let (mut g, mut rng) = attached(0x100);
        let ch = g.apply(
            GenEvent::Promote {
                degraded: true,
                forced: false,
            },
            &mut rng,
        );
        assert!(ch.rotated());
        assert_eq!(g.uuids().bitmap, 0x100);
        assert_eq!(g.uuids().current & 1, 1, "role bit");
        // With a bitmap UUID pending, another promotion only sets the role bit.
        g.apply(GenEvent::Demote, &mut rng);
        let again = g.apply(
            GenEvent::Promote {
                degraded: true,
                forced: false,
            },
            &mut rng,
        );
        assert!(!again.rotated());
        assert!(again.uuids_changed(), "the role bit is set");
        #[cfg(feature = "sim")]
        assert_eq!(g.take_log().len(), 4);
    }

    #[test]
    fn a_change_is_unsaved_until_a_superblock_carries_it() {
        let (mut g, mut rng) = attached(0x100);
        assert_eq!(g.unsaved().map(|e| e.persist()), Some(Persist::Caller));
        let _ = g.superblock(false);
        assert_eq!(g.unsaved(), None);
        // No change, nothing owed.
        g.apply(GenEvent::ClearCrashedPrimary, &mut rng);
        assert_eq!(g.unsaved(), None);
        // A sync UUID may wait for the resync start; a change that may not takes over.
        g.apply(GenEvent::SyncUuid(0x200), &mut rng);
        assert_eq!(g.unsaved(), Some(GenEvent::SyncUuid(0x200)));
        g.apply(GenEvent::SplitBrain(true), &mut rng);
        assert_eq!(g.unsaved(), Some(GenEvent::SplitBrain(true)));
        g.apply(GenEvent::SyncUuid(0x300), &mut rng);
        assert_eq!(g.unsaved(), Some(GenEvent::SplitBrain(true)));
    }

    #[test]
    fn the_peer_record_after_skip_initial_sync_mirrors_the_adoption() {
        let (mut g, mut rng) = attached(UUID_JUST_CREATED);
        g.apply(GenEvent::NewCurrentUuid { primary: true }, &mut rng);
        g.apply(GenEvent::SkipInitialSync, &mut rng);
        let mut record = GenerationUuids::just_created();
        record.bitmap = 0x77;
        g.adopted_by_peer_on_skip(&mut record);
        // What the peer computes on receipt from what we sent (`on_uuids`).
        let (mut peer, mut rng2) = attached(UUID_JUST_CREATED);
        peer.apply(
            GenEvent::PeerSkippedInitialSync {
                peer_current: g.uuids().current,
            },
            &mut rng2,
        );
        assert_eq!(record.current, peer.uuids().current);
        assert_eq!(record.bitmap, peer.uuids().bitmap);
    }
}
