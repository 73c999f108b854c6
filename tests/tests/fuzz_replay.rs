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

fn is_story(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "story")
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            if is_story(&e.path()) {
                // A crash input's recorded story (`NAME.story`), not an input.
                continue;
            }
            let data = std::fs::read(e.path()).expect("read corpus file");
            check(&data);
            n += 1;
        }
    }
    n
}

/// A crash input is only worth keeping while it still drives the engine through the inputs
/// that made it crash: the stateful target reads its inputs from the bytes, so a change of the
/// input format (or of what the engine asks the harness for) turns an old crash file into an
/// unrelated input that passes without testing anything. Each kept input carries its story
/// (`NAME.story`, the inputs it decodes to, written with `FUZZ_STORY_RECORD=1` when it is
/// added or converted); an input whose story changed fails here, by name.
fn stale_artifacts(target: &str, story: fn(&[u8]) -> Vec<String>) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/artifacts")
        .join(target);
    let record = std::env::var_os("FUZZ_STORY_RECORD").is_some();
    let mut stale = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return stale;
    };
    for e in entries.flatten() {
        let path = e.path();
        if is_story(&path) {
            continue;
        }
        let name = path.display().to_string();
        let data = std::fs::read(&path).expect("read artifact");
        let now = story(&data);
        let mut story_path = path.clone().into_os_string();
        story_path.push(".story");
        let story_path = std::path::PathBuf::from(story_path);
        if record {
            std::fs::write(&story_path, now.join("\n") + "\n").expect("write story");
            continue;
        }
        let Ok(kept) = std::fs::read_to_string(&story_path) else {
            stale.push(format!(
                "{name}: no {} recorded: replay it with FUZZ_TRACE=1, check that it still reaches what it found, then record it with FUZZ_STORY_RECORD=1",
                story_path.display()
            ));
            continue;
        };
        let kept: Vec<&str> = kept.lines().collect();
        if kept != now {
            let at = kept
                .iter()
                .zip(&now)
                .position(|(a, b)| a != b)
                .unwrap_or(kept.len().min(now.len()));
            stale.push(format!(
                "{name}: no longer decodes to the inputs it was found with (input format or engine requests changed): step {at} was {:?}, is now {:?} ({} steps recorded, {} now). Convert it to the current format or delete it",
                kept.get(at),
                now.get(at),
                kept.len(),
                now.len()
            ));
        }
    }
    stale
}

#[test]
fn fuzz_artifacts_still_reach_what_they_found() {
    let stale = stale_artifacts("engine_stateful", engine_stateful::story);
    assert!(
        stale.is_empty(),
        "STALE FUZZ ARTIFACTS (they pass without testing what they found):\n  {}",
        stale.join("\n  ")
    );
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
