//! `DiskError`: what can go wrong on the devices the driver opens (the backing disk and the
//! metadata device). Each value keeps the device, its path, the operation and the OS error (or
//! the metadata layer's `MetaError`), so the one place that renders it for the engine
//! (`IoFailure`: errno + message) names all three and the errno comes from the OS, not from a
//! guess.

use std::io;
use std::path::PathBuf;

/// The device and the operation are the core's vocabulary too (`OpenFailure`).
pub use crate::core::failure::{Device, Op};
use crate::core::failure::{MetaProblem, OsError};
use crate::core::{IoFailure, OpenFailure};
use crate::meta::MetaError;

/// Errors of the driver's devices. Each variant says when it happens.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The path in the configuration does not exist or cannot be looked at (attach).
    #[error(
        "{device} {} is missing or unreadable: {source}; check `{}` in the resource's `on` section",
        path.display(),
        device.keyword()
    )]
    Missing {
        device: Device,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The backing disk is a directory, socket, ... (attach).
    #[error("{device} {} is neither a regular file nor a block device", path.display())]
    NotADisk { device: Device, path: PathBuf },

    /// An operation on the device failed (the OS error says why).
    #[error("{op} on {device} {}: {source}", path.display())]
    Io {
        device: Device,
        op: Op,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The metadata on the device is missing or invalid (attach), or updating it failed.
    #[error("{op} on {device} {}: {source}", path.display())]
    Meta {
        device: Device,
        op: Op,
        path: PathBuf,
        #[source]
        source: MetaError,
    },

    /// An operation arrived while no disk is attached (after a detach, before an attach).
    #[error("no backing disk attached")]
    NotAttached,

    /// The test-only fault hook failed the operation (`repadm fault`).
    #[cfg(feature = "fault-injection")]
    #[error("{op} on {device} {}: {source}", path.display())]
    Fault {
        device: Device,
        op: Op,
        path: PathBuf,
        #[source]
        source: super::fault_error::FaultError,
    },
}

impl DiskError {
    /// `Io` of `op` on `device` at `path`, for `map_err`.
    /// The path is copied only when the error happens: this runs once per I/O, on the hot path.
    pub fn io(
        device: Device,
        op: Op,
        path: &std::path::Path,
    ) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| DiskError::Io {
            device,
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The errno the engine and the NBD client see: the OS's where there is one.
    pub fn errno(&self) -> i32 {
        let os = |e: &io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        match self {
            DiskError::Missing { source, .. } | DiskError::Io { source, .. } => os(source),
            DiskError::Meta {
                source: MetaError::Io { source, .. },
                ..
            } => os(source),
            DiskError::Meta { .. } => libc::EIO,
            DiskError::NotADisk { .. } => libc::ENOTBLK,
            DiskError::NotAttached => libc::ENODEV,
            #[cfg(feature = "fault-injection")]
            DiskError::Fault { source, .. } => source.errno(),
        }
    }
}

/// What the engine learns of a failed attach: the same words, as a value it can match on.
impl From<DiskError> for OpenFailure {
    fn from(e: DiskError) -> OpenFailure {
        match e {
            DiskError::Missing {
                device,
                path,
                source,
            } => OpenFailure::Missing {
                device,
                path,
                os: OsError::from(&source),
            },
            DiskError::NotADisk { device, path } => OpenFailure::NotADisk { device, path },
            DiskError::Io {
                device,
                op,
                path,
                source,
            } => OpenFailure::Io {
                device,
                op,
                path,
                os: OsError::from(&source),
            },
            DiskError::Meta {
                device,
                op,
                path,
                source,
            } => OpenFailure::Metadata {
                device,
                op,
                path,
                problem: MetaProblem::from(&source),
            },
            DiskError::NotAttached => OpenFailure::NotAttached,
            #[cfg(feature = "fault-injection")]
            DiskError::Fault {
                device,
                op,
                path,
                source,
            } => OpenFailure::Io {
                device,
                op,
                path,
                os: OsError::Errno(source.errno()),
            },
        }
    }
}

impl From<DiskError> for IoFailure {
    fn from(e: DiskError) -> IoFailure {
        IoFailure {
            errno: e.errno(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_failure_names_device_operation_and_os_error() {
        let e = DiskError::io(Device::Meta, Op::MetadataWrite, "/dev/md0".as_ref())(
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let f = IoFailure::from(e);
        assert_eq!(f.errno, libc::ENOSPC);
        assert!(f.message.contains("metadata write"), "{}", f.message);
        assert!(f.message.contains("meta disk /dev/md0"), "{}", f.message);
        assert!(f.message.contains("No space left"), "{}", f.message);
    }

    #[test]
    fn the_engine_reads_an_open_failure_as_the_operator_did_before() {
        let cases = [
            DiskError::Missing {
                device: Device::Backing,
                path: "/dev/nope".into(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            },
            DiskError::NotADisk {
                device: Device::Backing,
                path: "/tmp".into(),
            },
            DiskError::io(Device::Backing, Op::OpenDirect, "/dev/sdz".as_ref())(
                io::Error::from_raw_os_error(libc::EINVAL),
            ),
            DiskError::Meta {
                device: Device::Meta,
                op: Op::OpenMetadata,
                path: "/dev/md0".into(),
                source: MetaError::NoMetadata {
                    where_: "/dev/md0".into(),
                },
            },
            DiskError::Meta {
                device: Device::Backing,
                op: Op::OpenMetadata,
                path: "/dev/sdz".into(),
                source: MetaError::Io {
                    op: "superblock read",
                    off: 4096,
                    source: io::Error::from_raw_os_error(libc::EIO),
                },
            },
        ];
        for e in cases {
            let text = e.to_string();
            let failure = OpenFailure::from(e);
            assert_eq!(failure.to_string(), text);
        }
        let missing = OpenFailure::from(DiskError::Meta {
            device: Device::Meta,
            op: Op::OpenMetadata,
            path: "/dev/md0".into(),
            source: MetaError::NoMetadata {
                where_: "/dev/md0".into(),
            },
        });
        assert!(missing.is_missing_metadata());
        assert!(
            missing.to_string().contains("repadm create-md"),
            "{missing}"
        );
    }

    #[test]
    fn a_metadata_io_error_keeps_its_errno() {
        let e = DiskError::Meta {
            device: Device::Backing,
            op: Op::MetadataWrite,
            path: "/x".into(),
            source: MetaError::Io {
                op: "superblock write",
                off: 4096,
                source: io::Error::from_raw_os_error(libc::EROFS),
            },
        };
        assert_eq!(e.errno(), libc::EROFS);
        assert_eq!(DiskError::NotAttached.errno(), libc::ENODEV);
    }
}
