//! The sticky split-brain flag and what the engine remembers of the peer's side (the types
//! and their rendering are in split_brain.rs): raised by a handshake that could not resolve a
//! split brain, cleared by one that reached a decision.

use crate::core::connection::handshake::PeerReport;
use crate::core::contract::split_brain::{side, PeerAtSplit, SbView};
use crate::core::device::generation::GenEvent;
use crate::core::engine::Engine;

impl Engine {
    /// The sticky split-brain flag.
    pub fn split_brain(&self) -> bool {
        self.dev.gen.flags().split_brain()
    }

    /// A handshake found a split brain it could not resolve: raise the flag (persisted) and
    /// keep what the peer reported.
    pub(crate) fn note_split_brain(&mut self, peer: &PeerReport) {
        self.peers.data_mut().at_split = Some(PeerAtSplit::from_report(peer));
        if self.gen_change(GenEvent::SplitBrain(true)).changed() {
            self.status_changed();
        }
    }

    /// A handshake reached a decision (a resync in some direction, or none needed): whatever
    /// split brain there was is resolved.
    pub(crate) fn note_split_brain_resolved(&mut self) {
        self.peers.data_mut().at_split = None;
        if self.dev.gen.flags().split_brain() {
            tracing::info!(resource = %self.cfg.resource, "split brain resolved");
            self.gen_change(GenEvent::SplitBrain(false));
            self.status_changed();
        }
    }

    /// Both sides of the split brain, as far as this node knows them.
    pub fn split_brain_view(&self) -> SbView {
        let local = side(
            self.dev.gen.uuids(),
            self.st.role(),
            self.peers.data().bitmap.as_ref(),
        );
        let peer = self.peers.data().at_split.as_ref().map(PeerAtSplit::side);
        SbView {
            split_brain: self.dev.gen.flags().split_brain(),
            local,
            peer,
        }
    }
}
