//! Split-brain auto-recovery policies: `after-sb-0pri`, `after-sb-1pri`, `after-sb-2pri`
//! (docs/drbd-semantics.md §3, DRBD's drbd_asb_recover_0p/1p/2p). Pure: the handshake feeds the facts
//! of both sides and gets a direction, or none (the split brain stays for an operator).

use crate::core::state::Role;
use rep_resources::{AfterSb0, AfterSb1, AfterSb2};

/// What the policies look at, from our side of the connection.
#[derive(Debug, Clone)]
pub(crate) struct SplitFacts<'a> {
    pub node: &'a str,
    pub role: Role,
    pub peer_role: Role,
    /// Bit 0 of each side's bitmap UUID: set on the node that was already Primary when the
    /// split began (the other one became Primary during it: the "younger" Primary).
    pub self_was_primary: bool,
    pub peer_was_primary: bool,
    /// Blocks each side changed during the split (its bitmap's set bits).
    pub changes_self: u64,
    pub changes_peer: u64,
    /// We hold DRBD's RESOLVE_CONFLICTS flag: ties make us the target.
    pub resolve_conflicts: bool,
    /// We could demote ourselves now (no client has the device open).
    pub can_demote: bool,
}

/// The outcome of a policy: which side keeps its data, and whether we must demote first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SbVerdict {
    /// Our data wins: we become SyncSource.
    Source,
    /// The peer's data wins: we become SyncTarget (after demoting if `demote`).
    Target { demote: bool },
    /// We are the Primary that lost, but in use and cannot be demoted: no decision, and DRBD's
    /// `pri-lost-after-sb` handler runs.
    PriLost,
}

/// Apply the policy for the number of Primaries now. `None` = no decision.
pub(crate) fn recover(
    p0: &AfterSb0,
    p1: AfterSb1,
    p2: AfterSb2,
    f: &SplitFacts<'_>,
) -> Option<SbVerdict> {
    let primaries = u8::from(f.role == Role::Primary) + u8::from(f.peer_role == Role::Primary);
    match primaries {
        0 => recover_0p(p0, f).map(as_verdict),
        1 => recover_1p(p0, p1, f),
        _ => recover_2p(p0, p2, f),
    }
}

fn as_verdict(source: bool) -> SbVerdict {
    if source {
        SbVerdict::Source
    } else {
        SbVerdict::Target { demote: false }
    }
}

/// `Some(true)`: we are the source.
fn recover_0p(policy: &AfterSb0, f: &SplitFacts<'_>) -> Option<bool> {
    let tie = Some(!f.resolve_conflicts);
    let by_changes = |zero_only: bool| -> Option<bool> {
        let (s, p) = (f.changes_self, f.changes_peer);
        if s == 0 && p == 0 {
            return tie;
        }
        if p == 0 {
            return Some(true);
        }
        if s == 0 {
            return Some(false);
        }
        if zero_only {
            return None;
        }
        match s.cmp(&p) {
            std::cmp::Ordering::Less => Some(false),
            std::cmp::Ordering::Greater => Some(true),
            std::cmp::Ordering::Equal => tie,
        }
    };
    let younger_older = |discard_younger: bool| -> Option<bool> {
        match (f.self_was_primary, f.peer_was_primary) {
            // We became Primary during the split: we are the younger Primary.
            (false, true) => Some(!discard_younger),
            (true, false) => Some(discard_younger),
            _ => {
                tracing::warn!("Discard younger/older primary did not find a decision; using discard-least-changes instead");
                by_changes(false)
            }
        }
    };
    match policy {
        AfterSb0::Disconnect => None,
        AfterSb0::DiscardYoungerPrimary => younger_older(true),
        AfterSb0::DiscardOlderPrimary => younger_older(false),
        AfterSb0::DiscardZeroChanges => by_changes(true),
        AfterSb0::DiscardLeastChanges => by_changes(false),
        AfterSb0::DiscardLocal => Some(false),
        AfterSb0::DiscardRemote => Some(true),
        // drbdadm turns this into discard-local on NAME and discard-remote elsewhere.
        AfterSb0::DiscardNode(name) => Some(name != f.node),
    }
}

fn recover_1p(p0: &AfterSb0, policy: AfterSb1, f: &SplitFacts<'_>) -> Option<SbVerdict> {
    let primary = f.role == Role::Primary;
    match policy {
        AfterSb1::Disconnect => None,
        AfterSb1::DiscardSecondary => Some(as_verdict(primary)),
        // Only a result that discards the Secondary's changes.
        AfterSb1::Consensus => match recover_0p(p0, f) {
            Some(source) if source == primary => Some(as_verdict(source)),
            _ => None,
        },
        AfterSb1::ViolentlyAs0p => recover_0p(p0, f).map(as_verdict),
        AfterSb1::CallPriLostAfterSb => pri_lost(p0, f),
    }
}

