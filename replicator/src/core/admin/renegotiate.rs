//! After `adjust` changed a setting the two nodes agree on at the handshake (protocol,
//! after-sb-*, the digests, the shared secret, …; `reconfigure.rs`), the peer refuses the new
//! settings until its own `adjust`, and this node refuses the peer's old ones: each handshake
//! ends StandAlone. For a while the engine itself asks to connect again, so that adjusting the
//! two nodes one after the other is enough, with no retry loop outside it.
//!
//! The window closes when the link is Connected, when it expires, or at an explicit
//! `disconnect` (the operator wants the node StandAlone). The engine's side (`renegotiate_step`,
//! which connects) is in `reconfigure.rs`, so that this file stays free of `Engine`.

use std::time::{Duration, Instant};

use crate::core::state::ConnState;

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

    /// After every input, with the node's connection state: whether to connect again now.
    /// Within the window, a node left StandAlone connects again `RETRY` later.
    pub(crate) fn step(&mut self, now: Instant, cstate: ConnState, has_peer: bool) -> bool {
        let Some(until) = self.until else {
            return false;
        };
        if now > until || cstate >= ConnState::Connected || !has_peer {
            self.stop();
            return false;
        }
        if cstate != ConnState::StandAlone {
            self.retry_at = None;
            return false;
        }
        match self.retry_at {
            None => {
                self.retry_at = Some(now + RETRY);
                false
            }
            Some(at) if now >= at => {
                self.retry_at = None;
                true
            }
            Some(_) => false,
        }
    }

    /// When the engine wants `Input::Timer` for the next attempt.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.until.and(self.retry_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standalone_node_connects_again_after_retry_until_connected() {
        let t0 = Instant::now();
        let mut r = Renegotiation::default();
        assert!(!r.step(t0, ConnState::StandAlone, true), "no window yet");
        r.start(t0);
        assert!(!r.step(t0, ConnState::StandAlone, true));
        assert_eq!(r.next_timeout(), Some(t0 + RETRY));
        assert!(!r.step(t0 + RETRY / 2, ConnState::StandAlone, true));
        assert!(r.step(t0 + RETRY, ConnState::StandAlone, true));
        assert!(!r.step(t0 + RETRY, ConnState::WFConnection, true));
        assert_eq!(r.next_timeout(), None);
        assert!(!r.step(t0 + RETRY * 2, ConnState::Connected, true));
        assert!(
            !r.step(t0 + RETRY * 3, ConnState::StandAlone, true),
            "closed"
        );
        assert_eq!(r.next_timeout(), None);
    }

    #[test]
    fn the_window_expires() {
        let t0 = Instant::now();
        let mut r = Renegotiation::default();
        r.start(t0);
        assert!(!r.step(t0 + WINDOW, ConnState::StandAlone, true));
        assert!(!r.step(t0 + WINDOW + RETRY * 2, ConnState::StandAlone, true));
        assert_eq!(r.next_timeout(), None);
    }
}
