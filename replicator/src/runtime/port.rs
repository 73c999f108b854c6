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
pub(crate) async fn wait_for_stop(
    shutdown: &tokio::sync::Notify,
    on_signal: impl std::future::Future<Output = ()>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        shutdown.notified().await;
        return;
    };
    let signalled = tokio::select! {
        _ = shutdown.notified() => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    };
    if signalled {
        tracing::info!("signal received: going down");
        on_signal.await;
    }
}
