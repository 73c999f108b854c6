//! What limits a running resync right now, and the setting to change (issue 24 §3).
//!
//! The SyncTarget decides how much to ask for each time it may ask (`resync.rs`), so it knows
//! why it stopped: the rate limit (`resync-rate`, `c-max-rate`, or `c-min-rate` while the
//! application writes), the controller's plan (`c-fill-target` / `c-delay-target` in
//! flight), or its window of requests. When the plan or the window is full, Little's law
//! tells where the time goes: the bytes waiting for this node's disk against the bytes not
//! arrived yet (the SyncSource's disk or the network).
//!
//! The SyncSource does not pace, but it sees what the SyncTarget cannot: its own send queue
//! (the network: the socket is not writable), its own reads, and how long the target takes to
//! acknowledge what it was sent (the peer's disk). Otherwise it mirrors the pacing from its
//! own settings (the same `.res` file in the usual setup).
//!
//! Everything here is a pure function of what the engine saw (samples taken after each
//! input, a verdict once a second), so the simulator replays it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::sync::pace::{Pace, PaceNow, RateBy};

/// How often the verdict is renewed (and a rate mark taken).
pub(crate) const EVAL_EVERY: Duration = Duration::from_secs(1);
/// Marks kept for the current rate: it is measured over the last few seconds.
pub(crate) const MARKS: usize = 4;

/// Why the SyncTarget stopped asking, the last time it asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The rate limit (`resync-rate`, `c-max-rate` or `c-min-rate`) has no bytes left now.
    Rate,
    /// The controller's bytes in flight (`c-fill-target` / `c-delay-target`) are reached.
    Plan,
    /// `WINDOW` requests are in flight.
    Window,
    /// Every set bit is asked for: the last replies are coming.
    #[default]
    AllAsked,
}

/// A send queue this long that holds at least half of the unacknowledged data: the network.
const NET_BACKLOG_BYTES: u64 = 1 << 20;
/// Acknowledgements slower than this on average (send to write ack) point at the peer's disk:
/// a link's round trip is far shorter, or the send queue would fill first.
const SLOW_ACK: Duration = Duration::from_millis(20);

/// What holds a resync back. The names are what `status --json` shows in `limit.by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// The configured cap with the controller off (`c-plan-ahead 0`).
    ResyncRate,
    /// The configured cap of the dynamic controller.
    CMaxRate,
    /// The controller's plan: the data in flight reached `c-fill-target` (or `c-delay-target`
    /// worth of `c-max-rate`).
    Controller,
    /// Application I/O: the resync yields to `c-min-rate`.
    CMinRate,
    /// The network: resync data waits in this node's send queue (the socket is not writable).
    Network,
    /// The peer's disk: it acknowledges the resync data slowly.
    PeerDisk,
    /// This node's disk: resync data waits for its writes (SyncTarget) or reads (SyncSource).
    LocalDisk,
    /// The peer: the SyncTarget waits for the SyncSource's replies (its disk or the network),
    /// or the SyncSource serves all it is asked for (the SyncTarget's plan); its status says.
    Peer,
    /// `pause-sync`, the peer's pause, or `resync-after`.
    Paused,
    /// Every block is asked for; the last replies are coming.
    Finishing,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::ResyncRate,
        Limit::CMaxRate,
        Limit::Controller,
        Limit::CMinRate,
        Limit::Network,
        Limit::PeerDisk,
        Limit::LocalDisk,
        Limit::Peer,
        Limit::Paused,
        Limit::Finishing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Limit::ResyncRate => "resync-rate",
            Limit::CMaxRate => "c-max-rate",
            Limit::Controller => "controller",
            Limit::CMinRate => "c-min-rate",
            Limit::Network => "network",
            Limit::PeerDisk => "peer-disk",
            Limit::LocalDisk => "local-disk",
            Limit::Peer => "peer",
            Limit::Paused => "paused",
            Limit::Finishing => "finishing",
        }
    }
}

/// `limit` in `status --json`: what limits the resync, the setting to change, and one line
/// for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitInfo {
    pub by: Limit,
    /// The `disk { }` or `net { }` option to change, if a setting can help.
    pub setting: Option<String>,
    pub text: String,
}

/// DRBD's unit letters for a KiB amount: 4096 → "4M", 250 → "250K".
fn kib_text(kib: u64) -> String {
    if kib >= 1 << 20 && kib.is_multiple_of(1 << 20) {
        format!("{}G", kib >> 20)
    } else if kib >= 1024 && kib.is_multiple_of(1024) {
        format!("{}M", kib >> 10)
    } else {
        format!("{kib}K")
    }
}

