//! Sockets as the server sees them, and a buffered reader that keeps syscalls per request low.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio_uring::buf::BoundedBuf;

/// A connected socket (Unix or TCP) driven by io_uring.
#[allow(async_fn_in_trait)] // single-threaded runtime: the futures need not be Send
pub trait Stream: 'static {
    async fn read_into(
        &self,
        buf: tokio_uring::buf::Slice<Vec<u8>>,
    ) -> (io::Result<usize>, Vec<u8>);
    async fn write_vec(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Writes `parts` in order, all of them. This default joins them first (one copy); a
    /// stream that can gather (`Polled`: `writev`) writes them where they lie.
    async fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        let joined = parts.concat();
        self.write_vec(joined).await.0
    }
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

/// A connected socket driven by readiness (epoll, through the reactor of tokio underneath
/// tokio-uring) and plain nonblocking system calls.
///
/// The request/reply path uses it rather than io_uring: an io_uring read or write is submitted
/// when the thread is about to sleep and completes one trip around the event loop later
/// (io_uring_enter, epoll_wait, a wake-up), so a QD1 request cost two or three such trips. Here
/// a read or write that can be done now is one system call, in the task that wants it: a
/// request costs one wake-up (its arrival), its reply one `send`. A read that returns less
/// than it asked for has drained the socket, and the next read waits for epoll's next edge
/// instead of trying a `recv` that would say EAGAIN (tokio's `poll_read`).
///
/// Reads come from one task and writes from one task at a time (the halves are leased out for
/// the duration of the call; a second concurrent reader or writer gets an error).
///
/// No second descriptor is kept for `close` (a `dup` per connection would halve how many clients
/// fit under the descriptor limit, and fail with EMFILE right at it, dropping a client that was
/// already accepted): `close` shuts down the socket by number. That number stays this socket's
/// while `self` lives, because the halves that own it always come back to `self` (`Lease`
/// returns them on drop, also when a call's future is cancelled).
pub struct Polled<R, W> {
    rd: Cell<Option<R>>,
    wr: Cell<Option<W>>,
    fd: RawFd,
}

/// An NBD client (or anything else) on a Unix socket.
pub type PolledUnix = Polled<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>;
/// A TCP connection (NBD over TCP, the peer link's sockets).
pub type PolledTcp = Polled<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf>;

impl PolledUnix {
    /// Must be called on the runtime's thread (it registers with the reactor).
    pub fn new(sock: std::os::unix::net::UnixStream) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        let fd = sock.as_raw_fd();
        let (rd, wr) = tokio::net::UnixStream::from_std(sock)?.into_split();
        Ok(Polled::from_halves(rd, wr, fd))
    }
}

impl PolledTcp {
    /// Must be called on the runtime's thread (it registers with the reactor).
    pub fn new(sock: std::net::TcpStream) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        let fd = sock.as_raw_fd();
        let (rd, wr) = tokio::net::TcpStream::from_std(sock)?.into_split();
        Ok(Polled::from_halves(rd, wr, fd))
    }
}

impl<R, W> Polled<R, W> {
    fn from_halves(rd: R, wr: W, fd: RawFd) -> Self {
        Polled {
            rd: Cell::new(Some(rd)),
            wr: Cell::new(Some(wr)),
            fd,
        }
    }
}

fn busy(what: &str) -> io::Error {
    io::Error::other(format!("two tasks {what} the same socket at once"))
}

/// A half taken out of its cell for one call; it goes back on drop, whatever ends the call.
struct Lease<'a, T> {
    cell: &'a Cell<Option<T>>,
    half: Option<T>,
}

impl<'a, T> Lease<'a, T> {
    fn take(cell: &'a Cell<Option<T>>) -> Option<Self> {
        let half = cell.take()?;
        Some(Lease {
            cell,
            half: Some(half),
        })
    }

    fn get(&mut self) -> io::Result<&mut T> {
        self.half
            .as_mut()
            .ok_or_else(|| io::Error::other("socket half already returned"))
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        self.cell.set(self.half.take());
    }
}

