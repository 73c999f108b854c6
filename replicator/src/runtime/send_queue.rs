//! What one peer socket has to send: frames are encoded straight into byte chunks that the
//! socket's writer takes in order and writes with one syscall each.
//!
//! Per packet this costs no allocation and no copy besides the encoding itself (a 4 KiB write
//! is copied once, from the client's buffer into the frame), and bursts coalesce on their own:
//! whatever was queued while the previous write ran goes out in the next one (many acks in one
//! segment, like DRBD's corked meta socket). Chunks have a fixed size and are reused, so memory
//! is what is queued plus a few spare chunks, however big the bursts are (a frame larger than a
//! chunk gets a chunk of its own size, freed once written).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use rep_nbd::server::Stream;
use tokio::sync::Notify;

/// The size of a chunk: a few dozen 4 KiB writes, and a quarter of a socket buffer's worth.
const CHUNK_BYTES: usize = 256 << 10;
/// Spare chunks kept for reuse.
const SPARE_CHUNKS: usize = 4;

#[derive(Default)]
pub struct SendQueue {
    chunks: RefCell<VecDeque<Vec<u8>>>,
    spare: RefCell<Vec<Vec<u8>>>,
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
        if self.closed.get() {
            return;
        }
        let added = {
            let mut chunks = self.chunks.borrow_mut();
            let fits = chunks
                .back()
                .is_some_and(|c| c.capacity() - c.len() >= size);
            if !fits {
                let fresh = self.fresh_chunk(size);
                chunks.push_back(fresh);
            }
            let Some(chunk) = chunks.back_mut() else {
                return;
            };
            let before = chunk.len();
            encode(chunk);
            chunk.len() - before
        };
        self.unwritten.set(self.unwritten.get() + added);
        if added > 0 && self.parked.get() {
            self.wake.notify_one();
        }
    }

    fn fresh_chunk(&self, size: usize) -> Vec<u8> {
        if size <= CHUNK_BYTES {
            if let Some(c) = self.spare.borrow_mut().pop() {
                return c;
            }
        }
        Vec::with_capacity(size.max(CHUNK_BYTES))
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
    async fn take(&self) -> Option<Vec<u8>> {
        loop {
            if self.closed.get() {
                return None;
            }
            let next = {
                let mut chunks = self.chunks.borrow_mut();
                while chunks.front().is_some_and(Vec::is_empty) {
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

    /// `n` bytes are on the socket; `chunk` may be reused.
    fn written(&self, n: usize, mut chunk: Vec<u8>) {
        self.unwritten.set(self.unwritten.get().saturating_sub(n));
        let mut spare = self.spare.borrow_mut();
        if chunk.capacity() == CHUNK_BYTES && spare.len() < SPARE_CHUNKS && !self.closed.get() {
            chunk.clear();
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
    while let Some(chunk) = queue.take().await {
        let n = chunk.len();
        let (r, chunk) = stream.write_vec(chunk).await;
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

    #[test]
    fn frames_keep_their_order_across_chunks_and_chunks_are_reused() {
        let q = SendQueue::default();
        let mut expect = Vec::new();
        for i in 0..200u32 {
            // 4 KiB writes, with a 1 MiB frame now and then.
            let len = if i % 50 == 7 { 1 << 20 } else { 4096 + 24 };
            let byte = u8::try_from(i % 251).unwrap_or(0);
            q.push_with(len, |b| b.resize(b.len() + len, byte));
            expect.resize(expect.len() + len, byte);
        }
        assert_eq!(q.unwritten(), expect.len());
        let mut got = Vec::new();
        let mut chunks = q.chunks.borrow_mut();
        assert!(chunks.iter().all(|c| c.capacity() >= CHUNK_BYTES));
        assert!(
            chunks.iter().all(|c| c.len() <= c.capacity().max(1 << 20)),
            "no chunk grew past its size"
        );
        while let Some(c) = chunks.pop_front() {
            got.extend_from_slice(&c);
            drop(chunks);
            q.written(c.len(), c);
            chunks = q.chunks.borrow_mut();
        }
        assert_eq!(got, expect);
        assert_eq!(q.unwritten(), 0);
        assert!(!q.spare.borrow().is_empty() && q.spare.borrow().len() <= SPARE_CHUNKS);
    }
}
