//! repadm: administer rep resources. Mirrors drbdadm 8.4 (docs/drbd-semantics.md §13) so that a
//! runbook written for `drbdadm` works with `repadm` in its place.

mod answer;
mod cli;
mod commands;
mod ctl;
mod docgen;
mod events;
mod metacmd;
mod nbdclient;
mod progress;
mod splitbrain;
mod up;
mod verifycmd;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("repadm: {e:#}");
            commands::exit_code_of(&e)
        }
    };
    std::process::exit(code);
}
