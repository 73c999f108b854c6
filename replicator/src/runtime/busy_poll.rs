//! A short busy-poll window after activity (docs/architecture.md §11.1, issue 20): for
//! `window` after the last input the I/O thread keeps polling (io_uring completions, sockets)
//! instead of sleeping in epoll_wait, so that the next request or completion is picked up
//! without a wake-up from an idle CPU. At low queue depth that wake-up is most of the gap to
//! nbdkit (README, "Where the StandAlone QD1 gap is"); the price is CPU spent spinning while the
//! window lasts. On by default (100 µs); `busy-poll 0;` in the host section turns it off.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Inputs per window above which the load counts as heavy: the next input comes soon anyway,
/// and polling between inputs would only turn idle time into CPU time.
const BUSY_INPUTS: u32 = 16;

pub struct BusyPoll {
    window: Duration,
    last: Cell<Instant>,
    spinning: Cell<bool>,
    wake: tokio::sync::Notify,
    /// Inputs counted in the current window, and in the last complete one.
    counted: Cell<u32>,
    previous: Cell<u32>,
    counting_since: Cell<Instant>,
}

impl BusyPoll {
    pub fn new(window: Duration) -> Rc<BusyPoll> {
        Rc::new(BusyPoll {
            window,
            last: Cell::new(Instant::now()),
            spinning: Cell::new(false),
            wake: tokio::sync::Notify::new(),
            counted: Cell::new(0),
            previous: Cell::new(0),
            counting_since: Cell::new(Instant::now()),
        })
    }

    /// An input arrived: poll for the next one for `window` from now.
    pub fn touch(&self) {
        let now = Instant::now();
        self.last.set(now);
        if now.duration_since(self.counting_since.get()) >= self.window {
            self.previous.set(self.counted.replace(0));
            self.counting_since.set(now);
        }
        self.counted.set(self.counted.get() + 1);
        if !self.spinning.get() {
            self.wake.notify_one();
        }
    }

    /// The polling task: asleep until an input, then yielding to the runtime (whose every
    /// turn polls the ring and the sockets without blocking) until the window has passed
    /// without one, or the load is no longer light (`light`: with many requests in flight the
    /// next completion comes soon anyway, and spinning between them would only cost CPU).
    pub async fn run(self: Rc<Self>, light: impl Fn() -> bool) {
        loop {
            self.wake.notified().await;
            self.spinning.set(true);
            while self.last.get().elapsed() < self.window
                && self.previous.get() < BUSY_INPUTS
                && light()
            {
                tokio::task::yield_now().await;
            }
            self.spinning.set(false);
        }
    }
}