fn recover_2p(p0: &AfterSb0, policy: AfterSb2, f: &SplitFacts<'_>) -> Option<SbVerdict> {
    match policy {
        AfterSb2::Disconnect => None,
        AfterSb2::ViolentlyAs0p => recover_0p(p0, f).map(as_verdict),
        AfterSb2::CallPriLostAfterSb => pri_lost(p0, f),
    }
}

/// The 0pri verdict, with a losing Primary demoted first; if it cannot be demoted, `PriLost`
/// (no decision; the `pri-lost-after-sb` handler runs).
fn pri_lost(p0: &AfterSb0, f: &SplitFacts<'_>) -> Option<SbVerdict> {
    match recover_0p(p0, f)? {
        true => Some(SbVerdict::Source),
        false if f.role != Role::Primary => Some(SbVerdict::Target { demote: false }),
        false if f.can_demote => Some(SbVerdict::Target { demote: true }),
        false => Some(SbVerdict::PriLost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(role: Role, peer_role: Role, ch: (u64, u64)) -> SplitFacts<'static> {
        SplitFacts {
            node: "node-a",
            role,
            peer_role,
            self_was_primary: false,
            peer_was_primary: false,
            changes_self: ch.0,
            changes_peer: ch.1,
            resolve_conflicts: false,
            can_demote: true,
        }
    }
    use Role::{Primary as P, Secondary as S};

    /// The policies as written in a `.res` file.
    fn p0(s: &str) -> AfterSb0 {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }
    fn recover_0p(policy: &str, f: &SplitFacts<'_>) -> Option<bool> {
        super::recover_0p(&p0(policy), f)
    }
    fn recover(a: &str, b: &str, c: &str, f: &SplitFacts<'_>) -> Option<SbVerdict> {
        let (b, c) = (b.parse(), c.parse());
        super::recover(
            &p0(a),
            b.unwrap_or_else(|e| panic!("{e}")),
            c.unwrap_or_else(|e| panic!("{e}")),
            f,
        )
    }

    #[test]
    fn zero_changes_discards_the_side_that_wrote_nothing() {
        let f = facts(S, S, (0, 7));
        assert_eq!(recover_0p("discard-zero-changes", &f), Some(false));
        let f = facts(S, S, (7, 0));
        assert_eq!(recover_0p("discard-zero-changes", &f), Some(true));
        let f = facts(S, S, (3, 7));
        assert_eq!(recover_0p("discard-zero-changes", &f), None);
        assert_eq!(recover_0p("discard-least-changes", &f), Some(false));
        // Both unchanged: the RESOLVE_CONFLICTS holder is the target, on both sides alike.
        let mut f = facts(S, S, (0, 0));
        assert_eq!(recover_0p("discard-zero-changes", &f), Some(true));
        f.resolve_conflicts = true;
        assert_eq!(recover_0p("discard-zero-changes", &f), Some(false));
    }

    #[test]
    fn younger_primary_and_node_policies() {
        let mut f = facts(S, S, (5, 5));
        f.peer_was_primary = true;
        assert_eq!(recover_0p("discard-younger-primary", &f), Some(false));
        assert_eq!(recover_0p("discard-older-primary", &f), Some(true));
        assert_eq!(recover_0p("discard-node-node-a", &f), Some(false));
        assert_eq!(recover_0p("discard-node-node-b", &f), Some(true));
        assert!("consensus".parse::<AfterSb0>().is_err());
    }

    #[test]
    fn one_primary_policies() {
        let f = facts(S, P, (9, 1));
        assert_eq!(
            recover(
                "discard-zero-changes",
                "discard-secondary",
                "disconnect",
                &f
            ),
            Some(SbVerdict::Target { demote: false })
        );
        let f = facts(P, S, (9, 1));
        assert_eq!(
            recover(
                "discard-zero-changes",
                "discard-secondary",
                "disconnect",
                &f
            ),
            Some(SbVerdict::Source)
        );
        // consensus: 0pri (least changes) would discard the Primary here: no decision.
        let f = facts(P, S, (1, 9));
        assert_eq!(
            recover("discard-least-changes", "consensus", "disconnect", &f),
            None
        );
        assert_eq!(
            recover("discard-least-changes", "violently-as0p", "disconnect", &f),
            Some(SbVerdict::Target { demote: false })
        );
        assert_eq!(
            recover(
                "discard-least-changes",
                "call-pri-lost-after-sb",
                "disconnect",
                &f
            ),
            Some(SbVerdict::Target { demote: true })
        );
        let mut busy = f.clone();
        busy.can_demote = false;
        assert_eq!(
            recover(
                "discard-least-changes",
                "call-pri-lost-after-sb",
                "disconnect",
                &busy
            ),
            Some(SbVerdict::PriLost)
        );
    }

    #[test]
    fn two_primaries_default_to_disconnect() {
        let f = facts(P, P, (1, 9));
        assert_eq!(
            recover(
                "discard-least-changes",
                "discard-secondary",
                "disconnect",
                &f
            ),
            None
        );
        assert_eq!(
            recover(
                "discard-least-changes",
                "discard-secondary",
                "violently-as0p",
                &f
            ),
            Some(SbVerdict::Target { demote: false })
        );
    }
}
