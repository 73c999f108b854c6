//! Goal: keep the engine core sans-IO (docs/architecture.md §2.3, §3). Method: scan every source file under
//! src/core, src/meta and src/wire for names of I/O, clocks or runtimes; any hit fails.
//! (src/meta/store.rs is the one metadata file allowed to touch files: it is the adapter.) A
//! file's unit tests (from its `#[cfg(test)]` module on, at the end by convention, or a whole
//! file that starts `#![cfg(test)]`) may use a clock: they are not the core.

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

/// Calls `each(path, line number, line)` for the non-test lines of every file under `dir`, except
/// in the files named in `allowed`. A file's tests start at its `#[cfg(test)]` module, or at its
/// first line when it is a whole file of unit tests (`foo_tests.rs`: `#![cfg(test)]`).
fn code_lines(dir: &Path, allowed: &[&str], each: &mut dyn FnMut(&Path, usize, &str)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            code_lines(&path, allowed, each);
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if allowed.contains(&name) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (no, line) in text.lines().enumerate() {
            if matches!(line.trim(), "#[cfg(test)]" | "#![cfg(test)]") {
                break;
            }
            each(&path, no + 1, line);
        }
    }
}

fn scan(dir: &Path, allowed_files: &[&str], hits: &mut Vec<String>) {
    code_lines(dir, allowed_files, &mut |path, no, line| {
        let code = line.split("//").next().unwrap_or("");
        for word in FORBIDDEN {
            if code.contains(word) {
                hits.push(format!("{}:{no}: uses {word}", path.display()));
            }
        }
    });
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
    code_lines(dir, allowed, &mut |path, no, line| {
        if line.split("//").next().unwrap_or("").contains(needle) {
            hits.push(format!("{}:{no}: {}", path.display(), line.trim()));
        }
    });
    hits
}

/// Goal: every change of role, cstate, disk and peer disk goes through `change_state`
/// (docs/architecture.md §5). The fields of `NodeState` are private to `state/node_state.rs`,
/// so the compiler refuses field assignments elsewhere; this catches the one way around it,
/// replacing the whole state (which only `state/change.rs` does).
#[test]
fn state_changes_only_through_change_state() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let hits = find(&core, ".st =", &["change.rs"]);
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

/// The non-test code of a Rust file, without comments (line comments and doc comments; the
/// core has no block comments in code).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim() == "#[cfg(test)]" {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// Every `.rs` file under `dir` with its module path relative to `src/core`
/// (`connection/link.rs` is `["connection", "link"]`, `state/mod.rs` is `["state"]`).
fn core_modules(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, std::path::PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            core_modules(&path, &p, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut p = prefix.to_vec();
            if stem != "mod" {
                p.push(stem.to_string());
            }
            out.push((p, path));
        }
    }
}

/// The paths a use tree names: `a::{b, c::{d, e}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (head, rest) = tree.split_at(open);
    let inner = &rest[1..rest.rfind('}').unwrap_or(rest.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use(p).into_iter().map(|s| format!("{head}{s}")))
        .collect()
}

/// The module paths (relative to `src/core`) a file at module path `me` names through
/// `super::`, `self::` and `crate::core::` paths, in `use` trees and inline (`area` names the
/// directory under `src`: `core`, or `sim` for the simulator's own graph).
fn named_paths(me: &[String], code: &str, area: &str) -> Vec<Vec<String>> {
    let crate_area = format!("crate::{area}::");
    let mut paths = Vec::new();
    // `use` statements (they may span lines) are expanded; every other line is scanned for
    // inline paths.
    let mut inline = String::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let tree = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| t.strip_prefix(p));
        let Some(tree) = tree else {
            inline.push_str(line);
            inline.push('\n');
            continue;
        };
        let mut stmt = tree.to_string();
        while !stmt.contains(';') {
            match lines.next() {
                Some(l) => stmt.push_str(l),
                None => break,
            }
        }
        paths.extend(expand_use(stmt.split(';').next().unwrap_or("")));
    }
    let chars: Vec<char> = inline.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if boundary {
            let tail: String = chars[i..].iter().take(200).collect();
            if ["super::", "self::", crate_area.as_str()]
                .iter()
                .any(|p| tail.starts_with(p))
            {
                let path: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                i += path.len();
                paths.push(path);
                continue;
            }
        }
        i += 1;
    }
    let parent = &me[..me.len().saturating_sub(1)];
    let mut out = Vec::new();
    for p in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let (mut base, mut segs) = match segs.first() {
            Some(&"crate") if segs.get(1) == Some(&area) => (Vec::new(), segs[2..].to_vec()),
            Some(&"super") => (parent.to_vec(), segs[1..].to_vec()),
            Some(&"self") => (me.to_vec(), segs[1..].to_vec()),
            _ => continue,
        };
        while segs.first() == Some(&"super") {
            base.pop();
            segs.remove(0);
        }
        base.extend(segs.iter().map(|s| s.to_string()));
        out.push(base);
    }
    out
}

