//! The visible state of a node (role, connection and disk states, what it knows of its peer)
//! and a requested change of it (`ChangeSet`), with the changes a change implies (`sanitize`,
//! docs/drbd-semantics.md §1.4) and the way DRBD logs one. Applying a change is
//! `NodeState::apply`; the engine commits it only through `change_state` (state_change.rs).
//!
//! The fields of [`NodeState`] are private to this module: no other code can assign them, so
//! every change passes the rules here (the compiler enforces it).

use crate::core::contract::ids::NodeId;
use crate::core::state::{ConnState, DiskState, Role};

/// What this node knows of one peer: its role, the connection to it, its disk (DRBD 9's
/// connection and peer-device states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerState {
    role: Role,
    cstate: ConnState,
    pdsk: DiskState,
}

impl PeerState {
    /// A peer never connected: role and disk unknown, StandAlone.
    pub(crate) const INITIAL: PeerState = PeerState {
        role: Role::Unknown,
        cstate: ConnState::StandAlone,
        pdsk: DiskState::DUnknown,
    };
    pub(crate) fn role(&self) -> Role {
        self.role
    }
    pub(crate) fn cstate(&self) -> ConnState {
        self.cstate
    }
    pub(crate) fn pdsk(&self) -> DiskState {
        self.pdsk
    }
}

/// Role and disk state of this node, and the state of each of its peers (by node id): the
/// whole visible state of a resource, as one DRBD 9 state change covers resource, device,
/// connections and peer devices together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeState {
    role: Role,
    disk: DiskState,
    /// While `disk` is Negotiating: what the attached disk's metadata says (UpToDate,
    /// Outdated, ...), which the next handshake compares (DRBD's D_NEGOTIATING).
    negotiating: Option<DiskState>,
    /// Application I/O is frozen until the fence-peer handler returns (DRBD's susp_fen,
    /// `fencing resource-and-stonith`).
    susp_fen: bool,
    /// This node has quorum (always, while quorum is off): `policy/quorum.rs`, set by
    /// `change_state` after every change.
    quorum: bool,
    /// Application I/O is frozen for lack of quorum (`on-no-quorum suspend-io`, DRBD's
    /// susp_quorum).
    susp_quorum: bool,
    /// Every configured peer, in node-id order.
    peers: Vec<(NodeId, PeerState)>,
}

