//! After `adjust` changed a setting the two nodes agree on at the handshake (protocol,
//! after-sb-*, the digests, the shared secret, …; `reconfigure.rs`), the peer refuses the new
//! settings until its own `adjust`, and this node refuses the peer's old ones: each handshake
//! ends StandAlone. For a while the engine itself asks to connect again, so that adjusting the
//! two nodes one after the other is enough, with no retry loop outside it.
//!
//! The window closes when the link is Connected, when it expires, or at an explicit
//! `disconnect` (the operator wants the node StandAlone).

use std::time::{Duration, Instant};

use super::engine::Engine;
use super::io::Output;
use super::state::ConnState;
use super::state_change::ChangeSet;

/// How long after such an adjust the engine keeps reconnecting a refused link.
pub(crate) const WINDOW: Duration = Duration::from_secs(600);
/// How long a refused link stays StandAlone before the next attempt.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Renegotiation {
    /// The window is open until then.
    until: Option<Instant>,
    /// StandAlone within the window: connect again at this instant.
    retry_at: Option<Instant>,
}

impl Renegotiation {
    pub(crate) fn start(&mut self, now: Instant) {
        self.until = Some(now + WINDOW);
        self.retry_at = None;
    }

    pub(crate) fn stop(&mut self) {
        *self = Renegotiation::default();
    }

    /// When the engine wants `Input::Timer` for the next attempt.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.until.and(self.retry_at)
    }
}

impl Engine {
    /// After every input: within the window, a node left StandAlone connects again `RETRY`
    /// later.
    pub(crate) fn renegotiate_step(&mut self, now: Instant) {
        let Some(until) = self.renegotiation.until else {
            return;
        };
        let cstate = self.st.cstate();
        if now > until || cstate >= ConnState::Connected || !self.cfg.has_peer {
            self.renegotiation.stop();
            return;
        }
        if cstate != ConnState::StandAlone {
            self.renegotiation.retry_at = None;
            return;
        }
        match self.renegotiation.retry_at {
            None => self.renegotiation.retry_at = Some(now + RETRY),
            Some(at) if now >= at => {
                self.renegotiation.retry_at = None;
                tracing::info!(resource = %self.cfg.resource, "configuration changed (adjust): connecting again to renegotiate with the peer");
                let _ = self.change_state(ChangeSet::new().cstate(ConnState::WFConnection));
                self.emit(Output::Connect);
            }
            Some(_) => {}
        }
    }
}
