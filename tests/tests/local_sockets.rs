//! Goal: the control socket is root's alone, the NBD Unix socket root's and one configured
//! group's (`control-socket-group`, `nbd-socket-group`), whatever the umask: another user on
//! the machine cannot connect to either.
//!
//! Method: a lone node with `nbd-socket-group`, two unprivileged users made for the test (one
//! in that group), nbdinfo and a raw connect run as them with setpriv.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use rep_tests::{require_root, require_tool, run, run_ok, Cluster, ClusterOpts};

const GROUP: &str = "rep-test-nbd";
const MEMBER: &str = "rep-test-in";
const OUTSIDER: &str = "rep-test-out";

fn ensure_accounts() {
    require_tool("useradd", "passwd");
    if run(Command::new("getent").args(["group", GROUP]))
        .status
        .success()
    {
    } else {
        run_ok(Command::new("groupadd").args(["-r", GROUP]));
    }
    for (user, groups) in [(MEMBER, Some(GROUP)), (OUTSIDER, None)] {
        if !run(Command::new("id").arg(user)).status.success() {
            let mut c = Command::new("useradd");
            c.args(["-r", "-M", "-s", "/usr/sbin/nologin"]);
            if let Some(g) = groups {
                c.args(["-G", g]);
            }
            run_ok(c.arg(user));
        }
    }
}

/// `cmd` run as `user` with their groups; returns (success, stderr).
fn as_user(user: &str, cmd: &[&str]) -> (bool, String) {
    let out = run(Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args(cmd));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn connect_script(path: &std::path::Path) -> String {
    format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); print('connected')",
        path.display().to_string()
    )
}

#[test]
fn local_sockets_admit_root_and_the_configured_group_only() {
    require_root("creates users and runs commands as them");
    require_tool("setpriv", "util-linux");
    require_tool("nbdinfo", "libnbd-bin");
    ensure_accounts();
    let c = Cluster::new("local-sockets", ClusterOpts::default());
    let path = &c.a().config;
    let text = std::fs::read_to_string(path).expect("config");
    let text = text.replacen(
        "  on node-a {\n",
        &format!("  on node-a {{\n    nbd-socket-group {GROUP};\n"),
        1,
    );
    std::fs::write(path, text).expect("config");
    // The test directory must let the users reach the run dir (the dir is 0755 by design).
    std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let a = c.a();
    a.ok(&["create-md", "r0"]);
    // A permissive umask must not loosen anything.
    let out = run(Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(rep_tests::bin("repadm"))
        .args(["up", "r0"])
        .env("REP_CONFIG", &a.config)
        .env("REP_NODE", &a.name)
        .env("REP_RUN_DIR", &a.run_dir)
        .env("REP_REPD", rep_tests::bin("repd")));
    assert!(
        out.status.success(),
        "up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.ok(&["primary", "--force", "r0"]);

    let ctl = a.run_dir.join("r0.ctl");
    let nbd = a.nbd_socket();
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").mode() & 0o7777;
    assert_eq!(mode(&a.run_dir), 0o755, "run dir");
    assert_eq!(mode(&ctl), 0o600, "control socket: root only");
    assert_eq!(mode(&nbd), 0o660, "NBD socket: root and {GROUP}");
    let gid = run_ok(Command::new("getent").args(["group", GROUP]));
    let gid: u32 = gid
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("gid");
    assert_eq!(std::fs::metadata(&nbd).expect("stat").gid(), gid);

    let uri = a.nbd_uri();
    let (ok, err) = as_user(OUTSIDER, &["nbdinfo", "--size", &uri]);
    assert!(!ok, "a user outside {GROUP} reached the NBD socket");
    assert!(err.contains("ermission denied"), "{err}");
    let (ok, err) = as_user(MEMBER, &["nbdinfo", "--size", &uri]);
    assert!(ok, "a member of {GROUP} uses the NBD socket: {err}");
    for user in [MEMBER, OUTSIDER] {
        let (ok, err) = as_user(user, &["python3", "-c", &connect_script(&ctl)]);
        assert!(!ok, "{user} reached the control socket");
        assert!(err.contains("ermission denied"), "{err}");
    }
    // Root still can.
    run_ok(Command::new("nbdinfo").args(["--size", &uri]));
    a.ok(&["status", "r0"]);
}
