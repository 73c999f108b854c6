//! Goal: the systemd units in systemd/ are valid, `repadm` works with a repd started the way
//! `rep@.service` starts it (`repd --foreground --resource RES`, configuration from the
//! environment), the exit statuses are the ones the unit's restart policy relies on, a
//! restarted crashed Primary comes back Secondary, and scripts/install.sh puts every file in
//! place.
//!
//! Method: there is no systemd (PID 1) on the test machines, so the units are checked with
//! `systemd-analyze verify` (which needs none) and the test itself plays systemd: it starts
//! repd with the unit's command line and environment and watches its exit status.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rep_tests::{bin, require_tool, run, run_ok, wait_for, Cluster, ClusterOpts, Node};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    require_tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    // The units point at /usr/local/sbin; verify checks that ExecStart exists, so point them
    // at the binaries under test, as install.sh does for another prefix.
    let sbin = bin("repd")
        .parent()
        .expect("target dir")
        .display()
        .to_string();
    for u in ["rep@.service", "rep.target"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(u)).expect("read unit");
        assert!(
            u != "rep@.service"
                || text.contains("ExecStart=/usr/local/sbin/repd --foreground --resource %i")
        );
        let text = text.replace("/usr/local/sbin/", &format!("{sbin}/"));
        std::fs::write(dir.path().join(u), text).expect("write unit");
    }
    for unit in ["rep@r0.service", "rep.target"] {
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join(unit))
            .current_dir(dir.path()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "systemd-analyze verify {unit}: {}\n{err}",
            out.status
        );
    }
    // The check can fail: a unit with an unknown key or a missing binary is reported.
    let broken = std::fs::read_to_string(dir.path().join("rep@.service"))
        .expect("unit")
        .replace("--foreground", "--foreground\nNoSuchKey=1")
        .replace(&format!("{sbin}/repd"), "/nonexistent/repd");
    std::fs::write(dir.path().join("rep@.service"), broken).expect("write");
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("rep@r0.service"))
        .current_dir(dir.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NoSuchKey") && err.contains("/nonexistent/repd"),
        "{err}"
    );
}

