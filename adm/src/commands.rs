//! Command dispatch: resolve the resource(s), talk to the daemon or the metadata, print.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use rep_replicator::control::fault::{FaultCmd, FaultOp};
use rep_replicator::control::{render, Query, Request, Response, Status};
use rep_replicator::core::{AdminCmd, ConnState, Refusal};
use rep_resources::{Config, ConfigError, NodeView};

use crate::cli::{Cli, Cmd, FaultOpArg, FaultWhat, OnOff};
use crate::ctl::{is_up, Conn, NotUp, Paths};

use crate::answer::{print_response, EXIT_CONFIG, EXIT_EXEC, EXIT_USAGE};

pub fn exit_code_of(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<rep_resources::ParseError>().is_some() {
        return EXIT_CONFIG;
    }
    if let Some(ce) = e.downcast_ref::<ConfigError>() {
        return match ce {
            ConfigError::UnknownResource { .. } | ConfigError::NotDefinedForHost { .. } => {
                EXIT_USAGE
            }
            _ => EXIT_CONFIG,
        };
    }
    if e.downcast_ref::<NotUp>().is_some() {
        return EXIT_CONFIG;
    }
    EXIT_EXEC
}

pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    Ok(rep_resources::parse_file(&cli.config)?)
}

pub fn node_name(cli: &Cli) -> anyhow::Result<String> {
    if let Some(n) = &cli.node {
        return Ok(n.clone());
    }
    let host = nix::unistd::gethostname()
        .context("cannot read the host name; pass --node or set REP_NODE")?;
    Ok(host.to_string_lossy().into_owned())
}

