//! Client I/O held while fencing froze it (`susp-fen`): requests that arrived, and replies of
//! requests that completed, both released in order when I/O thaws.

use std::collections::VecDeque;

use crate::core::contract::io::{ClientError, ClientOp, ReqId};

/// Client I/O held while fencing froze it.
#[derive(Debug, Default)]
pub(crate) struct Freeze {
    /// Requests that arrived while frozen, in order: started when I/O thaws.
    queued: VecDeque<(ReqId, ClientOp)>,
    /// Replies of requests that completed while frozen: sent when I/O thaws.
    replies: Vec<(ReqId, Result<(), ClientError>)>,
    /// The link was lost while frozen: start a new data generation when I/O thaws.
    pub(crate) new_uuid_on_thaw: bool,
}

impl Freeze {
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.replies.is_empty()
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
}
