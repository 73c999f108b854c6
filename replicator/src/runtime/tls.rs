//! TLS configuration (docs/security.md): PEM files checked and loaded at start, rustls with the
//! ring provider. The NBD TCP export (`nbd-tls`) and the peer link (`net { tls yes; }`) both
//! authenticate the other side by certificate against a configured CA; nobody without a
//! certificate from that CA gets a byte of the disk.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rep_nbd::server::stream::{PolledTcp, Stream};
use rep_nbd::server::tls::TlsStream;
use rep_nbd::server::TlsPolicy;
use rep_resources::security::NbdTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// ring, not aws-lc-rs (which needs cmake and a long C build). rustls deprecates ring's
/// provider only because it lacks post-quantum key exchange (docs/security.md says so).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS setting cannot be used; found at start, before anything listens. Each names the
/// option, its file and the fix; the cause, where there is one, follows as the source.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The file cannot be looked at (missing, no permission).
    #[error("cannot read {option} {}", path.display())]
    Unreadable {
        option: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A private key others on the machine may read.
    #[error(
        "{option} {} has mode {mode:04o}: a private key must not be accessible by group or others \
         (chmod 600 {}); refusing to start",
        path.display(),
        path.display()
    )]
    KeyMode {
        option: &'static str,
        path: PathBuf,
        mode: u32,
    },
    /// A certificate or CA file others may rewrite.
    #[error(
        "{option} {} has mode {mode:04o}: a certificate or CA file must not be writable by group \
         or others (chmod 644 {}); refusing to start",
        path.display(),
        path.display()
    )]
    PublicMode {
        option: &'static str,
        path: PathBuf,
        mode: u32,
    },
    /// The file is not PEM, or a PEM section in it is damaged.
    #[error("{option} {}", path.display())]
    Pem {
        option: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{option} {}: no PEM certificate in it", path.display())]
    NoCertificate { option: &'static str, path: PathBuf },
    #[error("{option} {}: no usable PEM private key", path.display())]
    NoKey {
        option: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{option} {}: not a usable CA certificate", path.display())]
    BadCa {
        option: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("TLS protocol versions")]
    Versions(#[source] rustls::Error),
    /// The certificate and the key do not belong together (or the key type is unsupported).
    #[error("{cert} and {key} are not a pair (or the key type is unsupported)")]
    NotAPair {
        cert: &'static str,
        key: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("nbd-tls needs nbd-tls-certificate, nbd-tls-privkey and nbd-tls-ca")]
    NbdTlsIncomplete,
    #[error("net {{ tls yes; }}: the peer's name {peer:?} cannot be a certificate name")]
    PeerName {
        peer: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

fn unreadable(option: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TlsConfigError {
    let path = path.to_path_buf();
    move |source| TlsConfigError::Unreadable {
        option,
        path,
        source,
    }
}

/// Private keys must be readable by their owner only, as ssh demands of its keys: a key that
/// others on the machine can read is no longer a secret, and starting with it would hide that.
pub fn check_private_key_mode(path: &Path, option: &'static str) -> Result<(), TlsConfigError> {
    let meta = std::fs::metadata(path).map_err(unreadable(option, path))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsConfigError::KeyMode {
            option,
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Certificates and CA bundles are public, but whoever can rewrite the CA file decides whom
/// rep trusts: they must not be writable by group or others.
pub fn check_public_mode(path: &Path, option: &'static str) -> Result<(), TlsConfigError> {
    let meta = std::fs::metadata(path).map_err(unreadable(option, path))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(TlsConfigError::PublicMode {
            option,
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn load_certs(
    path: &Path,
    option: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    check_public_mode(path, option)?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Pem {
            option,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            option,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path, option: &'static str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    check_private_key_mode(path, option)?;
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsConfigError::NoKey {
        option,
        path: path.to_path_buf(),
        source,
    })
}

fn load_roots(
    path: &Path,
    option: &'static str,
) -> Result<Arc<rustls::RootCertStore>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path, option)? {
        roots.add(c).map_err(|source| TlsConfigError::BadCa {
            option,
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// A server that demands a client certificate from `ca`. No resumption: every connection
/// proves its certificate again (and no ticket key lives in memory).
fn server_config(
    cert: (&Path, &'static str),
    key: (&Path, &'static str),
    ca: (&Path, &'static str),
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = provider();
    let roots = load_roots(ca.0, ca.1)?;
    let certs = load_certs(cert.0, cert.1)?;
    let key_name = key.1;
    let key = load_key(key.0, key.1)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(TlsConfigError::Verifier)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|source| TlsConfigError::NotAPair {
            cert: cert.1,
            key: key_name,
            source,
        })?;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The NBD TCP export's TLS, from `nbd-tls*` in this node's `on` section.
pub fn nbd_policy(view: &rep_resources::NodeView) -> Result<TlsPolicy, TlsConfigError> {
    let s = &view.security;
    if s.nbd_tls == NbdTls::Off {
        return Ok(TlsPolicy::Off);
    }
    let (Some(cert), Some(key), Some(ca)) =
        (&s.nbd_tls_certificate, &s.nbd_tls_privkey, &s.nbd_tls_ca)
    else {
        return Err(TlsConfigError::NbdTlsIncomplete);
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

pub fn link_tls(view: &rep_resources::NodeView) -> Result<Option<Arc<LinkTls>>, TlsConfigError> {
    let Some(t) = &view.security.link_tls else {
        return Ok(None);
    };
    let Some(peer) = &view.peer_node else {
        return Ok(None);
    };
    let peer = ServerName::try_from(peer.clone()).map_err(|source| TlsConfigError::PeerName {
        peer: peer.clone(),
        source,
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
        .map_err(TlsConfigError::Versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|source| TlsConfigError::NotAPair {
            cert: "tls-certificate",
            key: "tls-privkey",
            source,
        })?;
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Some(Arc::new(LinkTls {
        server,
        client: Arc::new(client),
        peer,
    })))
}

static LINK_TLS: std::sync::OnceLock<Option<Arc<LinkTls>>> = std::sync::OnceLock::new();

/// Set once at start: the peer link's TLS for this process (one resource per repd).
pub fn install_link_tls(t: Option<Arc<LinkTls>>) {
    let _ = LINK_TLS.set(t);
}

fn link_config() -> Option<Arc<LinkTls>> {
    LINK_TLS.get().cloned().flatten()
}

/// A peer socket: plain TCP, or TLS over it when `net { tls yes; }`.
pub enum PeerStream {
    /// Through io_uring: while the link is being set up (Hello, outdate requests).
    Plain(TcpStream),
    /// The same socket once the link is up, driven by readiness (`link::repoll`).
    Polled(PolledTcp),
    Tls(TlsStream<TcpStream>),
}

impl Stream for PeerStream {
    async fn read_into(
        &self,
        buf: tokio_uring::buf::Slice<Vec<u8>>,
    ) -> (io::Result<usize>, Vec<u8>) {
        match self {
            PeerStream::Plain(s) => s.read_into(buf).await,
            PeerStream::Polled(s) => s.read_into(buf).await,
            PeerStream::Tls(s) => s.read_into(buf).await,
        }
    }
    async fn write_vec(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            PeerStream::Plain(s) => s.write_vec(buf).await,
            PeerStream::Polled(s) => s.write_vec(buf).await,
            PeerStream::Tls(s) => s.write_vec(buf).await,
        }
    }
    async fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        match self {
            PeerStream::Plain(s) => s.write_parts(parts).await,
            PeerStream::Polled(s) => s.write_parts(parts).await,
            PeerStream::Tls(s) => s.write_parts(parts).await,
        }
    }
    fn close(&self) {
        match self {
            PeerStream::Plain(s) => s.close(),
            PeerStream::Polled(s) => s.close(),
            PeerStream::Tls(s) => s.close(),
        }
    }
}

/// What a TLS node sends a plaintext peer before closing: fatal `protocol_version` alerts,
/// enough of them to fill a frame header, so that the peer's reader sees TLS and says so.
const TLS_ALERTS: [u8; 14] = [
    0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46, 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46,
];

/// The first bytes of a TLS record (handshake or alert), which no rep frame starts with.
pub fn looks_like_tls(b: &[u8]) -> bool {
    matches!(b, [0x15 | 0x16, 0x03, ..])
}

/// Why the peer's bytes are TLS when this node has no TLS.
pub use crate::core::failure::PEER_SPEAKS_TLS;

/// TLS over a freshly dialed peer socket, if configured: the peer must show a certificate from
/// tls-ca issued for its node name.
pub async fn secure_dialed(stream: TcpStream, peer: SocketAddr) -> io::Result<PeerStream> {
    let Some(t) = link_config() else {
        return Ok(PeerStream::Plain(stream));
    };
    let conn = rustls::ClientConnection::new(Arc::clone(&t.client), t.peer.clone())
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    match TlsStream::handshake(Rc::new(stream), conn.into(), Vec::new()).await {
        Ok(s) => {
            tracing::debug!("peer link: TLS established with {peer}");
            LOGGED_TLS.call_once(|| tracing::info!("peer link: TLS established with {peer}"));
            Ok(PeerStream::Tls(s))
        }
        Err(e) => {
            let msg = format!(
                "TLS handshake with {peer} failed: {e} (this node has `net {{ tls yes; }}`: the peer needs it too, with a certificate from tls-ca for its name {:?})",
                t.peer.to_str()
            );
            tracing::warn!("peer link: {msg}");
            Err(io::Error::new(e.kind(), msg))
        }
    }
}

/// Classifies an accepted peer socket by its first bytes and, with TLS configured, runs the
/// handshake and checks the peer's name. `None`: refused (and logged, naming the option).
/// Otherwise the stream and bytes already read that belong to the first frame.
pub async fn secure_accepted(
    stream: TcpStream,
    from: SocketAddr,
    limit: Duration,
) -> Option<(PeerStream, Vec<u8>)> {
    let buf = Vec::with_capacity(4096);
    let first = tokio::time::timeout(limit, stream.read_into(buf.slice(0..4096))).await;
    let first = match first {
        Ok((Ok(n), buf)) if n > 0 => buf,
        Ok((Ok(_), _)) => return None,
        Ok((Err(e), _)) => {
            tracing::debug!("peer link: {from}: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!(
                "peer link: {from} sent nothing within {} s",
                limit.as_secs()
            );
            return None;
        }
    };
    let Some(t) = link_config() else {
        if looks_like_tls(&first) {
            tracing::warn!("peer link: refusing {from}: {PEER_SPEAKS_TLS}");
            stream.close();
            return None;
        }
        return Some((PeerStream::Plain(stream), first));
    };
    if first.first() != Some(&0x16) {
        tracing::warn!(
            "peer link: refusing {from}: it sent plaintext, but this node has `net {{ tls yes; }}`: the peer must set tls (with certificates from tls-ca) too"
        );
        let _ = stream.write_vec(TLS_ALERTS.to_vec()).await;
        stream.close();
        return None;
    }
    let conn = match rustls::ServerConnection::new(Arc::clone(&t.server)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("peer link: TLS: {e}");
            return None;
        }
    };
    let shake = TlsStream::handshake(Rc::new(stream), conn.into(), first);
    let tls = match tokio::time::timeout(limit, shake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!("peer link: refusing {from}: TLS handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!(
                "peer link: refusing {from}: TLS handshake not done within {} s",
                limit.as_secs()
            );
            return None;
        }
    };
    let named = tls.peer_certificate().is_some_and(|der| {
        let der = CertificateDer::from(der);
        webpki::EndEntityCert::try_from(&der)
            .and_then(|c| c.verify_is_valid_for_subject_name(&t.peer))
            .is_ok()
    });
    if !named {
        tracing::warn!(
            "peer link: refusing {from}: its certificate (from tls-ca) is not issued for the peer's name {:?}",
            t.peer.to_str()
        );
        tls.close();
        return None;
    }
    tracing::debug!("peer link: TLS established with {from}");
    LOGGED_TLS.call_once(|| tracing::info!("peer link: TLS established with {from}"));
    Some((PeerStream::Tls(tls), Vec::new()))
}

/// The first TLS link is logged at info (that TLS is in use); later ones at debug.
static LOGGED_TLS: std::sync::Once = std::sync::Once::new();
