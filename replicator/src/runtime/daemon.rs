//! `repd`: the per-resource daemon. Parses the config, attaches the backing device, listens
//! on the control and NBD sockets, and runs the engine until `repadm down` or SIGTERM.
//! It runs in the foreground; `repadm up` starts it in its own process group with output
//! going to `$RUN/RES.log`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use clap::Parser;

use super::control_server;
use super::driver::Driver;
use super::link::LinkSettings;
use super::nbd_backend::NbdBackend;
use super::paths::{RunPaths, CONFIG_DEFAULT, RUN_DIR_DEFAULT};
use super::port::{spawn_listener, wait_for_stop};
use super::start_error::{render, StartError};
use super::surface::status::{regenerate_proc_status, write_atomic, write_status_files};
use crate::core::{AdminCmd, Engine, EngineConfig};

#[derive(Debug, Parser)]
#[command(
    name = "repd",
    version,
    about = "rep per-resource daemon (started by `repadm up`)"
)]
pub struct Args {
    /// Resource to run, as named in the config.
    #[arg(long, short = 'r')]
    pub resource: String,
    /// Configuration file (DRBD 8.4 syntax).
    #[arg(short = 'c', long, env = "REP_CONFIG", default_value = CONFIG_DEFAULT)]
    pub config: PathBuf,
    /// This node's name: picks the `on NAME` section (default: the host name).
    #[arg(long, env = "REP_NODE")]
    pub node: Option<String>,
    /// Directory for sockets, pid and status files.
    #[arg(long, env = "REP_RUN_DIR", default_value = RUN_DIR_DEFAULT)]
    pub run_dir: PathBuf,
    /// Stay in the foreground (repd always does; accepted for systemd unit files).
    #[arg(long)]
    pub foreground: bool,
    /// Seed for generation UUIDs (default: from the OS). For reproducible tests.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Exit code for configuration or attach errors (drbdadm's E_CONFIG_INVALID).
pub const EXIT_CONFIG: i32 = 10;

pub fn node_name(explicit: Option<&str>) -> Result<String, StartError> {
    if let Some(n) = explicit {
        return Ok(n.to_string());
    }
    let host = nix::unistd::gethostname().map_err(StartError::HostName)?;
    Ok(host.to_string_lossy().into_owned())
}

fn os_seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    u64::from(std::process::id()) ^ 0x5eed_5eed_5eed_5eed
}

/// Refuse to start a second daemon for the same resource in the same run dir.
fn check_not_running(paths: &RunPaths) -> Result<(), StartError> {
    let Ok(text) = std::fs::read_to_string(paths.pid()) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    if crate::control::process_alive(pid) && pid != std::process::id() as i32 {
        return Err(StartError::AlreadyUp {
            resource: paths.resource.clone(),
            pid,
            pid_file: paths.pid(),
        });
    }
    Ok(())
}

fn remove_stale(path: &Path) {
    let _ = std::fs::remove_file(path);
}

pub fn main() -> i32 {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("repd: error: {}", render(&e));
            EXIT_CONFIG
        }
    }
}

fn run(args: Args) -> Result<i32, StartError> {
    let config = rep_resources::parse_file(&args.config).map_err(|source| StartError::Config {
        path: args.config.clone(),
        source,
    })?;
    let node = node_name(args.node.as_deref())?;
    let view = config.node_view(&args.resource, &node)?;
    super::sockets::prepare_run_dir(&args.run_dir)?;
    let paths = RunPaths::new(&args.run_dir, &view.resource);
    check_not_running(&paths)?;
    // Handlers get an absolute DRBD_CONF, whatever directory they run in.
    let config_path = std::fs::canonicalize(&args.config).unwrap_or_else(|_| args.config.clone());
    if view.diskless {
        return super::witness_daemon::run(view, paths, config_path);
    }
    let cfg = EngineConfig::from_view(&view);
    let seed = args.seed.unwrap_or_else(os_seed);
    let engine = Engine::new(cfg, seed);
    // Certificates and keys are read (and their modes checked) before anything starts.
    let nbd_tls = super::tls::nbd_policy(&view)?;
    super::tls::install_link_tls(super::tls::link_tls(&view)?);
    tokio_uring::start(async move { serve(engine, view, paths, config_path, seed, nbd_tls).await })
}

pub(crate) fn link_settings(view: &rep_resources::NodeView) -> Option<LinkSettings> {
    Some(LinkSettings {
        my_addr: view.address?,
        peer_addr: view.peer_address?,
        node: view.node.clone(),
        connect_int: std::time::Duration::from_secs(u64::from(view.net.connect_int_s.max(1))),
    })
}

