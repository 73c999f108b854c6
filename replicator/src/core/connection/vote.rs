//! Cluster-wide role changes: becoming Primary while connected asks the peer first, so that
//! two nodes promoted at the same moment cannot both win.

use crate::core::contract::io::Output;
use crate::core::engine::Engine;
use crate::core::state::Role;
use crate::wire::Packet;

impl Engine {
    /// Becoming Primary while connected asks the peer first, so that two nodes promoted at the
    /// same moment cannot both win.
    pub(crate) fn ask_peer_for_primary(
        &mut self,
        id: crate::core::contract::io::AdminId,
        force: bool,
    ) {
        self.admin.pending_primary = Some((id, force));
        self.send(Packet::StateRequest { want_primary: true });
    }

    pub(super) fn on_state_request(&mut self, want_primary: bool) {
        if !want_primary {
            self.send(Packet::StateReply {
                ok: true,
                reason: String::new(),
            });
            return;
        }
        let we_hold_conflicts = self.peers.data().link.as_ref().is_some_and(|l| !l.dialer);
        let (ok, reason) = if self.cfg.allow_two_primaries {
            (true, String::new())
        } else if self.st.role() == Role::Primary {
            (false, format!("peer {} is Primary", self.cfg.node))
        } else if self.admin.pending_primary.is_some() && we_hold_conflicts {
            (
                false,
                "concurrent state change: the peer is being promoted too".to_owned(),
            )
        } else {
            (true, String::new())
        };
        self.send(Packet::StateReply { ok, reason });
    }

    pub(super) fn on_state_reply(&mut self, ok: bool, reason: String) {
        let Some((id, force)) = self.admin.pending_primary.take() else {
            self.protocol_error("StateReply without a request".into());
            return;
        };
        if ok {
            self.finish_primary(id, force, false);
        } else {
            self.emit(Output::AdminReply {
                id,
                result: Err(crate::core::contract::refusal::Refusal::PeerRefused { reason }),
            });
        }
    }
}
