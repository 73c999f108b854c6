//! The engine's inputs and outputs: the whole contract between the sans-IO core and a driver.
//!
//! Outputs are commands; their completions come back as inputs carrying the same `IoId`.
//! Data buffers never pass through the engine: the driver keeps them keyed by `ReqId`.

use serde::{Deserialize, Serialize};

use crate::core::contract::failure::{NetFailure, OpenFailure};
use crate::core::contract::refusal::Refusal;
/// Metadata operations are the metadata module's; the engine emits and receives them.
pub use crate::meta::ops::{AttachInfo, MetaOpKind};

pub use crate::core::contract::ids::{AdminId, IoId, LinkId, ReqId};

/// One NBD-level request, already validated against the export size by the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp {
    Read { offset: u64, len: u32 },
    Write { offset: u64, len: u32, fua: bool },
    Flush,
    Trim { offset: u64, len: u32, fua: bool },
    WriteZeroes { offset: u64, len: u32, fua: bool },
}

impl ClientOp {
    /// Byte range written by this op, if it writes.
    pub fn write_range(&self) -> Option<(u64, u64)> {
        match *self {
            ClientOp::Write { offset, len, .. }
            | ClientOp::Trim { offset, len, .. }
            | ClientOp::WriteZeroes { offset, len, .. } => Some((offset, u64::from(len))),
            ClientOp::Read { .. } | ClientOp::Flush => None,
        }
    }
}

/// What the driver must do on the local backing device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOpKind {
    Read {
        offset: u64,
        len: u32,
    },
    /// Write the client's buffer of request `req`; `fua` = durable before completion.
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        fua: bool,
    },
}

/// Failure of one I/O, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoFailure {
    pub errno: i32,
    pub message: String,
}

pub type IoResult = Result<(), IoFailure>;

/// The node `verify --fix --from NODE` names as the source of the blocks to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixSource {
    /// The node the command runs on.
    This,
    /// Its peer.
    Peer,
}

/// Admin commands that change state. Read-only queries are no inputs: the driver reads the getters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum AdminCmd {
    Primary {
        #[serde(default)]
        force: bool,
    },
    Secondary,
    Attach,
    Detach {
        #[serde(default)]
        force: bool,
    },
    Connect {
        #[serde(default)]
        discard_my_data: bool,
    },
    Disconnect {
        #[serde(default)]
        force: bool,
    },
    Outdate,
    NewCurrentUuid {
        #[serde(default)]
        clear_bitmap: bool,
    },
    Invalidate,
    InvalidateRemote,
    Verify,
    /// `verify --fix`: resync the blocks marked out of sync now, without a disconnect/connect:
    /// from `from` (`verify --fix --from NODE`), else from the Primary (or from this node if
    /// neither or only it is Primary).
    ResyncOutOfSync {
        #[serde(default)]
        from: Option<FixSource>,
    },
    PauseSync,
    ResumeSync,
    /// Thaw I/O frozen by fencing (`repadm resume-io`).
    ResumeIo,
    /// The peer lost its connection to us and asks us to outdate our disk (sent by its
    /// repd over the network, never by repadm): answered once Outdated is durable.
    PeerOutdate,
}

/// Error returned to an NBD client, as an NBD errno plus a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub nbd_errno: u32,
    pub message: String,
}

/// NBD errno values the engine produces (protocol constants, not host errno).
pub mod nbd_errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOSPC: u32 = 28;
    pub const ESHUTDOWN: u32 = 108;
}

