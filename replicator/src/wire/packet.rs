//! Every packet the peers exchange, with its encoding. `decode` checks every length against the
//! payload it was given and rejects trailing bytes: a packet is either exactly right or an error.

use super::frame::{encode_header, FrameHeader, WireError, MAX_DATA_BYTES, MAX_STRING_BYTES};

/// Which of the two TCP connections a packet travels on (docs/drbd-semantics.md §6.1): acks and pings go on
/// `Meta` so that they never queue behind megabytes of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Data,
    Meta,
}

/// Settings both nodes must agree on (`net` section), checked during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub protocol: u8,
    pub after_sb_0pri: String,
    pub after_sb_1pri: String,
    pub after_sb_2pri: String,
    pub allow_two_primaries: bool,
    pub discard_my_data: bool,
    pub integrity_alg: String,
    pub verify_alg: String,
    pub csums_alg: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// First packet on each socket: protocol range, who we are, which socket this is.
    Hello {
        version_min: u16,
        version_max: u16,
        node: String,
        meta_socket: bool,
        session: u64,
    },
    AuthChallenge {
        nonce: Vec<u8>,
    },
    AuthResponse {
        mac: Vec<u8>,
    },
    Params(Params),
    Sizes {
        backing_bytes: u64,
        usable_bytes: u64,
        requested_bytes: u64,
    },
    Uuids {
        uuids: [u64; 4],
        oos_bits: u64,
        flags: u32,
    },
    State {
        role: u8,
        disk: u8,
        susp: bool,
    },
    /// One slice of the RLE-compressed bitmap, starting at bit `start`; `last` ends the transfer.
    Bitmap {
        start: u64,
        rle: Vec<u8>,
        last: bool,
    },
    /// The resync direction the sender decided; the receiver checks it agrees.
    SyncStart {
        source: bool,
        full: bool,
    },
    Data {
        id: u64,
        offset: u64,
        fua: bool,
        data: Vec<u8>,
    },
    /// WRITE_ZEROES (`trim` false) or TRIM (`trim` true), replicated like a write.
    Zero {
        id: u64,
        offset: u64,
        len: u32,
        trim: bool,
        fua: bool,
    },
    /// Closes epoch `epoch`: the receiver flushes its disk and answers `BarrierAck`.
    Barrier {
        epoch: u32,
    },
    RecvAck {
        id: u64,
    },
    WriteAck {
        id: u64,
    },
    NegAck {
        id: u64,
    },
    BarrierAck {
        epoch: u32,
    },
    Ping,
    PingAck,
    // Resync acks travel on the data socket: the SyncTarget's final State must not overtake
    // them, or the source would finish with bits still set.
    /// SyncTarget asks for a block; `digest` set means csums-alg: only send it if it differs.
    RsRequest {
        id: u64,
        offset: u64,
        len: u32,
        digest: Vec<u8>,
    },
    RsData {
        id: u64,
        offset: u64,
        data: Vec<u8>,
    },
    RsInSync {
        id: u64,
        offset: u64,
        len: u32,
    },
    RsWriteAck {
        id: u64,
        offset: u64,
        len: u32,
    },
    RsNegAck {
        id: u64,
        offset: u64,
        len: u32,
    },
    OvRequest {
        id: u64,
        offset: u64,
        len: u32,
    },
    /// A Diskless Primary reads from its peer's disk (DRBD's P_DATA_REQUEST).
    DataRequest {
        id: u64,
        offset: u64,
        len: u32,
    },
    /// The answer to `DataRequest` (P_DATA_REPLY).
    DataReply {
        id: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// `DataRequest` could not be served: no UpToDate disk, or a read error (P_NEG_DREPLY).
    NegDReply {
        id: u64,
        offset: u64,
        len: u32,
    },
    /// First packet of a short connection from the peer's fence-peer (DRBD's
    /// drbd-peer-outdater): it lost the link to us and asks us to outdate our disk.
    OutdateRequest {
        node: String,
    },
    /// The answer: our role and disk state once the request was carried out (Outdated is
    /// durable by then).
    OutdateReply {
        role: u8,
        disk: u8,
    },
    OvReply {
        id: u64,
        offset: u64,
        len: u32,
        digest: Vec<u8>,
    },
    OvResult {
        id: u64,
        offset: u64,
        len: u32,
        in_sync: bool,
    },
    /// Resync finished on the sender: the receiver adopts `uuid` as its current UUID.
    SyncUuid {
        uuid: u64,
    },
    /// A state change request the peer must approve first (e.g. becoming Primary).
    StateRequest {
        want_primary: bool,
    },
    StateReply {
        ok: bool,
        reason: String,
    },
    /// Orderly disconnect (`repadm disconnect`/`down`): the peer goes to WFConnection quietly.
    Bye,
    /// Online verify finished on the VerifyS side; `oos_blocks` out-of-sync 4 KiB blocks found.
    OvDone {
        oos_blocks: u64,
    },
    /// `pause-sync` / `resume-sync` on either side of a resync.
    SyncPause {
        paused: bool,
    },
}

