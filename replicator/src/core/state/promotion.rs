//! When a node may be Primary (docs/drbd-semantics.md §1.3, §1.6, §9.1), in one place: the admin
//! rules of `is_valid_state` use them for every requested change, `primary` to decide whether
//! the fence-peer handler must run first. Pure functions of the state and the configuration.

use crate::core::contract::refusal::Refusal;
use crate::core::policy::quorum::Verdict;
use crate::core::state::{ConnState, DiskState, Role};
use rep_resources::Fencing;

/// What the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts {
    pub role: Role,
    pub peer_role: Role,
    pub cstate: ConnState,
    pub disk: DiskState,
    pub pdsk: DiskState,
    pub fencing: Fencing,
    pub allow_two_primaries: bool,
    /// The quorum verdict for this state (None while quorum is off).
    pub quorum: Option<Verdict>,
}

/// Access to UpToDate data: the local disk, or (without a usable disk of its own) the
/// connected peer's. rep reads from the peer only when it has no usable disk, so an
/// Inconsistent Primary is not allowed even with an UpToDate peer (DRBD allows it).
pub(crate) fn has_uptodate_data(f: &Facts) -> bool {
    let peer_data = f.cstate >= ConnState::Connected && f.pdsk == DiskState::UpToDate;
    f.disk == DiskState::UpToDate
        || matches!(f.disk, DiskState::Diskless | DiskState::Failed) && peer_data
}

/// Whether the peer's data is known not to be newer than ours: it is Outdated or worse.
/// DUnknown (a peer we lost without fencing it) may hold writes we never saw.
pub(crate) fn peer_known_outdated(pdsk: DiskState) -> bool {
    pdsk < DiskState::DUnknown
}

/// The rules for being Primary, in DRBD's order; `Ok` if `f` (with `f.role` Primary) may be.
///
/// 1. Not while the peer is Primary, unless `allow-two-primaries` (SS_TWO_PRIMARIES).
/// 2. Only with access to UpToDate data (SS_NO_UP_TO_DATE_DISK).
/// 3. With quorum on, only with quorum (SS_NO_QUORUM; docs/quorum.md).
/// 4. With fencing, disconnected, only if the peer is known Outdated (SS_PRIMARY_NOP): a
///    peer we cannot reach may have been promoted, or may hold writes we missed.
pub(crate) fn check(f: &Facts) -> Result<(), Refusal> {
    if f.role != Role::Primary {
        return Ok(());
    }
    if f.peer_role == Role::Primary && !f.allow_two_primaries {
        return Err(Refusal::TwoPrimaries {
            peer_role: f.peer_role,
        });
    }
    if !has_uptodate_data(f) {
        return Err(Refusal::NoUpToDateDisk {
            disk: f.disk,
            pdsk: f.pdsk,
        });
    }
    if let Some(q) = f.quorum.filter(|q| !q.quorum) {
        return Err(Refusal::NoQuorum {
            visible: q.up_to_date + q.present,
            voters: q.voters,
            needed: q.quorum_at,
        });
    }
    if f.fencing != Fencing::DontCare
        && f.cstate < ConnState::Connected
        && !peer_known_outdated(f.pdsk)
    {
        return Err(Refusal::PrimaryNop { pdsk: f.pdsk });
    }
    Ok(())
}

