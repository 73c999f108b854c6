//! What the handshake decision (`handshake::decide`) makes of two complete reports: no sync, a
//! resync direction, a split brain, or a refusal (drbd_sync_handshake, docs/drbd-semantics.md
//! §2.6), and the merged bitmap a resync starts from.

use crate::core::connection::after::After;
use crate::core::connection::handshake::{decide, OurSide, Outcome};
use crate::core::contract::io::Output;
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};
use crate::meta::bitmap::Bitmap;

impl Engine {
    /// Once both reports are complete: compare UUIDs and pick no-sync, a direction or a refusal
    /// (drbd_sync_handshake, docs/drbd-semantics.md §2.6; the decision itself is
    /// `handshake::decide`).
    pub(super) fn try_decide(&mut self) {
        let Some(l) = self.peers.data_mut().link.as_mut() else {
            return;
        };
        let Some(peer) = l.peer_report() else { return };
        l.decided = true;
        let dialer = l.dialer;
        let reported_changes = l.sent_oos_bits;
        // The attached disk's own state takes part in this handshake, which decides.
        let disk = self.st.reported_disk();
        let _ = self.change_state(
            ChangeSet::new()
                .disk(disk)
                .negotiating(None)
                .peer_role(self.data_id(), peer.role)
                .pdsk(self.data_id(), peer.disk),
        );
        // The smaller device wins, as in DRBD; a Diskless side has no say.
        let pdisk = peer.disk;
        self.dev.usable_bytes = match (disk <= DiskState::Failed, pdisk <= DiskState::Failed) {
            (false, false) if peer.usable == 0 => {
                self.protocol_error("peer reported a size of 0 with a disk attached".into());
                return;
            }
            (false, false) => self.dev.local_usable_bytes.min(peer.usable),
            (true, false) => peer.usable,
            (false, true) => self.dev.local_usable_bytes,
            (true, true) => 0,
        };
        if disk <= DiskState::Failed || pdisk <= DiskState::Failed {
            let _ =
                self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::Connected));
            if pdisk <= DiskState::Failed {
                self.peer_lost_disk(peer.role);
            }
            return;
        }
        let me = OurSide {
            role: self.st.role(),
            disk,
            uuids: self.dev.gen.uuids(),
            crashed_primary: self.dev.gen.flags().crashed_primary(),
            discard_my_data: self.peers.data_mut().discard_my_data,
            changes: self.peers.data().oos_bits(),
            reported_changes,
            can_demote: self.requests.open_clients == 0 && self.requests.in_flight() == 0,
            resolve_conflicts: !dialer,
        };
        let decision = decide(&self.cfg, &me, &peer);
        for name in &decision.handlers {
            self.emit(Output::Handler { name });
        }
        if decision.demote {
            self.gen_change(GenEvent::Demote);
            let _ = self.change_state(ChangeSet::new().role(Role::Secondary).persist());
        }
        if !matches!(decision.outcome, Outcome::Refuse { .. })
            || !decision.handlers.contains(&"split-brain")
        {
            self.peers.data_mut().discard_my_data = false;
        }
        match &decision.outcome {
            Outcome::Refuse { .. } if decision.handlers.contains(&"split-brain") => {
                self.note_split_brain(&peer);
            }
            Outcome::Refuse { .. } => {}
            _ => self.note_split_brain_resolved(),
        }
        match decision.outcome {
            Outcome::Refuse { why } => {
                self.lose_link(ConnState::Disconnecting, &why, After::StandAlone);
            }
            Outcome::NoSync => {
                // Bits without a direction are the operator's to settle (handshake.rs,
                // equal_generations_with_bits): shown in status and events until settled.
                if decision.unresolved.is_some() {
                    self.peers.data_mut().oos_notice = decision.unresolved;
                    self.status_changed();
                }
                let _ = self
                    .change_state(ChangeSet::new().cstate(self.data_id(), ConnState::Connected));
                self.thaw_on_reconnect();
            }
            Outcome::Source { full } => {
                self.merge_peer_bitmap(&peer.bitmap, full);
                self.start_sync_source(full);
                self.thaw_on_reconnect();
            }
            Outcome::Target { full } => {
                self.merge_peer_bitmap(&peer.bitmap, full);
                let _ = self.change_state(
                    ChangeSet::new()
                        .disk(DiskState::Inconsistent)
                        .cstate(self.data_id(), ConnState::WFSyncUUID)
                        .persist(),
                );
            }
        }
    }

    /// Both sides end up with the OR of their bitmaps (or all bits for a full sync).
    pub(super) fn merge_peer_bitmap(&mut self, rle: &[u8], full: bool) {
        let Some(bm) = self.peers.data_mut().bitmap.as_mut() else {
            return;
        };
        if full {
            bm.set_all();
            return;
        }
        let peer = Bitmap::rle_declared_bits(rle).and_then(|n| Bitmap::decode_rle(rle, n));
        match peer {
            Ok(theirs) if theirs.len_bits() == bm.len_bits() => {
                let _ = bm.or_with(&theirs);
            }
            Ok(theirs) => {
                for r in theirs.runs() {
                    let end = r.end.min(bm.len_bits());
                    if r.start < end {
                        bm.set_range(r.start * 4096, (end - r.start) * 4096);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(resource = %self.cfg.resource, "peer's bitmap unreadable ({e}); doing a full sync");
                bm.set_all();
            }
        }
    }
}