struct W<'a>(&'a mut Vec<u8>);
impl W<'_> {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// u32 length + bytes. Callers keep strings ≤ MAX_STRING_BYTES and data ≤ MAX_DATA_BYTES.
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
        self
    }
    fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
    cmd: &'static str,
}
impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or(WireError::Truncated {
            cmd: self.cmd,
            need: self.at.saturating_add(n),
            have: self.b.len(),
        })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::Invalid {
                cmd: self.cmd,
                what: format!("boolean byte {v}"),
            }),
        }
    }
    fn bytes(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(WireError::Invalid {
                cmd: self.cmd,
                what: format!("field of {n} bytes exceeds {max}"),
            });
        }
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, WireError> {
        let v = self.bytes(MAX_STRING_BYTES)?;
        String::from_utf8(v).map_err(|_| WireError::Invalid {
            cmd: self.cmd,
            what: "string is not UTF-8".into(),
        })
    }
    fn len32(&mut self) -> Result<u32, WireError> {
        let n = self.u32()?;
        if n as usize > MAX_DATA_BYTES {
            return Err(WireError::Invalid {
                cmd: self.cmd,
                what: format!("length {n} exceeds {MAX_DATA_BYTES}"),
            });
        }
        Ok(n)
    }
    fn finish(self) -> Result<(), WireError> {
        if self.at != self.b.len() {
            return Err(WireError::Trailing {
                cmd: self.cmd,
                extra: self.b.len() - self.at,
            });
        }
        Ok(())
    }
}

macro_rules! commands {
    ($($name:ident = $code:expr),* $(,)?) => {
        mod cmd { $(pub const $name: u16 = $code;)* }
        fn command_name(c: u16) -> Option<&'static str> {
            match c { $($code => Some(stringify!($name)),)* _ => None }
        }
    };
}
commands! {
    HELLO = 1, AUTH_CHALLENGE = 2, AUTH_RESPONSE = 3, PARAMS = 4, SIZES = 5, UUIDS = 6, STATE = 7,
    BITMAP = 8, SYNC_START = 9, DATA = 10, ZERO = 11, BARRIER = 12, RECV_ACK = 13, WRITE_ACK = 14,
    NEG_ACK = 15, BARRIER_ACK = 16, PING = 17, PING_ACK = 18, RS_REQUEST = 19, RS_DATA = 20,
    RS_IN_SYNC = 21, RS_WRITE_ACK = 22, RS_NEG_ACK = 23, OV_REQUEST = 24, OV_REPLY = 25,
    OV_RESULT = 26, SYNC_UUID = 27, STATE_REQUEST = 28, STATE_REPLY = 29, BYE = 30,
    OV_DONE = 31, SYNC_PAUSE = 32, DATA_REQUEST = 33, DATA_REPLY = 34, NEG_DREPLY = 35,
    OUTDATE_REQUEST = 36, OUTDATE_REPLY = 37,
}

const MAX_DIGEST_BYTES: usize = 64;
/// Per-4 KiB digests of one request (≤ 256 blocks of ≤ 64-byte digests).
const MAX_DIGEST_LIST_BYTES: usize = 256 * 64;

impl Packet {
    pub fn channel(&self) -> Channel {
        match self {
            Packet::RecvAck { .. }
            | Packet::WriteAck { .. }
            | Packet::NegAck { .. }
            | Packet::BarrierAck { .. }
            | Packet::Ping
            | Packet::PingAck
            | Packet::OvResult { .. } => Channel::Meta,
            _ => Channel::Data,
        }
    }

