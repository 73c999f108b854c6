//! NBD for rep: a pure codec ([`codec`]) and a tokio-uring server ([`server`]) that exports
//! whatever implements [`server::BlockBackend`].

#![forbid(unsafe_code)]

pub mod codec;
pub mod proto;
pub mod server;
