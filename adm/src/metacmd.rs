//! Offline metadata commands: `create-md`, `dump-md`, `get-gi`, `show-gi`.
//! They open the backing/meta disk directly, so they refuse while the daemon runs (it owns
//! the metadata), except get-gi/show-gi which then ask the daemon.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{anyhow, Context};
use rep_replicator::meta::layout::MetaDiskKind;
use rep_replicator::meta::store::{self, MetaStore};
use rep_resources::{MetaDisk, NodeView};

use crate::cli::Cli;
use crate::ctl::{is_up, Conn, Paths};

fn open_rw(path: &Path, what: &str) -> anyhow::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open {what} {} (check `disk`/`meta-disk` in the resource's `on` section)",
                path.display()
            )
        })
}

fn size_of(f: &std::fs::File, path: &Path) -> anyhow::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(0))
        .with_context(|| format!("cannot size {}", path.display()))
}

fn refuse_if_up(p: &Paths, view: &NodeView, cmd: &str) -> anyhow::Result<()> {
    if is_up(&p.ctl(&view.resource)) {
        return Err(anyhow!(
            "{}: the resource is up (repd owns its metadata); run `repadm down {}` before `{cmd}`",
            view.resource,
            view.resource
        ));
    }
    Ok(())
}

fn open_store(view: &NodeView) -> anyhow::Result<MetaStore> {
    let data = open_rw(&view.disk, "backing disk")?;
    let size = size_of(&data, &view.disk)?;
    let store = match &view.meta_disk {
        MetaDisk::Internal => MetaStore::open_internal(Box::new(data), size),
        MetaDisk::External { path, index } => {
            MetaStore::open_external(Box::new(open_rw(path, "meta disk")?), *index, size)
        }
    };
    store.map_err(|e| anyhow!("{}: {e}", view.resource))
}

pub fn create_md(_cli: &Cli, p: &Paths, view: &NodeView, force: bool) -> anyhow::Result<i32> {
    refuse_if_up(p, view, "create-md")?;
    let data = open_rw(&view.disk, "backing disk")?;
    let size = size_of(&data, &view.disk)?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id()).rotate_left(32);
    let al_extents = view
        .disk_conf
        .al_extents
        .max(rep_replicator::meta::al::AL_EXTENTS_FOR_LARGEST_REQUEST);
    if al_extents != view.disk_conf.al_extents {
        println!(
            "al-extents {} raised to {al_extents}: one 32 MiB NBD request can span that many 4 MiB extents",
            view.disk_conf.al_extents
        );
    }
    let layout = match &view.meta_disk {
        MetaDisk::Internal => store::create_md(
            &data,
            None,
            size,
            MetaDiskKind::Internal,
            al_extents,
            seed,
            force,
        ),
        MetaDisk::External { path, index } => {
            let md = open_rw(path, "meta disk")?;
            let kind = match index {
                Some(i) => MetaDiskKind::ExternalIndexed(*i),
                None => MetaDiskKind::ExternalFlex,
            };
            store::create_md(&data, Some(&md), size, kind, al_extents, seed, force)
        }
    }
    .map_err(|e| anyhow!("{}: {e}", view.resource))?;
    println!("initializing activity log");
    println!(
        "initializing bitmap ({} KB) to all zero",
        layout.bitmap_bytes() / 1024
    );
    println!("Writing meta data...");
    println!(
        "New rep meta data block successfully created (usable size {} bytes).",
        layout.usable_bytes()
    );
    Ok(0)
}

pub fn dump_md(cli: &Cli, p: &Paths, view: &NodeView) -> anyhow::Result<i32> {
    refuse_if_up(p, view, "dump-md")?;
    let store = open_store(view)?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rep_replicator::control::md_dump::dump_md_json(&store))?
        );
    } else {
        print!("{}", rep_replicator::control::md_dump::dump_md(&store));
    }
    Ok(0)
}

pub fn gi(cli: &Cli, p: &Paths, view: &NodeView, show: bool) -> anyhow::Result<i32> {
    let (uuids, flags) = if is_up(&p.ctl(&view.resource)) {
        let s = Conn::open(&p.ctl(&view.resource), &view.resource)?.status()?;
        (s.uuids, s.md_flags)
    } else {
        let store = open_store(view)?;
        let sb = store.superblock();
        let u = sb.uuids;
        (
            [u.current, u.bitmap, u.history[0], u.history[1]],
            sb.flags.bits(),
        )
    };
    let gi = rep_replicator::meta::gi::GiView { uuids, flags };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&gi.to_json())?);
    } else if show {
        print!("{}", gi.show_gi());
    } else {
        println!("{}", gi.get_gi());
    }
    Ok(0)
}
