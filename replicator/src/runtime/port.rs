//! How the parts below the driver reach it without importing it: a completion comes back as an
//! input through a [`Feed`], which the driver hands out (`Driver::feeder`). So the hashing pool
//! and the metadata thread do not depend on `Driver`, and `driver.rs` can import them without
//! a circle.

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
