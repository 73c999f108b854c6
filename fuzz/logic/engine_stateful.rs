// Shared by the fuzz target and the replay test (tests/tests/fuzz_replay.rs).
// Drives one engine with an arbitrary sequence of inputs: client requests, admin commands,
// peer packets decoded from the input (a hostile or broken peer), completions in any order and
// with failures, timers and link events. The engine must never panic, and its invariants
// (`Engine::check_invariants`) must hold after every input.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rep_replicator::core::failure::{Device, Op};
use rep_replicator::core::peer::PeerSettings;
use rep_replicator::digest::Digests;
use rep_replicator::core::{
    AdminCmd, AdminId, AttachInfo, ClientOp, Engine, EngineConfig, Input, IoFailure, IoId, LinkId,
    NodeId,
    LinkLoss, OnIoError, OpenFailure, OsError, Output, PeerDiskOp, ReqId,
};
use rep_replicator::meta::al::ActivityLog;
use rep_replicator::meta::bitmap::Bitmap;
use rep_replicator::meta::superblock::{GenerationUuids, MdFlags};
use rep_replicator::wire::packet::decode_frame;

const DEVICE: u64 = 64 << 20;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..8 {
            v = v << 8 | u64::from(self.u8()?);
        }
        Some(v)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// What the engine asked for and is waiting to hear back about.
enum Pending {
    Disk(IoId),
    Meta(IoId),
    PeerDisk(IoId, PeerDiskOp),
    Open(IoId),
    Close(IoId),
    Hash(IoId, Vec<u8>),
    Handler(IoId),
}

fn config(b: u8) -> EngineConfig {
    let protocol = match b % 3 {
        0 => rep_resources::Protocol::A,
        1 => rep_resources::Protocol::B,
        _ => rep_resources::Protocol::C,
    };
    EngineConfig {
        resource: "r0".into(),
        node: "node-a".into(),
        node_id: NodeId(0),
        peer_id: NodeId(1),
        peer_node: "node-b".into(),
        minor: 0,
        device: "/dev/drbd0".into(),
        protocol,
        has_peer: true,
        allow_two_primaries: b & 4 != 0,
        al_extents: 9,
        fencing: match b >> 1 & 3 {
            0 => rep_resources::Fencing::ResourceOnly,
            1 => rep_resources::Fencing::ResourceAndStonith,
            _ => rep_resources::Fencing::DontCare,
        },
        on_io_error: match b >> 3 & 3 {
            0 => OnIoError::PassOn,
            1 => OnIoError::CallLocalIoError,
            _ => OnIoError::Detach,
        },
        // Quorum between the two nodes, freezing or failing I/O when it is lost.
        quorum: if b & 128 != 0 {
            rep_resources::quorum::QuorumConf::majority(if b & 1 != 0 {
                rep_resources::quorum::OnNoQuorum::SuspendIo
            } else {
                rep_resources::quorum::OnNoQuorum::IoError
            })
        } else {
            rep_resources::quorum::QuorumConf::default()
        },
        witness: None,
        peer: PeerSettings {
            shared_secret: (b & 32 != 0).then(|| "secret".into()),
            verify_alg: Some(rep_resources::DigestAlg::Sha1),
            csums_alg: (b & 64 != 0).then_some(rep_resources::DigestAlg::Crc32c),
            max_epoch_size: 16,
            ..PeerSettings::default()
        },
    }
}

fn attach_info(input: &mut Bytes) -> AttachInfo {
    let mut bitmap = Bitmap::new(DEVICE);
    if input.u8().unwrap_or(0) & 1 == 1 {
        bitmap.set_all();
    }
    let uuids = GenerationUuids {
        current: input.u64().unwrap_or(4),
        bitmap: input.u64().unwrap_or(0),
        history: [input.u64().unwrap_or(0), input.u64().unwrap_or(0)],
    };
    let flags = MdFlags::from_bits(u32::from(input.u8().unwrap_or(0))).unwrap_or_default();
    AttachInfo {
        usable_bytes: DEVICE,
        uuids,
        flags,
        unclean: input.u8().unwrap_or(0) & 1 == 1,
        bitmap,
        al: ActivityLog::new(9, 8).expect("a 9-extent AL fits an 8-block ring"),
    }
}

fn failure() -> IoFailure {
    IoFailure {
        errno: 5,
        message: "fuzzed I/O error".into(),
    }
}

pub fn check(data: &[u8]) {
    run(data, &mut |_| {});
}