impl LimitInfo {
    pub fn new(by: Limit, pace: &Pace, side_target: bool) -> LimitInfo {
        let (setting, text) = match by {
            Limit::ResyncRate => (
                Some("resync-rate"),
                format!(
                    "limited by resync-rate {} (c-plan-ahead 0: the dynamic controller is off); raise resync-rate in disk {{ }}",
                    kib_text(pace.resync_rate_kib)
                ),
            ),
            Limit::CMaxRate => (
                Some("c-max-rate"),
                format!(
                    "limited by c-max-rate {}; raise c-max-rate in disk {{ }}",
                    kib_text(pace.c_max_rate_kib)
                ),
            ),
            Limit::Controller if pace.c_fill_target_bytes > 0 => (
                Some("c-fill-target"),
                format!(
                    "limited by the controller's plan: c-fill-target {} in flight; raise c-fill-target in disk {{ }}",
                    kib_text(pace.c_fill_target_bytes / 1024)
                ),
            ),
            Limit::Controller => (
                Some("c-delay-target"),
                format!(
                    "limited by the controller's plan: c-delay-target {}.{} s of c-max-rate in flight; raise c-delay-target in disk {{ }}",
                    pace.c_delay_target_ds / 10,
                    pace.c_delay_target_ds % 10
                ),
            ),
            Limit::CMinRate => (
                Some("c-min-rate"),
                format!(
                    "application I/O: the resync yields to c-min-rate {}; raise c-min-rate in disk {{ }} (0 stops the yielding)",
                    kib_text(pace.c_min_rate_kib)
                ),
            ),
            Limit::Network => (
                Some("sndbuf-size"),
                "limited by the network: resync data waits in the send queue (socket not writable); a faster link, or a larger sndbuf-size in net { } on a long link".to_string(),
            ),
            Limit::PeerDisk => (
                None,
                "limited by the peer's disk: it acknowledges resync writes slowly; no setting here helps (a faster disk there, or less load on it)".to_string(),
            ),
            Limit::LocalDisk if side_target => (
                None,
                "limited by this node's disk: resync data waits for its writes; no setting helps (a faster disk, or less load on it)".to_string(),
            ),
            Limit::LocalDisk => (
                None,
                "limited by this node's disk: the peer's requests wait for its reads; no setting helps (a faster disk, or less load on it)".to_string(),
            ),
            Limit::Peer if side_target => (
                None,
                "waiting for the SyncSource's replies (its disk, or the network); its status says which".to_string(),
            ),
            Limit::Peer => (
                None,
                "the SyncTarget asks for less than this node could send (its plan or its disk); its status says which".to_string(),
            ),
            Limit::Paused => (
                None,
                "paused (pause-sync, the peer's pause, or resync-after); resume-sync resumes a pause-sync".to_string(),
            ),
            Limit::Finishing => (
                None,
                "finishing: every block is asked for, the last replies are coming".to_string(),
            ),
        };
        LimitInfo {
            by,
            setting: setting.map(str::to_owned),
            text,
        }
    }
}

/// A time-weighted mean of a byte count that changes at inputs: each value holds from the input
/// that set it until the next one (Little's law needs the mean over time; inputs cluster while
/// data moves, so a mean per input would overstate what waits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mean {
    /// Byte-nanoseconds since `since`.
    area: u128,
    value: u64,
    at: Option<Instant>,
    since: Option<Instant>,
    /// The mean of the last completed period, half blended with the one before.
    mean: u64,
}

impl Mean {
    pub(crate) fn add(&mut self, now: Instant, value: u64) {
        if let Some(t) = self.at {
            self.area += u128::from(self.value) * now.saturating_duration_since(t).as_nanos();
        }
        self.since.get_or_insert(now);
        self.value = value;
        self.at = Some(now);
    }

    /// Close the period at `now`.
    pub(crate) fn close(&mut self, now: Instant) {
        self.add(now, self.value);
        let span = self
            .since
            .map_or(0, |s| now.saturating_duration_since(s).as_nanos());
        if let Some(m) = self.area.checked_div(span) {
            let m = u64::try_from(m).unwrap_or(u64::MAX);
            self.mean = self.mean / 2 + m / 2;
        }
        self.area = 0;
        self.since = Some(now);
    }

    pub(crate) fn get(self) -> u64 {
        self.mean
    }
}

