//! Prometheus metrics (`metrics-listen ADDR:PORT;` in the `on` section): counters kept by the
//! driver on the I/O path, and a minimal HTTP/1.1 responder serving them at `GET /metrics` in
//! the text exposition format 0.0.4.
//!
//! The hot path only adds to `Cell`s: the driver is single-threaded, so there is no lock and
//! no allocation per request. Everything else (states, resync progress, handler runs) is read
//! when a scrape comes. The responder never reads more than one small request per connection
//! and never keeps more than a few connections, so a scraper cannot make repd grow.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_uring::net::TcpStream;

use crate::control::Status;
use crate::core::{ClientOp, ConnState, DiskState, Role};

/// Operation classes of client requests, as the `op` label says them.
pub const OPS: [&str; 5] = ["read", "write", "flush", "trim", "zero"];

pub fn op_index(op: &ClientOp) -> usize {
    match op {
        ClientOp::Read { .. } => 0,
        ClientOp::Write { .. } => 1,
        ClientOp::Flush => 2,
        ClientOp::Trim { .. } => 3,
        ClientOp::WriteZeroes { .. } => 4,
    }
}

/// Upper bounds of the write latency histogram, in seconds (25 µs … 10 s).
pub const LATENCY_BOUNDS_S: [f64; 19] = [
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Same bounds in nanoseconds, for the hot path (no float math per request).
const LATENCY_BOUNDS_NS: [u64; 19] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    7_500_000_000,
    10_000_000_000,
];

#[derive(Default)]
struct OpCounter {
    requests: Cell<u64>,
    bytes: Cell<u64>,
    errors: Cell<u64>,
}

/// Per-bucket (not cumulative) counts; the last slot is +Inf.
struct Histogram {
    buckets: [Cell<u64>; 20],
    sum_ns: Cell<u64>,
    count: Cell<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Default::default(),
            sum_ns: Cell::new(0),
            count: Cell::new(0),
        }
    }
}

/// `(handler name, exit status)` → runs. Written by the handler threads, hence the lock (a
/// handler run is rare and never on the I/O path).
pub type HandlerRuns = Arc<Mutex<BTreeMap<(String, String), u64>>>;

#[derive(Default)]
pub struct Metrics {
    ops: [OpCounter; 5],
    write_latency: Histogram,
    pub handler_runs: HandlerRuns,
    /// Bytes written to the peer's sockets, frames whole (headers, acks, pings included).
    link_sent_bytes: Cell<u64>,
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

impl Metrics {
    /// `n` bytes went out on a peer socket.
    pub fn link_sent(&self, n: usize) {
        bump(&self.link_sent_bytes, n as u64);
    }

    /// One client request completed (`ok` = without error).
    pub fn request_done(&self, op: usize, bytes: u32, ok: bool, latency: Duration) {
        let Some(c) = self.ops.get(op) else { return };
        bump(&c.requests, 1);
        if ok {
            bump(&c.bytes, u64::from(bytes));
        } else {
            bump(&c.errors, 1);
        }
        if op == 1 {
            let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            let h = &self.write_latency;
            let slot = LATENCY_BOUNDS_NS
                .iter()
                .position(|&b| ns <= b)
                .unwrap_or(LATENCY_BOUNDS_NS.len());
            bump(&h.buckets[slot], 1);
            bump(&h.sum_ns, ns);
            bump(&h.count, 1);
        }
    }
}

const CSTATES: [ConnState; 24] = {
    use ConnState::*;
    [
        StandAlone,
        Disconnecting,
        Unconnected,
        Timeout,
        BrokenPipe,
        NetworkFailure,
        ProtocolError,
        TearDown,
        WFConnection,
        WFReportParams,
        Connected,
        StartingSyncS,
        StartingSyncT,
        WFBitMapS,
        WFBitMapT,
        WFSyncUUID,
        SyncSource,
        SyncTarget,
        VerifyS,
        VerifyT,
        PausedSyncS,
        PausedSyncT,
        Ahead,
        Behind,
    ]
};

const DSTATES: [DiskState; 9] = {
    use DiskState::*;
    [
        Diskless,
        Attaching,
        Failed,
        Negotiating,
        Inconsistent,
        Outdated,
        DUnknown,
        Consistent,
        UpToDate,
    ]
};

const ROLES: [Role; 3] = [Role::Unknown, Role::Primary, Role::Secondary];

/// A label value as the exposition format wants it (backslash, quote, newline escaped).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, extra: &str, value: impl std::fmt::Display) {
        let sep = if extra.is_empty() { "" } else { "," };
        let _ = writeln!(self.text, "{name}{{{}{sep}{extra}}} {value}", self.labels);
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
    fn one_hot<T: PartialEq + std::fmt::Display>(
        &mut self,
        name: &str,
        label: &str,
        help: &str,
        all: &[T],
        now: &T,
    ) {
        self.family(name, "gauge", help);
        for s in all {
            self.sample(name, &format!("{label}=\"{s}\""), u8::from(s == now));
        }
    }
}

