//! The verify machine on its own: what it asks for, what it concludes, when it ends.

use super::*;
use crate::core::sync::verify_state::WINDOW;

const L: LinkId = LinkId(7);
const BLOCK: u64 = 4096;

fn ctx(usable: u64) -> Ctx {
    Ctx {
        usable,
        now: None,
        link: Some(L),
        alg: Some(HashAlg::Crc32c),
    }
}

/// The chunks asked for: each is an `OvRequest` followed at once by the read of our copy.
fn asked(out: &[VerifyOut]) -> Vec<(u64, u64, u32)> {
    assert_eq!(out.len() % 2, 0, "{out:?}");
    out.chunks(2)
        .map(|pair| match pair {
            [VerifyOut::Send(Packet::OvRequest { id, offset, len }), VerifyOut::Read {
                aux: Aux::VerifyMine { id: rid, link },
                offset: roff,
                len: rlen,
            }] => {
                assert_eq!((id, offset, len, link), (rid, roff, rlen, &L));
                (*id, *offset, *len)
            }
            other => panic!("not a chunk request: {other:?}"),
        })
        .collect()
}

/// Both sides' digests of chunk `id`, per 4 KiB block (crc32c: 4 bytes each).
fn both(m: &mut VerifyMachine, id: u64, mine: Vec<u8>, theirs: Vec<u8>, c: &Ctx) -> Vec<VerifyOut> {
    let mut out = Vec::new();
    assert!(m.digests(id, Whose::Mine, mine, c, &mut out));
    assert!(out.is_empty(), "waits for the peer's digests: {out:?}");
    m.on_reply(id, theirs, c, &mut out);
    out
}

#[test]
fn it_asks_for_the_device_in_chunks_keeping_the_window_full() {
    let usable = CHUNK_BYTES * 10 + BLOCK;
    let c = ctx(usable);
    let mut m = VerifyMachine::default();
    let mut out = Vec::new();
    m.start(HashAlg::Crc32c, &c, &mut out);
    assert!(m.running());
    let first = asked(&out);
    assert_eq!(first.len(), WINDOW);
    for (i, (_, offset, len)) in first.iter().enumerate() {
        assert_eq!(
            (*offset, u64::from(*len)),
            (i as u64 * CHUNK_BYTES, CHUNK_BYTES)
        );
    }
    // One chunk agrees: exactly one more is asked for, the next one along.
    let (id, ..) = first[0];
    let out = both(&mut m, id, vec![0; 64 * 4], vec![0; 64 * 4], &c);
    assert_eq!(
        asked(&out).iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![8 * CHUNK_BYTES]
    );
    assert_eq!(m.progress(usable), Some((CHUNK_BYTES, usable)));
}

#[test]
fn a_mismatch_is_found_reported_and_remembered() {
    let usable = 16 * BLOCK;
    let c = ctx(usable);
    let mut m = VerifyMachine::default();
    let mut out = Vec::new();
    m.start(HashAlg::Crc32c, &c, &mut out);
    let (id, ..) = asked(&out)[0];
    let mine = vec![1u8; 16 * 4];
    let mut theirs = mine.clone();
    theirs[3 * 4] ^= 1;
    theirs[4 * 4] ^= 1;
    let out = both(&mut m, id, mine, theirs, &c);
    let result = |offset| {
        VerifyOut::Send(Packet::OvResult {
            id,
            offset,
            len: 4096,
            in_sync: false,
        })
    };
    assert_eq!(
        out,
        vec![
            VerifyOut::Found {
                offset: 3 * BLOCK,
                len: BLOCK
            },
            result(3 * BLOCK),
            VerifyOut::Found {
                offset: 4 * BLOCK,
                len: BLOCK
            },
            result(4 * BLOCK),
            VerifyOut::Send(Packet::OvDone { oos_blocks: 2 }),
            VerifyOut::OutOfSyncHandler,
            VerifyOut::Done {
                why: "Online verify done (total 0 sec; 64 K/sec); found 2 4k block out of sync"
                    .into()
            },
        ]
    );
    assert!(!m.running());
    assert_eq!(m.last_oos(), Some(2));
    assert_eq!(
        m.ranges(),
        &[(3 * BLOCK, 2 * BLOCK)],
        "adjacent blocks merge"
    );
}

#[test]
fn a_block_a_write_touched_is_checked_again_before_it_counts() {
    let usable = 8 * BLOCK;
    let c = ctx(usable);
    let mut m = VerifyMachine::default();
    let mut out = Vec::new();
    m.start(HashAlg::Crc32c, &c, &mut out);
    let (id, ..) = asked(&out)[0];
    m.note_write(5 * BLOCK + 10, 20);
    let mine = vec![0u8; 8 * 4];
    let mut theirs = mine.clone();
    theirs[5 * 4] ^= 1;
    let out = both(&mut m, id, mine, theirs, &c);
    // Not found, not finished: block 5 alone is asked for again.
    let again = asked(&out);
    assert_eq!(again.len(), 1);
    let (rid, offset, len) = again[0];
    assert_eq!((offset, len), (5 * BLOCK, 4096));
    assert!(m.running());
    // No write this time, and it still differs: now it counts.
    let out = both(&mut m, rid, vec![0; 4], vec![9; 4], &c);
    assert_eq!(
        out[0],
        VerifyOut::Found {
            offset: 5 * BLOCK,
            len: BLOCK
        }
    );
    assert_eq!(out[2], VerifyOut::Send(Packet::OvDone { oos_blocks: 1 }));
    assert_eq!(m.last_oos(), Some(1));
}

