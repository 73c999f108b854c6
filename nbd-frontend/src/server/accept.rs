//! Accepting connections. tokio-uring 0.5 binds Unix listeners with SO_REUSEPORT, which
//! current kernels refuse for AF_UNIX (EOPNOTSUPP); so listeners are plain std sockets,
//! accepted on a small thread, and each connection is handed to the io_uring thread.

use std::io;
use std::time::{Duration, Instant};

/// One log line per this many consecutive accept failures (100 × 50 ms = every 5 s).
const ACCEPT_FAILURE_LOG_EVERY: u64 = 100;

use tokio::sync::mpsc;

/// Runs `accept` on its own thread and delivers each connection over the returned channel.
/// The thread ends when the receiver is dropped (checked after the next accept).
pub fn spawn_acceptor<C, F>(what: &str, mut accept: F) -> io::Result<mpsc::UnboundedReceiver<C>>
where
    C: Send + 'static,
    F: FnMut() -> io::Result<C> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let label = what.to_owned();
    std::thread::Builder::new()
        .name(format!("accept-{what}"))
        .spawn(move || {
            // A lasting failure (EMFILE: out of descriptors) is retried every 50 ms but logged
            // once per streak and then every few seconds, not 20 times a second.
            let mut failing_since: Option<(Instant, u64)> = None;
            loop {
                match accept() {
                    Ok(conn) => {
                        if let Some((since, n)) = failing_since.take() {
                            tracing::warn!(
                                "{label}: accepting again after {n} failures in {} ms",
                                since.elapsed().as_millis()
                            );
                        }
                        if tx.send(conn).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let (since, n) = failing_since.get_or_insert((Instant::now(), 0));
                        if *n % ACCEPT_FAILURE_LOG_EVERY == 0 {
                            tracing::warn!(
                                "{label}: accept failed: {e} (retrying every 50 ms; failing for {} ms)",
                                since.elapsed().as_millis()
                            );
                        }
                        *n += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(rx)
}
