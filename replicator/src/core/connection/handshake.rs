//! The connection handshake (docs/drbd-semantics.md §2.6, §6.2): what one link has learnt of the
//! peer, and the pure decision both nodes take from the two reports — no resync, a resync in
//! one direction (full or by bitmap), or a refusal that leaves the node StandAlone. DRBD's
//! `drbd_sync_handshake` order: UUID comparison, the Inconsistent override, the after-sb
//! policies, `--discard-my-data`, then rr-conflict.

use std::time::Instant;

use crate::core::contract::config::EngineConfig;
use crate::core::contract::ids::LinkId;
use crate::core::policy::after_sb::{SbVerdict, SplitFacts};
use crate::core::policy::uuid_compare::{compare, SideUuids, SyncDecision};
use crate::core::state::{DiskState, Role};
use crate::meta::superblock::GenerationUuids;
use crate::wire::Params;
use rep_resources::RrConflict;

/// UUID flags on the wire (docs/drbd-semantics.md §2.1).
pub const UUID_FLAG_DISCARD_MY_DATA: u32 = 1;
pub const UUID_FLAG_CRASHED_PRIMARY: u32 = 2;
pub const UUID_FLAG_INCONSISTENT: u32 = 4;
pub const UUID_FLAG_SKIP_INITIAL_SYNC: u32 = 8;

/// One established connection and how far its handshake got.
#[derive(Debug)]
pub(crate) struct Link {
    pub id: LinkId,
    pub dialer: bool,
    pub peer_node: String,
    /// Our challenge, while the peer has not answered it.
    pub nonce: Option<Vec<u8>>,
    /// The peer proved it knows the secret (or no secret is configured).
    pub peer_authed: bool,
    pub sent_report: bool,
    pub peer_params: Option<Params>,
    pub peer_usable: Option<u64>,
    pub peer_uuids: Option<(GenerationUuids, u32)>,
    /// The peer's count of out-of-sync blocks (its changes, for the after-sb policies).
    pub peer_oos_bits: u64,
    /// Our count of out-of-sync blocks as our report gave it (the peer decides with it).
    pub sent_oos_bits: u64,
    pub peer_state: Option<(Role, DiskState)>,
    pub bitmap_rx: Vec<u8>,
    pub peer_bitmap: Option<Vec<u8>>,
    pub decided: bool,
    pub last_rx: Instant,
    pub ping_sent: Option<Instant>,
    pub last_sent_state: Option<(Role, DiskState)>,
}

impl Link {
    pub(crate) fn new(
        id: LinkId,
        dialer: bool,
        peer_node: String,
        authed: bool,
        now: Instant,
    ) -> Link {
        Link {
            id,
            dialer,
            peer_node,
            nonce: None,
            peer_authed: authed,
            sent_report: false,
            peer_params: None,
            peer_usable: None,
            peer_oos_bits: 0,
            sent_oos_bits: 0,
            peer_uuids: None,
            peer_state: None,
            bitmap_rx: Vec::new(),
            peer_bitmap: None,
            decided: false,
            last_rx: now,
            ping_sent: None,
            last_sent_state: None,
        }
    }

    /// The peer's complete report, once every part of it arrived (and ours was sent).
    pub(crate) fn peer_report(&self) -> Option<PeerReport> {
        if self.decided || !self.sent_report {
            return None;
        }
        let (uuids, flags) = self.peer_uuids?;
        let (role, disk) = self.peer_state?;
        Some(PeerReport {
            params: self.peer_params.clone()?,
            usable: self.peer_usable?,
            uuids,
            flags,
            role,
            disk,
            bitmap: self.peer_bitmap.clone()?,
            changes: self.peer_oos_bits,
        })
    }
}

/// What the peer reported in its handshake.
#[derive(Debug, Clone)]
pub(crate) struct PeerReport {
    pub params: Params,
    pub usable: u64,
    pub uuids: GenerationUuids,
    pub flags: u32,
    pub role: Role,
    pub disk: DiskState,
    pub bitmap: Vec<u8>,
    pub changes: u64,
}

