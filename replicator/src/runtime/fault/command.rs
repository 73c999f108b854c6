//! The `repadm fault` commands: what each one does to the hook, and the control socket's
//! reply (with the power cut that follows `power-loss`).

use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::MsgFlags;

use super::overlay::Overlay;
use super::{FaultError, FaultHook};
use crate::control::fault::{FaultCmd, DISK_DELAY_MS_MAX, FAULT_REFUSED_EXIT, META_DELAY_MS_MAX};
use crate::control::{Response, Status};

impl FaultHook {
    /// Carry out one `repadm fault` command; the message says what happened.
    pub fn apply(&self, cmd: &FaultCmd) -> Result<String, String> {
        let rule = cmd.disk_error_rule().map_err(|e| e.to_string())?;
        let _gate = self.gate();
        let mut st = self.lock();
        if st.powered_off {
            return Err(FaultError::PoweredOff.to_string());
        }
        let message = match cmd {
            FaultCmd::DiskError { .. } => {
                let Some(rule) = rule else {
                    return Err("internal: disk-error without a rule".into());
                };
                st.rules.push(rule);
                let range = rule.range.map_or(String::new(), |(s, e)| {
                    format!(" overlapping bytes {s}..{e}")
                });
                let count = rule
                    .remaining
                    .map_or("until `clear`".to_string(), |n| format!("for the next {n}"));
                format!(
                    "disk-error: {} operations{range} fail with EIO {count}",
                    rule.op.name()
                )
            }
            FaultCmd::VolatileCache { on: true } => {
                st.volatile = true;
                "volatile-cache on: writes stay in memory until a flush".into()
            }
            FaultCmd::VolatileCache { on: false } => {
                st.write_out_all().map_err(|e| e.to_string())?;
                st.volatile = false;
                "volatile-cache off: cache written out".into()
            }
            FaultCmd::MetaDelay { ms } => {
                if *ms > META_DELAY_MS_MAX {
                    return Err(format!(
                        "meta-delay {ms}: at most {META_DELAY_MS_MAX} ms (a delay, not a hang)"
                    ));
                }
                st.meta_delay = Duration::from_millis(*ms);
                format!("meta-delay: every metadata write takes {ms} ms longer")
            }
            FaultCmd::DiskDelay { ms } => {
                if *ms > DISK_DELAY_MS_MAX {
                    return Err(format!(
                        "disk-delay {ms}: at most {DISK_DELAY_MS_MAX} ms (a delay, not a hang)"
                    ));
                }
                st.data_delay = Duration::from_millis(*ms);
                format!("disk-delay: every data write takes {ms} ms longer")
            }
            FaultCmd::Clear => {
                st.rules.clear();
                st.write_out_all().map_err(|e| e.to_string())?;
                st.volatile = false;
                st.meta_delay = Duration::ZERO;
                st.data_delay = Duration::ZERO;
                "clear: no disk errors, no delays, volatile cache off (written out)".into()
            }
            FaultCmd::PowerLoss => {
                let dropped = st.data.pages.len() + st.meta.pages.len();
                st.powered_off = true;
                st.volatile = false;
                st.meta_delay = Duration::ZERO;
                st.data_delay = Duration::ZERO;
                st.rules.clear();
                st.data = Overlay::default();
                st.meta = Overlay::default();
                format!("power-loss: {dropped} cached pages dropped; repd ends now")
            }
        };
        tracing::warn!("fault hook: {message}");
        Ok(message)
    }
}

/// The control socket's `fault` request.
pub fn handle(hook: &FaultHook, status: impl FnOnce() -> Status, cmd: &FaultCmd) -> Response {
    match hook.apply(cmd) {
        Ok(message) => Response::Ok {
            message,
            status: Box::new(status()),
        },
        Err(message) => Response::Error {
            message,
            exit_code: FAULT_REFUSED_EXIT,
        },
    }
}

/// Right after `power-loss` was applied (before the control loop yields to any other task):
/// send the reply with a plain non-blocking send, then end the process the way a power cut
/// ends a machine, with SIGKILL: no shutdown path, no metadata write, no goodbye to the peer,
/// and no other task gets to run in between.
pub fn cut_power_if_lost(hook: &FaultHook, stream: &impl AsRawFd, reply: &Response) {
    if !hook.powered_off() {
        return;
    }
    if let Ok(mut line) = crate::control::encode_line(reply) {
        line.push('\n');
        let mut rest = line.as_bytes();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        while let Ok(n) = nix::sys::socket::send(stream.as_raw_fd(), rest, flags) {
            rest = rest.get(n..).unwrap_or_default();
            if n == 0 || rest.is_empty() {
                break;
            }
        }
    }
    tracing::warn!("fault hook: power cut, SIGKILL to self");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // Not reached; should raise fail, leave without unwinding or running destructors.
    std::process::abort();
}
