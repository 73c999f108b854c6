//! The driver's metadata handle: opens the `MetaStore` of the resource's backing (internal) or
//! external meta disk, turns it into the engine's `AttachInfo`, and executes the engine's
//! metadata writes synchronously and in order (pwrite + fdatasync, `md-flushes`).

use std::fs::OpenOptions;
use std::path::Path;

use rep_resources::{MetaDisk, NodeView};

use crate::core::{AttachInfo, IoFailure, IoResult, MetaOpKind};
use crate::meta::layout::AL_EXTENT_BYTES;
use crate::meta::store::MetaStore;

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
        _is_block_device: bool,
    ) -> Result<(MetaHandle, AttachInfo), String> {
        let data = open_rw(&view.disk, "backing disk")?;
        let store = match &view.meta_disk {
            MetaDisk::Internal => MetaStore::open_internal(Box::new(data), backing_bytes),
            MetaDisk::External { path, index } => {
                let md = open_rw(path, "meta disk")?;
                MetaStore::open_external(Box::new(md), *index, backing_bytes)
            }
        }
        .map_err(|e| {
            format!(
                "{e} (resource {}, disk {})",
                view.resource,
                view.disk.display()
            )
        })?;
        let sb = store.superblock().clone();
        let unclean = !sb.clean;
        let mut bitmap = store.bitmap().clone();
        let al = store.activity_log().clone();
        if unclean {
            for ext in al.active_extents() {
                bitmap.set_range(ext * AL_EXTENT_BYTES, AL_EXTENT_BYTES);
            }
        }
        let mut usable_bytes = store.layout().usable_bytes();
        if let Some(limit) = view.disk_conf.size_bytes {
            usable_bytes = usable_bytes.min(limit);
        }
        let info = AttachInfo {
            usable_bytes,
            uuids: sb.uuids,
            flags: sb.flags,
            unclean,
            bitmap,
            al,
        };
        Ok((MetaHandle { store }, info))
    }

    pub fn apply(&mut self, op: &MetaOpKind) -> IoResult {
        match op {
            MetaOpKind::Superblock {
                uuids,
                flags,
                clean,
            } => {
                let mut sb = self.store.superblock().clone();
                sb.uuids = *uuids;
                sb.flags = *flags;
                sb.clean = *clean;
                self.store.write_superblock(sb).map_err(fail)
            }
            MetaOpKind::BitmapPages { pages } => {
                for (idx, page) in pages {
                    self.store.write_bitmap_page(*idx, page).map_err(fail)?;
                }
                self.store.flush().map_err(fail)
            }
            MetaOpKind::AlTransaction { block, ring_slot } => {
                self.store.write_al_block(*ring_slot, block).map_err(fail)
            }
        }
    }

    pub fn close(self) {}
}
