//! Goal: with `nbd-tls`, the NBD TCP export serves only clients that start TLS and show a
//! certificate from `nbd-tls-ca`, and NBD clients we did not write (libnbd's nbdinfo, nbdcopy
//! and nbdfuse; qemu) work over it; the Unix socket stays plaintext. Key files others can read
//! stop repd from starting.
//!
//! Method: certificates made with openssl at test time (tests/src/pki.rs); a lone Primary
//! node-a exporting over TCP on 127.0.0.1; the real clients, plus raw NBD options to see what
//! a client learns before TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rep_tests::pair::lone_primary;
use rep_tests::pki::{client_dir, Ca, Leaf};
use rep_tests::{
    backing_bytes, free_port, require_tool, run, run_ok, Cluster, ClusterOpts, FuseMount, Node,
};

struct TlsExport {
    c: Cluster,
    port: u16,
    ca: Ca,
    client: Leaf,
    server: Leaf,
}

impl TlsExport {
    fn a(&self) -> &Node {
        self.c.a()
    }

    fn uri(&self, creds: &Path) -> String {
        format!(
            "nbds://127.0.0.1:{}/r0?tls-certificates={}",
            self.port,
            creds.display()
        )
    }

    fn good_creds(&self) -> PathBuf {
        client_dir(&self.c.dir, "good", &self.ca, Some(&self.client))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.a().run_dir.join("r0.log")).unwrap_or_default()
    }
}

/// Adds `lines` to the `on NODE` section of the cluster's configuration.
fn add_to_on(c: &Cluster, node: &str, lines: &str) {
    let path = &c.a().config;
    let text = std::fs::read_to_string(path).expect("read config");
    let marker = format!("  on {node} {{\n");
    assert!(text.contains(&marker), "config has {marker:?}");
    let text = text.replacen(&marker, &format!("{marker}{lines}\n"), 1);
    std::fs::write(path, text).expect("write config");
}

/// node-a alone, Primary, exporting over TCP with `nbd-tls MODE` (not yet up if `start` is
/// false).
fn tls_export(test: &str, mode: &str, start: bool) -> TlsExport {
    require_tool("nbdinfo", "libnbd-bin");
    let c = Cluster::new(
        test,
        ClusterOpts {
            disk_mib: 64,
            ..Default::default()
        },
    );
    let ca = Ca::new(&c.dir, "ca");
    let server = ca.issue("server", &["IP:127.0.0.1", "DNS:localhost"]);
    let client = ca.issue("client", &["DNS:client"]);
    let port = free_port();
    add_to_on(
        &c,
        "node-a",
        &format!(
            "    nbd-listen 127.0.0.1:{port};\n    nbd-tls {mode};\n    nbd-tls-certificate {};\n    nbd-tls-privkey {};\n    nbd-tls-ca {};",
            server.cert.display(),
            server.key.display(),
            ca.cert.display()
        ),
    );
    let t = TlsExport {
        c,
        port,
        ca,
        client,
        server,
    };
    if start {
        let a = t.a();
        lone_primary(a);
    }
    t
}

fn nbdinfo_size(uri: &str) -> std::process::Output {
    run(Command::new("nbdinfo").args(["--size", uri]))
}

