//! bench/floor's two bare daemons (the cost floor bench/floor.sh measures rep against) must
//! replicate what they acknowledge, or the floor they report is not a floor of replication:
//! after fio's 4 KiB random writes (QD32) and 1 MiB sequential writes (QD8), with a read-back
//! verify, both files are identical, under protocol C and A, with `--splice`, and with the
//! acknowledgements on a second connection (`--meta`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rep_tests::{bin, free_port, require_tool, wait_for};

struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn fio(uri: &str, args: &[&str]) {
    let out = Command::new("fio")
        .args([
            "--name=floor",
            "--ioengine=nbd",
            "--size=48M",
            "--output-format=terse",
            // No verify state file left in the working directory.
            "--verify_state_save=0",
        ])
        .arg(format!("--uri={uri}"))
        .args(args)
        .output()
        .expect("run fio");
    assert!(
        out.status.success(),
        "fio {args:?} against rep-floor failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn replicates(protocol: &str, mode: &[&str]) {
    require_tool("fio", "fio");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, sock) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("nbd"),
    );
    for f in [&a, &b] {
        std::fs::write(f, vec![0u8; 64 << 20]).expect("backing file");
    }
    let peer = format!("127.0.0.2:{}", free_port());
    let floor = bin("rep-floor");
    let mut daemons = Daemons(Vec::new());
    let spawn = |args: &[&str]| {
        Command::new(&floor)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("start rep-floor")
    };
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let (pa, pb, ps) = (path(&a), path(&b), path(&sock));
    let secondary = [
        "secondary",
        "--file",
        &pb,
        "--listen",
        &peer,
        "--protocol",
        protocol,
    ];
    daemons.0.push(spawn(&[&secondary[..], mode].concat()));
    let primary = [
        "primary",
        "--file",
        &pa,
        "--nbd",
        &ps,
        "--protocol",
        protocol,
        "--peer",
        &peer,
        "--bind",
        "127.0.0.1:0",
    ];
    daemons.0.push(spawn(&[&primary[..], mode].concat()));
    wait_for(Duration::from_secs(15), "rep-floor's NBD socket", || {
        sock.exists().then_some(())
    });
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    fio(
        &uri,
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--verify=crc32c",
            "--verify_fatal=1",
        ],
    );
    fio(
        &uri,
        &[
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            "--offset=8M",
            "--verify=crc32c",
            "--verify_fatal=1",
        ],
    );
    // Protocol A answers before the Secondary has the write: the Primary goes first, and the
    // Secondary, which ends at the end of its stream, writes everything still in flight.
    let _ = daemons.0[1].kill();
    let secondary = &mut daemons.0[0];
    wait_for(
        Duration::from_secs(15),
        "the Secondary to drain the link",
        || secondary.try_wait().ok().flatten().map(|_| ()),
    );
    drop(daemons);
    let (da, db) = (
        std::fs::read(&a).expect("read a"),
        std::fs::read(&b).expect("read b"),
    );
    assert!(
        da.iter().any(|&x| x != 0),
        "fio wrote nothing to the Primary's file"
    );
    if let Some(at) = da.iter().zip(&db).position(|(x, y)| x != y) {
        panic!("protocol {protocol}: the Secondary's file differs from the Primary's at byte {at}");
    }
}

#[test]
fn floor_protocol_c_replicates_every_acknowledged_write() {
    replicates("c", &[]);
}

#[test]
fn floor_protocol_a_replicates_every_write() {
    replicates("a", &[]);
}

#[test]
fn floor_with_splice_replicates_every_acknowledged_write() {
    replicates("c", &["--splice"]);
}

#[test]
fn floor_with_a_meta_socket_replicates_every_acknowledged_write() {
    replicates("c", &["--meta"]);
}
