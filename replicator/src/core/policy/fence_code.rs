//! The reverse of `fence_result`: what a peer's answer to an outdate request means as DRBD's
//! fence-peer exit code, for the built-in outdater (runtime/outdater.rs), the relay through the
//! witness (runtime/witness_link) and the simulator.

use crate::core::state::{DiskState, Role};

/// The exit code of a peer's answer: 6 the peer is Primary, 4 it is Outdated, 3 it is
/// Inconsistent or has no disk, 1 anything else (it did not outdate itself).
pub fn outdate_exit_code(role: Role, disk: DiskState) -> i32 {
    if role == Role::Primary {
        6
    } else if disk == DiskState::Outdated {
        4
    } else if disk < DiskState::Outdated {
        3
    } else {
        1
    }
}

/// The exit code of the witness's answer to a relayed outdate request: 5 the witness did not
/// reach the peer, 1 an answer whose role or disk did not decode (`answer` is `None`), else the
/// peer's answer as `outdate_exit_code` has it.
pub fn relay_exit_code(reached: bool, answer: Option<(Role, DiskState)>) -> i32 {
    match (reached, answer) {
        (false, _) => 5,
        (true, None) => 1,
        (true, Some((role, disk))) => outdate_exit_code(role, disk),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_drbds_exit_codes() {
        assert_eq!(outdate_exit_code(Role::Primary, DiskState::UpToDate), 6);
        assert_eq!(outdate_exit_code(Role::Secondary, DiskState::Outdated), 4);
        assert_eq!(
            outdate_exit_code(Role::Secondary, DiskState::Inconsistent),
            3
        );
        assert_eq!(outdate_exit_code(Role::Secondary, DiskState::Diskless), 3);
        assert_eq!(outdate_exit_code(Role::Secondary, DiskState::UpToDate), 1);
    }

    #[test]
    fn relay_answers_map_to_drbds_exit_codes() {
        let primary = Some((Role::Primary, DiskState::UpToDate));
        assert_eq!(relay_exit_code(false, primary), 5);
        assert_eq!(relay_exit_code(false, None), 5);
        assert_eq!(relay_exit_code(true, None), 1);
        assert_eq!(relay_exit_code(true, primary), 6);
        assert_eq!(
            relay_exit_code(true, Some((Role::Secondary, DiskState::Outdated))),
            4
        );
    }
}
