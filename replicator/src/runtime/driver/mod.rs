//! The driver: owns the engine and performs its outputs (docs/architecture.md §6.1, quinn's ConnectionDriver).
//!
//! All inputs go through `feed`, which queues them and, unless a pump is already running
//! further up the stack, drains inputs and outputs until both are empty. Disk I/O runs as
//! io_uring tasks whose completions come back through `feed`; metadata writes go, in order, to
//! the metadata thread (`metaio::MetaWriter`), whose completions come back the same way.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use crate::digest::Digests;
use bytes::Bytes;
use rep_nbd::server::{Completion, Responder};
use rep_resources::NodeView;
use tokio::sync::{mpsc, oneshot, Notify};

#[cfg(not(feature = "fault-injection"))]
use super::backing::BackingDisk as Disk;
use super::error::{Device, DiskError, Op};
#[cfg(feature = "fault-injection")]
use super::fault::FaultDisk as Disk;
use super::metaio::MetaWriter;
use super::paths::RunPaths;
use crate::control::Status;
use crate::core::{
    AdminCmd, AdminId, ClientOp, Engine, IdMap, Input, IoFailure, OpenFailure, Output, Refusal,
    ReqId,
};

mod disk_io;

/// Bytes a client request moves (0 for FLUSH).
fn op_len(op: &ClientOp) -> u32 {
    match *op {
        ClientOp::Read { len, .. }
        | ClientOp::Write { len, .. }
        | ClientOp::Trim { len, .. }
        | ClientOp::WriteZeroes { len, .. } => len,
        ClientOp::Flush => 0,
    }
}

/// A client request's reply channel and its data buffers.
struct ClientSlot {
    done: Responder,
    /// A read's result: only a read's reply carries data.
    buf: Option<Vec<u8>>,
    /// A write's data (kept by a diskless write, which has no local write to take it): shared
    /// with the peer's send queue, which writes it from here.
    payload: Option<Bytes>,
    /// For the metrics: operation class (`metrics::OPS`), length, arrival.
    op: u8,
    len: u32,
    started: Instant,
}

pub struct Driver {
    engine: RefCell<Engine>,
    /// Inputs queued while pumping (what a dispatch produced, or fed), each with its clock
    /// reading if one was taken (else the pump reads the clock when it takes the input).
    inbox: RefCell<VecDeque<(Option<Instant>, Input)>>,
    /// Inputs queued outside a pump with their arrival time (the requests or frames of one
    /// socket read), for the next pump. It takes one, then everything that one led to (the
    /// inbox), before the next: the order in which one pump per input handled them.
    arrived: RefCell<VecDeque<(Instant, Input)>>,
    pumping: Cell<bool>,
    /// The clock reading of the input the pump handles now: a reply its handling produces is
    /// timed by it rather than by a read of its own (clock reads were 5 % of the Primary's user
    /// time per write, issue 20). Inputs a dispatch queues (an inline write's completion) read
    /// the clock when the pump takes them, so that time spent in the pump is counted.
    pump_now: Cell<Option<Instant>>,
    /// The link to the witness, if the resource has one (`witness_link`).
    pub(crate) witness: std::cell::OnceCell<Rc<super::witness_link::state::WitnessLink>>,
    /// The busy-poll window, if configured (`busy_poll.rs`).
    busy: std::cell::OnceCell<Rc<super::busy_poll::BusyPoll>>,
    disk: RefCell<Option<Rc<Disk>>>,
    /// The metadata thread, started at the first attach.
    meta: std::cell::OnceCell<MetaWriter>,
    /// The running configuration; `repadm adjust` replaces it (see `view()`).
    view: RefCell<Rc<NodeView>>,
    pub paths: RunPaths,
    /// The configuration file, for handlers' `DRBD_CONF`.
    pub config_path: std::path::PathBuf,
    next_req: Cell<ReqId>,
    next_admin: Cell<AdminId>,
    clients: RefCell<IdMap<ReqId, ClientSlot>>,
    admins: RefCell<IdMap<AdminId, oneshot::Sender<Result<String, Refusal>>>>,
    subscribers: RefCell<Vec<mpsc::UnboundedSender<Status>>>,
    pub shutdown: Notify,
    pub shutting_down: Cell<bool>,
    pub link: super::link::state::SharedLink,
    /// Where the peer link dials and whom it accepts; `adjust` replaces it.
    link_settings: RefCell<Option<Rc<super::link::state::LinkSettings>>>,
    pub hasher: std::cell::OnceCell<super::hasher::Hasher>,
    rng: Cell<u64>,
    /// Client writes held back while the peer's send queue is over `max-buffers` (in arrival
    /// order, so a held FLUSH never overtakes the writes it covers). They wait; they never fail.
    held: RefCell<VecDeque<(ReqId, ClientOp)>>,
    /// Rung when the peer-write backlog may have dropped below the bound (see
    /// `peer_rx_backlog_full`), and how many readers wait for it: the bell is rung after every
    /// pump only while one does (ringing takes a lock and an atomic even with nobody waiting).
    rx_room: Notify,
    rx_waiting: Cell<u32>,
    /// When the last application write arrived, for `repadm split-brain show` (kept as an
    /// `Instant`, which the request reads anyway, and turned into Unix seconds when asked).
    last_write: Cell<Option<Instant>>,
    /// What the timer task sleeps towards, and the bell that wakes it early.
    timer_deadline: Cell<Option<Instant>>,
    timer_moved: Notify,
    /// The listener for the peer's connections (this node's `address`).
    pub(crate) peer_listener: RefCell<Option<super::link::state::PeerListener>>,
    /// The status-file thread (`None` if it could not start: then written here).
    status_files: RefCell<Option<super::surface::status::StatusWriter>>,
    /// `resync-after`: what the watcher reported and the engine was told.
    dependency: super::dependency::Follow,
    /// Counters and the latency histogram served at `metrics-listen`.
    pub metrics: super::metrics::Metrics,
    /// The test-only fault hook (`repadm fault`), around the disk and the metadata.
    #[cfg(feature = "fault-injection")]
    pub fault: super::fault::FaultHook,
}

