//! DRBD's state vocabulary: roles, connection states, disk states.
//!
//! Names and order follow DRBD 8.4 (`enum drbd_role`, `enum drbd_conns`, `enum drbd_disk_state`):
//! code compares connection and disk states with `<`/`>`, so the derive order matters.
//! Display prints exactly what `drbdadm role/cstate/dstate` and `/proc/drbd` print.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Role of a node. `Unknown` is only ever used for the peer while not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Unknown,
    Primary,
    Secondary,
}

/// Connection state (DRBD 8.4 `cstate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConnState {
    StandAlone,
    Disconnecting,
    Unconnected,
    Timeout,
    BrokenPipe,
    NetworkFailure,
    ProtocolError,
    TearDown,
    WFConnection,
    WFReportParams,
    Connected,
    StartingSyncS,
    StartingSyncT,
    WFBitMapS,
    WFBitMapT,
    WFSyncUUID,
    SyncSource,
    SyncTarget,
    VerifyS,
    VerifyT,
    PausedSyncS,
    PausedSyncT,
    Ahead,
    Behind,
}

/// Disk state (DRBD 8.4 `dstate`); `DUnknown` is only used for the peer's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DiskState {
    Diskless,
    Attaching,
    Failed,
    Negotiating,
    Inconsistent,
    Outdated,
    DUnknown,
    Consistent,
    UpToDate,
}

macro_rules! display_as_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_as_debug!(Role, ConnState, DiskState);

impl ConnState {
    /// A resync (or paused resync) is running.
    pub fn is_sync(self) -> bool {
        (ConnState::SyncSource..=ConnState::PausedSyncT).contains(&self)
    }

    /// A TCP link to the peer exists (handshake started or done).
    pub fn has_link(self) -> bool {
        self >= ConnState::WFReportParams
    }

    /// The DRBD 9 "connection" name used by `repadm status` for this 8.4 state.
    pub fn drbd9_connection(self) -> &'static str {
        match self {
            ConnState::StandAlone => "StandAlone",
            ConnState::Disconnecting => "Disconnecting",
            ConnState::Unconnected => "Unconnected",
            ConnState::Timeout => "Timeout",
            ConnState::BrokenPipe => "BrokenPipe",
            ConnState::NetworkFailure => "NetworkFailure",
            ConnState::ProtocolError => "ProtocolError",
            ConnState::TearDown => "TearDown",
            ConnState::WFConnection | ConnState::WFReportParams => "Connecting",
            _ => "Connected",
        }
    }

    /// The DRBD 9 "replication" name (only meaningful once connected).
    pub fn drbd9_replication(self) -> String {
        match self {
            ConnState::Connected => "Established".to_string(),
            s if s > ConnState::Connected => s.to_string(),
            _ => "Off".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matches_drbd_enum() {
        assert!(ConnState::StandAlone < ConnState::WFConnection);
        assert!(ConnState::WFConnection < ConnState::Connected);
        assert!(ConnState::Connected < ConnState::SyncSource);
        assert!(DiskState::Inconsistent < DiskState::Outdated);
        assert!(DiskState::Consistent < DiskState::UpToDate);
        assert!(DiskState::DUnknown < DiskState::Consistent);
    }

    #[test]
    fn display_uses_drbd_names() {
        assert_eq!(ConnState::WFConnection.to_string(), "WFConnection");
        assert_eq!(DiskState::UpToDate.to_string(), "UpToDate");
        assert_eq!(DiskState::DUnknown.to_string(), "DUnknown");
        assert_eq!(Role::Secondary.to_string(), "Secondary");
        assert!(ConnState::SyncTarget.is_sync());
        assert!(!ConnState::Connected.is_sync());
        assert_eq!(ConnState::WFConnection.drbd9_connection(), "Connecting");
        assert_eq!(ConnState::Connected.drbd9_replication(), "Established");
    }
}
