//! Whether this node has quorum (docs/quorum.md §"The rule"): DRBD 9's calc_quorum, a pure
//! function of what this node sees of every member of the resource.
//!
//! Voters are the nodes with a disk. A node has quorum while it sees a majority of them
//! (itself included), with three refinements, all DRBD's:
//! - a member known Outdated or Inconsistent (it said so as it left with `down`, fencing
//!   outdated it, or it was mid-resync) cannot be promoted elsewhere; when every absent member is such, the absent ones stop counting
//!   ("last man standing");
//! - with an even number of voters, a node one vote short keeps quorum through the diskless
//!   members (witnesses) it sees, if it had quorum until now: the tiebreaker keeps quorum, it
//!   never gives it back (a node that lost quorum does not regain it by seeing the witness
//!   alone, for its data may be stale by then);
//! - `quorum-minimum-redundancy` also asks for that many UpToDate copies among those seen.

use rep_resources::quorum::Quorum;

use crate::core::state::DiskState;

/// What this node sees of one other member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    /// The member has no disk by configuration (`disk none;`: a witness).
    pub diskless_by_config: bool,
    /// A link to it is established.
    pub connected: bool,
    /// Its disk state as we know it (DUnknown without a link, Outdated if it left saying so).
    pub disk: DiskState,
}

/// What this node's answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inputs {
    pub quorum: Quorum,
    pub minimum_redundancy: Quorum,
    /// This node's disk state (Diskless for a witness or a detached node).
    pub disk: DiskState,
    /// This node has no disk by configuration (a witness).
    pub diskless_by_config: bool,
    pub members: Vec<Member>,
    /// The answer until now: the tiebreaker keeps quorum, it does not bring it back.
    pub had_quorum: bool,
}

/// The answer, with the counts behind it (shown by `status --verbose` and in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub quorum: bool,
    /// Voters counted (absent members known Outdated are left out when no absent one is
    /// unknown).
    pub voters: u32,
    /// Voters seen: UpToDate ones, and others with a disk.
    pub up_to_date: u32,
    pub present: u32,
    /// Votes needed.
    pub quorum_at: u32,
    /// Quorum held only through the witnesses (one vote short with an even voter count).
    pub by_tiebreaker: bool,
}

fn needed(setting: Quorum, voters: u32) -> u32 {
    setting.needed(voters).unwrap_or(0)
}

