//! The transmission phase: the reader validates requests and hands each to the backend with a
//! [`Responder`]; replies flow through a channel to a single writer that batches them into few
//! syscalls. No task, future or allocation per request besides the write payload.
//!
//! Every request holds a slot (and, for reads and writes, its payload's bytes) from the moment
//! its header is read until its reply is on the socket. A client that stops reading its replies
//! therefore stops the reader once the slots or bytes run out, instead of making the reply
//! queue grow without bound; other connections are not affected.

use std::io;
use std::rc::Rc;

use super::handshake::Session;
use super::local::{self, Budget, Held};
use super::stream::{Reader, Stream};
use super::{BlockBackend, Command, Completion};
use crate::codec::{self, Limits, Validated};
use crate::proto::*;

/// Requests in flight per connection (until their reply is written); beyond it the reader
/// stops reading (back-pressure).
const MAX_IN_FLIGHT: usize = 256;
/// Payload bytes of reads and writes per connection held in memory until their reply is
/// written; at least two requests of the largest size (`max_block`, 32 MiB) fit.
const MAX_QUEUED_BYTES: u32 = 64 << 20;
/// Replies are gathered up to this size before one write.
const BATCH_BYTES: usize = 1 << 20;
/// Read data bigger than this is written on its own rather than copied into the batch.
const COPY_LIMIT: usize = 64 * 1024;

enum Reply {
    Simple {
        cookie: u64,
        errno: u32,
    },
    Read {
        cookie: u64,
        offset: u64,
        len: u32,
        result: Completion,
    },
    ReadError {
        cookie: u64,
        errno: u32,
        message: String,
    },
    BlockStatus {
        cookie: u64,
        len: u32,
    },
}

/// A reply with what its request holds (its slot and payload bytes) until the reply has been
/// written.
struct Queued {
    reply: Reply,
    _held: Held,
}

/// Where one request's completion goes: the backend calls [`Responder::complete`] when it is
/// done, in any order, from any task of the server's thread. A responder dropped without an
/// answer (the backend lost the request) answers EIO, so the client never waits for ever.
pub struct Responder {
    pending: Option<Pending>,
}

struct Pending {
    tx: local::Sender<Queued>,
    cookie: u64,
    /// For reads: what the reply's data chunk describes.
    read: Option<(u64, u32)>,
    held: Held,
}

impl Responder {
    /// Queue the reply (a closed connection drops it: nobody is left to read it).
    pub fn complete(mut self, result: Completion) {
        if let Some(p) = self.pending.take() {
            p.send(result);
        }
    }
}

