//! How the state vocabulary and the protocol version travel on the wire.

use crate::states::{DiskState, Role};

/// Version range of our peer protocol (exchanged in `Hello`). 2: `RsZero` (resync replies
/// without data); a node of version 1 would drop the link at the first one, so the two refuse
/// each other at the handshake instead. 3: `ByeOutdated` (a graceful leave under quorum).
pub const PROTOCOL_VERSION: u16 = 3;

pub fn role_code(r: Role) -> u8 {
    match r {
        Role::Unknown => 0,
        Role::Primary => 1,
        Role::Secondary => 2,
    }
}

pub fn role_from(c: u8) -> Option<Role> {
    Some(match c {
        0 => Role::Unknown,
        1 => Role::Primary,
        2 => Role::Secondary,
        _ => return None,
    })
}

/// Disk states in wire order (DRBD 8.4's `enum drbd_disk_state`).
const DISK_STATES: [DiskState; 9] = [
    DiskState::Diskless,
    DiskState::Attaching,
    DiskState::Failed,
    DiskState::Negotiating,
    DiskState::Inconsistent,
    DiskState::Outdated,
    DiskState::DUnknown,
    DiskState::Consistent,
    DiskState::UpToDate,
];

pub fn disk_code(d: DiskState) -> u8 {
    // The table has 9 entries: the position fits a u8.
    DISK_STATES
        .iter()
        .position(|x| *x == d)
        .and_then(|p| u8::try_from(p).ok())
        .unwrap_or(0)
}

pub fn disk_from(c: u8) -> Option<DiskState> {
    DISK_STATES.get(usize::from(c)).copied()
}

pub fn protocol_code(p: rep_resources::Protocol) -> u8 {
    match p {
        rep_resources::Protocol::A => b'A',
        rep_resources::Protocol::B => b'B',
        rep_resources::Protocol::C => b'C',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for r in [Role::Unknown, Role::Primary, Role::Secondary] {
            assert_eq!(role_from(role_code(r)), Some(r));
        }
        for d in DISK_STATES {
            assert_eq!(disk_from(disk_code(d)), Some(d));
        }
        assert_eq!(role_from(3), None);
        assert_eq!(disk_from(9), None);
    }
}