#[derive(Debug)]
pub enum Input {
    /// An NBD client entered transmission (the device is "open").
    ClientOpened,
    /// An NBD client went away.
    ClientClosed,
    Client {
        req: ReqId,
        op: ClientOp,
    },
    DiskDone {
        io: IoId,
        result: IoResult,
    },
    MetaDone {
        io: IoId,
        result: IoResult,
    },
    /// Result of `Output::OpenDisk`.
    DiskOpened {
        io: IoId,
        result: Result<Box<AttachInfo>, OpenFailure>,
    },
    /// Result of `Output::CloseDisk`.
    DiskClosed {
        io: IoId,
    },
    Admin {
        id: AdminId,
        cmd: AdminCmd,
    },
    Timer,
    /// Both sockets to the peer are up (after `Output::Connect`). `dialer`: we play the
    /// connecting side, so the peer holds RESOLVE_CONFLICTS (DRBD: the accepting side holds it;
    /// the runtime gives the part to the node with the lower address, whoever dialled).
    LinkUp {
        link: LinkId,
        dialer: bool,
        peer_node: String,
        /// Fresh bytes from the operating system's random source for this link's
        /// authentication challenge (the core draws no entropy of its own).
        nonce: [u8; crate::wire::auth::NONCE_BYTES],
    },
    Packet {
        link: LinkId,
        packet: crate::wire::Packet,
    },
    LinkDown {
        link: LinkId,
        loss: LinkLoss,
    },
    PeerDiskDone {
        io: IoId,
        result: Result<Option<Vec<u8>>, IoFailure>,
    },
    /// Result of `PeerDiskOp::ReadSparse`: the range in order, as data and runs of zeroes.
    SparseReadDone {
        io: IoId,
        result: Result<Vec<Extent>, IoFailure>,
    },
    /// The `resync-after` resource started (true) or finished (false) resyncing.
    DependencySyncing {
        syncing: bool,
    },
    /// Result of `Output::Hash`: the digests of each 4 KiB block, concatenated.
    HashDone {
        io: IoId,
        digests: Vec<u8>,
    },
    /// Result of `Output::RunHandler`: the handler's exit status, `None` if it could not run,
    /// was killed or did not finish in time.
    HandlerDone {
        io: IoId,
        exit: Option<i32>,
    },
    /// `repadm adjust`: the configuration re-read from the `.res` file.
    Reconfigure {
        cfg: Box<crate::core::contract::config::EngineConfig>,
    },
    /// The link to the resource's diskless witness is up (`connected`), or is not (gone, or
    /// being dialled): it counts for quorum (docs/quorum.md, "The witness").
    WitnessSeen {
        connected: bool,
    },
}

/// Why a link went away, in DRBD's connection-state words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLoss {
    /// The peer closed or reset the connection.
    BrokenPipe,
    /// A socket error other than a clean close.
    NetworkFailure(NetFailure),
    /// The peer sent a frame the decoder refused.
    ProtocolError(crate::wire::frame::WireError),
}

/// Disk work done on behalf of the peer (replicated writes, resync, verify): the data travels
/// through the engine because it comes from (or goes to) a packet, not a client buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerDiskOp {
    Write {
        offset: u64,
        /// A slice of the link's read buffer, as the packet brought it (no copy).
        data: bytes::Bytes,
        fua: bool,
    },
    Zero {
        offset: u64,
        len: u32,
        trim: bool,
        fua: bool,
    },
    Read {
        offset: u64,
        len: u32,
    },
    /// A SyncSource read: like `Read`, but the driver reports the 4 KiB blocks (aligned to
    /// the device) that read as zeroes as `Extent::Zero` instead of their bytes, and may skip
    /// reading them at all (holes). Answered with `Input::SparseReadDone`.
    ReadSparse {
        offset: u64,
        len: u32,
    },
    Flush,
}

/// One piece of a sparse read, in device order: bytes read, or a run of zeroes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extent {
    Data(Vec<u8>),
    Zero(u32),
}