impl<R, W> Stream for Polled<R, W>
where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    async fn read_into(
        &self,
        buf: tokio_uring::buf::Slice<Vec<u8>>,
    ) -> (io::Result<usize>, Vec<u8>) {
        use bytes::BufMut;
        use tokio::io::AsyncReadExt;
        let (begin, end) = (buf.begin(), buf.end());
        let mut v = buf.into_inner();
        if v.len() != begin {
            // Callers read at the end of what they hold; anything else gets plain bytes.
            v.resize(begin, 0);
        }
        let Some(mut rd) = Lease::take(&self.rd) else {
            return (Err(busy("read")), v);
        };
        let want = end.saturating_sub(begin);
        let r = match rd.get() {
            Ok(_) if want == 0 => Ok(0),
            Ok(half) => half.read_buf(&mut (&mut v).limit(want)).await,
            Err(e) => Err(e),
        };
        (r, v)
    }

    async fn write_vec(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        let Some(mut wr) = Lease::take(&self.wr) else {
            return (Err(busy("write")), buf);
        };
        // A socket with room takes it at once, in this task: no trip through the event loop.
        let r = match wr.get() {
            Ok(half) => half.write_all(&buf).await,
            Err(e) => Err(e),
        };
        (r, buf)
    }

    async fn write_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let Some(mut wr) = Lease::take(&self.wr) else {
            return Err(busy("write"));
        };
        let half = wr.get()?;
        let mut slices: Vec<io::IoSlice<'_>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| io::IoSlice::new(p))
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            // At most IOV_MAX slices per call; a short write resumes where it stopped.
            let upto = rest.len().min(IOV_MAX);
            let n = half.write_vectored(&rest[..upto]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    }

    fn close(&self) {
        // `self.fd` is still this socket (see `Polled`). Errors are ignored: the peer may
        // already be gone, and the fd is closed on drop anyway.
        let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Both);
    }
}

const READ_CHUNK: usize = 256 * 1024;
/// The most slices one `writev` takes (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;
/// The most bytes of read chunks one reader keeps alive through payloads it lent out
/// (`read_bytes`); past it, payloads are copied out as before. A payload slice keeps its
/// whole chunk alive (a 512-byte write pins 256 KiB), and the budgets that bound what a
/// connection may have in flight count payload bytes, not chunks: this bounds the
/// difference, per connection, to 4 MiB (docs/architecture.md §6.1, §7).
pub const MAX_LENT_BYTES: usize = 16 * READ_CHUNK;

pub struct Reader<S> {
    stream: Rc<S>,
    /// The chunk being read into; empty (and without capacity) while `lent` holds the bytes.
    buf: Vec<u8>,
    /// The chunk's bytes once a payload was lent out of them: read-only from then on, so the
    /// next read goes to a fresh chunk (`fill`).
    lent: Option<Bytes>,
    pos: usize,
    /// Bytes of this reader's chunks still alive through lent payloads.
    pinned: Arc<AtomicUsize>,
}

