//! Feeding the resync limiter (`limit.rs`) from the engine: the send backlog the driver
//! reports, resync bytes sent and acknowledged, and the once-a-second verdict. Kept apart from
//! `limit.rs` so that the limiter's types, which `resync_state.rs` (and so `engine.rs`) holds,
//! do not import `Engine` back.

use std::time::Instant;

use crate::core::engine::Engine;
use crate::core::state::ConnState;
use crate::core::sync::limit::{source_limit, target_limit, Limit, SourceView, EVAL_EVERY, MARKS};
use crate::core::sync::resync_state::Side;
use crate::wire::Packet;

impl Engine {
    /// The driver reports this node's data send queue (bytes not yet on the socket) before
    /// each input: the SyncSource's view of the network.
    pub fn note_send_backlog(&mut self, bytes: u64) {
        if let Some(rs) = self.peers.data_mut().resync.run_mut() {
            rs.gauge.backlog = bytes;
        }
    }

    /// Resync data leaving (SyncSource): counted until the target acknowledges it.
    pub(crate) fn note_rs_sent(&mut self, packet: &Packet) {
        // A zero range is acknowledged like data (RsWriteAck with its length), so it counts
        // as sent too, or the acks would outrun the sends and hide the peer's disk.
        let len = match packet {
            Packet::RsData { data, .. } => data.len() as u64,
            Packet::RsZero { len, .. } => u64::from(*len),
            _ => return,
        };
        if let Some(rs) = self.peers.data_mut().resync.run_mut() {
            rs.gauge.sent += len;
        }
    }

    /// After each input while a resync runs: sample where its bytes wait; once a second take
    /// a rate mark and renew the verdict (a new verdict is a status change: `events`).
    pub(crate) fn resync_observe(&mut self, now: Instant) {
        let left = self.peers.data().oos_bits();
        let rx_backlog = self.peers.data().rx.backlog_bytes();
        let pace = self.cfg.peer.pace;
        let pace_now = pace.now(now, self.requests.last_app_write);
        let paused = matches!(
            self.data_st().cstate(),
            ConnState::PausedSyncS | ConnState::PausedSyncT
        );
        let Some(rs) = self.peers.data_mut().resync.run_mut() else {
            return;
        };
        let g = &mut rs.gauge;
        match &rs.side {
            Side::Target(t) => {
                let out = t.outstanding_bytes();
                let local = rx_backlog.min(out);
                g.near.add(now, local);
                g.far.add(now, out - local);
            }
            Side::Source(s) => {
                g.near.add(now, s.pending_read_bytes());
                g.far.add(now, g.sent.saturating_sub(g.acked));
                g.wire.add(now, g.backlog);
            }
        }
        let due = g
            .last_eval
            .is_none_or(|t| now.saturating_duration_since(t) >= EVAL_EVERY);
        if !due {
            return;
        }
        g.last_eval = Some(now);
        for m in [&mut g.near, &mut g.far, &mut g.wire] {
            m.close(now);
        }
        g.marks.push_back((now, left));
        while g.marks.len() > MARKS {
            g.marks.pop_front();
        }
        let verdict = if paused {
            Some(Limit::Paused)
        } else if rs.started.is_none() {
            None
        } else {
            match &rs.side {
                Side::Target(t) => {
                    Some(target_limit(t.stop, pace_now.by, g.near.get(), g.far.get()))
                }
                Side::Source(_) => g.current_kib(now, left).map(|kib| {
                    let view = SourceView {
                        reading: g.near.get(),
                        unacked: g.far.get(),
                        backlog: g.wire.get(),
                        rate: kib * 1024,
                    };
                    source_limit(view, pace_now)
                }),
            }
        };
        if verdict != g.limit {
            g.limit = verdict;
            self.status_changed();
        }
    }
}
