//! The receiving side of replication: the peer's writes, resync blocks and reads.

pub(crate) mod apply;
pub(crate) mod peer_rx;
