//! Goal: keep the engine core sans-IO (DESIGN.md §3). Method: scan every source file under
//! src/core, src/meta and src/wire for names of I/O, clocks or runtimes; any hit fails.
//! (src/meta/store.rs is the one metadata file allowed to touch files: it is the adapter.)

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