fn assert_refused(out: &std::process::Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what}: the client got in (stdout {})",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// Raw fixed-newstyle: greeting, flags, then options; returns (reply type, payload).
fn raw_option(s: &mut TcpStream, option: u32, data: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    let mut h = Vec::new();
    h.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
    h.extend_from_slice(&option.to_be_bytes());
    h.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    h.extend_from_slice(data);
    s.write_all(&h)?;
    let mut r = [0u8; 20];
    s.read_exact(&mut r)?;
    let kind = u32::from_be_bytes([r[12], r[13], r[14], r[15]]);
    let len = u32::from_be_bytes([r[16], r[17], r[18], r[19]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok((kind, payload))
}

fn raw_connect(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).expect("greeting");
    s.write_all(&3u32.to_be_bytes()).expect("client flags");
    s
}

const NBD_OPT_EXPORT_NAME: u32 = 1;
const NBD_OPT_LIST: u32 = 3;
const NBD_OPT_INFO: u32 = 6;
const NBD_OPT_GO: u32 = 7;
const NBD_REP_ERR_TLS_REQD: u32 = 0x8000_0005;

#[test]
fn nbd_tls_require_serves_real_clients_and_refuses_the_rest() {
    require_tool("nbdcopy", "libnbd-bin");
    require_tool("qemu-io", "qemu-utils");
    let t = tls_export("tls-require", "require", true);
    let a = t.a();
    let good = t.good_creds();
    let uri = t.uri(&good);
    let size = a.status_json()["size_bytes"].as_u64().expect("size");

    // nbdinfo over TLS sees the export.
    let out = run_ok(Command::new("nbdinfo").args(["--size", &uri]));
    assert_eq!(out.trim(), size.to_string(), "nbdinfo over TLS");

    // nbdcopy writes 4 MiB over TLS and reads the export back.
    let src = t.c.dir.join("src.img");
    let pattern: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &pattern).expect("write src");
    run_ok(Command::new("nbdcopy").arg(&src).arg(&uri));
    let back = t.c.dir.join("back.img");
    run_ok(Command::new("nbdcopy").arg(&uri).arg(&back));
    let got = std::fs::read(&back).expect("read back");
    assert_eq!(got.len() as u64, size);
    assert!(
        got[..pattern.len()] == pattern[..],
        "nbdcopy read back what it wrote"
    );
    assert!(
        backing_bytes(a, 0, 4 << 20) == pattern,
        "the bytes reached the backing disk"
    );

    // qemu with a tls-creds-x509 object.
    let q = run_ok(Command::new("qemu-io").args([
        "--object",
        &format!(
            "tls-creds-x509,id=tls0,dir={},endpoint=client",
            good.display()
        ),
        "--image-opts",
        &format!(
            "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export=r0,tls-creds=tls0",
            t.port
        ),
        "-c",
        "write -P 0x5a 8M 64k",
        "-c",
        "read -P 0x5a 8M 64k",
    ]));
    assert!(
        q.contains("wrote 65536/65536") && q.contains("read 65536/65536") && !q.contains("fail"),
        "qemu-io over TLS: {q}"
    );
    assert_eq!(backing_bytes(a, 8 << 20, 65536), vec![0x5a; 65536]);

    let before = backing_bytes(a, 0, 16 << 20);

    // A plaintext client is refused with the reason.
    let out = nbdinfo_size(&format!("nbd://127.0.0.1:{}/r0", t.port));
    let err = assert_refused(&out, "plaintext client against nbd-tls require");
    assert!(err.contains("TLS"), "the refusal names TLS: {err}");

    // A client without a certificate.
    let nocert = client_dir(&t.c.dir, "nocert", &t.ca, None);
    assert_refused(
        &nbdinfo_size(&t.uri(&nocert)),
        "client without a certificate",
    );

    // A client whose certificate comes from another CA.
    let other = Ca::new(&t.c.dir, "other-ca");
    let rogue = other.issue("rogue", &["DNS:rogue"]);
    let rogue_dir = client_dir(&t.c.dir, "rogue", &t.ca, Some(&rogue));
    assert_refused(
        &nbdinfo_size(&t.uri(&rogue_dir)),
        "client with another CA's certificate",
    );

    // Before TLS, a raw client learns nothing: LIST, INFO and GO get TLS_REQD without the
    // export's name; EXPORT_NAME (which cannot carry an error) closes the connection.
    let mut s = raw_connect(t.port);
    for (opt, data) in [
        (NBD_OPT_LIST, Vec::new()),
        (
            NBD_OPT_INFO,
            [&2u32.to_be_bytes()[..], b"r0", &[0, 0]].concat(),
        ),
        (
            NBD_OPT_GO,
            [&2u32.to_be_bytes()[..], b"r0", &[0, 0]].concat(),
        ),
    ] {
        let (kind, payload) = raw_option(&mut s, opt, &data).expect("option reply");
        assert_eq!(kind, NBD_REP_ERR_TLS_REQD, "option {opt} before TLS");
        let text = String::from_utf8_lossy(&payload);
        assert!(
            text.contains("requires TLS") && !text.contains("r0"),
            "{text}"
        );
    }
    let mut name = Vec::new();
    name.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
    name.extend_from_slice(&NBD_OPT_EXPORT_NAME.to_be_bytes());
    name.extend_from_slice(&2u32.to_be_bytes());
    name.extend_from_slice(b"r0");
    s.write_all(&name).expect("export name");
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "EXPORT_NAME before TLS gets no export, only a close");

    let log = t.log();
    assert!(
        log.contains("TLS handshake failed"),
        "repd logs the failed handshakes: {log}"
    );
    assert!(
        log.contains("requires"),
        "repd logs the refused EXPORT_NAME: {log}"
    );

    // Nothing reached the disk, repd still serves TLS clients, the Unix socket stays plaintext.
    assert!(
        backing_bytes(a, 0, 16 << 20) == before,
        "refused clients wrote nothing"
    );
    let out = run_ok(Command::new("nbdinfo").args(["--size", &uri]));
    assert_eq!(out.trim(), size.to_string());
    let out = run_ok(Command::new("nbdinfo").args(["--size", &a.nbd_uri()]));
    assert_eq!(out.trim(), size.to_string(), "the Unix socket is plaintext");
    let _ = &t.server;
}