/// The resync's rate marks, samples and verdict (one per resync, in `Resync`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Gauge {
    /// (when, bits left): the current rate is the progress since the oldest.
    pub(crate) marks: VecDeque<(Instant, u64)>,
    pub(crate) last_eval: Option<Instant>,
    pub(crate) limit: Option<Limit>,
    /// SyncSource: resync data bytes sent, and acknowledged by the target.
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    /// This node's data send queue as the driver last reported it.
    pub(crate) backlog: u64,
    /// SyncTarget: bytes waiting for our disk / not arrived. SyncSource: bytes waiting for
    /// our reads / sent and not acknowledged / in our send queue.
    pub(crate) near: Mean,
    pub(crate) far: Mean,
    pub(crate) wire: Mean,
}

impl Gauge {
    /// KiB/s over the last marks (`None` until a mark is a second old).
    pub(crate) fn current_kib(&self, now: Instant, left_bits: u64) -> Option<u64> {
        let &(t, left) = self.marks.front()?;
        let span = now.saturating_duration_since(t);
        if span < EVAL_EVERY {
            return None;
        }
        let kib = left.saturating_sub(left_bits) * 4;
        let ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(1);
        Some(kib.saturating_mul(1000) / ms)
    }
}

/// The SyncTarget's verdict from why it stopped asking and where its outstanding bytes wait.
pub(crate) fn target_limit(stop: Stop, by: RateBy, local: u64, remote: u64) -> Limit {
    match stop {
        Stop::Rate => match by {
            RateBy::ResyncRate => Limit::ResyncRate,
            RateBy::CMaxRate => Limit::CMaxRate,
            RateBy::CMinRate => Limit::CMinRate,
        },
        Stop::Plan | Stop::Window if local > 0 && local / 2 > remote => Limit::LocalDisk,
        Stop::Plan => Limit::Controller,
        Stop::Window => Limit::Peer,
        Stop::AllAsked => Limit::Finishing,
    }
}

/// What the SyncSource sees, averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceView {
    /// Bytes the target asked for that wait for our reads.
    pub reading: u64,
    /// Resync data sent and not acknowledged.
    pub unacked: u64,
    /// Our data send queue.
    pub backlog: u64,
    /// Current rate, bytes/s.
    pub rate: u64,
}