fn syncing(c: ConnState) -> bool {
    use ConnState::*;
    matches!(c, SyncSource | SyncTarget | PausedSyncS | PausedSyncT)
}

/// The whole exposition for one scrape.
pub fn render(m: &Metrics, s: &Status) -> String {
    let mut o = Out {
        text: String::with_capacity(8192),
        labels: format!(
            "resource=\"{}\",node=\"{}\"",
            escape(&s.resource),
            escape(&s.node)
        ),
    };
    o.family(
        "rep_io_requests_total",
        "counter",
        "Client (NBD) requests completed, by operation.",
    );
    for (i, op) in OPS.iter().enumerate() {
        o.sample(
            "rep_io_requests_total",
            &format!("op=\"{op}\""),
            m.ops[i].requests.get(),
        );
    }
    o.family(
        "rep_io_bytes_total",
        "counter",
        "Bytes of client requests completed without error, by operation (flush: 0).",
    );
    for (i, op) in OPS.iter().enumerate() {
        o.sample(
            "rep_io_bytes_total",
            &format!("op=\"{op}\""),
            m.ops[i].bytes.get(),
        );
    }
    o.family(
        "rep_io_errors_total",
        "counter",
        "Client requests completed with an error, by operation.",
    );
    for (i, op) in OPS.iter().enumerate() {
        o.sample(
            "rep_io_errors_total",
            &format!("op=\"{op}\""),
            m.ops[i].errors.get(),
        );
    }
    let h = &m.write_latency;
    o.family(
        "rep_write_latency_seconds",
        "histogram",
        "Client write latency, from the request's arrival to its reply (replication included).",
    );
    let mut cumulative = 0u64;
    for (i, bound) in LATENCY_BOUNDS_S.iter().enumerate() {
        cumulative += h.buckets[i].get();
        o.sample(
            "rep_write_latency_seconds_bucket",
            &format!("le=\"{bound:e}\""),
            cumulative,
        );
    }
    cumulative += h.buckets[LATENCY_BOUNDS_S.len()].get();
    o.sample(
        "rep_write_latency_seconds_bucket",
        "le=\"+Inf\"",
        cumulative,
    );
    o.sample(
        "rep_write_latency_seconds_sum",
        "",
        h.sum_ns.get() as f64 / 1e9,
    );
    o.sample("rep_write_latency_seconds_count", "", h.count.get());

    let c = &s.counters;
    o.one(
        "rep_out_of_sync_bytes",
        "gauge",
        "Bytes marked out of sync in the bitmap (oos).",
        s.oos_kib * 1024,
    );
    let sync = s.sync.as_ref().filter(|_| syncing(s.cstate));
    o.one(
        "rep_resync_running",
        "gauge",
        "1 while a resync runs (also paused).",
        u8::from(sync.is_some()),
    );
    o.one(
        "rep_resync_total_bytes",
        "gauge",
        "Bytes the running resync set out to copy (0 when none runs).",
        sync.map_or(0, |p| p.total_kib * 1024),
    );
    o.one(
        "rep_resync_left_bytes",
        "gauge",
        "Bytes the running resync has still to copy (0 when none runs).",
        sync.map_or(0, |p| p.left_kib * 1024),
    );
    o.one(
        "rep_resync_rate_bytes_per_second",
        "gauge",
        "Average rate of the running resync since it started.",
        sync.map_or(0, |p| p.avg_kib_s * 1024),
    );
    o.one(
        "rep_resync_current_rate_bytes_per_second",
        "gauge",
        "Rate of the running resync over the last few seconds.",
        sync.map_or(0, |p| p.speed_kib_s * 1024),
    );
    o.one(
        "rep_resync_eta_seconds",
        "gauge",
        "Seconds the running resync still needs at its current rate (0 when none runs).",
        sync.map_or(0, |p| p.eta_s),
    );
    let limit = sync
        .and_then(|p| p.limit.as_ref())
        .map_or("none", |l| l.by.name());
    o.one_hot(
        "rep_resync_limited_by",
        "by",
        "What limits the running resync now, one-hot (none: no resync, or its first second).",
        &std::iter::once("none")
            .chain(crate::core::Limit::ALL.iter().map(|l| l.name()))
            .collect::<Vec<_>>(),
        &limit,
    );
    o.one(
        "rep_resync_want_rate_bytes_per_second",
        "gauge",
        "Rate the resync controller (or resync-rate) allows now.",
        sync.and_then(|p| p.want_kib_s).map_or(0, |w| w * 1024),
    );
    let verify = s
        .sync
        .as_ref()
        .filter(|_| matches!(s.cstate, ConnState::VerifyS | ConnState::VerifyT));
    o.one(
        "rep_verify_left_bytes",
        "gauge",
        "Bytes the running online verify has still to compare (0 when none runs).",
        verify.map_or(0, |p| p.left_kib * 1024),
    );
    o.one(
        "rep_verify_out_of_sync_blocks",
        "gauge",
        "4 KiB blocks found out of sync by the last online verify.",
        s.verify_oos_blocks.unwrap_or(0),
    );
    o.one(
        "rep_quorum",
        "gauge",
        "1 while this node has quorum (always 1 while quorum is off).",
        u64::from(s.quorum),
    );
    o.one(
        "rep_suspended_quorum",
        "gauge",
        "1 while application I/O is frozen for lack of quorum (on-no-quorum suspend-io).",
        u64::from(s.suspended_quorum),
    );
    o.one(
        "rep_split_brain",
        "gauge",
        "1 from the detection of a split brain until a handshake resolves it.",
        u64::from(s.split_brain),
    );
    o.one_hot(
        "rep_connection_state",
        "state",
        "Connection state (cstate), one-hot: 1 for the current state.",
        &CSTATES,
        &s.cstate,
    );
    o.one_hot(
        "rep_disk_state",
        "state",
        "Local disk state, one-hot.",
        &DSTATES,
        &s.disk,
    );
    o.one_hot(
        "rep_peer_disk_state",
        "state",
        "The peer's disk state as this node knows it, one-hot.",
        &DSTATES,
        &s.peer_disk,
    );
    o.one_hot(
        "rep_role",
        "role",
        "This node's role, one-hot.",
        &ROLES,
        &s.role,
    );
    o.one_hot(
        "rep_peer_role",
        "role",
        "The peer's role, one-hot.",
        &ROLES,
        &s.peer_role,
    );
    o.one(
        "rep_peer_sent_bytes_total",
        "counter",
        "Data sent to the peer (ns, KiB granularity).",
        c.ns_kib * 1024,
    );
    o.one(
        "rep_peer_link_sent_bytes_total",
        "counter",
        "Bytes written to the peer's sockets: every frame whole, headers and acks included.",
        m.link_sent_bytes.get(),
    );
    o.one(
        "rep_peer_received_bytes_total",
        "counter",
        "Data received from the peer (nr, KiB granularity).",
        c.nr_kib * 1024,
    );
    o.one(
        "rep_disk_written_bytes_total",
        "counter",
        "Data written to the local disk (dw, KiB granularity).",
        c.dw_kib * 1024,
    );
    o.one(
        "rep_disk_read_bytes_total",
        "counter",
        "Data read from the local disk (dr, KiB granularity).",
        c.dr_kib * 1024,
    );
    o.one(
        "rep_activity_log_writes_total",
        "counter",
        "Activity-log transactions written (al).",
        c.al_writes,
    );
    o.one(
        "rep_bitmap_writes_total",
        "counter",
        "Bitmap pages written (bm).",
        c.bm_writes,
    );
    o.one(
        "rep_open_clients",
        "gauge",
        "NBD clients in transmission.",
        s.open_clients,
    );
    o.family(
        "rep_handler_runs_total",
        "counter",
        "Handler (usermode helper) runs, by handler and exit status.",
    );
    let runs = match m.handler_runs.lock() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    for ((name, exit), n) in runs {
        o.sample(
            "rep_handler_runs_total",
            &format!("handler=\"{}\",exit=\"{}\"", escape(&name), escape(&exit)),
            n,
        );
    }
    o.text
}