impl Pending {
    fn send(self, result: Completion) {
        let cookie = self.cookie;
        let reply = match (self.read, result) {
            (Some((offset, len)), result) => Reply::Read {
                cookie,
                offset,
                len,
                result,
            },
            (None, Completion::Error { errno, .. }) => Reply::Simple { cookie, errno },
            (None, _) => Reply::Simple { cookie, errno: 0 },
        };
        self.tx.send(Queued {
            reply,
            _held: self.held,
        });
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.send(Completion::Error {
                errno: EIO,
                message: "request dropped by the server".into(),
            });
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransmissionError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("protocol violation: {0}")]
    Protocol(#[from] codec::CodecError),
    #[error("hanging up: {0}")]
    Hangup(String),
}

pub async fn run<S: Stream>(
    stream: Rc<S>,
    mut reader: Reader<S>,
    backend: Rc<dyn BlockBackend>,
    session: Session,
) -> Result<(), TransmissionError> {
    let limits = Limits {
        size: session.info.size_bytes,
        max_payload: session.info.max_block,
        read_only: session.info.read_only,
        structured: session.structured,
        block_status: session.block_status,
    };
    let (tx, rx) = local::queue();
    let writer = tokio_uring::spawn(write_replies(Rc::clone(&stream), rx, session.structured));
    // The per-connection budget of in-flight requests and payload bytes.
    let budget = Budget::new(MAX_IN_FLIGHT, MAX_QUEUED_BYTES as usize);
    let result = read_requests(&mut reader, &backend, &limits, &tx, &budget).await;
    backend.run_submitted();
    // In-flight tasks hold their own senders: the writer ends once the last reply is out.
    drop(tx);
    let written = writer.await.unwrap_or(Ok(()));
    result.and(written.map_err(TransmissionError::Io))
}

async fn read_requests<S: Stream>(
    reader: &mut Reader<S>,
    backend: &Rc<dyn BlockBackend>,
    limits: &Limits,
    tx: &local::Sender<Queued>,
    budget: &Rc<Budget>,
) -> Result<(), TransmissionError> {
    loop {
        // The requests one read brought are submitted together (one pass of the backend for
        // them all); before anything that can wait, the backend starts what it queued.
        if !request_ahead(reader.ahead(), budget) {
            backend.run_submitted();
        }
        let Some(raw) = reader.read_array::<REQUEST_HEADER_BYTES>().await? else {
            return Ok(());
        };
        let h = codec::decode_request(&raw)?;
        let mut held = budget.slot().await;
        if tx.is_closed() {
            // The writer failed (the client is gone): requests still buffered in the socket
            // would be served for nobody. The writer's error is what `run` reports.
            return Ok(());
        }
        let reject = |errno: u32, message: String, held: Held| {
            let reply = if h.kind == CMD_READ && limits.structured {
                Reply::ReadError {
                    cookie: h.cookie,
                    errno,
                    message,
                }
            } else {
                Reply::Simple {
                    cookie: h.cookie,
                    errno,
                }
            };
            // A closed queue means the writer failed; the reader notices on its next read.
            tx.send(Queued { reply, _held: held });
        };
        let v = codec::validate(&h, limits);
        let cmd = match v {
            Validated::Disconnect => return Ok(()),
            Validated::Hangup { why } => return Err(TransmissionError::Hangup(why)),
            Validated::Reject { errno, drain, why } => {
                tracing::debug!("nbd: rejecting request {:#x}: {why}", h.cookie);
                reader.skip(drain as usize).await?;
                reject(errno, why, held);
                continue;
            }
            _ => v,
        };
        if let Some((errno, why)) = backend.gate() {
            if let Validated::Write { len, .. } = cmd {
                reader.skip(len as usize).await?;
            }
            reject(errno, why, held);
            continue;
        }
        let payload_len = match cmd {
            Validated::Read { len, .. } | Validated::Write { len, .. } => len,
            _ => 0,
        };
        if payload_len > 0 {
            let bytes = payload_len.min(MAX_QUEUED_BYTES) as usize;
            budget.add_bytes(&mut held, bytes).await;
        }
        let (command, read_len) = match cmd {
            Validated::Read { offset, len } => (Command::Read { offset, len }, Some((offset, len))),
            Validated::Write { offset, len, fua } => {
                let data = reader.read_bytes(len as usize).await?;
                (Command::Write { offset, data, fua }, None)
            }
            Validated::Flush => (Command::Flush, None),
            Validated::Trim { offset, len, fua } => (Command::Trim { offset, len, fua }, None),
            Validated::WriteZeroes {
                offset,
                len,
                fua,
                no_hole,
            } => (
                Command::WriteZeroes {
                    offset,
                    len,
                    fua,
                    no_hole,
                },
                None,
            ),
            Validated::Cache { offset, len } => (Command::Cache { offset, len }, None),
            Validated::BlockStatus { len, .. } => {
                let reply = Reply::BlockStatus {
                    cookie: h.cookie,
                    len,
                };
                tx.send(Queued { reply, _held: held });
                continue;
            }
            Validated::Disconnect | Validated::Hangup { .. } | Validated::Reject { .. } => continue,
        };
        let done = Responder {
            pending: Some(Pending {
                tx: tx.clone(),
                cookie: h.cookie,
                read: read_len,
                held,
            }),
        };
        backend.submit(command, done);
    }
}

/// Whether `ahead` (bytes the reader holds) starts with a whole request, header and write
/// payload, for which the budget has room: reading and admitting it will not wait. A header
/// that does not decode counts as ahead (it fails at once).
fn request_ahead(ahead: &[u8], budget: &Budget) -> bool {
    let Some(head) = ahead.first_chunk::<REQUEST_HEADER_BYTES>() else {
        return false;
    };
    let Ok(h) = codec::decode_request(head) else {
        return true;
    };
    let (body, bytes) = match h.kind {
        CMD_WRITE => (h.len as usize, h.len),
        CMD_READ => (0, h.len),
        _ => (0, 0),
    };
    ahead.len() - REQUEST_HEADER_BYTES >= body
        && budget.has_room(1, bytes.min(MAX_QUEUED_BYTES) as usize)
}

/// Encodes one reply into `batch`; returns big read data that should be written separately.
fn encode(reply: Reply, structured: bool, batch: &mut Vec<u8>) -> Option<Vec<u8>> {
    match reply {
        Reply::Simple { cookie, errno } => codec::encode_simple_reply(batch, errno, cookie),
        Reply::BlockStatus { cookie, len } => codec::encode_block_status(batch, cookie, len),
        Reply::ReadError {
            cookie,
            errno,
            message,
        } => error_reply(batch, structured, cookie, errno, &message),
        Reply::Read {
            cookie,
            offset,
            len,
            result,
        } => {
            let data = match result {
                Completion::Data(d) if d.len() == len as usize => d,
                Completion::Data(d) => {
                    let msg = format!("backend returned {} bytes for a {len}-byte read", d.len());
                    error_reply(batch, structured, cookie, EIO, &msg);
                    return None;
                }
                Completion::Error { errno, message } => {
                    error_reply(batch, structured, cookie, errno, &message);
                    return None;
                }
                Completion::Done => {
                    error_reply(
                        batch,
                        structured,
                        cookie,
                        EIO,
                        "backend returned no data for a read",
                    );
                    return None;
                }
            };
            if structured && len > 0 {
                codec::encode_read_chunk_header(batch, cookie, offset, len);
            } else if structured {
                codec::encode_chunk_header(batch, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
            } else {
                codec::encode_simple_reply(batch, 0, cookie);
            }
            if data.len() > COPY_LIMIT {
                return Some(data);
            }
            batch.extend_from_slice(&data);
        }
    }
    None
}

fn error_reply(batch: &mut Vec<u8>, structured: bool, cookie: u64, errno: u32, message: &str) {
    if structured {
        codec::encode_error_chunk(batch, cookie, errno, message);
    } else {
        codec::encode_simple_reply(batch, errno, cookie);
    }
}

async fn write_replies<S: Stream>(
    stream: Rc<S>,
    mut rx: local::Receiver<Queued>,
    structured: bool,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    // What the replies in `batch` hold, released once they are written.
    let mut held = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(Queued { reply, _held: h }) = next.take() {
            held.push(h);
            if let Some(big) = encode(reply, structured, &mut batch) {
                let (r, b) = stream.write_vec(std::mem::take(&mut batch)).await;
                r?;
                batch = b;
                batch.clear();
                stream.write_vec(big).await.0?;
                held.clear();
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv();
            }
        }
        if !batch.is_empty() {
            let (r, b) = stream.write_vec(std::mem::take(&mut batch)).await;
            r?;
            batch = b;
            batch.clear();
        }
        held.clear();
    }
    Ok(())
}