/// Our side of the handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OurSide {
    pub role: Role,
    pub disk: DiskState,
    pub uuids: GenerationUuids,
    pub crashed_primary: bool,
    /// `connect --discard-my-data`.
    pub discard_my_data: bool,
    /// Blocks set in our bitmap: our changes, for the after-sb policies.
    pub changes: u64,
    /// Blocks set in our bitmap as our report told the peer (what it decides with).
    pub reported_changes: u64,
    /// No client holds the device and none of its requests is in flight.
    pub can_demote: bool,
    /// We accepted the connection: we hold DRBD's RESOLVE_CONFLICTS (ties make us target).
    pub resolve_conflicts: bool,
}

/// The handshake's outcome for a pair with two disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    NoSync,
    Source {
        full: bool,
    },
    Target {
        full: bool,
    },
    /// Nothing may be synced: drop the link and stay StandAlone.
    Refuse {
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub outcome: Outcome,
    /// Handlers to run, in order (initial-split-brain, split-brain, pri-lost...).
    pub handlers: Vec<&'static str>,
    /// We lost a split brain as Primary (call-pri-lost-after-sb): demote before syncing.
    pub demote: bool,
    /// Equal generations, but blocks are marked out of sync and no side may be taken as
    /// the source: what the operator is told (status, `events`, log).
    pub unresolved: Option<String>,
}

/// The decision for two disks (docs/drbd-semantics.md §2.6), from our point of view.
pub(crate) fn decide(cfg: &EngineConfig, me: &OurSide, peer: &PeerReport) -> Decision {
    let res = &cfg.resource;
    let mut d = Decision {
        outcome: Outcome::NoSync,
        handlers: Vec::new(),
        demote: false,
        unresolved: None,
    };
    let mine = SideUuids {
        uuids: me.uuids,
        crashed_primary: me.crashed_primary,
        primary: me.role == Role::Primary,
    };
    let theirs = SideUuids {
        uuids: peer.uuids,
        crashed_primary: peer.flags & UUID_FLAG_CRASHED_PRIMARY != 0,
        primary: peer.role == Role::Primary,
    };
    // As DRBD's drbd_sync_handshake logs them: what the decision is made from.
    let show = |u: &GenerationUuids| {
        format!(
            "{:016X}:{:016X}:{:016X}:{:016X}",
            u.current, u.bitmap, u.history[0], u.history[1]
        )
    };
    tracing::info!(resource = %res, "drbd_sync_handshake: self {} bits:{} crashed-primary:{}; peer {} bits:{} flags:{}", show(&me.uuids), me.changes, me.crashed_primary, show(&peer.uuids), peer.changes, peer.flags);
    let (mut decision, rule) = compare(&mine, &theirs, me.resolve_conflicts);
    tracing::info!(resource = %res, "uuid_compare()={decision:?} by rule {rule}");
    // An Inconsistent side never wins against a consistent one.
    let me_inc = me.disk == DiskState::Inconsistent;
    let peer_inc = peer.disk == DiskState::Inconsistent;
    let was_full = matches!(
        decision,
        SyncDecision::Source { full: true }
            | SyncDecision::Target { full: true }
            | SyncDecision::SplitBrain {
                auto_recoverable: false
            }
    );
    if me_inc && !peer_inc {
        decision = SyncDecision::Target { full: was_full };
    } else if peer_inc && !me_inc {
        decision = SyncDecision::Source { full: was_full };
    }
    if let SyncDecision::SplitBrain { auto_recoverable } = decision {
        d.handlers.push("initial-split-brain");
        if auto_recoverable || cfg.peer.always_asbp {
            let full = !auto_recoverable;
            if let Some(policy) = after_sb_policy(cfg, me, peer, full, &mut d) {
                decision = if policy {
                    SyncDecision::Source { full }
                } else {
                    SyncDecision::Target { full }
                };
            }
        }
    }
    if let SyncDecision::SplitBrain { auto_recoverable } = decision {
        let peer_discards =
            peer.params.discard_my_data || peer.flags & UUID_FLAG_DISCARD_MY_DATA != 0;
        decision = match (me.discard_my_data, peer_discards) {
            (true, false) => {
                tracing::warn!(resource = %res, "Split-Brain detected, manually solved. Sync from peer node");
                SyncDecision::Target {
                    full: !auto_recoverable,
                }
            }
            (false, true) => {
                tracing::warn!(resource = %res, "Split-Brain detected, manually solved. Sync from this node");
                SyncDecision::Source {
                    full: !auto_recoverable,
                }
            }
            _ => {
                d.handlers.push("split-brain");
                d.outcome = Outcome::Refuse {
                    why: format!("Split-Brain detected but unresolved, dropping connection! Recover with `repadm secondary {res}; repadm connect --discard-my-data {res}` on the node whose changes are to be thrown away, and `repadm connect {res}` on the other"),
                };
                return d;
            }
        };
    }
    d.outcome = match decision {
        SyncDecision::Unrelated => Outcome::Refuse {
            why: format!("Unrelated data, aborting! The peer's data has no common history with ours; if this is a new peer, run `repadm invalidate {res}` on the node to be overwritten"),
        },
        SyncDecision::SplitBrain { .. } | SyncDecision::NoSync => Outcome::NoSync,
        SyncDecision::Source { .. } if me.disk <= DiskState::Inconsistent => Outcome::Refuse {
            why: "I shall become SyncSource, but I am inconsistent!".into(),
        },
        SyncDecision::Source { full } => Outcome::Source { full },
        SyncDecision::Target { .. }
            if me.role == Role::Primary
                && !d.demote
                && me.disk >= DiskState::Consistent
                && cfg.peer.rr_conflict != RrConflict::Violently =>
        {
            if cfg.peer.rr_conflict == RrConflict::CallPriLost {
                d.handlers.push("pri-lost");
            }
            Outcome::Refuse {
                why: format!(
                    "I shall become SyncTarget, but I am primary! (rr-conflict {})",
                    cfg.peer.rr_conflict
                ),
            }
        }
        SyncDecision::Target { full } => Outcome::Target { full },
    };
    if rule == 40 && d.outcome == Outcome::NoSync {
        equal_generations_with_bits(cfg, me, peer, &mut d);
    }
    d
}