#[test]
fn nbd_tls_on_serves_plaintext_and_tls() {
    let t = tls_export("tls-on", "on", true);
    let size = t.a().status_json()["size_bytes"].as_u64().expect("size");
    let out = run_ok(Command::new("nbdinfo").args(["--size", &t.uri(&t.good_creds())]));
    assert_eq!(out.trim(), size.to_string(), "TLS client");
    let plain = format!("nbd://127.0.0.1:{}/r0", t.port);
    let out = run_ok(Command::new("nbdinfo").args(["--size", &plain]));
    assert_eq!(out.trim(), size.to_string(), "plaintext client");
    // Starting TLS still means showing a certificate from the CA.
    let other = Ca::new(&t.c.dir, "other-ca");
    let rogue = other.issue("rogue", &["DNS:rogue"]);
    let rogue_dir = client_dir(&t.c.dir, "rogue", &t.ca, Some(&rogue));
    assert_refused(
        &nbdinfo_size(&t.uri(&rogue_dir)),
        "another CA's certificate",
    );
}

/// /etc/pki/libnbd for the duration of a test; refuses to touch one that already exists.
struct SystemLibnbdPki(PathBuf);

impl SystemLibnbdPki {
    fn install(creds: &Path) -> SystemLibnbdPki {
        let dir = PathBuf::from("/etc/pki/libnbd");
        std::fs::create_dir_all("/etc/pki").expect("mkdir /etc/pki");
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; this test will not overwrite existing credentials",
                dir.display()
            )
        });
        let guard = SystemLibnbdPki(dir);
        for f in ["ca-cert.pem", "client-cert.pem", "client-key.pem"] {
            std::fs::copy(creds.join(f), guard.0.join(f)).expect("copy credentials");
        }
        guard
    }
}

impl Drop for SystemLibnbdPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn nbd_tls_nbdfuse_mounts_ext4() {
    require_tool("e2fsck", "e2fsprogs");
    let t = tls_export("tls-fuse", "require", true);
    // nbdfuse takes no tls-certificates= in a URI, and libnbd run by root reads its default
    // credentials from /etc/pki/libnbd: put them there for this test only.
    let _pki = SystemLibnbdPki::install(&t.good_creds());
    let uri = format!("nbds://127.0.0.1:{}/r0", t.port);
    let mut m = FuseMount::attach_uri(&t.c.dir, &uri, None);
    m.mkfs();
    m.mount();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(m.mnt.join("file"), &data).expect("write into ext4");
    run_ok(&mut Command::new("sync"));
    m.umount_fs();
    m.mount();
    assert!(std::fs::read(m.mnt.join("file")).expect("read back") == data);
    m.umount_fs();
    run_ok(Command::new("e2fsck").args(["-fn", &m.loop_dev]));
    m.detach();
}

#[test]
fn nbd_tls_refuses_keys_others_can_read() {
    let t = tls_export("tls-modes", "require", false);
    let a = t.a();
    a.ok(&["create-md", "r0"]);
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    set(&t.server.key, 0o640);
    let (_, err) = a.fails(&["up", "r0"]);
    assert!(
        err.contains("nbd-tls-privkey") && err.contains("0640") && err.contains("refusing"),
        "a group-readable key stops repd, naming the option: {err}"
    );
    set(&t.server.key, 0o600);
    set(&t.ca.cert, 0o666);
    let (_, err) = a.fails(&["up", "r0"]);
    assert!(
        err.contains("nbd-tls-ca") && err.contains("0666"),
        "a world-writable CA file stops repd: {err}"
    );
    set(&t.ca.cert, 0o644);
    a.ok(&["up", "r0"]);
}
