//! TLS configuration (docs/security.md): PEM files checked and loaded at start, rustls with the
//! ring provider. The NBD TCP export (`nbd-tls`) and the peer link (`net { tls yes; }`) both
//! authenticate the other side by certificate against a configured CA; nobody without a
//! certificate from that CA gets a byte of the disk.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rep_nbd::server::TlsPolicy;
use rep_resources::security::NbdTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// ring, not aws-lc-rs (which needs cmake and a long C build). rustls deprecates ring's
/// provider only because it lacks post-quantum key exchange (docs/security.md says so).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Private keys must be readable by their owner only, as ssh demands of its keys: a key that
/// others on the machine can read is no longer a secret, and starting with it would hide that.
pub fn check_private_key_mode(path: &Path, option: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {option} {}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{option} {} has mode {mode:04o}: a private key must not be accessible by group or others \
             (chmod 600 {}); refusing to start",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Certificates and CA bundles are public, but whoever can rewrite the CA file decides whom
/// rep trusts: they must not be writable by group or others.
pub fn check_public_mode(path: &Path, option: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {option} {}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        bail!(
            "{option} {} has mode {mode:04o}: a certificate or CA file must not be writable by group \
             or others (chmod 644 {}); refusing to start",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn load_certs(path: &Path, option: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    check_public_mode(path, option)?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{option} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{option} {}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

fn load_key(path: &Path, option: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    check_private_key_mode(path, option)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        anyhow::anyhow!(
            "{option} {}: no usable PEM private key: {e}",
            path.display()
        )
    })
}

fn load_roots(path: &Path, option: &str) -> anyhow::Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path, option)? {
        roots
            .add(c)
            .with_context(|| format!("{option} {}: not a usable CA certificate", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// A server that demands a client certificate from `ca`. No resumption: every connection
/// proves its certificate again (and no ticket key lives in memory).
fn server_config(
    cert: (&Path, &str),
    key: (&Path, &str),
    ca: (&Path, &str),
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let roots = load_roots(ca.0, ca.1)?;
    let certs = load_certs(cert.0, cert.1)?;
    let key_name = key.1;
    let key = load_key(key.0, key.1)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .context("cannot build the client certificate verifier")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{} and {} are not a pair (or the key type is unsupported)",
                cert.1, key_name
            )
        })?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The NBD TCP export's TLS, from `nbd-tls*` in this node's `on` section.
pub fn nbd_policy(view: &rep_resources::NodeView) -> anyhow::Result<TlsPolicy> {
    let s = &view.security;
    if s.nbd_tls == NbdTls::Off {
        return Ok(TlsPolicy::Off);
    }
    let (Some(cert), Some(key), Some(ca)) =
        (&s.nbd_tls_certificate, &s.nbd_tls_privkey, &s.nbd_tls_ca)
    else {
        bail!("nbd-tls needs nbd-tls-certificate, nbd-tls-privkey and nbd-tls-ca");
    };
    if view.nbd_listen.is_none() {
        tracing::warn!("nbd-tls is set but there is no nbd-listen: the Unix socket is plaintext, TLS is unused");
    }
    let cfg = server_config(
        (cert, "nbd-tls-certificate"),
        (key, "nbd-tls-privkey"),
        (ca, "nbd-tls-ca"),
    )?;
    Ok(match s.nbd_tls {
        NbdTls::Require => TlsPolicy::Required(cfg),
        _ => TlsPolicy::Optional(cfg),
    })
}

/// Both ends of the peer link's TLS: we accept as a server and dial as a client, and each side
/// demands the other's certificate from `tls-ca`, issued for the other node's name.
pub struct LinkTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// The peer's node name (its `on` section), which its certificate must carry.
    pub peer: ServerName<'static>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkTls(peer {:?})", self.peer)
    }
}

pub fn link_tls(view: &rep_resources::NodeView) -> anyhow::Result<Option<Arc<LinkTls>>> {
    let Some(t) = &view.security.link_tls else {
        return Ok(None);
    };
    let Some(peer) = &view.peer_node else {
        return Ok(None);
    };
    let peer = ServerName::try_from(peer.clone()).with_context(|| {
        format!("net {{ tls yes; }}: the peer's name {peer:?} cannot be a certificate name")
    })?;
    let server = server_config(
        (&t.certificate, "tls-certificate"),
        (&t.privkey, "tls-privkey"),
        (&t.ca, "tls-ca"),
    )?;
    let roots = load_roots(&t.ca, "tls-ca")?;
    let certs = load_certs(&t.certificate, "tls-certificate")?;
    let key = load_key(&t.privkey, "tls-privkey")?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .context("tls-certificate and tls-privkey are not a pair")?;
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Some(Arc::new(LinkTls {
        server,
        client: Arc::new(client),
        peer,
    })))
}
