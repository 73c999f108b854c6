//! What one peer socket has to send: frames are encoded straight into byte chunks that the
//! socket's writer takes in order and writes with one syscall each.
//!
//! Per packet this costs no allocation and no copy besides the encoding itself, and a large
//! client write's data is not copied at all: its frame's head goes into the chunk and the
//! write's own buffer is spliced in after it (`push_payload`), so the writer hands the socket
//! the chunk's pieces and the client buffers between them in one `writev`
//! (docs/architecture.md §6.2).
//! Bursts coalesce on their own: whatever was queued while the previous write ran goes out in
//! the next one (many acks in one segment, like DRBD's corked meta socket). Chunks have a fixed
//! size and are reused, so memory is what is queued plus a few spare chunks, however big the
//! bursts are (a frame larger than a chunk gets a chunk of its own size, freed once written).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use rep_nbd::server::Stream;
use tokio::sync::Notify;

/// The size of a chunk: a few dozen 4 KiB writes, and a quarter of a socket buffer's worth.
const CHUNK_BYTES: usize = 256 << 10;
/// Spare chunks kept for reuse.
const SPARE_CHUNKS: usize = 4;

/// Encoded frames, and the payloads that go between them: `splices[i] = (at, data)` means
/// `data` follows `bytes[..at]` on the wire (`at` never decreases).
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    splices: Vec<(usize, Bytes)>,
}

impl Chunk {
    fn with_capacity(n: usize) -> Self {
        Chunk {
            bytes: Vec::with_capacity(n),
            splices: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.splices.is_empty()
    }

    /// Its bytes in wire order, as slices of the chunk and of the spliced payloads.
    fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(self.splices.len() * 2 + 1);
        let mut from = 0;
        for (at, data) in &self.splices {
            if *at > from {
                parts.push(&self.bytes[from..*at]);
            }
            parts.push(&data[..]);
            from = *at;
        }
        if self.bytes.len() > from {
            parts.push(&self.bytes[from..]);
        }
        parts
    }
}

#[derive(Default)]
pub struct SendQueue {
    chunks: RefCell<VecDeque<Chunk>>,
    spare: RefCell<Vec<Chunk>>,
    /// Bytes queued and not yet written (what `max-buffers` bounds on the data socket).
    unwritten: Cell<usize>,
    /// The writer sleeps on `wake` (only then is ringing it needed).
    parked: Cell<bool>,
    wake: Notify,
    closed: Cell<bool>,
}

impl SendQueue {
    /// Append frames of about `size` bytes (`encode` appends to the buffer it is given).
    pub fn push_with(&self, size: usize, encode: impl FnOnce(&mut Vec<u8>)) {
        self.push(size, encode, None);
    }

    /// Append a frame whose head `encode` writes (about `size` bytes) and whose last `data.len()`
    /// bytes are `data`, which the queue holds rather than copies.
    pub fn push_payload(&self, size: usize, encode: impl FnOnce(&mut Vec<u8>), data: Bytes) {
        self.push(size, encode, Some(data));
    }

    fn push(&self, size: usize, encode: impl FnOnce(&mut Vec<u8>), data: Option<Bytes>) {
        if self.closed.get() {
            return;
        }
        let added = {
            let mut chunks = self.chunks.borrow_mut();
            let fits = chunks
                .back()
                .is_some_and(|c| c.bytes.capacity() - c.bytes.len() >= size);
            if !fits {
                let fresh = self.fresh_chunk(size);
                chunks.push_back(fresh);
            }
            let Some(chunk) = chunks.back_mut() else {
                return;
            };
            let before = chunk.bytes.len();
            encode(&mut chunk.bytes);
            let mut added = chunk.bytes.len() - before;
            if let Some(data) = data.filter(|d| !d.is_empty()) {
                added += data.len();
                chunk.splices.push((chunk.bytes.len(), data));
            }
            added
        };
        self.unwritten.set(self.unwritten.get() + added);
        if added > 0 && self.parked.get() {
            self.wake.notify_one();
        }
    }

    fn fresh_chunk(&self, size: usize) -> Chunk {
        if size <= CHUNK_BYTES {
            if let Some(c) = self.spare.borrow_mut().pop() {
                return c;
            }
        }
        Chunk::with_capacity(size.max(CHUNK_BYTES))
    }

    /// Bytes queued and not yet on the socket.
    pub fn unwritten(&self) -> usize {
        self.unwritten.get()
    }

    /// No more frames: the writer stops once it has nothing in hand.
    pub fn close(&self) {
        self.closed.set(true);
        self.chunks.borrow_mut().clear();
        self.spare.borrow_mut().clear();
        self.wake.notify_one();
    }

    /// The oldest chunk with bytes in it; `None` once closed.
    async fn take(&self) -> Option<Chunk> {
        loop {
            if self.closed.get() {
                return None;
            }
            let next = {
                let mut chunks = self.chunks.borrow_mut();
                while chunks.front().is_some_and(Chunk::is_empty) {
                    chunks.pop_front();
                }
                chunks.pop_front()
            };
            if next.is_some() {
                return next;
            }
            self.parked.set(true);
            self.wake.notified().await;
            self.parked.set(false);
        }
    }