/// The inputs `data` decodes to, one line each. A crash input the fuzzer kept is replayed by
/// tests/tests/fuzz_replay.rs, which compares this story with the one recorded next to it
/// (`NAME.story`): when the input format or the engine's requests change, an old input decodes
/// to other inputs and no longer reaches what it found, and the replay says so instead of
/// passing.
#[allow(dead_code)] // the fuzz target only calls `check`
pub fn story(data: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    run(data, &mut |step| lines.push(summary(step)));
    lines
}

/// `len` bytes as eight pieces (the last takes the rest), each zero or data as `bits` says.
fn fuzzed_extents(len: u32, bits: u8) -> Vec<rep_replicator::core::io::Extent> {
    use rep_replicator::core::io::Extent;
    let piece = len / 8;
    (0..8u32)
        .map(|i| {
            let n = if i == 7 { len - 7 * piece } else { piece };
            if bits & (1 << i) != 0 {
                Extent::Zero(n)
            } else {
                Extent::Data(vec![0x5a; n as usize])
            }
        })
        .filter(|x| !x.is_empty())
        .collect()
}

/// One line for an input: its kind and what identifies it (no bulk data).
fn summary(step: &Input) -> String {
    match step {
        Input::Client { req, op } => format!("client {req} {op:?}"),
        Input::Admin { cmd, .. } => format!("admin {cmd:?}"),
        Input::Packet { link, packet } => format!("packet on link {} {}", link.0, packet.name()),
        Input::LinkUp { link, dialer, .. } => format!("link {} up dialer={dialer}", link.0),
        Input::LinkDown { link, .. } => format!("link {} down", link.0),
        Input::DiskDone { io, result } => format!("disk done {io} ok={}", result.is_ok()),
        Input::MetaDone { io, result } => format!("meta done {io} ok={}", result.is_ok()),
        Input::PeerDiskDone { io, result } => format!("peer disk done {io} ok={}", result.is_ok()),
        Input::SparseReadDone { io, result } => {
            format!("sparse read done {io} ok={}", result.is_ok())
        }
        Input::DiskOpened { io, result } => match result {
            Ok(info) => format!(
                "disk opened {io} uuids={:?} flags={:?} unclean={}",
                info.uuids, info.flags, info.unclean
            ),
            Err(e) => format!("disk open {io} failed: {e}"),
        },
        Input::DiskClosed { io } => format!("disk closed {io}"),
        Input::HashDone { io, .. } => format!("hash done {io}"),
        Input::HandlerDone { io, exit } => format!("handler done {io} exit={exit:?}"),
        Input::Timer => "timer".into(),
        Input::ClientOpened => "client opened".into(),
        Input::ClientClosed => "client closed".into(),
        other => {
            let mut s = format!("{other:?}");
            s.truncate(120);
            s
        }
    }
}

