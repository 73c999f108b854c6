//! Pins the wire format: the exact bytes of one frame of every packet kind, and the exact
//! result (packet or typed error) of decoding thousands of malformed variants of them. These
//! fixtures were produced by the hand-written encoder and decoder before packets were declared
//! in a table; any change to them is a protocol change.

use super::frame::{FrameHeader, HEADER_BYTES};
use super::packet::{data_prefix_len, decode_frame, decode_with_data};
use super::{Packet, Params};

/// One packet of every kind, with field values that differ from each other so that a swapped
/// or resized field changes the bytes.
fn samples() -> Vec<Packet> {
    vec![
        Packet::Hello {
            version_min: 0x0102,
            version_max: 0x0304,
            node: "node-a".into(),
            meta_socket: true,
            session: 0x1112_1314_1516_1718,
        },
        Packet::AuthChallenge {
            nonce: vec![0xc1, 0xc2, 0xc3],
        },
        Packet::AuthResponse {
            mac: vec![0xd1, 0xd2],
        },
        Packet::Params(Box::new(Params {
            protocol: b'C',
            after_sb_0pri: "discard-younger-primary".into(),
            after_sb_1pri: "consensus".into(),
            after_sb_2pri: "disconnect".into(),
            allow_two_primaries: false,
            discard_my_data: true,
            integrity_alg: "crc32c".into(),
            verify_alg: "sha1".into(),
            csums_alg: String::new(),
        })),
        Packet::Sizes {
            backing_bytes: 0x2122_2324_2526_2728,
            usable_bytes: 0x3132_3334_3536_3738,
            requested_bytes: 0x4142_4344_4546_4748,
        },
        Packet::Uuids {
            uuids: [0x51, 0x5253, 0x5455_5657, 0x5859_5a5b_5c5d_5e5f],
            oos_bits: 0x61,
            flags: 0x6263_6465,
        },
        Packet::State {
            role: 1,
            disk: 8,
            susp: true,
        },
        Packet::Bitmap {
            start: 0x71,
            rle: vec![1, 2, 3],
            last: true,
        },
        Packet::SyncStart {
            source: true,
            full: false,
        },
        Packet::Data {
            id: 0x0a0b,
            offset: 4096,
            fua: true,
            data: vec![0xab, 0xcd, 0xef, 0x01, 0x23].into(),
        },
        Packet::Zero {
            id: 0x0c0d,
            offset: 8192,
            len: 1 << 20,
            trim: true,
            fua: false,
        },
        Packet::Barrier { epoch: 0x8182_8384 },
        Packet::RecvAck { id: 0x91 },
        Packet::WriteAck { id: 0x92 },
        Packet::NegAck { id: 0x93 },
        Packet::BarrierAck { epoch: 0x94 },
        Packet::Ping,
        Packet::PingAck,
        Packet::RsRequest {
            id: 0xa1,
            offset: 0xa2,
            len: 0xa3,
            digest: vec![0xa4, 0xa5],
        },
        Packet::RsData {
            id: 0xb1,
            offset: 0xb2,
            data: vec![0xb3; 3].into(),
        },
        Packet::RsInSync {
            id: 0xc1,
            offset: 0xc2,
            len: 0xc3,
        },
        Packet::RsWriteAck {
            id: 0xd1,
            offset: 0xd2,
            len: 0xd3,
        },
        Packet::RsNegAck {
            id: 0xe1,
            offset: 0xe2,
            len: 0xe3,
        },
        Packet::OvRequest {
            id: 0xf1,
            offset: 0xf2,
            len: 0xf3,
        },
        Packet::OvReply {
            id: 0x101,
            offset: 0x102,
            len: 0x103,
            digest: vec![0x14; 4],
        },
        Packet::OvResult {
            id: 0x111,
            offset: 0x112,
            len: 0x113,
            in_sync: true,
        },
        Packet::SyncUuid { uuid: 0x121 },
        Packet::StateRequest { want_primary: true },
        Packet::StateReply {
            ok: false,
            reason: "peer is Primary".into(),
        },
        Packet::Bye,
        Packet::OvDone { oos_blocks: 0x131 },
        Packet::SyncPause { paused: true },
        Packet::DataRequest {
            id: 0x141,
            offset: 0x142,
            len: 0x143,
        },
        Packet::DataReply {
            id: 0x151,
            offset: 0x152,
            data: vec![0x15, 0x16].into(),
        },
        Packet::NegDReply {
            id: 0x161,
            offset: 0x162,
            len: 0x163,
        },
        Packet::OutdateRequest {
            node: "node-b".into(),
        },
        Packet::OutdateReply { role: 2, disk: 5 },
        Packet::RsZero {
            id: 0x171,
            offset: 0x172,
            len: 0x173,
        },
        Packet::ByeOutdated,
        Packet::RelayOutdate {
            id: 0x181,
            node: "node-b".into(),
        },
        Packet::RelayReply {
            id: 0x191,
            reached: true,
            role: 2,
            disk: 5,
        },
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn frame(p: &Packet) -> Vec<u8> {
    let mut v = Vec::new();
    p.encode(&mut v);
    v
}

/// `(name, frame)` of every sample, as the encoder wrote them before the packet table.
const GOLDEN: &[(&str, &str)] = &[
    ("HELLO", "52455031000100000000001701020304000000066e6f64652d61011112131415161718"),
    ("AUTH_CHALLENGE", "52455031000200000000000700000003c1c2c3"),
    ("AUTH_RESPONSE", "52455031000300000000000600000002d1d2"),
    ("PARAMS", "52455031000400000000004f4300000017646973636172642d796f756e6765722d7072696d61727900000009636f6e73656e7375730000000a646973636f6e6e656374000100000006637263333263000000047368613100000000"),
    ("SIZES", "524550310005000000000018212223242526272831323334353637384142434445464748"),
    ("UUIDS", "52455031000600000000002c00000000000000510000000000005253000000005455565758595a5b5c5d5e5f000000000000006162636465"),
    ("STATE", "524550310007000000000003010801"),
    ("BITMAP", "52455031000800000000001000000000000000710000000301020301"),
    ("SYNC_START", "5245503100090000000000020100"),
    ("DATA", "52455031000a00000000001a0000000000000a0b00000000000010000100000005abcdef0123"),
    ("ZERO", "52455031000b0000000000160000000000000c0d0000000000002000001000000100"),
    ("BARRIER", "52455031000c00000000000481828384"),
    ("RECV_ACK", "52455031000d0000000000080000000000000091"),
    ("WRITE_ACK", "52455031000e0000000000080000000000000092"),
    ("NEG_ACK", "52455031000f0000000000080000000000000093"),
    ("BARRIER_ACK", "52455031001000000000000400000094"),
    ("PING", "524550310011000000000000"),
    ("PING_ACK", "524550310012000000000000"),
    ("RS_REQUEST", "52455031001300000000001a00000000000000a100000000000000a2000000a300000002a4a5"),
    ("RS_DATA", "52455031001400000000001700000000000000b100000000000000b200000003b3b3b3"),
    ("RS_IN_SYNC", "52455031001500000000001400000000000000c100000000000000c2000000c3"),
    ("RS_WRITE_ACK", "52455031001600000000001400000000000000d100000000000000d2000000d3"),
    ("RS_NEG_ACK", "52455031001700000000001400000000000000e100000000000000e2000000e3"),
    ("OV_REQUEST", "52455031001800000000001400000000000000f100000000000000f2000000f3"),
    ("OV_REPLY", "52455031001900000000001c00000000000001010000000000000102000001030000000414141414"),
    ("OV_RESULT", "52455031001a000000000015000000000000011100000000000001120000011301"),
    ("SYNC_UUID", "52455031001b0000000000080000000000000121"),
    ("STATE_REQUEST", "52455031001c00000000000101"),
    ("STATE_REPLY", "52455031001d000000000014000000000f70656572206973205072696d617279"),
    ("BYE", "52455031001e000000000000"),
    ("OV_DONE", "52455031001f0000000000080000000000000131"),
    ("SYNC_PAUSE", "52455031002000000000000101"),
    ("DATA_REQUEST", "5245503100210000000000140000000000000141000000000000014200000143"),
    ("DATA_REPLY", "52455031002200000000001600000000000001510000000000000152000000021516"),
    ("NEG_DREPLY", "5245503100230000000000140000000000000161000000000000016200000163"),
    ("OUTDATE_REQUEST", "52455031002400000000000a000000066e6f64652d62"),
    ("OUTDATE_REPLY", "5245503100250000000000020205"),
    ("RS_ZERO", "5245503100260000000000140000000000000171000000000000017200000173"),
    ("BYE_OUTDATED", "524550310027000000000000"),
    ("RELAY_OUTDATE", "5245503100280000000000120000000000000181000000066e6f64652d62"),
    ("RELAY_REPLY", "52455031002900000000000b0000000000000191010205"),
];

#[test]
fn every_packet_encodes_to_its_golden_bytes() {
    let samples = samples();
    assert_eq!(samples.len(), GOLDEN.len());
    for (p, (name, bytes)) in samples.iter().zip(GOLDEN) {
        assert_eq!(p.name(), *name);
        let v = frame(p);
        assert_eq!(hex(&v), *bytes, "{name}");
        let (q, used) = decode_frame(&v).unwrap();
        assert_eq!((&q, used), (p, v.len()), "{name}");
    }
}

/// Every command the decoder knows has a golden frame: a new packet kind must add one.
#[test]
fn every_known_command_has_a_golden_frame() {
    let known: Vec<u16> = (0..=u16::MAX)
        .filter(|&command| {
            let h = FrameHeader {
                command,
                flags: 0,
                len: 0,
            };
            !matches!(
                Packet::decode(&h, &[]),
                Err(super::WireError::UnknownCommand(_))
            )
        })
        .collect();
    let mut golden: Vec<u16> = samples()
        .iter()
        .map(|p| {
            let v = frame(p);
            u16::from_be_bytes([v[4], v[5]])
        })
        .collect();
    golden.sort_unstable();
    assert_eq!(known, golden);
}

/// 64-bit FNV-1a: a digest that does not change between Rust releases.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The outcome of decoding every malformed variant of every golden frame, one line each:
/// each truncation, one trailing byte, each byte replaced by a few values, and a 4-byte
/// big-endian value at every offset, chosen at the limits of each length check (strings 255,
/// digests 64, digest lists 16384, blocks and lengths 1 MiB). Block-carrying packets are
/// also decoded the way the socket reader does (prefix, then the block).
fn decode_transcript() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let words: [u32; 11] = [
        0,
        64,
        65,
        255,
        256,
        16384,
        16385,
        1 << 20,
        (1 << 20) + 1,
        0x8000_0000,
        u32::MAX,
    ];
    for p in samples() {
        let v = frame(&p);
        let command = u16::from_be_bytes([v[4], v[5]]);
        let payload = &v[HEADER_BYTES..];
        let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
        for k in 0..payload.len() {
            variants.push((format!("cut {k}"), payload[..k].to_vec()));
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        variants.push(("trailing".into(), longer));
        for i in 0..payload.len() {
            for b in [0x00u8, 0x01, 0x02, 0x7f, 0x80, 0xff] {
                let mut m = payload.to_vec();
                m[i] = b;
                variants.push((format!("byte {i}={b:#x}"), m));
            }
        }
        for i in 0..payload.len().saturating_sub(3) {
            for w in words {
                let mut m = payload.to_vec();
                m[i..i + 4].copy_from_slice(&w.to_be_bytes());
                variants.push((format!("word {i}={w:#x}"), m));
            }
        }
        for (what, m) in variants {
            let h = FrameHeader {
                command,
                flags: 0,
                len: u32::try_from(m.len()).unwrap(),
            };
            let _ = writeln!(
                out,
                "{} {what}: {}",
                p.name(),
                shown(&Packet::decode(&h, &m))
            );
            if let Some(n) = data_prefix_len(command) {
                if m.len() >= n {
                    let split = decode_with_data(&h, &m[..n], m[n..].to_vec().into());
                    let _ = writeln!(out, "{} {what} split: {}", p.name(), shown(&split));
                }
            }
        }
        // Whole frames, header included: bad magic, oversized and short lengths.
        for i in 0..HEADER_BYTES {
            for b in [0x00u8, 0xff] {
                let mut m = v.clone();
                m[i] = b;
                let decoded = match decode_frame(&m) {
                    Ok((q, n)) => format!("Ok(({}, {n}))", packet_shown(&q)),
                    Err(e) => format!("Err({e:?})"),
                };
                let _ = writeln!(out, "{} header {i}={b:#x}: {decoded}", p.name());
            }
        }
    }
    out
}

/// A decode result as the transcript shows it: blocks as the list of bytes `Vec<u8>` printed
/// when packets held them in one (they are `Bytes` now, which prints as a string), so that
/// the digest still compares results, not formats.
fn shown(r: &Result<Packet, super::WireError>) -> String {
    match r {
        Ok(p) => format!("Ok({})", packet_shown(p)),
        Err(e) => format!("Err({e:?})"),
    }
}

fn packet_shown(p: &Packet) -> String {
    match p {
        Packet::Data {
            id,
            offset,
            fua,
            data,
        } => format!(
            "Data {{ id: {id:?}, offset: {offset:?}, fua: {fua:?}, data: {:?} }}",
            data.to_vec()
        ),
        Packet::RsData { id, offset, data } => format!(
            "RsData {{ id: {id:?}, offset: {offset:?}, data: {:?} }}",
            data.to_vec()
        ),
        Packet::DataReply { id, offset, data } => format!(
            "DataReply {{ id: {id:?}, offset: {offset:?}, data: {:?} }}",
            data.to_vec()
        ),
        other => format!("{other:?}"),
    }
}

/// Decoding accepts and refuses exactly what it did before the packet table, with the same
/// typed errors (and messages). On a mismatch the transcript is printed (wire/ stays free of
/// file I/O, tests included: `core_is_sans_io`), so that it can be compared with the old
/// decoder's.
#[test]
fn malformed_frames_decode_to_the_same_results() {
    let t = decode_transcript();
    let digest = fnv1a(t.as_bytes());
    if digest != DECODE_TRANSCRIPT_FNV {
        eprintln!("{t}");
        panic!(
            "decode transcript digest {digest:#018x} ({} lines, printed above) differs",
            t.lines().count()
        );
    }
}

/// Protocol 2 added RS_ZERO: its lines appended to the transcript; without them it hashes to
/// protocol 1's 0x04c0_07a0_1440_ff3e, so nothing else changed. Protocol 3 added BYE_OUTDATED
/// (25 lines); without them it hashes to protocol 2's 0x22aa_88bf_86a9_b3fd. The witness links'
/// RELAY_OUTDATE and RELAY_REPLY (506 lines) came next; without them it hashes to
/// 0xc57b_8aeb_e7e5_c399, BYE_OUTDATED's.
const DECODE_TRANSCRIPT_FNV: u64 = 0x6a20_c4ec_b982_c11f;
