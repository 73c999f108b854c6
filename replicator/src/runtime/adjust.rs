//! `repadm adjust` inside repd: re-read the `.res` file, compare this node's new view with the
//! running one (`control::adjust::diff`), and apply what changed — the engine's settings
//! through `Input::Reconfigure`, the peer's address by reconnecting, a moved disk by detach +
//! attach — then report every change and how it was applied.
//!
//! Never applies a refused change: the running view keeps the old value, so the next adjust
//! reports it again.

use std::path::PathBuf;
use std::rc::Rc;

use super::daemon::link_settings;
use super::driver::Driver;
use crate::control::adjust::{applied_view, Change, How, Report};
use crate::control::Response;
use crate::core::{AdminCmd, ConnState, DiskState, Input, Role};

/// drbdadm's exit codes for a refused change: the configuration asks for something a running
/// resource cannot do (10), or the current state forbids it (11).
const EXIT_CONFIG: i32 = 10;
const EXIT_STATE: i32 = 11;

fn error(message: String, exit_code: i32) -> Response {
    Response::Error { message, exit_code }
}

impl Driver {
    pub async fn adjust(self: &Rc<Self>, config: Option<String>, dry_run: bool) -> Response {
        let path = config.map_or_else(|| self.config_path.clone(), PathBuf::from);
        let running = self.view();
        let (new, mut changes) = match crate::control::adjust::reread(&path, &running) {
            Ok(r) => r,
            Err(e) => return error(e, EXIT_CONFIG),
        };
        let mut exit_code = if changes.iter().any(|c| c.how == How::Refused) {
            EXIT_CONFIG
        } else {
            0
        };
        if let Some(why) = self.reattach_forbidden(&changes) {
            for c in changes.iter_mut().filter(|c| c.how == How::Reattach) {
                c.how = How::Refused;
                c.reason = Some(why.clone());
            }
            if exit_code == 0 {
                exit_code = EXIT_STATE;
            }
        }
        if !dry_run {
            for c in &changes {
                tracing::info!(resource = %running.resource, "adjust: {}", c.line());
            }
            if let Err((c, code)) = self.apply(&running, &new, &changes).await {
                changes.push(c);
                if exit_code == 0 {
                    exit_code = code;
                }
            }
        }
        Response::Adjusted {
            report: Report {
                dry_run,
                changes,
                exit_code,
            },
            status: Box::new(self.status()),
        }
    }

    /// A disk may only move when the data stays reachable: not on a Primary whose peer is not
    /// Connected and UpToDate (it would lose its only copy of the data while detached).
    fn reattach_forbidden(&self, changes: &[Change]) -> Option<String> {
        if !changes.iter().any(|c| c.how == How::Reattach) {
            return None;
        }
        let s = self.status();
        let peer_ok = s.cstate >= ConnState::Connected && s.peer_disk == DiskState::UpToDate;
        (s.role == Role::Primary && s.disk != DiskState::Diskless && !peer_ok).then(|| {
            format!(
                "this node is Primary and its peer is {} {}: detaching would leave it without data; \
                 connect the peer and let it become UpToDate, or demote with `repadm secondary` first",
                s.cstate, s.peer_disk
            )
        })
    }

    /// Install the new running configuration and do what it takes. Returns a synthetic change
    /// describing a step that failed (a detach or attach the engine refused).
    async fn apply(
        self: &Rc<Self>,
        running: &rep_resources::NodeView,
        new: &rep_resources::NodeView,
        changes: &[Change],
    ) -> Result<(), (Change, i32)> {
        let mut applied = applied_view(running, new, changes);
        if applied == *running {
            return Ok(());
        }
        let has = |how: How| changes.iter().any(|c| c.how == how);
        let mut failed = None;
        // This node's address moved: listen on the new one before anything changes, so that
        // an address that cannot be bound leaves the link as it was.
        let mut listener = None;
        if let (Some(new_addr), true) = (applied.address, applied.address != running.address) {
            if applied.peer_address.is_some() {
                match std::net::TcpListener::bind(new_addr) {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        applied.address = running.address;
                        failed = Some((
                            Change {
                                section: "on".into(),
                                option: "address".into(),
                                old: "-".into(),
                                new: "-".into(),
                                how: How::Refused,
                                reason: Some(format!(
                                    "cannot listen on {new_addr}: {e}; the old address stays in use"
                                )),
                            },
                            EXIT_CONFIG,
                        ));
                    }
                }
            }
        }
        let peer_moved =
            applied.peer_address != running.peer_address || applied.address != running.address;
        self.replace_view(applied.clone(), link_settings(&applied));
        if let Some(l) = listener {
            self.listen_for_peer(l);
        }
        self.feed(Input::Reconfigure {
            cfg: Box::new(crate::core::EngineConfig::from_view(&applied)),
        });
        self.follow_resync_after();
        if peer_moved && self.status().cstate != ConnState::StandAlone {
            // Drop the link on the old addresses; the new settings dial or accept on the new.
            let _ = self.admin(AdminCmd::Disconnect { force: false }).await;
            let _ = self
                .admin(AdminCmd::Connect {
                    discard_my_data: false,
                })
                .await;
        }
        // A changed agreed setting (How::Reconnect): the engine reconnects a refused link
        // for a while by itself (core/renegotiate.rs).
        if has(How::Reattach) {
            if self.status().disk != DiskState::Diskless {
                if let Err(r) = self.admin(AdminCmd::Detach { force: false }).await {
                    return Err(step_failed("detach", &r, &running.resource));
                }
            }
            if let Err(r) = self.admin(AdminCmd::Attach).await {
                return Err(step_failed("attach", &r, &running.resource));
            }
        }
        self.publish_state();
        failed.map_or(Ok(()), Err)
    }
}

fn step_failed(step: &str, r: &crate::core::Refusal, resource: &str) -> (Change, i32) {
    (
        Change {
            section: "on".into(),
            option: step.into(),
            old: "-".into(),
            new: "-".into(),
            how: How::Refused,
            reason: Some(r.render(resource)),
        },
        r.exit_code(),
    )
}
