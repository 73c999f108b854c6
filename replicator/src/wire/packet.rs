//! Every packet the peers exchange, declared once: its command code, its fields in wire order
//! with the codec of each (`field.rs`), and its channel. Encode, decode, the split decode of
//! block packets and the round-trip proptest all follow from the table (`declare.rs`). `decode`
//! checks every length against the payload it was given and rejects trailing bytes: a packet
//! is either exactly right or an error.

use super::field::{begin_frame, end_frame, fixed, Field, Reader};
use super::field::{
    Block, Bool, Boxed, Digest, Digests, Len, Payload, Str, U64s, U16, U32, U64, U8,
};
use super::frame::{FrameHeader, WireError};

/// Which of the two TCP connections a packet travels on (docs/drbd-semantics.md §6.1): acks and pings go on
/// `Meta` so that they never queue behind megabytes of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Data,
    Meta,
}

record! {
    /// Settings both nodes must agree on (`net` section), checked during the handshake.
    pub struct Params {
        protocol: U8,
        after_sb_0pri: Str,
        after_sb_1pri: Str,
        after_sb_2pri: Str,
        allow_two_primaries: Bool,
        discard_my_data: Bool,
        integrity_alg: Str,
        verify_alg: Str,
        csums_alg: Str,
    }
}

// To add a packet: one line here with a new code (and a golden frame in golden_tests.rs).
// Codes and field order are the protocol: never change or reuse them.
packets! {
    /// First packet on each socket: protocol range, who we are, which socket this is.
    HELLO = 1, Hello {
        version_min: U16, version_max: U16, node: Str, meta_socket: Bool, session: U64,
    } => Data;
    AUTH_CHALLENGE = 2, AuthChallenge { nonce: Digest } => Data;
    AUTH_RESPONSE = 3, AuthResponse { mac: Digest } => Data;
    PARAMS = 4, Params(params: Boxed<Params>) => Data;
    SIZES = 5, Sizes { backing_bytes: U64, usable_bytes: U64, requested_bytes: U64 } => Data;
    UUIDS = 6, Uuids { uuids: U64s<4>, oos_bits: U64, flags: U32 } => Data;
    STATE = 7, State { role: U8, disk: U8, susp: Bool } => Data;
    /// One slice of the RLE-compressed bitmap, starting at bit `start`; `last` ends the transfer.
    BITMAP = 8, Bitmap { start: U64, rle: Block, last: Bool } => Data;
    /// The resync direction the sender decided; the receiver checks it agrees.
    SYNC_START = 9, SyncStart { source: Bool, full: Bool } => Data;
    DATA = 10, Data { id: U64, offset: U64, fua: Bool, #[data] data: Payload } => Data;
    /// WRITE_ZEROES (`trim` false) or TRIM (`trim` true), replicated like a write.
    ZERO = 11, Zero { id: U64, offset: U64, len: U32, trim: Bool, fua: Bool } => Data;
    /// Closes epoch `epoch`: the receiver flushes its disk and answers `BarrierAck`.
    BARRIER = 12, Barrier { epoch: U32 } => Data;
    RECV_ACK = 13, RecvAck { id: U64 } => Meta;
    WRITE_ACK = 14, WriteAck { id: U64 } => Meta;
    NEG_ACK = 15, NegAck { id: U64 } => Meta;
    BARRIER_ACK = 16, BarrierAck { epoch: U32 } => Meta;
    PING = 17, Ping => Meta;
    PING_ACK = 18, PingAck => Meta;
    // Resync acks travel on the data socket: the SyncTarget's final State must not overtake
    // them, or the source would finish with bits still set.
    /// SyncTarget asks for a block; `digest` set means csums-alg: only send it if it differs.
    RS_REQUEST = 19, RsRequest { id: U64, offset: U64, len: Len, digest: Digests } => Data;
    RS_DATA = 20, RsData { id: U64, offset: U64, #[data] data: Payload } => Data;
    RS_IN_SYNC = 21, RsInSync { id: U64, offset: U64, len: Len } => Data;
    RS_WRITE_ACK = 22, RsWriteAck { id: U64, offset: U64, len: Len } => Data;
    RS_NEG_ACK = 23, RsNegAck { id: U64, offset: U64, len: Len } => Data;
    OV_REQUEST = 24, OvRequest { id: U64, offset: U64, len: Len } => Data;
    OV_REPLY = 25, OvReply { id: U64, offset: U64, len: Len, digest: Digests } => Data;
    OV_RESULT = 26, OvResult { id: U64, offset: U64, len: Len, in_sync: Bool } => Meta;
    /// Resync finished on the sender: the receiver adopts `uuid` as its current UUID.
    SYNC_UUID = 27, SyncUuid { uuid: U64 } => Data;
    /// A state change request the peer must approve first (e.g. becoming Primary).
    STATE_REQUEST = 28, StateRequest { want_primary: Bool } => Data;
    STATE_REPLY = 29, StateReply { ok: Bool, reason: Str } => Data;
    /// Orderly disconnect (`repadm disconnect`/`down`): the peer goes to WFConnection quietly.
    BYE = 30, Bye => Data;
    /// Online verify finished on the VerifyS side; `oos_blocks` out-of-sync 4 KiB blocks found.
    OV_DONE = 31, OvDone { oos_blocks: U64 } => Data;
    /// `pause-sync` / `resume-sync` on either side of a resync.
    SYNC_PAUSE = 32, SyncPause { paused: Bool } => Data;
    /// A Diskless Primary reads from its peer's disk (DRBD's P_DATA_REQUEST).
    DATA_REQUEST = 33, DataRequest { id: U64, offset: U64, len: Len } => Data;
    /// The answer to `DataRequest` (P_DATA_REPLY).
    DATA_REPLY = 34, DataReply { id: U64, offset: U64, #[data] data: Payload } => Data;
    /// `DataRequest` could not be served: no UpToDate disk, or a read error (P_NEG_DREPLY).
    NEG_DREPLY = 35, NegDReply { id: U64, offset: U64, len: Len } => Data;
    /// First packet of a short connection from the peer's fence-peer (DRBD's
    /// drbd-peer-outdater): it lost the link to us and asks us to outdate our disk.
    OUTDATE_REQUEST = 36, OutdateRequest { node: Str } => Data;
    /// The answer: our role and disk state once the request was carried out (Outdated is
    /// durable by then).
    OUTDATE_REPLY = 37, OutdateReply { role: U8, disk: U8 } => Data;
    /// A resync reply without data: `[offset, offset+len)` of request `id` reads as zeroes on
    /// the SyncSource (a hole, or blocks of zeroes); the SyncTarget zeroes it, deallocating
    /// where it can. Answered like `RsData` (DRBD 9's P_RS_DEALLOCATED).
    RS_ZERO = 38, RsZero { id: U64, offset: U64, len: Len } => Data;
    /// Orderly disconnect of a node that marked its own disk Outdated first (quorum's "last
    /// man standing", docs/quorum.md): the peer records it Outdated, and it stops counting.
    BYE_OUTDATED = 39, ByeOutdated => Data;
    /// On a witness link (docs/quorum.md, "The witness"): from a data node, "have `node`
    /// outdated"; from the witness to `node`'s data node, "`node` asks you to outdate your
    /// disk". Answered with `RelayReply` of the same `id`.
    RELAY_OUTDATE = 40, RelayOutdate { id: U64, node: Str } => Data;
    /// The answer to `RelayOutdate`: the target's role and disk once the request was carried
    /// out (Outdated is durable by then); `reached` false when the witness could not reach it.
    RELAY_REPLY = 41, RelayReply { id: U64, reached: Bool, role: U8, disk: U8 } => Data;
}

/// Encodes `Packet::Data` from a borrowed buffer (the hot path: no intermediate packet).
pub fn encode_data(out: &mut Vec<u8>, id: u64, offset: u64, fua: bool, data: &[u8]) {
    encode::Data(out, &id, &offset, &fua, data);
}

/// Encodes `Packet::Data` but for the data itself, which the caller sends right after this
/// (from the client's buffer, without a copy): the frame's and the block's lengths count
/// `data_len` bytes that are not in `out`.
pub fn encode_data_head(out: &mut Vec<u8>, id: u64, offset: u64, fua: bool, data_len: usize) {
    let start = out.len();
    encode::Data(out, &id, &offset, &fua, &[]);
    let n = u32::try_from(data_len).unwrap_or(u32::MAX);
    // The block is the frame's last field: its u32 length is the last four bytes written.
    let end = out.len();
    out[end - 4..end].copy_from_slice(&n.to_be_bytes());
    let len_at = start + super::frame::HEADER_BYTES - 4;
    let mut frame_len = [0u8; 4];
    frame_len.copy_from_slice(&out[len_at..len_at + 4]);
    let frame_len = u32::from_be_bytes(frame_len).saturating_add(n);
    out[len_at..len_at + 4].copy_from_slice(&frame_len.to_be_bytes());
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
    use proptest::strategy::ValueTree;

    /// The round trip draws from every packet of the table: a new packet is covered by
    /// declaring it.
    #[test]
    fn the_strategy_draws_every_packet_kind() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = arb_packet();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            if let Ok(tree) = strategy.new_tree(&mut runner) {
                seen.insert(tree.current().command());
            }
        }
        let all: std::collections::BTreeSet<u16> = COMMANDS.iter().copied().collect();
        assert_eq!(seen, all);
        assert_eq!(COMMANDS.len(), all.len(), "a command code is used twice");
    }

    #[test]
    fn channels_and_names() {
        assert_eq!(Packet::WriteAck { id: 1 }.channel(), Channel::Meta);
        assert_eq!(Packet::Ping.channel(), Channel::Meta);
        assert_eq!(Packet::Bye.channel(), Channel::Data);
        let d = Packet::Data {
            id: 1,
            offset: 0,
            fua: false,
            data: vec![].into(),
        };
        assert_eq!((d.channel(), d.name()), (Channel::Data, "DATA"));
        assert_eq!(data_prefix_len(cmd::DATA), Some(8 + 8 + 1 + 4));
        assert_eq!(data_prefix_len(cmd::RS_DATA), Some(8 + 8 + 4));
        assert_eq!(data_prefix_len(cmd::DATA_REPLY), Some(8 + 8 + 4));
        assert_eq!(data_prefix_len(cmd::BITMAP), None);
        assert_eq!(MAX_DATA_PREFIX, 8 + 8 + 1 + 4);
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
            data: vec![9; 100].into(),
        }
        .encode(&mut b);
        assert_eq!(a, b);
    }

    /// The head the send queue writes before a client's buffer, followed by that buffer, is
    /// the packet's frame, for every size a packet can carry.
    #[test]
    fn data_head_and_the_data_after_it_are_the_packet() {
        for len in [
            0usize,
            1,
            511,
            4096,
            65_537,
            crate::wire::frame::MAX_DATA_BYTES,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut a = Vec::new();
            encode_data_head(&mut a, 77, 1 << 40, len % 2 == 0, len);
            a.extend_from_slice(&data);
            let mut b = Vec::new();
            encode_data(&mut b, 77, 1 << 40, len % 2 == 0, &data);
            assert_eq!(a, b, "{len} bytes");
            let (p, used) = decode_frame(&a).expect("decodes");
            assert_eq!(used, a.len());
            assert!(matches!(p, Packet::Data { data: d, .. } if d == data));
        }
    }

    #[test]
    fn hostile_lengths_and_trailing_bytes_are_errors() {
        let mut v = Vec::new();
        Packet::Data {
            id: 1,
            offset: 0,
            fua: false,
            data: vec![1; 8].into(),
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
        /// Every packet decodes to itself, whole and (for block packets) split the way the
        /// socket reader splits it, and the header names its command and length.
        #[test]
        fn every_packet_round_trips(p in arb_packet()) {
            let mut v = Vec::new();
            p.encode(&mut v);
            let (q, used) = decode_frame(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&q, &p);
            prop_assert_eq!(used, v.len());
            prop_assert_eq!(u16::from_be_bytes([v[4], v[5]]), p.command());
            let h = FrameHeader { command: p.command(), flags: 0, len: u32::try_from(v.len() - 12).unwrap_or(0) };
            if let Some(n) = data_prefix_len(h.command) {
                let payload = &v[super::super::HEADER_BYTES..];
                let split = decode_with_data(&h, &payload[..n], payload[n..].to_vec().into());
                prop_assert_eq!(split, Ok(p));
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(p in arb_packet(), pos in any::<usize>(), byte in any::<u8>()) {
            let mut v = Vec::new();
            p.encode(&mut v);
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
                    cmd::DATA => Packet::Data { id: 7, offset: 4096, fua: true, data: vec![5; data_len].into() },
                    cmd::RS_DATA => Packet::RsData { id: 7, offset: 4096, data: vec![5; data_len].into() },
                    _ => Packet::DataReply { id: 7, offset: 4096, data: vec![5; data_len].into() },
                };
                let mut frame = Vec::new();
                p.encode(&mut frame);
                payload = frame[super::super::HEADER_BYTES..].to_vec();
            }
            let h = FrameHeader { command, flags: 0, len: u32::try_from(payload.len()).unwrap_or(0) };
            let whole = Packet::decode(&h, &payload);
            let prefix_len = data_prefix_len(command).unwrap_or(0);
            if payload.len() >= prefix_len {
                let split = decode_with_data(&h, &payload[..prefix_len], payload[prefix_len..].to_vec().into());
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
