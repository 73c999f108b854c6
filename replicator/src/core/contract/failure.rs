//! Disk and link failures as they reach the core (issue 21): values, not strings. Each says
//! what failed (which device and path, or which socket), doing what, and the OS's answer, so
//! the engine can match on them and the operator reads where to look. They are `Clone + Eq`
//! so that the simulator can build and compare them; `std::io::Error` is neither, so the OS's
//! answer is kept as its errno (or, for the few errors std raises without one, its kind) and
//! rendered as std renders it.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::meta::MetaError;

/// Linux's EIO (the core builds without `libc`).
const EIO: i32 = 5;

/// The operating system's answer to a failed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsError {
    /// The errno the system call returned.
    Errno(i32),
    /// An error std raised without a system call failing (a short read is `UnexpectedEof`).
    Kind(io::ErrorKind),
}

impl OsError {
    /// The errno to report (to the NBD client, in the status): EIO where the OS gave none.
    pub fn errno(&self) -> i32 {
        match self {
            OsError::Errno(e) => *e,
            OsError::Kind(_) => EIO,
        }
    }
}

impl From<&io::Error> for OsError {
    fn from(e: &io::Error) -> OsError {
        match e.raw_os_error() {
            Some(errno) => OsError::Errno(errno),
            None => OsError::Kind(e.kind()),
        }
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // As std prints it: "No such file or directory (os error 2)".
            OsError::Errno(errno) => io::Error::from_raw_os_error(*errno).fmt(f),
            OsError::Kind(kind) => kind.fmt(f),
        }
    }
}

/// Which of the node's devices an operation was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The resource's `disk` (data, and the metadata too with `meta-disk internal`).
    Backing,
    /// The `meta-disk PATH` of a resource with external metadata.
    Meta,
}

impl Device {
    /// The configuration keyword naming the device.
    pub fn keyword(self) -> &'static str {
        match self {
            Device::Backing => "disk",
            Device::Meta => "meta-disk",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Backing => "backing disk",
            Device::Meta => "meta disk",
        })
    }
}

/// What the driver was doing when a device failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    OpenDirect,
    Stat,
    Size,
    DuplicateHandle,
    Read,
    ReadDirect,
    Write,
    WriteDirect,
    Flush,
    /// The data flush that precedes a metadata write claiming the data durable.
    FlushBeforeMeta,
    Fallocate,
    WriteZeroes,
    /// Reading and validating the metadata at attach.
    OpenMetadata,
    /// A superblock, activity-log or bitmap update.
    MetadataWrite,
    /// Starting the thread that performs the metadata updates (attach).
    StartMetaThread,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Open => "open read-write",
            Op::OpenDirect => "open with O_DIRECT",
            Op::Stat => "stat",
            Op::Size => "size",
            Op::DuplicateHandle => "duplicate the handle of",
            Op::Read => "read",
            Op::ReadDirect => "read (O_DIRECT)",
            Op::Write => "write",
            Op::WriteDirect => "write (O_DIRECT)",
            Op::Flush => "fdatasync",
            Op::FlushBeforeMeta => "fdatasync before a metadata write",
            Op::Fallocate => "fallocate",
            Op::WriteZeroes => "write zeroes",
            Op::OpenMetadata => "open the metadata",
            Op::MetadataWrite => "metadata write",
            Op::StartMetaThread => "start the metadata thread for",
        })
    }
}

/// Why the metadata on a device could not be used at attach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaProblem {
    /// Reading the metadata area failed.
    #[error("{what} at byte offset {off_bytes} failed: {os}")]
    Io {
        what: &'static str,
        off_bytes: u64,
        os: OsError,
    },
    /// The metadata was read and is not usable: absent (`missing`, `create-md` fixes it),
    /// corrupt, from another version, or too small for the device. `text` is the metadata
    /// layer's own description (`MetaError`, which is not `Clone`), which names the fix.
    #[error("{text}")]
    Invalid { missing: bool, text: String },
}

