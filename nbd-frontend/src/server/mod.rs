//! The NBD server: fixed-newstyle handshake, then pipelined transmission with out-of-order
//! replies. One task reads requests and hands them to the backend, one writes replies; both
//! with plain nonblocking system calls on the socket (`stream::Polled`).

mod accept;
mod handshake;
mod local;
pub mod stream;
pub mod tls;
mod transmission;

use std::io;
use std::rc::Rc;
use std::sync::Arc;

pub use accept::spawn_acceptor;
pub use stream::{PolledTcp, PolledUnix, Stream};
pub use transmission::Responder;

/// What a client sees of an export after a successful OPT_GO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    pub description: String,
    pub size_bytes: u64,
    pub read_only: bool,
    pub can_multi_conn: bool,
    pub min_block: u32,
    pub preferred_block: u32,
    pub max_block: u32,
}

/// Why an export cannot be opened right now (e.g. the node is Secondary); sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub message: String,
}

/// A validated request, ready for the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Read {
        offset: u64,
        len: u32,
    },
    Write {
        offset: u64,
        /// Usually a slice of the connection's read buffer (`Reader::read_bytes`), not a copy.
        data: bytes::Bytes,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        fua: bool,
        no_hole: bool,
    },
    Cache {
        offset: u64,
        len: u32,
    },
}

/// The backend's answer. `errno` is an NBD error value (proto::EIO, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Done,
    Data(Vec<u8>),
    Error { errno: u32, message: String },
}

/// The storage behind an export. Everything runs on one tokio-uring thread.
pub trait BlockBackend {
    /// Opens export `name` ("" is the default export) or says why it cannot.
    fn export(&self, name: &str) -> Result<ExportInfo, Unavailable>;
    /// Starts one command; its completion goes to `done`, in any order relative to others.
    /// It may only queue the command, to start it with the others of its batch in
    /// `run_submitted`.
    fn submit(&self, cmd: Command, done: Responder);
    /// Start every command `submit` queued. The server calls it before it waits for anything
    /// (the socket, or room in its budget, which only replies free), so no queued command
    /// waits for the client.
    fn run_submitted(&self) {}
    /// Checked before every request: `Some((errno, why))` refuses it (e.g. demoted under the client).
    fn gate(&self) -> Option<(u32, String)> {
        None
    }
    /// A client entered / left the transmission phase.
    fn client_opened(&self) {}
    fn client_closed(&self) {}
    /// Exports for NBD_OPT_LIST as (name, description).
    fn list(&self) -> Vec<(String, String)> {
        self.export("")
            .map(|e| vec![(e.name, e.description)])
            .unwrap_or_default()
    }
}

/// Accepts NBD clients on a Unix socket until the runtime stops; each connection runs as its own task.
pub async fn serve_unix(
    listener: std::os::unix::net::UnixListener,
    backend: Rc<dyn BlockBackend>,
) -> io::Result<()> {
    let mut conns = spawn_acceptor("nbd-unix", move || listener.accept().map(|(s, _)| s))?;
    while let Some(std_stream) = conns.recv().await {
        let stream = match PolledUnix::new(std_stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("nbd: cannot register a unix client with the reactor: {e}");
                continue;
            }
        };
        tokio_uring::spawn(serve_connection(
            stream,
            Rc::clone(&backend),
            "unix".to_owned(),
        ));
    }
    Ok(())
}

/// TLS on the TCP export (`nbd-tls`): the server configuration checks client certificates.
#[derive(Clone)]
pub enum TlsPolicy {
    Off,
    /// STARTTLS offered; plaintext clients served too.
    Optional(Arc<rustls::ServerConfig>),
    /// Only clients that complete STARTTLS are served.
    Required(Arc<rustls::ServerConfig>),
}

/// Accepts NBD clients over TCP (`nbd-listen`) until the runtime stops.
pub async fn serve_tcp(
    listener: std::net::TcpListener,
    backend: Rc<dyn BlockBackend>,
) -> io::Result<()> {
    serve_tcp_tls(listener, backend, TlsPolicy::Off).await
}

/// Accepts NBD clients over TCP, offering or requiring TLS as `tls` says.
pub async fn serve_tcp_tls(
    listener: std::net::TcpListener,
    backend: Rc<dyn BlockBackend>,
    tls: TlsPolicy,
) -> io::Result<()> {
    let mut conns = spawn_acceptor("nbd-tcp", move || listener.accept())?;
    while let Some((std_stream, peer)) = conns.recv().await {
        if let Err(e) = std_stream.set_nodelay(true) {
            tracing::debug!("nbd: TCP_NODELAY on {peer}: {e}");
        }
        let stream = match PolledTcp::new(std_stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("nbd: cannot register client {peer} with the reactor: {e}");
                continue;
            }
        };
        // STARTTLS runs TLS over this same readiness-driven socket (`tls::TlsStream<PolledTcp>`).
        tokio_uring::spawn(serve_connection_tls(
            stream,
            Rc::clone(&backend),
            peer.to_string(),
            tls.clone(),
        ));
    }
    Ok(())
}

