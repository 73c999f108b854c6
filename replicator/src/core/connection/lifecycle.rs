//! The link's lifecycle, the engine's side: a link comes up (and starts the handshake), is
//! lost (what the peer may have missed goes into the bitmap, a Primary starts a new data
//! generation) and either reconnects or goes StandAlone (docs/drbd-semantics.md §1.7, §2.6).

use crate::core::connection::after::After;
use crate::core::connection::handshake::Link;
use crate::core::contract::io::{LinkId, LinkLoss, Output};
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};
use crate::wire::auth;
use crate::wire::Packet;
use std::time::Instant;

impl Engine {
    pub(crate) fn link_id(&self) -> Option<LinkId> {
        self.peers.data().link.as_ref().map(|l| l.id)
    }

    /// Queue a packet on the current link; dropped when there is none (the peer will learn
    /// the state in the next handshake).
    pub(crate) fn send(&mut self, packet: Packet) {
        if let Some(link) = self.link_id() {
            self.note_rs_sent(&packet);
            self.emit(Output::Send { link, packet });
        }
    }

    /// Handshake finished and the peer may get replicated writes and state.
    pub(crate) fn link_ready(&self) -> bool {
        self.peers.data().link.as_ref().is_some_and(|l| l.decided)
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
            self.data_st().cstate(),
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
        let _ =
            self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::WFReportParams));
        let authed = self.cfg.peer.shared_secret.is_none();
        let mut l = Link::new(link, dialer, peer_node, authed, now);
        self.peers.data_mut().connects += 1;
        if self.cfg.peer.shared_secret.is_some() {
            // Unpredictable per link (the driver reads the OS random source): a nonce derived
            // from a seed would let one observed challenge predict the next and replay answers.
            let nonce = nonce.to_vec();
            l.nonce = Some(nonce.clone());
            self.peers.data_mut().link = Some(l);
            self.send(Packet::AuthChallenge { nonce });
        } else {
            self.peers.data_mut().link = Some(l);
            self.send_report();
        }
    }

    pub(crate) fn link_down(&mut self, link: LinkId, loss: LinkLoss) {
        if self.peers.by_link(link).is_none() {
            // A link already replaced or torn down: its loss was handled then.
            return;
        }
        let (state, why) = match &loss {
            LinkLoss::BrokenPipe => (
                ConnState::BrokenPipe,
                "the peer closed the connection".to_owned(),
            ),
            LinkLoss::NetworkFailure(e) => (ConnState::NetworkFailure, e.to_string()),
            LinkLoss::ProtocolError(e) => (ConnState::ProtocolError, e.to_string()),
        };
        self.lose_link(state, &why, After::Reconnect);
    }

    /// Tear the link down: what the peer may have missed goes into the bitmap, a Primary starts
    /// a new data generation, and the node either reconnects or goes StandAlone.
    pub(crate) fn lose_link(&mut self, via: ConnState, why: &str, after: After) {
        let standalone = ChangeSet::new().cstate(self.data_id(), ConnState::StandAlone);
        let Some(l) = self.peers.data_mut().link.take() else {
            if after == After::StandAlone && self.data_st().cstate() != ConnState::StandAlone {
                let _ = self.change_state(standalone.why(why));
                self.emit(Output::Disconnect);
            }
            return;
        };
        self.emit(Output::CloseLink { link: l.id });
        if self.peers.data_mut().oos_notice.take().is_some() {
            self.status_changed();
        }
        // Before the requests waiting for the peer complete: with resource-and-stonith their
        // replies are held from here on.
        let fence = self.fence_on_link_loss();
        let primary_lost_peer =
            self.data_st().cstate() >= ConnState::Connected && self.st.role() == Role::Primary;
        // A Primary goes on alone from here: what it acknowledges now, the requests the peer
        // did not confirm included, waits for the superblock below (new generation, bits).
        let gate = primary_lost_peer && !self.st.susp_fen();
        if gate {
            self.freeze.close_gate();
        }
        self.fail_peer_requests();
        self.abort_resync();
        self.abort_verify();
        self.peer_rx_reset();
        if primary_lost_peer && self.st.susp_fen() {
            // Frozen by fencing: no write goes on without the peer until fence-peer returns,
            // so the new generation waits for the thaw (DRBD's NEW_CUR_UUID). Should this node
            // die frozen, the peer's generation supersedes ours without a split brain.
            self.freeze.new_uuid_on_thaw = true;
        } else if primary_lost_peer && self.st.disk() == DiskState::UpToDate {
            self.gen_change(GenEvent::LostPeer);
        }
        self.dev.usable_bytes = self.dev.local_usable_bytes;
        // Whatever the UUIDs say, the bits just set for the writes the peer may have missed
        // must survive a crash of this node.
        let why = format!("{why} (peer {})", l.peer_node);
        let written = self.change_state(
            ChangeSet::new()
                .cstate(self.data_id(), via)
                .why(why)
                .persist(),
        );
        if gate {
            self.gate_on(written);
        }
        if let Some((id, force)) = self.admin.pending_primary.take() {
            // The peer is gone: it cannot object any more, but with fencing it must be
            // outdated before we go on.
            self.promote_again(id, force);
        }
        match after {
            After::Reconnect => {
                let _ = self
                    .change_state(ChangeSet::new().cstate(self.data_id(), ConnState::WFConnection));
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
        self.outdate_request_after_loss();
    }

    pub(crate) fn protocol_error(&mut self, why: String) {
        self.lose_link(ConnState::ProtocolError, &why, After::Reconnect);
    }
}