impl NodeState {
    /// A fresh node: Secondary, Diskless, StandAlone towards every peer, as after
    /// `drbdsetup new-minor`.
    pub(crate) fn initial(peers: impl IntoIterator<Item = NodeId>) -> NodeState {
        let mut peers: Vec<_> = peers
            .into_iter()
            .map(|id| (id, PeerState::INITIAL))
            .collect();
        peers.sort_by_key(|(id, _)| *id);
        NodeState {
            role: Role::Secondary,
            disk: DiskState::Diskless,
            negotiating: None,
            susp_fen: false,
            quorum: false,
            susp_quorum: false,
            peers,
        }
    }
    pub(crate) fn quorum(&self) -> bool {
        self.quorum
    }
    pub(crate) fn susp_quorum(&self) -> bool {
        self.susp_quorum
    }
    /// Application I/O is frozen, by fencing or for lack of quorum: requests wait, replies are
    /// held.
    pub(crate) fn io_suspended(&self) -> bool {
        self.susp_fen || self.susp_quorum
    }
    /// This state with the quorum `change_state` computed for it.
    pub(crate) fn with_quorum(mut self, quorum: bool, susp_quorum: bool) -> NodeState {
        self.quorum = quorum;
        self.susp_quorum = susp_quorum;
        self
    }
    pub(crate) fn role(&self) -> Role {
        self.role
    }
    /// What we know of peer `id` (a node that is not our peer: never connected).
    pub(crate) fn peer(&self, id: NodeId) -> PeerState {
        self.peers
            .iter()
            .find(|(p, _)| *p == id)
            .map_or(PeerState::INITIAL, |(_, s)| *s)
    }
    /// Every peer's state, in node-id order.
    pub(crate) fn peers(&self) -> impl Iterator<Item = (NodeId, PeerState)> + '_ {
        self.peers.iter().copied()
    }
    /// Whether some peer is Primary (DRBD's SS_TWO_PRIMARIES looks at every connection).
    pub(crate) fn any_peer_primary(&self) -> bool {
        self.peers.iter().any(|(_, p)| p.role == Role::Primary)
    }
    pub(crate) fn disk(&self) -> DiskState {
        self.disk
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
        let mut ns = self.clone();
        if let Some(r) = cs.role {
            ns.role = r;
        }
        if let Some(d) = cs.disk {
            ns.disk = d;
        }
        for (id, pc) in &cs.peers {
            if let Some((_, p)) = ns.peers.iter_mut().find(|(p, _)| p == id) {
                if let Some(r) = pc.role {
                    p.role = r;
                }
                if let Some(c) = pc.cstate {
                    p.cstate = c;
                }
                if let Some(d) = pc.pdsk {
                    p.pdsk = d;
                }
            }
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

/// The requested changes of one peer's state.
#[derive(Debug, Clone, Copy, Default)]
struct PeerChange {
    role: Option<Role>,
    cstate: Option<ConnState>,
    pdsk: Option<DiskState>,
}

/// A requested state change: the fields to set (others stay), and whether the superblock must
/// be written even if no flag changes (generation UUIDs or bitmap changed with it).
#[derive(Debug, Clone, Default)]
#[must_use = "a ChangeSet does nothing until passed to change_state"]
pub(crate) struct ChangeSet {
    role: Option<Role>,
    disk: Option<DiskState>,
    peers: Vec<(NodeId, PeerChange)>,
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
    fn peer_change(&mut self, id: NodeId) -> &mut PeerChange {
        let at = match self.peers.iter().position(|(p, _)| *p == id) {
            Some(at) => at,
            None => {
                self.peers.push((id, PeerChange::default()));
                self.peers.len() - 1
            }
        };
        &mut self.peers[at].1
    }
    /// Peer `id`'s role.
    pub(crate) fn peer_role(mut self, id: NodeId, r: Role) -> Self {
        self.peer_change(id).role = Some(r);
        self
    }
    /// The connection state towards peer `id`.
    pub(crate) fn cstate(mut self, id: NodeId, c: ConnState) -> Self {
        self.peer_change(id).cstate = Some(c);
        self
    }
    pub(crate) fn disk(mut self, d: DiskState) -> Self {
        self.disk = Some(d);
        self
    }
    /// Peer `id`'s disk state.
    pub(crate) fn pdsk(mut self, id: NodeId, d: DiskState) -> Self {
        self.peer_change(id).pdsk = Some(d);
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
    /// The disk state this change asks for (tests read a change through these).
    #[cfg(test)]
    pub(crate) fn asked_disk(&self) -> Option<DiskState> {
        self.disk
    }
    /// The disk state this change asks for peer `id`.
    #[cfg(test)]
    pub(crate) fn asked_pdsk(&self, id: NodeId) -> Option<DiskState> {
        self.peers
            .iter()
            .find(|(p, _)| *p == id)
            .and_then(|(_, c)| c.pdsk)
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
    // The resync direction says whose data is the newer one (DRBD's clamps per cstate): the
    // source's disk is UpToDate, and so is the target's view of its peer.
    let upgrade = |d: &mut DiskState| {
        if matches!(d, DiskState::Consistent | DiskState::Outdated) {
            *d = DiskState::UpToDate;
        }
    };
    for (_, p) in ns.peers.iter_mut() {
        if !p.cstate.has_link() {
            p.role = Role::Unknown;
            if !matches!(p.pdsk, DiskState::Inconsistent | DiskState::Outdated) {
                p.pdsk = DiskState::DUnknown;
            }
        }
        let both_disks = ns.disk >= DiskState::Inconsistent && p.pdsk >= DiskState::Inconsistent;
        if p.cstate == ConnState::Connected && both_disks {
            upgrade(&mut ns.disk);
            upgrade(&mut p.pdsk);
        }
        match p.cstate {
            ConnState::SyncSource | ConnState::PausedSyncS => upgrade(&mut ns.disk),
            ConnState::SyncTarget | ConnState::PausedSyncT | ConnState::WFSyncUUID => {
                upgrade(&mut p.pdsk)
            }
            _ => {}
        }
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
    let several = ns.peers.len() > 1;
    let mut lost_link = false;
    for ((id, o), (_, n)) in os.peers.iter().zip(ns.peers.iter()) {
        // With one peer DRBD 8.4's line; with more, each peer's part names it, as DRBD 9's
        // per-connection lines do.
        let mut peer = Vec::new();
        if o.role != n.role {
            peer.push(format!("peer( {} -> {} )", o.role, n.role));
        }
        if o.cstate != n.cstate {
            peer.push(format!("conn( {} -> {} )", o.cstate, n.cstate));
        }
        lost_link |= o.cstate.has_link() && !n.cstate.has_link();
        if several && !peer.is_empty() {
            parts.push(format!("node-id {id}: {}", peer.join(" ")));
        } else {
            parts.extend(peer);
        }
    }
    if os.disk != ns.disk {
        parts.push(format!("disk( {} -> {} )", os.disk, ns.disk));
    }
    for ((id, o), (_, n)) in os.peers.iter().zip(ns.peers.iter()) {
        if o.pdsk != n.pdsk {
            let pdsk = format!("pdsk( {} -> {} )", o.pdsk, n.pdsk);
            parts.push(if several {
                format!("node-id {id}: {pdsk}")
            } else {
                pdsk
            });
        }
    }
    let mut flag = |name: &str, o: bool, n: bool, shown: fn(bool) -> &'static str| {
        if o != n {
            parts.push(format!("{name}( {} -> {} )", shown(o), shown(n)));
        }
    };
    flag(
        "quorum",
        os.quorum,
        ns.quorum,
        |q| if q { "yes" } else { "no" },
    );
    flag("susp-quorum", os.susp_quorum, ns.susp_quorum, |s| {
        if s {
            "1"
        } else {
            "0"
        }
    });
    flag("susp-fen", os.susp_fen, ns.susp_fen, |s| {
        if s {
            "1"
        } else {
            "0"
        }
    });
    if parts.is_empty() {
        return;
    }
    let line = parts.join(" ");
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
            disk,
            negotiating: None,
            susp_fen: false,
            quorum: true,
            susp_quorum: false,
            peers: vec![(
                NodeId(1),
                PeerState {
                    role: Role::Secondary,
                    cstate,
                    pdsk,
                },
            )],
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
            assert_eq!(ns.peers[0].1.pdsk, after, "{before}");
            assert_eq!(ns.peers[0].1.role, Role::Unknown);
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
        assert_eq!((ns.disk, ns.peers[0].1.pdsk), (UpToDate, UpToDate));
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
        assert_eq!((ns.disk, ns.peers[0].1.pdsk), (UpToDate, Inconsistent));
        let mut ns = st(
            Role::Secondary,
            ConnState::WFSyncUUID,
            Inconsistent,
            Consistent,
        );
        sanitize(&mut ns);
        assert_eq!((ns.disk, ns.peers[0].1.pdsk), (Inconsistent, UpToDate));
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

    #[test]
    fn each_peer_has_its_own_connection_and_disk() {
        use DiskState::*;
        let (data, witness) = (NodeId(1), NodeId(2));
        let st = NodeState::initial([witness, data]);
        assert_eq!(
            st.peers().map(|(id, _)| id).collect::<Vec<_>>(),
            vec![data, witness]
        );
        let st = st.apply(
            &ChangeSet::new()
                .disk(Outdated)
                .cstate(witness, ConnState::Connected)
                .pdsk(witness, Diskless)
                .peer_role(witness, Role::Secondary),
        );
        assert_eq!(
            st.disk(),
            Outdated,
            "a diskless peer says nothing of our data"
        );
        assert_eq!(st.peer(data), PeerState::INITIAL);
        let st = st.apply(
            &ChangeSet::new()
                .cstate(data, ConnState::Connected)
                .pdsk(data, UpToDate)
                .peer_role(data, Role::Primary),
        );
        assert_eq!(
            st.disk(),
            UpToDate,
            "connected to the data peer on one generation"
        );
        assert!(st.any_peer_primary());
        let st = st.apply(&ChangeSet::new().cstate(data, ConnState::WFConnection));
        assert_eq!(
            (st.peer(data).role(), st.peer(data).pdsk()),
            (Role::Unknown, DUnknown)
        );
        assert_eq!(
            st.peer(witness).cstate(),
            ConnState::Connected,
            "the witness stays"
        );
        assert!(!st.any_peer_primary());
    }
}
