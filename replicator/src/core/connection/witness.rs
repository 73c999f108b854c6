//! The diskless witness as this data node sees it (docs/quorum.md, "The witness"): a peer that
//! holds no data and takes no writes. Its link is the runtime's (one socket, Hello, pings and
//! outdate relays, runtime/witness_link.rs); the engine learns only whether it is there, which
//! is what quorum's tiebreaker counts. Outdating the data peer through it is the fence-peer
//! of a resource with a witness (`EngineConfig::from_view` makes its fencing
//! resource-and-stonith; runtime/outdater.rs relays the request through the witness).

use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::{ConnState, DiskState, Role};

impl Engine {
    /// The runtime's link to the witness came up (`connected`) or went (or is being dialled).
    pub(crate) fn witness_seen(&mut self, connected: bool) {
        let Some(w) = self.peers.witness() else {
            tracing::warn!(resource = %self.cfg.resource, "witness link reported, but the resource has no witness: ignored");
            return;
        };
        let cs = if connected {
            ChangeSet::new()
                .cstate(w, ConnState::Connected)
                .pdsk(w, DiskState::Diskless)
                .peer_role(w, Role::Secondary)
                .why("the witness is connected")
        } else {
            ChangeSet::new()
                .cstate(w, ConnState::WFConnection)
                .why("no connection to the witness")
        };
        let _ = self.change_state(cs);
    }

    /// With a witness, a Primary that froze I/O to have its lost data peer outdated, and has
    /// lost quorum as well (the witness went too), leaves the held I/O to `on-no-quorum`:
    /// nobody can outdate the peer now, and no write may complete without quorum anyway.
    pub(crate) fn fence_yields_to_quorum(&mut self) -> bool {
        if self.peers.witness().is_none() || !self.st.susp_fen() || self.st.quorum() {
            return false;
        }
        tracing::warn!(resource = %self.cfg.resource, "lost quorum while I/O was frozen to outdate the peer: on-no-quorum {} decides", self.cfg.quorum.on_no_quorum);
        self.thaw_io("quorum lost: on-no-quorum decides the frozen I/O");
        true
    }
}
