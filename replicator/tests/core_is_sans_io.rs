//! Goal: keep the engine core sans-IO (docs/architecture.md §2.3, §3). Method: scan every source file under
//! src/core, src/meta and src/wire for names of I/O, clocks or runtimes; any hit fails.
//! (src/meta/store.rs is the one metadata file allowed to touch files: it is the adapter.) A
//! file's unit tests (from its `#[cfg(test)]` module on, at the end by convention) may use a
//! clock: they are not the core.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::fs",
    "std::net",
    "SystemTime",
    "Instant::now",
    "thread_rng",
    "std::thread",
];

fn scan(dir: &Path, allowed_files: &[&str], hits: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            scan(&path, allowed_files, hits);
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if allowed_files.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (no, line) in text.lines().enumerate() {
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    hits.push(format!("{}:{}: uses {word}", path.display(), no + 1));
                }
            }
        }
    }
}

#[test]
fn core_meta_and_wire_are_sans_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    scan(&root.join("core"), &[], &mut hits);
    scan(&root.join("meta"), &["store.rs"], &mut hits);
    scan(&root.join("wire"), &[], &mut hits);
    assert!(root.join("core").is_dir(), "src/core missing");
    assert!(
        hits.is_empty(),
        "I/O in the sans-IO core:\n{}",
        hits.join("\n")
    );
}

/// Lines of the non-test code of every file under `dir` that contain `needle`, except in the
/// files named in `allowed`.
fn find(dir: &Path, needle: &str, allowed: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(find(&path, needle, allowed));
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if allowed.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (no, line) in text.lines().enumerate() {
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            if line.split("//").next().unwrap_or("").contains(needle) {
                hits.push(format!("{}:{}: {}", path.display(), no + 1, line.trim()));
            }
        }
    }
    hits
}

/// Goal: every change of role, cstate, disk and peer disk goes through `change_state`
/// (docs/architecture.md §5). The fields of `NodeState` are private to `state_change.rs`, so the compiler
/// refuses field assignments elsewhere; this catches the one way around it, replacing the
/// whole state.
#[test]
fn state_changes_only_through_change_state() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let hits = find(&core, ".st =", &["state_change.rs"]);
    assert!(
        hits.is_empty(),
        "state assigned outside change_state:\n{}",
        hits.join("\n")
    );
}

/// Goal: dependencies point one way (docs/architecture.md §2): the core uses the metadata formats and the
/// wire format, never the other way round.
#[test]
fn meta_and_wire_do_not_depend_on_the_core() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = find(&src.join("meta"), "crate::core", &[]);
    hits.extend(find(&src.join("wire"), "crate::core", &[]));
    assert!(hits.is_empty(), "layering broken:\n{}", hits.join("\n"));
}
