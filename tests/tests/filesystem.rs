//! Goal: a real filesystem on rep's NBD export survives `down`/`up`/`primary`.
//! Method: nbdfuse + loop device + mkfs.ext4 + mount, write and fsync files, tear down in the
//! safe order, restart the resource, mount again, compare checksums and run fsck.

use std::process::Command;

use rep_tests::pair::lone_primary;
use rep_tests::{require_tool, run, run_ok, Cluster, ClusterOpts, FuseMount};

#[test]
fn ext4_over_nbd_survives_down_up() {
    require_tool("mkfs.ext4", "e2fsprogs");
    require_tool("fsck.ext4", "e2fsprogs");
    let c = Cluster::new(
        "ext4",
        ClusterOpts {
            disk_mib: 128,
            ..Default::default()
        },
    );
    let a = c.a();
    lone_primary(a);

    let mut m = FuseMount::attach(&c.dir, &a.nbd_socket());
    m.mkfs();
    m.mount();
    for i in 0..5 {
        run_ok(Command::new("sh").arg("-c").arg(format!(
            "head -c {} /dev/urandom > {}/f{i} && sync {}/f{i}",
            (i + 1) << 20,
            m.mnt.display(),
            m.mnt.display()
        )));
    }
    let sums = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && sha256sum f*", m.mnt.display())),
    );
    run_ok(&mut Command::new("sync"));
    m.detach();

    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
    a.ok(&["up", "r0"]);
    a.ok(&["primary", "r0"]);

    let mut m = FuseMount::attach(&c.dir, &a.nbd_socket());
    let fsck = run(Command::new("fsck.ext4")
        .args(["-n", "-f"])
        .arg(&m.loop_dev));
    assert!(
        fsck.status.success(),
        "fsck found problems: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    m.mount();
    let again = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && sha256sum f*", m.mnt.display())),
    );
    assert_eq!(sums, again, "files changed across down/up");
    m.detach();
    a.ok(&["secondary", "r0"]);
    a.ok(&["down", "r0"]);
}
