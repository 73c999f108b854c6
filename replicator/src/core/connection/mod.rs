//! The connection to the peer (DRBD's connection): link lifecycle, packet dispatch, the handshake
//! (reports both ways and the decision), liveness, cluster-wide role changes.

pub(crate) mod after;
pub(crate) mod decide;
pub(crate) mod dispatch;
pub(crate) mod handshake;
pub(crate) mod lifecycle;
pub(crate) mod liveness;
pub(crate) mod peers;
pub(crate) mod receive_report;
pub(crate) mod report;
pub(crate) mod vote;
pub(crate) mod witness;
