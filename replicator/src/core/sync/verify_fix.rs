//! `verify --fix`: resync the blocks the last verify marked now, without the disconnect and
//! connect DRBD needs for it (docs/drbd-semantics.md §8.5). Which side is the source follows
//! from the two sides' roles and disks alone; the engine then sends `SyncStart` or starts the
//! SyncSource (sync/verify.rs).

use crate::core::contract::io::FixSource;
use crate::core::contract::refusal::Refusal;
use crate::core::state::{ConnState, DiskState, Role};

/// The two sides as the command sees them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sides {
    pub(crate) cstate: ConnState,
    pub(crate) disk: DiskState,
    pub(crate) pdsk: DiskState,
    pub(crate) me: Role,
    pub(crate) peer: Role,
}

/// Who resyncs the marked blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fix {
    /// Nothing is marked.
    Nothing,
    /// The peer is the SyncSource: ask it to start.
    PeerIsSource,
    /// This node is the SyncSource.
    ThisIsSource,
}

/// What verify and `verify --fix` need: a connection and both disks UpToDate.
pub(crate) fn in_sync_and_connected(s: &Sides) -> Result<(), Refusal> {
    if s.cstate != ConnState::Connected {
        return Err(Refusal::NeedConnection { cstate: s.cstate });
    }
    if s.disk != DiskState::UpToDate || s.pdsk != DiskState::UpToDate {
        return Err(Refusal::NoUpToDateDisk {
            disk: s.disk,
            pdsk: s.pdsk,
        });
    }
    Ok(())
}

/// Which side resyncs the `bits` marked blocks, and the admin's answer.
pub(crate) fn plan(
    from: Option<FixSource>,
    s: &Sides,
    bits: u64,
) -> Result<(Fix, String), Refusal> {
    if let Some(f) = from {
        let (who, disk) = match f {
            FixSource::This => ("this node", s.disk),
            FixSource::Peer => ("the peer", s.pdsk),
        };
        if disk != DiskState::UpToDate {
            return Err(Refusal::FixSource {
                why: format!("the source named with --from ({who}) is {disk}, not UpToDate"),
                not_uptodate: true,
            });
        }
    }
    in_sync_and_connected(s)?;
    if bits == 0 {
        return Ok((Fix::Nothing, "nothing is marked out of sync".into()));
    }
    let (me, peer) = (s.me, s.peer);
    if from.is_none() && me == Role::Primary && peer == Role::Primary {
        return Err(Refusal::Unsupported {
            what: "verify --fix with two Primaries (which one holds the right data?)".into(),
        });
    }
    // Without --from the Primary's data is the reference.
    let peer_is_source = match from {
        Some(FixSource::Peer) => true,
        Some(FixSource::This) => false,
        None => peer == Role::Primary,
    };
    let (target, target_role) = if peer_is_source {
        ("this node", me)
    } else {
        ("the peer", peer)
    };
    if target_role == Role::Primary {
        // A SyncTarget is Inconsistent, and rep never lets a Primary be Inconsistent: it
        // reads from the peer only without a disk of its own (state/promotion.rs).
        return Err(Refusal::FixSource {
            why: format!(
                "the blocks would be resynced onto {target}, which is Primary; demote it first (`repadm secondary`), or name the Primary with --from"
            ),
            not_uptodate: false,
        });
    }
    if peer_is_source {
        let who = if peer == Role::Primary {
            "the peer (Primary)"
        } else {
            "the peer"
        };
        return Ok((
            Fix::PeerIsSource,
            format!("{bits} out-of-sync blocks: {who} resyncs them to this node"),
        ));
    }
    Ok((
        Fix::ThisIsSource,
        format!("resync of {bits} out-of-sync blocks to the peer started"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides(me: Role, peer: Role) -> Sides {
        Sides {
            cstate: ConnState::Connected,
            disk: DiskState::UpToDate,
            pdsk: DiskState::UpToDate,
            me,
            peer,
        }
    }

    #[test]
    fn the_primary_is_the_source_unless_named() {
        let s = sides(Role::Secondary, Role::Primary);
        assert_eq!(plan(None, &s, 3).map(|p| p.0), Ok(Fix::PeerIsSource));
        let s = sides(Role::Primary, Role::Secondary);
        assert_eq!(plan(None, &s, 3).map(|p| p.0), Ok(Fix::ThisIsSource));
        assert_eq!(plan(None, &s, 0).map(|p| p.0), Ok(Fix::Nothing));
        assert!(matches!(
            plan(Some(FixSource::Peer), &s, 3),
            Err(Refusal::FixSource {
                not_uptodate: false,
                ..
            })
        ));
        let both = sides(Role::Primary, Role::Primary);
        assert!(matches!(
            plan(None, &both, 3),
            Err(Refusal::Unsupported { .. })
        ));
    }

    #[test]
    fn it_needs_a_connection_and_both_disks_up_to_date() {
        let mut s = sides(Role::Secondary, Role::Secondary);
        s.pdsk = DiskState::Outdated;
        assert!(matches!(
            plan(Some(FixSource::Peer), &s, 3),
            Err(Refusal::FixSource {
                not_uptodate: true,
                ..
            })
        ));
        assert!(matches!(
            plan(None, &s, 3),
            Err(Refusal::NoUpToDateDisk { .. })
        ));
        s.cstate = ConnState::StandAlone;
        assert!(matches!(
            in_sync_and_connected(&s),
            Err(Refusal::NeedConnection { .. })
        ));
    }
}
