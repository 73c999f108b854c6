//! Why the engine refuses an admin command: the state that forbids it.
//!
//! Codes and texts are DRBD's (`enum drbd_state_rv` and `drbd_strings.c`), exit codes are
//! drbdsetup 8.4's, so scripts written for `drbdadm` see the same numbers from `repadm`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::state::{ConnState, DiskState, Role};

/// A refused state change or command. Each variant names the state that forbids it.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Refusal {
    /// Promotion while the peer is Primary and `allow-two-primaries` is off.
    #[error("Multiple primaries not allowed by config (peer is {peer_role})")]
    TwoPrimaries { peer_role: Role },
    /// Promotion (or staying Primary) without UpToDate data on either side.
    #[error("Need access to UpToDate data (local disk is {disk}, peer disk is {pdsk}){}", no_uptodate_hint(*disk))]
    NoUpToDateDisk { disk: DiskState, pdsk: DiskState },
    /// Promotion of a disconnected node with fencing while the peer is not known Outdated.
    #[error("Refusing to be Primary while peer is not outdated (peer disk is {pdsk}; fencing is configured and the fence-peer handler did not outdate it); fix the link, outdate the peer, or use `primary --force` only if the peer is known dead")]
    PrimaryNop { pdsk: DiskState },
    /// Promotion without quorum (docs/quorum.md).
    #[error("No quorum: {visible} of {voters} nodes visible, need {needed} for quorum; wait for the peers to connect, or use `primary --force` only if the nodes you cannot see are down for good (it outdates them)")]
    NoQuorum {
        visible: u32,
        voters: u32,
        needed: u32,
    },
    /// A role change while the connection handshake is under way.
    #[error("In transient state (the connection handshake is under way: cstate is {cstate}); retry once it is Connected")]
    InTransientState { cstate: ConnState },
    /// `resume-io` without I/O suspended.
    #[error("I/O is not suspended")]
    NotSuspended,
    /// The command needs a local disk and there is none attached.
    #[error("Need a local disk, but disk is {disk}; run `repadm attach RES`")]
    NoLocalDisk { disk: DiskState },
    /// Demotion or detach while clients hold the NBD export open.
    #[error("Device is held open by someone ({open} NBD client connection(s)); unmount and disconnect the clients first")]
    DeviceInUse { open: u32 },
    /// `disconnect` on a node that is already StandAlone.
    #[error("Already StandAlone")]
    AlreadyStandAlone,
    /// `connect` while the connection is already configured.
    #[error(
        "Connection already configured (cstate is {cstate}); run `repadm disconnect RES` first"
    )]
    NetConfigured { cstate: ConnState },
    /// `attach` while a disk is already attached.
    #[error("Disk already attached (disk is {disk}); run `repadm detach RES` first")]
    DiskConfigured { disk: DiskState },
    /// A command that needs a connection to the peer.
    #[error("Need a connection to start verify or resync (cstate is {cstate})")]
    NeedConnection { cstate: ConnState },
    /// A resync asked for while the peer has no disk to sync to or from.
    #[error("Can not resync without remote disk (peer disk is {pdsk})")]
    NoRemoteDisk { pdsk: DiskState },
    /// `outdate` when the disk is already below Outdated.
    #[error("Refusing to mark an {disk} disk Outdated (it is already worse)")]
    LowerThanOutdated { disk: DiskState },
    /// `outdate` while connected: the peer's data is this node's too (DRBD refuses).
    #[error("Refusing to be Outdated while Connected (cstate is {cstate}); disconnect first")]
    ConnectedOutdates { cstate: ConnState },
    /// A Primary may not be outdated or invalidated under its users.
    #[error("Not allowed while Primary; run `repadm secondary RES` first")]
    IsPrimary,
    /// Re-attaching under a Diskless Primary's I/O is not supported.
    #[error("Not attaching under a Diskless Primary (it serves through its peer); run `repadm secondary RES` (or fail over) first, then attach")]
    AttachWhilePrimary,
    /// A resync or verify is already running.
    #[error("Resync or verify already running (cstate is {cstate})")]
    ResyncRunning { cstate: ConnState },
    /// Opening the backing device or its metadata failed during attach.
    #[error("Can not attach the backing device: {message}")]
    AttachFailed { message: String },
    /// A metadata write failed; the disk is no longer trustworthy.
    #[error("Meta-data I/O error: {message}")]
    MetaIo { message: String },
    /// The peer refused a cluster-wide state change (e.g. it is Primary itself).
    #[error("State change refused by the peer: {reason}")]
    PeerRefused { reason: String },
    /// Another role change is being negotiated with the peer.
    #[error("Concurrent state changes detected and aborted; retry")]
    ConcurrentStateChange,
    /// `connect` on a resource with a single `on` section.
    #[error("No peer configured for this resource (a second `on HOST` section with an address is needed)")]
    NoPeerConfigured,
    /// `pause-sync` / `resume-sync` without a resync running.
    #[error("No resync running (cstate is {cstate}); pause-sync and resume-sync act on a running resync")]
    NoResync { cstate: ConnState },
    /// A command that is not implemented by this version of rep.
    #[error("{what} is not supported by this version of rep")]
    Unsupported { what: String },
    /// `verify --fix --from NODE`: that node cannot be the source, or the other one cannot be
    /// overwritten.
    #[error("verify --fix: {why}")]
    FixSource { why: String, not_uptodate: bool },
}

