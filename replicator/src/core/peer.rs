//! The connection to the peer, the engine's side: link lifecycle, packet dispatch, the
//! handshake reports (auth → params → sizes → UUIDs → state → bitmap) and what the decision
//! (`handshake::decide`) makes of them, liveness (ping, ko-count), what a lost link leaves
//! behind (docs/drbd-semantics.md §1.7, §2.6, §5.3, §6.2; docs/architecture.md §9), and cluster-wide role
//! changes.

use std::time::Instant;

use super::after::After;
use super::engine::Engine;
use super::handshake::{decide, Link, OurSide, Outcome};
use super::handshake::{
    UUID_FLAG_CRASHED_PRIMARY, UUID_FLAG_DISCARD_MY_DATA, UUID_FLAG_INCONSISTENT,
    UUID_FLAG_SKIP_INITIAL_SYNC,
};
use super::io::{LinkId, LinkLoss, Output};
use super::node_state::ChangeSet;
use super::state::{ConnState, DiskState, Role};
use crate::meta::bitmap::Bitmap;
use crate::meta::superblock::{GenerationUuids, UUID_JUST_CREATED};
use crate::wire::auth;
use crate::wire::codes::{disk_code, disk_from, protocol_code, role_code, role_from};
use crate::wire::{Packet, Params};
use rep_resources::{DigestAlg, HmacAlg};

/// Kept where the simulator and the daemon import it from.
pub use super::config::PeerSettings;
/// Kept for the runtime's handshake (`Hello`); the constant lives in `wire`.
pub use crate::wire::PROTOCOL_VERSION;
/// Largest RLE slice per Bitmap packet (the packet limit is 1 MiB + 64).
const BITMAP_SLICE_BYTES: usize = 512 * 1024;
/// A compressed bitmap larger than this is hostile (a 16 TiB device compresses far below).
const BITMAP_RLE_MAX_BYTES: usize = 64 << 20;

/// The name a setting travels under in `Params` (empty: not set).
fn alg_name(alg: Option<DigestAlg>) -> String {
    alg.map(|a| a.to_string()).unwrap_or_default()
}

impl Engine {
    pub(crate) fn link_id(&self) -> Option<LinkId> {
        self.link.as_ref().map(|l| l.id)
    }

    /// Queue a packet on the current link; dropped when there is none (the peer will learn
    /// the state in the next handshake).
    pub(crate) fn send(&mut self, packet: Packet) {
        if let Some(link) = self.link_id() {
            self.emit(Output::Send { link, packet });
        }
    }

