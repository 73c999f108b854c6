//! `repadm split-brain show|resolve|restore` (docs/split-brain.md): what each side changed
//! since the common generation, the recovery steps in the right order on the right nodes, and
//! an undo for the victim's discarded blocks.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use rep_replicator::control::{
    Query, Request, Response, SplitBrainInfo, Status, READ_DATA_BYTES_MAX,
};
use rep_replicator::core::split_brain::{common_generation, SbSide};
use rep_replicator::core::{AdminCmd, ConnState, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{Cli, SbCmd};
use crate::ctl::{Conn, Paths};
use crate::nbdclient::NbdClient;

const MIB: f64 = 1024.0 * 1024.0;
const DATA_FILE: &str = "blocks.bin";
const MANIFEST_FILE: &str = "manifest.json";

/// One node as `split-brain` reaches it.
struct Reached {
    ctl: PathBuf,
    info: SplitBrainInfo,
    status: Status,
}

fn query(ctl: &Path, res: &str) -> anyhow::Result<Reached> {
    let mut conn = Conn::open(ctl, res)?;
    match conn.call(&Request::Query(Query::SplitBrain))? {
        Response::SplitBrain { view, status } => Ok(Reached {
            ctl: ctl.to_path_buf(),
            info: *view,
            status: *status,
        }),
        Response::Error { message, .. } => Err(anyhow!(message)),
        _ => bail!(
            "the daemon at {} does not know `split-brain` (older repd?)",
            ctl.display()
        ),
    }
}

/// The other node's daemon, if `--peer-run-dir` names a run directory whose control socket
/// answers (two nodes on one machine, or a shared/forwarded socket).
fn reach_peer(peer_run_dir: Option<&Path>, res: &str) -> Option<Reached> {
    let dir = peer_run_dir?;
    let ctl = Paths {
        run_dir: dir.to_path_buf(),
    }
    .ctl(res);
    match query(&ctl, res) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("{res}: the peer's control socket does not answer ({e:#}); using what its handshake reported");
            None
        }
    }
}

/// Both sides: this node's, and the peer's (live if reachable, else from the handshake).
struct Sides {
    local: Reached,
    peer: Option<Reached>,
    peer_name: String,
    peer_side: Option<SbSide>,
}

impl Sides {
    fn gather(res: &str, p: &Paths, peer_run_dir: Option<&Path>) -> anyhow::Result<Sides> {
        let local = query(&p.ctl(res), res)?;
        let peer = reach_peer(peer_run_dir, res);
        let peer_name = peer
            .as_ref()
            .map(|r| r.status.node.clone())
            .or_else(|| local.status.peer_node.clone())
            .unwrap_or_else(|| "peer".into());
        let peer_side = peer
            .as_ref()
            .map(|r| r.info.view.local.clone())
            .or_else(|| local.info.view.peer.clone());
        Ok(Sides {
            local,
            peer,
            peer_name,
            peer_side,
        })
    }

    fn flagged(&self) -> bool {
        self.local.status.split_brain || self.peer.as_ref().is_some_and(|r| r.status.split_brain)
    }
}

/// Block ranges `[offset, len]` both lists cover.
fn intersect(a: &[[u64; 2]], b: &[[u64; 2]]) -> Vec<[u64; 2]> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (s1, e1) = (a[i][0], a[i][0] + a[i][1]);
        let (s2, e2) = (b[j][0], b[j][0] + b[j][1]);
        let (s, e) = (s1.max(s2), e1.min(e2));
        if s < e {
            out.push([s, e - s]);
        }
        if e1 < e2 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Block ranges either list covers, merged and ascending.
fn union(a: &[[u64; 2]], b: &[[u64; 2]]) -> Vec<[u64; 2]> {
    let mut all: Vec<[u64; 2]> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::new();
    for [s, l] in all {
        match out.last_mut() {
            Some(last) if s <= last[0] + last[1] => {
                last[1] = last[1].max(s + l - last[0]);
            }
            _ => out.push([s, l]),
        }
    }
    out
}