/// A scraper has this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of request head read at most.
const REQUEST_BYTES_MAX: usize = 8192;
/// Scrapes served at the same time; more connections are closed at once.
const CONNECTIONS_MAX: usize = 8;

/// What a scrape answers: the rendered exposition (`render` of the daemon's counters and status).
pub type Scrape = Rc<dyn Fn() -> String>;

/// Serve `GET /metrics` on `listener` until the daemon ends.
pub async fn serve(listener: std::net::TcpListener, scrape: Scrape) -> std::io::Result<()> {
    let mut conns = rep_nbd::server::spawn_acceptor("metrics", move || listener.accept())?;
    let busy = Rc::new(Cell::new(0usize));
    while let Some((std_stream, _from)) = conns.recv().await {
        if busy.get() >= CONNECTIONS_MAX {
            drop(std_stream);
            continue;
        }
        busy.set(busy.get() + 1);
        let stream = TcpStream::from_std(std_stream);
        let (scrape, busy) = (Rc::clone(&scrape), Rc::clone(&busy));
        tokio_uring::spawn(async move {
            if let Err(e) = respond(&stream, &*scrape).await {
                tracing::debug!("metrics client: {e}");
            }
            busy.set(busy.get() - 1);
        });
    }
    Ok(())
}

/// The request line of an HTTP request head, once the head is complete.
fn request_line(head: &[u8]) -> Option<&str> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    text.lines().next()
}

