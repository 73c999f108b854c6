//! The drbdadm conformance corpus: every valid file parses and its dump, read back by drbdadm
//! (when installed), gives drbdadm's own dump; every invalid file is rejected naming FILE:LINE.

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/res-corpus")
}

fn files(dir: &str) -> Vec<PathBuf> {
    files_in(&corpus(), dir)
}

fn files_in(corpus: &Path, dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus.join(dir))
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "res"))
        .collect();
    v.sort();
    v
}

fn strip_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// drbdadm's dump of `text`, by its 8.4 parser (`v84`) or its own 9.x one.
fn drbdadm_dump(text: &str) -> Option<String> {
    drbdadm_dump_with(text, true)
}

fn drbdadm_dump_with(text: &str, v84: bool) -> Option<String> {
    let which = Command::new("sh")
        .arg("-c")
        .arg("command -v drbdadm")
        .output()
        .ok()?;
    if !which.status.success() {
        return None;
    }
    // One file per call: the 8.4 and the 9 corpus tests run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = std::env::temp_dir().join(format!("rep-corpus-{}-{n}.res", std::process::id()));
    std::fs::write(&tmp, text).ok()?;
    let mut cmd = Command::new("drbdadm");
    if v84 {
        cmd.env("DRBD_DRIVER_VERSION_OVERRIDE", "8.4.11");
    } else {
        cmd.env_remove("DRBD_DRIVER_VERSION_OVERRIDE");
    }
    let out = cmd
        .arg("-c")
        .arg(&tmp)
        .args(["dump", "all"])
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&tmp);
    if !out.status.success() {
        return Some(format!(
            "DRBDADM REJECTED: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn valid_files_roundtrip_through_drbdadm() {
    let mut failures = Vec::new();
    let valid = files("valid");
    assert!(valid.len() >= 30, "corpus missing");
    let mut checked_with_drbdadm = 0;
    for f in &valid {
        let c = match rep_resources::parse_file(f) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{}: rejected: {e}", f.display()));
                continue;
            }
        };
        let ours = c.dump(None).expect("dump");
        let expected = std::fs::read_to_string(f.with_extension("dump")).expect("dump file");
        if let Some(re) = drbdadm_dump(&ours) {
            checked_with_drbdadm += 1;
            if strip_comments(&re) != strip_comments(&expected) {
                failures.push(format!(
                    "{}: drbdadm reads our dump differently:\n--- ours\n{ours}\n--- drbdadm\n{re}",
                    f.display()
                ));
            }
        }
    }
    eprintln!(
        "{} valid files, {checked_with_drbdadm} checked through drbdadm",
        valid.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn invalid_files_are_rejected_with_file_and_line() {
    let mut failures = Vec::new();
    let invalid = files("invalid");
    assert!(invalid.len() >= 25, "corpus missing");
    for f in &invalid {
        match rep_resources::parse_file(f) {
            Ok(_) => failures.push(format!("{}: accepted", f.display())),
            Err(e) => {
                let msg = e.to_string();
                let base = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let names_place = msg.contains(&format!("{base}:")) || msg.contains("include/");
                if !names_place || e.line == 0 {
                    failures.push(format!(
                        "{}: error does not name FILE:LINE: {msg}",
                        f.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The DRBD 9 files (res-corpus/v9: node-id, disk none, connection-mesh, connection sections,
/// quorum options), judged by drbdadm's own 9.x parser.
fn v9() -> PathBuf {
    corpus().join("v9")
}

#[test]
fn v9_valid_files_roundtrip_through_drbdadm_9() {
    let mut failures = Vec::new();
    let valid = files_in(&v9(), "valid");
    assert!(valid.len() >= 17, "v9 corpus missing");
    for f in &valid {
        let c = match rep_resources::parse_file(f) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{}: rejected: {e}", f.display()));
                continue;
            }
        };
        let ours = c.dump(None).expect("dump");
        let again = rep_resources::parse_str(&ours, "dump.res", Path::new("/nonexistent"))
            .expect("our dump parses again");
        assert_eq!(
            again.model,
            c.model,
            "{}: dump changes the model",
            f.display()
        );
        let expected = std::fs::read_to_string(f.with_extension("dump")).expect("dump file");
        if let Some(re) = drbdadm_dump_with(&ours, false) {
            if strip_comments(&re) != strip_comments(&expected) {
                failures.push(format!(
                    "{}: drbdadm 9 reads our dump differently:\n--- ours\n{ours}\n--- drbdadm\n{re}",
                    f.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn v9_invalid_files_are_rejected_with_file_and_line() {
    let mut failures = Vec::new();
    let invalid = files_in(&v9(), "invalid");
    assert!(invalid.len() >= 29, "v9 corpus missing");
    for f in &invalid {
        match rep_resources::parse_file(f) {
            Ok(_) => failures.push(format!("{}: accepted", f.display())),
            Err(e) => {
                let base = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if !e.to_string().contains(&format!("{base}:")) || e.line == 0 {
                    failures.push(format!(
                        "{}: error does not name FILE:LINE: {e}",
                        f.display()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn v9_issue_example_models_hosts_connections_and_quorum() {
    use rep_resources::quorum::{OnNoQuorum, Quorum};
    use rep_resources::topology::Origin;
    let c =
        rep_resources::parse_file(&v9().join("valid/301-quorum-witness-mesh.res")).expect("parses");
    let r = &c.model.resources[0];
    let ids: Vec<(String, Option<u32>, bool)> = r
        .hosts
        .iter()
        .map(|h| (h.label(), h.node_id, h.diskless()))
        .collect();
    assert_eq!(
        ids,
        [
            ("alpha".to_string(), Some(0), false),
            ("beta".to_string(), Some(1), false),
            ("witness".to_string(), Some(2), true)
        ]
    );
    let pairs: Vec<(String, String)> = r
        .connections
        .iter()
        .map(|c| (c.hosts[0].host.clone(), c.hosts[1].host.clone()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("alpha".to_string(), "beta".to_string()),
            ("alpha".to_string(), "witness".to_string()),
            ("beta".to_string(), "witness".to_string())
        ]
    );
    assert!(r.connections.iter().all(|c| c.origin == Origin::Mesh));
    let w = c.node_view("r0", "witness").expect("witness view");
    assert!(w.diskless);
    assert_eq!(w.quorum.quorum, Quorum::Majority);
    assert_eq!(w.quorum.on_no_quorum, OnNoQuorum::IoError);
    assert_eq!(w.peers.len(), 2);
    // Two data nodes and a witness with quorum: runnable on every host.
    assert_eq!(w.not_runnable(), None);
    for node in ["alpha", "beta"] {
        let v = c.node_view("r0", node).expect("data node view");
        assert_eq!(v.not_runnable(), None, "{node}");
        assert_eq!(v.witness().map(|p| p.node.as_str()), Some("witness"));
    }
}