    pub fn name(&self) -> &'static str {
        command_name(self.command()).unwrap_or("?")
    }

    fn command(&self) -> u16 {
        match self {
            Packet::Hello { .. } => cmd::HELLO,
            Packet::AuthChallenge { .. } => cmd::AUTH_CHALLENGE,
            Packet::AuthResponse { .. } => cmd::AUTH_RESPONSE,
            Packet::Params(_) => cmd::PARAMS,
            Packet::Sizes { .. } => cmd::SIZES,
            Packet::Uuids { .. } => cmd::UUIDS,
            Packet::State { .. } => cmd::STATE,
            Packet::Bitmap { .. } => cmd::BITMAP,
            Packet::SyncStart { .. } => cmd::SYNC_START,
            Packet::Data { .. } => cmd::DATA,
            Packet::Zero { .. } => cmd::ZERO,
            Packet::Barrier { .. } => cmd::BARRIER,
            Packet::RecvAck { .. } => cmd::RECV_ACK,
            Packet::WriteAck { .. } => cmd::WRITE_ACK,
            Packet::NegAck { .. } => cmd::NEG_ACK,
            Packet::BarrierAck { .. } => cmd::BARRIER_ACK,
            Packet::Ping => cmd::PING,
            Packet::PingAck => cmd::PING_ACK,
            Packet::RsRequest { .. } => cmd::RS_REQUEST,
            Packet::RsData { .. } => cmd::RS_DATA,
            Packet::RsInSync { .. } => cmd::RS_IN_SYNC,
            Packet::RsWriteAck { .. } => cmd::RS_WRITE_ACK,
            Packet::RsNegAck { .. } => cmd::RS_NEG_ACK,
            Packet::OvRequest { .. } => cmd::OV_REQUEST,
            Packet::OvReply { .. } => cmd::OV_REPLY,
            Packet::OvResult { .. } => cmd::OV_RESULT,
            Packet::SyncUuid { .. } => cmd::SYNC_UUID,
            Packet::StateRequest { .. } => cmd::STATE_REQUEST,
            Packet::StateReply { .. } => cmd::STATE_REPLY,
            Packet::Bye => cmd::BYE,
            Packet::OvDone { .. } => cmd::OV_DONE,
            Packet::SyncPause { .. } => cmd::SYNC_PAUSE,
            Packet::DataRequest { .. } => cmd::DATA_REQUEST,
            Packet::DataReply { .. } => cmd::DATA_REPLY,
            Packet::NegDReply { .. } => cmd::NEG_DREPLY,
            Packet::OutdateRequest { .. } => cmd::OUTDATE_REQUEST,
            Packet::OutdateReply { .. } => cmd::OUTDATE_REPLY,
        }
    }

    /// Appends header + payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        encode_header(
            out,
            FrameHeader {
                command: self.command(),
                flags: 0,
                len: 0,
            },
        );
        let mut w = W(out);
        match self {
            Packet::Hello {
                version_min,
                version_max,
                node,
                meta_socket,
                session,
            } => {
                w.u16(*version_min)
                    .u16(*version_max)
                    .str(node)
                    .bool(*meta_socket)
                    .u64(*session);
            }
            Packet::AuthChallenge { nonce } => {
                w.bytes(nonce);
            }
            Packet::AuthResponse { mac } => {
                w.bytes(mac);
            }
            Packet::Params(p) => {
                w.u8(p.protocol)
                    .str(&p.after_sb_0pri)
                    .str(&p.after_sb_1pri)
                    .str(&p.after_sb_2pri);
                w.bool(p.allow_two_primaries).bool(p.discard_my_data);
                w.str(&p.integrity_alg).str(&p.verify_alg).str(&p.csums_alg);
            }
            Packet::Sizes {
                backing_bytes,
                usable_bytes,
                requested_bytes,
            } => {
                w.u64(*backing_bytes)
                    .u64(*usable_bytes)
                    .u64(*requested_bytes);
            }
            Packet::Uuids {
                uuids,
                oos_bits,
                flags,
            } => {
                for u in uuids {
                    w.u64(*u);
                }
                w.u64(*oos_bits).u32(*flags);
            }
            Packet::State { role, disk, susp } => {
                w.u8(*role).u8(*disk).bool(*susp);
            }
            Packet::Bitmap { start, rle, last } => {
                w.u64(*start).bytes(rle).bool(*last);
            }
            Packet::SyncStart { source, full } => {
                w.bool(*source).bool(*full);
            }
            Packet::Data {
                id,
                offset,
                fua,
                data,
            } => {
                w.u64(*id).u64(*offset).bool(*fua).bytes(data);
            }
            Packet::Zero {
                id,
                offset,
                len,
                trim,
                fua,
            } => {
                w.u64(*id).u64(*offset).u32(*len).bool(*trim).bool(*fua);
            }
            Packet::Barrier { epoch } | Packet::BarrierAck { epoch } => {
                w.u32(*epoch);
            }
            Packet::RecvAck { id } | Packet::WriteAck { id } | Packet::NegAck { id } => {
                w.u64(*id);
            }
            Packet::Ping | Packet::PingAck | Packet::Bye => {}
            Packet::OutdateRequest { node } => {
                w.str(node);
            }
            Packet::OutdateReply { role, disk } => {
                w.u8(*role).u8(*disk);
            }
            Packet::RsRequest {
                id,
                offset,
                len,
                digest,
            } => {
                w.u64(*id).u64(*offset).u32(*len).bytes(digest);
            }
            Packet::RsData { id, offset, data } | Packet::DataReply { id, offset, data } => {
                w.u64(*id).u64(*offset).bytes(data);
            }
            Packet::RsInSync { id, offset, len }
            | Packet::DataRequest { id, offset, len }
            | Packet::NegDReply { id, offset, len }
            | Packet::RsWriteAck { id, offset, len }
            | Packet::RsNegAck { id, offset, len }
            | Packet::OvRequest { id, offset, len } => {
                w.u64(*id).u64(*offset).u32(*len);
            }
            Packet::OvReply {
                id,
                offset,
                len,
                digest,
            } => {
                w.u64(*id).u64(*offset).u32(*len).bytes(digest);
            }
            Packet::OvResult {
                id,
                offset,
                len,
                in_sync,
            } => {
                w.u64(*id).u64(*offset).u32(*len).bool(*in_sync);
            }
            Packet::SyncUuid { uuid } => {
                w.u64(*uuid);
            }
            Packet::StateRequest { want_primary } => {
                w.bool(*want_primary);
            }
            Packet::StateReply { ok, reason } => {
                w.bool(*ok).str(reason);
            }
            Packet::OvDone { oos_blocks } => {
                w.u64(*oos_blocks);
            }
            Packet::SyncPause { paused } => {
                w.bool(*paused);
            }
        }
        let len = u32::try_from(out.len() - start - super::HEADER_BYTES).unwrap_or(u32::MAX);
        out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
    }

    pub fn decode(h: &FrameHeader, payload: &[u8]) -> Result<Packet, WireError> {
        let name = command_name(h.command).ok_or(WireError::UnknownCommand(h.command))?;
        let mut r = R {
            b: payload,
            at: 0,
            cmd: name,
        };
        let p = match h.command {
            cmd::HELLO => Packet::Hello {
                version_min: r.u16()?,
                version_max: r.u16()?,
                node: r.str()?,
                meta_socket: r.bool()?,
                session: r.u64()?,
            },
            cmd::AUTH_CHALLENGE => Packet::AuthChallenge {
                nonce: r.bytes(MAX_DIGEST_BYTES)?,
            },
            cmd::AUTH_RESPONSE => Packet::AuthResponse {
                mac: r.bytes(MAX_DIGEST_BYTES)?,
            },
            cmd::PARAMS => Packet::Params(Params {
                protocol: r.u8()?,
                after_sb_0pri: r.str()?,
                after_sb_1pri: r.str()?,
                after_sb_2pri: r.str()?,
                allow_two_primaries: r.bool()?,
                discard_my_data: r.bool()?,
                integrity_alg: r.str()?,
                verify_alg: r.str()?,
                csums_alg: r.str()?,
            }),
            cmd::SIZES => Packet::Sizes {
                backing_bytes: r.u64()?,
                usable_bytes: r.u64()?,
                requested_bytes: r.u64()?,
            },
            cmd::UUIDS => Packet::Uuids {
                uuids: [r.u64()?, r.u64()?, r.u64()?, r.u64()?],
                oos_bits: r.u64()?,
                flags: r.u32()?,
            },
            cmd::STATE => Packet::State {
                role: r.u8()?,
                disk: r.u8()?,
                susp: r.bool()?,
            },
            cmd::BITMAP => Packet::Bitmap {
                start: r.u64()?,
                rle: r.bytes(MAX_DATA_BYTES)?,
                last: r.bool()?,
            },
            cmd::SYNC_START => Packet::SyncStart {
                source: r.bool()?,
                full: r.bool()?,
            },
            cmd::DATA => Packet::Data {
                id: r.u64()?,
                offset: r.u64()?,
                fua: r.bool()?,
                data: r.bytes(MAX_DATA_BYTES)?,
            },
            cmd::ZERO => Packet::Zero {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.u32()?,
                trim: r.bool()?,
                fua: r.bool()?,
            },
            cmd::BARRIER => Packet::Barrier { epoch: r.u32()? },
            cmd::BARRIER_ACK => Packet::BarrierAck { epoch: r.u32()? },
            cmd::RECV_ACK => Packet::RecvAck { id: r.u64()? },
            cmd::WRITE_ACK => Packet::WriteAck { id: r.u64()? },
            cmd::NEG_ACK => Packet::NegAck { id: r.u64()? },
            cmd::PING => Packet::Ping,
            cmd::PING_ACK => Packet::PingAck,
            cmd::BYE => Packet::Bye,
            cmd::RS_REQUEST => Packet::RsRequest {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
                digest: r.bytes(MAX_DIGEST_LIST_BYTES)?,
            },
            cmd::RS_DATA => Packet::RsData {
                id: r.u64()?,
                offset: r.u64()?,
                data: r.bytes(MAX_DATA_BYTES)?,
            },
            cmd::RS_IN_SYNC => Packet::RsInSync {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
            },
            cmd::RS_WRITE_ACK => Packet::RsWriteAck {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
            },
            cmd::RS_NEG_ACK => Packet::RsNegAck {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
            },
            cmd::DATA_REQUEST => Packet::DataRequest {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
            },
            cmd::DATA_REPLY => Packet::DataReply {
                id: r.u64()?,
                offset: r.u64()?,
                data: r.bytes(MAX_DATA_BYTES)?,
            },
            cmd::NEG_DREPLY => Packet::NegDReply {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
            },
            cmd::OUTDATE_REQUEST => Packet::OutdateRequest { node: r.str()? },
            cmd::OUTDATE_REPLY => Packet::OutdateReply {
                role: r.u8()?,
                disk: r.u8()?,
            },
            cmd::OV_REQUEST => Packet::OvRequest {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
            },
            cmd::OV_REPLY => Packet::OvReply {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
                digest: r.bytes(MAX_DIGEST_LIST_BYTES)?,
            },
            cmd::OV_RESULT => Packet::OvResult {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.len32()?,
                in_sync: r.bool()?,
            },
            cmd::SYNC_UUID => Packet::SyncUuid { uuid: r.u64()? },
            cmd::STATE_REQUEST => Packet::StateRequest {
                want_primary: r.bool()?,
            },
            cmd::STATE_REPLY => Packet::StateReply {
                ok: r.bool()?,
                reason: r.str()?,
            },
            cmd::OV_DONE => Packet::OvDone {
                oos_blocks: r.u64()?,
            },
            cmd::SYNC_PAUSE => Packet::SyncPause { paused: r.bool()? },
            other => return Err(WireError::UnknownCommand(other)),
        };
        r.finish()?;
        Ok(p)
    }
}

