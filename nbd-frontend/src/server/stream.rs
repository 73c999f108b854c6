//! Sockets as the server sees them, and a buffered reader that keeps syscalls per request low.

use std::io;
use std::rc::Rc;

use tokio_uring::buf::BoundedBuf;

/// A connected socket (Unix or TCP) driven by io_uring.
#[allow(async_fn_in_trait)] // single-threaded runtime: the futures need not be Send
pub trait Stream: 'static {
    async fn read_into(
        &self,
        buf: tokio_uring::buf::Slice<Vec<u8>>,
    ) -> (io::Result<usize>, Vec<u8>);
    async fn write_vec(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    fn close(&self);
}

macro_rules! impl_stream {
    ($t:ty) => {
        impl Stream for $t {
            async fn read_into(
                &self,
                buf: tokio_uring::buf::Slice<Vec<u8>>,
            ) -> (io::Result<usize>, Vec<u8>) {
                let (r, slice) = self.read(buf).await;
                (r, slice.into_inner())
            }
            async fn write_vec(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
                self.write_all(buf).await
            }
            fn close(&self) {
                // Ignored: the peer may already be gone, and the fd is closed on drop anyway.
                let _ = self.shutdown(std::net::Shutdown::Both);
            }
        }
    };
}
impl_stream!(tokio_uring::net::UnixStream);
impl_stream!(tokio_uring::net::TcpStream);

const READ_CHUNK: usize = 256 * 1024;

pub struct Reader<S> {
    stream: Rc<S>,
    buf: Vec<u8>,
    pos: usize,
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "client closed the connection")
}

impl<S: Stream> Reader<S> {
    pub fn new(stream: Rc<S>) -> Self {
        Reader {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
        }
    }

    /// What was read but not consumed (bytes that belong to what follows, e.g. TLS records).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        rest
    }

    /// A reader whose first bytes were already read from `stream` (`already`).
    pub fn with_buffered(stream: Rc<S>, already: Vec<u8>) -> Self {
        Reader {
            stream,
            buf: already,
            pos: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads until `n` bytes are buffered. `Ok(false)` on a clean EOF before any byte of them.
    async fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.buffered() >= n {
            return Ok(true);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() < n.max(READ_CHUNK) {
            self.buf.reserve(n.max(READ_CHUNK) - self.buf.len());
        }
        while self.buf.len() < n {
            let had = self.buf.len();
            let buf = std::mem::take(&mut self.buf);
            let (r, buf) = self.stream.read_into(buf.slice(had..)).await;
            self.buf = buf;
            match r? {
                0 if had == 0 => return Ok(false),
                0 => return Err(eof()),
                _ => {}
            }
        }
        Ok(true)
    }

    /// The next `N` bytes, or `None` on a clean EOF at a message boundary.
    pub async fn read_array<const N: usize>(&mut self) -> io::Result<Option<[u8; N]>> {
        if !self.fill(N).await? {
            return Ok(None);
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(Some(out))
    }

    /// Fills `out` exactly (a small fixed part of a message whose size depends on its kind).
    pub async fn read_slice(&mut self, out: &mut [u8]) -> io::Result<()> {
        if !self.fill(out.len()).await? {
            return Err(eof());
        }
        out.copy_from_slice(&self.buf[self.pos..self.pos + out.len()]);
        self.pos += out.len();
        Ok(())
    }

    /// Exactly `n` bytes; large payloads are read straight into their own buffer.
    pub async fn read_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let take = n.min(self.buffered());
        let mut out = Vec::with_capacity(n);
        out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
        self.pos += take;
        while out.len() < n {
            let had = out.len();
            let (r, back) = self.stream.read_into(out.slice(had..n)).await;
            out = back;
            if r? == 0 {
                return Err(eof());
            }
        }
        Ok(out)
    }

    /// Discards `n` bytes (the payload of a rejected write) without holding them all in memory.
    pub async fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let step = n.min(READ_CHUNK);
            if !self.fill(step).await? {
                return Err(eof());
            }
            self.pos += step;
            n -= step;
        }
        Ok(())
    }
}
