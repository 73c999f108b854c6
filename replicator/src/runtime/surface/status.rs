//! The status files (docs/architecture.md §11.2): `RES.status.json` for this resource and the
//! combined `/proc/drbd`-style `status` of every resource in the run dir.
//!
//! Written by a thread of their own, never on the io_uring thread: writing and renaming a file,
//! and rereading every resource's JSON to regenerate `status`, are blocking file-system calls
//! that would stall the data path. A burst of state changes is coalesced: the thread writes only
//! the latest status it has when it gets to run.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::control::{render, Status};
use crate::runtime::paths::RunPaths;

/// The status-file thread: `publish` hands it a status and returns at once.
pub struct StatusWriter {
    tx: Option<mpsc::Sender<Status>>,
    thread: Option<JoinHandle<()>>,
}

impl StatusWriter {
    pub fn start(paths: RunPaths) -> std::io::Result<StatusWriter> {
        let (tx, rx) = mpsc::channel::<Status>();
        let thread = std::thread::Builder::new()
            .name("rep-status".into())
            .spawn(move || {
                while let Ok(mut status) = rx.recv() {
                    // Only the newest of what queued up meanwhile is worth writing.
                    while let Ok(newer) = rx.try_recv() {
                        status = newer;
                    }
                    if let Err(e) = write_status_files(&paths, &status) {
                        tracing::warn!("cannot write status file in {}: {e}", paths.dir.display());
                    }
                }
            })?;
        Ok(StatusWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queue `status` to be written.
    pub fn publish(&self, status: Status) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(status);
        }
    }

    /// Write what is queued and stop the thread: after this, the caller owns the files (the
    /// daemon's last words on the way down must not be overtaken by an older status).
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Write `RES.status.json`, then regenerate the combined `/proc/drbd`-style `status` file from
/// every resource's JSON in the run dir (each daemon owns only its own JSON file).
pub fn write_status_files(paths: &RunPaths, status: &Status) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(status).map_err(std::io::Error::other)?;
    write_atomic(&paths.status_json(), json.as_bytes())?;
    regenerate_proc_status(paths)
}

/// Rebuild the combined `/proc/drbd`-style file from every `RES.status.json` in the run dir.
pub fn regenerate_proc_status(paths: &RunPaths) -> std::io::Result<()> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&paths.dir)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".status.json") {
            // A file being replaced by its daemon right now is skipped; it republishes soon.
            if let Ok(Ok(s)) =
                std::fs::read_to_string(&path).map(|t| serde_json::from_str::<Status>(&t))
            {
                all.push(s);
            }
        }
    }
    write_atomic(&paths.proc_status(), render::proc_text(&all).as_bytes())
}

pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