/// Rule 40 (same generation, no crashed Primary) says "no resync", but a bitmap says some
/// blocks differ: DRBD only logs "No resync, but N bits in bitmap!" and leaves both sides
/// UpToDate over different data. rep goes beyond DRBD here, following the current Primary as
/// DRBD 9 does for its roles-at-crash-time decisions (goodness_to_repl_state): its data is what
/// the application sees, so it becomes SyncSource and the union of both bitmaps is resynced to
/// the peer. The Primary counts its live bits (writes admitted during the handshake set bits
/// after its report), the Secondary the reported ones; both are > 0 whenever the Secondary's
/// view is, so the two sides never both choose source.
///
/// Without exactly one Primary no direction is safe: bits on a Secondary mean "changed here"
/// (a demoted Primary's unreplicated writes) as often as "suspect here" (activity-log extents
/// replayed after an unclean stop, a write that failed under `on-io-error pass_on`, blocks
/// online verify found), and guessing wrong overwrites good data. The pair stays Connected and
/// the condition is shown in `status` and `events` with the command that settles it.
fn equal_generations_with_bits(
    cfg: &EngineConfig,
    me: &OurSide,
    peer: &PeerReport,
    d: &mut Decision,
) {
    let res = &cfg.resource;
    let (me_primary, peer_primary) = (me.role == Role::Primary, peer.role == Role::Primary);
    // The target keeps at least Outdated data (Inconsistent sides were decided above).
    let (me_source_ok, peer_source_ok) = (
        me.disk == DiskState::UpToDate && peer.disk >= DiskState::Outdated,
        peer.disk == DiskState::UpToDate && me.disk >= DiskState::Outdated,
    );
    let mine = if me_primary {
        me.changes.max(me.reported_changes)
    } else {
        me.reported_changes
    };
    if mine == 0 && peer.changes == 0 {
        return;
    }
    match (me_primary, peer_primary) {
        (true, false) if me_source_ok => {
            tracing::warn!(resource = %res, "No resync by UUIDs, but {mine} bits here and {} on the peer: resyncing them from this node (the Primary)", peer.changes);
            d.outcome = Outcome::Source { full: false };
        }
        (false, true) if peer_source_ok => {
            tracing::warn!(resource = %res, "No resync by UUIDs, but {mine} bits here and {} on the peer: resyncing them from the peer (the Primary)", peer.changes);
            d.outcome = Outcome::Target { full: false };
        }
        _ => {
            let text = format!(
                "{} KiB marked out of sync here and {} KiB on the peer, but the data generations are equal and no single Primary decides the direction; run `repadm invalidate {res}` on the node whose copy is to be overwritten (or `repadm invalidate-remote {res}` on the node whose copy is to be kept)",
                mine * 4,
                peer.changes * 4
            );
            tracing::warn!(resource = %res, "No resync, but {mine} bits in bitmap! {text}");
            d.unresolved = Some(text);
        }
    }
}

