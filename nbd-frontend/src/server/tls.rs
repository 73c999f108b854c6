//! TLS over a [`Stream`]: rustls is sans-IO, so this type moves its records to and from the
//! socket and is itself a [`Stream`]. The NBD server wraps a TCP client (`PolledTcp`) in it
//! after `NBD_OPT_STARTTLS`; the peer link wraps both of its (io_uring) sockets.
//!
//! One task reads and another writes at the same time (the transmission phase does so), both
//! through `&self`: the rustls state is only borrowed between awaits, and every write of TLS
//! records to the socket happens under one async lock, so records leave in the order rustls
//! produced them even when the reading side has something to send (an alert, a key update).

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use tokio_uring::buf::BoundedBuf;

use super::stream::Stream;

/// TLS bytes read from the socket at a time (several 16 KiB records).
const TLS_READ_CHUNK: usize = 256 * 1024;
/// A closing connection gets this long to send its close_notify behind pending writes.
const CLOSE_NOTIFY_WAIT: Duration = Duration::from_secs(1);

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// TLS bytes read but not yet handed to rustls.
#[derive(Default)]
struct Incoming {
    buf: Vec<u8>,
    pos: usize,
}

pub struct TlsStream<S> {
    inner: Rc<S>,
    conn: Rc<RefCell<rustls::Connection>>,
    incoming: RefCell<Incoming>,
    /// Decrypted bytes rustls holds for us (from the last `process_new_packets`).
    plain_avail: Cell<usize>,
    peer_closed: Cell<bool>,
    write_lock: Rc<tokio::sync::Mutex<()>>,
    closed: Cell<bool>,
}

impl<S: Stream> TlsStream<S> {
    /// Runs the TLS handshake on `inner` as `conn` (client or server). `already_read` are bytes
    /// that arrived before TLS was set up (the NBD handshake reader's buffer): they are TLS.
    /// The peer's certificate is checked by `conn`'s configuration; a failure sends the alert
    /// and returns the reason.
    pub async fn handshake(
        inner: Rc<S>,
        mut conn: rustls::Connection,
        already_read: Vec<u8>,
    ) -> io::Result<TlsStream<S>> {
        conn.set_buffer_limit(None);
        let s = TlsStream {
            inner,
            conn: Rc::new(RefCell::new(conn)),
            incoming: RefCell::new(Incoming {
                buf: already_read,
                pos: 0,
            }),
            plain_avail: Cell::new(0),
            peer_closed: Cell::new(false),
            write_lock: Rc::new(tokio::sync::Mutex::new(())),
            closed: Cell::new(false),
        };
        loop {
            s.flush().await?;
            if !s.conn.borrow().is_handshaking() {
                break;
            }
            if !s.feed().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
        Ok(s)
    }

    /// The certificate chain the peer presented (verified by then), leaf first.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        let conn = self.conn.borrow();
        let certs = match &*conn {
            rustls::Connection::Client(c) => c.peer_certificates(),
            rustls::Connection::Server(c) => c.peer_certificates(),
        };
        certs.and_then(|c| c.first()).map(|c| c.as_ref().to_vec())
    }

    /// Sends whatever TLS records rustls has ready.
    async fn flush(&self) -> io::Result<()> {
        let _g = self.write_lock.lock().await;
        let out = drain(&self.conn)?;
        if out.is_empty() {
            return Ok(());
        }
        self.inner.write_vec(out).await.0
    }

    /// Hands rustls more TLS bytes (reading the socket if none are pending) and processes them.
    /// `Ok(false)` when the socket reached EOF.
    async fn feed(&self) -> io::Result<bool> {
        let pending = {
            let inc = self.incoming.borrow();
            inc.pos < inc.buf.len()
        };
        if !pending {
            let mut buf = std::mem::take(&mut self.incoming.borrow_mut().buf);
            buf.clear();
            buf.reserve(TLS_READ_CHUNK);
            let (r, buf) = self.inner.read_into(buf.slice(0..TLS_READ_CHUNK)).await;
            let mut inc = self.incoming.borrow_mut();
            inc.buf = buf;
            inc.pos = 0;
            if r? == 0 {
                return Ok(false);
            }
        }
        let processed = {
            let mut conn = self.conn.borrow_mut();
            let mut inc = self.incoming.borrow_mut();
            let mut rd = &inc.buf[inc.pos..];
            let before = rd.len();
            conn.read_tls(&mut rd)?;
            let taken = before - rd.len();
            inc.pos += taken;
            conn.process_new_packets()
        };
        match processed {
            Ok(state) => {
                self.plain_avail.set(state.plaintext_bytes_to_read());
                self.peer_closed.set(state.peer_has_closed());
                if state.tls_bytes_to_write() > 0 {
                    self.flush().await?;
                }
                Ok(true)
            }
            Err(e) => {
                // The alert telling the peer why; it may already be gone.
                let _ = self.flush().await;
                Err(tls_error(e))
            }
        }
    }

    /// Copies decrypted bytes into `v[begin..end]`; `None` when rustls has none yet.
    fn take_plain(&self, v: &mut Vec<u8>, begin: usize, end: usize) -> io::Result<Option<usize>> {
        let avail = self.plain_avail.get();
        if avail == 0 {
            return Ok(self.peer_closed.get().then_some(0));
        }
        let old_len = v.len();
        let want = (end - begin).min(avail);
        if v.len() < begin + want {
            v.resize(begin + want, 0);
        }
        let mut conn = self.conn.borrow_mut();
        let mut n = 0;
        while n < want {
            match conn.reader().read(&mut v[begin + n..begin + want]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    v.truncate(old_len.max(begin + n));
                    return Err(e);
                }
            }
        }
        v.truncate(old_len.max(begin + n));
        self.plain_avail.set(avail - n);
        Ok(Some(n))
    }
}

fn drain(conn: &RefCell<rustls::Connection>) -> io::Result<Vec<u8>> {
    let mut conn = conn.borrow_mut();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

impl<S: Stream> Stream for TlsStream<S> {
    async fn read_into(
        &self,
        buf: tokio_uring::buf::Slice<Vec<u8>>,
    ) -> (io::Result<usize>, Vec<u8>) {
        let (begin, end) = (buf.begin(), buf.end());
        let mut v = buf.into_inner();
        loop {
            match self.take_plain(&mut v, begin, end) {
                Ok(Some(n)) => return (Ok(n), v),
                Ok(None) => {}
                Err(e) => return (Err(e), v),
            }
            match self.feed().await {
                Ok(true) => {}
                Ok(false) => return (Ok(0), v),
                Err(e) => return (Err(e), v),
            }
        }
    }

    async fn write_vec(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let _g = self.write_lock.lock().await;
        let out = {
            let mut conn = self.conn.borrow_mut();
            if let Err(e) = conn.writer().write_all(&buf) {
                return (Err(e), buf);
            }
            drop(conn);
            drain(&self.conn)
        };
        match out {
            Ok(out) => (self.inner.write_vec(out).await.0, buf),
            Err(e) => (Err(e), buf),
        }
    }

    fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.conn.borrow_mut().send_close_notify();
        let (inner, conn, lock) = (
            Rc::clone(&self.inner),
            Rc::clone(&self.conn),
            Rc::clone(&self.write_lock),
        );
        tokio_uring::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_NOTIFY_WAIT, async {
                let _g = lock.lock().await;
                if let Ok(out) = drain(&conn) {
                    if !out.is_empty() {
                        let _ = inner.write_vec(out).await;
                    }
                }
            })
            .await;
            inner.close();
        });
    }
}
