//! A short busy-poll window after activity (docs/architecture.md §11.1, issue 20): for
//! `window` after the last input the I/O thread keeps polling (io_uring completions, sockets)
//! instead of sleeping in epoll_wait, so that the next request or completion is picked up
//! without a wake-up from an idle CPU. At low queue depth that wake-up is most of the gap to
//! nbdkit (README, "Where the StandAlone QD1 gap is"); the price is CPU spent spinning while the
//! window lasts. On by default (100 µs); `busy-poll 0;` in the host section turns it off.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

thread_local! {
    /// io_uring operations of this thread in flight (`UringOp`).
    static URING_OPS: Cell<u32> = const { Cell::new(0) };
}

/// Counts one io_uring operation (a disk I/O through tokio-uring) while it is in flight; the
/// window stays closed while any is. tokio-uring hands its submission queue to the kernel only
/// in the runtime's park hook, which runs when the thread is about to sleep, and a runtime that
/// the polling task keeps busy never sleeps: an operation queued during the window waited,
/// unsubmitted, for the window to end. That was every disk write on a block device (O_DIRECT
/// goes through io_uring; tmpfs writes are inline), 100 µs more per write at QD1 (README,
/// "Busy-polling held block-device I/O back"). Closed, the thread parks, the hook submits, and
/// the completion wakes it; the input it brings opens the window again.
pub struct UringOp(());

impl UringOp {
    pub fn start() -> UringOp {
        URING_OPS.with(|c| c.set(c.get() + 1));
        UringOp(())
    }
}

impl Drop for UringOp {
    fn drop(&mut self) {
        URING_OPS.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

fn uring_ops_in_flight() -> bool {
    URING_OPS.with(|c| c.get() > 0)
}

/// Inputs per window above which the load counts as heavy: the next input comes soon anyway,
/// and polling between inputs would only turn idle time into CPU time.
const BUSY_INPUTS: u32 = 16;

/// Inputs delivered within one turn of the runtime (between two polls of the polling task) from
/// which the load counts as heavy: a burst means whoever sends to us keeps more than two
/// requests in flight, which a Secondary cannot see in its own counts (it acknowledges each
/// write inline, so its unacknowledged writes stay at one while the Primary runs QD32).
const BURST_INPUTS: u32 = 3;

/// How long one burst keeps the window closed, in windows: the load that produced it does not
/// end at the next input.
const HEAVY_HOLD_WINDOWS: u32 = 50;

pub struct BusyPoll {
    window: Duration,
    last: Cell<Instant>,
    spinning: Cell<bool>,
    wake: tokio::sync::Notify,
    /// Inputs counted in the current window, and in the last complete one.
    counted: Cell<u32>,
    previous: Cell<u32>,
    counting_since: Cell<Instant>,
    /// Inputs since the polling task last ran (one runtime turn while it spins).
    unseen: Cell<u32>,
    /// No polling before this: a burst was seen (`BURST_INPUTS`).
    heavy_until: Cell<Instant>,
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
            unseen: Cell::new(0),
            heavy_until: Cell::new(Instant::now()),
        })
    }

    /// An input arrived at `now` (the driver's clock reading for it, shared with the engine:
    /// one read per input instead of two): poll for the next one for `window` from then.
    pub fn touch(&self, now: Instant) {
        self.last.set(now);
        if now.duration_since(self.counting_since.get()) >= self.window {
            self.previous.set(self.counted.replace(0));
            self.counting_since.set(now);
        }
        self.counted.set(self.counted.get() + 1);
        // Held closed after a burst: no wake-up of the polling task per input either.
        if now < self.heavy_until.get() {
            return;
        }
        self.unseen.set(self.unseen.get() + 1);
        if !self.spinning.get() {
            self.wake.notify_one();
        }
    }

    /// The polling task: asleep until an input, then yielding to the runtime (whose every
    /// turn polls the ring and the sockets without blocking) until the window has passed
    /// without one, or the load is no longer light (`light`: with many requests in flight the
    /// next completion comes soon anyway, and spinning between them would only cost CPU).
    ///
    /// A burst (`BURST_INPUTS` inputs in one turn: a socket read that held several requests or
    /// frames) closes the window for `HEAVY_HOLD_WINDOWS` windows. Without it a Secondary
    /// under a QD32 load spun between the Primary's bursts, and on two cores that took the CPU
    /// the Primary and the client needed (README, issue 20: 20 % more CPU per replicated write).
    pub async fn run(self: Rc<Self>, light: impl Fn() -> bool) {
        loop {
            self.wake.notified().await;
            self.spinning.set(true);
            loop {
                // One clock read per turn for both the burst hold and the window.
                let now = Instant::now();
                if self.saw_burst(now)
                    || uring_ops_in_flight()
                    || now.duration_since(self.last.get()) >= self.window
                    || self.previous.get() >= BUSY_INPUTS
                    || !light()
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
            self.spinning.set(false);
        }
    }

    /// Whether the inputs since the last look came as a burst, or one did lately.
    fn saw_burst(&self, now: Instant) -> bool {
        if self.unseen.replace(0) >= BURST_INPUTS {
            self.heavy_until.set(now + self.window * HEAVY_HOLD_WINDOWS);
        }
        now < self.heavy_until.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_inputs_keep_the_window_open() {
        let b = BusyPoll::new(Duration::from_millis(100));
        for _ in 0..10 {
            b.touch(Instant::now());
            assert!(
                !b.saw_burst(Instant::now()),
                "one input per turn is a QD1 load"
            );
        }
        b.touch(Instant::now());
        b.touch(Instant::now());
        assert!(
            !b.saw_burst(Instant::now()),
            "two per turn is still light (QD2)"
        );
    }

    #[test]
    fn a_burst_closes_the_window_for_a_while() {
        let b = BusyPoll::new(Duration::from_millis(100));
        b.touch(Instant::now());
        b.touch(Instant::now());
        b.touch(Instant::now());
        assert!(
            b.saw_burst(Instant::now()),
            "three inputs in one turn: the sender keeps more in flight"
        );
        // Held: later single inputs do not reopen it before the hold ends.
        b.touch(Instant::now());
        assert!(b.saw_burst(Instant::now()));
        assert_eq!(b.unseen.get(), 0, "inputs during the hold are not counted");
    }

    /// A disk operation queued while the window is open reaches the kernel at once: with a
    /// 30 s window and the polling task spinning, a 4 KiB io_uring write completes well within
    /// 5 s. (Before `UringOp`, tokio-uring's queue was submitted only when the thread parked,
    /// which the spinning never let it do: the write waited for the window to end.)
    #[test]
    fn a_disk_operation_is_submitted_while_the_window_is_open() {
        tokio_uring::start(async {
            let b = BusyPoll::new(Duration::from_secs(30));
            tokio_uring::spawn(Rc::clone(&b).run(|| true));
            b.touch(Instant::now());
            tokio::task::yield_now().await;
            assert!(b.spinning.get(), "the polling task spins after an input");
            let dir = tempfile::tempdir().expect("temporary directory");
            let std_file = std::fs::File::create(dir.path().join("disk")).expect("create");
            let file = tokio_uring::fs::File::from_std(std_file);
            let write = async {
                let _uring = UringOp::start();
                file.write_all_at(vec![7u8; 4096], 0).await.0
            };
            let done = tokio::time::timeout(Duration::from_secs(5), write).await;
            assert!(
                matches!(done, Ok(Ok(()))),
                "an io_uring write queued during the busy-poll window did not complete: {done:?}"
            );
            assert!(!uring_ops_in_flight(), "the operation is counted out");
        });
    }
}