/// The after-sb-0pri/1pri/2pri answer to a split brain: `Some(true)` we are the source.
fn after_sb_policy(
    cfg: &EngineConfig,
    me: &OurSide,
    peer: &PeerReport,
    full: bool,
    d: &mut Decision,
) -> Option<bool> {
    let res = &cfg.resource;
    let s = &cfg.peer;
    let facts = SplitFacts {
        node: &cfg.node,
        role: me.role,
        peer_role: peer.role,
        self_was_primary: me.uuids.bitmap & 1 == 1,
        peer_was_primary: peer.uuids.bitmap & 1 == 1,
        changes_self: me.changes,
        changes_peer: peer.changes,
        resolve_conflicts: me.resolve_conflicts,
        can_demote: me.can_demote,
    };
    let primaries = u8::from(me.role == Role::Primary) + u8::from(peer.role == Role::Primary);
    let verdict = crate::core::policy::after_sb::recover(
        &s.after_sb_0pri,
        s.after_sb_1pri,
        s.after_sb_2pri,
        &facts,
    )?;
    if verdict == SbVerdict::PriLost {
        tracing::error!(resource = %res, "Split-Brain: this Primary lost (call-pri-lost-after-sb) but is in use and cannot be demoted");
        d.handlers.push("pri-lost-after-sb");
        return None;
    }
    let source = verdict == SbVerdict::Source;
    tracing::warn!(resource = %res, "Split-Brain detected, {primaries} primaries, automatically solved. Sync from {} node", if source { "this" } else { "peer" });
    if full {
        tracing::warn!(resource = %res, "Doing a full sync, since UUIDs where ambiguous.");
    }
    if verdict == (SbVerdict::Target { demote: true }) {
        tracing::warn!(resource = %res, "split brain lost as Primary (call-pri-lost-after-sb): demoting to Secondary");
        d.demote = true;
    }
    Some(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::contract::config::PeerSettings;
    use crate::core::contract::ids::NodeId;
    use rep_resources::{AfterSb0, AfterSb1, Fencing, OnIoError, Protocol};

    fn cfg() -> EngineConfig {
        EngineConfig {
            resource: "r0".into(),
            node: "node-a".into(),
            node_id: NodeId(0),
            peer_id: NodeId(1),
            peer_node: "node-b".into(),
            minor: 0,
            device: "/dev/drbd0".into(),
            protocol: Protocol::C,
            has_peer: true,
            allow_two_primaries: false,
            al_extents: 61,
            fencing: Fencing::DontCare,
            on_io_error: OnIoError::Detach,
            quorum: rep_resources::quorum::QuorumConf::default(),
            witness: None,
            peer: PeerSettings::default(),
        }
    }

    fn uuids(current: u64, bitmap: u64) -> GenerationUuids {
        GenerationUuids {
            current,
            bitmap,
            history: [0, 0],
        }
    }

    fn me(role: Role, disk: DiskState, u: GenerationUuids) -> OurSide {
        OurSide {
            role,
            disk,
            uuids: u,
            crashed_primary: false,
            discard_my_data: false,
            changes: 1,
            reported_changes: 1,
            can_demote: true,
            resolve_conflicts: false,
        }
    }

    fn peer(role: Role, disk: DiskState, u: GenerationUuids) -> PeerReport {
        PeerReport {
            params: Params {
                protocol: b'C',
                after_sb_0pri: "disconnect".into(),
                after_sb_1pri: "disconnect".into(),
                after_sb_2pri: "disconnect".into(),
                allow_two_primaries: false,
                discard_my_data: false,
                integrity_alg: String::new(),
                verify_alg: String::new(),
                csums_alg: String::new(),
            },
            usable: 1 << 30,
            uuids: u,
            flags: 0,
            role,
            disk,
            bitmap: Vec::new(),
            changes: 1,
        }
    }

    const A: u64 = 0x1000_0000_0000_0000;
    const B: u64 = 0x2000_0000_0000_0000;
    const C: u64 = 0x3000_0000_0000_0000;
    use DiskState::{Inconsistent, UpToDate};
    use Role::{Primary, Secondary};

    #[test]
    fn same_generation_needs_no_sync_and_newer_bitmap_side_is_source() {
        let d = decide(
            &cfg(),
            &me(Secondary, UpToDate, uuids(A, 0)),
            &peer(Secondary, UpToDate, uuids(A, 0)),
        );
        assert_eq!(d.outcome, Outcome::NoSync);
        // We wrote while apart: our current moved on, the old one is our bitmap UUID.
        let d = decide(
            &cfg(),
            &me(Primary, UpToDate, uuids(B, A)),
            &peer(Secondary, UpToDate, uuids(A, 0)),
        );
        assert_eq!(d.outcome, Outcome::Source { full: false });
    }

    #[test]
    fn an_inconsistent_side_never_wins() {
        let d = decide(
            &cfg(),
            &me(Secondary, UpToDate, uuids(A, 0)),
            &peer(Secondary, Inconsistent, uuids(B, A)),
        );
        assert!(matches!(d.outcome, Outcome::Source { .. }), "{d:?}");
        let d = decide(
            &cfg(),
            &me(Secondary, Inconsistent, uuids(B, A)),
            &peer(Secondary, UpToDate, uuids(A, 0)),
        );
        assert!(matches!(d.outcome, Outcome::Target { .. }), "{d:?}");
    }

    #[test]
    fn an_unresolved_split_brain_refuses_and_runs_both_handlers() {
        let d = decide(
            &cfg(),
            &me(Secondary, UpToDate, uuids(B, A)),
            &peer(Secondary, UpToDate, uuids(C, A)),
        );
        assert!(matches!(d.outcome, Outcome::Refuse { .. }), "{d:?}");
        assert_eq!(d.handlers, vec!["initial-split-brain", "split-brain"]);
    }

    #[test]
    fn discard_my_data_decides_a_split_brain() {
        let mut m = me(Secondary, UpToDate, uuids(B, A));
        m.discard_my_data = true;
        let d = decide(&cfg(), &m, &peer(Secondary, UpToDate, uuids(C, A)));
        assert_eq!(d.outcome, Outcome::Target { full: false });
        let mut p = peer(Secondary, UpToDate, uuids(C, A));
        p.flags = UUID_FLAG_DISCARD_MY_DATA;
        let d = decide(&cfg(), &me(Secondary, UpToDate, uuids(B, A)), &p);
        assert_eq!(d.outcome, Outcome::Source { full: false });
    }

    #[test]
    fn a_policy_resolves_and_a_losing_primary_demotes() {
        let mut c = cfg();
        c.peer.after_sb_0pri = AfterSb0::DiscardZeroChanges;
        c.peer.after_sb_1pri = AfterSb1::CallPriLostAfterSb;
        let mut m = me(Primary, UpToDate, uuids(B, A));
        m.changes = 0;
        let d = decide(&c, &m, &peer(Secondary, UpToDate, uuids(C, A)));
        assert_eq!(d.outcome, Outcome::Target { full: false });
        assert!(d.demote);
        m.can_demote = false;
        let d = decide(&c, &m, &peer(Secondary, UpToDate, uuids(C, A)));
        assert!(matches!(d.outcome, Outcome::Refuse { .. }));
        assert!(d.handlers.contains(&"pri-lost-after-sb"));
    }

    #[test]
    fn rr_conflict_keeps_a_primary_from_becoming_target() {
        let m = me(Primary, UpToDate, uuids(A, 0));
        let p = peer(Secondary, UpToDate, uuids(B, A));
        assert!(matches!(
            decide(&cfg(), &m, &p).outcome,
            Outcome::Refuse { .. }
        ));
        let mut c = cfg();
        c.peer.rr_conflict = RrConflict::CallPriLost;
        let d = decide(&c, &m, &p);
        assert_eq!(d.handlers, vec!["pri-lost"]);
        c.peer.rr_conflict = RrConflict::Violently;
        assert_eq!(decide(&c, &m, &p).outcome, Outcome::Target { full: false });
    }

    /// Both nodes decide from mirrored inputs: (role, reported bits, live bits) per side.
    fn both_sides(a: (Role, u64, u64), b: (Role, u64, u64)) -> (Decision, Decision) {
        let side = |me: (Role, u64, u64), other: (Role, u64, u64)| {
            let mut m = super::tests::me(me.0, UpToDate, uuids(A, 0));
            m.reported_changes = me.1;
            m.changes = me.2;
            let mut p = peer(other.0, UpToDate, uuids(A, 0));
            p.changes = other.1;
            decide(&cfg(), &m, &p)
        };
        (side(a, b), side(b, a))
    }

    #[test]
    fn equal_generations_with_bits_resync_from_the_single_primary() {
        // Bits on either side, or written by the Primary after its report: the Primary is
        // source, the Secondary target (or still NoSync when it cannot know yet: it accepts
        // the SyncStart that follows while Connected).
        for (p_rep, p_live, s_rep) in [(5, 5, 0), (0, 0, 7), (3, 3, 2), (0, 9, 0)] {
            let (p, s) = both_sides((Primary, p_rep, p_live), (Secondary, s_rep, s_rep));
            assert_eq!(
                p.outcome,
                Outcome::Source { full: false },
                "{p_rep} {p_live} {s_rep}"
            );
            let want = if p_rep + s_rep > 0 {
                Outcome::Target { full: false }
            } else {
                Outcome::NoSync
            };
            assert_eq!(s.outcome, want, "{p_rep} {p_live} {s_rep}");
            assert!(p.unresolved.is_none() && s.unresolved.is_none());
        }
        // No bits: nothing to do, nothing to say.
        let (p, s) = both_sides((Primary, 0, 0), (Secondary, 0, 0));
        assert_eq!((p.outcome, s.outcome), (Outcome::NoSync, Outcome::NoSync));
        assert!(p.unresolved.is_none() && s.unresolved.is_none());
    }

    #[test]
    fn equal_generations_with_bits_and_no_single_primary_are_reported_not_guessed() {
        for (ra, rb) in [(Secondary, Secondary), (Primary, Primary)] {
            for (bits_a, bits_b) in [(4, 0), (0, 4), (2, 3)] {
                let (a, b) = both_sides((ra, bits_a, bits_a), (rb, bits_b, bits_b));
                assert_eq!(
                    (&a.outcome, &b.outcome),
                    (&Outcome::NoSync, &Outcome::NoSync)
                );
                for d in [&a, &b] {
                    let text = d.unresolved.as_deref().unwrap_or_default();
                    assert!(text.contains("repadm invalidate r0"), "{text}");
                }
            }
        }
    }

    #[test]
    fn unrelated_data_is_refused() {
        let d = decide(
            &cfg(),
            &me(Secondary, UpToDate, uuids(A, 0)),
            &peer(Secondary, UpToDate, uuids(C, B)),
        );
        assert!(
            matches!(d.outcome, Outcome::Refuse { ref why } if why.starts_with("Unrelated data"))
        );
    }
}
