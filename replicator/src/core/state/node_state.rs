//! The visible state of a node (role, connection and disk states, what it knows of its peer)
//! and a requested change of it (`ChangeSet`), with the changes a change implies (`sanitize`,
//! docs/drbd-semantics.md §1.4) and the way DRBD logs one. Applying a change is
//! `NodeState::apply`; the engine commits it only through `change_state` (state_change.rs).
//!
//! The fields of [`NodeState`] are private to this module: no other code can assign them, so
//! every change passes the rules here (the compiler enforces it).

use crate::core::state::{ConnState, DiskState, Role};

/// Role, connection and disk states of this node and what it knows of its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeState {
    role: Role,
    peer_role: Role,
    cstate: ConnState,
    disk: DiskState,
    pdsk: DiskState,
    /// While `disk` is Negotiating: what the attached disk's metadata says (UpToDate,
    /// Outdated, ...), which the next handshake compares (DRBD's D_NEGOTIATING).
    negotiating: Option<DiskState>,
    /// Application I/O is frozen until the fence-peer handler returns (DRBD's susp_fen,
    /// `fencing resource-and-stonith`).
    susp_fen: bool,
}

impl NodeState {
    /// A fresh node: Secondary, Diskless, StandAlone, as after `drbdsetup new-minor`.
    pub(crate) fn initial() -> NodeState {
        NodeState {
            role: Role::Secondary,
            peer_role: Role::Unknown,
            cstate: ConnState::StandAlone,
            disk: DiskState::Diskless,
            pdsk: DiskState::DUnknown,
            negotiating: None,
            susp_fen: false,
        }
    }
    pub(crate) fn role(&self) -> Role {
        self.role
    }
    pub(crate) fn peer_role(&self) -> Role {
        self.peer_role
    }
    pub(crate) fn cstate(&self) -> ConnState {
        self.cstate
    }
    pub(crate) fn disk(&self) -> DiskState {
        self.disk
    }
    pub(crate) fn pdsk(&self) -> DiskState {
        self.pdsk
    }
    pub(crate) fn susp_fen(&self) -> bool {
        self.susp_fen
    }
    /// The disk state the peer is told: while an attached disk negotiates, the state its
    /// metadata gives (the peer decides with it, as we do).
    pub(crate) fn reported_disk(&self) -> DiskState {
        self.negotiating.unwrap_or(self.disk)
    }

    /// The state `cs` leads to from this one, with the changes it implies (`sanitize`).
    pub(crate) fn apply(&self, cs: &ChangeSet) -> NodeState {
        let mut ns = *self;
        if let Some(r) = cs.role {
            ns.role = r;
        }
        if let Some(r) = cs.peer_role {
            ns.peer_role = r;
        }
        if let Some(c) = cs.cstate {
            ns.cstate = c;
        }
        if let Some(d) = cs.disk {
            ns.disk = d;
        }
        if let Some(d) = cs.pdsk {
            ns.pdsk = d;
        }
        if let Some(n) = cs.negotiating {
            ns.negotiating = n;
        }
        if let Some(s) = cs.susp_fen {
            ns.susp_fen = s;
        }
        sanitize(&mut ns);
        ns
    }
}

/// A requested state change: the fields to set (others stay), and whether the superblock must
/// be written even if no flag changes (generation UUIDs or bitmap changed with it).
#[derive(Debug, Clone, Default)]
#[must_use = "a ChangeSet does nothing until passed to change_state"]
pub(crate) struct ChangeSet {
    role: Option<Role>,
    peer_role: Option<Role>,
    cstate: Option<ConnState>,
    disk: Option<DiskState>,
    pdsk: Option<DiskState>,
    negotiating: Option<Option<DiskState>>,
    susp_fen: Option<bool>,
    persist: bool,
    why: Option<String>,
}

