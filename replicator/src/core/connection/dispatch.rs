//! Packet dispatch: every packet of an established link goes to the part it concerns; the
//! authentication challenge comes first when a shared secret is set.

use crate::core::connection::after::After;
use crate::core::contract::io::LinkId;
use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState};
use crate::wire::auth;
use crate::wire::Packet;
use rep_resources::HmacAlg;
use std::time::Instant;

impl Engine {
    pub(crate) fn packet(&mut self, now: Instant, link: LinkId, packet: Packet) {
        let Some(l) = self.peers.data_mut().link.as_mut() else {
            return;
        };
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
                | Packet::ByeOutdated
        );
        if !l.decided && !handshake_packet {
            self.protocol_error(format!("unexpected {} during the handshake", packet.name()));
            return;
        }
        match packet {
            Packet::Hello { .. } => self.protocol_error("Hello after the link was set up".into()),
            Packet::OutdateRequest { .. }
            | Packet::OutdateReply { .. }
            | Packet::RelayOutdate { .. }
            | Packet::RelayReply { .. } => self.protocol_error(format!(
                "{} on the replication link (it belongs on its own connection)",
                packet.name()
            )),
            Packet::AuthChallenge { nonce } => self.on_auth_challenge(&nonce),
            Packet::AuthResponse { mac } => self.on_auth_response(&mac),
            Packet::Params(p) => self.on_params(*p),
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
                if let Some(l) = self.peers.data_mut().link.as_mut() {
                    l.ping_sent = None;
                }
                self.outdate_request_answered();
            }
            Packet::Bye => {
                self.lose_link(
                    ConnState::Disconnecting,
                    "the peer disconnected",
                    After::Reconnect,
                );
            }
            Packet::ByeOutdated => {
                let peer = self.data_id();
                self.lose_link(
                    ConnState::Disconnecting,
                    "the peer left, its disk Outdated",
                    After::Reconnect,
                );
                // It cannot be promoted elsewhere now: for quorum it no longer counts.
                let _ = self.change_state(
                    ChangeSet::new()
                        .pdsk(peer, DiskState::Outdated)
                        .why("the peer left gracefully")
                        .persist(),
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
            Packet::SyncUuid { uuid } => self.on_sync_uuid(uuid),
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
                    self.data_st().cstate(),
                    ConnState::SyncTarget | ConnState::PausedSyncT
                ) {
                    self.on_rs_neg_reply(id, offset, len);
                } else {
                    self.on_rs_ack(offset, len, false);
                }
            }
            Packet::RsInSync { id, offset, len } => self.on_rs_in_sync(now, id, offset, len),
            Packet::RsZero { id, offset, len } => self.on_rs_zero(id, offset, len),
            Packet::OvRequest { id, offset, len } => self.on_ov_request(id, offset, len),
            Packet::DataRequest { id, offset, len } => self.on_data_request(id, offset, len),
            Packet::DataReply { id, offset, data } => {
                self.on_data_reply(id, offset, Some(Vec::from(data)))
            }
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
                if self.peers.data().resync.running() {
                    let _ = self.set_sync_paused(
                        now,
                        paused,
                        crate::core::sync::resync_state::PauseReason::Peer,
                    );
                }
            }
        }
    }

    pub(super) fn on_auth_challenge(&mut self, nonce: &[u8]) {
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

    pub(super) fn on_auth_response(&mut self, mac: &[u8]) {
        let Some(l) = self.peers.data_mut().link.as_mut() else {
            return;
        };
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
        if let Some(l) = self.peers.data_mut().link.as_mut() {
            l.peer_authed = true;
        }
        self.send_report();
    }
}
