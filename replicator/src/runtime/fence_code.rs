//! What a peer's answer to an outdate request means as DRBD's fence-peer exit code, for the
//! built-in outdater (runtime/outdater.rs) and the relay through the witness
//! (runtime/witness_link): 6 the peer is Primary, 4 it is Outdated, 3 it is Inconsistent or has
//! no disk, 1 anything else (it did not outdate itself).

use crate::core::{DiskState, Role};

pub(crate) fn exit_code(role: Role, disk: DiskState) -> i32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_drbds_exit_codes() {
        assert_eq!(exit_code(Role::Primary, DiskState::UpToDate), 6);
        assert_eq!(exit_code(Role::Secondary, DiskState::Outdated), 4);
        assert_eq!(exit_code(Role::Secondary, DiskState::Inconsistent), 3);
        assert_eq!(exit_code(Role::Secondary, DiskState::Diskless), 3);
        assert_eq!(exit_code(Role::Secondary, DiskState::UpToDate), 1);
    }
}
