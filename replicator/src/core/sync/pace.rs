//! Resync pacing (docs/drbd-semantics.md §8.2). With `c-plan-ahead 0` the resync runs at the fixed
//! `resync-rate`. Otherwise the dynamic controller applies: the rate may reach `c-max-rate`;
//! the data in flight is bounded by `c-fill-target` (or, if that is 0, by `c-delay-target`
//! worth of `c-max-rate`); and while the application writes, the resync steps back to
//! `c-min-rate` so that it does not starve the users of the device.

use std::time::{Duration, Instant};

/// How long after an application write the device counts as busy.
pub const APP_ACTIVE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub resync_rate_kib: u64,
    pub c_plan_ahead_ds: u32,
    pub c_fill_target_bytes: u64,
    pub c_delay_target_ds: u32,
    pub c_max_rate_kib: u64,
    pub c_min_rate_kib: u64,
}

impl Default for Pace {
    /// DRBD 8.4.7's defaults.
    fn default() -> Self {
        Pace {
            resync_rate_kib: 250,
            c_plan_ahead_ds: 20,
            c_fill_target_bytes: 100 * 512,
            c_delay_target_ds: 10,
            c_max_rate_kib: 100 * 1024,
            c_min_rate_kib: 250,
        }
    }
}

impl Pace {
    /// A fixed rate, no controller (`c-plan-ahead 0; resync-rate R;`).
    pub fn fixed(rate_kib: u64) -> Pace {
        Pace {
            resync_rate_kib: rate_kib,
            c_plan_ahead_ds: 0,
            ..Pace::default()
        }
    }

    /// (bytes per second, bytes in flight at most, or `None` for the caller's own window).
    pub fn limits(&self, now: Instant, last_app_write: Option<Instant>) -> (u64, Option<u64>) {
        let p = self.now(now, last_app_write);
        (p.rate, p.in_flight)
    }

    /// The limits that apply now, and which setting gives the rate.
    pub fn now(&self, now: Instant, last_app_write: Option<Instant>) -> PaceNow {
        if self.c_plan_ahead_ds == 0 {
            return PaceNow {
                rate: self.resync_rate_kib.max(1) * 1024,
                in_flight: None,
                by: RateBy::ResyncRate,
            };
        }
        let busy = last_app_write.is_some_and(|t| now.saturating_duration_since(t) < APP_ACTIVE);
        let (rate_kib, by) = if busy && self.c_min_rate_kib > 0 {
            (self.c_min_rate_kib, RateBy::CMinRate)
        } else {
            (self.c_max_rate_kib, RateBy::CMaxRate)
        };
        PaceNow {
            rate: rate_kib.max(1) * 1024,
            in_flight: Some(self.in_flight_bytes()),
            by,
        }
    }

    /// The controller's plan: bytes in flight at most (`c-fill-target`, or `c-delay-target`
    /// worth of `c-max-rate` when that is 0).
    pub fn in_flight_bytes(&self) -> u64 {
        let b = if self.c_fill_target_bytes > 0 {
            self.c_fill_target_bytes
        } else {
            self.c_max_rate_kib * 1024 * u64::from(self.c_delay_target_ds) / 10
        };
        b.max(4096)
    }

    /// What `status` shows as the controller's target ("want:").
    pub fn want_kib(&self, now: Instant, last_app_write: Option<Instant>) -> u64 {
        self.limits(now, last_app_write).0 / 1024
    }
}

/// Which setting gives the resync its rate right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateBy {
    /// `resync-rate`: the controller is off (`c-plan-ahead 0`).
    ResyncRate,
    /// `c-max-rate`: the controller's ceiling.
    CMaxRate,
    /// `c-min-rate`: the application wrote within `APP_ACTIVE`, the resync yields.
    CMinRate,
}

/// The pacing that applies at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceNow {
    /// Bytes per second.
    pub rate: u64,
    /// Bytes in flight at most under the controller; `None` with `c-plan-ahead 0`.
    pub in_flight: Option<u64>,
    pub by: RateBy,
}
