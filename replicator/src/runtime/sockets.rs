//! Local sockets with explicit modes (docs/security.md): whoever can connect to the control
//! socket runs the resource, and whoever can connect to the NBD socket reads and writes the
//! disk, so neither is left to the umask.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Why the run directory or a local socket cannot be set up (at start). Each names the path
/// or the option; the OS's error, where there is one, follows as the source.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Creating, reading or changing a path failed; `what` says which step.
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The run directory is writable by others, who could replace the sockets.
    #[error(
        "run dir {} has mode {mode:04o}: others could replace its sockets; chmod go-w it or use another (--run-dir, REP_RUN_DIR)",
        dir.display()
    )]
    RunDirMode { dir: PathBuf, mode: u32 },
    #[error("{option} {name}: no such group")]
    NoSuchGroup { option: String, name: String },
    #[error("{option} {name}: cannot look the group up")]
    GroupLookup {
        option: String,
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot give {} to group {gid}", path.display())]
    Chown {
        path: PathBuf,
        gid: nix::unistd::Gid,
        #[source]
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketError {
    let path = path.to_path_buf();
    move |source| SocketError::Io { what, path, source }
}

/// Mode of a socket only root may use.
pub const ROOT_ONLY: u32 = 0o600;
/// Mode of a socket root and one configured group may use.
pub const ROOT_AND_GROUP: u32 = 0o660;
/// The run directory: everyone may look in (status files, as /proc/drbd), only root writes.
pub const RUN_DIR_MODE: u32 = 0o755;

/// Creates the run directory with [`RUN_DIR_MODE`]. An existing one is left as it is, but one
/// that others can write to is refused: they could replace the sockets.
pub fn prepare_run_dir(dir: &Path) -> Result<(), SocketError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(RUN_DIR_MODE)
            .create(dir)
            .map_err(io_error("create run dir", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(RUN_DIR_MODE))
            .map_err(io_error("set the mode of", dir))?;
    }
    let mode = std::fs::metadata(dir)
        .map_err(io_error("read run dir", dir))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(SocketError::RunDirMode {
            dir: dir.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

fn group_id(name: &str, option: &str) -> Result<nix::unistd::Gid, SocketError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(SocketError::NoSuchGroup {
            option: option.to_owned(),
            name: name.to_owned(),
        }),
        Err(source) => Err(SocketError::GroupLookup {
            option: option.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Binds a Unix socket at `path` that only root (and `group`, if given, as `option` names it)
/// can connect to. The socket is made in a private directory, given its owner and mode, and
/// only then renamed into place: at no moment can anyone else connect.
pub fn bind_unix(
    path: &Path,
    group: Option<&str>,
    option: &str,
) -> Result<UnixListener, SocketError> {
    let gid = group.map(|g| group_id(g, option)).transpose()?;
    let mode = if gid.is_some() {
        ROOT_AND_GROUP
    } else {
        ROOT_ONLY
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let private = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io_error("create", &private))?;
    let made = (|| -> Result<UnixListener, SocketError> {
        let tmp = private.join(&name);
        let listener = UnixListener::bind(&tmp).map_err(io_error("listen on", path))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid.as_raw())).map_err(|source| {
                SocketError::Chown {
                    path: path.to_path_buf(),
                    gid,
                    source,
                }
            })?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(io_error("set the mode of", path))?;
        std::fs::rename(&tmp, path).map_err(io_error("move the socket to", path))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    made
}