async fn serve(
    engine: Engine,
    view: rep_resources::NodeView,
    paths: RunPaths,
    config_path: PathBuf,
    seed: u64,
    nbd_tls: rep_nbd::server::TlsPolicy,
) -> Result<i32, StartError> {
    let nbd_listen = view.nbd_listen;
    let metrics_listen = view.metrics_listen;
    let settings = link_settings(&view);
    let peer_listener = match &settings {
        Some(s) => Some(std::net::TcpListener::bind(s.my_addr).map_err(|source| {
            StartError::PeerListen {
                addr: s.my_addr,
                node: view.node.clone(),
                source,
            }
        })?),
        None => None,
    };
    let driver = Driver::new(
        engine,
        view,
        paths.clone(),
        config_path,
        settings,
        seed ^ 0x5eed,
    );
    if let Some(l) = peer_listener {
        driver.listen_for_peer(l);
    }
    tokio_uring::spawn(Rc::clone(&driver).run_timers());
    let busy_poll_us = driver.view().busy_poll_us;
    if busy_poll_us > 0 {
        driver.start_busy_poll(std::time::Duration::from_micros(u64::from(busy_poll_us)));
    }
    driver.follow_resync_after();
    let threads =
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1));
    let hasher =
        super::hasher::Hasher::start(driver.feeder(), threads).map_err(StartError::Hasher)?;
    let _ = driver.hasher.set(hasher);
    if let Err(refusal) = driver.admin(AdminCmd::Attach).await {
        return Err(StartError::Attach {
            resource: paths.resource.clone(),
            refusal,
        });
    }
    if driver.view().peer_address.is_some() {
        if let Err(refusal) = driver
            .admin(AdminCmd::Connect {
                discard_my_data: false,
            })
            .await
        {
            tracing::warn!("{}", refusal.render(&paths.resource));
        }
    }
    super::witness_link::start(&driver);
    remove_stale(&paths.ctl());
    remove_stale(&paths.nbd());
    let security = driver.view().security.clone();
    let ctl = super::sockets::bind_unix(
        &paths.ctl(),
        security.control_socket_group.as_deref(),
        "control-socket-group",
    )?;
    let nbd = super::sockets::bind_unix(
        &paths.nbd(),
        security.nbd_socket_group.as_deref(),
        "nbd-socket-group",
    )?;
    let backend: Rc<dyn rep_nbd::server::BlockBackend> = Rc::new(NbdBackend {
        driver: Rc::clone(&driver),
    });
    if let Some(addr) = nbd_listen {
        let tcp = std::net::TcpListener::bind(addr)
            .map_err(|source| StartError::NbdListen { addr, source })?;
        spawn_listener(
            "NBD TCP listener",
            rep_nbd::server::serve_tcp_tls(tcp, Rc::clone(&backend), nbd_tls),
        );
    }
    spawn_listener("NBD listener", rep_nbd::server::serve_unix(nbd, backend));
    if let Some(addr) = metrics_listen {
        let tcp = std::net::TcpListener::bind(addr)
            .map_err(|source| StartError::MetricsListen { addr, source })?;
        spawn_listener(
            "metrics listener",
            super::metrics::serve(tcp, {
                let d = Rc::clone(&driver);
                Rc::new(move || super::metrics::render(&d.metrics, &d.status()))
            }),
        );
    }
    spawn_listener(
        "control listener",
        control_server::serve(ctl, Rc::clone(&driver)),
    );
    write_atomic(&paths.pid(), format!("{}\n", std::process::id()).as_bytes()).map_err(
        |source| StartError::PidFile {
            path: paths.pid(),
            source,
        },
    )?;
    driver.publish_state();
    tracing::info!(
        resource = %paths.resource, node = %driver.view().node,
        "up: NBD export at {}, control at {}", paths.nbd_uri(), paths.ctl().display()
    );
    let (bell, down) = (Rc::clone(&driver), Rc::clone(&driver));
    wait_for_stop(async move { bell.shutdown.notified().await }, async move {
        signal_down(&down).await
    })
    .await;
    // A normal exit does not cut the power: the fault hook's volatile cache reaches the disk.
    #[cfg(feature = "fault-injection")]
    driver.fault.write_back_on_exit();
    remove_stale(&paths.ctl());
    remove_stale(&paths.nbd());
    remove_stale(&paths.pid());
    driver.finish_status_files();
    remove_stale(&paths.status_json());
    let mut s = driver.status();
    s.pid = 0;
    let _ = write_status_files(&paths, &s);
    remove_stale(&paths.status_json());
    let _ = regenerate_proc_status(&paths);
    tracing::info!(resource = %paths.resource, "down");
    Ok(0)
}

async fn signal_down(driver: &Rc<Driver>) {
    let _ = driver.admin(AdminCmd::Secondary).await;
    let _ = driver.admin(AdminCmd::Detach { force: true }).await;
}
