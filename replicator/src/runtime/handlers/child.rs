//! Waiting for a helper's process without polling: the thread that runs a helper sleeps in
//! `poll(2)` on the child's pidfd, which becomes readable the moment the child exits, with the
//! helper's deadline as the poll timeout. No clock tick, no `try_wait` loop.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How waiting for a child ended.
pub(super) enum Waited {
    Exited(ExitStatus),
    /// Still running at the deadline (the caller kills it).
    TimedOut,
}

/// A pidfd for `child` (Linux 5.3; io_uring needs newer kernels anyway).
#[allow(unsafe_code)]
fn pidfd(child: &Child) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it touches
    // no memory of ours. The child is not reaped yet (we hold it), so the pid is still its.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: `fd` was just returned by the kernel, is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Block until `fd` is readable or `deadline` passes; whether it became readable.
#[allow(unsafe_code)]
fn readable_by(fd: &OwnedFd, deadline: Instant) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up: a poll that returns a hair early would otherwise spin on a 0 ms timeout.
        let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack, count 1; the descriptor stays open (borrowed).
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        match n {
            n if n > 0 => return Ok(true),
            0 if Instant::now() >= deadline => return Ok(false),
            0 => {}
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Wait for `child` to exit, at most `timeout` (forever without one), and reap it.
pub(super) fn wait(child: &mut Child, timeout: Option<Duration>) -> io::Result<Waited> {
    let Some(timeout) = timeout else {
        return child.wait().map(Waited::Exited);
    };
    let deadline = Instant::now() + timeout;
    match pidfd(child) {
        Ok(fd) => {
            if !readable_by(&fd, deadline)? {
                return Ok(Waited::TimedOut);
            }
            child.wait().map(Waited::Exited)
        }
        Err(e) => {
            // No pidfd (a kernel older than io_uring's needs): wait without the deadline
            // rather than poll for it.
            tracing::warn!("pidfd_open failed ({e}): waiting for the helper without a deadline");
            child.wait().map(Waited::Exited)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_past_its_deadline_times_out_and_is_not_reaped() -> io::Result<()> {
        let mut child = Command::new("sleep").arg("5").spawn()?;
        let t = Instant::now();
        let waited = wait(&mut child, Some(Duration::from_millis(100)))?;
        assert!(matches!(waited, Waited::TimedOut));
        assert!(t.elapsed() < Duration::from_secs(2));
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}