impl Driver {
    pub fn new(
        engine: Engine,
        view: NodeView,
        paths: RunPaths,
        config_path: std::path::PathBuf,
        link_settings: Option<super::link::state::LinkSettings>,
        seed: u64,
    ) -> Rc<Driver> {
        Rc::new(Driver {
            engine: RefCell::new(engine),
            inbox: RefCell::new(VecDeque::new()),
            arrived: RefCell::new(VecDeque::new()),
            pumping: Cell::new(false),
            pump_now: Cell::new(None),
            witness: std::cell::OnceCell::new(),
            busy: std::cell::OnceCell::new(),
            disk: RefCell::new(None),
            meta: std::cell::OnceCell::new(),
            view: RefCell::new(Rc::new(view)),
            paths: paths.clone(),
            config_path,
            next_req: Cell::new(ReqId(1)),
            next_admin: Cell::new(AdminId(1)),
            clients: RefCell::new(IdMap::default()),
            admins: RefCell::new(IdMap::default()),
            subscribers: RefCell::new(Vec::new()),
            shutdown: Notify::new(),
            shutting_down: Cell::new(false),
            link: Default::default(),
            link_settings: RefCell::new(link_settings.map(Rc::new)),
            hasher: std::cell::OnceCell::new(),
            rng: Cell::new(seed),
            held: RefCell::new(VecDeque::new()),
            rx_room: Notify::new(),
            rx_waiting: Cell::new(0),
            last_write: Cell::new(None),
            timer_deadline: Cell::new(None),
            timer_moved: Notify::new(),
            peer_listener: RefCell::new(None),
            status_files: RefCell::new(
                super::surface::status::StatusWriter::start(paths.clone())
                    .map_err(|e| {
                        tracing::warn!(
                            "cannot start the status-file thread ({e}): writing them inline"
                        );
                    })
                    .ok(),
            ),
            dependency: super::dependency::Follow::default(),
            metrics: Default::default(),
            #[cfg(feature = "fault-injection")]
            fault: super::fault::FaultHook::default(),
        })
    }

    /// The running configuration (a snapshot: `adjust` may replace it at any await point).
    pub fn view(&self) -> Rc<NodeView> {
        Rc::clone(&self.view.borrow())
    }

    /// The peer link's addresses and connect-int, if a peer is configured.
    pub fn link_settings(&self) -> Option<Rc<super::link::state::LinkSettings>> {
        self.link_settings.borrow().clone()
    }