impl From<&MetaError> for MetaProblem {
    fn from(e: &MetaError) -> MetaProblem {
        match e {
            MetaError::Io { op, off, source } => MetaProblem::Io {
                what: op,
                off_bytes: *off,
                os: OsError::from(source),
            },
            e => MetaProblem::Invalid {
                missing: e.is_missing_metadata(),
                text: e.to_string(),
            },
        }
    }
}

/// Why the driver could not open the disk for `attach` (`Input::DiskOpened`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenFailure {
    /// The path in the configuration does not exist or cannot be looked at.
    #[error(
        "{device} {} is missing or unreadable: {os}; check `{}` in the resource's `on` section",
        path.display(),
        device.keyword()
    )]
    Missing {
        device: Device,
        path: PathBuf,
        os: OsError,
    },
    /// The backing disk is a directory, socket, ...
    #[error("{device} {} is neither a regular file nor a block device", path.display())]
    NotADisk { device: Device, path: PathBuf },
    /// An operation on the device failed (the OS error says why).
    #[error("{op} on {device} {}: {os}", path.display())]
    Io {
        device: Device,
        op: Op,
        path: PathBuf,
        os: OsError,
    },
    /// The device's metadata is missing or invalid, or reading it failed.
    #[error("{op} on {device} {}: {problem}", path.display())]
    Metadata {
        device: Device,
        op: Op,
        path: PathBuf,
        problem: MetaProblem,
    },
    /// No disk is attached (a driver's device vanished under the open).
    #[error("no backing disk attached")]
    NotAttached,
    /// A driver defect: the open's id came back with another kind of completion.
    #[error("internal: the driver answered the disk open with another kind of completion")]
    OtherCompletion,
}

impl OpenFailure {
    /// True when the device holds no usable metadata: `repadm create-md` is the fix.
    pub fn is_missing_metadata(&self) -> bool {
        matches!(
            self,
            OpenFailure::Metadata {
                problem: MetaProblem::Invalid { missing: true, .. },
                ..
            }
        )
    }
}

/// Which of the two sockets of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkSocket {
    /// Data, resync and state packets.
    Data,
    /// Acks and pings.
    Meta,
}

impl fmt::Display for LinkSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkSocket::Data => "data socket",
            LinkSocket::Meta => "meta socket",
        })
    }
}

/// A link lost to a socket error other than a clean close (`LinkLoss::NetworkFailure`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetFailure {
    /// Reading the socket failed (ECONNRESET, ETIMEDOUT, ...).
    #[error("{socket}: {os}")]
    Socket { socket: LinkSocket, os: OsError },
    /// The TLS layer refused what the peer sent (a corrupt record, a fatal alert); the driver
    /// logs the TLS library's words.
    #[error("{socket}: TLS refused the peer's data")]
    Tls { socket: LinkSocket },
    /// The peer speaks TLS and this node does not.
    #[error("{}", PEER_SPEAKS_TLS)]
    PeerSpeaksTls,
}

/// What to tell the operator when one node has `net { tls yes; }` and the other not.
pub const PEER_SPEAKS_TLS: &str = "the peer speaks TLS (it has `net { tls yes; }`) and this node does not: set tls, with certificates, on both nodes or on neither";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_reads_as_std_prints_it() {
        let e = io::Error::from_raw_os_error(2);
        assert_eq!(OsError::from(&e).to_string(), e.to_string());
        let short = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(OsError::from(&short).errno(), EIO);
        assert_eq!(OsError::from(&short).to_string(), "unexpected end of file");
    }

    #[test]
    fn a_missing_device_names_the_path_and_the_keyword() {
        let f = OpenFailure::Missing {
            device: Device::Meta,
            path: "/dev/md9".into(),
            os: OsError::Errno(2),
        };
        assert_eq!(
            f.to_string(),
            "meta disk /dev/md9 is missing or unreadable: No such file or directory (os error 2); \
             check `meta-disk` in the resource's `on` section"
        );
    }
}