/// A client must reach transmission (OPT_GO / EXPORT_NAME) within this time, as with
/// qemu-nbd's default `--handshake-limit`: connections that say nothing cannot pile up and hold
/// file descriptors for ever. Idle clients in transmission are legitimate and stay.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs one client from greeting to close. Errors end only this connection.
pub async fn serve_connection<S: Stream>(stream: S, backend: Rc<dyn BlockBackend>, who: String) {
    serve_connection_tls(stream, backend, who, TlsPolicy::Off).await
}

/// Where the handshake left a connection.
enum Negotiated<S> {
    Plain(Rc<S>, stream::Reader<S>, handshake::Session),
    Tls(
        Rc<tls::TlsStream<S>>,
        stream::Reader<tls::TlsStream<S>>,
        handshake::Session,
    ),
    Closed,
}

async fn negotiate<S: Stream>(
    stream: Rc<S>,
    backend: &dyn BlockBackend,
    policy: &TlsPolicy,
    who: &str,
) -> Result<Negotiated<S>, handshake::HandshakeError> {
    use handshake::{Outcome, TlsState};
    let mut reader = stream::Reader::new(Rc::clone(&stream));
    let Some(no_zeroes) = handshake::greet(&*stream, &mut reader).await? else {
        return Ok(Negotiated::Closed);
    };
    let (state, config) = match policy {
        TlsPolicy::Off => (TlsState::Unavailable, None),
        TlsPolicy::Optional(c) => (TlsState::Offered { required: false }, Some(c)),
        TlsPolicy::Required(c) => (TlsState::Offered { required: true }, Some(c)),
    };
    match handshake::haggle(&*stream, &mut reader, backend, no_zeroes, state).await? {
        Outcome::Session(s) => return Ok(Negotiated::Plain(stream, reader, s)),
        Outcome::Closed => return Ok(Negotiated::Closed),
        Outcome::StartTls => {}
    }
    let Some(config) = config else {
        return Ok(Negotiated::Closed);
    };
    let conn = rustls::ServerConnection::new(Arc::clone(config))
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    let (_, early) = reader.into_parts();
    let tls = tls::TlsStream::handshake(stream, conn.into(), early)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
    tracing::debug!("nbd: client {who} completed the TLS handshake");
    let tls = Rc::new(tls);
    let mut reader = stream::Reader::new(Rc::clone(&tls));
    match handshake::haggle(&*tls, &mut reader, backend, no_zeroes, TlsState::Active).await? {
        Outcome::Session(s) => Ok(Negotiated::Tls(tls, reader, s)),
        Outcome::Closed | Outcome::StartTls => {
            tls.close();
            Ok(Negotiated::Closed)
        }
    }
}

async fn transmit<S: Stream>(
    stream: Rc<S>,
    reader: stream::Reader<S>,
    backend: Rc<dyn BlockBackend>,
    session: handshake::Session,
    who: &str,
) {
    backend.client_opened();
    tracing::debug!("nbd: client {who} opened export {:?}", session.info.name);
    if let Err(e) =
        transmission::run(Rc::clone(&stream), reader, Rc::clone(&backend), session).await
    {
        tracing::info!("nbd: client {who}: {e}");
    }
    backend.client_closed();
    stream.close();
}

/// Runs one client from greeting to close, with STARTTLS handled as `tls` says.
pub async fn serve_connection_tls<S: Stream>(
    stream: S,
    backend: Rc<dyn BlockBackend>,
    who: String,
    tls: TlsPolicy,
) {
    let stream = Rc::new(stream);
    let negotiated = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        negotiate(Rc::clone(&stream), &*backend, &tls, &who),
    )
    .await;
    let Ok(negotiated) = negotiated else {
        tracing::info!(
            "nbd: client {who} did not finish the handshake within {} s; closing",
            HANDSHAKE_TIMEOUT.as_secs()
        );
        stream.close();
        return;
    };
    match negotiated {
        Ok(Negotiated::Plain(s, reader, session)) => {
            transmit(s, reader, backend, session, &who).await
        }
        Ok(Negotiated::Tls(s, reader, session)) => {
            transmit(s, reader, backend, session, &who).await
        }
        Ok(Negotiated::Closed) => {
            tracing::debug!("nbd: client {who} left during the handshake");
            stream.close();
        }
        Err(e) => {
            tracing::info!("nbd: client {who} dropped during the handshake: {e}");
            stream.close();
        }
    }
}
