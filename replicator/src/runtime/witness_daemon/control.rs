//! The witness's control socket: the same line protocol as a data node's
//! (runtime/control_server.rs), answering what a witness has — `status`, `events`, `down` —
//! and refusing the rest with the reason, naming where to run it instead.

use std::rc::Rc;

use tokio_uring::net::UnixStream;

use super::Witness;
use crate::control::adjust::{Change, How, Report};
use crate::control::{Event, Query, Request, Response};
use crate::runtime::control_lines::{send, RequestLines};

pub(super) async fn serve(
    listener: std::os::unix::net::UnixListener,
    w: Rc<Witness>,
) -> std::io::Result<()> {
    let mut conns =
        rep_nbd::server::spawn_acceptor("control", move || listener.accept().map(|(s, _)| s))?;
    while let Some(std_stream) = conns.recv().await {
        let stream = UnixStream::from_std(std_stream);
        let w = Rc::clone(&w);
        tokio_uring::spawn(async move {
            if let Err(e) = client(stream, w).await {
                tracing::debug!("control client: {e}");
            }
        });
    }
    Ok(())
}

fn answer(w: &Witness, req: Request) -> Response {
    let (res, node) = (&w.view.resource, &w.view.node);
    match req {
        Request::Query(Query::Status) => Response::Ok {
            message: String::new(),
            status: Box::new(w.status()),
        },
        Request::Query(Query::Down) => Response::Ok {
            message: "down".into(),
            status: Box::new(w.status()),
        },
        Request::Query(Query::Adjust { config, dry_run }) => adjust(w, config, dry_run),
        other => {
            let what = match &other {
                Request::Admin(cmd) => format!("{cmd:?}"),
                Request::Query(q) => format!("{q:?}"),
            };
            Response::Error {
                message: format!(
                    "{res} on {node}: this node is the witness (`disk none;`): it holds no data and has no role to change, so `{}` has nothing to act on here; run it on a data node",
                    what.split([' ', '{']).next().unwrap_or_default().to_lowercase()
                ),
                exit_code: crate::core::refusal::EXIT_UNSUPPORTED,
            }
        }
    }
}

/// `adjust` on the witness: an unchanged file is "no changes" (a runbook runs `adjust all` on
/// every host); a change is not applied live — the witness takes it at its next start.
fn adjust(w: &Witness, config: Option<String>, dry_run: bool) -> Response {
    let path = config.map_or_else(|| w.config_path.clone(), std::path::PathBuf::from);
    let changes = match crate::control::adjust::reread(&path, &w.view) {
        Ok((_, changes)) => changes,
        Err(message) => {
            return Response::Error {
                message,
                exit_code: 10,
            }
        }
    };
    let reason = format!(
        "the witness takes a changed configuration when it starts: `repadm down {0}` and `repadm up {0}` on {1} (the data nodes keep quorum through each other meanwhile)",
        w.view.resource, w.view.node
    );
    let changes: Vec<Change> = changes
        .into_iter()
        .map(|c| Change {
            how: How::Refused,
            reason: Some(reason.clone()),
            ..c
        })
        .collect();
    let exit_code = if changes.is_empty() { 0 } else { 10 };
    Response::Adjusted {
        report: Report {
            dry_run,
            changes,
            exit_code,
        },
        status: Box::new(w.status()),
    }
}

async fn client(stream: UnixStream, w: Rc<Witness>) -> std::io::Result<()> {
    let mut lines = RequestLines::default();
    while let Some(req) = lines.next(&stream).await? {
        match req {
            Request::Query(Query::Events) => return events(&stream, &w).await,
            req => {
                let down = matches!(req, Request::Query(Query::Down));
                send(&stream, &answer(&w, req)).await?;
                if down {
                    w.shutdown.notify_one();
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

async fn events(stream: &UnixStream, w: &Rc<Witness>) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    w.subscribers.borrow_mut().push(tx);
    let mut kind = "exists";
    let mut status = w.status();
    loop {
        let ev = Event {
            version: crate::control::JSON_VERSION,
            kind: kind.into(),
            status: Box::new(status),
        };
        send(stream, &ev).await?;
        kind = "change";
        match rx.recv().await {
            Some(s) => status = s,
            None => return Ok(()),
        }
    }
}
