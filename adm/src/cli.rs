//! Command line (clap). Names and flags follow drbdadm 8.4.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The exit codes of repadm (docs/exit-codes.md has the same table with examples).
pub const EXIT_CODES_HELP: &str = "\
Exit codes (drbdadm's where drbdadm has one; docs/exit-codes.md has examples):
  0   success (also: nothing to do)
  1   usage error; resource not defined for this host
  2   command line syntax error (clap)
  5   wait-connect, wait-sync or verify --wait timed out; outdate on a disk below Outdated
  10  configuration invalid or unusable (parse error, resource not up, attach/metadata
      failure, adjust asked for a change a running resource cannot make)
  11  state change refused (State change failed: (-N) ...); adjust refused by the state;
      wait-sync cannot end (StandAlone or Diskless); verify --wait lost the connection
  16  needs a local disk (SS_NO_LOCAL_DISK)
  17  needs UpToDate data (SS_NO_UP_TO_DATE_DISK), e.g. primary without --force
  20  other error: daemon unreachable mid-command, I/O error, wait-connect on a
      StandAlone resource, fault hook not built in";

#[derive(Debug, Parser)]
#[command(
    name = "repadm",
    version,
    about = "Administer rep replicated block devices (drbdadm-compatible)",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Configuration file (DRBD 8.4 syntax; may `include` other files).
    #[arg(
        short = 'c',
        long = "config-file",
        visible_alias = "config",
        global = true,
        env = "REP_CONFIG",
        default_value = "/etc/rep/rep.conf"
    )]
    pub config: PathBuf,
    /// This node's name: picks the `on NAME` section (default: the host name).
    #[arg(long, global = true, env = "REP_NODE")]
    pub node: Option<String>,
    /// Directory of the daemons' sockets, pid and status files.
    #[arg(long, global = true, env = "REP_RUN_DIR", default_value = "/run/rep")]
    pub run_dir: PathBuf,
    /// Machine-readable output (JSON) where a command prints something.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Print the normalized configuration (like `drbdadm dump`).
    Dump {
        /// Resource name (default: all).
        res: Option<String>,
    },
    /// Write fresh metadata (superblock, activity log, bitmap) for the resource.
    CreateMd {
        res: String,
        /// Overwrite existing metadata (destroys the sync state).
        #[arg(long)]
        force: bool,
    },
    /// Start the resource's daemon: attach the disk, export NBD, connect to the peer.
    Up { res: String },
    /// Demote, disconnect, detach and stop the daemon.
    Down { res: String },
    /// Attach the backing disk and its metadata to the running resource (leave Diskless).
    Attach { res: String },
    /// Write the metadata and release the backing disk (the node goes Diskless).
    Detach {
        res: String,
        /// Do not wait for I/O in flight (the activity log is replayed on the next attach).
        #[arg(long)]
        force: bool,
    },
    /// Promote to Primary (the NBD export starts serving).
    Primary {
        res: String,
        /// Consider local data UpToDate even if it is not (initial promotion, disaster recovery).
        #[arg(long, alias = "overwrite-data-of-peer")]
        force: bool,
    },
    /// Demote to Secondary (fails while NBD clients are connected).
    Secondary { res: String },
    /// Connect to the peer (leave StandAlone) and resync what differs.
    Connect {
        res: String,
        /// Split-brain victim: resync from the peer, discarding local changes.
        #[arg(long)]
        discard_my_data: bool,
    },
    /// Drop the connection to the peer and stay StandAlone.
    Disconnect {
        res: String,
        /// Accepted for drbdadm compatibility (a disconnect never waits).
        #[arg(long)]
        force: bool,
    },
    /// Print `local/peer` roles.
    Role { res: String },
    /// Print the connection state.
    Cstate { res: String },
    /// Print `local/peer` disk states.
    Dstate { res: String },
    /// Show state (DRBD 9 style; `--proc` for the /proc/drbd 8.4 layout, `--json`).
    Status {
        #[arg(default_value = "all")]
        res: String,
        /// The /proc/drbd layout of DRBD 8.4.
        #[arg(long)]
        proc: bool,
    },
    /// Print the on-disk metadata (resource must be down).
    DumpMd { res: String },
    /// Print the generation identifiers in one line.
    GetGi { res: String },
    /// Print the generation identifiers with an explanation.
    ShowGi { res: String },
    /// Mark the local disk Outdated.
    Outdate { res: String },
    /// Start a new data generation (a new current UUID).
    NewCurrentUuid {
        res: String,
        /// Also clear the bitmap: two freshly created, connected disks skip the initial sync.
        #[arg(long)]
        clear_bitmap: bool,
    },
    /// Discard local data: full sync from the peer.
    Invalidate { res: String },
    /// Discard the peer's data: full sync to the peer.
    InvalidateRemote { res: String },
    /// Online verify against the peer (starts it and returns, as drbdadm does; --wait waits
    /// for the result with a progress bar on a terminal).
    Verify {
        res: String,
        /// Wait until the verify finishes and print how many blocks were out of sync.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 5).
        #[arg(long)]
        timeout: Option<u64>,
        /// Wait, then write the out-of-sync ranges found to FILE (JSON).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Wait, then resync exactly the blocks found, from the Primary (this node if neither
        /// or only this one is Primary), without a disconnect/connect; wait for it to end.
        #[arg(long)]
        fix: bool,
        /// With --fix: resync from this host of the resource (its name in the .res file),
        /// which must be UpToDate; the other node must not be Primary.
        #[arg(long, value_name = "NODE", requires = "fix")]
        from: Option<String>,
    },
    /// Wait until no resync is running and the local disk is UpToDate (progress bar on a
    /// terminal; exit 5 on timeout, 11 when it cannot happen: StandAlone or Diskless).
    WaitSync {
        res: String,
        /// Give up after this many seconds (default: wait for ever).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Hold the running resync (PausedSyncS/PausedSyncT) until `resume-sync`.
    PauseSync { res: String },
    /// Let a resync held by `pause-sync` go on.
    ResumeSync { res: String },
    /// Thaw application I/O frozen by fencing (resource-and-stonith) when fence-peer could not
    /// outdate the peer; only if you know the peer cannot be Primary.
    ResumeIo { res: String },
    /// Wait until connected (honours wfc-timeout / degr-wfc-timeout, or --timeout seconds).
    WaitConnect {
        res: String,
        /// Give up after this many seconds (instead of the configured timeouts).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Stream state changes (drbdsetup events2 style; --json for raw JSON).
    Events {
        #[arg(default_value = "all")]
        res: String,
        /// Print the current state and exit.
        #[arg(long)]
        now: bool,
    },
    /// Apply the configuration file to the running resource: changed net and disk options
    /// (live where possible, reconnecting where the peers must agree), a moved disk (detach +
    /// attach), then up, attach and connect as needed. Prints one line per changed option.
    Adjust {
        res: String,
        /// Only print what would change.
        #[arg(short = 'd', long)]
        dry_run: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the repadm(8) man page, or write it and one page per subcommand into --dir.
    Man {
        /// Write repadm.8 and repadm-COMMAND.8 files here instead of printing repadm.8.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Split-brain tools: what each side changed (`show`), the recovery in the right order
    /// (`resolve --keep NODE`, optionally saving the victim's blocks), and its undo (`restore`).
    SplitBrain {
        #[command(subcommand)]
        cmd: SbCmd,
    },
    /// Test-only fault hook: disk errors, a volatile write cache, a slow meta disk, power loss
    /// (needs a repd built with `--features rep-replicator/fault-injection`).
    Fault {
        res: String,
        #[command(subcommand)]
        what: FaultWhat,
    },
}

#[derive(Debug, Subcommand)]
pub enum FaultWhat {
    /// Fail the next matching operations on the backing device with EIO.
    DiskError {
        #[arg(value_enum)]
        op: FaultOpArg,
        /// Only operations overlapping this byte range of the data area (with --length).
        #[arg(long, requires = "length")]
        offset: Option<u64>,
        /// Length in bytes of the range (with --offset).
        #[arg(long, requires = "offset")]
        length: Option<u64>,
        /// Fail this many operations, then stop (default: until `clear`).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Keep writes not covered by a completed flush in memory only (`off` writes them out).
    VolatileCache {
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Make every metadata write take MS milliseconds longer (a slow meta disk; 0: none).
    MetaDelay { ms: u64 },
    /// Make every data write on the backing device take MS milliseconds longer (a slow data
    /// disk; 0: none).
    DiskDelay { ms: u64 },
    /// Drop the volatile cache and end repd at once, as a power cut would.
    PowerLoss,
    /// No disk errors, no delays, volatile cache off (its contents written out).
    Clear,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FaultOpArg {
    Read,
    Write,
    Flush,
    Any,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum SbCmd {
    /// Print the common generation and, for each side, the blocks it changed since (count,
    /// MiB, ranges), its role at the split and its last write; then the blocks both changed.
    Show {
        res: String,
        /// The other node's run directory (its control socket), when reachable from here.
        #[arg(long, env = "REP_PEER_RUN_DIR")]
        peer_run_dir: Option<PathBuf>,
    },
    /// Keep NODE's data: demote the other node, connect it with --discard-my-data, connect
    /// NODE. Runs the other node's steps too if its control socket is reachable, else prints
    /// them.
    Resolve {
        res: String,
        /// The node whose data survives.
        #[arg(long)]
        keep: String,
        /// Only print the steps.
        #[arg(long)]
        dry_run: bool,
        /// Copy every block the resync will overwrite on the victim into DIR first
        /// (blocks.bin + manifest.json), for `split-brain restore`.
        #[arg(long, value_name = "DIR")]
        save: Option<PathBuf>,
        /// The other node's run directory (its control socket), when reachable from here.
        #[arg(long, env = "REP_PEER_RUN_DIR")]
        peer_run_dir: Option<PathBuf>,
    },
    /// Write blocks saved by `resolve --save` back through this node's export (it must be
    /// Primary; the writes replicate to the peer).
    Restore {
        res: String,
        dir: PathBuf,
        /// Only the blocks the victim itself changed (not those only the survivor changed).
        #[arg(long)]
        only_victim_changes: bool,
    },
}
