//! `resync-after OTHER` (docs/drbd-semantics.md): this resource holds its resync while OTHER,
//! a resource of the same run dir with a daemon of its own, resyncs. OTHER's state is in its
//! status file; a thread blocked on inotify learns when any status file of the run dir is
//! replaced and reports which resources resync. Nothing polls: an idle run dir wakes nobody.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

use crate::control::Status;
use crate::core::ConnState;

/// One resource's resync state, as its status file showed it: (resource, resyncing).
pub type Report = (String, bool);

/// What the driver keeps of `resync-after`: which resources of the run dir resync, as the
/// watcher last reported; whether the watcher runs; what the engine was last told.
#[derive(Debug, Default)]
pub struct Follow {
    others: RefCell<HashMap<String, bool>>,
    watching: Cell<bool>,
    told: Cell<Option<bool>>,
}

impl Follow {
    pub fn watching(&self) -> bool {
        self.watching.get()
    }

    /// The watcher started, or ended (then nothing it reported holds any more).
    pub fn set_watching(&self, on: bool) {
        self.watching.set(on);
        if !on {
            self.others.borrow_mut().clear();
        }
    }

    /// The watcher's report: `resource` resyncs or not.
    pub fn report(&self, (resource, syncing): Report) {
        self.others.borrow_mut().insert(resource, syncing);
    }

    /// Whether the resource `resync_after` names resyncs, as last reported (no file read).
    pub fn syncing(&self, resync_after: Option<&str>) -> bool {
        resync_after.is_some_and(|o| {
            self.others
                .borrow()
                .get(resource_of(o))
                .copied()
                .unwrap_or(false)
        })
    }

    /// What to tell the engine now: the dependency's state when it differs from what the
    /// engine was last told (nothing, without a dependency, until one is configured).
    pub fn news(&self, resync_after: Option<&str>) -> Option<bool> {
        let syncing = self.syncing(resync_after);
        let last = self.told.get();
        let due = last != Some(syncing) && (resync_after.is_some() || last.is_some());
        due.then(|| {
            self.told.set(Some(syncing));
            syncing
        })
    }
}

/// The resource name `resync-after` names (`r0` or DRBD 9's `r0/0`).
pub fn resource_of(resync_after: &str) -> &str {
    resync_after.split('/').next().unwrap_or(resync_after)
}

fn resource_of_file(name: &str) -> Option<&str> {
    name.strip_suffix(".status.json")
}

fn resyncing(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Status>(&t).ok())
        .is_some_and(|s| {
            use ConnState::*;
            matches!(
                s.cstate,
                SyncSource | SyncTarget | PausedSyncS | PausedSyncT | WFSyncUUID
            )
        })
}

/// Start the watcher of `dir`; it reports every resource but `own` (its own status file
/// changes with every state change and says nothing about the others). The first reports are
/// the state at start, then one per replaced or removed status file. The thread ends at the
/// first event after the receiver is dropped; if watching fails, the channel closes.
pub fn watch(dir: PathBuf, own: String) -> std::io::Result<mpsc::UnboundedReceiver<Report>> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?;
    // The status files are replaced by rename (write_atomic); a daemon going down removes its.
    inotify
        .add_watch(
            &dir,
            AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM,
        )
        .map_err(std::io::Error::from)?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("rep-resync-after".into())
        .spawn(move || {
            // Watch first, then read what is there: a change in between is reported twice,
            // never lost.
            let mut initial = HashMap::new();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(res) = resource_of_file(&name).filter(|r| *r != own) {
                        initial.insert(res.to_owned(), resyncing(&e.path()));
                    }
                }
            }
            for report in initial {
                if tx.send(report).is_err() {
                    return;
                }
            }
            loop {
                let events = match inotify.read_events() {
                    Ok(ev) => ev,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        // The receiver sees the channel close and stops holding the resync.
                        tracing::error!("resync-after: watching {} failed: {e}", dir.display());
                        return;
                    }
                };
                for ev in events {
                    let Some(name) = ev.name.as_ref().map(|n| n.to_string_lossy().into_owned())
                    else {
                        continue;
                    };
                    let Some(res) = resource_of_file(&name).filter(|r| *r != own) else {
                        continue;
                    };
                    let gone = ev
                        .mask
                        .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM);
                    let syncing = !gone && resyncing(&dir.join(&name));
                    if tx.send((res.to_owned(), syncing)).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod follow_tests {
    use super::*;

    #[test]
    fn the_engine_hears_of_a_dependency_only_when_its_state_changes() {
        let f = Follow::default();
        assert_eq!(f.news(None), None, "no dependency: nothing to say");
        assert_eq!(
            f.news(Some("r1")),
            Some(false),
            "configured: the first state"
        );
        assert_eq!(f.news(Some("r1")), None, "unchanged");
        f.report(("r1".into(), true));
        f.report(("r2".into(), false));
        assert!(
            f.syncing(Some("r1/0")),
            "DRBD 9's volume suffix names the resource"
        );
        assert_eq!(f.news(Some("r1")), Some(true));
        f.set_watching(false);
        assert_eq!(
            f.news(Some("r1")),
            Some(false),
            "a watcher that ended reports nothing"
        );
        assert_eq!(
            f.news(None),
            None,
            "unconfigured, and the engine was told false"
        );
        f.report(("r1".into(), true));
        assert_eq!(
            f.news(None),
            None,
            "unconfigured: OTHER's state does not matter"
        );
    }
}
