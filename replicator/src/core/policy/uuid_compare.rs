//! `drbd_uuid_compare` (docs/drbd-semantics.md §2.5): which way, if any, two nodes must resync.
//! Pure function of both sides' generation UUIDs and flags, so both nodes reach mirrored
//! verdicts independently.

use crate::meta::superblock::{GenerationUuids, UUID_JUST_CREATED, UUID_NEW_BM_OFFSET};

/// Outcome of the comparison, from our point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncDecision {
    /// Same data generation: nothing to do.
    NoSync,
    /// We have newer data: become SyncSource; `full` means every block.
    Source { full: bool },
    /// The peer has newer data: become SyncTarget.
    Target { full: bool },
    /// Both sides wrote on top of a common generation (`auto_recoverable` = DRBD's 100).
    SplitBrain { auto_recoverable: bool },
    /// No common ancestry: refusing to touch either side.
    Unrelated,
}

/// One side's inputs to the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideUuids {
    pub uuids: GenerationUuids,
    pub crashed_primary: bool,
    pub primary: bool,
}

/// Returns the decision and the rule number that produced it (logged, as DRBD does).
pub fn compare(me: &SideUuids, peer: &SideUuids, resolve_conflicts: bool) -> (SyncDecision, u32) {
    use SyncDecision::*;
    let m = me.uuids.masked();
    let p = peer.uuids.masked();
    let (c, b, h) = (m.current, m.bitmap, m.history);
    let (pc, pb, ph) = (p.current, p.bitmap, p.history);
    let jc = UUID_JUST_CREATED;
    if c == jc && pc == jc {
        return (NoSync, 10);
    }
    if (c == jc || c == 0) && pc != jc {
        return (Target { full: true }, 20);
    }
    if c != jc && (pc == jc || pc == 0) {
        return (Source { full: true }, 30);
    }
    if c == pc {
        if pb == 0 && b != 0 {
            return (Source { full: false }, 34);
        }
        if b == 0 && pb != 0 {
            return (Target { full: false }, 35);
        }
        let decision = match (me.crashed_primary, peer.crashed_primary) {
            (false, false) => return (NoSync, 40),
            _ if me.primary && peer.primary => {
                return (
                    SplitBrain {
                        auto_recoverable: false,
                    },
                    41,
                )
            }
            _ if me.primary => Source { full: false },
            _ if peer.primary => Target { full: false },
            (true, false) => Source { full: false },
            (false, true) => Target { full: false },
            (true, true) if resolve_conflicts => Target { full: false },
            (true, true) => Source { full: false },
        };
        return (decision, 41);
    }
    if pb != 0 && c == pb {
        return (Target { full: false }, 50);
    }
    if ph[0] != 0 && c == ph[0] && ph[0].wrapping_add(UUID_NEW_BM_OFFSET) == pb {
        return (Target { full: false }, 51);
    }
    if (ph[0] != 0 && c == ph[0]) || (ph[1] != 0 && c == ph[1]) {
        return (Target { full: true }, 60);
    }
    if b != 0 && b == pc {
        return (Source { full: false }, 70);
    }
    if h[0] != 0 && h[0] == pc && h[0].wrapping_add(UUID_NEW_BM_OFFSET) == b {
        return (Source { full: false }, 71);
    }
    if (h[0] != 0 && pc == h[0]) || (h[1] != 0 && pc == h[1]) {
        return (Source { full: true }, 80);
    }
    if b != 0 && b == pb {
        return (
            SplitBrain {
                auto_recoverable: true,
            },
            90,
        );
    }
    let mine = [h[0], h[1]];
    if mine.iter().any(|&x| x != 0 && ph.contains(&x)) {
        return (
            SplitBrain {
                auto_recoverable: false,
            },
            100,
        );
    }
    (Unrelated, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(current: u64, bitmap: u64, history: [u64; 2]) -> SideUuids {
        SideUuids {
            uuids: GenerationUuids {
                current,
                bitmap,
                history,
            },
            crashed_primary: false,
            primary: false,
        }
    }

    /// Both nodes must reach mirrored verdicts, or they would both wait or both send.
    fn mirrored(a: &SideUuids, b: &SideUuids) -> SyncDecision {
        let (x, rx) = compare(a, b, true);
        let (y, ry) = compare(b, a, false);
        let mirror = match y {
            SyncDecision::Source { full } => SyncDecision::Target { full },
            SyncDecision::Target { full } => SyncDecision::Source { full },
            other => other,
        };
        assert_eq!(x, mirror, "rules {rx}/{ry}");
        x
    }

    #[test]
    fn decision_table() {
        use SyncDecision::*;
        let fresh = side(UUID_JUST_CREATED, 0, [0, 0]);
        assert_eq!(mirrored(&fresh, &fresh), NoSync);
        let forced = side(0xA0, 0, [0, 0]);
        assert_eq!(mirrored(&forced, &fresh), Source { full: true });
        // Primary kept writing while the peer was away: its bitmap UUID is the peer's current.
        let primary = side(0xB0, 0xA0, [0, 0]);
        let secondary = side(0xA0, 0, [0, 0]);
        assert_eq!(mirrored(&primary, &secondary), Source { full: false });
        // Same generation, no crash: a network hiccup.
        assert_eq!(mirrored(&secondary, &secondary), NoSync);
        // Both promoted while apart: split brain.
        let other = side(0xC0, 0xA0, [0, 0]);
        assert_eq!(
            mirrored(&primary, &other),
            SplitBrain {
                auto_recoverable: true
            }
        );
        // The peer's history knows our current, but its bitmap does not: full sync from it.
        assert_eq!(
            mirrored(&side(0xA0, 0, [0, 0]), &side(0xD0, 0, [0xA0, 0])),
            Target { full: true }
        );
        assert_eq!(
            mirrored(&side(0x10, 0, [0x11, 0]), &side(0x20, 0, [0x21, 0])),
            Unrelated
        );
        assert_eq!(
            mirrored(&side(0x10, 0, [0x33, 0]), &side(0x20, 0, [0x33, 0])),
            SplitBrain {
                auto_recoverable: false
            }
        );
    }

    #[test]
    fn crashed_primary_resyncs_from_the_survivor_or_to_the_peer() {
        let mut a = side(0xA0, 0, [0, 0]);
        let b = side(0xA0, 0, [0, 0]);
        a.crashed_primary = true;
        assert_eq!(mirrored(&a, &b), SyncDecision::Source { full: false });
        let mut b2 = b;
        b2.primary = true;
        assert_eq!(mirrored(&a, &b2), SyncDecision::Target { full: false });
    }
}
