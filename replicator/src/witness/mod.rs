//! The diskless witness (docs/quorum.md, "The witness"): a third node that holds no data and
//! breaks ties. What it decides is here, without I/O (`relay`); its daemon is
//! runtime/witness_daemon, and a data node's end of its link is runtime/witness_link.

pub mod relay;
