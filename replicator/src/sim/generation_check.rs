//! Invariants over the generation changes each engine logs in simulation builds
//! (`Engine::take_generation_log`, core/device/generation.rs), checked after every input. They
//! are DRBD's rules (docs/drbd-semantics.md §2.2, §2.3), stated over one change and over the
//! history of both nodes:
//!
//! 1. An event changes only what its rule changes: the current UUID only when it starts a
//!    generation or adopts one (from the disk, or the peer); a role change only the role bit;
//!    a flag only through the event that owns it.
//! 2. A new generation keeps the one it supersedes as its bitmap UUID (`drbd_uuid_new_current`):
//!    the returning peer's resync finds the common base there.
//! 3. A node's current UUID never goes back to one it superseded (across restarts), unless it
//!    adopts it: from its own disk at attach, or from the peer in a sync.
//! 4. A UUID adopted from the peer is one the peer held (as current or bitmap UUID): a node
//!    never invents a generation it claims to share.
//! 5. A resync's end leaves no bitmap UUID on either side; the SyncTarget holds the source's
//!    current UUID and keeps its own sync UUID in history.
//! 6. The SyncSource's sync UUID is its new bitmap UUID, and it is what it sends.

use std::collections::HashSet;

use crate::core::{GenChange, GenEvent};
use crate::meta::superblock::{GenerationUuids, MdFlags};

/// What the checks remember of each node across inputs and restarts.
#[derive(Debug, Default)]
pub(crate) struct GenerationCheck {
    /// Per node: current UUIDs (role bit masked) it superseded.
    superseded: [HashSet<u64>; 2],
    /// Per node: every UUID it held as current or bitmap UUID (role bit masked).
    held: [HashSet<u64>; 2],
}

/// The flags that follow the visible state (`GenEvent::StateFlags`).
const STATE_FLAGS: u32 = MdFlags::CONSISTENT
    | MdFlags::WAS_UP_TO_DATE
    | MdFlags::PRIMARY_IND
    | MdFlags::CONNECTED_IND
    | MdFlags::PEER_OUT_DATED;

/// The flags an event may change.
fn flags_owned(ev: &GenEvent) -> u32 {
    match ev {
        GenEvent::Attach { .. } => MdFlags::ALL,
        GenEvent::StateFlags { .. } => STATE_FLAGS,
        GenEvent::SplitBrain(_) => MdFlags::SPLIT_BRAIN,
        GenEvent::ClearCrashedPrimary => MdFlags::CRASHED_PRIMARY,
        _ => 0,
    }
}

impl GenerationCheck {
    /// Check the changes node `i` made in one input. Panics with the rule broken.
    pub(crate) fn check(&mut self, i: usize, changes: &[GenChange]) {
        for c in changes {
            self.check_one(i, c);
            for u in [c.after.0.current, c.after.0.bitmap] {
                if u & !1 != 0 {
                    self.held[i].insert(u & !1);
                }
            }
        }
    }