#[test]
fn agreeing_digests_finish_quietly_and_the_mismatch_explained_away_is_told() {
    let usable = BLOCK;
    let c = ctx(usable);
    let mut m = VerifyMachine::default();
    let mut out = Vec::new();
    m.start(HashAlg::Crc32c, &c, &mut out);
    let (id, ..) = asked(&out)[0];
    m.note_write(0, BLOCK);
    let out = both(&mut m, id, vec![0; 4], vec![1; 4], &c);
    let (rid, ..) = asked(&out)[0];
    let out = both(&mut m, rid, vec![2; 4], vec![2; 4], &c);
    assert_eq!(out.len(), 2, "no handler when nothing differs: {out:?}");
    assert_eq!(out[0], VerifyOut::Send(Packet::OvDone { oos_blocks: 0 }));
    let VerifyOut::Done { why } = &out[1] else {
        panic!("{out:?}")
    };
    assert!(
        why.contains("found 0 4k block") && why.contains("1 mismatches seen during writes"),
        "{why}"
    );
    assert_eq!(m.last_oos(), Some(0));
}

#[test]
fn without_a_link_nothing_is_asked_for_and_a_stray_reply_is_a_protocol_error() {
    let mut c = ctx(4 * BLOCK);
    c.link = None;
    let mut m = VerifyMachine::default();
    let mut out = Vec::new();
    m.start(HashAlg::Crc32c, &c, &mut out);
    assert!(out.is_empty());
    m.on_reply(3, vec![0; 4], &c, &mut out);
    assert_eq!(
        out,
        vec![VerifyOut::ProtocolError(
            "verify reply 3 without a request".into()
        )]
    );
    m.abort();
    assert!(!m.running());
}

#[test]
fn the_peers_request_makes_this_side_verify_target_and_reads_the_chunk() {
    let c = ctx(CHUNK_BYTES * 2);
    let mut m = VerifyMachine::default();
    m.on_result(0, 4096, false, c.usable, &mut Vec::new());
    let mut out = Vec::new();
    m.on_request(4, CHUNK_BYTES, 4096, true, &c, &mut out);
    assert!(
        m.ranges().is_empty(),
        "a new verify forgets the last one's ranges"
    );
    let read = VerifyOut::Read {
        aux: Aux::VerifyPeer {
            id: 4,
            offset: CHUNK_BYTES,
            len: 4096,
            link: L,
        },
        offset: CHUNK_BYTES,
        len: 4096,
    };
    assert_eq!(out, vec![VerifyOut::BecomeTarget, read.clone()]);
    // Already VerifyT: only the read.
    out.clear();
    m.on_request(4, CHUNK_BYTES, 4096, false, &c, &mut out);
    assert_eq!(out, vec![read]);
    assert_eq!(m.hash_alg(c.alg), Some(HashAlg::Crc32c));
}

#[test]
fn an_invalid_request_or_result_is_a_protocol_error() {
    let c = ctx(CHUNK_BYTES * 2);
    let mut m = VerifyMachine::default();
    let mut out = Vec::new();
    m.on_request(1, CHUNK_BYTES * 2 - 4096, 8192, true, &c, &mut out);
    m.on_request(1, 0, len32(CHUNK_BYTES) + 4096, true, &c, &mut out);
    let no_alg = Ctx { alg: None, ..c };
    m.on_request(1, 0, 4096, true, &no_alg, &mut out);
    m.on_result(CHUNK_BYTES * 2, 4096, false, c.usable, &mut out);
    let errors: Vec<_> = out
        .iter()
        .map(|o| match o {
            VerifyOut::ProtocolError(why) => why.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[2].contains("verify-alg is not set here"));
    assert!(errors[3].starts_with("verify result"));
}

#[test]
fn the_peers_results_are_marked_and_merged_and_its_done_remembered() {
    let mut m = VerifyMachine::default();
    let mut out = Vec::new();
    m.on_result(0, 4096, true, 1 << 20, &mut out);
    assert!(out.is_empty(), "in sync: nothing to mark");
    m.on_result(8192, 4096, false, 1 << 20, &mut out);
    m.on_result(12288, 4096, false, 1 << 20, &mut out);
    assert_eq!(
        out,
        vec![
            VerifyOut::Mark {
                offset: 8192,
                len: 4096
            },
            VerifyOut::Mark {
                offset: 12288,
                len: 4096
            },
        ]
    );
    assert_eq!(m.ranges(), &[(8192, 8192)]);
    assert!(m.on_done(2).contains("found 2 4k block"));
    assert_eq!(m.last_oos(), Some(2));
}
