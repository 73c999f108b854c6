//! Test certificates, made with `openssl` at test time: a CA, leaf certificates signed by it
//! (P-256 keys, mode 0600), and client directories laid out as libnbd's
//! `tls-certificates=DIR` and qemu's `tls-creds-x509,dir=DIR` expect them (ca-cert.pem,
//! client-cert.pem, client-key.pem).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{require_tool, run_ok};

pub struct Ca {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn new_key(path: &Path) {
    run_ok(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(path),
    );
    chmod(path, 0o600);
}

impl Ca {
    /// A fresh CA named `name` in `dir/name/`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        require_tool("openssl", "openssl");
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir ca");
        let key = dir.join("ca-key.pem");
        let cert = dir.join("ca-cert.pem");
        new_key(&key);
        run_ok(
            Command::new("openssl")
                .args(["req", "-x509", "-new", "-days", "2", "-subj"])
                .arg(format!("/CN={name}"))
                .args([
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-key",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        chmod(&cert, 0o644);
        Ca { dir, cert, key }
    }

    /// A certificate for `cn` with subjectAltNames `sans` (e.g. `IP:127.0.0.1`,
    /// `DNS:node-a`), good for both TLS server and client use.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> Leaf {
        let key = self.dir.join(format!("{cn}-key.pem"));
        let cert = self.dir.join(format!("{cn}-cert.pem"));
        let csr = self.dir.join(format!("{cn}.csr"));
        let ext = self.dir.join(format!("{cn}.ext"));
        new_key(&key);
        run_ok(
            Command::new("openssl")
                .args(["req", "-new", "-subj"])
                .arg(format!("/CN={cn}"))
                .arg("-key")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        );
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={}\n",
                sans.join(",")
            ),
        )
        .expect("write ext");
        run_ok(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
        );
        chmod(&cert, 0o644);
        Leaf { cert, key }
    }
}

/// A client credentials directory: `ca` to check the server, `client` (if any) to show.
pub fn client_dir(dir: &Path, name: &str, ca: &Ca, client: Option<&Leaf>) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir client dir");
    std::fs::copy(&ca.cert, d.join("ca-cert.pem")).expect("copy ca");
    if let Some(c) = client {
        std::fs::copy(&c.cert, d.join("client-cert.pem")).expect("copy cert");
        std::fs::copy(&c.key, d.join("client-key.pem")).expect("copy key");
        chmod(&d.join("client-key.pem"), 0o600);
    }
    d
}
