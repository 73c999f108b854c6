//! `StartError`: why repd could not start (or stopped before serving). Each variant names the
//! file, option or address to fix; the cause, where there is one, follows as the source, and
//! `repd` prints the whole chain (`render`) before it exits with `EXIT_CONFIG`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::sockets::SocketError;
use super::tls::TlsConfigError;
use crate::core::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `.res` file does not parse.
    #[error("invalid configuration {}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: rep_resources::ParseError,
    },
    /// The resource or this node is not in the configuration (or its sections disagree).
    #[error(transparent)]
    View(#[from] rep_resources::ConfigError),
    #[error("cannot read the host name; pass --node or set REP_NODE")]
    HostName(#[source] nix::Error),
    /// A repd for this resource already runs in this run dir.
    #[error(
        "resource {resource} is already up (repd pid {pid}, {}); run `repadm down {resource}` first",
        pid_file.display()
    )]
    AlreadyUp {
        resource: String,
        pid: i32,
        pid_file: PathBuf,
    },
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("cannot listen for the peer on {addr} (address in the `on {node}` section)")]
    PeerListen {
        addr: SocketAddr,
        node: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen for NBD on {addr} (nbd-listen)")]
    NbdListen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen for metrics on {addr} (metrics-listen)")]
    MetricsListen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the hashing threads")]
    Hasher(#[source] io::Error),
    /// The engine refused the attach at start (its refusal names the cause and the fix).
    #[error("{}", refusal.render(resource))]
    Attach { resource: String, refusal: Refusal },
    #[error("cannot write {}", path.display())]
    PidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The error and its causes on one line, `outer: cause: cause`.
pub fn render(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        next = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_option_the_file_and_the_os_error() {
        let e = StartError::from(TlsConfigError::Unreadable {
            option: "tls-ca",
            path: "/etc/rep/ca.pem".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert_eq!(
            render(&e),
            "cannot read tls-ca /etc/rep/ca.pem: No such file or directory (os error 2)"
        );
        let e = StartError::NbdListen {
            addr: "127.0.0.1:10809".parse().expect("address"),
            source: io::Error::from_raw_os_error(libc::EADDRINUSE),
        };
        assert_eq!(
            render(&e),
            "cannot listen for NBD on 127.0.0.1:10809 (nbd-listen): Address already in use (os error 98)"
        );
    }
}
