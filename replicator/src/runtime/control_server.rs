//! The control socket (`$RUN/RES.ctl`): one JSON request per line, one JSON response per line;
//! `events` keeps the connection and streams state changes. A bad line gets an error response
//! and never affects the daemon or other clients.

use std::rc::Rc;

use tokio_uring::net::UnixStream;

use super::control_lines::{send, RequestLines};
use super::driver::Driver;
use crate::control::fault::FaultCmd;
use crate::control::{encode_line, Event, Query, Request, Response};
use crate::core::{AdminCmd, ConnState, DiskState, Refusal, Role};

pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    driver: Rc<Driver>,
) -> std::io::Result<()> {
    let mut conns =
        rep_nbd::server::spawn_acceptor("control", move || listener.accept().map(|(s, _)| s))?;
    while let Some(std_stream) = conns.recv().await {
        let stream = UnixStream::from_std(std_stream);
        let driver = Rc::clone(&driver);
        tokio_uring::spawn(async move {
            if let Err(e) = client(stream, driver).await {
                tracing::debug!("control client: {e}");
            }
        });
    }
    Ok(())
}

/// The `data` line and its `len` raw bytes, in one write so that no other answer can come
/// between them.
async fn send_data(
    stream: &UnixStream,
    offset: u64,
    len: u32,
    data: Vec<u8>,
) -> std::io::Result<()> {
    let mut out = encode_line(&Response::Data { offset, len })
        .map_err(std::io::Error::other)?
        .into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&data);
    let (res, _) = stream.write_all(out).await;
    res
}

/// `read-data`: bytes of the data area, which starts at offset 0 of the backing device with
/// either metadata layout (internal metadata sits after `usable_bytes`, external metadata on
/// another device), so the range is checked against the usable size and never reaches the
/// metadata. Only a Secondary answers: nothing but the peer writes its disk then, and during
/// a split brain nothing at all.
async fn read_data(driver: &Rc<Driver>, offset: u64, len: u32) -> Result<Vec<u8>, String> {
    let s = driver.status();
    let (res, node) = (&s.resource, &s.node);
    if s.role != Role::Secondary {
        return Err(format!(
            "{res} is {} on {node}: its data area is read through the control socket only while it is Secondary, since an application may be writing it; run `repadm secondary {res}` on {node} first",
            s.role
        ));
    }
    if len == 0 || len > crate::control::READ_DATA_BYTES_MAX {
        return Err(format!(
            "read-data asks for {len} bytes: between 1 and {} per request",
            crate::control::READ_DATA_BYTES_MAX
        ));
    }
    let usable = driver.usable_bytes();
    if offset
        .checked_add(u64::from(len))
        .is_none_or(|end| end > usable)
    {
        return Err(format!(
            "read-data {offset}+{len} is beyond the data area of {res} on {node} ({usable} bytes)"
        ));
    }
    let disk = driver.attached_disk().map_err(|e| {
        format!(
            "{res} on {node} has no disk to read ({}); `repadm attach {res}` attaches it",
            e.message
        )
    })?;
    let (result, buf) = disk.read(offset, len).await;
    result
        .map_err(|e| format!("read {len} bytes at {offset} of {res}'s data area on {node}: {e}"))?;
    Ok(buf)
}

