//! The driver's metadata handle: opens the `MetaStore` of the resource's backing (internal) or
//! external meta disk, turns it into the engine's `AttachInfo`, and executes the engine's
//! metadata writes synchronously and in order (pwrite + fdatasync, `md-flushes`).

use std::fs::OpenOptions;
use std::path::Path;

use rep_resources::{MetaDisk, NodeView};

use crate::core::{AttachInfo, IoFailure, IoResult, MetaOpKind};
use crate::meta::store::{MetaDev, MetaStore};

pub struct MetaHandle {
    store: MetaStore,
}

fn open_rw(path: &Path, what: &str) -> Result<std::fs::File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {what} {}: {e}", path.display()))
}

fn fail(e: impl std::fmt::Display) -> IoFailure {
    IoFailure {
        errno: libc::EIO,
        message: e.to_string(),
    }
}

impl MetaHandle {
    /// Open and validate the metadata; replay the activity log into the bitmap after a crash.
    pub fn open(
        view: &NodeView,
        backing_bytes: u64,
        is_block_device: bool,
    ) -> Result<(MetaHandle, AttachInfo), String> {
        MetaHandle::open_with(view, backing_bytes, is_block_device, &|file| Box::new(file))
    }

    /// `open`, with the device that holds the metadata (the backing device for internal
    /// metadata, else the meta disk) handed to `wrap` first (the fault hook wraps it).
    pub fn open_with(
        view: &NodeView,
        backing_bytes: u64,
        _is_block_device: bool,
        wrap: &dyn Fn(std::fs::File) -> Box<dyn MetaDev>,
    ) -> Result<(MetaHandle, AttachInfo), String> {
        let store = match &view.meta_disk {
            MetaDisk::Internal => {
                let data = open_rw(&view.disk, "backing disk")?;
                MetaStore::open_internal(wrap(data), backing_bytes)
            }
            MetaDisk::External { path, index } => {
                let md = open_rw(path, "meta disk")?;
                MetaStore::open_external(wrap(md), *index, backing_bytes)
            }
        }
        .map_err(|e| {
            format!(
                "{e} (resource {}, disk {})",
                view.resource,
                view.disk.display()
            )
        })?;
        let info = crate::meta::attach::attach_info(&store, view.disk_conf.size_bytes);
        Ok((MetaHandle { store }, info))
    }

    pub fn apply(&mut self, op: &MetaOpKind) -> IoResult {
        crate::meta::attach::apply(&mut self.store, op).map_err(fail)
    }

    pub fn close(self) {}
}
