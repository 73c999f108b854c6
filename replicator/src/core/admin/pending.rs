//! What an admin command waits for before it can be answered (a durable metadata write, an
//! opened disk): kept by the I/O owner table with the operation it waits on.

use crate::core::contract::ids::AdminId;

/// What an admin command is waiting for before it can be answered.
#[derive(Debug)]
pub(crate) struct PendingAdmin {
    pub id: AdminId,
    pub message: String,
}
