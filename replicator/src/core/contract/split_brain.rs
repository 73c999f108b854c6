//! What the engine remembers about a split brain, for `repadm split-brain show` and the sticky
//! `split-brain` flag. The flag lives in the metadata flags (`MdFlags::SPLIT_BRAIN`) so that a
//! restarted node still reports an unresolved split brain; the peer's side (its generation
//! UUIDs, role and bitmap as its handshake sent them) is kept in memory only: the next
//! handshake after a restart detects the split brain again and refills it.

use serde::{Deserialize, Serialize};

use crate::core::connection::handshake::PeerReport;
use crate::core::state::Role;
use crate::meta::bitmap::Bitmap;
use crate::meta::superblock::GenerationUuids;

/// The peer's side as its handshake reported it when the split brain was detected.
#[derive(Debug, Clone)]
pub(crate) struct PeerAtSplit {
    uuids: GenerationUuids,
    role: Role,
    bitmap_rle: Vec<u8>,
}

impl PeerAtSplit {
    pub(crate) fn from_report(peer: &PeerReport) -> PeerAtSplit {
        PeerAtSplit {
            uuids: peer.uuids,
            role: peer.role,
            bitmap_rle: peer.bitmap.clone(),
        }
    }

    /// The peer's side as it reported it (its bitmap decoded, if it decodes).
    pub(crate) fn side(&self) -> SbSide {
        let bm = Bitmap::rle_declared_bits(&self.bitmap_rle)
            .and_then(|n| Bitmap::decode_rle(&self.bitmap_rle, n))
            .ok();
        side(self.uuids, self.role, bm.as_ref())
    }
}

/// One side of a split brain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbSide {
    /// Generation UUIDs: current, bitmap, history[0], history[1].
    pub uuids: [u64; 4],
    /// Its role now (for the peer: when its handshake was received).
    pub role: Role,
    /// It was already Primary when the split began (bit 0 of its bitmap UUID); the other side
    /// became Primary during the split.
    pub primary_at_split: bool,
    /// 4 KiB blocks it changed since the common generation (its bitmap's set bits).
    pub changed_blocks: u64,
    /// Those blocks as byte ranges `[offset, length]`, ascending.
    pub ranges: Vec<[u64; 2]>,
}

/// This node's view of a split brain: its own side, and the peer's as last received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbView {
    /// The sticky flag: detected and not resolved yet.
    pub split_brain: bool,
    pub local: SbSide,
    pub peer: Option<SbSide>,
}

/// 4 KiB per bitmap bit.
const BLOCK: u64 = 4096;

pub(crate) fn side(uuids: GenerationUuids, role: Role, bm: Option<&Bitmap>) -> SbSide {
    let ranges: Vec<[u64; 2]> = bm
        .map(|b| {
            b.runs()
                .map(|r| [r.start * BLOCK, (r.end - r.start) * BLOCK])
                .collect()
        })
        .unwrap_or_default();
    SbSide {
        uuids: [
            uuids.current,
            uuids.bitmap,
            uuids.history[0],
            uuids.history[1],
        ],
        role,
        primary_at_split: uuids.bitmap & 1 == 1,
        changed_blocks: bm.map_or(0, Bitmap::count_ones),
        ranges,
    }
}

/// The newest generation both histories share (role bit masked), if any: the data both sides
/// had when the split began.
pub fn common_generation(a: &[u64; 4], b: &[u64; 4]) -> Option<u64> {
    // Our bitmap UUID first (the generation we diverged from), then older history, then the
    // current one (no divergence at all).
    [a[1], a[2], a[3], a[0]]
        .into_iter()
        .map(|u| u & !1)
        .find(|u| *u != 0 && b.iter().any(|v| v & !1 == *u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_generation_is_the_shared_bitmap_uuid() {
        // Both diverged from 0x100 (one of them was Primary then: bit 0).
        assert_eq!(
            common_generation(&[0x201, 0x101, 0x50, 0], &[0x300, 0x100, 0x50, 0]),
            Some(0x100)
        );
        // No shared history at all.
        assert_eq!(
            common_generation(&[0x2, 0x4, 0, 0], &[0x6, 0x8, 0, 0]),
            None
        );
    }
}
