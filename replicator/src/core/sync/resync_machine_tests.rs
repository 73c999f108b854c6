//! The resync machine on its own: what the target asks for and when it is done, which replies
//! it takes, what the source reads and sends, and what a digest comparison leaves to send.
#![cfg(test)]

use super::*;
use crate::core::sync::resync_state::{ResyncSource, ResyncTarget};

const L: LinkId = LinkId(3);
const MIB: u64 = 1 << 20;

fn ctx(cstate: ConnState, csums: Option<HashAlg>) -> Ctx {
    Ctx {
        now: Some(Instant::now()),
        link: Some(L),
        cstate,
        disk: DiskState::UpToDate,
        usable: 16 * MIB,
        csums,
    }
}

fn budget() -> Budget {
    Budget {
        rate: 1 << 40,
        in_flight: None,
        usable_bytes: 16 * MIB,
    }
}

fn bitmap(ranges: &[(u64, u64)]) -> Bitmap {
    let mut bm = Bitmap::new(16 * MIB);
    for &(o, l) in ranges {
        bm.set_range(o, l);
    }
    bm
}

fn target() -> ResyncMachine {
    let mut m = ResyncMachine::default();
    assert!(!m.begin(Side::Target(ResyncTarget::default()), None, 0, false));
    m
}

fn source() -> ResyncMachine {
    let mut m = ResyncMachine::default();
    assert!(!m.begin(Side::Source(ResyncSource::default()), None, 0, false));
    m
}

/// A protocol C target's pump with nothing received pending.
fn pump_target(m: &mut ResyncMachine, bm: &Bitmap) -> Vec<ResyncOut> {
    let mut out = Vec::new();
    m.pump(
        &ctx(ConnState::SyncTarget, None),
        bm,
        budget(),
        |_, _| false,
        &mut out,
    );
    out
}