fn bytes_of(r: &[[u64; 2]]) -> u64 {
    r.iter().map(|x| x[1]).sum()
}

fn ranges_text(r: &[[u64; 2]]) -> String {
    const SHOWN: usize = 16;
    let mut parts: Vec<String> = r
        .iter()
        .take(SHOWN)
        .map(|[o, l]| format!("{o}+{l}"))
        .collect();
    if r.len() > SHOWN {
        parts.push(format!(
            "... ({} ranges in all; --json lists them)",
            r.len()
        ));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

fn role_at_split(s: &SbSide) -> &'static str {
    match (s.primary_at_split, s.role) {
        (true, _) => "Primary",
        (false, Role::Primary) => "Secondary (promoted during the split)",
        (false, _) => "Secondary",
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn side_json(
    node: &str,
    this_node: bool,
    source: &str,
    s: &SbSide,
    last_write: Option<u64>,
) -> serde_json::Value {
    json!({
        "node": node,
        "this_node": this_node,
        "source": source,
        "role_at_split": if s.primary_at_split { "Primary" } else { "Secondary" },
        "role_now": s.role,
        "uuids": s.uuids.iter().map(|u| format!("{u:016X}")).collect::<Vec<_>>(),
        "changed_blocks": s.changed_blocks,
        "changed_bytes": bytes_of(&s.ranges),
        "ranges": s.ranges,
        "last_write_unix": last_write,
    })
}

fn show(cli: &Cli, res: &str, p: &Paths, peer_run_dir: Option<&Path>) -> anyhow::Result<i32> {
    let sides = Sides::gather(res, p, peer_run_dir)?;
    let l = &sides.local;
    let me = &l.info.view.local;
    let common = sides
        .peer_side
        .as_ref()
        .and_then(|ps| common_generation(&me.uuids, &ps.uuids));
    let both = sides
        .peer_side
        .as_ref()
        .map(|ps| intersect(&me.ranges, &ps.ranges));
    let peer_source = if sides.peer.is_some() {
        "control-socket"
    } else {
        "handshake"
    };
    let peer_last_write = sides.peer.as_ref().and_then(|r| r.info.last_write_unix);
    if cli.json {
        let mut sides_json = vec![side_json(
            &l.status.node,
            true,
            "control-socket",
            me,
            l.info.last_write_unix,
        )];
        if let Some(ps) = &sides.peer_side {
            sides_json.push(side_json(
                &sides.peer_name,
                false,
                peer_source,
                ps,
                peer_last_write,
            ));
        }
        let out = json!({
            "resource": res,
            "split_brain": sides.flagged(),
            "common_generation": common.map(|c| format!("{c:016X}")),
            "sides": sides_json,
            "both_changed": both.as_ref().map(|b| json!({
                "blocks": bytes_of(b) / 4096,
                "bytes": bytes_of(b),
                "ranges": b,
            })),
        });
        println!("{out}");
        return Ok(0);
    }
    println!(
        "{res}: split-brain:{}",
        if sides.flagged() { "yes" } else { "no" }
    );
    match common {
        Some(c) => println!("  common generation: {c:016X}"),
        None => println!("  common generation: unknown (no peer data, or no shared history)"),
    }
    let now = now_unix();
    let print_side = |node: &str, what: &str, s: &SbSide, lw: Option<u64>| {
        println!("  {node} ({what}):");
        println!(
            "    role at the split: {}; now: {}",
            role_at_split(s),
            s.role
        );
        println!(
            "    changed since: {} blocks, {:.2} MiB",
            s.changed_blocks,
            bytes_of(&s.ranges) as f64 / MIB
        );
        println!(
            "    ranges (offset+length, bytes): {}",
            ranges_text(&s.ranges)
        );
        match lw {
            Some(t) => println!("    last write: unix {t} ({}s ago)", now.saturating_sub(t)),
            None => println!(
                "    last write: unknown (none since its daemon started, or not reachable)"
            ),
        }
    };
    print_side(&l.status.node, "this node", me, l.info.last_write_unix);
    match &sides.peer_side {
        Some(ps) => print_side(
            &sides.peer_name,
            if sides.peer.is_some() {
                "peer, from its control socket"
            } else {
                "peer, as its handshake reported it"
            },
            ps,
            peer_last_write,
        ),
        None => println!(
            "  {}: unknown (no handshake since this daemon started; pass --peer-run-dir or run `show` on that node)",
            sides.peer_name
        ),
    }
    if let Some(b) = &both {
        println!(
            "  both changed: {} blocks, {:.2} MiB: {}",
            bytes_of(b) / 4096,
            bytes_of(b) as f64 / MIB,
            ranges_text(b)
        );
    }
    Ok(0)
}

/// Where a step runs: here, or on the other node through its control socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Here,
    There,
}

fn admin(ctl: &Path, res: &str, cmd: AdminCmd) -> anyhow::Result<()> {
    let mut conn = Conn::open(ctl, res)?;
    match conn.call(&Request::Admin(cmd))? {
        Response::Ok { .. } => Ok(()),
        Response::Refused { rendered, .. } => Err(anyhow!(rendered)),
        Response::Error { message, .. } => Err(anyhow!(message)),
        _ => bail!("unexpected answer"),
    }
}

fn cmd_text(res: &str, cmd: &AdminCmd) -> String {
    match cmd {
        AdminCmd::Secondary => format!("repadm secondary {res}"),
        AdminCmd::Disconnect { .. } => format!("repadm disconnect {res}"),
        AdminCmd::Connect {
            discard_my_data: true,
        } => format!("repadm connect --discard-my-data {res}"),
        AdminCmd::Connect { .. } => format!("repadm connect {res}"),
        other => format!("{other:?}"),
    }
}

/// The saved blocks' description (`manifest.json` beside `blocks.bin`).
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    resource: String,
    victim: String,
    survivor: String,
    saved_at_unix: u64,
    common_generation: Option<String>,
    victim_uuids: Vec<String>,
    size_bytes: u64,
    data_file: String,
    /// Every block the resync will overwrite on the victim, with the victim's data.
    ranges: Vec<SavedRange>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedRange {
    offset: u64,
    len: u64,
    /// Where its bytes start in the data file.
    file_offset: u64,
    /// The victim itself wrote this range during the split (else only the survivor did, and
    /// these are the common generation's bytes).
    victim_changed: bool,
}

/// Copy the blocks the resync will overwrite from the victim, through its control socket
/// (`read-data`, at most `READ_DATA_BYTES_MAX` per request): the same path whether the victim
/// is this node or the other one, and its backing device need not be visible here. The
/// victim is Secondary and StandAlone by now, so nothing writes those blocks meanwhile.
fn save(
    dir: &Path,
    res: &str,
    victim: &Reached,
    survivor: (&str, Option<&SbSide>),
    common: Option<u64>,
) -> anyhow::Result<u64> {
    let victim_side = &victim.info.view.local;
    let theirs = survivor.1.map(|s| s.ranges.clone()).unwrap_or_default();
    let all = union(&victim_side.ranges, &theirs);
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut src = Conn::open(&victim.ctl, res)?;
    let mut out = fs::File::create(dir.join(DATA_FILE)).context("create the data file")?;
    let mut ranges = Vec::new();
    let mut file_offset = 0;
    for piece in split_by(&all, &victim_side.ranges) {
        let (offset, len, victim_changed) = piece;
        let mut at = offset;
        while at < offset + len {
            let n = u32::try_from((offset + len - at).min(u64::from(READ_DATA_BYTES_MAX)))
                .context("read size")?;
            let buf = src.read_data(at, n).with_context(|| {
                format!(
                    "read {n} bytes at {at} of {}'s data area",
                    victim.status.node
                )
            })?;
            out.write_all(&buf).context("write the data file")?;
            at += u64::from(n);
        }
        ranges.push(SavedRange {
            offset,
            len,
            file_offset,
            victim_changed,
        });
        file_offset += len;
    }
    out.sync_all().context("sync the data file")?;
    let m = Manifest {
        resource: res.into(),
        victim: victim.status.node.clone(),
        survivor: survivor.0.into(),
        saved_at_unix: now_unix(),
        common_generation: common.map(|c| format!("{c:016X}")),
        victim_uuids: victim
            .status
            .uuids
            .iter()
            .map(|u| format!("{u:016X}"))
            .collect(),
        size_bytes: victim.status.size_bytes,
        data_file: DATA_FILE.into(),
        ranges,
    };
    let text = serde_json::to_string_pretty(&m).context("encode the manifest")?;
    fs::write(dir.join(MANIFEST_FILE), text).context("write the manifest")?;
    Ok(file_offset)
}

/// `all` cut where `mine` starts and ends: `(offset, len, inside mine)`.
fn split_by(all: &[[u64; 2]], mine: &[[u64; 2]]) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    for &[s, l] in all {
        let end = s + l;
        let mut pos = s;
        for &[ms, ml] in mine {
            let me = ms + ml;
            if me <= pos || ms >= end {
                continue;
            }
            if ms > pos {
                out.push((pos, ms - pos, false));
            }
            let e = me.min(end);
            out.push((ms.max(pos), e - ms.max(pos), true));
            pos = e;
        }
        if pos < end {
            out.push((pos, end - pos, false));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn resolve(
    cli: &Cli,
    res: &str,
    p: &Paths,
    peer_run_dir: Option<&Path>,
    keep: &str,
    dry_run: bool,
    save_dir: Option<&Path>,
) -> anyhow::Result<i32> {
    let sides = Sides::gather(res, p, peer_run_dir)?;
    let here = sides.local.status.node.clone();
    let there = sides.peer_name.clone();
    if keep != here && keep != there {
        bail!("--keep {keep}: {res} runs on {here} (this node) and {there}");
    }
    if !sides.flagged() {
        bail!("{res}: no unresolved split brain on {here}{}: nothing to resolve (see `repadm split-brain show {res}`)",
            if sides.peer.is_some() { format!(" or {there}") } else { String::new() });
    }
    let victim_place = if keep == here {
        Place::There
    } else {
        Place::Here
    };
    let (victim, survivor) = if victim_place == Place::Here {
        (here.clone(), there.clone())
    } else {
        (there.clone(), here.clone())
    };
    let victim_status = match victim_place {
        Place::Here => Some(&sides.local.status),
        Place::There => sides.peer.as_ref().map(|r| &r.status),
    };
    let survivor_status = match victim_place {
        Place::Here => sides.peer.as_ref().map(|r| &r.status),
        Place::There => Some(&sides.local.status),
    };
    // Victim: demote (its changes are to go), then connect volunteering to lose; survivor:
    // connect. The victim's discard flag must be set before the survivor's handshake, or the
    // two just find the split brain again.
    let mut victim_steps = Vec::new();
    if victim_status.is_none_or(|s| s.role == Role::Primary) {
        victim_steps.push(AdminCmd::Secondary);
    }
    if victim_status.is_some_and(|s| s.cstate != ConnState::StandAlone) {
        victim_steps.push(AdminCmd::Disconnect { force: false });
    }
    victim_steps.push(AdminCmd::Connect {
        discard_my_data: true,
    });
    let survivor_steps = if survivor_status.is_none_or(|s| s.cstate == ConnState::StandAlone) {
        vec![AdminCmd::Connect {
            discard_my_data: false,
        }]
    } else {
        Vec::new()
    };
    let victim_ctl = match victim_place {
        Place::Here => Some(sides.local.ctl.clone()),
        Place::There => sides.peer.as_ref().map(|r| r.ctl.clone()),
    };
    let survivor_ctl = match victim_place {
        Place::Here => sides.peer.as_ref().map(|r| r.ctl.clone()),
        Place::There => Some(sides.local.ctl.clone()),
    };
    let plan: Vec<(String, String)> = victim_steps
        .iter()
        .map(|c| (victim.clone(), cmd_text(res, c)))
        .chain(
            survivor_steps
                .iter()
                .map(|c| (survivor.clone(), cmd_text(res, c))),
        )
        .collect();
    let steps_json = |v: &[(String, String)]| {
        v.iter()
            .map(|(n, c)| json!({"node": n, "command": c}))
            .collect::<Vec<_>>()
    };
    if dry_run {
        if cli.json {
            println!(
                "{}",
                json!({"resource": res, "keep": keep, "victim": victim, "dry_run": true,
                       "steps": steps_json(&plan), "done": [], "todo": steps_json(&plan),
                       "saved": null})
            );
        } else {
            println!("{res}: keep {survivor}'s data, discard {victim}'s changes:");
            for (n, c) in &plan {
                println!("  on {n}: {c}");
            }
            println!("{res}: dry run: nothing was changed");
        }
        return Ok(0);
    }
    // Steps run here or through the peer's control socket, in order; with --json one object at
    // the end says which ran and which the operator must still run.
    let mut done: Vec<(String, String)> = Vec::new();
    let mut saved = serde_json::Value::Null;
    // The victim first: demote, so that nothing writes its disk while it is saved.
    let mut todo_elsewhere = Vec::new();
    let victim_ctl_ref = victim_ctl.as_deref();
    let mut steps = victim_steps.into_iter().peekable();
    if let Some(AdminCmd::Secondary) = steps.peek() {
        steps.next();
        match victim_ctl_ref {
            Some(ctl) => {
                admin(ctl, res, AdminCmd::Secondary)
                    .with_context(|| format!("demote {victim} (the victim)"))?;
                eprintln!("{res}: {victim}: secondary");
                done.push((victim.clone(), cmd_text(res, &AdminCmd::Secondary)));
            }
            None => todo_elsewhere.push((victim.clone(), cmd_text(res, &AdminCmd::Secondary))),
        }
    }
    if let Some(dir) = save_dir {
        let Some(ctl) = victim_ctl_ref else {
            bail!("--save reads the victim's blocks through its control socket: run `repadm split-brain resolve {res} --keep {keep} --save {}` on {victim}, or pass --peer-run-dir naming its run directory", dir.display());
        };
        if !todo_elsewhere.is_empty() {
            bail!("--save: {victim} could not be demoted from here");
        }
        // Fresh: the victim's bitmap after its last write.
        let v = query(ctl, res)?;
        let surv_side = match victim_place {
            Place::Here => sides.peer_side.clone(),
            Place::There => Some(sides.local.info.view.local.clone()),
        };
        let common = surv_side
            .as_ref()
            .and_then(|s| common_generation(&v.info.view.local.uuids, &s.uuids));
        let bytes = save(dir, res, &v, (&survivor, surv_side.as_ref()), common)?;
        eprintln!(
            "{res}: saved {bytes} bytes of {victim}'s blocks to {} (undo: `repadm split-brain restore {res} {}` on the Primary)",
            dir.display(),
            dir.display()
        );
        saved = json!({"dir": dir.display().to_string(), "bytes": bytes});
    }
    for cmd in steps {
        let text = cmd_text(res, &cmd);
        match victim_ctl_ref {
            Some(ctl) if todo_elsewhere.is_empty() => {
                admin(ctl, res, cmd).with_context(|| format!("{text} on {victim}"))?;
                eprintln!("{res}: {victim}: {text}");
                done.push((victim.clone(), text));
            }
            _ => todo_elsewhere.push((victim.clone(), text)),
        }
    }
    for cmd in survivor_steps {
        let text = cmd_text(res, &cmd);
        match (&survivor_ctl, todo_elsewhere.is_empty()) {
            (Some(ctl), true) => {
                admin(ctl, res, cmd).with_context(|| format!("{text} on {survivor}"))?;
                eprintln!("{res}: {survivor}: {text}");
                done.push((survivor.clone(), text));
            }
            _ => todo_elsewhere.push((survivor.clone(), text)),
        }
    }
    if cli.json {
        println!(
            "{}",
            json!({"resource": res, "keep": keep, "victim": victim, "dry_run": false,
                   "steps": steps_json(&plan), "done": steps_json(&done),
                   "todo": steps_json(&todo_elsewhere), "saved": saved})
        );
    } else if todo_elsewhere.is_empty() {
        println!("{res}: {victim} resyncs from {survivor}; `repadm status {res}` shows the progress, and split-brain:yes goes away at the handshake");
    } else {
        println!("{res}: now run, in this order:");
        for (n, c) in &todo_elsewhere {
            println!("  on {n}: {c}");
        }
    }
    Ok(0)
}

fn restore(res: &str, p: &Paths, dir: &Path, only_victim_changes: bool) -> anyhow::Result<i32> {
    let text = fs::read_to_string(dir.join(MANIFEST_FILE))
        .with_context(|| format!("read {}", dir.join(MANIFEST_FILE).display()))?;
    let m: Manifest = serde_json::from_str(&text).context("parse the manifest")?;
    if m.resource != res {
        bail!(
            "{} holds blocks of {}, not {res}",
            dir.display(),
            m.resource
        );
    }
    let status = Conn::open(&p.ctl(res), res)?.status()?;
    if status.role != Role::Primary {
        bail!(
            "{res} is {} on {}: restore writes through the Primary's export (replicated to the peer); promote a node and run it there",
            status.role,
            status.node
        );
    }
    let mut data = fs::File::open(dir.join(&m.data_file)).context("open the data file")?;
    let want: u64 = m
        .ranges
        .iter()
        .map(|r| r.file_offset + r.len)
        .max()
        .unwrap_or(0);
    let have = data.metadata().context("data file size")?.len();
    if have != want {
        bail!("the data file has {have} bytes, the manifest describes {want}");
    }
    let mut nbd = NbdClient::connect(Path::new(&status.nbd_socket), res)?;
    let mut written = 0u64;
    for r in &m.ranges {
        if only_victim_changes && !r.victim_changed {
            continue;
        }
        if r.offset + r.len > nbd.size {
            bail!(
                "range {}+{} is beyond the device ({} bytes)",
                r.offset,
                r.len,
                nbd.size
            );
        }
        let mut buf = vec![0u8; usize::try_from(r.len).context("range length")?];
        data.seek(SeekFrom::Start(r.file_offset))?;
        data.read_exact(&mut buf).context("read the data file")?;
        nbd.write(r.offset, &buf)?;
        written += r.len;
    }
    nbd.flush()?;
    nbd.disconnect()?;
    println!(
        "{res}: restored {written} bytes of {}'s blocks (saved at unix {}) onto {}",
        m.victim, m.saved_at_unix, status.node
    );
    Ok(0)
}

pub fn run(cli: &Cli, cmd: &SbCmd) -> anyhow::Result<i32> {
    let p = Paths {
        run_dir: cli.run_dir.clone(),
    };
    match cmd {
        SbCmd::Show { res, peer_run_dir } => show(cli, res, &p, peer_run_dir.as_deref()),
        SbCmd::Resolve {
            res,
            keep,
            dry_run,
            save,
            peer_run_dir,
        } => resolve(
            cli,
            res,
            &p,
            peer_run_dir.as_deref(),
            keep,
            *dry_run,
            save.as_deref(),
        ),
        SbCmd::Restore {
            res,
            dir,
            only_victim_changes,
        } => restore(res, &p, dir, *only_victim_changes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_operations() {
        let a = [[0, 4096], [8192, 8192]];
        let b = [[4096, 8192], [20480, 4096]];
        assert_eq!(intersect(&a, &b), vec![[8192, 4096]]);
        assert_eq!(union(&a, &b), vec![[0, 16384], [20480, 4096]]);
        assert_eq!(
            split_by(&union(&a, &b), &a),
            vec![
                (0, 4096, true),
                (4096, 4096, false),
                (8192, 8192, true),
                (20480, 4096, false)
            ]
        );
    }
}
