//! From an opened `MetaStore` to the engine's `AttachInfo`, and the engine's metadata writes
//! applied to the store. Shared by the io_uring driver and the simulator, so both exercise the
//! same crash-recovery path (activity-log replay into the bitmap).

use super::error::MetaError;
use super::layout::AL_EXTENT_BYTES;
use super::ops::{AttachInfo, MetaOpKind};
use super::store::MetaStore;

/// What the engine needs at attach; after an unclean shutdown the hot AL extents are marked
/// out of sync (docs/drbd-semantics.md §2.4, §7.3).
pub fn attach_info(store: &MetaStore, size_limit: Option<u64>) -> AttachInfo {
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
    if let Some(limit) = size_limit {
        usable_bytes = usable_bytes.min(limit);
    }
    AttachInfo {
        usable_bytes,
        uuids: sb.uuids,
        flags: sb.flags,
        unclean,
        bitmap,
        al,
    }
}

/// Execute one metadata write, durably, before the next one.
pub fn apply(store: &mut MetaStore, op: &MetaOpKind) -> Result<(), MetaError> {
    match op {
        MetaOpKind::Superblock {
            uuids,
            flags,
            clean,
        } => {
            let mut sb = store.superblock().clone();
            sb.uuids = *uuids;
            sb.flags = *flags;
            sb.clean = *clean;
            store.write_superblock(sb)
        }
        MetaOpKind::BitmapPages { pages, .. } => {
            for (idx, page) in pages {
                store.write_bitmap_page(*idx, page)?;
            }
            store.flush()
        }
        MetaOpKind::AlTransaction {
            block, ring_slot, ..
        } => store.write_al_block(*ring_slot, block),
    }
}