/// Goal: no import circle in the core (docs/architecture.md §3): a file that holds an
/// `impl Engine` block is never imported by the files it needs. Method: the graph of
/// `super::`/`crate::core::` references between the files of `src/core` (a `mod.rs` stands for
/// the items it re-exports, resolved to the files that define them); any cycle fails, named.
#[test]
fn no_import_circle_in_core() {
    import_circle_check("core", 20);
}

/// Goal: the simulator has no import circle either (issue 21): its configuration is read by
/// the `.res` rendering and the cluster, and the cluster's parts are `impl Cluster` blocks over
/// the types in `cluster/world.rs`, none importing a file that imports it. Method: as above.
#[test]
fn no_import_circle_in_sim() {
    import_circle_check("sim", 15);
}

/// The import graph between the files of `src/{area}` (at least `min_edges` imports, or the
/// scanner is broken); any cycle panics, named.
fn import_circle_check(area: &str, min_edges: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(area);
    let mut mods = Vec::new();
    core_modules(&dir, &[], &mut mods);
    let is_mod_rs = |p: &Path| p.file_name().is_some_and(|n| n == "mod.rs");
    let file_of = |m: &[String]| mods.iter().position(|(mp, _)| mp.as_slice() == m);
    // Re-exports of each mod.rs: item name -> the module path it comes from.
    let mut reexports: std::collections::HashMap<Vec<String>, Vec<(String, Vec<String>)>> =
        Default::default();
    for (mp, path) in &mods {
        if !is_mod_rs(path) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(path).unwrap_or_default());
        let mut list = Vec::new();
        for stmt in code.split(';') {
            let Some(at) = stmt.find("pub use ") else {
                continue;
            };
            for p in expand_use(&stmt[at + 8..]) {
                let segs: Vec<&str> = p.split("::").collect();
                let (name, from) = segs.split_last().unwrap_or((&"", &[]));
                let mut full = mp.clone();
                let from: Vec<&str> = from.iter().copied().filter(|s| *s != "self").collect();
                if from.first() == Some(&"crate") {
                    continue;
                }
                full.extend(from.iter().map(|s| s.to_string()));
                list.push((name.to_string(), full));
            }
        }
        reexports.insert(mp.clone(), list);
    }
    // Resolve a module path to the file that defines it: the longest prefix that is a file; a
    // mod.rs hit is followed through its re-exports (or dropped: declaring is not depending).
    let resolve = |path: &[String]| -> Option<usize> {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let (len, idx) = (1..=path.len())
                .rev()
                .find_map(|n| file_of(&path[..n]).map(|i| (n, i)))?;
            if !is_mod_rs(&mods[idx].1) {
                return Some(idx);
            }
            let item = path.get(len)?;
            let (_, from) = reexports
                .get(&path[..len])?
                .iter()
                .find(|(n, _)| n == item)?;
            let mut next = from.clone();
            next.push(item.clone());
            next.extend(path[len + 1..].iter().cloned());
            path = next;
        }
        None
    };
    let mut edges: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); mods.len()];
    for (i, (mp, path)) in mods.iter().enumerate() {
        if is_mod_rs(path) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(path).unwrap_or_default());
        for named in named_paths(mp, &code, area) {
            if let Some(j) = resolve(&named) {
                if j != i {
                    edges[i].insert(j);
                }
            }
        }
    }
    // Depth-first search; a back edge closes a cycle.
    fn visit(
        n: usize,
        edges: &[std::collections::BTreeSet<usize>],
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        colour[n] = 1;
        stack.push(n);
        for &m in &edges[n] {
            if colour[m] == 1 {
                let at = stack.iter().position(|&s| s == m).unwrap_or(0);
                let mut cycle = stack[at..].to_vec();
                cycle.push(m);
                return Some(cycle);
            }
            if colour[m] == 0 {
                if let Some(c) = visit(m, edges, colour, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        colour[n] = 2;
        None
    }
    let mut colour = vec![0u8; mods.len()];
    for n in 0..mods.len() {
        if colour[n] == 0 {
            if let Some(cycle) = visit(n, &edges, &mut colour, &mut Vec::new()) {
                let names: Vec<String> = cycle
                    .iter()
                    .map(|&i| {
                        mods[i]
                            .1
                            .strip_prefix(&dir)
                            .unwrap_or(&mods[i].1)
                            .display()
                            .to_string()
                    })
                    .collect();
                panic!("import circle in src/{area}: {}", names.join(" -> "));
            }
        }
    }
    let edge_count: usize = edges.iter().map(|e| e.len()).sum();
    assert!(
        edge_count > min_edges,
        "the scanner found only {edge_count} imports"
    );
}

/// Goal: no product file in the core or the runtime, and no file of the simulator or of this
/// crate's integration tests, is too long to read as one piece (issue 21): a file that grows
/// past 800 lines is split along what its parts own. Unit tests (from `#[cfg(test)]` on) do
/// not count.
#[test]
fn no_product_file_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut mods = Vec::new();
    core_modules(&src.join("core"), &[], &mut mods);
    core_modules(&src.join("runtime"), &[], &mut mods);
    let product = mods.len();
    core_modules(&src.join("sim"), &[], &mut mods);
    core_modules(&root.join("tests"), &[], &mut mods);
    assert!(product > 40, "only {product} core and runtime files found");
    assert!(
        mods.len() > product + 15,
        "only {} simulator and test files found",
        mods.len() - product
    );
    let long: Vec<String> = mods
        .iter()
        .filter_map(|(_, path)| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let n = text
                .lines()
                .take_while(|l| l.trim() != "#[cfg(test)]")
                .count();
            (n > 800).then(|| format!("{}: {n} lines", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over 800 lines:\n{}",
        long.join("\n")
    );
}

/// Goal: generation UUIDs and metadata flags change only through `Engine::gen_change`
/// (core/device/generation.rs, docs/architecture.md §4.5), as the state does through
/// `change_state`. The fields of `Generation` are private, so the compiler refuses writes
/// elsewhere; this catches the ways around it: keeping or replacing a copy, and the rotation
/// primitives and flag setters of `meta/superblock.rs` called on one.
#[test]
fn generation_changes_only_through_gen_change() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut hits = Vec::new();
    for needle in [
        // Assignments (a trailing space, so that `==` is not one).
        ".uuids = ",
        ".flags = ",
        ".gen = ",
        ".current = ",
        ".current |= ",
        ".current &= ",
        ".bitmap = 0",
        ".history = ",
        ".history[0] = ",
        ".history[1] = ",
        ".new_current(",
        ".set_no_history(",
        ".set_bitmap_uuid(",
        ".clear_bitmap_uuid(",
        "uuids.start_sync_source(",
        "UuidIndex::",
        "MdFlags::from_bits",
        ".set_consistent(",
        ".set_primary_ind(",
        ".set_connected_ind(",
        ".set_full_sync(",
        ".set_was_up_to_date(",
        ".set_peer_out_dated(",
        ".set_crashed_primary(",
        ".set_al_clean(",
        ".set_al_disabled(",
        ".set_split_brain(",
        "MetaOpKind::Superblock {",
    ] {
        hits.extend(find(&core, needle, &["generation.rs"]));
    }
    assert!(
        hits.is_empty(),
        "generation UUIDs or metadata flags written outside device/generation.rs:\n{}",
        hits.join("\n")
    );
}