/// What `primary` does about a refusal: some are lifted by outdating the peer first (DRBD's
/// drbd_set_role: SS_PRIMARY_NOP, and SS_NO_UP_TO_DATE_DISK with a Consistent disk, run the
/// fence-peer handler and try again).
pub(crate) fn fencing_may_help(f: &Facts, refusal: &Refusal) -> bool {
    f.fencing != Fencing::DontCare
        && f.cstate < ConnState::Connected
        && match refusal {
            Refusal::PrimaryNop { .. } => true,
            Refusal::NoUpToDateDisk { disk, .. } => *disk == DiskState::Consistent,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnState::{Connected, WFConnection};
    use DiskState::{Consistent, DUnknown, Diskless, Inconsistent, Outdated, UpToDate};

    fn facts(cstate: ConnState, disk: DiskState, pdsk: DiskState) -> Facts {
        Facts {
            role: Role::Primary,
            peer_role: Role::Secondary,
            cstate,
            disk,
            pdsk,
            fencing: Fencing::DontCare,
            allow_two_primaries: false,
            quorum: None,
        }
    }

    #[test]
    fn rule_1_one_primary_unless_allowed() {
        let mut f = facts(Connected, UpToDate, UpToDate);
        f.peer_role = Role::Primary;
        assert!(matches!(check(&f), Err(Refusal::TwoPrimaries { .. })));
        f.allow_two_primaries = true;
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn rule_2_uptodate_data_here_or_through_the_connected_peer() {
        assert_eq!(check(&facts(WFConnection, UpToDate, DUnknown)), Ok(()));
        assert_eq!(check(&facts(Connected, Diskless, UpToDate)), Ok(()));
        for (c, d, p) in [
            (WFConnection, Diskless, DUnknown),
            (Connected, Inconsistent, UpToDate),
            (WFConnection, Consistent, DUnknown),
            (WFConnection, Outdated, DUnknown),
            (Connected, Outdated, UpToDate),
        ] {
            assert!(
                matches!(check(&facts(c, d, p)), Err(Refusal::NoUpToDateDisk { .. })),
                "{c} {d} {p}"
            );
        }
    }

    #[test]
    fn rule_3_with_fencing_a_disconnected_node_needs_the_peer_outdated() {
        for fencing in [Fencing::ResourceOnly, Fencing::ResourceAndStonith] {
            let mut f = facts(WFConnection, UpToDate, DUnknown);
            f.fencing = fencing;
            assert!(matches!(check(&f), Err(Refusal::PrimaryNop { .. })));
            f.pdsk = Outdated;
            assert_eq!(check(&f), Ok(()), "a peer known Outdated");
            f.pdsk = Inconsistent;
            assert_eq!(check(&f), Ok(()), "a peer known Inconsistent");
            let connected = Facts {
                cstate: Connected,
                pdsk: UpToDate,
                ..f
            };
            assert_eq!(check(&connected), Ok(()), "connected: the peer agrees");
        }
        let mut f = facts(WFConnection, UpToDate, DUnknown);
        f.fencing = Fencing::DontCare;
        assert_eq!(check(&f), Ok(()), "dont-care never asks");
    }

    #[test]
    fn fencing_may_lift_primary_nop_and_a_consistent_disk_only() {
        let mut f = facts(WFConnection, Consistent, DUnknown);
        f.fencing = Fencing::ResourceOnly;
        let nop = Refusal::PrimaryNop { pdsk: DUnknown };
        assert!(fencing_may_help(&f, &nop));
        let consistent = Refusal::NoUpToDateDisk {
            disk: Consistent,
            pdsk: DUnknown,
        };
        assert!(fencing_may_help(&f, &consistent));
        let outdated = Refusal::NoUpToDateDisk {
            disk: Outdated,
            pdsk: DUnknown,
        };
        assert!(
            !fencing_may_help(&f, &outdated),
            "Outdated data stays refused"
        );
        f.fencing = Fencing::DontCare;
        assert!(!fencing_may_help(&f, &nop));
    }

    #[test]
    fn secondary_is_always_allowed_by_these_rules() {
        let mut f = facts(WFConnection, Diskless, DUnknown);
        f.role = Role::Secondary;
        assert_eq!(check(&f), Ok(()));
    }

    #[test]
    fn rule_3_with_quorum_on_only_a_quorate_node_is_promoted() {
        let verdict = |quorum| Verdict {
            quorum,
            voters: 2,
            up_to_date: 1,
            present: 0,
            quorum_at: 2,
            by_tiebreaker: false,
        };
        let mut f = facts(WFConnection, UpToDate, DUnknown);
        f.quorum = Some(verdict(false));
        let refusal = check(&f).unwrap_err();
        assert!(matches!(
            refusal,
            Refusal::NoQuorum {
                visible: 1,
                voters: 2,
                needed: 2
            }
        ));
        assert!(
            refusal.to_string().contains("1 of 2 nodes visible, need 2"),
            "{refusal}"
        );
        f.quorum = Some(verdict(true));
        assert_eq!(check(&f), Ok(()));
    }
}
