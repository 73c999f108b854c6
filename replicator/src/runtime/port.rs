//! How the parts below the driver reach it without importing it: a completion comes back as an
//! input through a [`Feed`], which the driver hands out (`Driver::feeder`). So the hashing pool
//! and the metadata thread do not depend on `Driver`, and `driver/` can import them without
//! a circle. Also what both daemons (daemon.rs and the witness's) share: a listener that must
//! run, and the wait for the stop.

use std::rc::Rc;

use crate::core::Input;

/// Queue one input for the engine (and pump, unless a pump runs further up the stack).
pub type Feed = Rc<dyn Fn(Input)>;

/// A listener that cannot run (its accept thread failed to start) is fatal for the daemon.
pub(crate) fn spawn_listener(
    what: &'static str,
    fut: impl std::future::Future<Output = std::io::Result<()>> + 'static,
) {
    tokio_uring::spawn(async move {
        if let Err(e) = fut.await {
            tracing::error!("{what} failed: {e}");
            std::process::exit(1);
        }
    });
}

/// Wait for `down` (the control socket rings `shutdown`) or SIGTERM/SIGINT; after a signal,
/// `on_signal` runs (the data node tries a clean down first). For the data node and the witness.
///
/// The wait runs as a task of its own and the caller's future waits on a oneshot channel. The
/// caller is the future given to `tokio_uring::start`, and tokio's `LocalSet::run_until` polls
/// that future at every turn of the runtime, whatever task woke: a `select!` over the bell and
/// two signal streams there was polled once per wake-up, 2.5 % of the Primary's user time and
/// 5 % of the Secondary's under 4k writes (issue 20). A oneshot receiver's poll is one load.
pub(crate) async fn wait_for_stop(
    rung: impl std::future::Future<Output = ()> + 'static,
    on_signal: impl std::future::Future<Output = ()> + 'static,
) {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed here, before the task first runs: a signal from now on is ours, not fatal.
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        rung.await;
        return;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio_uring::spawn(async move {
        // `rung`: the control socket's `down` (`notify_one`: a ring before the wait counts).
        let signalled = tokio::select! {
            _ = rung => false,
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if signalled {
            tracing::info!("signal received: going down");
            on_signal.await;
        }
        let _ = tx.send(());
    });
    // Err: the runtime dropped the task, so it is going down anyway.
    let _ = rx.await;
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::task::{Context, Poll};

    /// A future that counts how often it is polled.
    struct Counted<F> {
        inner: Pin<Box<F>>,
        polls: Rc<Cell<u32>>,
    }

    impl<F: Future<Output = ()>> Future for Counted<F> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.set(self.polls.get() + 1);
            self.inner.as_mut().poll(cx)
        }
    }

    /// The wait is polled when its own bell or a signal wakes it, not at every turn of the
    /// runtime: 1,000 turns of another task cost it nothing. (With the `select!` in the future
    /// given to `tokio_uring::start` it was polled at each of them.)
    #[test]
    fn the_stop_wait_is_not_polled_at_every_turn() {
        tokio_uring::start(async {
            let polls = Rc::new(Cell::new(0));
            let bell = Rc::new(tokio::sync::Notify::new());
            let rung = Counted {
                inner: Box::pin({
                    let bell = Rc::clone(&bell);
                    async move { bell.notified().await }
                }),
                polls: Rc::clone(&polls),
            };
            tokio_uring::spawn(async move {
                for _ in 0..1000 {
                    tokio::task::yield_now().await;
                }
                bell.notify_one();
            });
            super::wait_for_stop(rung, std::future::ready(())).await;
            assert!(
                polls.get() <= 4,
                "the stop wait was polled {} times over 1,000 turns of another task",
                polls.get()
            );
        });
    }
}