/// Encodes `Packet::Data` from a borrowed buffer (the hot path: no intermediate packet).
pub fn encode_data(out: &mut Vec<u8>, id: u64, offset: u64, fua: bool, data: &[u8]) {
    let start = out.len();
    encode_header(
        out,
        FrameHeader {
            command: cmd::DATA,
            flags: 0,
            len: 0,
        },
    );
    W(out).u64(id).u64(offset).bool(fua).bytes(data);
    let len = u32::try_from(out.len() - start - super::HEADER_BYTES).unwrap_or(u32::MAX);
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
}

/// The bytes before the block of a packet that carries one (Data, RsData, DataReply), up to and
/// including the block's length field; `None` for every other command. The socket reader takes
/// these first and then reads the block straight into its own buffer (`decode_with_data`).
pub const fn data_prefix_len(command: u16) -> Option<usize> {
    match command {
        cmd::DATA => Some(8 + 8 + 1 + 4),
        cmd::RS_DATA | cmd::DATA_REPLY => Some(8 + 8 + 4),
        _ => None,
    }
}

/// The longest `data_prefix_len`.
pub const MAX_DATA_PREFIX: usize = 8 + 8 + 1 + 4;
const _: () = assert!(matches!(data_prefix_len(cmd::DATA), Some(n) if n <= MAX_DATA_PREFIX));
const _: () = assert!(matches!(data_prefix_len(cmd::RS_DATA), Some(n) if n <= MAX_DATA_PREFIX));
const _: () = assert!(matches!(data_prefix_len(cmd::DATA_REPLY), Some(n) if n <= MAX_DATA_PREFIX));

