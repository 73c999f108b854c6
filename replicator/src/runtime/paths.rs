//! Where a resource's daemon keeps its sockets and files (docs/architecture.md §11.2).

use std::path::{Path, PathBuf};

/// Default run directory; `REP_RUN_DIR` overrides it.
pub const RUN_DIR_DEFAULT: &str = "/run/rep";
/// Default config file; `REP_CONFIG` or `-c` override it.
pub const CONFIG_DEFAULT: &str = "/etc/rep/rep.conf";

#[derive(Debug, Clone)]
pub struct RunPaths {
    pub dir: PathBuf,
    pub resource: String,
}

impl RunPaths {
    pub fn new(dir: &Path, resource: &str) -> RunPaths {
        RunPaths {
            dir: dir.to_path_buf(),
            resource: resource.to_string(),
        }
    }
    /// Control socket, JSON lines.
    pub fn ctl(&self) -> PathBuf {
        self.dir.join(format!("{}.ctl", self.resource))
    }
    /// NBD export (unix socket), export name = resource name.
    pub fn nbd(&self) -> PathBuf {
        self.dir.join(format!("{}.nbd", self.resource))
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.resource))
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.resource))
    }
    /// This resource's status as JSON, the source of the combined `status` file.
    pub fn status_json(&self) -> PathBuf {
        self.dir.join(format!("{}.status.json", self.resource))
    }
    /// The `/proc/drbd`-like file covering every resource of this run dir.
    pub fn proc_status(&self) -> PathBuf {
        self.dir.join("status")
    }
    pub fn nbd_uri(&self) -> String {
        format!(
            "nbd+unix:///{}?socket={}",
            self.resource,
            self.nbd().display()
        )
    }
}