/// What to do about a missing UpToDate disk depends on why the local copy is not current.
fn no_uptodate_hint(disk: DiskState) -> &'static str {
    match disk {
        DiskState::Outdated => "; this copy was marked Outdated (by the peer, a fence-peer handler or `repadm outdate`): connect to the peer to resync it, or use `primary --force` only if the peer's data is lost for good",
        DiskState::Inconsistent => "; this copy is mid-resync: wait for the resync to finish, or use `primary --force` only if the peer's data is lost for good",
        DiskState::Diskless => "; attach a disk, or connect to a peer with UpToDate data",
        _ => "; use `primary --force` only if you know this node's data is the one to keep",
    }
}

/// repadm's exit code for a request the daemon will not act on (drbdadm's 20): an unsupported
/// command or option, a control line that is not a request, a state change sent to the witness.
pub const EXIT_UNSUPPORTED: i32 = 20;

impl Refusal {
    /// DRBD's `SS_*` / `ERR_*` number, printed as `(-2)` in messages.
    pub fn code(&self) -> i32 {
        match self {
            Refusal::TwoPrimaries { .. } => -1,
            Refusal::NoUpToDateDisk { .. } => -2,
            Refusal::NoLocalDisk { .. } => -4,
            Refusal::PrimaryNop { .. } => -7,
            Refusal::NoQuorum { .. } => -26,
            Refusal::NotSuspended => -3,
            Refusal::InTransientState { .. } => -18,
            Refusal::DeviceInUse { .. } => -12,
            Refusal::AlreadyStandAlone => -9,
            Refusal::NetConfigured { .. } => 125,
            Refusal::DiskConfigured { .. } => 124,
            Refusal::NeedConnection { .. } => -15,
            Refusal::NoRemoteDisk { .. } => -5,
            Refusal::LowerThanOutdated { .. } => -16,
            Refusal::ConnectedOutdates { .. } => -6,
            Refusal::IsPrimary | Refusal::AttachWhilePrimary => -12,
            Refusal::ResyncRunning { .. } => -8,
            Refusal::AttachFailed { .. } => 104,
            Refusal::MetaIo { .. } => 119,
            Refusal::Unsupported { .. } => 20,
            Refusal::PeerRefused { .. } => -19,
            Refusal::ConcurrentStateChange => -19,
            Refusal::NoPeerConfigured => 153,
            Refusal::NoResync { .. } => -8,
            Refusal::FixSource { not_uptodate, .. } => {
                if *not_uptodate {
                    -2
                } else {
                    -12
                }
            }
        }
    }

    /// Exit code of `repadm` (drbdsetup 8.4's mapping, docs/drbd-semantics.md §13.3).
    pub fn exit_code(&self) -> i32 {
        match self {
            Refusal::NoUpToDateDisk { .. } => 17,
            Refusal::FixSource {
                not_uptodate: true, ..
            } => 17,
            Refusal::NoLocalDisk { .. } => 16,
            Refusal::LowerThanOutdated { .. } => 5,
            Refusal::NetConfigured { .. }
            | Refusal::DiskConfigured { .. }
            | Refusal::AttachFailed { .. }
            | Refusal::MetaIo { .. }
            | Refusal::NoPeerConfigured => 10,
            Refusal::Unsupported { .. } => EXIT_UNSUPPORTED,
            _ => 11,
        }
    }

    /// The line repadm prints, in drbdsetup's form.
    pub fn render(&self, resource: &str) -> String {
        if self.code() > 0 {
            format!("{resource}: Failure: ({}) {self}", self.code())
        } else {
            format!("{resource}: State change failed: ({}) {self}", self.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_drbdsetup() {
        let r = Refusal::NoUpToDateDisk {
            disk: DiskState::Inconsistent,
            pdsk: DiskState::DUnknown,
        };
        assert!(r
            .render("r0")
            .starts_with("r0: State change failed: (-2) Need access to UpToDate data"));
        assert_eq!(r.exit_code(), 17);
        assert_eq!(Refusal::AlreadyStandAlone.exit_code(), 11);
        // invalidate / invalidate-remote without a connection (drbdsetup: generic exit 11).
        let r = Refusal::NeedConnection {
            cstate: ConnState::WFConnection,
        };
        assert!(r.render("r0").starts_with(
            "r0: State change failed: (-15) Need a connection to start verify or resync"
        ));
        assert_eq!(r.exit_code(), 11);
    }

    #[test]
    fn an_outdated_disk_is_explained() {
        let r = Refusal::NoUpToDateDisk {
            disk: DiskState::Outdated,
            pdsk: DiskState::DUnknown,
        };
        let text = r.to_string();
        assert!(text.contains("local disk is Outdated"), "{text}");
        assert!(text.contains("marked Outdated"), "{text}");
        assert!(text.contains("connect to the peer"), "{text}");
    }
}