/// A read chunk whose bytes were lent out as payloads: it counts itself out of its reader's
/// `pinned` when the last of them is dropped.
struct LentChunk {
    bytes: Vec<u8>,
    pinned: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for LentChunk {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for LentChunk {
    fn drop(&mut self) {
        self.pinned
            .fetch_sub(self.bytes.capacity(), Ordering::Relaxed);
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "client closed the connection")
}

impl<S: Stream> Reader<S> {
    pub fn new(stream: Rc<S>) -> Self {
        Self::resume(stream, Vec::new())
    }

    /// The stream and the bytes read from it but not consumed yet (to move them to another
    /// reader, see `resume`).
    pub fn into_parts(mut self) -> (Rc<S>, Vec<u8>) {
        let rest = match self.lent.take() {
            Some(lent) => lent[self.pos..].to_vec(),
            None => {
                self.buf.drain(..self.pos);
                std::mem::take(&mut self.buf)
            }
        };
        (self.stream, rest)
    }

    /// A reader of `stream` that first hands out `buffered`, bytes an earlier reader of the same
    /// connection had read ahead.
    pub fn resume(stream: Rc<S>, mut buffered: Vec<u8>) -> Self {
        buffered.reserve(READ_CHUNK.saturating_sub(buffered.len()));
        Reader {
            stream,
            buf: buffered,
            lent: None,
            pos: 0,
            pinned: Arc::default(),
        }
    }

    /// The chunk's bytes, read and not yet read.
    fn chunk(&self) -> &[u8] {
        match &self.lent {
            Some(lent) => lent,
            None => &self.buf,
        }
    }

    fn buffered(&self) -> usize {
        self.chunk().len() - self.pos
    }

    /// The bytes read ahead and not consumed yet: a caller can see whether its next message is
    /// here whole, so that reading it will not wait for the socket.
    pub fn ahead(&self) -> &[u8] {
        &self.chunk()[self.pos..]
    }

    /// Bytes of read chunks that lent payloads keep alive now (at most `MAX_LENT_BYTES` and
    /// the chunk being read).
    pub fn pinned_bytes(&self) -> usize {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Reads until `n` bytes are buffered. `Ok(false)` on a clean EOF before any byte of them.
    async fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.buffered() >= n {
            return Ok(true);
        }
        if let Some(lent) = self.lent.take() {
            // Payloads still point into the lent chunk: what is left of it moves to a fresh one.
            let mut fresh = Vec::with_capacity(n.max(READ_CHUNK));
            fresh.extend_from_slice(&lent[self.pos..]);
            self.buf = fresh;
            self.pos = 0;
        } else if self.pos > 0 {
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
        out.copy_from_slice(&self.chunk()[self.pos..self.pos + N]);
        self.pos += N;
        Ok(Some(out))
    }

    /// Fills `out` exactly (a small fixed part of a message whose size depends on its kind).
    pub async fn read_slice(&mut self, out: &mut [u8]) -> io::Result<()> {
        if !self.fill(out.len()).await? {
            return Err(eof());
        }
        out.copy_from_slice(&self.chunk()[self.pos..self.pos + out.len()]);
        self.pos += out.len();
        Ok(())
    }

    /// Exactly `n` bytes; large payloads are read straight into their own buffer.
    pub async fn read_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let take = n.min(self.buffered());
        let mut out = Vec::with_capacity(n);
        out.extend_from_slice(&self.chunk()[self.pos..self.pos + take]);
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

    /// Exactly `n` bytes, as a slice of the read chunk when they are all in it (no copy, no
    /// allocation: the hot path of a 4 KiB write); otherwise, or when this reader's lent
    /// chunks already pin `MAX_LENT_BYTES`, as `read_vec` reads them.
    pub async fn read_bytes(&mut self, n: usize) -> io::Result<Bytes> {
        let copy = n == 0
            || n > self.buffered()
            || (self.lent.is_none() && self.pinned_bytes() >= MAX_LENT_BYTES);
        if copy {
            return self.read_vec(n).await.map(Bytes::from);
        }
        let (buf, pinned) = (&mut self.buf, &self.pinned);
        let lent = self.lent.get_or_insert_with(|| {
            let bytes = std::mem::take(buf);
            pinned.fetch_add(bytes.capacity(), Ordering::Relaxed);
            Bytes::from_owner(LentChunk {
                bytes,
                pinned: Arc::clone(pinned),
            })
        });
        let out = Bytes::slice(lent, self.pos..self.pos + n);
        self.pos += n;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Bytes a peer thread sends in uneven pieces arrive whole and in order through a `Polled`
    /// reader (short reads, EAGAIN, readiness edges), and a write far larger than the socket
    /// buffer goes out whole while the other end reads slowly (WouldBlock, then writable).
    #[test]
    fn polled_unix_moves_bytes_both_ways_whatever_the_pacing() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let pattern: Vec<u8> = (0..(8usize << 20)).map(|i| (i % 251) as u8).collect();
        let expect = pattern.clone();
        let peer = std::thread::spawn(move || {
            let mut theirs = theirs;
            // Send in pieces of varying size, pausing now and then.
            let mut off = 0;
            let mut step = 1;
            while off < pattern.len() {
                let n = step.min(pattern.len() - off);
                theirs
                    .write_all(&pattern[off..off + n])
                    .expect("peer write");
                off += n;
                step = (step * 7 + 13) % 300_000 + 1;
                if off % 5 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
            // Then read back what the Polled side writes, slowly.
            let mut back = vec![0u8; 8 << 20];
            let mut got = 0;
            while got < back.len() {
                let n = theirs.read(&mut back[got..]).expect("peer read");
                assert!(n > 0, "early EOF");
                got += n;
                if got % 3 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            }
            back
        });
        let (received, echoed) = tokio_uring::start(async move {
            let polled = Rc::new(PolledUnix::new(ours).expect("register"));
            let mut reader = Reader::new(Rc::clone(&polled));
            let mut received = Vec::new();
            // Headers and payloads, as the NBD reader asks for them.
            while received.len() < expect.len() {
                let left = expect.len() - received.len();
                if left >= 28 + 4096 && received.len() % 2 == 0 {
                    let head = reader
                        .read_array::<28>()
                        .await
                        .expect("read")
                        .expect("no EOF");
                    received.extend_from_slice(&head);
                    received.extend(reader.read_vec(4096).await.expect("payload"));
                } else {
                    received.extend(reader.read_vec(left.min(1 << 20)).await.expect("chunk"));
                }
            }
            let (r, _) = polled.write_vec(received.clone()).await;
            r.expect("write");
            (received, expect)
        });
        assert!(received == echoed, "bytes arrived out of order or altered");
        let back = peer.join().expect("peer thread");
        assert!(back == echoed, "the written bytes arrived altered");
    }

    /// Payloads read whole from the buffer are slices of the read chunk (no copy): those of
    /// one chunk lie back to back with their headers between them. They keep their bytes
    /// through every later refill of the reader, and their chunks count as pinned until the
    /// last of them is dropped. Past `MAX_LENT_BYTES` of pinned chunks the reader copies
    /// payloads out instead of pinning more, and they are still right.
    #[test]
    fn lent_payloads_are_slices_that_outlive_refills_and_stay_bounded() {
        const FRAMES: usize = 3000; // ≈ 12 MiB: past the pin bound while all are held
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let frame = |i: usize| -> Vec<u8> {
            let mut f = vec![(i % 256) as u8; 28];
            f.extend((0..4096).map(|j| ((i * 31 + j) % 253) as u8));
            f
        };
        let peer = std::thread::spawn(move || {
            let mut theirs = theirs;
            // In bursts, as a client with many requests in flight sends them.
            for burst in (0..FRAMES).collect::<Vec<_>>().chunks(32) {
                let bytes: Vec<u8> = burst.iter().flat_map(|&i| frame(i)).collect();
                theirs.write_all(&bytes).expect("peer write");
            }
        });
        tokio_uring::start(async move {
            let polled = Rc::new(PolledUnix::new(ours).expect("register"));
            let mut reader = Reader::new(Rc::clone(&polled));
            let mut held = Vec::with_capacity(FRAMES);
            let (mut adjacent, mut lendable) = (0, 0);
            let mut most_pinned = 0;
            for i in 0..FRAMES {
                let head = reader
                    .read_array::<28>()
                    .await
                    .expect("read")
                    .expect("no EOF");
                assert_eq!(head, [(i % 256) as u8; 28]);
                let below_bound = reader.pinned_bytes() + READ_CHUNK <= MAX_LENT_BYTES;
                let p = reader.read_bytes(4096).await.expect("payload");
                if let Some(prev) = held.last().filter(|_| below_bound) {
                    let prev: &Bytes = prev;
                    if p.as_ptr() as usize == prev.as_ptr() as usize + 4096 + 28 {
                        adjacent += 1;
                    }
                    lendable += 1;
                }
                most_pinned = most_pinned.max(reader.pinned_bytes());
                held.push(p);
            }
            for (i, p) in held.iter().enumerate() {
                assert_eq!(
                    &p[..],
                    &frame(i)[28..],
                    "payload {i} changed after it was read"
                );
            }
            assert!(
                adjacent * 2 > lendable,
                "only {adjacent} of {lendable} payloads were slices of their chunk"
            );
            assert!(
                most_pinned <= MAX_LENT_BYTES + READ_CHUNK,
                "{most_pinned} bytes of chunks pinned, bound {MAX_LENT_BYTES}"
            );
            assert!(most_pinned >= MAX_LENT_BYTES, "the bound was never reached");
            drop(held);
            // The chunk being read is lent too until the next refill; nothing else is pinned.
            assert!(
                reader.pinned_bytes() <= READ_CHUNK,
                "{}",
                reader.pinned_bytes()
            );
            assert!(reader.read_array::<1>().await.expect("eof").is_none());
        });
        peer.join().expect("peer thread");
    }

    /// Bytes a first reader read ahead are handed to the reader that takes over the connection.
    #[test]
    fn a_resumed_reader_starts_with_what_the_first_one_read_ahead() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut theirs = theirs;
        theirs.write_all(b"hellothere-and-more").expect("write");
        drop(theirs);
        tokio_uring::start(async move {
            let first = Rc::new(PolledUnix::new(ours).expect("register"));
            let mut r1 = Reader::new(Rc::clone(&first));
            let hello = r1.read_array::<5>().await.expect("read").expect("no EOF");
            assert_eq!(&hello, b"hello");
            let (stream, ahead) = r1.into_parts();
            let mut r2 = Reader::resume(stream, ahead);
            let rest = r2.read_vec(14).await.expect("rest");
            assert_eq!(&rest, b"there-and-more");
            assert!(r2.read_array::<1>().await.expect("eof").is_none());
        });
    }
}
