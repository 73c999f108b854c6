//! Every operation the engine has handed to the driver and not heard back about, by `IoId`,
//! with who waits for it. Completions are routed by one lookup here (`Engine::complete`), "is
//! the local disk idle" is one query, and a kind of I/O added later is covered by both.
//!
//! An owner names what waits, not the data: the sub-machine that issued the operation keeps
//! its own state (a request, a peer write, a verify chunk) under its own id and finds it
//! again from the owner. An entry leaves the table only when its completion arrives, also
//! after the link or the sub-machine it served is gone: the disk stays busy until then.

use std::collections::BTreeSet;

use super::contract::ids::IdMap;

use super::admin::pending::PendingAdmin;
use super::contract::ids::{AdminId, IoId, LinkId, ReqId};
use super::sync::verify_state::Aux;

/// Who waits for an operation, and what it needs to know when it completes.
#[derive(Debug)]
pub(crate) enum IoOwner {
    /// The local part of a client request (read, write, trim, zeroes).
    Client {
        req: ReqId,
    },
    /// A client FLUSH, and the activity-log extents whose writes it makes durable.
    ClientFlush {
        req: ReqId,
        covered: BTreeSet<u64>,
    },
    /// A write, resync write or read done for the peer (`PeerRx` op `seq`).
    PeerOp {
        seq: u64,
    },
    /// The flush behind a peer barrier.
    PeerFlush {
        epoch: u32,
        link: LinkId,
    },
    /// A SyncSource read for the peer's resync request `id` on `link`.
    ResyncRead {
        id: u64,
        link: LinkId,
    },
    /// The digests of a SyncSource read (csums-alg), for the peer's resync request `id`.
    CsumsHash {
        id: u64,
        link: LinkId,
    },
    /// A verify or csums read, then its digests.
    AuxRead(Aux),
    AuxHash(Aux),
    /// The activity-log transaction that makes extent `ext` hot.
    AlTransaction {
        ext: u64,
    },
    /// A superblock or bitmap write; an admin reply may wait for it.
    Meta {
        admin: Option<PendingAdmin>,
    },
    /// Opening the backing device for `attach`.
    OpenDisk {
        admin: PendingAdmin,
    },
    /// Closing the backing device (detach, or a Failed disk).
    CloseDisk {
        admin: Option<PendingAdmin>,
    },
    /// A handler the engine waits for.
    Handler(HandlerWait),
}

/// Why the engine waits for a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandlerWait {
    /// fence-peer, run for this purpose.
    Fence(FencePurpose),
    /// before-resync-target on `link`: the resync starts once it returns.
    BeforeResyncTarget { link: LinkId },
}

/// What a fence-peer run is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FencePurpose {
    /// A Primary lost its peer, which may still hold (or get) data we do not. `connects`: the
    /// peer's handshake count when the handler started (a result from before a later
    /// handshake is stale, `fence_done`).
    LostLink { connects: u64 },
    /// `primary` on a disconnected node needs the peer outdated first.
    Promote {
        admin: AdminId,
        force: bool,
        connects: u64,
    },
}

impl IoOwner {
    /// Whether the operation runs on the local backing device (a Failed disk is closed only
    /// once none does).
    fn uses_data_device(&self) -> bool {
        match self {
            IoOwner::Client { .. }
            | IoOwner::ClientFlush { .. }
            | IoOwner::PeerOp { .. }
            | IoOwner::PeerFlush { .. }
            | IoOwner::ResyncRead { .. }
            | IoOwner::AuxRead(_) => true,
            IoOwner::CsumsHash { .. }
            | IoOwner::AuxHash(_)
            | IoOwner::AlTransaction { .. }
            | IoOwner::Meta { .. }
            | IoOwner::OpenDisk { .. }
            | IoOwner::CloseDisk { .. }
            | IoOwner::Handler(_) => false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct IoTable {
    next: IoId,
    owners: IdMap<IoId, IoOwner>,
    /// `CloseDisk` operations in flight: `closing` is asked on every client write.
    closes: usize,
}

impl Default for IoTable {
    fn default() -> Self {
        IoTable {
            next: IoId(1),
            owners: IdMap::default(),
            closes: 0,
        }
    }
}

impl IoTable {
    /// A fresh id for an operation owned by `owner`.
    pub(crate) fn start(&mut self, owner: IoOwner) -> IoId {
        let io = self.next;
        self.next = io.next();
        if matches!(owner, IoOwner::CloseDisk { .. }) {
            self.closes += 1;
        }
        self.owners.insert(io, owner);
        io
    }

    /// The owner of a completed operation; `None` for an id the engine never issued or whose
    /// completion already came (a driver bug or a stale completion: ignored).
    pub(crate) fn finish(&mut self, io: IoId) -> Option<IoOwner> {
        let owner = self.owners.remove(&io);
        if matches!(owner, Some(IoOwner::CloseDisk { .. })) {
            self.closes -= 1;
        }
        owner
    }

    /// Admin reply `admin` waits for metadata write `io` (issued as `Meta { admin: None }`).
    pub(crate) fn wait_for(&mut self, io: IoId, admin: PendingAdmin) {
        if let Some(IoOwner::Meta { admin: slot }) = self.owners.get_mut(&io) {
            *slot = Some(admin);
        }
    }

    /// No operation runs on the local data device.
    pub(crate) fn data_device_idle(&self) -> bool {
        !self.owners.values().any(IoOwner::uses_data_device)
    }

    /// Operations of this kind in flight.
    pub(crate) fn count(&self, pred: impl Fn(&IoOwner) -> bool) -> usize {
        self.owners.values().filter(|o| pred(o)).count()
    }

    /// The extents that client FLUSHes in flight are to make durable.
    pub(crate) fn flushing_extents(&self) -> BTreeSet<u64> {
        self.owners
            .values()
            .filter_map(|o| match o {
                IoOwner::ClientFlush { covered, .. } => Some(covered.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// A close of the backing device is under way (at most one is).
    pub(crate) fn closing(&self) -> bool {
        debug_assert_eq!(
            self.closes,
            self.owners
                .values()
                .filter(|o| matches!(o, IoOwner::CloseDisk { .. }))
                .count()
        );
        self.closes > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_completions_route_once() {
        let mut t = IoTable::default();
        let a = t.start(IoOwner::Client { req: ReqId(7) });
        let b = t.start(IoOwner::AlTransaction { ext: 3 });
        assert_ne!(a, b);
        assert!(!t.data_device_idle());
        assert!(matches!(
            t.finish(a),
            Some(IoOwner::Client { req: ReqId(7) })
        ));
        assert!(t.finish(a).is_none(), "a second completion is stale");
        assert!(
            t.data_device_idle(),
            "metadata writes do not keep the data device busy"
        );
        assert!(matches!(
            t.finish(b),
            Some(IoOwner::AlTransaction { ext: 3 })
        ));
    }

    #[test]
    fn one_close_at_a_time_is_visible() {
        let mut t = IoTable::default();
        assert!(!t.closing());
        let c = t.start(IoOwner::CloseDisk { admin: None });
        assert!(t.closing());
        let _ = t.finish(c);
        assert!(!t.closing());
    }
}