/// `RES`, `RES/VOL` or `all` → the node views to act on. `all` skips resources that have no
/// section for this node, as drbdadm does.
pub fn targets(cli: &Cli, config: &Config, arg: &str) -> anyhow::Result<Vec<NodeView>> {
    let node = node_name(cli)?;
    if arg == "all" {
        let mut out = Vec::new();
        for name in config.resource_names() {
            match config.node_view(&name, &node) {
                Ok(v) => out.push(v),
                Err(ConfigError::NotDefinedForHost { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(out);
    }
    let name = arg.split('/').next().unwrap_or(arg);
    Ok(vec![config.node_view(name, &node)?])
}

fn paths(cli: &Cli) -> Paths {
    Paths {
        run_dir: cli.run_dir.clone(),
    }
}

pub fn run(cli: &Cli) -> anyhow::Result<i32> {
    match &cli.cmd {
        Cmd::Completions { shell } => return crate::docgen::completions(*shell),
        Cmd::Man { dir } => return crate::docgen::man(dir.as_deref()),
        _ => {}
    }
    if let Cmd::SplitBrain { cmd } = &cli.cmd {
        return crate::splitbrain::run(cli, cmd);
    }
    if let Cmd::Dump { res } = &cli.cmd {
        let config = load_config(cli)?;
        let only = res.as_deref().filter(|r| *r != "all");
        print!("{}", config.dump(only)?);
        return Ok(0);
    }
    let config = load_config(cli)?;
    let (res_arg, action): (&str, Action) = match &cli.cmd {
        Cmd::Dump { .. } | Cmd::Completions { .. } | Cmd::Man { .. } | Cmd::SplitBrain { .. } => {
            unreachable!("handled above")
        }
        Cmd::CreateMd { res, force } => (res, Action::CreateMd { force: *force }),
        Cmd::Up { res } => (res, Action::Up),
        Cmd::Down { res } => (res, Action::Down),
        Cmd::Attach { res } => (res, Action::Admin(AdminCmd::Attach)),
        Cmd::Detach { res, force } => (res, Action::Admin(AdminCmd::Detach { force: *force })),
        Cmd::Primary { res, force } => (res, Action::Admin(AdminCmd::Primary { force: *force })),
        Cmd::Secondary { res } => (res, Action::Admin(AdminCmd::Secondary)),
        Cmd::Connect {
            res,
            discard_my_data,
        } => (
            res,
            Action::Admin(AdminCmd::Connect {
                discard_my_data: *discard_my_data,
            }),
        ),
        Cmd::Disconnect { res, force } => {
            (res, Action::Admin(AdminCmd::Disconnect { force: *force }))
        }
        Cmd::Role { res } => (res, Action::Show(Show::Role)),
        Cmd::Cstate { res } => (res, Action::Show(Show::Cstate)),
        Cmd::Dstate { res } => (res, Action::Show(Show::Dstate)),
        Cmd::Status { res, proc } => (res, Action::Status { proc: *proc }),
        Cmd::DumpMd { res } => (res, Action::DumpMd),
        Cmd::GetGi { res } => (res, Action::Gi { show: false }),
        Cmd::ShowGi { res } => (res, Action::Gi { show: true }),
        Cmd::Outdate { res } => (res, Action::Admin(AdminCmd::Outdate)),
        Cmd::NewCurrentUuid { res, clear_bitmap } => (
            res,
            Action::Admin(AdminCmd::NewCurrentUuid {
                clear_bitmap: *clear_bitmap,
            }),
        ),
        Cmd::Invalidate { res } => (res, Action::Admin(AdminCmd::Invalidate)),
        Cmd::InvalidateRemote { res } => (res, Action::Admin(AdminCmd::InvalidateRemote)),
        Cmd::Verify {
            res,
            wait: false,
            report: None,
            fix: false,
            ..
        } => (res, Action::Admin(AdminCmd::Verify)),
        Cmd::Verify {
            res,
            timeout,
            report,
            fix,
            from,
            ..
        } => (
            res,
            Action::VerifyWait {
                timeout: *timeout,
                report: report.clone(),
                fix: *fix,
                from: from.clone(),
            },
        ),
        Cmd::WaitSync { res, timeout } => (res, Action::WaitSync { timeout: *timeout }),
        Cmd::PauseSync { res } => (res, Action::Admin(AdminCmd::PauseSync)),
        Cmd::ResumeSync { res } => (res, Action::Admin(AdminCmd::ResumeSync)),
        Cmd::ResumeIo { res } => (res, Action::Admin(AdminCmd::ResumeIo)),
        Cmd::WaitConnect { res, timeout } => (res, Action::WaitConnect { timeout: *timeout }),
        Cmd::Events { res, now } => (res, Action::Events { now: *now }),
        Cmd::Adjust { res, dry_run } => (res, Action::Adjust { dry_run: *dry_run }),
        Cmd::Fault { res, what } => (res, Action::Fault(fault_cmd(what))),
    };
    let views = targets(cli, &config, res_arg)?;
    if matches!(action, Action::Up | Action::CreateMd { .. }) {
        // Before anything starts: `up all` brings up none rather than some.
        if let Some(why) = views.iter().find_map(NodeView::not_runnable) {
            return Err(ConfigError::NotRunYet(why).into());
        }
    }
    match action {
        Action::Status { proc } => return status(cli, &views, res_arg == "all", proc),
        Action::Events { now } => return crate::events::run(cli, &paths(cli), &views, now),
        _ => {}
    }
    let mut worst = 0;
    for view in &views {
        let code = one(cli, view, &action)?;
        if worst == 0 {
            worst = code;
        }
    }
    Ok(worst)
}

enum Show {
    Role,
    Cstate,
    Dstate,
}

enum Action {
    CreateMd {
        force: bool,
    },
    Up,
    Down,
    Admin(AdminCmd),
    Show(Show),
    Status {
        proc: bool,
    },
    DumpMd,
    Gi {
        show: bool,
    },
    WaitConnect {
        timeout: Option<u64>,
    },
    Events {
        now: bool,
    },
    Adjust {
        dry_run: bool,
    },
    VerifyWait {
        timeout: Option<u64>,
        report: Option<std::path::PathBuf>,
        fix: bool,
        from: Option<String>,
    },
    WaitSync {
        timeout: Option<u64>,
    },
    Fault(FaultCmd),
}

fn fault_cmd(what: &FaultWhat) -> FaultCmd {
    match *what {
        FaultWhat::DiskError {
            op,
            offset,
            length,
            count,
        } => FaultCmd::DiskError {
            op: match op {
                FaultOpArg::Read => FaultOp::Read,
                FaultOpArg::Write => FaultOp::Write,
                FaultOpArg::Flush => FaultOp::Flush,
                FaultOpArg::Any => FaultOp::Any,
            },
            offset,
            length,
            count,
        },
        FaultWhat::VolatileCache { state } => FaultCmd::VolatileCache {
            on: matches!(state, OnOff::On),
        },
        FaultWhat::MetaDelay { ms } => FaultCmd::MetaDelay { ms },
        FaultWhat::DiskDelay { ms } => FaultCmd::DiskDelay { ms },
        FaultWhat::PowerLoss => FaultCmd::PowerLoss,
        FaultWhat::Clear => FaultCmd::Clear,
    }
}

fn one(cli: &Cli, view: &NodeView, action: &Action) -> anyhow::Result<i32> {
    let p = paths(cli);
    let res = &view.resource;
    match action {
        Action::CreateMd { .. } if view.diskless => {
            // A runbook runs create-md on every host; the witness has nothing to create.
            println!(
                "{res}: {} is the witness (`disk none;`): no metadata to create",
                view.node
            );
            Ok(0)
        }
        Action::CreateMd { force } => crate::metacmd::create_md(cli, &p, view, *force),
        Action::Up => crate::up::up(cli, &p, view),
        Action::Down => crate::up::down(&p, view),
        Action::Admin(cmd) => admin(cli, &p, res, cmd.clone()),
        Action::Show(what) => show(cli, &p, res, what),
        Action::DumpMd => crate::metacmd::dump_md(cli, &p, view),
        Action::Gi { show } => crate::metacmd::gi(cli, &p, view, *show),
        Action::WaitConnect { timeout } => wait_connect(&p, view, *timeout),
        Action::Adjust { dry_run } => adjust(cli, &p, view, *dry_run),
        Action::VerifyWait {
            timeout,
            report,
            fix,
            from,
        } => {
            let fix = fix.then_some(crate::verifycmd::Fix {
                from: from.as_deref(),
                view,
            });
            crate::verifycmd::run(cli, &p, res, *timeout, report.as_deref(), fix)
        }
        Action::WaitSync { timeout } => crate::progress::wait_sync(cli, &p, res, *timeout),
        Action::Fault(cmd) => fault(cli, &p, res, cmd),
        Action::Status { .. } | Action::Events { .. } => Ok(0),
    }
}

fn admin(cli: &Cli, p: &Paths, res: &str, cmd: AdminCmd) -> anyhow::Result<i32> {
    let mut conn = Conn::open(&p.ctl(res), res)?;
    let disconnect = matches!(cmd, AdminCmd::Disconnect { .. });
    let resp = conn.call(&Request::Admin(cmd))?;
    if let (
        true,
        Response::Refused {
            refusal: Refusal::AlreadyStandAlone,
            status,
            ..
        },
    ) = (disconnect, &resp)
    {
        // drbdsetup's conn_try_disconnect turns SS_ALREADY_STANDALONE into success, and
        // runbooks rely on it (`drbdadm disconnect` first, whatever the state).
        if cli.json {
            println!(
                "{}",
                serde_json::json!({"result": "ok", "message": "already StandAlone", "status": status})
            );
        }
        return Ok(0);
    }
    Ok(print_response(cli, resp))
}

/// `repadm fault`: one request to the daemon's fault hook; prints what it did.
fn fault(cli: &Cli, p: &Paths, res: &str, cmd: &FaultCmd) -> anyhow::Result<i32> {
    if let Err(e) = cmd.disk_error_rule() {
        eprintln!("repadm: fault {res}: {e}");
        return Ok(EXIT_USAGE);
    }
    let mut conn = Conn::open(&p.ctl(res), res)?;
    let resp = conn.call(&Request::Query(Query::Fault { fault: cmd.clone() }))?;
    if let (Response::Ok { message, .. }, false) = (&resp, cli.json) {
        println!("{res}: {message}");
    }
    Ok(print_response(cli, resp))
}

fn show(cli: &Cli, p: &Paths, res: &str, what: &Show) -> anyhow::Result<i32> {
    if !is_up(&p.ctl(res)) {
        if let Show::Role = what {
            eprintln!("{res}: Failure: (127) Device minor not allocated (resource is not up; run `repadm up {res}`)");
            return Ok(EXIT_CONFIG);
        }
        println!("Unconfigured");
        return Ok(0);
    }
    let s = Conn::open(&p.ctl(res), res)?.status()?;
    let line = match what {
        Show::Role => render::role_line(&s),
        Show::Cstate => render::cstate_line(&s),
        Show::Dstate => render::dstate_line(&s),
    };
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"resource": res, "role": s.role, "peer_role": s.peer_role, "cstate": s.cstate, "disk": s.disk, "peer_disk": s.peer_disk, "quorum_enabled": s.quorum_enabled, "quorum": s.quorum})
        );
    } else {
        println!("{line}");
    }
    Ok(0)
}

