//! What the test-only fault hook (`fault/`) reports when it fails an operation: a leaf of
//! its own, so that `error.rs` (`DiskError::Fault`) does not import the hook.

use std::io;

/// Why the hook failed an operation (or could not write its cache out).
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("injected {op} error (repadm fault disk-error {rule})")]
    Injected {
        op: &'static str,
        rule: &'static str,
    },
    #[error("the device lost power (repadm fault power-loss)")]
    PoweredOff,
    #[error("volatile cache: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("volatile cache holds writes but no device is open to write them to")]
    NoDevice,
}

impl FaultError {
    /// EIO for what the hook injects, the OS's errno when its own I/O failed.
    pub fn errno(&self) -> i32 {
        match self {
            FaultError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }

    pub(crate) fn into_io(self) -> io::Error {
        match self {
            FaultError::Io { source, .. } => source,
            e => io::Error::other(e),
        }
    }
}
