//! What this node reports to its peer: params, sizes, generation UUIDs, state and bitmap (the
//! handshake's half that we send), and state changes after it.

use crate::core::connection::handshake::{
    UUID_FLAG_CRASHED_PRIMARY, UUID_FLAG_DISCARD_MY_DATA, UUID_FLAG_INCONSISTENT,
};
use crate::core::engine::Engine;
use crate::core::state::DiskState;
use crate::meta::bitmap::Bitmap;
use crate::wire::codes::{disk_code, protocol_code, role_code};
use crate::wire::{Packet, Params};
use rep_resources::DigestAlg;
/// Largest RLE slice per Bitmap packet (the packet limit is 1 MiB + 64).
pub(super) const BITMAP_SLICE_BYTES: usize = 512 * 1024;
/// A compressed bitmap larger than this is hostile (a 16 TiB device compresses far below).
pub(super) const BITMAP_RLE_MAX_BYTES: usize = 64 << 20;

/// The name a setting travels under in `Params` (empty: not set).
pub(super) fn alg_name(alg: Option<DigestAlg>) -> String {
    alg.map(|a| a.to_string()).unwrap_or_default()
}

impl Engine {
    /// Params, sizes, UUIDs, state and our bitmap: everything the peer needs to decide.
    pub(super) fn send_report(&mut self) {
        let Some(l) = self.peers.data_mut().link.as_mut() else {
            return;
        };
        if l.sent_report {
            return;
        }
        l.sent_report = true;
        let p = &self.cfg.peer;
        let params = Params {
            protocol: protocol_code(self.cfg.protocol),
            after_sb_0pri: p.after_sb_0pri.to_string(),
            after_sb_1pri: p.after_sb_1pri.to_string(),
            after_sb_2pri: p.after_sb_2pri.to_string(),
            allow_two_primaries: self.cfg.allow_two_primaries,
            discard_my_data: self.peers.data_mut().discard_my_data,
            integrity_alg: alg_name(p.integrity_alg),
            verify_alg: alg_name(p.verify_alg),
            csums_alg: alg_name(p.csums_alg),
        };
        self.send(Packet::Params(Box::new(params)));
        let usable = self.dev.local_usable_bytes;
        self.send(Packet::Sizes {
            backing_bytes: usable,
            usable_bytes: usable,
            requested_bytes: usable,
        });
        self.send_uuids(0);
        self.send_state();
        self.send_bitmap();
    }

    /// Our whole bitmap, RLE-compressed, in slices.
    pub(crate) fn send_bitmap(&mut self) {
        let rle = self
            .peers
            .data()
            .bitmap
            .as_ref()
            .map(Bitmap::encode_rle)
            .unwrap_or_default();
        let mut start = 0usize;
        loop {
            let end = (start + BITMAP_SLICE_BYTES).min(rle.len());
            let last = end == rle.len();
            self.send(Packet::Bitmap {
                start: start as u64,
                rle: rle[start..end].to_vec(),
                last,
            });
            if last {
                break;
            }
            start = end;
        }
    }

    pub(crate) fn send_uuids(&mut self, extra_flags: u32) {
        let mut flags = extra_flags;
        if self.peers.data_mut().discard_my_data {
            flags |= UUID_FLAG_DISCARD_MY_DATA;
        }
        if self.dev.gen.flags().crashed_primary() {
            flags |= UUID_FLAG_CRASHED_PRIMARY;
        }
        if self.reported_disk() == DiskState::Inconsistent {
            flags |= UUID_FLAG_INCONSISTENT;
        }
        let oos_bits = self.peers.data().oos_bits();
        if let Some(l) = self.peers.data_mut().link.as_mut().filter(|l| !l.decided) {
            l.sent_oos_bits = oos_bits;
        }
        self.send(Packet::Uuids {
            uuids: self.dev.gen.uuids().as_array(),
            oos_bits,
            flags,
        });
    }

    /// The disk state the peer is told: while an attached disk negotiates, the state its
    /// metadata gives, which the handshake compares (the peer decides with it, as we do).
    pub(super) fn reported_disk(&self) -> DiskState {
        self.st.reported_disk()
    }

    pub(crate) fn send_state(&mut self) {
        let state = (self.st.role(), self.reported_disk());
        if let Some(l) = self.peers.data_mut().link.as_mut() {
            l.last_sent_state = Some(state);
        }
        self.send(Packet::State {
            role: role_code(state.0),
            disk: disk_code(state.1),
            susp: false,
        });
    }

    /// After every input: tell the peer if our role or disk changed.
    pub(crate) fn announce_state(&mut self) {
        let changed = self.peers.data().link.as_ref().is_some_and(|l| {
            l.sent_report && l.last_sent_state != Some((self.st.role(), self.reported_disk()))
        });
        if changed {
            self.send_state();
        }
    }
}
