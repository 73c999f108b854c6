// Shared by the fuzz target and the replay test (tests/tests/fuzz_replay.rs).
use rep_replicator::wire::packet::decode_frame;

pub fn check(data: &[u8]) {
    if let Ok((p, _)) = decode_frame(data) {
        let mut v = Vec::new();
        p.encode(&mut v);
        assert_eq!(decode_frame(&v).expect("re-decode").0, p);
    }
}