fn run(data: &[u8], on_step: &mut dyn FnMut(&Input)) {
    let mut input = Bytes(data);
    let Some(cfg_byte) = input.u8() else { return };
    let mut engine = Engine::new(config(cfg_byte), 7);
    let start = Instant::now();
    let mut now = start;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut link = 0u64;
    let mut next_req = 1u64;
    let mut next_admin = 1u64;
    let mut steps = 0;
    // FUZZ_TRACE=1: print every input and the state it met (to read a crash's story).
    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    while let Some(op) = input.u8() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        let step = match op % 12 {
            0 | 1 => {
                let offset = u64::from(input.u16().unwrap_or(0)) * 1024;
                let len = match input.u8().unwrap_or(0) {
                    255 => 32 << 20,
                    l => u32::from(l) * 4096 + 512,
                };
                let fua = op & 16 != 0;
                let op = match op >> 5 {
                    0 => ClientOp::Read { offset, len },
                    1 => ClientOp::Flush,
                    2 => ClientOp::Trim { offset, len, fua },
                    3 => ClientOp::WriteZeroes { offset, len, fua },
                    _ => ClientOp::Write { offset, len, fua },
                };
                next_req += 1;
                Some(Input::Client {
                    req: ReqId(next_req),
                    op,
                })
            }
            2 => {
                let flag = op & 16 != 0;
                let cmd = match input.u8().unwrap_or(0) % 16 {
                    0 => AdminCmd::Primary { force: flag },
                    1 => AdminCmd::Secondary,
                    2 => AdminCmd::Attach,
                    3 => AdminCmd::Detach { force: flag },
                    4 => AdminCmd::Connect {
                        discard_my_data: flag,
                    },
                    5 => AdminCmd::Disconnect { force: flag },
                    6 => AdminCmd::Outdate,
                    7 => AdminCmd::NewCurrentUuid { clear_bitmap: flag },
                    8 => AdminCmd::Invalidate,
                    9 => AdminCmd::InvalidateRemote,
                    10 => AdminCmd::Verify,
                    11 => AdminCmd::PauseSync,
                    12 => AdminCmd::ResumeSync,
                    13 => AdminCmd::ResumeIo,
                    14 => AdminCmd::PeerOutdate,
                    _ => AdminCmd::Connect {
                        discard_my_data: false,
                    },
                };
                next_admin += 1;
                Some(Input::Admin {
                    id: AdminId(next_admin),
                    cmd,
                })
            }
            3 => {
                link += 1;
                let mut nonce = [0u8; 32];
                nonce.copy_from_slice(&[op; 32]);
                Some(Input::LinkUp {
                    link: LinkId(link),
                    dialer: op & 16 != 0,
                    peer_node: "node-b".into(),
                    nonce,
                })
            }
            4..=6 => {
                let len = usize::from(input.u16().unwrap_or(0));
                let frame = input.take(len);
                decode_frame(frame).ok().map(|(packet, _)| Input::Packet {
                    link: LinkId(link),
                    packet,
                })
            }
            7 | 8 => {
                let ok = op & 16 == 0;
                let pick = usize::from(input.u8().unwrap_or(0));
                if pending.is_empty() {
                    None
                } else {
                    let p = pending.remove(pick % pending.len());
                    p.map(|p| match p {
                        Pending::Disk(io) => Input::DiskDone {
                            io,
                            result: if ok { Ok(()) } else { Err(failure()) },
                        },
                        Pending::Meta(io) => Input::MetaDone {
                            io,
                            result: if ok { Ok(()) } else { Err(failure()) },
                        },
                        // A sparse read: zero runs and data where the input's bits say.
                        Pending::PeerDisk(io, PeerDiskOp::ReadSparse { len, .. }) => {
                            Input::SparseReadDone {
                                io,
                                result: if ok {
                                    Ok(fuzzed_extents(len, input.u8().unwrap_or(0)))
                                } else {
                                    Err(failure())
                                },
                            }
                        }
                        Pending::PeerDisk(io, op) => Input::PeerDiskDone {
                            io,
                            result: match (ok, op) {
                                (false, _) => Err(failure()),
                                (true, PeerDiskOp::Read { len, .. }) => {
                                    Ok(Some(vec![0; len as usize]))
                                }
                                (true, _) => Ok(None),
                            },
                        },
                        Pending::Open(io) => Input::DiskOpened {
                            io,
                            result: if ok {
                                Ok(Box::new(attach_info(&mut input)))
                            } else {
                                Err(OpenFailure::Io {
                                    device: Device::Backing,
                                    op: Op::Open,
                                    path: "/fuzz/disk".into(),
                                    os: OsError::Errno(5),
                                })
                            },
                        },
                        Pending::Close(io) => Input::DiskClosed { io },
                        Pending::Hash(io, digests) => Input::HashDone { io, digests },
                        // A handler's exit status, 0..=7 (DRBD's fence-peer codes) or none.
                        Pending::Handler(io) => Input::HandlerDone {
                            io,
                            exit: if ok {
                                Some(i32::from(input.u8().unwrap_or(0) % 8))
                            } else {
                                None
                            },
                        },
                    })
                }
            }
            9 => {
                now += Duration::from_millis(u64::from(input.u16().unwrap_or(0)));
                Some(Input::Timer)
            }
            10 => Some(Input::LinkDown {
                link: LinkId(link),
                loss: LinkLoss::BrokenPipe,
            }),
            _ => Some(if op & 16 != 0 {
                Input::ClientOpened
            } else {
                Input::ClientClosed
            }),
        };
        let Some(step) = step else { continue };
        if trace {
            let state = (engine.role(), engine.cstate(), engine.disk(), engine.pdsk());
            eprintln!("{step:?} -> {state:?}");
        }
        on_step(&step);
        engine.handle(now, step);
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Disk { io, .. } => pending.push_back(Pending::Disk(io)),
                Output::Meta { io, .. } => pending.push_back(Pending::Meta(io)),
                Output::PeerDisk { io, op } => pending.push_back(Pending::PeerDisk(io, op)),
                Output::OpenDisk { io } => pending.push_back(Pending::Open(io)),
                Output::CloseDisk { io } => pending.push_back(Pending::Close(io)),
                Output::Hash { io, alg, data } => {
                    pending.push_back(Pending::Hash(io, alg.digest_blocks(&data)))
                }
                Output::RunHandler { io, .. } => pending.push_back(Pending::Handler(io)),
                _ => {}
            }
        }
        engine.check_invariants();
    }
}
