//! Accepting connections. tokio-uring 0.5 binds Unix listeners with SO_REUSEPORT, which
//! current kernels refuse for AF_UNIX (EOPNOTSUPP); so listeners are plain std sockets,
//! accepted on a small thread, and each connection is handed to the io_uring thread.

use std::io;
use std::time::Duration;

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
        .spawn(move || loop {
            match accept() {
                Ok(conn) => {
                    if tx.send(conn).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("{label}: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })?;
    Ok(rx)
}
