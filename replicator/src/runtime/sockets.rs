//! Local sockets with explicit modes (docs/security.md): whoever can connect to the control
//! socket runs the resource, and whoever can connect to the NBD socket reads and writes the
//! disk, so neither is left to the umask.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{bail, Context};

/// Mode of a socket only root may use.
pub const ROOT_ONLY: u32 = 0o600;
/// Mode of a socket root and one configured group may use.
pub const ROOT_AND_GROUP: u32 = 0o660;
/// The run directory: everyone may look in (status files, as /proc/drbd), only root writes.
pub const RUN_DIR_MODE: u32 = 0o755;

/// Creates the run directory with [`RUN_DIR_MODE`]. An existing one is left as it is, but one
/// that others can write to is refused: they could replace the sockets.
pub fn prepare_run_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(RUN_DIR_MODE)
            .create(dir)
            .with_context(|| format!("cannot create run dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(RUN_DIR_MODE))
            .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    }
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read run dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "run dir {} has mode {:04o}: others could replace its sockets; chmod go-w it or use another (--run-dir, REP_RUN_DIR)",
            dir.display(),
            mode & 0o7777
        );
    }
    Ok(())
}

fn group_id(name: &str, option: &str) -> anyhow::Result<nix::unistd::Gid> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => bail!("{option} {name}: no such group"),
        Err(e) => bail!("{option} {name}: cannot look the group up: {e}"),
    }
}

/// Binds a Unix socket at `path` that only root (and `group`, if given, as `option` names it)
/// can connect to. The socket is made in a private directory, given its owner and mode, and
/// only then renamed into place: at no moment can anyone else connect.
pub fn bind_unix(path: &Path, group: Option<&str>, option: &str) -> anyhow::Result<UnixListener> {
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
        .with_context(|| format!("cannot create {}", private.display()))?;
    let made = (|| -> anyhow::Result<UnixListener> {
        let tmp = private.join(&name);
        let listener = UnixListener::bind(&tmp)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid.as_raw()))
                .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move the socket to {}", path.display()))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    made
}