    fn check_one(&mut self, i: usize, c: &GenChange) {
        let (before, after) = (c.before.0.masked(), c.after.0.masked());
        let ev = c.event;
        let show = |(u, f): (GenerationUuids, MdFlags)| {
            format!(
                "{:X}:{:X}:{:X}:{:X} flags {:#x}",
                u.current,
                u.bitmap,
                u.history[0],
                u.history[1],
                f.bits()
            )
        };
        let fail = |what: String| -> ! {
            panic!(
                "invariant violated: node {i}'s generation: {what} ({ev:?}: {} -> {})",
                show(c.before),
                show(c.after)
            )
        };
        // 1. Only what the event's rule changes.
        let changed_flags = c.before.1.bits() ^ c.after.1.bits();
        if changed_flags & !flags_owned(&ev) != 0 {
            fail(format!(
                "flags {changed_flags:#x} changed by an event that does not own them"
            ));
        }
        let rotated = before.current != after.current;
        if rotated && !ev.starts_generation() && !ev.adopts_current() {
            fail("the current UUID changed".into());
        }
        let touches_uuids = !matches!(
            ev,
            GenEvent::StateFlags { .. } | GenEvent::SplitBrain(_) | GenEvent::ClearCrashedPrimary
        );
        if !touches_uuids && c.before.0 != c.after.0 {
            fail("a flag event changed the UUIDs".into());
        }
        if matches!(ev, GenEvent::Demote | GenEvent::Promote { .. }) && !rotated {
            // A role change without a new generation: the role bit only.
            if before != after {
                fail("a role change moved a UUID".into());
            }
        }
        // 2. A new generation keeps the one it supersedes.
        if rotated && ev.starts_generation() && after.bitmap != before.current {
            fail(format!(
                "the new generation dropped the old current UUID {:#x}",
                before.current
            ));
        }
        // 3. No way back to a superseded generation but adoption.
        if rotated && !ev.adopts_current() && self.superseded[i].contains(&after.current) {
            fail(format!(
                "back to the superseded current UUID {:#x}",
                after.current
            ));
        }
        if rotated && !matches!(ev, GenEvent::Attach { .. }) {
            // An attach replaces what the engine remembered (nothing, after a restart).
            self.superseded[i].insert(before.current);
        }
        // 4. What is adopted from the peer, the peer held.
        if let Some(u) = ev.adopted_from_peer() {
            let peer = 1 - i;
            if !self.held[peer].contains(&(u & !1)) {
                fail(format!(
                    "adopted {u:#x}, which node {peer} never held as current or bitmap UUID"
                ));
            }
            if after.current != u & !1 {
                fail(format!("adopted {u:#x} but holds another current UUID"));
            }
        }
        // 5. and 6. The resync's UUIDs.
        match ev {
            GenEvent::SyncUuid(_) | GenEvent::FinishSource if after.bitmap != 0 => {
                fail("a bitmap UUID left".into())
            }
            GenEvent::FinishTarget { .. } => {
                if after.bitmap != 0 {
                    fail("a bitmap UUID left after the resync".into());
                }
                if after.history[0] != before.current {
                    fail("the sync UUID did not go to history".into());
                }
            }
            GenEvent::StartSyncSource => {
                let sent = c.sent.unwrap_or_default() & !1;
                if sent == 0 || after.bitmap != sent {
                    fail(format!("sync UUID {sent:#x} is not the new bitmap UUID"));
                }
                if before.bitmap != 0 && after.history[0] != before.bitmap {
                    fail("the old bitmap UUID did not go to history".into());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(event: GenEvent, before: [u64; 2], after: [u64; 2]) -> GenChange {
        let u = |[current, bitmap]: [u64; 2]| GenerationUuids {
            current,
            bitmap,
            history: [0x30, 0],
        };
        GenChange {
            event,
            before: (u(before), MdFlags::default()),
            after: (u(after), MdFlags::default()),
            sent: None,
            written: None,
        }
    }

    const PROMOTE: GenEvent = GenEvent::Promote {
        degraded: true,
        forced: false,
    };

    #[test]
    fn a_new_generation_that_keeps_the_old_one_passes() {
        let mut g = GenerationCheck::default();
        g.check(0, &[change(PROMOTE, [0x100, 0], [0x201, 0x100])]);
        g.check(
            0,
            &[change(GenEvent::Demote, [0x201, 0x100], [0x200, 0x100])],
        );
    }

    #[test]
    #[should_panic(expected = "the current UUID changed")]
    fn a_demotion_that_rotates_fails() {
        GenerationCheck::default().check(0, &[change(GenEvent::Demote, [0x101, 0], [0x200, 0])]);
    }

    #[test]
    #[should_panic(expected = "dropped the old current UUID")]
    fn a_new_generation_that_drops_the_old_one_fails() {
        let ev = GenEvent::LostPeer;
        GenerationCheck::default().check(0, &[change(ev, [0x100, 0], [0x201, 0x77])]);
    }

    #[test]
    #[should_panic(expected = "back to the superseded")]
    fn a_generation_drawn_twice_fails() {
        let mut g = GenerationCheck::default();
        g.check(0, &[change(PROMOTE, [0x100, 0], [0x201, 0x100])]);
        let again = GenEvent::NewCurrentUuid { primary: true };
        g.check(0, &[change(again, [0x201, 0x100], [0x301, 0x200])]);
        g.check(0, &[change(again, [0x301, 0x200], [0x101, 0x300])]);
    }

    #[test]
    #[should_panic(expected = "never held")]
    fn adopting_a_uuid_the_peer_never_had_fails() {
        let mut g = GenerationCheck::default();
        g.check(1, &[change(PROMOTE, [0x100, 0], [0x201, 0x100])]);
        g.check(
            0,
            &[change(GenEvent::SyncUuid(0x200), [0x100, 0], [0x200, 0])],
        );
        g.check(
            0,
            &[change(GenEvent::SyncUuid(0x500), [0x200, 0], [0x500, 0])],
        );
    }

    #[test]
    #[should_panic(expected = "a bitmap UUID left")]
    fn a_finished_resync_with_a_bitmap_uuid_fails() {
        GenerationCheck::default().check(
            0,
            &[change(GenEvent::FinishSource, [0x100, 0x50], [0x100, 0x50])],
        );
    }

    #[test]
    #[should_panic(expected = "does not own them")]
    fn a_flag_set_by_the_wrong_event_fails() {
        let mut c = change(GenEvent::FinishSource, [0x100, 0x50], [0x100, 0]);
        c.after.1 = MdFlags::from_bits(MdFlags::SPLIT_BRAIN).unwrap_or_default();
        GenerationCheck::default().check(0, &[c]);
    }
}
