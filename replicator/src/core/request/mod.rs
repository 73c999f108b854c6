//! The request path: client requests, the activity-log gate, replication to the peer and the
//! transfer log.

pub(crate) mod client;
pub(crate) mod held;
pub(crate) mod replication;
pub(crate) mod requests;
pub(crate) mod transfer_log;
