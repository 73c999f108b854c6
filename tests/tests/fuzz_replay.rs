//! Replays the fuzz corpora (fuzz/corpus/TARGET) and any crash the fuzzers kept
//! (fuzz/artifacts/TARGET) through the same checks the cargo-fuzz targets run, so a fixed crash
//! stays fixed in the normal test run, without cargo-fuzz.

use std::path::Path;

mod res_parser {
    include!("../../fuzz/logic/res_parser.rs");
}
mod nbd_request {
    include!("../../fuzz/logic/nbd_request.rs");
}
mod meta_decode {
    include!("../../fuzz/logic/meta_decode.rs");
}
mod peer_packet {
    include!("../../fuzz/logic/peer_packet.rs");
}
mod control_request {
    include!("../../fuzz/logic/control_request.rs");
}
mod engine_stateful {
    include!("../../fuzz/logic/engine_stateful.rs");
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).expect("read corpus file");
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_corpora_replay_cleanly() {
    let counts = [
        ("res_parser", replay("res_parser", res_parser::check)),
        ("nbd_request", replay("nbd_request", nbd_request::check)),
        ("meta_decode", replay("meta_decode", meta_decode::check)),
        ("peer_packet", replay("peer_packet", peer_packet::check)),
        (
            "control_request",
            replay("control_request", control_request::check),
        ),
        (
            "engine_stateful",
            replay("engine_stateful", engine_stateful::check),
        ),
    ];
    for (t, n) in counts {
        assert!(n > 0, "no corpus for fuzz target {t}");
    }
}