/// The requests a pump sent: (id, offset, len).
fn requests(out: &[ResyncOut]) -> Vec<(u64, u64, u32)> {
    out.iter()
        .filter_map(|o| match o {
            ResyncOut::Send(Packet::RsRequest {
                id, offset, len, ..
            }) => Some((*id, *offset, *len)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_target_asks_for_its_set_bits_and_finishes_when_none_is_left() {
    let mut m = target();
    let mut bm = bitmap(&[(0, 4096), (MIB, 8192)]);
    let c = ctx(ConnState::SyncTarget, None);
    let mut out = Vec::new();
    m.pump(&c, &bm, budget(), |_, _| false, &mut out);
    let asked = requests(&out);
    assert_eq!(
        asked.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>(),
        vec![(0, 4096), (MIB, 8192)]
    );
    assert!(!out.contains(&ResyncOut::FinishTarget), "{out:?}");
    // Both land: the bits clear, each is acknowledged, and the next pump finishes.
    for &(id, offset, len) in &asked {
        let mut out = Vec::new();
        m.write_done((id, offset, u64::from(len)), true, Some(&mut bm), &mut out);
        assert!(out.contains(&ResyncOut::Send(Packet::RsWriteAck { id, offset, len })));
        assert!(out
            .iter()
            .any(|o| matches!(o, ResyncOut::Count(m) if m.dw_kib == u64::from(len) / 1024)));
    }
    assert_eq!(bm.count_ones(), 0);
    let mut out = Vec::new();
    m.pump(&c, &bm, budget(), |_, _| false, &mut out);
    assert_eq!(out, vec![ResyncOut::FinishTarget]);
    let s = m.finish_target(None);
    assert_eq!(s.kib, 0);
    assert!(!m.running());
}

#[test]
fn a_paused_target_asks_for_nothing() {
    let mut m = target();
    let bm = bitmap(&[(0, 4096)]);
    for cstate in [
        ConnState::PausedSyncT,
        ConnState::SyncSource,
        ConnState::Connected,
    ] {
        let mut out = Vec::new();
        m.pump(&ctx(cstate, None), &bm, budget(), |_, _| false, &mut out);
        assert!(out.is_empty(), "{cstate}: {out:?}");
    }
}

#[test]
fn with_csums_the_target_hashes_its_copy_unless_a_received_write_is_pending_there() {
    let mut m = target();
    let bm = bitmap(&[(0, 4096), (4 * MIB, 4096)]);
    let c = ctx(ConnState::SyncTarget, Some(HashAlg::Crc32c));
    let mut out = Vec::new();
    // A write received from the peer to the second range is not on our disk yet.
    m.pump(&c, &bm, budget(), |o, _| o == 4 * MIB, &mut out);
    assert!(
        matches!(
            &out[0],
            ResyncOut::HashMine {
                aux: Aux::CsumsMine {
                    offset: 0,
                    link: L,
                    ..
                },
                offset: 0,
                len: 4096
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        requests(&out).len(),
        1,
        "the other is asked for without a digest: {out:?}"
    );
    assert_eq!(requests(&out)[0].1, 4 * MIB);
}

#[test]
fn the_target_takes_only_replies_inside_a_request_in_flight() {
    let mut m = target();
    let mut bm = bitmap(&[(MIB, 8192)]);
    let out = pump_target(&mut m, &bm);
    let (id, offset, _) = requests(&out)[0];
    assert!(m.reply_fits(ConnState::SyncTarget, id, offset, 4096));
    assert!(m.reply_fits(ConnState::PausedSyncT, id, offset + 4096, 4096));
    assert!(
        !m.reply_fits(ConnState::SyncTarget, id, offset, 3 * 4096),
        "too long"
    );
    assert!(
        !m.reply_fits(ConnState::SyncTarget, id, offset - 4096, 4096),
        "before it"
    );
    assert!(
        !m.reply_fits(ConnState::SyncTarget, id + 1, offset, 4096),
        "unknown id"
    );
    assert!(
        !m.reply_fits(ConnState::SyncSource, id, offset, 4096),
        "not a target"
    );
    // "In sync" answers the first half: its bit clears, the rest is still expected.
    m.in_sync(id, offset, 4096, &mut bm);
    assert_eq!(bm.count_ones(), 1);
    assert!(
        !m.reply_fits(ConnState::SyncTarget, id, offset, 8192),
        "half answered"
    );
    // A refusal answers the rest: its bit stays set, to be asked for again.
    let mut out = Vec::new();
    m.refused(id, offset + 4096, 4096, &mut out);
    assert!(matches!(&out[..], [ResyncOut::Warn(_)]));
    assert_eq!(bm.count_ones(), 1);
    assert!(
        !m.reply_fits(ConnState::SyncTarget, id, offset + 4096, 4096),
        "answered"
    );
}

#[test]
fn a_failed_resync_write_keeps_its_bits_and_is_refused_to_the_source() {
    let mut m = target();
    let mut bm = bitmap(&[(0, 4096)]);
    let out = pump_target(&mut m, &bm);
    let (id, ..) = requests(&out)[0];
    let mut out = Vec::new();
    m.write_done((id, 0, 4096), false, Some(&mut bm), &mut out);
    assert_eq!(bm.count_ones(), 1);
    assert!(out.contains(&ResyncOut::Send(Packet::RsNegAck {
        id,
        offset: 0,
        len: 4096
    })));
    assert!(
        !out.iter().any(|o| matches!(o, ResyncOut::Count(_))),
        "{out:?}"
    );
}

#[test]
fn the_source_refuses_bad_requests_and_serves_only_with_uptodate_data() {
    let mut m = source();
    let c = ctx(ConnState::SyncSource, None);
    for (offset, len) in [
        (16 * MIB, 4096),
        (u64::MAX - 10, 4096),
        (0, 0),
        (0, 2 << 20),
    ] {
        let mut out = Vec::new();
        assert!(!m.request(&c, (1, offset, len), Vec::new(), &mut out));
        assert!(
            matches!(&out[..], [ResyncOut::ProtocolError(_)]),
            "{offset}+{len}: {out:?}"
        );
    }
    let mut out = Vec::new();
    let outdated = Ctx {
        disk: DiskState::Outdated,
        ..c
    };
    assert!(!m.request(&outdated, (2, 0, 4096), Vec::new(), &mut out));
    assert_eq!(
        out,
        vec![ResyncOut::Send(Packet::RsNegAck {
            id: 2,
            offset: 0,
            len: 4096
        })]
    );
    let mut out = Vec::new();
    assert!(m.request(&c, (3, 0, 8192), Vec::new(), &mut out));
    assert!(out.is_empty());
    // A client write to the range holds the read back; once it is gone the read starts.
    m.admit(|_, _| false, &mut out);
    assert!(out.is_empty());
    m.admit(|_, _| true, &mut out);
    assert_eq!(
        out,
        vec![ResyncOut::Read {
            id: 3,
            offset: 0,
            len: 8192
        }]
    );
}

#[test]
fn the_source_sends_data_and_zero_runs_and_refuses_a_short_read() {
    let mut m = source();
    let c = ctx(ConnState::SyncSource, None);
    let mut out = Vec::new();
    m.request(&c, (1, 0, 8192), Vec::new(), &mut out);
    m.request(&c, (2, MIB, 8192), Vec::new(), &mut out);
    m.admit(|_, _| true, &mut out);
    let mut out = Vec::new();
    let read = vec![Extent::Data(vec![7; 4096]), Extent::Zero(4096)];
    m.read_done(&c, 1, Ok(read), &mut out);
    assert_eq!(
        &out[1..],
        &[
            ResyncOut::Send(Packet::RsData {
                id: 1,
                offset: 0,
                data: vec![7; 4096].into()
            }),
            ResyncOut::Send(Packet::RsZero {
                id: 1,
                offset: 4096,
                len: 4096
            }),
            ResyncOut::AdmitWaiting,
        ]
    );
    assert!(matches!(
        out[0],
        ResyncOut::Count(Moved {
            ns_kib: 8,
            dr_kib: 8,
            ..
        })
    ));
    // Fewer bytes than asked for is a failed read: refused, nothing sent as data.
    let mut out = Vec::new();
    m.read_done(&c, 2, Ok(vec![Extent::Data(vec![1; 4096])]), &mut out);
    assert!(matches!(&out[0], ResyncOut::Error(_)), "{out:?}");
    assert_eq!(
        out[1],
        ResyncOut::Send(Packet::RsNegAck {
            id: 2,
            offset: MIB,
            len: 8192
        })
    );
    // Nothing is reading any more: a client write to either range may go.
    let rs = m.run().map(|r| {
        (
            r.reading_overlaps(0, 8192),
            r.reading_overlaps(MIB, MIB + 8192),
        )
    });
    assert_eq!(rs, Some((false, false)));
}

#[test]
fn with_csums_the_source_sends_only_the_blocks_whose_digests_differ() {
    let alg = HashAlg::Crc32c;
    let mut m = source();
    let c = ctx(ConnState::SyncSource, Some(alg));
    let data: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&b| [b; 4096]).collect();
    let mine = alg.digest_blocks(&data);
    // The target's copy differs in the middle block only.
    let mut theirs = mine.clone();
    theirs[alg.digest_len()] ^= 0xff;
    let mut bm = bitmap(&[(0, 3 * 4096)]);
    let mut out = Vec::new();
    m.request(&c, (9, 0, 3 * 4096), theirs, &mut out);
    m.admit(|_, _| true, &mut out);
    let mut out = Vec::new();
    m.read_done(&c, 9, Ok(vec![Extent::Data(data.clone())]), &mut out);
    assert_eq!(
        out,
        vec![ResyncOut::Hash {
            id: 9,
            alg,
            data: data.clone()
        }]
    );
    assert!(
        m.run().is_some_and(|r| r.reading_overlaps(0, 4096)),
        "locked while hashed"
    );
    let mut out = Vec::new();
    m.hashed(&c, 9, &mine, Some(&mut bm), &mut out);
    let sent: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            ResyncOut::Send(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            Packet::RsInSync {
                id: 9,
                offset: 0,
                len: 4096
            },
            Packet::RsData {
                id: 9,
                offset: 4096,
                data: data[4096..8192].to_vec().into()
            },
            Packet::RsInSync {
                id: 9,
                offset: 8192,
                len: 4096
            },
        ]
    );
    // The equal blocks' bits clear here; the differing one's clears when the target acks it.
    assert_eq!(bm.count_ones(), 1);
    assert!(m.acked(ConnState::SyncSource, (4096, 4096), true, Some(&mut bm)));
    assert_eq!(bm.count_ones(), 0);
    assert_eq!(out.last(), Some(&ResyncOut::AdmitWaiting));
    assert!(
        !m.run().is_some_and(|r| r.reading_overlaps(0, 3 * 4096)),
        "unlocked"
    );
}

#[test]
fn an_ack_outside_a_source_state_clears_nothing() {
    let mut m = source();
    let mut bm = bitmap(&[(0, 4096)]);
    assert!(!m.acked(ConnState::Connected, (0, 4096), true, Some(&mut bm)));
    assert!(m.acked(ConnState::PausedSyncS, (0, 4096), false, Some(&mut bm)));
    assert_eq!(bm.count_ones(), 1, "a refused block stays out of sync");
}

#[test]
fn pause_reasons_decide_the_cstate_and_the_peer_hears_of_ours() {
    let mut m = ResyncMachine::default();
    let (s, ps) = (ConnState::SyncSource, ConnState::PausedSyncS);
    assert_eq!(
        m.set_paused(ConnState::Connected, true, PauseReason::User),
        Err(Refusal::NoResync {
            cstate: ConnState::Connected
        })
    );
    assert!(m.pause_step(s).is_none());
    let held = m.begin(Side::Source(ResyncSource::default()), None, 8, true);
    assert!(held, "held by resync-after");
    assert_eq!(m.pause_step(s), Some((ps, Some(true))));
    // Our reason changes from resync-after to pause-sync: still paused, nothing new to tell.
    assert_eq!(m.set_paused(ps, false, PauseReason::After), Ok(()));
    assert_eq!(m.set_paused(ps, true, PauseReason::User), Ok(()));
    assert_eq!(m.pause_step(ps), Some((ps, None)));
    // The peer's pause holds it, but is not ours to tell.
    assert_eq!(m.set_paused(ps, true, PauseReason::Peer), Ok(()));
    assert_eq!(m.set_paused(ps, false, PauseReason::User), Ok(()));
    assert_eq!(m.pause_step(ps), Some((ps, Some(false))));
    assert_eq!(m.set_paused(ps, false, PauseReason::Peer), Ok(()));
    assert_eq!(m.pause_step(ps), Some((s, None)));
    m.abort();
    assert!(!m.running());
}

#[test]
fn a_target_held_by_the_rate_limit_with_bits_left_is_not_done() {
    let mut m = target();
    let bm = bitmap(&[(0, 8 * MIB)]);
    let c = ctx(ConnState::SyncTarget, None);
    let slow = Budget {
        rate: 1 << 20,
        ..budget()
    };
    let mut out = Vec::new();
    m.pump(&c, &bm, slow, |_, _| false, &mut out);
    // The source refuses everything asked: nothing is in flight, every bit is still set.
    for (id, offset, len) in requests(&out) {
        assert!(m.reply_fits(ConnState::SyncTarget, id, offset, u64::from(len)));
        m.refused(id, offset, len, &mut Vec::new());
    }
    // The rate limit allows nothing more right now: the target waits, it is not finished.
    let mut out = Vec::new();
    m.pump(&c, &bm, slow, |_, _| false, &mut out);
    assert!(requests(&out).is_empty(), "{out:?}");
    assert!(!out.contains(&ResyncOut::FinishTarget), "{out:?}");
    assert!(m.wake(ConnState::SyncTarget).is_some(), "a wake-up is due");
    assert_eq!(
        m.wake(ConnState::PausedSyncT),
        None,
        "a paused target does not wake"
    );
}