impl ChangeSet {
    pub(crate) fn new() -> ChangeSet {
        ChangeSet::default()
    }
    pub(crate) fn role(mut self, r: Role) -> Self {
        self.role = Some(r);
        self
    }
    pub(crate) fn peer_role(mut self, r: Role) -> Self {
        self.peer_role = Some(r);
        self
    }
    pub(crate) fn cstate(mut self, c: ConnState) -> Self {
        self.cstate = Some(c);
        self
    }
    pub(crate) fn disk(mut self, d: DiskState) -> Self {
        self.disk = Some(d);
        self
    }
    pub(crate) fn pdsk(mut self, d: DiskState) -> Self {
        self.pdsk = Some(d);
        self
    }
    /// The disk reports Negotiating while its own state (`Some`) waits for a handshake;
    /// `None` ends that.
    pub(crate) fn negotiating(mut self, then: Option<DiskState>) -> Self {
        self.negotiating = Some(then);
        self
    }
    /// Freeze (true) or thaw application I/O for fencing.
    pub(crate) fn susp_fen(mut self, on: bool) -> Self {
        self.susp_fen = Some(on);
        self
    }
    /// Write the superblock even when no derived flag changes (UUIDs or bits changed too).
    pub(crate) fn persist(mut self) -> Self {
        self.persist = true;
        self
    }
    /// Logged with the change (why a link went away, why a disk failed).
    pub(crate) fn why(mut self, why: impl Into<String>) -> Self {
        self.why = Some(why.into());
        self
    }
    pub(crate) fn persists(&self) -> bool {
        self.persist
    }
    pub(crate) fn reason(&self) -> Option<&str> {
        self.why.as_deref()
    }
}

/// The changes a change implies (DRBD 8.4's sanitize_state, the parts rep follows):
/// - without a link the peer's role is unknown, and of its disk only what a link loss leaves
///   known is kept (Inconsistent, Outdated); anything else becomes DUnknown;
/// - Consistent and Outdated vanish when connected without a resync to run: the handshake
///   found both disks on the same data generation (rep requires two disks for it: a Diskless
///   peer tells nothing about our data, where DRBD 8.4 upgrades regardless).
fn sanitize(ns: &mut NodeState) {
    if !ns.cstate.has_link() {
        ns.peer_role = Role::Unknown;
        if !matches!(ns.pdsk, DiskState::Inconsistent | DiskState::Outdated) {
            ns.pdsk = DiskState::DUnknown;
        }
    }
    let both_disks = ns.disk >= DiskState::Inconsistent && ns.pdsk >= DiskState::Inconsistent;
    if ns.cstate == ConnState::Connected && both_disks {
        if matches!(ns.disk, DiskState::Consistent | DiskState::Outdated) {
            ns.disk = DiskState::UpToDate;
        }
        if matches!(ns.pdsk, DiskState::Consistent | DiskState::Outdated) {
            ns.pdsk = DiskState::UpToDate;
        }
    }
    // The resync direction says whose data is the newer one (DRBD's clamps per cstate): the
    // source's disk is UpToDate, and so is the target's view of its peer.
    let upgrade = |d: &mut DiskState| {
        if matches!(d, DiskState::Consistent | DiskState::Outdated) {
            *d = DiskState::UpToDate;
        }
    };
    match ns.cstate {
        ConnState::SyncSource | ConnState::PausedSyncS => upgrade(&mut ns.disk),
        ConnState::SyncTarget | ConnState::PausedSyncT | ConnState::WFSyncUUID => {
            upgrade(&mut ns.pdsk)
        }
        _ => {}
    }
    if ns.disk != DiskState::Negotiating {
        ns.negotiating = None;
    }
}

