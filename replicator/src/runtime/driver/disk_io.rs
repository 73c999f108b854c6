//! The driver's disk side: opening the backing disk, and performing the engine's data I/O on it
//! (a client's reads, writes, flushes and zeroing; the peer's operations), inline for small
//! writes to memory-backed files, otherwise as io_uring tasks whose completions come back
//! through `feed` (docs/architecture.md §6.2, §6.3).

use std::rc::Rc;

#[cfg(not(feature = "fault-injection"))]
use super::Disk;
use super::{Device, DiskError, Driver, MetaWriter, Op};
use crate::core::{DiskOpKind, Input, IoFailure, IoId, PeerDiskOp, ReqId};

impl Driver {
    /// Open the backing disk and read its metadata (synchronously: once per attach), then
    /// hand the metadata to the metadata thread.
    pub(super) fn open_disk(self: &Rc<Self>) -> Result<crate::core::AttachInfo, DiskError> {
        #[cfg(not(feature = "fault-injection"))]
        let (disk, meta, info) = {
            let view = self.view();
            let disk = Disk::open(&view.disk)?;
            let (meta, info) = crate::runtime::metaio::MetaHandle::open(&view, disk.size_bytes)?;
            (disk, meta, info)
        };
        #[cfg(feature = "fault-injection")]
        let (disk, meta, info) = crate::runtime::fault::open(&self.fault, &self.view())?;
        let flush = disk.data_flusher()?;
        let writer = match self.meta.get() {
            Some(w) => w,
            None => {
                let w = MetaWriter::start(self.feeder()).map_err(DiskError::io(
                    Device::Backing,
                    Op::StartMetaThread,
                    &self.view().disk,
                ))?;
                self.meta.get_or_init(|| w)
            }
        };
        writer.attach(meta, Box::new(flush));
        *self.disk.borrow_mut() = Some(Rc::new(disk));
        Ok(info)
    }

    pub(super) fn disk_op(self: &Rc<Self>, io: IoId, req: ReqId, op: DiskOpKind) {
        let disk = match self.attached_disk() {
            Ok(d) => d,
            Err(e) => {
                self.queue(Input::DiskDone { io, result: Err(e) });
                return;
            }
        };
        let this = Rc::clone(self);
        match op {
            DiskOpKind::Read { offset, len } => {
                tokio_uring::spawn(async move {
                    let (result, buf) = disk.read(offset, len).await;
                    let result = result.map_err(IoFailure::from);
                    if result.is_ok() {
                        if let Some(slot) = this.clients.borrow_mut().get_mut(&req) {
                            slot.buf = Some(buf);
                        }
                    }
                    this.feed(Input::DiskDone { io, result });
                });
            }
            DiskOpKind::Write { offset, len, fua } => {
                let buf = self
                    .clients
                    .borrow_mut()
                    .get_mut(&req)
                    .and_then(|s| s.payload.take())
                    .filter(|b| b.len() == len as usize);
                let Some(buf) = buf else {
                    // Never write (and acknowledge) something other than the client's data.
                    let result = Err(IoFailure {
                        errno: libc::EIO,
                        message: format!("write buffer of request {req} is missing"),
                    });
                    self.queue(Input::DiskDone { io, result });
                    return;
                };
                if let Some(result) = disk.write_now(offset, &buf, fua) {
                    let result = result.map_err(IoFailure::from);
                    self.queue(Input::DiskDone { io, result });
                    return;
                }
                tokio_uring::spawn(async move {
                    let (result, _buf) = disk.write(offset, buf, fua).await;
                    let result = result.map_err(IoFailure::from);
                    this.feed(Input::DiskDone { io, result });
                });
            }
            DiskOpKind::Flush => {
                tokio_uring::spawn(async move {
                    let result = disk.flush().await.map_err(IoFailure::from);
                    this.feed(Input::DiskDone { io, result });
                });
            }
            DiskOpKind::Trim { offset, len, fua }
            | DiskOpKind::WriteZeroes { offset, len, fua } => {
                // WRITE_ZEROES keeps the blocks allocated; TRIM may free them.
                let allocate = matches!(op, DiskOpKind::WriteZeroes { .. });
                tokio_uring::spawn(async move {
                    let result = disk
                        .zero(offset, len, allocate, fua)
                        .await
                        .map_err(IoFailure::from);
                    this.feed(Input::DiskDone { io, result });
                });
            }
        }
    }

    pub(super) fn peer_disk_op(self: &Rc<Self>, io: IoId, op: PeerDiskOp) {
        let disk = match self.attached_disk() {
            Ok(d) => d,
            Err(e) => {
                let done = match op {
                    PeerDiskOp::ReadSparse { .. } => Input::SparseReadDone { io, result: Err(e) },
                    _ => Input::PeerDiskDone { io, result: Err(e) },
                };
                self.queue(done);
                return;
            }
        };
        if let PeerDiskOp::ReadSparse { offset, len } = op {
            let this = Rc::clone(self);
            tokio_uring::spawn(async move {
                let result = disk.read_sparse(offset, len).await.map_err(IoFailure::from);
                this.feed(Input::SparseReadDone { io, result });
            });
            return;
        }
        if let PeerDiskOp::Write { offset, data, fua } = &op {
            if let Some(result) = disk.write_now(*offset, data, *fua) {
                let result = result.map(|()| None).map_err(IoFailure::from);
                self.queue(Input::PeerDiskDone { io, result });
                return;
            }
        }
        let this = Rc::clone(self);
        tokio_uring::spawn(async move {
            let result = match op {
                PeerDiskOp::Write { offset, data, fua } => {
                    disk.write(offset, data, fua).await.0.map(|()| None)
                }
                PeerDiskOp::Zero {
                    offset,
                    len,
                    trim,
                    fua,
                } => disk.zero(offset, len, !trim, fua).await.map(|()| None),
                PeerDiskOp::Read { offset, len } | PeerDiskOp::ReadSparse { offset, len } => {
                    let (r, buf) = disk.read(offset, len).await;
                    r.map(|()| Some(buf))
                }
                PeerDiskOp::Flush => disk.flush().await.map(|()| None),
            };
            let result = result.map_err(IoFailure::from);
            this.feed(Input::PeerDiskDone { io, result });
        });
    }
}