fn status(cli: &Cli, views: &[NodeView], all: bool, proc: bool) -> anyhow::Result<i32> {
    let p = paths(cli);
    let mut statuses: Vec<Status> = Vec::new();
    let mut code = 0;
    for v in views {
        let res = &v.resource;
        if !is_up(&p.ctl(res)) {
            if !all {
                eprintln!("{res}: No such resource (not up on this node; run `repadm up {res}`)");
                code = EXIT_CONFIG;
            }
            continue;
        }
        statuses.push(Conn::open(&p.ctl(res), res)?.status()?);
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else if proc {
        print!("{}", render::proc_text(&statuses));
    } else {
        for s in &statuses {
            print!("{}", render::status_text(s));
        }
    }
    Ok(code)
}

fn wait_connect(p: &Paths, view: &NodeView, timeout: Option<u64>) -> anyhow::Result<i32> {
    let res = &view.resource;
    let secs = timeout.unwrap_or(u64::from(view.startup.wfc_timeout_s));
    let deadline = (secs > 0).then(|| Instant::now() + Duration::from_secs(secs));
    loop {
        let s = Conn::open(&p.ctl(res), res)?.status()?;
        if s.cstate >= ConnState::Connected {
            return Ok(0);
        }
        if s.cstate == ConnState::StandAlone {
            return Err(anyhow!(
                "{res}: StandAlone: not trying to connect; run `repadm connect {res}`"
            ));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "{res}: wait-connect timed out after {secs} s (cstate {})",
                s.cstate
            );
            return Ok(5);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `adjust`: a resource that is not up is brought up; a running one gets the changed options
/// of the configuration file (repd re-reads it and reports each change), then is attached and
/// connected if it is Diskless or StandAlone.
fn adjust(cli: &Cli, p: &Paths, view: &NodeView, dry_run: bool) -> anyhow::Result<i32> {
    let res = &view.resource;
    if !is_up(&p.ctl(res)) {
        if dry_run {
            println!("{res}: not up: would run `repadm up {res}`");
            return Ok(0);
        }
        return crate::up::up(cli, p, view);
    }
    let config = std::fs::canonicalize(&cli.config).unwrap_or_else(|_| cli.config.clone());
    let mut conn = Conn::open(&p.ctl(res), res)?;
    let resp = conn.call(&Request::Query(Query::Adjust {
        config: Some(config.display().to_string()),
        dry_run,
    }))?;
    let code = print_response(cli, resp);
    if code != 0 || dry_run || view.diskless {
        // The witness has no disk to attach and dials no data link.
        return Ok(code);
    }
    let s = conn.status()?;
    if s.disk == rep_replicator::core::DiskState::Diskless {
        let code = admin(cli, p, res, AdminCmd::Attach)?;
        if code != 0 {
            return Ok(code);
        }
    }
    if s.cstate == ConnState::StandAlone && view.peer_address.is_some() {
        return admin(
            cli,
            p,
            res,
            AdminCmd::Connect {
                discard_my_data: false,
            },
        );
    }
    Ok(0)
}