async fn client(stream: UnixStream, driver: Rc<Driver>) -> std::io::Result<()> {
    let mut lines = RequestLines::default();
    while let Some(req) = lines.next(&stream).await? {
        match req {
            Request::Query(Query::Events) => return stream_events(&stream, &driver).await,
            Request::Query(Query::ReadData { offset, len }) => {
                match read_data(&driver, offset, len).await {
                    Ok(data) => send_data(&stream, offset, len, data).await?,
                    Err(message) => {
                        send(
                            &stream,
                            &Response::Error {
                                message,
                                exit_code: 11,
                            },
                        )
                        .await?
                    }
                }
            }
            req => {
                let resp = handle(&driver, req).await;
                #[cfg(feature = "fault-injection")]
                super::fault::cut_power_if_lost(&driver.fault, &stream, &resp);
                send(&stream, &resp).await?;
                if driver.shutting_down.get() {
                    driver.shutdown.notify_one();
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

async fn stream_events(stream: &UnixStream, driver: &Rc<Driver>) -> std::io::Result<()> {
    let mut rx = driver.subscribe();
    let first = Event {
        version: crate::control::JSON_VERSION,
        kind: "exists".into(),
        status: Box::new(driver.status()),
    };
    let mut line = encode_line(&first).map_err(std::io::Error::other)?;
    line.push('\n');
    let (res, _) = stream.write_all(line.into_bytes()).await;
    res?;
    while let Some(status) = rx.recv().await {
        let ev = Event {
            version: crate::control::JSON_VERSION,
            kind: "change".into(),
            status: Box::new(status),
        };
        let mut line = encode_line(&ev).map_err(std::io::Error::other)?;
        line.push('\n');
        let (res, _) = stream.write_all(line.into_bytes()).await;
        res?;
    }
    Ok(())
}

fn reply(driver: &Driver, result: Result<String, Refusal>) -> Response {
    let status = Box::new(driver.status());
    match result {
        Ok(message) => Response::Ok { message, status },
        Err(refusal) => Response::Refused {
            rendered: refusal.render(&driver.view().resource),
            exit_code: refusal.exit_code(),
            refusal,
            status,
        },
    }
}

async fn handle(driver: &Rc<Driver>, req: Request) -> Response {
    match req {
        Request::Query(Query::Status) => Response::Ok {
            message: String::new(),
            status: Box::new(driver.status()),
        },
        Request::Query(Query::Events | Query::ReadData { .. }) => Response::Error {
            message: "handled by the connection loop".into(),
            exit_code: crate::core::refusal::EXIT_UNSUPPORTED,
        },
        Request::Query(Query::Down) => {
            let result = down(driver).await;
            if result.is_ok() {
                driver.shutting_down.set(true);
            }
            reply(driver, result)
        }
        Request::Query(Query::Fault { fault }) => fault_request(driver, &fault),
        Request::Query(Query::Adjust { config, dry_run }) => driver.adjust(config, dry_run).await,
        Request::Query(Query::VerifyReport) => Response::VerifyReport {
            ranges: driver.verify_ranges(),
            status: Box::new(driver.status()),
        },
        Request::Query(Query::SplitBrain) => Response::SplitBrain {
            view: Box::new(driver.split_brain_info()),
            status: Box::new(driver.status()),
        },
        Request::Admin(cmd) => {
            let result = driver.admin(cmd).await;
            reply(driver, result)
        }
    }
}

/// `repadm fault`: the test-only hook, or the refusal naming the feature and the build command.
#[cfg(feature = "fault-injection")]
fn fault_request(driver: &Driver, fault: &FaultCmd) -> Response {
    super::fault::handle(&driver.fault, || driver.status(), fault)
}

/// `repadm fault`: the test-only hook, or the refusal naming the feature and the build command.
#[cfg(not(feature = "fault-injection"))]
fn fault_request(_driver: &Driver, fault: &FaultCmd) -> Response {
    refuse_fault(fault)
}

/// A repd without the `fault-injection` feature answers every fault request with this.
#[cfg(not(feature = "fault-injection"))]
fn refuse_fault(fault: &FaultCmd) -> Response {
    tracing::warn!("refusing {fault:?}: built without the fault-injection feature");
    crate::control::fault::not_built()
}

#[cfg(all(test, not(feature = "fault-injection")))]
mod tests {
    use super::*;
    use crate::control::fault::{FaultOp, FAULT_BUILD_COMMAND};

    #[test]
    fn without_the_feature_every_fault_request_is_refused_with_the_build_command() {
        for cmd in [
            FaultCmd::DiskError {
                op: FaultOp::Any,
                offset: None,
                length: None,
                count: Some(1),
            },
            FaultCmd::VolatileCache { on: true },
            FaultCmd::PowerLoss,
            FaultCmd::Clear,
        ] {
            match refuse_fault(&cmd) {
                Response::Error { message, exit_code } => {
                    assert_ne!(exit_code, 0, "repadm must exit non-zero");
                    assert!(message.contains("fault-injection feature"), "{message}");
                    assert!(message.contains(FAULT_BUILD_COMMAND), "{message}");
                }
                other => panic!("{cmd:?} answered {other:?}"),
            }
        }
    }
}

/// `drbdsetup down`: demote (fails if open), disconnect, detach. Stops at the first refusal.
async fn down(driver: &Rc<Driver>) -> Result<String, Refusal> {
    let s = driver.status();
    if s.role == Role::Primary {
        driver.admin(AdminCmd::Secondary).await?;
    }
    if s.cstate != ConnState::StandAlone {
        driver.admin(AdminCmd::Disconnect { force: false }).await?;
    }
    if s.disk != DiskState::Diskless {
        driver.admin(AdminCmd::Detach { force: false }).await?;
    }
    Ok(format!("{} is down", driver.view().resource))
}
