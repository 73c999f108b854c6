//! The drbdadm conformance corpus: every valid file parses and its dump, read back by drbdadm
//! (when installed), gives drbdadm's own dump; every invalid file is rejected naming FILE:LINE.

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/res-corpus")
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
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

fn drbdadm_dump(text: &str) -> Option<String> {
    let which = Command::new("sh")
        .arg("-c")
        .arg("command -v drbdadm")
        .output()
        .ok()?;
    if !which.status.success() {
        return None;
    }
    let tmp = std::env::temp_dir().join(format!("rep-corpus-{}.res", std::process::id()));
    std::fs::write(&tmp, text).ok()?;
    let out = Command::new("drbdadm")
        .env("DRBD_DRIVER_VERSION_OVERRIDE", "8.4.11")
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
