//! How repadm ends: drbdadm's exit codes, and a daemon's answer printed with the exit code for
//! its outcome. Every command module uses these; none of them needs `commands.rs` for it.

use rep_replicator::control::Response;

use crate::cli::Cli;

/// drbdadm's exit codes.
pub const EXIT_USAGE: i32 = 1;
pub const EXIT_CONFIG: i32 = 10;
pub const EXIT_EXEC: i32 = 20;

/// Print a daemon's answer; the exit code is drbdadm's for the outcome.
pub fn print_response(cli: &Cli, resp: Response) -> i32 {
    match resp {
        Response::Ok { message, status } => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"result": "ok", "message": message, "status": status})
                );
            }
            0
        }
        Response::Refused {
            rendered,
            exit_code,
            refusal,
            status,
        } => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"result": "refused", "message": rendered, "refusal": refusal, "status": status})
                );
            }
            eprintln!("{rendered}");
            exit_code
        }
        Response::Error { message, exit_code } => {
            eprintln!("repadm: {message}");
            exit_code
        }
        Response::Adjusted { report, status } => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"result": "adjusted", "resource": status.resource, "dry_run": report.dry_run, "changes": report.changes, "exit_code": report.exit_code, "status": status})
                );
            } else {
                print!("{}", report.text(&status.resource));
            }
            report.exit_code
        }
        Response::SplitBrain { view, .. } => {
            println!("{}", serde_json::json!(view));
            0
        }
        Response::VerifyReport { ranges, .. } => {
            println!("{}", serde_json::json!(ranges));
            0
        }
        Response::Data { offset, len } => {
            // Only `Conn::read_data` asks for data, and it reads the bytes behind the line.
            eprintln!("repadm: unexpected data answer ({offset}+{len})");
            20
        }
    }
}
