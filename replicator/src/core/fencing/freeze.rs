//! Client I/O held back: while fencing froze it (`susp-fen`), requests that arrived and
//! replies of requests that completed; while a new data generation started without the peer
//! is not yet on disk (the generation gate), replies. Both are released in order.

use std::collections::VecDeque;

use crate::core::contract::ids::IoId;
use crate::core::contract::io::{ClientError, ClientOp, ReqId};

/// Client I/O held back.
#[derive(Debug, Default)]
pub(crate) struct Freeze {
    /// Requests that arrived while frozen, in order: started when I/O thaws.
    queued: VecDeque<(ReqId, ClientOp)>,
    /// Replies of requests that completed while frozen or gated: sent when both are over.
    replies: Vec<(ReqId, Result<(), ClientError>)>,
    /// The link was lost while frozen: start a new data generation when I/O thaws.
    pub(crate) new_uuid_on_thaw: bool,
    /// The generation gate (docs/architecture.md, "Acknowledged means recoverable").
    gate: Gate,
}

/// A Primary that goes on without its peer starts a new data generation; a write it
/// acknowledges from then on exists only here, and only that generation, once durable, makes
/// the next handshake see it (as split brain, or as our data to sync) instead of silently
/// syncing the peer's older generation over it. Until the superblock carrying it is written,
/// replies wait.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Gate {
    #[default]
    Open,
    /// Closed before the link's requests complete; the superblock write is not issued yet.
    Starting,
    /// Waiting for this superblock write.
    Writing(IoId),
}

impl Freeze {
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.replies.is_empty()
    }
    pub(crate) fn holds_requests(&self) -> bool {
        !self.queued.is_empty()
    }
    pub(crate) fn queue(&mut self, req: ReqId, op: ClientOp) {
        self.queued.push_back((req, op));
    }
    pub(crate) fn hold(&mut self, req: ReqId, result: Result<(), ClientError>) {
        self.replies.push((req, result));
    }
    pub(crate) fn take_replies(&mut self) -> Vec<(ReqId, Result<(), ClientError>)> {
        std::mem::take(&mut self.replies)
    }
    pub(crate) fn take_queued(&mut self) -> VecDeque<(ReqId, ClientOp)> {
        std::mem::take(&mut self.queued)
    }

    /// Whether replies wait for a new generation to reach the disk.
    pub(crate) fn gated(&self) -> bool {
        self.gate != Gate::Open
    }
    /// A new generation is about to start: replies wait from now on.
    pub(crate) fn close_gate(&mut self) {
        self.gate = Gate::Starting;
    }
    /// The superblock carrying the new generation was issued as `io` (`None`: nothing to
    /// write, e.g. no disk). Returns whether the gate is open now.
    pub(crate) fn gate_on(&mut self, io: Option<IoId>) -> bool {
        self.gate = match io {
            Some(io) => Gate::Writing(io),
            None => Gate::Open,
        };
        !self.gated()
    }
    /// Metadata write `io` completed: whether it was the one the gate waited for (the gate
    /// is open now).
    pub(crate) fn gate_written(&mut self, io: IoId) -> bool {
        if self.gate == Gate::Writing(io) {
            self.gate = Gate::Open;
            true
        } else {
            false
        }
    }
}