/// Decodes a block-carrying packet from its prefix (`data_prefix_len(h.command)` bytes) and
/// the rest of its payload, which becomes the packet's data without a copy. Accepts and refuses
/// exactly what `Packet::decode` does with `prefix ++ data` as the payload.
pub fn decode_with_data(
    h: &FrameHeader,
    prefix: &[u8],
    data: Vec<u8>,
) -> Result<Packet, WireError> {
    let name = command_name(h.command).ok_or(WireError::UnknownCommand(h.command))?;
    if data_prefix_len(h.command) != Some(prefix.len()) {
        let mut payload = prefix.to_vec();
        payload.extend_from_slice(&data);
        return Packet::decode(h, &payload);
    }
    let mut r = R {
        b: prefix,
        at: 0,
        cmd: name,
    };
    let (id, offset) = (r.u64()?, r.u64()?);
    let fua = if h.command == cmd::DATA {
        r.bool()?
    } else {
        false
    };
    let n = r.u32()? as usize;
    if n > MAX_DATA_BYTES {
        return Err(WireError::Invalid {
            cmd: name,
            what: format!("field of {n} bytes exceeds {MAX_DATA_BYTES}"),
        });
    }
    if n > data.len() {
        return Err(WireError::Truncated {
            cmd: name,
            need: prefix.len() + n,
            have: prefix.len() + data.len(),
        });
    }
    if n < data.len() {
        return Err(WireError::Trailing {
            cmd: name,
            extra: data.len() - n,
        });
    }
    Ok(match h.command {
        cmd::DATA => Packet::Data {
            id,
            offset,
            fua,
            data,
        },
        cmd::RS_DATA => Packet::RsData { id, offset, data },
        _ => Packet::DataReply { id, offset, data },
    })
}

