//! The io_uring driver (docs/architecture.md §3, §11): runs the engine on one thread, performs its
//! outputs on the backing device, the metadata and the sockets, and feeds completions back.
//! Everything with a file descriptor lives here; the engine stays pure.

pub mod adjust;
pub mod backing;
pub mod busy_poll;
pub mod control_lines;
pub mod control_server;
pub mod daemon;
pub mod dependency;
pub mod driver;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(feature = "fault-injection")]
pub mod fault_error;
pub mod handlers;
pub mod hasher;
pub mod link;
pub mod metaio;
pub mod metrics;
pub mod nbd_backend;
pub mod outdater;
pub mod paths;
pub mod port;
pub mod send_queue;
pub mod sockets;
pub mod start_error;
pub mod surface;
pub mod tls;
pub mod witness_daemon;
pub mod witness_link;

#[cfg(test)]
mod config83_tests;
