//! `DiskError`: what can go wrong on the devices the driver opens (the backing disk and the
//! metadata device). Each value keeps the device, its path, the operation and the OS error (or
//! the metadata layer's `MetaError`), so the one place that renders it for the engine
//! (`IoFailure`: errno + message) names all three and the errno comes from the OS, not from a
//! guess.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::core::IoFailure;
use crate::meta::MetaError;

/// Which of the driver's devices an operation was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The resource's `disk` (data, and the metadata too with `meta-disk internal`).
    Backing,
    /// The `meta-disk PATH` of a resource with external metadata.
    Meta,
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

/// Errors of the driver's devices. Each variant says when it happens.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The path in the configuration does not exist or cannot be looked at (attach).
    #[error(
        "{device} {} is missing or unreadable: {source}; check `{}` in the resource's `on` section",
        path.display(),
        keyword(*device)
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

/// The configuration keyword naming the device.
fn keyword(device: Device) -> &'static str {
    match device {
        Device::Backing => "disk",
        Device::Meta => "meta-disk",
    }
}

impl DiskError {
    /// `Io` of `op` on `device` at `path`, for `map_err`.
    pub fn io(device: Device, op: Op, path: &std::path::Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| DiskError::Io {
            device,
            op,
            path,
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
