//! The one path by which the visible state changes (DRBD's `drbd_state.c`): role, peer role,
//! connection state, disk and peer disk. A change is a [`ChangeSet`]; `change_state` completes
//! it with the implied changes (`sanitize`, docs/drbd-semantics.md §1.4), refuses it if the result
//! breaks a rule (`is_valid_state`, §1.3) when an admin asked for it, logs it the way DRBD does
//! (`role( Secondary -> Primary ) disk( Inconsistent -> UpToDate )`), persists the metadata
//! flags that follow from it, and marks the status for publication.
//!
//! The fields of [`NodeState`] are private to this module: no other code can assign them, so
//! every change passes the rules here (the compiler enforces it).

use super::engine::Engine;
use super::io::IoId;
use super::promotion;
use super::refusal::Refusal;
use super::state::{ConnState, DiskState, Role};

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
}

impl Engine {
    /// Apply a change the engine itself decided (a lost link, a finished resync, a failed disk):
    /// implied changes are added, the result is not checked against the admin rules. Returns
    /// the superblock write issued for it, if any.
    pub(crate) fn change_state(&mut self, cs: ChangeSet) -> Option<IoId> {
        let ns = self.proposed(&cs);
        self.commit_state(ns, cs)
    }

    /// Apply a change an admin asked for, unless it breaks a rule.
    pub(crate) fn request_state(&mut self, cs: ChangeSet) -> Result<Option<IoId>, Refusal> {
        let ns = self.proposed(&cs);
        self.is_valid_state(&ns)?;
        Ok(self.commit_state(ns, cs))
    }

    /// Whether an admin request for this change would be refused now (for commands that
    /// decide before they act, e.g. `primary` asks the peer first).
    pub(crate) fn check_state(&self, cs: &ChangeSet) -> Result<(), Refusal> {
        self.is_valid_state(&self.proposed(cs))
    }

    fn proposed(&self, cs: &ChangeSet) -> NodeState {
        let mut ns = self.st;
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

    fn commit_state(&mut self, ns: NodeState, cs: ChangeSet) -> Option<IoId> {
        let os = self.st;
        self.st = ns;
        if os != ns {
            log_change(&self.cfg.resource, &os, &ns, cs.why.as_deref());
            self.status_changed();
        }
        let old_flags = self.flags;
        self.after_state_change(&os, &ns);
        self.sync_flags_from_state();
        if cs.persist || self.flags != old_flags {
            self.persist_superblock()
        } else {
            None
        }
    }

    /// The handlers a change calls for (DRBD's after_state_ch): `pri-on-incon-degr` when a
    /// Primary is left without access to UpToDate data, `unfence-peer` when a peer we had
    /// fenced is UpToDate again (the resync after the fencing is done).
    fn after_state_change(&mut self, os: &NodeState, ns: &NodeState) {
        let data = |s: &NodeState| promotion::has_uptodate_data(&self.promotion_facts(s));
        if ns.role == Role::Primary && !data(ns) && (os.role != Role::Primary || data(os)) {
            tracing::error!(resource = %self.cfg.resource, "Primary without access to UpToDate data (disk {}, peer {} {})", ns.disk, ns.cstate, ns.pdsk);
            self.emit(super::io::Output::Handler {
                name: "pri-on-incon-degr",
            });
        }
        // Remembered past the handshake, which takes the peer from Outdated to Inconsistent
        // (and clears the persisted flag) before the resync brings it back.
        if ns.pdsk == DiskState::Outdated {
            self.peer_fenced = true;
        }
        let peer_back = os.pdsk != DiskState::UpToDate && ns.pdsk == DiskState::UpToDate;
        if peer_back && self.peer_fenced {
            self.peer_fenced = false;
            if self.cfg.fencing != rep_resources::Fencing::DontCare {
                self.emit(super::io::Output::Handler {
                    name: "unfence-peer",
                });
            }
        }
    }

    /// DRBD's `is_valid_state` for the rules an admin request can break (docs/drbd-semantics.md
    /// §1.3): a Primary may not be demoted under its users, and the rules for being Primary
    /// (`promotion::check`) hold.
    fn is_valid_state(&self, ns: &NodeState) -> Result<(), Refusal> {
        let os = &self.st;
        if os.role == Role::Primary && ns.role == Role::Secondary && self.open_clients > 0 {
            return Err(Refusal::DeviceInUse {
                open: self.open_clients,
            });
        }
        // A change that leaves a rule broken that was broken before is let through (DRBD's
        // is_valid_state(os) == rv): a Primary waiting for its fence-peer handler must still
        // take other commands.
        match promotion::check(&self.promotion_facts(ns)) {
            Err(e) => match promotion::check(&self.promotion_facts(os)) {
                Err(old) if std::mem::discriminant(&old) == std::mem::discriminant(&e) => Ok(()),
                _ => Err(e),
            },
            Ok(()) => Ok(()),
        }
    }

    /// The facts the promotion rules look at, for state `ns`.
    pub(crate) fn promotion_facts(&self, ns: &NodeState) -> promotion::Facts {
        promotion::Facts {
            role: ns.role,
            peer_role: ns.peer_role,
            cstate: ns.cstate,
            disk: ns.disk,
            pdsk: ns.pdsk,
            fencing: self.cfg.fencing,
            allow_two_primaries: self.cfg.allow_two_primaries,
        }
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
fn log_change(resource: &str, os: &NodeState, ns: &NodeState, why: Option<&str>) {
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
