//! Liveness of the link: pings and ko-count (docs/drbd-semantics.md §5.3).

use crate::core::connection::after::After;
use crate::core::engine::Engine;
use crate::core::state::ConnState;
use crate::wire::Packet;
use std::time::Instant;

impl Engine {
    /// Ping and ko-count checks (docs/drbd-semantics.md §5.3). Returns when the next check is due.
    pub(crate) fn peer_timers(&mut self, now: Instant) {
        let Some(l) = self.peers.data().link.as_ref() else {
            return;
        };
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
            if let Some(l) = self.peers.data_mut().link.as_mut() {
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
        let l = self.peers.data().link.as_ref()?;
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
}