/// `(status line, content type, body)` for one request line.
pub fn answer(line: &str, body: impl FnOnce() -> String) -> (&'static str, &'static str, String) {
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    const PROM: &str = "text/plain; version=0.0.4; charset=utf-8";
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", PROM, body()),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "rep metrics: GET /metrics\n".into(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is served\n".into(),
        ),
    }
}

async fn respond(stream: &TcpStream, scrape: &dyn Fn() -> String) -> std::io::Result<()> {
    let mut head = Vec::new();
    let line = loop {
        if let Some(l) = request_line(&head) {
            break l.to_owned();
        }
        if head.len() >= REQUEST_BYTES_MAX {
            return Ok(());
        }
        let read = tokio::time::timeout(REQUEST_TIMEOUT, stream.read(vec![0u8; 2048])).await;
        let Ok((res, buf)) = read else {
            return Ok(());
        };
        let n = res?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let (status, kind, body) = answer(&line, scrape);
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body.as_bytes());
    let (res, _) = stream.write_all(resp).await;
    res?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_every_write() {
        let m = Metrics::default();
        for us in [10u64, 30, 30, 700, 20_000, 3_000_000, 20_000_000] {
            m.request_done(1, 4096, true, Duration::from_micros(us));
        }
        m.request_done(0, 512, true, Duration::from_micros(5));
        m.request_done(1, 4096, false, Duration::from_micros(5));
        let s = crate::control::render::tests::sample();
        let text = render(&m, &s);
        let bucket = |le: &str| -> u64 {
            let needle = format!("le=\"{le}\"}} ");
            let line = text
                .lines()
                .find(|l| l.starts_with("rep_write_latency_seconds_bucket") && l.contains(&needle))
                .unwrap_or_else(|| panic!("bucket {le} in\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(bucket("2.5e-5"), 2, "10 µs and the failed 5 µs write");
        assert_eq!(bucket("5e-5"), 4);
        assert_eq!(bucket("1e-3"), 5);
        assert_eq!(bucket("2.5e-2"), 6);
        assert_eq!(bucket("5e0"), 7);
        assert_eq!(bucket("+Inf"), 8, "20 s is past the last bound");
        assert!(text.contains("rep_write_latency_seconds_count{resource=\"r0\",node=\"node-a\"} 8"));
        assert!(
            text.contains("rep_io_bytes_total{resource=\"r0\",node=\"node-a\",op=\"write\"} 28672")
        );
        assert!(
            text.contains("rep_io_errors_total{resource=\"r0\",node=\"node-a\",op=\"write\"} 1")
        );
        assert!(
            text.contains("rep_io_requests_total{resource=\"r0\",node=\"node-a\",op=\"read\"} 1")
        );
        assert!(text.contains(
            "rep_connection_state{resource=\"r0\",node=\"node-a\",state=\"WFConnection\"} 1"
        ));
        assert!(text.contains(
            "rep_connection_state{resource=\"r0\",node=\"node-a\",state=\"Connected\"} 0"
        ));
    }

    #[test]
    fn only_get_metrics_serves_the_metrics() {
        assert_eq!(answer("GET /metrics HTTP/1.1", || "x".into()).0, "200 OK");
        assert_eq!(answer("GET /metrics?x=1 HTTP/1.0", || "x".into()).2, "x");
        assert_eq!(answer("GET /nope HTTP/1.1", String::new).0, "404 Not Found");
        assert_eq!(
            answer("POST /metrics HTTP/1.1", String::new).0,
            "405 Method Not Allowed"
        );
        assert_eq!(request_line(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            request_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("GET / HTTP/1.1")
        );
    }
}