    /// Install a new running configuration (`adjust`); the engine gets its part separately.
    pub fn replace_view(&self, view: NodeView, link: Option<super::link::state::LinkSettings>) {
        *self.view.borrow_mut() = Rc::new(view);
        *self.link_settings.borrow_mut() = link.map(Rc::new);
    }

    /// Poll for `window` after every input instead of sleeping (`busy_poll.rs`).
    pub fn start_busy_poll(self: &Rc<Self>, window: std::time::Duration) {
        let b = super::busy_poll::BusyPoll::new(window);
        if self.busy.set(Rc::clone(&b)).is_ok() {
            let this = Rc::clone(self);
            tokio_uring::spawn(b.run(move || this.engine.borrow().light_load()));
        }
    }

    /// What the parts below the driver feed their completions through (`port::Feed`).
    pub fn feeder(self: &Rc<Self>) -> super::port::Feed {
        let this = Rc::clone(self);
        Rc::new(move |input| this.feed(input))
    }

    /// Queue one input for the pump that runs now (from within a dispatch: no pump of its own).
    pub(crate) fn queue(&self, input: Input) {
        self.inbox.borrow_mut().push_back((None, input));
    }

    /// Queue one input that arrived at `now` without pumping: a caller that has more inputs
    /// at hand queues them all and then pumps once (`pump`).
    fn enqueue(&self, now: Instant, input: Input) {
        if let Some(b) = self.busy.get() {
            b.touch(now);
        }
        if self.pumping.get() {
            self.inbox.borrow_mut().push_back((Some(now), input));
        } else {
            self.arrived.borrow_mut().push_back((now, input));
        }
    }

    /// Queue one input and pump unless a pump is already running up the stack.
    pub fn feed(self: &Rc<Self>, input: Input) {
        self.feed_at(Instant::now(), input);
    }

    /// `feed`, with the clock already read for this input (`now`: the busy-poll window and
    /// the engine's handling of this input share it; inputs queued while pumping read their own).
    pub fn feed_at(self: &Rc<Self>, now: Instant, input: Input) {
        self.feed_batch_at(now, std::iter::once(input));
    }

    /// Inputs that arrived together at `now` (the frames one socket read brought): handled in
    /// order in one pump, sharing that clock reading. Inputs queued while pumping read their own.
    pub fn feed_batch_at(self: &Rc<Self>, now: Instant, inputs: impl IntoIterator<Item = Input>) {
        for input in inputs {
            self.enqueue(now, input);
        }
        self.pump();
    }

    /// Handle every queued input and perform the outputs, unless a pump is already running up
    /// the stack (it will take them).
    pub fn pump(self: &Rc<Self>) {
        if self.pumping.replace(true) {
            return;
        }
        loop {
            let internal = self.inbox.borrow_mut().pop_front();
            let next = internal.or_else(|| {
                let a = self.arrived.borrow_mut().pop_front();
                a.map(|(at, input)| (Some(at), input))
            });
            let had_input = next.is_some();
            if let Some((at, input)) = next {
                let now = at.unwrap_or_else(Instant::now);
                self.pump_now.set(Some(now));
                let mut e = self.engine.borrow_mut();
                e.note_send_backlog(self.link_backlog() as u64);
                e.handle(now, input);
            }
            let mut had_output = false;
            loop {
                let out = self.engine.borrow_mut().poll_output();
                let Some(out) = out else { break };
                had_output = true;
                self.dispatch(out);
            }
            if !had_input
                && !had_output
                && self.inbox.borrow().is_empty()
                && self.arrived.borrow().is_empty()
            {
                break;
            }
        }
        self.pumping.set(false);
        self.pump_now.set(None);
        self.reschedule_timer();
        if self.rx_waiting.get() > 0 && !self.peer_rx_backlog_full() {
            self.rx_room.notify_waiters();
        }
    }

