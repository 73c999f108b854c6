//! What a fence-peer handler's exit code means (DRBD 8.4's conn_try_outdate_peer), as a state
//! change.

use crate::core::contract::ids::NodeId;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::DiskState;
use rep_resources::Fencing;

/// What a fence-peer exit code says, as a state change (DRBD's conn_try_outdate_peer).
pub(crate) fn fence_result(
    peer: NodeId,
    exit: Option<i32>,
    disk: DiskState,
    fencing: Fencing,
) -> (ChangeSet, String) {
    let code = exit.map_or_else(|| "no exit code".to_string(), |c| c.to_string());
    match exit {
        Some(3) => (
            ChangeSet::new().pdsk(peer, DiskState::Inconsistent),
            "fence-peer helper returned 3 (peer is inconsistent)".into(),
        ),
        Some(4) => (
            ChangeSet::new().pdsk(peer, DiskState::Outdated),
            "fence-peer helper returned 4 (peer was fenced: outdated)".into(),
        ),
        Some(5) if disk == DiskState::UpToDate => (
            ChangeSet::new().pdsk(peer, DiskState::Outdated),
            "fence-peer helper returned 5 (peer is unreachable, assumed to be dead)".into(),
        ),
        Some(5) => (
            ChangeSet::new(),
            format!("fence-peer helper returned 5 (peer is unreachable), but our disk is {disk}: the peer may have newer data"),
        ),
        Some(6) => (
            ChangeSet::new().disk(DiskState::Outdated),
            "fence-peer helper returned 6 (peer is primary): our data is outdated".into(),
        ),
        Some(7) => {
            if fencing != Fencing::ResourceAndStonith {
                tracing::error!("fence-peer() = 7 && fencing != Stonith !!!");
            }
            (
                ChangeSet::new().pdsk(peer, DiskState::Outdated),
                "fence-peer helper returned 7 (peer was stonithed)".into(),
            )
        }
        _ => (
            ChangeSet::new(),
            format!("fence-peer helper broken, returned {code}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (our disk, the peer's disk) the verdict asks for.
    fn after(exit: Option<i32>, disk: DiskState) -> (Option<DiskState>, Option<DiskState>) {
        let cs = fence_result(NodeId(1), exit, disk, Fencing::ResourceOnly).0;
        (cs.asked_disk(), cs.asked_pdsk(NodeId(1)))
    }

    #[test]
    fn exit_codes_map_to_drbds_disk_states() {
        use DiskState::*;
        assert_eq!(after(Some(3), UpToDate), (None, Some(Inconsistent)));
        assert_eq!(after(Some(4), UpToDate), (None, Some(Outdated)));
        assert_eq!(after(Some(5), UpToDate), (None, Some(Outdated)));
        assert_eq!(
            after(Some(5), Consistent),
            (None, None),
            "an unreachable peer is not outdated when our own data may be stale"
        );
        assert_eq!(after(Some(6), UpToDate), (Some(Outdated), None));
        assert_eq!(after(Some(7), UpToDate), (None, Some(Outdated)));
        for broken in [None, Some(0), Some(1), Some(2), Some(8), Some(-1)] {
            assert_eq!(after(broken, UpToDate), (None, None), "{broken:?}");
        }
    }
}
