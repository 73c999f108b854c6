//! The data path behind the hook: `FaultDisk` in place of `BackingDisk`, and `FaultFlush`,
//! the data flush the metadata thread issues before a metadata write.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use rep_resources::{MetaDisk, NodeView};

use super::overlay::Src;
use super::{Dev, FaultError, FaultHook, Kind};
use crate::core::io::{split_zero_blocks, Extent};
use crate::core::AttachInfo;
use crate::runtime::backing::{BackingDisk, BackingFlush, WriteBuf};
use crate::runtime::error::{Device, DiskError, Op};
use crate::runtime::metaio::{DataFlush, MetaHandle};

/// Open the backing device and the metadata behind the hook (the driver's `open_disk`).
pub fn open(
    hook: &FaultHook,
    view: &NodeView,
) -> Result<(FaultDisk, MetaHandle, AttachInfo), DiskError> {
    let disk = FaultDisk::open(&view.disk, hook.clone())?;
    let internal = matches!(view.meta_disk, MetaDisk::Internal);
    let (meta, info) =
        MetaHandle::open_with(view, disk.size_bytes, &|file| hook.meta_dev(file, internal))?;
    Ok((disk, meta, info))
}

/// `BackingDisk` behind the hook: same interface, same results when no fault is set.
pub struct FaultDisk {
    inner: BackingDisk,
    /// A handle of our own for the cached (synchronous) reads.
    file: Arc<File>,
    hook: FaultHook,
    pub size_bytes: u64,
}

pub(super) fn range(offset: u64, len: u64) -> Option<(u64, u64)> {
    Some((offset, offset.saturating_add(len)))
}

/// `Fault` of `op` on the backing disk at `path`, for `map_err`.
fn fault(op: Op, path: &Path) -> impl FnOnce(FaultError) -> DiskError + '_ {
    move |source| DiskError::Fault {
        device: Device::Backing,
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl FaultDisk {
    pub fn open(path: &Path, hook: FaultHook) -> Result<FaultDisk, DiskError> {
        let inner = BackingDisk::open(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Arc::new)
            .map_err(DiskError::io(Device::Backing, Op::Open, path))?;
        hook.attach(Dev::Data, Arc::clone(&file), inner.size_bytes);
        Ok(FaultDisk {
            size_bytes: inner.size_bytes,
            inner,
            file,
            hook,
        })
    }

    pub async fn read(&self, offset: u64, len: u32) -> (Result<(), DiskError>, Vec<u8>) {
        let path = &self.inner.path;
        if let Err(e) = self
            .hook
            .inject(Dev::Data, Kind::Read, range(offset, u64::from(len)))
        {
            return (Err(fault(Op::Read, path)(e)), vec![0u8; len as usize]);
        }
        let mut buf = vec![0u8; len as usize];
        match self
            .hook
            .cached_read(Dev::Data, &self.file, &mut buf, offset)
        {
            Some(r) => (
                r.map_err(DiskError::io(Device::Backing, Op::Read, path)),
                buf,
            ),
            None => self.inner.read(offset, len).await,
        }
    }

    /// `BackingDisk::read_sparse` with the faults of `read`. While the volatile cache holds
    /// pages the file's holes say nothing about them: the range is read whole, overlay laid
    /// over it, and only the zero check applies.
    pub async fn read_sparse(&self, offset: u64, len: u32) -> Result<Vec<Extent>, DiskError> {
        let path = &self.inner.path;
        self.hook
            .inject(Dev::Data, Kind::Read, range(offset, u64::from(len)))
            .map_err(fault(Op::Read, path))?;
        if !self.hook.overlaid(Dev::Data) {
            return self.inner.read_sparse(offset, len).await;
        }
        let (r, buf) = self.read(offset, len).await;
        r?;
        let mut out = Vec::new();
        split_zero_blocks(offset, buf, &mut out);
        Ok(out)
    }

    /// Writes `buf` at `offset` (the client's own buffer, or a peer packet's) and hands it back.
    pub async fn write<B: WriteBuf>(
        &self,
        offset: u64,
        buf: B,
        fua: bool,
    ) -> (Result<(), DiskError>, B) {
        let path = &self.inner.path;
        self.hook.delay_data_write().await;
        let r = range(offset, buf.len() as u64);
        if let Err(e) = self.hook.inject(Dev::Data, Kind::Write { fua }, r) {
            return (Err(fault(Op::Write, path)(e)), buf);
        }
        match self
            .hook
            .cached_write(Dev::Data, offset, Src::Bytes(&buf), fua)
        {
            Some(r) => (r.map_err(fault(Op::Write, path)), buf),
            None => self.inner.write(offset, buf, fua).await,
        }
    }

    /// `BackingDisk::write_now` with the faults of `write`.
    pub fn write_now(&self, offset: u64, buf: &[u8], fua: bool) -> Option<Result<(), DiskError>> {
        if !self.inner.writes_now(buf.len(), fua) || self.hook.data_delayed() {
            return None;
        }
        let path = &self.inner.path;
        let r = range(offset, buf.len() as u64);
        if let Err(e) = self.hook.inject(Dev::Data, Kind::Write { fua }, r) {
            return Some(Err(fault(Op::Write, path)(e)));
        }
        match self
            .hook
            .cached_write(Dev::Data, offset, Src::Bytes(buf), fua)
        {
            Some(r) => Some(r.map_err(fault(Op::Write, path))),
            None => self.inner.write_now(offset, buf, fua),
        }
    }

    pub async fn flush(&self) -> Result<(), DiskError> {
        let path = &self.inner.path;
        self.hook
            .inject(Dev::Data, Kind::Flush, None)
            .map_err(fault(Op::Flush, path))?;
        match self.hook.cached_flush(Dev::Data) {
            Some(r) => r.map_err(fault(Op::Flush, path)),
            None => self.inner.flush().await,
        }
    }

    /// The data flush that precedes metadata writes (on the metadata thread): a flush like any
    /// other for the hook.
    pub fn data_flusher(&self) -> Result<FaultFlush, DiskError> {
        Ok(FaultFlush {
            inner: self.inner.data_flusher()?,
            path: self.inner.path.clone(),
            hook: self.hook.clone(),
        })
    }

    pub async fn zero(
        &self,
        offset: u64,
        len: u32,
        allocate: bool,
        fua: bool,
    ) -> Result<(), DiskError> {
        let path = &self.inner.path;
        let len64 = u64::from(len);
        self.hook.delay_data_write().await;
        self.hook
            .inject(Dev::Data, Kind::Write { fua }, range(offset, len64))
            .map_err(fault(Op::WriteZeroes, path))?;
        match self
            .hook
            .cached_write(Dev::Data, offset, Src::Zeros(len64), fua)
        {
            Some(r) => r.map_err(fault(Op::WriteZeroes, path)),
            None => self.inner.zero(offset, len, allocate, fua).await,
        }
    }
}

/// `BackingFlush` behind the hook, for the metadata thread.
pub struct FaultFlush {
    inner: BackingFlush,
    path: std::path::PathBuf,
    hook: FaultHook,
}

impl DataFlush for FaultFlush {
    fn flush_data(&self) -> Result<(), DiskError> {
        let _gate = self.hook.gate();
        let path = &self.path;
        self.hook
            .inject(Dev::Data, Kind::Flush, None)
            .map_err(fault(Op::FlushBeforeMeta, path))?;
        match self.hook.cached_flush(Dev::Data) {
            Some(r) => r.map_err(fault(Op::FlushBeforeMeta, path)),
            None => self.inner.flush_data(),
        }
    }
}