    /// Wait until the peer-write backlog may have dropped below the bound (the caller checks
    /// `peer_rx_backlog_full` again).
    pub async fn rx_room(&self) {
        /// Counts the waiter out however the wait ends (also when its future is dropped).
        struct Waiting<'a>(&'a Cell<u32>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get().saturating_sub(1));
            }
        }
        self.rx_waiting.set(self.rx_waiting.get() + 1);
        let _counted = Waiting(&self.rx_waiting);
        self.rx_room.notified().await;
    }

    fn dispatch(self: &Rc<Self>, out: Output) {
        match out {
            Output::Disk { io, req, op } => self.disk_op(io, req, op),
            // Through the metadata thread, which keeps the order and answers with MetaDone.
            // Without it no disk was ever attached, and nothing is queued to be overtaken.
            Output::Meta { io, op } => match self.meta.get() {
                Some(w) => w.write(io, op),
                None => self.queue(Input::MetaDone {
                    io,
                    result: Err(DiskError::NotAttached.into()),
                }),
            },
            Output::OpenDisk { io } => {
                let result = self.open_disk().map(Box::new).map_err(OpenFailure::from);
                self.queue(Input::DiskOpened { io, result });
            }
            // Data I/O from now on fails with ENODEV, as before; the metadata writes queued
            // before this (the final superblock) go first, then DiskClosed.
            Output::CloseDisk { io } => {
                self.disk.borrow_mut().take();
                match self.meta.get() {
                    Some(w) => w.close(io),
                    None => self.queue(Input::DiskClosed { io }),
                }
            }
            Output::ClientReply { req, result } => {
                let Some(slot) = self.clients.borrow_mut().remove(&req) else {
                    return;
                };
                let took = match self.pump_now.get() {
                    Some(now) => now.saturating_duration_since(slot.started),
                    None => slot.started.elapsed(),
                };
                self.metrics
                    .request_done(usize::from(slot.op), slot.len, result.is_ok(), took);
                let completion = match (result, slot.buf) {
                    (Err(e), _) => Completion::Error {
                        errno: e.nbd_errno,
                        message: e.message,
                    },
                    (Ok(()), Some(data)) => Completion::Data(data),
                    (Ok(()), _) => Completion::Done,
                };
                slot.done.complete(completion);
            }
            Output::ClientData { req, data } => {
                if let Some(slot) = self.clients.borrow_mut().get_mut(&req) {
                    slot.buf = Some(data);
                }
            }
            Output::AdminReply { id, result } => {
                if let Some(tx) = self.admins.borrow_mut().remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Output::StateChanged => self.publish_state(),
            Output::Handler { name } => self.run_handler(name),
            Output::RunHandler { io, name } => self.run_waited_handler(io, name),
            Output::CheckDependency => {
                let after = self.view().disk_conf.resync_after.clone();
                let syncing = self.dependency.syncing(after.as_deref());
                self.queue(Input::DependencySyncing { syncing });
            }
            Output::Connect => self.link_connect(),
            Output::Disconnect => {
                self.link_disconnect();
                self.send_backlog_drained();
            }
            Output::CloseLink { link } => {
                self.link_close(link);
                self.send_backlog_drained();
            }
            Output::Send { link, packet } => self.link_send(link, &packet),
            Output::SendWrite {
                link,
                req,
                offset,
                buf_offset,
                len,
                fua,
            } => {
                let clients = self.clients.borrow();
                if let Some(buf) = clients.get(&req).and_then(|s| s.payload.as_ref()) {
                    let start = buf_offset as usize;
                    let range = start..start.saturating_add(len as usize);
                    self.link_send_write(link, (req.0, offset, fua), buf, range);
                }
            }
            Output::PeerDisk { io, op } => self.peer_disk_op(io, op),
            Output::Hash { io, alg, data } => match self.hasher.get() {
                Some(h) => h.submit(io, alg, data),
                // No pool (it failed to start): hash here rather than never answer.
                None => self.queue(Input::HashDone {
                    io,
                    digests: alg.digest_blocks(&data),
                }),
            },
        }
    }

    /// The attached backing disk, or the failure to report when there is none.
    pub(super) fn attached_disk(&self) -> Result<Rc<Disk>, IoFailure> {
        self.disk
            .borrow()
            .clone()
            .ok_or_else(|| DiskError::NotAttached.into())
    }

    /// Seeds per-connection session ids (not security relevant: pairing sockets only).
    pub fn random_u64(&self) -> u64 {
        let mut r = crate::core::rng::Rng::new(self.rng.get());
        let v = r.next_u64();
        self.rng.set(v);
        v
    }

    /// `resync-after OTHER`: follow OTHER's state (`dependency::watch`) and hold our resync
    /// while OTHER resyncs. OTHER is read from the running configuration at every report, so
    /// `adjust` can set or change it (it calls this again).
    pub fn follow_resync_after(self: &Rc<Self>) {
        if self.view().disk_conf.resync_after.is_some() && !self.dependency.watching() {
            match super::dependency::watch(self.paths.dir.clone(), self.paths.resource.clone()) {
                Ok(mut reports) => {
                    self.dependency.set_watching(true);
                    let this = Rc::clone(self);
                    tokio_uring::spawn(async move {
                        while let Some(report) = reports.recv().await {
                            this.dependency.report(report);
                            this.tell_dependency();
                        }
                        this.dependency.set_watching(false);
                        this.tell_dependency();
                    });
                }
                Err(e) => tracing::error!(
                    "resync-after: cannot watch {}: {e}; the dependency counts as not resyncing",
                    self.paths.dir.display()
                ),
            }
        }
        self.tell_dependency();
    }

    /// Tell the engine when the dependency's state differs from what it was last told.
    fn tell_dependency(self: &Rc<Self>) {
        let after = self.view().disk_conf.resync_after.clone();
        if let Some(syncing) = self.dependency.news(after.as_deref()) {
            self.feed(Input::DependencySyncing { syncing });
        }
    }

    /// Feeds `Input::Timer` when the engine's next deadline (`next_timeout`) comes: it sleeps
    /// until then, and is woken early when an input moves the deadline closer (an epoch that
    /// opens must close 20 ms later, not at the next poll).
    pub async fn run_timers(self: Rc<Self>) {
        /// Without a deadline the task sleeps until an input brings one (`reschedule_timer`
        /// wakes it: every engine deadline is set while handling an input). This bound only
        /// keeps the instant representable; an idle daemon does not wake up on a clock.
        const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(3600);
        /// A deadline the engine leaves in the past after a Timer is re-tried this much later,
        /// so that the single-threaded runtime never spins.
        const RETRY: std::time::Duration = std::time::Duration::from_millis(10);
        loop {
            let now = Instant::now();
            let mut next = self.engine.borrow().next_timeout();
            if next.is_some_and(|t| t <= now) {
                self.feed(Input::Timer);
                next = self
                    .engine
                    .borrow()
                    .next_timeout()
                    .map(|t| t.max(now + RETRY));
            }
            let until = next.map_or(now + MAX_SLEEP, |t| t.min(now + MAX_SLEEP));
            self.timer_deadline.set(Some(until));
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = self.timer_moved.notified() => {}
            }
            self.timer_deadline.set(None);
        }
    }

    /// After inputs: wake the timer task if the engine's deadline is now earlier than the one
    /// it sleeps towards.
    fn reschedule_timer(&self) {
        let sleeping_until = self.timer_deadline.get();
        let next = self.engine.borrow().next_timeout();
        if let (Some(sleep), Some(next)) = (sleeping_until, next) {
            if next < sleep {
                self.timer_moved.notify_one();
            }
        }
    }

    /// Submit one client request; its completion goes to `done`.
    pub fn submit_client(self: &Rc<Self>, op: ClientOp, payload: Option<Bytes>, done: Responder) {
        // One clock read per batch of requests: their arrival, last-write time and input.
        // Requests queued since the last pump (one socket read's) share the first one's reading.
        let queued = self.arrived.borrow().back().map(|&(at, _)| at);
        let now = queued.unwrap_or_else(Instant::now);
        if matches!(
            op,
            ClientOp::Write { .. } | ClientOp::Trim { .. } | ClientOp::WriteZeroes { .. }
        ) {
            self.last_write.set(Some(now));
        }
        let req = self.next_req.get();
        self.next_req.set(req.next());
        let payload = payload.filter(|_| !matches!(op, ClientOp::Read { .. }));
        self.clients.borrow_mut().insert(
            req,
            ClientSlot {
                done,
                buf: None,
                payload,
                op: super::metrics::op_index(&op) as u8,
                len: op_len(&op),
                started: now,
            },
        );
        let hold = !matches!(op, ClientOp::Read { .. })
            && (!self.held.borrow().is_empty() || self.send_backlog_full());
        if hold {
            self.held.borrow_mut().push_back((req, op));
        } else {
            // Started by the next pump: the NBD reader queues the requests one socket read
            // brought and pumps once before it waits for anything (`run_submitted`). The hold
            // check above therefore sees the send queue as it was before this batch: the queue
            // may pass `max-buffers` by one batch, at most a read chunk (256 KiB).
            self.enqueue(now, Input::Client { req, op });
        }
    }

    /// Start the client requests `submit_client` queued.
    pub fn run_submitted(self: &Rc<Self>) {
        self.pump();
    }

    /// Bytes the peer's data socket may have queued before client writes wait (`max-buffers`
    /// pages of 4 KiB, as DRBD counts them). One request may exceed it: the check is made before
    /// a write is queued, so a single 32 MiB write still goes.
    fn send_backlog_limit(&self) -> usize {
        (self.view.borrow().net.max_buffers as usize).max(32) * 4096
    }

    /// The peer's writes waiting for our disk exceed `max-buffers`: stop reading the data socket.
    pub fn peer_rx_backlog_full(&self) -> bool {
        self.engine.borrow().peer_rx_backlog_bytes() > self.send_backlog_limit() as u64
    }

    fn send_backlog_full(&self) -> bool {
        self.link_backlog() > self.send_backlog_limit()
    }

    /// The send queue shrank (or the link went away): let held writes in while there is room.
    pub fn send_backlog_drained(self: &Rc<Self>) {
        loop {
            if self.send_backlog_full() {
                return;
            }
            let next = self.held.borrow_mut().pop_front();
            let Some((req, op)) = next else { return };
            self.feed(Input::Client { req, op });
        }
    }

    /// Run one admin command to completion.
    pub async fn admin(self: &Rc<Self>, cmd: AdminCmd) -> Result<String, Refusal> {
        let id = self.next_admin.get();
        self.next_admin.set(id.next());
        let (tx, rx) = oneshot::channel();
        self.admins.borrow_mut().insert(id, tx);
        self.feed(Input::Admin { id, cmd });
        rx.await.unwrap_or_else(|_| {
            Err(Refusal::MetaIo {
                message: "daemon dropped the command".into(),
            })
        })
    }

    /// Why the engine would refuse a client request now, with its NBD error.
    pub fn engine_io_refusal(&self) -> Option<(u32, String)> {
        self.engine.borrow().io_refusal()
    }

    pub fn usable_bytes(&self) -> u64 {
        self.engine.borrow().usable_bytes()
    }

    pub fn status(&self) -> Status {
        super::surface::snapshot::status_of(&self.engine.borrow(), &self.view(), &self.paths)
    }

    /// `repadm verify --report`: what the last verify found.
    pub fn verify_ranges(&self) -> Vec<[u64; 2]> {
        self.engine
            .borrow()
            .last_verify_ranges()
            .iter()
            .map(|&(o, l)| [o, l])
            .collect()
    }

    /// `repadm split-brain show` from this node.
    pub fn split_brain_info(&self) -> crate::control::SplitBrainInfo {
        crate::control::SplitBrainInfo {
            view: self.engine.borrow().split_brain_view(),
            last_write_unix: self.last_write.get().and_then(|t| {
                std::time::SystemTime::now()
                    .checked_sub(t.elapsed())?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
        }
    }

    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.borrow_mut().push(tx);
        rx
    }

    /// Notify `events` listeners and hand the status files their new content.
    pub fn publish_state(&self) {
        let status = self.status();
        if let Some(w) = self.witness.get() {
            w.announce(
                crate::wire::codes::role_code(status.role),
                crate::wire::codes::disk_code(status.disk),
            );
        }
        self.subscribers
            .borrow_mut()
            .retain(|tx| tx.send(status.clone()).is_ok());
        match self.status_files.borrow().as_ref() {
            Some(w) => w.publish(status),
            None => {
                if let Err(e) = super::surface::status::write_status_files(&self.paths, &status) {
                    tracing::warn!(
                        "cannot write status file in {}: {e}",
                        self.paths.dir.display()
                    );
                }
            }
        }
    }

    /// Let the status-file thread write what it has and stop: the daemon writes its last
    /// status itself on the way down.
    pub fn finish_status_files(&self) {
        if let Some(mut w) = self.status_files.borrow_mut().take() {
            w.finish();
        }
    }

    pub fn client_opened(self: &Rc<Self>) {
        self.feed(Input::ClientOpened);
        self.publish_state();
    }

    pub fn client_closed(self: &Rc<Self>) {
        self.feed(Input::ClientClosed);
        self.publish_state();
    }
}