impl Extent {
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data(d) => d.len() as u64,
            Extent::Zero(n) => u64::from(*n),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Block size of the zero detection of a sparse read (the bitmap's block).
pub const SPARSE_BLOCK: u64 = 4096;

/// Split `data` read at `offset` into extents: every block of `SPARSE_BLOCK` (aligned to the
/// device, so the first and last may be partial) that is all zeroes becomes part of a zero
/// run; the rest stays data. Consecutive pieces of one kind are merged.
pub fn split_zero_blocks(offset: u64, data: Vec<u8>, out: &mut Vec<Extent>) {
    let mut pos = 0usize;
    let mut data_start: Option<usize> = None;
    while pos < data.len() {
        let at = offset + pos as u64;
        let to_boundary = usize::try_from(SPARSE_BLOCK - at % SPARSE_BLOCK).unwrap_or(1);
        let end = (pos + to_boundary).min(data.len());
        if is_zero(&data[pos..end]) {
            if let Some(s) = data_start.take() {
                push_data(out, data[s..pos].to_vec());
            }
            push_zero(out, u32::try_from(end - pos).unwrap_or(u32::MAX));
        } else if data_start.is_none() {
            data_start = Some(pos);
        }
        pos = end;
    }
    if let Some(s) = data_start {
        if s == 0 {
            push_data(out, data);
        } else {
            push_data(out, data[s..].to_vec());
        }
    }
}

/// Append a run of `n` zeroes, merged with a run before it.
pub fn push_zero(out: &mut Vec<Extent>, n: u32) {
    if n == 0 {
        return;
    }
    if let Some(Extent::Zero(z)) = out.last_mut() {
        *z += n;
    } else {
        out.push(Extent::Zero(n));
    }
}

/// Append bytes, merged with data before them.
pub fn push_data(out: &mut Vec<Extent>, d: Vec<u8>) {
    if d.is_empty() {
        return;
    }
    if let Some(Extent::Data(prev)) = out.last_mut() {
        prev.extend_from_slice(&d);
    } else {
        out.push(Extent::Data(d));
    }
}

/// Whether every byte of `b` is zero (16 bytes at a time: this runs over every block a full
/// sync reads).
pub fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(16);
    let zero_words = words
        .by_ref()
        .all(|w| <[u8; 16]>::try_from(w).is_ok_and(|w| u128::from_ne_bytes(w) == 0));
    zero_words && words.remainder().iter().all(|&x| x == 0)
}

#[derive(Debug)]
pub enum Output {
    Disk {
        io: IoId,
        req: ReqId,
        op: DiskOpKind,
    },
    Meta {
        io: IoId,
        op: MetaOpKind,
    },
    /// Open the backing device and its metadata, then answer with `Input::DiskOpened`.
    OpenDisk {
        io: IoId,
    },
    /// Close the backing device (after the final metadata writes), answer with `DiskClosed`.
    CloseDisk {
        io: IoId,
    },
    ClientReply {
        req: ReqId,
        result: Result<(), ClientError>,
    },
    /// The data of client read `req`, read from the peer (Diskless Primary); its
    /// `ClientReply` follows.
    ClientData {
        req: ReqId,
        data: Vec<u8>,
    },
    AdminReply {
        id: AdminId,
        result: Result<String, Refusal>,
    },
    /// The visible state changed: rewrite the status file, notify `events` listeners.
    StateChanged,
    /// Read the `resync-after` resource's state now and answer with `Input::DependencySyncing`.
    CheckDependency,
    /// Run the `handlers { NAME "command"; }` entry, if configured, without waiting for it
    /// (DRBD's usermode helpers: split-brain, initial-split-brain, pri-lost-after-sb, pri-lost,
    /// pri-on-incon-degr, local-io-error, after-resync-target, before-resync-source,
    /// unfence-peer, out-of-sync).
    Handler {
        name: &'static str,
    },
    /// Run handler `name` and answer with `Input::HandlerDone` and its exit status (within the
    /// driver's time limit): the engine waits for it (fence-peer, before-resync-target). A
    /// handler that is not configured answers 0, except fence-peer, for which the driver asks
    /// the peer over the network to outdate itself (DRBD's drbd-peer-outdater).
    RunHandler {
        io: IoId,
        name: &'static str,
    },
    /// Keep trying to reach the peer (dial and accept) until `LinkUp`; `connect-int` paces it.
    Connect,
    /// Stop trying and close the link if there is one (StandAlone).
    Disconnect,
    /// Drop this link (the engine already moved on); the driver reconnects only after `Connect`.
    CloseLink {
        link: LinkId,
    },
    Send {
        link: LinkId,
        packet: crate::wire::Packet,
    },
    /// Send bytes `buf_offset .. buf_offset + len` of client write `req` as
    /// `Packet::Data { id: req, offset, fua, data }`, taking the data from the client's buffer
    /// (which the driver keeps until the write completes). A write larger than one packet's
    /// payload comes as several of these.
    SendWrite {
        link: LinkId,
        req: ReqId,
        offset: u64,
        buf_offset: u32,
        len: u32,
        fua: bool,
    },
    PeerDisk {
        io: IoId,
        op: PeerDiskOp,
    },
    /// Hash `data` per 4 KiB block with `alg` (verify-alg / csums-alg) off the I/O thread,
    /// answer with `Input::HashDone`.
    Hash {
        io: IoId,
        alg: HashAlg,
        data: Vec<u8>,
    },
}

/// Digest algorithms for `verify-alg` and `csums-alg` (computed by [`crate::digest`]).
pub use rep_resources::DigestAlg as HashAlg;
#[cfg(test)]
mod sizes {
    /// Every write moves its inputs and outputs through the driver's queues several times
    /// (memmove was 4 % of the Secondary's user time with `Params` inline, 160 bytes each). A
    /// variant that would grow them belongs behind a `Box` (see `wire::field::Boxed`). A
    /// packet's block is `Bytes` (32 bytes, a `Vec` is 24): 8 bytes more per move buys a
    /// 4 KiB copy less per write (`wire::field::Payload`).
    #[test]
    fn the_per_write_messages_stay_small() {
        assert!(std::mem::size_of::<crate::wire::Packet>() <= 56);
        assert!(std::mem::size_of::<super::Output>() <= 64);
        assert!(std::mem::size_of::<super::Input>() <= 80);
    }
}
