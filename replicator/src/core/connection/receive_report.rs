//! The peer's handshake reports as they arrive (params, sizes, UUIDs, state, bitmap) and the
//! checks on each; once both sides' reports are complete `try_decide` runs.

use super::report::{alg_name, BITMAP_RLE_MAX_BYTES};
use crate::core::connection::after::After;
use crate::core::connection::handshake::UUID_FLAG_SKIP_INITIAL_SYNC;
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};
use crate::meta::superblock::GenerationUuids;
use crate::wire::codes::{disk_from, protocol_code, role_from};
use crate::wire::Params;

impl Engine {
    pub(super) fn on_params(&mut self, p: Params) {
        let mine = protocol_code(self.cfg.protocol);
        let s = &self.cfg.peer;
        let mismatch = if p.protocol != mine {
            Some(format!(
                "incompatible replication protocols: ours is {}, the peer's is {}",
                mine as char, p.protocol as char
            ))
        } else if p.after_sb_0pri != s.after_sb_0pri.to_string() {
            Some(format!(
                "incompatible after-sb-0pri settings: ours is {}, the peer's is {}",
                s.after_sb_0pri, p.after_sb_0pri
            ))
        } else if p.after_sb_1pri != s.after_sb_1pri.as_str() {
            Some(format!(
                "incompatible after-sb-1pri settings: ours is {}, the peer's is {}",
                s.after_sb_1pri, p.after_sb_1pri
            ))
        } else if p.after_sb_2pri != s.after_sb_2pri.as_str() {
            Some(format!(
                "incompatible after-sb-2pri settings: ours is {}, the peer's is {}",
                s.after_sb_2pri, p.after_sb_2pri
            ))
        } else if p.allow_two_primaries != self.cfg.allow_two_primaries {
            Some(format!(
                "incompatible allow-two-primaries settings: ours is {}, the peer's is {}",
                yes_no(self.cfg.allow_two_primaries),
                yes_no(p.allow_two_primaries)
            ))
        } else if p.integrity_alg != alg_name(s.integrity_alg) {
            Some(format!(
                "incompatible data-integrity-alg: ours is '{}', the peer's is '{}'",
                alg_name(s.integrity_alg),
                p.integrity_alg
            ))
        } else {
            None
        };
        if let Some(why) = mismatch {
            self.lose_link(ConnState::Disconnecting, &why, After::StandAlone);
            return;
        }
        if let Some(l) = self.peers.data_mut().link.as_mut() {
            l.peer_params = Some(p);
        }
        self.try_decide();
    }

    pub(super) fn on_sizes(&mut self, peer_usable: u64) {
        // 0 is a Diskless peer; checked against its disk state once that is known.
        if let Some(l) = self.peers.data_mut().link.as_mut() {
            l.peer_usable = Some(peer_usable);
        }
        self.try_decide();
    }

    pub(super) fn on_uuids(&mut self, uuids: [u64; 4], oos_bits: u64, flags: u32) {
        let g = GenerationUuids {
            current: uuids[0],
            bitmap: uuids[1],
            history: [uuids[2], uuids[3]],
        };
        let decided = self.peers.data().link.as_ref().is_some_and(|l| l.decided);
        if let Some(l) = self.peers.data_mut().link.as_mut() {
            l.peer_uuids = Some((g, flags));
            l.peer_oos_bits = oos_bits;
        }
        if !decided {
            self.try_decide();
            return;
        }
        // Skip-initial-sync from `new-current-uuid --clear-bitmap` on the peer.
        if flags & UUID_FLAG_SKIP_INITIAL_SYNC != 0 && self.dev.gen.just_created() {
            if let Some(bm) = self.peers.data_mut().bitmap.as_mut() {
                bm.clear_all();
            }
            self.gen_change(GenEvent::PeerSkippedInitialSync {
                peer_current: g.current,
            });
            let _ = self.change_state(
                ChangeSet::new()
                    .disk(DiskState::UpToDate)
                    .pdsk(self.data_id(), DiskState::UpToDate)
                    .why("peer skipped the initial sync: both sides UpToDate")
                    .persist(),
            );
        }
    }

    pub(super) fn on_state(&mut self, role: u8, disk: u8) {
        let (Some(role), Some(disk)) = (role_from(role), disk_from(disk)) else {
            self.protocol_error(format!("invalid state packet (role {role}, disk {disk})"));
            return;
        };
        let decided = self.peers.data().link.as_ref().is_some_and(|l| l.decided);
        if let Some(l) = self.peers.data_mut().link.as_mut() {
            l.peer_state = Some((role, disk));
        }
        if !decided {
            self.try_decide();
            return;
        }
        let had_disk = self.data_st().pdsk() >= DiskState::Inconsistent;
        let was_primary = self.data_st().role() == Role::Primary;
        let _ = self.change_state(
            ChangeSet::new()
                .peer_role(self.data_id(), role)
                .pdsk(self.data_id(), disk),
        );
        if !had_disk && disk < DiskState::Inconsistent && !was_primary && role == Role::Primary {
            // A Diskless peer was promoted: its writes will exist only here from now on
            // (DRBD's after_state_ch starts a new current UUID for this case).
            self.peer_lost_disk(role);
        }
        if had_disk && disk < DiskState::Inconsistent {
            if self.data_st().cstate() > ConnState::Connected {
                self.lose_link(
                    ConnState::Disconnecting,
                    "peer's disk failed during a resync or verify; reconnecting",
                    After::Reconnect,
                );
                return;
            }
            // What the peer's disk had not made durable is out of sync, as on a lost link;
            // its barrier acks will not come.
            self.fail_peer_requests();
            self.peer_lost_disk(role);
        }
        if self.st.role() == Role::Primary && role == Role::Primary && !self.cfg.allow_two_primaries
        {
            self.lose_link(
                ConnState::Disconnecting,
                "both nodes are Primary and allow-two-primaries is off",
                After::StandAlone,
            );
            return;
        }
        if matches!(
            self.data_st().cstate(),
            ConnState::SyncSource | ConnState::PausedSyncS
        ) && disk == DiskState::UpToDate
        {
            self.finish_sync_source();
        }
        if self.st.disk() == DiskState::UpToDate
            && disk == DiskState::UpToDate
            && self.dev.gen.flags().crashed_primary()
        {
            self.gen_change(GenEvent::ClearCrashedPrimary);
        }
    }

    pub(super) fn on_bitmap(&mut self, start: u64, rle: Vec<u8>, last: bool) {
        let Some(l) = self.peers.data_mut().link.as_mut() else {
            return;
        };
        if l.decided && l.peer_bitmap.is_some() {
            // A second bitmap: the SyncSource's final one, sent when it started the resync.
            l.peer_bitmap = None;
        }
        if start != l.bitmap_rx.len() as u64 || l.peer_bitmap.is_some() {
            self.protocol_error(format!("bitmap slice at {start} out of order"));
            return;
        }
        if l.bitmap_rx.len() + rle.len() > BITMAP_RLE_MAX_BYTES {
            self.protocol_error("compressed bitmap too large".into());
            return;
        }
        l.bitmap_rx.extend_from_slice(&rle);
        if last {
            let blob = std::mem::take(&mut l.bitmap_rx);
            l.peer_bitmap = Some(blob.clone());
            if !l.decided {
                self.try_decide();
            } else if matches!(
                self.data_st().cstate(),
                ConnState::WFSyncUUID | ConnState::Connected
            ) {
                // Bits the source set after its first report (writes during the handshake).
                self.merge_peer_bitmap(&blob, false);
            } else {
                self.protocol_error(format!("bitmap while {}", self.data_st().cstate()));
            }
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