/// Decodes one whole frame (header + payload) from `b`; for fuzzing and tests.
pub fn decode_frame(b: &[u8]) -> Result<(Packet, usize), WireError> {
    let head: &[u8; super::HEADER_BYTES] = b
        .get(..super::HEADER_BYTES)
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Truncated {
            cmd: "header",
            need: super::HEADER_BYTES,
            have: b.len(),
        })?;
    let h = super::frame::decode_header(head)?;
    let end = super::HEADER_BYTES + h.len as usize;
    let payload = b
        .get(super::HEADER_BYTES..end)
        .ok_or(WireError::Truncated {
            cmd: "frame",
            need: end,
            have: b.len(),
        })?;
    Ok((Packet::decode(&h, payload)?, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Packet> {
        vec![
            Packet::Hello {
                version_min: 1,
                version_max: 1,
                node: "node-a".into(),
                meta_socket: true,
                session: 9,
            },
            Packet::AuthChallenge { nonce: vec![1; 32] },
            Packet::Params(Params {
                protocol: b'C',
                after_sb_0pri: "disconnect".into(),
                after_sb_1pri: "disconnect".into(),
                after_sb_2pri: "disconnect".into(),
                allow_two_primaries: false,
                discard_my_data: true,
                integrity_alg: String::new(),
                verify_alg: "sha1".into(),
                csums_alg: String::new(),
            }),
            Packet::Uuids {
                uuids: [1, 2, 3, 4],
                oos_bits: 5,
                flags: 6,
            },
            Packet::Data {
                id: 1,
                offset: 4096,
                fua: true,
                data: vec![0xab; 4096],
            },
            Packet::Zero {
                id: 2,
                offset: 0,
                len: 1 << 20,
                trim: false,
                fua: false,
            },
            Packet::Bitmap {
                start: 0,
                rle: vec![1, 2, 3],
                last: true,
            },
            Packet::RsRequest {
                id: 3,
                offset: 0,
                len: 4096,
                digest: vec![],
            },
            Packet::StateReply {
                ok: false,
                reason: "peer is Primary".into(),
            },
            Packet::DataRequest {
                id: 7,
                offset: 8192,
                len: 4096,
            },
            Packet::DataReply {
                id: 7,
                offset: 8192,
                data: vec![0x5a; 4096],
            },
            Packet::NegDReply {
                id: 7,
                offset: 8192,
                len: 4096,
            },
            Packet::OutdateRequest {
                node: "node-a".into(),
            },
            Packet::OutdateReply { role: 2, disk: 5 },
            Packet::Ping,
            Packet::Bye,
        ]
    }

    #[test]
    fn roundtrip_and_channels() {
        for p in samples() {
            let mut v = Vec::new();
            p.encode(&mut v);
            let (q, used) = decode_frame(&v).unwrap();
            assert_eq!(q, p);
            assert_eq!(used, v.len());
        }
        assert_eq!(Packet::WriteAck { id: 1 }.channel(), Channel::Meta);
        assert_eq!(
            Packet::Data {
                id: 1,
                offset: 0,
                fua: false,
                data: vec![]
            }
            .channel(),
            Channel::Data
        );
    }

    #[test]
    fn borrowed_data_encoding_matches_the_packet() {
        let mut a = Vec::new();
        encode_data(&mut a, 5, 4096, true, &[9; 100]);
        let mut b = Vec::new();
        Packet::Data {
            id: 5,
            offset: 4096,
            fua: true,
            data: vec![9; 100],
        }
        .encode(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn hostile_lengths_and_trailing_bytes_are_errors() {
        let mut v = Vec::new();
        Packet::Data {
            id: 1,
            offset: 0,
            fua: false,
            data: vec![1; 8],
        }
        .encode(&mut v);
        // Claim a 4 GiB data field inside a small frame.
        v[12 + 17..12 + 21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_frame(&v).is_err());
        let mut w = Vec::new();
        Packet::Ping.encode(&mut w);
        w[11] = 1;
        w.push(0);
        assert!(matches!(decode_frame(&w), Err(WireError::Trailing { .. })));
        let mut m = Vec::new();
        Packet::Ping.encode(&mut m);
        m[0] = 0;
        assert!(matches!(decode_frame(&m), Err(WireError::BadMagic(_))));
        let mut big = Vec::new();
        Packet::Ping.encode(&mut big);
        big[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode_frame(&big), Err(WireError::TooLong(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(i in 0usize..11, pos in any::<usize>(), byte in any::<u8>()) {
            let mut v = Vec::new();
            samples()[i].encode(&mut v);
            let at = pos % v.len();
            v[at] = byte;
            let _ = decode_frame(&v);
        }

        /// The socket reader's split decode agrees with the whole-payload decode on every
        /// payload, valid or not (same packet, or an error of the same kind).
        #[test]
        fn split_decode_agrees_with_decode(
            which in 0usize..3,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            valid in any::<bool>(),
            data_len in 0usize..40,
        ) {
            let command = [cmd::DATA, cmd::RS_DATA, cmd::DATA_REPLY][which];
            let mut payload = payload;
            if valid {
                // A well-formed payload with a data field of data_len bytes.
                let p = match command {
                    cmd::DATA => Packet::Data { id: 7, offset: 4096, fua: true, data: vec![5; data_len] },
                    cmd::RS_DATA => Packet::RsData { id: 7, offset: 4096, data: vec![5; data_len] },
                    _ => Packet::DataReply { id: 7, offset: 4096, data: vec![5; data_len] },
                };
                let mut frame = Vec::new();
                p.encode(&mut frame);
                payload = frame[super::super::HEADER_BYTES..].to_vec();
            }
            let h = FrameHeader { command, flags: 0, len: u32::try_from(payload.len()).unwrap_or(0) };
            let whole = Packet::decode(&h, &payload);
            let prefix_len = data_prefix_len(command).unwrap_or(0);
            if payload.len() >= prefix_len {
                let split = decode_with_data(&h, &payload[..prefix_len], payload[prefix_len..].to_vec());
                match (&whole, &split) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                    (Err(a), Err(b)) => prop_assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b)),
                    _ => prop_assert!(false, "decode {:?} vs split {:?}", whole, split),
                }
                if valid {
                    prop_assert!(whole.is_ok());
                }
            }
        }
    }
}