/// `role( Secondary -> Primary ) conn( ... ) disk( ... ) pdsk( ... )` as DRBD logs it. A lost
/// link is a warning, with the reason.
pub(crate) fn log_change(resource: &str, os: &NodeState, ns: &NodeState, why: Option<&str>) {
    let mut parts = Vec::new();
    if os.role != ns.role {
        parts.push(format!("role( {} -> {} )", os.role, ns.role));
    }
    if os.peer_role != ns.peer_role {
        parts.push(format!("peer( {} -> {} )", os.peer_role, ns.peer_role));
    }
    if os.cstate != ns.cstate {
        parts.push(format!("conn( {} -> {} )", os.cstate, ns.cstate));
    }
    if os.disk != ns.disk {
        parts.push(format!("disk( {} -> {} )", os.disk, ns.disk));
    }
    if os.pdsk != ns.pdsk {
        parts.push(format!("pdsk( {} -> {} )", os.pdsk, ns.pdsk));
    }
    if os.susp_fen != ns.susp_fen {
        parts.push(format!(
            "susp-fen( {} -> {} )",
            u8::from(os.susp_fen),
            u8::from(ns.susp_fen)
        ));
    }
    if parts.is_empty() {
        return;
    }
    let line = parts.join(" ");
    let lost_link = os.cstate.has_link() && !ns.cstate.has_link();
    match (why, lost_link) {
        (Some(why), true) => tracing::warn!(resource = %resource, "{line}: {why}"),
        (Some(why), false) => tracing::info!(resource = %resource, "{line}: {why}"),
        (None, true) => tracing::warn!(resource = %resource, "{line}"),
        (None, false) => tracing::info!(resource = %resource, "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(role: Role, cstate: ConnState, disk: DiskState, pdsk: DiskState) -> NodeState {
        NodeState {
            role,
            peer_role: Role::Secondary,
            cstate,
            disk,
            pdsk,
            negotiating: None,
            susp_fen: false,
        }
    }

    #[test]
    fn without_a_link_the_peer_is_unknown_but_outdated_and_inconsistent_are_kept() {
        use DiskState::*;
        for (before, after) in [
            (UpToDate, DUnknown),
            (Consistent, DUnknown),
            (Outdated, Outdated),
            (Inconsistent, Inconsistent),
            (Diskless, DUnknown),
        ] {
            let mut ns = st(Role::Primary, ConnState::WFConnection, UpToDate, before);
            sanitize(&mut ns);
            assert_eq!(ns.pdsk, after, "{before}");
            assert_eq!(ns.peer_role, Role::Unknown);
        }
    }

    #[test]
    fn connected_without_a_resync_makes_consistent_and_outdated_uptodate() {
        use DiskState::*;
        let mut ns = st(Role::Secondary, ConnState::Connected, Outdated, UpToDate);
        sanitize(&mut ns);
        assert_eq!(ns.disk, UpToDate);
        let mut ns = st(Role::Secondary, ConnState::Connected, Outdated, Consistent);
        sanitize(&mut ns);
        assert_eq!((ns.disk, ns.pdsk), (UpToDate, UpToDate));
        // Not while a resync is still to run.
        let mut ns = st(Role::Secondary, ConnState::WFSyncUUID, Outdated, UpToDate);
        sanitize(&mut ns);
        assert_eq!(ns.disk, Outdated);
    }

    #[test]
    fn a_resync_source_has_the_newer_data() {
        use DiskState::*;
        let mut ns = st(
            Role::Secondary,
            ConnState::SyncSource,
            Consistent,
            Inconsistent,
        );
        sanitize(&mut ns);
        assert_eq!((ns.disk, ns.pdsk), (UpToDate, Inconsistent));
        let mut ns = st(
            Role::Secondary,
            ConnState::WFSyncUUID,
            Inconsistent,
            Consistent,
        );
        sanitize(&mut ns);
        assert_eq!((ns.disk, ns.pdsk), (Inconsistent, UpToDate));
    }

    #[test]
    fn negotiating_detail_goes_with_the_negotiating_disk() {
        let mut ns = st(
            Role::Secondary,
            ConnState::WFConnection,
            DiskState::UpToDate,
            DiskState::DUnknown,
        );
        ns.negotiating = Some(DiskState::Outdated);
        sanitize(&mut ns);
        assert_eq!(ns.negotiating, None);
    }
}