/// The SyncSource's verdict.
pub(crate) fn source_limit(v: SourceView, pace: PaceNow) -> Limit {
    // At the configured rate the setting is the limit, whatever else is slow besides: with
    // zero ranges (sparse sync) the acks come back at once, so reads in flight outweigh the
    // unacknowledged bytes although the target waits for the rate, not for our disk.
    if v.rate.saturating_mul(10) >= pace.rate.saturating_mul(8) {
        return match pace.by {
            RateBy::ResyncRate => Limit::ResyncRate,
            RateBy::CMaxRate => Limit::CMaxRate,
            RateBy::CMinRate => Limit::CMinRate,
        };
    }
    if v.backlog >= NET_BACKLOG_BYTES && v.backlog.saturating_mul(2) >= v.unacked {
        return Limit::Network;
    }
    if v.reading > 0 && v.reading / 2 > v.unacked {
        return Limit::LocalDisk;
    }
    // Little's law: the bytes unacknowledged over the rate is the time an ack takes.
    let ack_ns = u128::from(v.unacked) * 1_000_000_000 / u128::from(v.rate.max(1));
    if v.rate > 0 && ack_ns >= SLOW_ACK.as_nanos() {
        return Limit::PeerDisk;
    }
    Limit::Peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_names_the_rate_setting_when_the_rate_stops_it() {
        for (by, want) in [
            (RateBy::ResyncRate, Limit::ResyncRate),
            (RateBy::CMaxRate, Limit::CMaxRate),
            (RateBy::CMinRate, Limit::CMinRate),
        ] {
            assert_eq!(target_limit(Stop::Rate, by, 1 << 30, 0), want, "{by:?}");
        }
    }

    #[test]
    fn a_full_plan_or_window_is_the_disk_only_when_the_bytes_wait_for_it() {
        let by = RateBy::CMaxRate;
        assert_eq!(
            target_limit(Stop::Plan, by, 10 << 10, 40 << 10),
            Limit::Controller
        );
        assert_eq!(
            target_limit(Stop::Plan, by, 40 << 10, 10 << 10),
            Limit::LocalDisk
        );
        assert_eq!(target_limit(Stop::Window, by, 0, 32 << 20), Limit::Peer);
        assert_eq!(
            target_limit(Stop::Window, by, 30 << 20, 2 << 20),
            Limit::LocalDisk
        );
        assert_eq!(
            target_limit(Stop::Window, by, 0, 0),
            Limit::Peer,
            "nothing sampled yet"
        );
        assert_eq!(target_limit(Stop::AllAsked, by, 0, 0), Limit::Finishing);
    }

    fn pace(rate_mib: u64, by: RateBy) -> PaceNow {
        PaceNow {
            rate: rate_mib << 20,
            in_flight: Some(1 << 20),
            by,
        }
    }

    #[test]
    fn the_source_sees_the_network_its_disk_and_the_peers_disk() {
        let p = pace(100, RateBy::CMaxRate);
        let v = SourceView {
            reading: 0,
            unacked: 8 << 20,
            backlog: 6 << 20,
            rate: 5 << 20,
        };
        assert_eq!(source_limit(v, p), Limit::Network);
        let small_queue = SourceView {
            backlog: 512 << 10,
            ..v
        };
        assert_eq!(
            source_limit(small_queue, p),
            Limit::PeerDisk,
            "8 MiB at 5 MiB/s: acks take 1.6 s"
        );
        let reads = SourceView {
            reading: 4 << 20,
            unacked: 1 << 20,
            backlog: 0,
            rate: 50 << 20,
        };
        assert_eq!(source_limit(reads, p), Limit::LocalDisk);
    }

    #[test]
    fn otherwise_the_source_mirrors_the_pacing() {
        let quick = |rate_mib: u64| SourceView {
            reading: 0,
            unacked: 64 << 10,
            backlog: 0,
            rate: rate_mib << 20,
        };
        assert_eq!(
            source_limit(quick(4), pace(4, RateBy::CMaxRate)),
            Limit::CMaxRate
        );
        assert_eq!(
            source_limit(quick(4), pace(4, RateBy::ResyncRate)),
            Limit::ResyncRate
        );
        assert_eq!(
            source_limit(quick(4), pace(4, RateBy::CMinRate)),
            Limit::CMinRate
        );
        assert_eq!(
            source_limit(quick(40), pace(100, RateBy::CMaxRate)),
            Limit::Peer,
            "below the cap and nothing slow here: the target's plan"
        );
    }

    #[test]
    fn texts_name_the_setting_and_its_value() {
        let p = Pace {
            c_max_rate_kib: 4096,
            ..Pace::default()
        };
        let i = LimitInfo::new(Limit::CMaxRate, &p, true);
        assert_eq!(i.setting.as_deref(), Some("c-max-rate"));
        assert_eq!(
            i.text,
            "limited by c-max-rate 4M; raise c-max-rate in disk { }"
        );
        let c = LimitInfo::new(Limit::Controller, &p, true);
        assert!(c.text.contains("c-fill-target 50K"), "{}", c.text);
        let no_fill = Pace {
            c_fill_target_bytes: 0,
            ..p
        };
        let d = LimitInfo::new(Limit::Controller, &no_fill, true);
        assert_eq!(d.setting.as_deref(), Some("c-delay-target"));
        assert_eq!(kib_text(250), "250K");
        assert_eq!(kib_text(1 << 20), "1G");
    }

    #[test]
    fn json_and_text_use_the_same_names() {
        for l in Limit::ALL {
            let json = serde_json::to_string(&l).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", l.name()));
        }
    }

    #[test]
    fn the_mean_weighs_each_value_by_how_long_it_held() {
        let t0 = Instant::now();
        let mut m = Mean::default();
        m.add(t0, 0);
        // 1 MiB outstanding for 10 ms, across many inputs; then nothing for 990 ms.
        for i in 0..10 {
            m.add(t0 + Duration::from_millis(i), 1 << 20);
        }
        m.add(t0 + Duration::from_millis(10), 0);
        m.close(t0 + Duration::from_secs(1));
        // 1 MiB × 10 ms / 1 s = 10 KiB, halved by the blend with the (empty) period before.
        assert_eq!(m.get(), (1 << 20) / 100 / 2);
        m.close(t0 + Duration::from_secs(2));
        assert_eq!(m.get(), (1 << 20) / 100 / 4, "an idle second halves it");
    }

    #[test]
    fn the_current_rate_is_the_progress_since_the_oldest_mark() {
        let t0 = Instant::now();
        let mut g = Gauge::default();
        assert_eq!(g.current_kib(t0, 100), None);
        g.marks.push_back((t0, 10_000));
        assert_eq!(g.current_kib(t0 + Duration::from_millis(500), 9_000), None);
        assert_eq!(
            g.current_kib(t0 + Duration::from_secs(2), 9_000),
            Some(2000),
            "1000 bits (4000 KiB) in 2 s"
        );
    }
}
