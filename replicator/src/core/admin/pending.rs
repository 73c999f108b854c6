//! What an admin command waits for before it can be answered (a durable metadata write, an
//! opened disk): kept by the I/O owner table with the operation it waits on.

use crate::core::contract::ids::AdminId;
use crate::core::contract::io::AdminCmd;

/// What an admin command is waiting for before it can be answered.
#[derive(Debug)]
pub(crate) struct PendingAdmin {
    pub id: AdminId,
    pub message: String,
}

/// Admin commands that wait for something other than one operation: `secondary`/`detach`
/// for client requests to drain, `primary` for the peer's consent, and the reconnects after an
/// adjust of an agreed setting.
#[derive(Debug, Default)]
pub(crate) struct AdminWaits {
    pub(crate) drain: Vec<(AdminId, AdminCmd)>,
    /// (admin id, --force).
    pub(crate) pending_primary: Option<(AdminId, bool)>,
    pub(crate) renegotiation: super::renegotiate::Renegotiation,
}