    /// `n` bytes are on the socket; `chunk` may be reused (the payloads it held are let go).
    fn written(&self, n: usize, mut chunk: Chunk) {
        self.unwritten.set(self.unwritten.get().saturating_sub(n));
        chunk.splices.clear();
        let mut spare = self.spare.borrow_mut();
        if chunk.bytes.capacity() == CHUNK_BYTES && spare.len() < SPARE_CHUNKS && !self.closed.get()
        {
            chunk.bytes.clear();
            spare.push(chunk);
        }
    }
}

/// Write `queue` to `stream` until the queue is closed or the socket fails (then the socket is
/// shut down: its reader sees it and reports the link loss). `after_write` runs after each
/// write with the bytes it wrote (the data socket lets held client writes in as its backlog
/// shrinks; both count what went to the peer).
pub async fn write_queue<S: Stream>(
    stream: Rc<S>,
    queue: Rc<SendQueue>,
    after_write: impl Fn(usize),
) {
    while let Some(mut chunk) = queue.take().await {
        let (r, n) = if chunk.splices.is_empty() {
            let n = chunk.bytes.len();
            let (r, bytes) = stream.write_vec(std::mem::take(&mut chunk.bytes)).await;
            chunk.bytes = bytes;
            (r, n)
        } else {
            let parts = chunk.parts();
            let n = parts.iter().map(|p| p.len()).sum();
            (stream.write_parts(&parts).await, n)
        };
        if r.is_err() {
            stream.close();
            queue.close();
            return;
        }
        queue.written(n, chunk);
        after_write(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Frames of every kind the data socket carries: small encoded ones, 4 KiB client writes
    /// whose data is spliced in, a 1 MiB write now and then, and an empty payload.
    fn fill(q: &SendQueue, frames: u32) -> Vec<u8> {
        let mut expect = Vec::new();
        for i in 0..frames {
            let byte = u8::try_from(i % 251).unwrap_or(0);
            match i % 7 {
                0 | 3 => {
                    let len = 24 + (i as usize % 5);
                    q.push_with(len, |b| b.resize(b.len() + len, byte));
                    expect.resize(expect.len() + len, byte);
                }
                5 if i % 50 == 5 => {
                    let data = Bytes::from(vec![byte; 1 << 20]);
                    q.push_payload(64, |b| b.extend_from_slice(b"head"), data.clone());
                    expect.extend_from_slice(b"head");
                    expect.extend_from_slice(&data);
                }
                6 => {
                    q.push_payload(64, |b| b.push(byte), Bytes::new());
                    expect.push(byte);
                }
                _ => {
                    let data: Vec<u8> = (0..4096u32).map(|j| (j % 13) as u8 ^ byte).collect();
                    q.push_payload(
                        64,
                        |b| b.extend_from_slice(&[byte; 21]),
                        data.clone().into(),
                    );
                    expect.extend_from_slice(&[byte; 21]);
                    expect.extend_from_slice(&data);
                }
            }
        }
        expect
    }

    #[test]
    fn frames_keep_their_order_across_chunks_and_chunks_are_reused() {
        let q = SendQueue::default();
        let expect = fill(&q, 600);
        assert_eq!(q.unwritten(), expect.len());
        let mut got = Vec::new();
        let mut chunks = q.chunks.borrow_mut();
        assert!(chunks.iter().all(|c| c.bytes.capacity() >= CHUNK_BYTES));
        assert!(
            chunks.iter().all(|c| c.bytes.capacity() == CHUNK_BYTES),
            "payloads are held, not copied into the chunks"
        );
        while let Some(c) = chunks.pop_front() {
            let n: usize = c.parts().iter().map(|p| p.len()).sum();
            for p in c.parts() {
                got.extend_from_slice(p);
            }
            drop(chunks);
            q.written(n, c);
            chunks = q.chunks.borrow_mut();
        }
        assert!(got == expect, "bytes out of order or altered");
        assert_eq!(q.unwritten(), 0);
        assert!(!q.spare.borrow().is_empty() && q.spare.borrow().len() <= SPARE_CHUNKS);
        assert!(q.spare.borrow().iter().all(|c| c.is_empty()));
    }

    /// The writer gathers heads and client buffers into `writev`s of at most IOV_MAX slices
    /// and resumes short writes where they stopped: a slow reader gets every byte in order.
    #[test]
    fn the_writer_gathers_spliced_payloads_onto_a_slow_socket_in_order() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let q = Rc::new(SendQueue::default());
        // Over 2,000 slices in the first chunk alone, and 13 MiB in all.
        let expect = fill(&q, 2500);
        let total = expect.len();
        let reader = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut got = vec![0u8; total];
            let (mut at, mut reads) = (0, 0);
            while at < total {
                let upto = total.min(at + (64 << 10));
                let n = theirs.read(&mut got[at..upto]).expect("read");
                assert!(n > 0, "early EOF");
                at += n;
                reads += 1;
                if reads % 8 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            }
            got
        });
        tokio_uring::start(async move {
            let stream = Rc::new(rep_nbd::server::PolledUnix::new(ours).expect("register"));
            let sent = Rc::new(Cell::new(0usize));
            let counted = Rc::clone(&sent);
            let writer =
                tokio_uring::spawn(write_queue(Rc::clone(&stream), Rc::clone(&q), move |n| {
                    counted.set(counted.get() + n)
                }));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while q.unwritten() > 0 && sent.get() < total && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(
                sent.get(),
                total,
                "the writer wrote what was queued, no more"
            );
            q.close();
            let _ = writer.await;
        });
        let got = reader.join().expect("reader thread");
        assert!(got == expect, "bytes out of order or altered");
    }
}
