//! `repadm adjust` on a running resource: the driver hands the engine a new configuration
//! built from the re-read `.res` file. Settings the engine reads when it needs them (ping-int,
//! ko-count, resync-rate and the controller, on-io-error, fencing, max-epoch-size, …) take
//! effect at once; settings the two nodes agree on at the handshake (protocol, after-sb-*,
//! allow-two-primaries, the digest algorithms, shared-secret) are renegotiated by dropping the
//! link, which reconnects at once (a lost link's bitmap covers whatever the peer may miss).
//!
//! Never checks what may not change on a running resource (al-extents, the disk, the peer
//! itself): the driver refuses those before it gets here.

use std::time::Instant;

use crate::core::connection::after::After;
use crate::core::contract::config::EngineConfig;
use crate::core::contract::io::Output;
use crate::core::engine::Engine;
use crate::core::state::node_state::ChangeSet;
use crate::core::state::ConnState;

/// The settings both nodes must agree on (or exchange) at the handshake, in a comparable form.
fn agreed(cfg: &EngineConfig) -> impl PartialEq + '_ {
    let p = &cfg.peer;
    (
        cfg.protocol,
        cfg.allow_two_primaries,
        (
            p.after_sb_0pri.to_string(),
            p.after_sb_1pri,
            p.after_sb_2pri,
        ),
        (p.integrity_alg, p.verify_alg, p.csums_alg),
        (p.shared_secret.as_deref(), p.cram_hmac_alg),
    )
}

impl Engine {
    /// Replace the configuration; renegotiate with the peer if an agreed setting changed.
    pub(crate) fn reconfigure(&mut self, cfg: EngineConfig) {
        let changed = agreed(&self.cfg) != agreed(&cfg);
        let renegotiate = self.peers.data().link.is_some() && changed;
        self.cfg = cfg;
        if let (true, Some(now)) = (changed, self.last_now) {
            self.admin.renegotiation.start(now);
        }
        if renegotiate {
            self.lose_link(
                ConnState::Disconnecting,
                "configuration changed (adjust): renegotiating with the peer",
                After::Reconnect,
            );
        }
        // Status shows the protocol: one StateChanged for this input, as for any other.
        self.status_changed();
    }

    /// After every input: within the window an adjust of an agreed setting opened
    /// (`renegotiate.rs`), a node the handshake left StandAlone connects again.
    pub(crate) fn renegotiate_step(&mut self, now: Instant) {
        if self
            .admin
            .renegotiation
            .step(now, self.data_st().cstate(), self.cfg.has_peer)
        {
            tracing::info!(resource = %self.cfg.resource, "configuration changed (adjust): connecting again to renegotiate with the peer");
            let _ =
                self.change_state(ChangeSet::new().cstate(self.data_id(), ConnState::WFConnection));
            self.emit(Output::Connect);
        }
    }
}