/// repd as `rep@r0.service` runs it: foreground, configuration from the environment.
fn start_like_the_unit(n: &Node) -> Child {
    std::fs::create_dir_all(&n.run_dir).expect("run dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(n.run_dir.join("r0.log"))
        .expect("log");
    let child = Command::new(bin("repd"))
        .args(["--foreground", "--resource", &n.resource])
        .env("REP_CONFIG", &n.config)
        .env("REP_RUN_DIR", &n.run_dir)
        .env("REP_NODE", &n.name)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start repd");
    wait_for(Duration::from_secs(30), "repd's control socket", || {
        n.repadm(&["role", "r0"]).status.success().then_some(())
    });
    child
}

fn exit_of(child: &mut Child) -> ExitStatus {
    wait_for(Duration::from_secs(30), "repd to exit", || {
        child.try_wait().expect("wait for repd")
    })
}

#[test]
fn repadm_drives_a_repd_started_like_the_unit() {
    let c = Cluster::new(
        "systemd-fg",
        ClusterOpts {
            disk_mib: 16,
            extra: "  net {\n    connect-int 1;\n  }\n".into(),
            ..Default::default()
        },
    );
    let (a, b) = (c.a(), c.b());
    a.ok(&["create-md", "r0"]);
    b.ok(&["create-md", "r0"]);
    let mut repd = start_like_the_unit(a);
    b.ok(&["up", "r0"]);
    a.wait_state("Connected", "Inconsistent", "Inconsistent", 30);
    // `repadm up` sees the daemon and refuses a second one; repd itself refuses with 10,
    // which the unit's RestartPreventExitStatus keeps from being retried.
    let (code, err) = a.fails(&["up", "r0"]);
    assert_eq!(code, 10, "{err}");
    let second = run(Command::new(bin("repd"))
        .args(["--foreground", "--resource", "r0"])
        .env("REP_CONFIG", &a.config)
        .env("REP_RUN_DIR", &a.run_dir)
        .env("REP_NODE", &a.name));
    assert_eq!(
        second.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    a.ok(&["primary", "--force", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 60);
    a.ok(&["secondary", "r0"]);
    // ExecStop: `repadm down` ends repd with status 0 (no restart).
    a.ok(&["down", "r0"]);
    let st = exit_of(&mut repd);
    assert_eq!(st.code(), Some(0), "{st}");
    assert!(!a.run_dir.join("r0.ctl").exists(), "control socket removed");
    // SIGTERM (systemd's stop without ExecStop) is a clean down too: exit 0.
    let mut repd = start_like_the_unit(a);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    run_ok(Command::new("kill").args(["-TERM", &repd.id().to_string()]));
    let st = exit_of(&mut repd);
    assert_eq!(st.code(), Some(0), "{st}");
    // A crashed Primary (killed by a signal: Restart=on-failure restarts it) comes back
    // Secondary: a restart never promotes.
    let mut repd = start_like_the_unit(a);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
    a.ok(&["primary", "r0"]);
    run_ok(Command::new("kill").args(["-9", &repd.id().to_string()]));
    let st = exit_of(&mut repd);
    assert_eq!(st.code(), None, "killed by a signal: {st}");
    let mut repd = start_like_the_unit(a);
    assert_eq!(a.status_json()["role"], "Secondary");
    b.wait_state("Connected", "UpToDate", "UpToDate", 30);
    assert_eq!(b.status_json()["peer_role"], "Secondary");
    // And repadm's own up/down still work once the unit's daemon is gone.
    a.ok(&["down", "r0"]);
    assert_eq!(exit_of(&mut repd).code(), Some(0));
    a.ok(&["up", "r0"]);
    a.wait_state("Connected", "UpToDate", "UpToDate", 30);
}

#[test]
fn install_script_puts_every_file_in_place() {
    let dest = tempfile::tempdir().expect("tempdir");
    let bindir = bin("repadm").parent().expect("target dir").to_path_buf();
    // A Heartbeat node: repdisk goes next to drbddisk (only where the directory exists).
    std::fs::create_dir_all(dest.path().join("etc/ha.d/resource.d")).expect("ha.d");
    let out = run_ok(
        Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .arg("--destdir")
            .arg(dest.path())
            .arg("--prefix")
            .arg("/opt/rep")
            .arg("--bin-dir")
            .arg(&bindir),
    );
    assert!(out.contains("installed rep"), "{out}");
    let d = dest.path();
    for f in [
        "opt/rep/sbin/repd",
        "opt/rep/sbin/repadm",
        "etc/systemd/system/rep@.service",
        "etc/systemd/system/rep.target",
        "etc/rep/rep.conf",
        "usr/share/bash-completion/completions/repadm",
        "usr/share/zsh/vendor-completions/_repadm",
        "usr/share/fish/vendor_completions.d/repadm.fish",
        "opt/rep/share/man/man8/repadm.8",
        "opt/rep/share/man/man8/repadm-adjust.8",
        "opt/rep/share/man/man8/repadm-wait-sync.8",
    ] {
        let p = d.join(f);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} missing or empty", p.display());
    }
    let unit = std::fs::read_to_string(d.join("etc/systemd/system/rep@.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/opt/rep/sbin/repd --foreground --resource %i"),
        "{unit}"
    );
    assert!(
        unit.contains("ExecStop=-/opt/rep/sbin/repadm down %i"),
        "{unit}"
    );
    if repo().join("ha").is_dir() {
        assert!(d.join("opt/rep/share/rep/ha").is_dir(), "ha/ copied");
    }
    let repdisk = d.join("etc/ha.d/resource.d/repdisk");
    let mode = std::fs::metadata(&repdisk)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap_or(0);
    assert_eq!(
        mode & 0o111,
        0o111,
        "{} missing or not executable",
        repdisk.display()
    );
    // The installed repadm runs.
    run_ok(Command::new(d.join("opt/rep/sbin/repadm")).arg("--version"));
}