/// DRBD 9's calc_quorum for one device. `quorum off` is the caller's business: the verdict is
/// computed regardless (DRBD logs "would have lost quorum" then) and enforced only when on.
pub(crate) fn calc(i: &Inputs) -> Verdict {
    let (mut up_to_date, mut present, mut outdated, mut unknown) = (0u32, 0u32, 0u32, 0u32);
    let (mut diskless, mut missing_diskless) = (0u32, 0u32);
    if i.disk > DiskState::Diskless {
        if i.disk == DiskState::UpToDate {
            up_to_date += 1;
        } else {
            present += 1;
        }
    } else if i.diskless_by_config {
        diskless += 1;
    } else {
        // A node that should have a disk and has none does not vote for itself.
        unknown += 1;
    }
    for m in &i.members {
        match (m.connected, m.diskless_by_config) {
            (false, true) => missing_diskless += 1,
            (false, false) if m.disk <= DiskState::Outdated => outdated += 1,
            (false, false) => unknown += 1,
            (true, _) if m.disk == DiskState::Diskless && m.diskless_by_config => diskless += 1,
            (true, _) if m.disk == DiskState::UpToDate => up_to_date += 1,
            (true, _) => present += 1,
        }
    }
    // When every absent member is known Outdated, the other partition cannot promote: those
    // members leave the count.
    let voters = if unknown > 0 {
        outdated + unknown + up_to_date + present
    } else {
        up_to_date + present
    };
    let quorum_at = needed(i.quorum, voters);
    let min_redundancy_at = needed(i.minimum_redundancy, voters);
    let diskless_majority_at = needed(Quorum::Majority, diskless + missing_diskless);
    let mut quorum = up_to_date + present >= quorum_at && up_to_date >= min_redundancy_at;
    let mut by_tiebreaker = false;
    if !quorum
        && voters != 0
        && voters % 2 == 0
        && up_to_date + present + 1 == quorum_at
        && diskless >= diskless_majority_at
        && i.had_quorum
    {
        quorum = true;
        by_tiebreaker = true;
    }
    Verdict {
        quorum,
        voters,
        up_to_date,
        present,
        quorum_at,
        by_tiebreaker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DiskState::{DUnknown, Diskless, Inconsistent, Outdated, UpToDate};

    fn data(connected: bool, disk: DiskState) -> Member {
        Member {
            diskless_by_config: false,
            connected,
            disk,
        }
    }
    fn witness(connected: bool) -> Member {
        Member {
            diskless_by_config: true,
            connected,
            disk: if connected { Diskless } else { DUnknown },
        }
    }
    fn inputs(disk: DiskState, members: Vec<Member>, had: bool) -> Inputs {
        Inputs {
            quorum: Quorum::Majority,
            minimum_redundancy: Quorum::Off,
            disk,
            diskless_by_config: false,
            members,
            had_quorum: had,
        }
    }

    #[test]
    fn two_data_nodes_and_a_witness() {
        let all = inputs(UpToDate, vec![data(true, UpToDate), witness(true)], false);
        assert!(calc(&all).quorum, "everyone seen");
        // The data link breaks; the witness still seen: one vote short of 2, kept by the
        // tiebreaker because quorum was held.
        let v = calc(&inputs(
            UpToDate,
            vec![data(false, DUnknown), witness(true)],
            true,
        ));
        assert!(v.quorum && v.by_tiebreaker, "{v:?}");
        // ...but not regained through the witness alone.
        let v = calc(&inputs(
            UpToDate,
            vec![data(false, DUnknown), witness(true)],
            false,
        ));
        assert!(!v.quorum, "{v:?}");
        // The other data node and the witness together: a majority of the voters.
        let v = calc(&inputs(
            UpToDate,
            vec![data(true, UpToDate), witness(false)],
            false,
        ));
        assert!(v.quorum && !v.by_tiebreaker, "{v:?}");
        // Alone.
        let v = calc(&inputs(
            UpToDate,
            vec![data(false, DUnknown), witness(false)],
            true,
        ));
        assert!(!v.quorum, "{v:?}");
    }

    #[test]
    fn a_peer_known_outdated_leaves_the_count_last_man_standing() {
        let v = calc(&inputs(UpToDate, vec![data(false, Outdated)], true));
        assert!(v.quorum, "{v:?}");
        assert_eq!(v.voters, 1);
        // Inconsistent is below Outdated: it cannot be promoted elsewhere either.
        let v = calc(&inputs(UpToDate, vec![data(false, Inconsistent)], true));
        assert!(v.quorum && v.voters == 1, "{v:?}");
        // Two nodes, no witness: losing the peer unannounced loses quorum.
        let v = calc(&inputs(UpToDate, vec![data(false, DUnknown)], true));
        assert!(!v.quorum && v.voters == 2 && v.quorum_at == 2, "{v:?}");
    }

    #[test]
    fn the_witness_sees_both_or_one_data_node() {
        let w = |a: bool, b: bool, had: bool| Inputs {
            diskless_by_config: true,
            ..inputs(
                Diskless,
                vec![
                    data(a, if a { UpToDate } else { DUnknown }),
                    data(b, if b { UpToDate } else { DUnknown }),
                ],
                had,
            )
        };
        assert!(calc(&w(true, true, false)).quorum);
        // One of two voters: short by one, and the witness counts itself as the tiebreaker.
        assert!(calc(&w(true, false, true)).quorum);
        assert!(!calc(&w(true, false, false)).quorum);
        assert!(!calc(&w(false, false, true)).quorum);
    }

    #[test]
    fn numbers_all_and_minimum_redundancy() {
        let mut i = inputs(
            UpToDate,
            vec![data(true, Inconsistent), witness(true)],
            false,
        );
        i.quorum = Quorum::All;
        assert!(calc(&i).quorum);
        i.minimum_redundancy = Quorum::Nodes(2);
        assert!(!calc(&i).quorum, "only one UpToDate copy");
        i.members[0].disk = UpToDate;
        assert!(calc(&i).quorum);
        i.quorum = Quorum::Nodes(3);
        assert!(!calc(&i).quorum, "3 of 2 voters can never be met");
    }
}