    /// Handshake finished and the peer may get replicated writes and state.
    pub(crate) fn link_ready(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.decided)
    }

    pub(crate) fn link_up(
        &mut self,
        now: Instant,
        link: LinkId,
        dialer: bool,
        peer_node: String,
        nonce: [u8; auth::NONCE_BYTES],
    ) {
        if !matches!(
            self.st.cstate(),
            ConnState::WFConnection | ConnState::Unconnected
        ) {
            // A late link after `disconnect`: refuse it.
            self.emit(Output::CloseLink { link });
            return;
        }
        tracing::info!(resource = %self.cfg.resource, peer = %peer_node, "Handshake successful: connected to the peer");
        if self.start_deferred_generation() {
            let _ = self.persist_superblock();
        }
        let _ = self.change_state(ChangeSet::new().cstate(ConnState::WFReportParams));
        let authed = self.cfg.peer.shared_secret.is_none();
        let mut l = Link::new(link, dialer, peer_node, authed, now);
        if self.cfg.peer.shared_secret.is_some() {
            // Unpredictable per link (the driver reads the OS random source): a nonce derived
            // from a seed would let one observed challenge predict the next and replay answers.
            let nonce = nonce.to_vec();
            l.nonce = Some(nonce.clone());
            self.link = Some(l);
            self.send(Packet::AuthChallenge { nonce });
        } else {
            self.link = Some(l);
            self.send_report();
        }
    }

    /// Params, sizes, UUIDs, state and our bitmap: everything the peer needs to decide.
    fn send_report(&mut self) {
        let Some(l) = self.link.as_mut() else { return };
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
            discard_my_data: self.discard_my_data,
            integrity_alg: alg_name(p.integrity_alg),
            verify_alg: alg_name(p.verify_alg),
            csums_alg: alg_name(p.csums_alg),
        };
        self.send(Packet::Params(params));
        let usable = self.local_usable_bytes;
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
        if self.discard_my_data {
            flags |= UUID_FLAG_DISCARD_MY_DATA;
        }
        if self.flags.crashed_primary() {
            flags |= UUID_FLAG_CRASHED_PRIMARY;
        }
        if self.reported_disk() == DiskState::Inconsistent {
            flags |= UUID_FLAG_INCONSISTENT;
        }
        let oos_bits = self.bitmap.as_ref().map_or(0, Bitmap::count_ones);
        if let Some(l) = self.link.as_mut().filter(|l| !l.decided) {
            l.sent_oos_bits = oos_bits;
        }
        self.send(Packet::Uuids {
            uuids: self.uuids.as_array(),
            oos_bits,
            flags,
        });
    }

    /// The disk state the peer is told: while an attached disk negotiates, the state its
    /// metadata gives, which the handshake compares (the peer decides with it, as we do).
    fn reported_disk(&self) -> DiskState {
        self.st.reported_disk()
    }

    pub(crate) fn send_state(&mut self) {
        let state = (self.st.role(), self.reported_disk());
        if let Some(l) = self.link.as_mut() {
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
        let changed = self.link.as_ref().is_some_and(|l| {
            l.sent_report && l.last_sent_state != Some((self.st.role(), self.reported_disk()))
        });
        if changed {
            self.send_state();
        }
    }

    pub(crate) fn link_down(&mut self, link: LinkId, loss: LinkLoss) {
        if self.link_id() != Some(link) {
            return;
        }
        let (state, why) = match &loss {
            LinkLoss::BrokenPipe => (
                ConnState::BrokenPipe,
                "the peer closed the connection".to_owned(),
            ),
            LinkLoss::NetworkFailure(e) => (ConnState::NetworkFailure, e.clone()),
            LinkLoss::ProtocolError(e) => (ConnState::ProtocolError, e.to_string()),
        };
        self.lose_link(state, &why, After::Reconnect);
    }

    /// Tear the link down: what the peer may have missed goes into the bitmap, a Primary starts
    /// a new data generation, and the node either reconnects or goes StandAlone.
    pub(crate) fn lose_link(&mut self, via: ConnState, why: &str, after: After) {
        let standalone = ChangeSet::new().cstate(ConnState::StandAlone);
        let Some(l) = self.link.take() else {
            if after == After::StandAlone && self.st.cstate() != ConnState::StandAlone {
                let _ = self.change_state(standalone.why(why));
                self.emit(Output::Disconnect);
            }
            return;
        };
        self.emit(Output::CloseLink { link: l.id });
        if self.oos_notice.take().is_some() {
            self.status_changed();
        }
        // Before the requests waiting for the peer complete: with resource-and-stonith their
        // replies are held from here on.
        let fence = self.fence_on_link_loss();
        self.fail_peer_requests();
        self.abort_resync();
        self.abort_verify();
        self.peer_rx_reset();
        let primary_lost_peer =
            self.st.cstate() >= ConnState::Connected && self.st.role() == Role::Primary;
        if primary_lost_peer && self.st.susp_fen() {
            // Frozen by fencing: no write goes on without the peer until fence-peer returns,
            // so the new generation waits for the thaw (DRBD's NEW_CUR_UUID). Should this node
            // die frozen, the peer's generation supersedes ours without a split brain.
            self.freeze.new_uuid_on_thaw = true;
        } else if primary_lost_peer
            && self.st.disk() == DiskState::UpToDate
            && self.uuids.bitmap == 0
        {
            let v = self.rng.uuid();
            self.uuids.new_current(v, true);
        }
        self.usable_bytes = self.local_usable_bytes;
        // Whatever the UUIDs say, the bits just set for the writes the peer may have missed
        // must survive a crash of this node.
        let why = format!("{why} (peer {})", l.peer_node);
        let _ = self.change_state(ChangeSet::new().cstate(via).why(why).persist());
        if let Some((id, force)) = self.pending_primary.take() {
            // The peer is gone: it cannot object any more, but with fencing it must be
            // outdated before we go on.
            if let Err(refusal) = self.promote_or_fence(id, force) {
                self.emit(Output::AdminReply {
                    id,
                    result: Err(refusal),
                });
            }
        }
        match after {
            After::Reconnect => {
                let _ = self.change_state(ChangeSet::new().cstate(ConnState::WFConnection));
                self.emit(Output::Connect);
            }
            After::StandAlone => {
                let _ = self.change_state(standalone);
                self.emit(Output::Disconnect);
            }
        }
        if fence {
            self.fence_lost_peer();
        }
    }

    pub(crate) fn protocol_error(&mut self, why: String) {
        self.lose_link(ConnState::ProtocolError, &why, After::Reconnect);
    }

    pub(crate) fn packet(&mut self, now: Instant, link: LinkId, packet: Packet) {
        let Some(l) = self.link.as_mut() else { return };
        if l.id != link {
            return;
        }
        l.last_rx = now;
        if !l.peer_authed
            && !matches!(
                packet,
                Packet::AuthChallenge { .. } | Packet::AuthResponse { .. }
            )
        {
            let why = format!(
                "peer sent {} before authenticating (shared-secret is set here)",
                packet.name()
            );
            self.lose_link(ConnState::ProtocolError, &why, After::StandAlone);
            return;
        }
        let handshake_packet = matches!(
            packet,
            Packet::AuthChallenge { .. }
                | Packet::AuthResponse { .. }
                | Packet::Params(_)
                | Packet::Sizes { .. }
                | Packet::Bitmap { .. }
                | Packet::Ping
                | Packet::PingAck
                | Packet::Uuids { .. }
                | Packet::State { .. }
                | Packet::Bye
        );
        if !l.decided && !handshake_packet {
            self.protocol_error(format!("unexpected {} during the handshake", packet.name()));
            return;
        }
        match packet {
            Packet::Hello { .. } => self.protocol_error("Hello after the link was set up".into()),
            Packet::OutdateRequest { .. } | Packet::OutdateReply { .. } => {
                self.protocol_error(format!(
                    "{} on the replication link (it opens its own connection)",
                    packet.name()
                ))
            }
            Packet::AuthChallenge { nonce } => self.on_auth_challenge(&nonce),
            Packet::AuthResponse { mac } => self.on_auth_response(&mac),
            Packet::Params(p) => self.on_params(p),
            Packet::Sizes { usable_bytes, .. } => self.on_sizes(usable_bytes),
            Packet::Uuids {
                uuids,
                oos_bits,
                flags,
            } => self.on_uuids(uuids, oos_bits, flags),
            Packet::State { role, disk, .. } => self.on_state(role, disk),
            Packet::Bitmap { start, rle, last } => self.on_bitmap(start, rle, last),
            Packet::Ping => self.send(Packet::PingAck),
            Packet::PingAck => {
                if let Some(l) = self.link.as_mut() {
                    l.ping_sent = None;
                }
            }
            Packet::Bye => {
                self.lose_link(
                    ConnState::Disconnecting,
                    "the peer disconnected",
                    After::Reconnect,
                );
            }
            Packet::StateRequest { want_primary } => self.on_state_request(want_primary),
            Packet::StateReply { ok, reason } => self.on_state_reply(ok, reason),
            Packet::Data {
                id,
                offset,
                fua,
                data,
            } => self.on_peer_data(id, offset, fua, data),
            Packet::Zero {
                id,
                offset,
                len,
                trim,
                fua,
            } => self.on_peer_zero(id, offset, len, trim, fua),
            Packet::Barrier { epoch } => self.on_peer_barrier(epoch),
            Packet::RecvAck { id } | Packet::WriteAck { id } => self.on_peer_ack(id, true),
            Packet::NegAck { id } => self.on_peer_ack(id, false),
            Packet::BarrierAck { epoch } => self.on_barrier_ack(epoch),
            Packet::SyncStart { source, full } => self.on_sync_start(source, full),
            Packet::SyncUuid { uuid } => self.on_sync_uuid(now, uuid),
            Packet::RsRequest {
                id,
                offset,
                len,
                digest,
            } => self.on_rs_request(id, offset, len, digest),
            Packet::RsData { id, offset, data } => self.on_rs_data(id, offset, data),
            Packet::RsWriteAck { offset, len, .. } => self.on_rs_ack(offset, len, true),
            // Both ways: the target could not write a block, or the source could not send one.
            Packet::RsNegAck { id, offset, len } => {
                if matches!(
                    self.st.cstate(),
                    ConnState::SyncTarget | ConnState::PausedSyncT
                ) {
                    self.on_rs_neg_reply(id, offset, len);
                } else {
                    self.on_rs_ack(offset, len, false);
                }
            }
            Packet::RsInSync { id, offset, len } => self.on_rs_in_sync(now, id, offset, len),
            Packet::OvRequest { id, offset, len } => self.on_ov_request(id, offset, len),
            Packet::DataRequest { id, offset, len } => self.on_data_request(id, offset, len),
            Packet::DataReply { id, offset, data } => self.on_data_reply(id, offset, Some(data)),
            Packet::NegDReply { id, offset, .. } => self.on_data_reply(id, offset, None),
            Packet::OvReply { id, digest, .. } => self.on_ov_reply(id, digest),
            Packet::OvResult {
                offset,
                len,
                in_sync,
                ..
            } => self.on_ov_result(offset, len, in_sync),
            Packet::OvDone { oos_blocks } => self.on_ov_done(oos_blocks),
            Packet::SyncPause { paused } => {
                if self.resync.is_some() {
                    let _ =
                        self.set_sync_paused(now, paused, super::resync_state::PauseReason::Peer);
                }
            }
        }
    }

    fn on_auth_challenge(&mut self, nonce: &[u8]) {
        let (Some(secret), alg) = (
            self.cfg.peer.shared_secret.clone(),
            self.cfg.peer.cram_hmac_alg,
        ) else {
            let why = "the peer requires authentication but no shared-secret is configured here; set the same shared-secret and cram-hmac-alg in the net section on both nodes";
            self.lose_link(ConnState::ProtocolError, why, After::StandAlone);
            return;
        };
        let alg = alg.unwrap_or(HmacAlg::Sha1);
        let mac = auth::response(alg, &secret, nonce, &self.cfg.node);
        self.send(Packet::AuthResponse { mac });
    }

    fn on_auth_response(&mut self, mac: &[u8]) {
        let Some(l) = self.link.as_mut() else { return };
        let (Some(nonce), Some(secret)) = (l.nonce.take(), self.cfg.peer.shared_secret.clone())
        else {
            self.protocol_error("unsolicited authentication response".into());
            return;
        };
        let peer = l.peer_node.clone();
        let alg = self.cfg.peer.cram_hmac_alg.unwrap_or(HmacAlg::Sha1);
        if !auth::verify(alg, &secret, &nonce, &peer, mac) {
            let why = format!("Authentication of peer {peer} failed: wrong shared-secret (or cram-hmac-alg differs); fix the net section and run `repadm connect`");
            self.lose_link(ConnState::ProtocolError, &why, After::StandAlone);
            return;
        }
        tracing::info!(resource = %self.cfg.resource, "Peer authenticated using {} bytes HMAC", mac.len());
        if let Some(l) = self.link.as_mut() {
            l.peer_authed = true;
        }
        self.send_report();
    }

    fn on_params(&mut self, p: Params) {
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
        if let Some(l) = self.link.as_mut() {
            l.peer_params = Some(p);
        }
        self.try_decide();
    }

    fn on_sizes(&mut self, peer_usable: u64) {
        // 0 is a Diskless peer; checked against its disk state once that is known.
        if let Some(l) = self.link.as_mut() {
            l.peer_usable = Some(peer_usable);
        }
        self.try_decide();
    }

    fn on_uuids(&mut self, uuids: [u64; 4], oos_bits: u64, flags: u32) {
        let g = GenerationUuids {
            current: uuids[0],
            bitmap: uuids[1],
            history: [uuids[2], uuids[3]],
        };
        let decided = self.link.as_ref().is_some_and(|l| l.decided);
        if let Some(l) = self.link.as_mut() {
            l.peer_uuids = Some((g, flags));
            l.peer_oos_bits = oos_bits;
        }
        if !decided {
            self.try_decide();
            return;
        }
        // Skip-initial-sync from `new-current-uuid --clear-bitmap` on the peer.
        if flags & UUID_FLAG_SKIP_INITIAL_SYNC != 0 && self.uuids.current & !1 == UUID_JUST_CREATED
        {
            if let Some(bm) = self.bitmap.as_mut() {
                bm.clear_all();
            }
            self.uuids.current = g.current & !1;
            self.uuids.bitmap = 0;
            let _ = self.change_state(
                ChangeSet::new()
                    .disk(DiskState::UpToDate)
                    .pdsk(DiskState::UpToDate)
                    .why("peer skipped the initial sync: both sides UpToDate")
                    .persist(),
            );
        }
    }

    fn on_state(&mut self, role: u8, disk: u8) {
        let (Some(role), Some(disk)) = (role_from(role), disk_from(disk)) else {
            self.protocol_error(format!("invalid state packet (role {role}, disk {disk})"));
            return;
        };
        let decided = self.link.as_ref().is_some_and(|l| l.decided);
        if let Some(l) = self.link.as_mut() {
            l.peer_state = Some((role, disk));
        }
        if !decided {
            self.try_decide();
            return;
        }
        let had_disk = self.st.pdsk() >= DiskState::Inconsistent;
        let was_primary = self.st.peer_role() == Role::Primary;
        let _ = self.change_state(ChangeSet::new().peer_role(role).pdsk(disk));
        if !had_disk && disk < DiskState::Inconsistent && !was_primary && role == Role::Primary {
            // A Diskless peer was promoted: its writes will exist only here from now on
            // (DRBD's after_state_ch starts a new current UUID for this case).
            self.peer_lost_disk(role);
        }
        if had_disk && disk < DiskState::Inconsistent {
            if self.st.cstate() > ConnState::Connected {
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
            self.st.cstate(),
            ConnState::SyncSource | ConnState::PausedSyncS
        ) && disk == DiskState::UpToDate
        {
            self.finish_sync_source();
        }
        if self.st.disk() == DiskState::UpToDate
            && disk == DiskState::UpToDate
            && self.flags.crashed_primary()
        {
            self.flags.set_crashed_primary(false);
            self.persist_superblock();
        }
    }

    fn on_bitmap(&mut self, start: u64, rle: Vec<u8>, last: bool) {
        let Some(l) = self.link.as_mut() else { return };
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
                self.st.cstate(),
                ConnState::WFSyncUUID | ConnState::Connected
            ) {
                // Bits the source set after its first report (writes during the handshake).
                self.merge_peer_bitmap(&blob, false);
            } else {
                self.protocol_error(format!("bitmap while {}", self.st.cstate()));
            }
        }
    }

    /// Once both reports are complete: compare UUIDs and pick no-sync, a direction or a refusal
    /// (drbd_sync_handshake, docs/drbd-semantics.md §2.6; the decision itself is
    /// `handshake::decide`).
    fn try_decide(&mut self) {
        let Some(l) = self.link.as_mut() else { return };
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
                .peer_role(peer.role)
                .pdsk(peer.disk),
        );
        // The smaller device wins, as in DRBD; a Diskless side has no say.
        let pdisk = peer.disk;
        self.usable_bytes = match (disk <= DiskState::Failed, pdisk <= DiskState::Failed) {
            (false, false) if peer.usable == 0 => {
                self.protocol_error("peer reported a size of 0 with a disk attached".into());
                return;
            }
            (false, false) => self.local_usable_bytes.min(peer.usable),
            (true, false) => peer.usable,
            (false, true) => self.local_usable_bytes,
            (true, true) => 0,
        };
        if disk <= DiskState::Failed || pdisk <= DiskState::Failed {
            let _ = self.change_state(ChangeSet::new().cstate(ConnState::Connected));
            if pdisk <= DiskState::Failed {
                self.peer_lost_disk(peer.role);
            }
            return;
        }
        let me = OurSide {
            role: self.st.role(),
            disk,
            uuids: self.uuids,
            crashed_primary: self.flags.crashed_primary(),
            discard_my_data: self.discard_my_data,
            changes: self.bitmap.as_ref().map_or(0, Bitmap::count_ones),
            reported_changes,
            can_demote: self.open_clients == 0 && self.requests.in_flight() == 0,
            resolve_conflicts: !dialer,
        };
        let decision = decide(&self.cfg, &me, &peer);
        for name in &decision.handlers {
            self.emit(Output::Handler { name });
        }
        if decision.demote {
            self.uuids.current &= !1;
            let _ = self.change_state(ChangeSet::new().role(Role::Secondary).persist());
        }
        if !matches!(decision.outcome, Outcome::Refuse { .. })
            || !decision.handlers.contains(&"split-brain")
        {
            self.discard_my_data = false;
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
                    self.oos_notice = decision.unresolved;
                    self.status_changed();
                }
                let _ = self.change_state(ChangeSet::new().cstate(ConnState::Connected));
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
                        .cstate(ConnState::WFSyncUUID)
                        .persist(),
                );
            }
        }
    }

    /// Both sides end up with the OR of their bitmaps (or all bits for a full sync).
    fn merge_peer_bitmap(&mut self, rle: &[u8], full: bool) {
        let Some(bm) = self.bitmap.as_mut() else {
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

    /// Ping and ko-count checks (docs/drbd-semantics.md §5.3). Returns when the next check is due.
    pub(crate) fn peer_timers(&mut self, now: Instant) {
        let Some(l) = self.link.as_ref() else { return };
        let s = self.cfg.peer.clone();
        if let Some(sent) = l.ping_sent {
            if now >= sent + s.ping_timeout {
                let why = format!(
                    "PingAck did not arrive in time ({} ms)",
                    s.ping_timeout.as_millis()
                );
                self.lose_link(ConnState::Timeout, &why, After::Reconnect);
                return;
            }
        } else if now >= l.last_rx + s.ping_int {
            if let Some(l) = self.link.as_mut() {
                l.ping_sent = Some(now);
            }
            self.send(Packet::Ping);
        }
        let ko = s.timeout * s.ko_count.max(1);
        if let Some(oldest) = self.requests.oldest_peer_wait() {
            if now >= oldest + ko {
                let why = format!(
                    "peer did not acknowledge a write for {} s (timeout × ko-count)",
                    ko.as_secs()
                );
                self.lose_link(ConnState::Timeout, &why, After::Reconnect);
            }
        }
    }

    pub(crate) fn peer_next_timeout(&self) -> Option<Instant> {
        let l = self.link.as_ref()?;
        let s = &self.cfg.peer;
        let ping = match l.ping_sent {
            Some(sent) => sent + s.ping_timeout,
            None => l.last_rx + s.ping_int,
        };
        let ko = self
            .requests
            .oldest_peer_wait()
            .map(|t| t + s.timeout * s.ko_count.max(1));
        Some(ko.map_or(ping, |k| k.min(ping)))
    }

    // ---- cluster-wide role changes ----

    /// Becoming Primary while connected asks the peer first, so that two nodes promoted at the
    /// same moment cannot both win.
    pub(crate) fn ask_peer_for_primary(&mut self, id: super::io::AdminId, force: bool) {
        self.pending_primary = Some((id, force));
        self.send(Packet::StateRequest { want_primary: true });
    }

    fn on_state_request(&mut self, want_primary: bool) {
        if !want_primary {
            self.send(Packet::StateReply {
                ok: true,
                reason: String::new(),
            });
            return;
        }
        let we_hold_conflicts = self.link.as_ref().is_some_and(|l| !l.dialer);
        let (ok, reason) = if self.cfg.allow_two_primaries {
            (true, String::new())
        } else if self.st.role() == Role::Primary {
            (false, format!("peer {} is Primary", self.cfg.node))
        } else if self.pending_primary.is_some() && we_hold_conflicts {
            (
                false,
                "concurrent state change: the peer is being promoted too".to_owned(),
            )
        } else {
            (true, String::new())
        };
        self.send(Packet::StateReply { ok, reason });
    }

    fn on_state_reply(&mut self, ok: bool, reason: String) {
        let Some((id, force)) = self.pending_primary.take() else {
            self.protocol_error("StateReply without a request".into());
            return;
        };
        if ok {
            self.finish_primary(id, force, false);
        } else {
            self.emit(Output::AdminReply {
                id,
                result: Err(super::refusal::Refusal::PeerRefused { reason }),
            });
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
