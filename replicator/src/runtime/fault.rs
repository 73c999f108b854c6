//! The test-only fault hook (feature `fault-injection`; README "Testing notes"), driven by
//! `repadm fault RES …` through the control socket.
//!
//! It wraps the two ways the driver reaches storage: `FaultDisk` stands in for `BackingDisk`
//! (data reads, writes, zeroing and flushes of client requests, peer writes, resync and verify
//! reads) and `FaultMetaDev` for the `MetaDev` under the `MetaStore` (superblock, activity log
//! and bitmap writes). Both consult one shared `FaultHook`:
//!
//! - **disk-error rules** fail matching operations with EIO before they reach the device;
//! - the **volatile cache**: while on, every write lands in an in-memory overlay (4 KiB pages,
//!   one overlay for the data path and one for the metadata path) instead of the file, reads
//!   see the overlay, and a completed flush of that path writes its overlay to the file and
//!   fdatasyncs it. FUA writes go to the overlay and through to the file (synced) at once.
//!   The file therefore always holds the durable image: what the last completed flush and
//!   the FUA writes made durable. The metadata path's flush (`MetaDev::flush`, issued by
//!   every superblock, AL and bitmap write) covers metadata writes only and a data flush data
//!   writes only, even for internal metadata — stricter than a real disk, whose cache flush
//!   covers both;
//! - **power loss** drops both overlays, makes every further operation fail without touching
//!   the files, sends the control reply and ends the process with SIGKILL before any other
//!   task runs: no shutdown path runs, nothing more is written, no goodbye reaches the peer.
//!
//! The overlays belong to the hook, not to an attached disk: a detached disk keeps its cache
//! across a re-attach of the same device (attaching another device writes the old cache out
//! to its own device first), and a normal exit of repd (`down`, SIGTERM) writes both overlays
//! out. A `kill -9` while the cache is on loses it, like `power-loss`.
//!
//! The data path runs synchronously on the driver's thread (pread/pwrite/fdatasync of a
//! cloned handle): it is a test device, not a fast one. The metadata path (`FaultMetaDev`, and
//! the data flush before a metadata write, `FaultFlush`) runs on the metadata thread
//! (`metaio`); each of its operations holds the hook's `meta_gate` from the fault check to the
//! end of its write, and every `repadm fault` command takes the gate first, so a command (a
//! power loss above all) falls between two metadata operations, never inside one: what the
//! files hold at a power cut is exactly what it was with the metadata on the driver's thread.
//! `meta-delay MS` makes every metadata write that much slower (a slow meta disk);
//! `disk-delay MS` does the same for every data write (a slow data disk: the writes a
//! Secondary receives queue behind it). A data write waits on the driver's runtime timer, not
//! on its thread, so writes keep overlapping as on a real device, each completing `MS` late.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::socket::MsgFlags;
use rep_resources::{MetaDisk, NodeView};

use super::backing::{BackingDisk, BackingFlush};
use super::error::{Device, DiskError, Op};
use super::metaio::{DataFlush, MetaHandle};
use crate::control::fault::{
    DiskErrorRule, FaultCmd, FaultOp, DISK_DELAY_MS_MAX, FAULT_REFUSED_EXIT, META_DELAY_MS_MAX,
};
use crate::control::{Response, Status};
use crate::core::io::{split_zero_blocks, Extent};
use crate::core::AttachInfo;

pub use super::fault_error::FaultError;
use crate::meta::store::MetaDev;

/// Overlay page size: the data area and the metadata area are both 4 KiB aligned, so no page
/// is shared between the two overlays.
const PAGE: u64 = 4096;
/// Largest single pwrite when an overlay is written out (contiguous pages are coalesced).
const WRITE_OUT_RUN_BYTES: usize = 1 << 20;

/// Which path an operation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    Data,
    Meta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write { fua: bool },
    Flush,
}

/// What a write puts into the overlay.
#[derive(Clone, Copy)]
enum Src<'a> {
    Bytes(&'a [u8]),
    Zeros(u64),
}

impl Src<'_> {
    fn len(&self) -> u64 {
        match self {
            Src::Bytes(b) => b.len() as u64,
            Src::Zeros(n) => *n,
        }
    }
}

enum Page {
    /// A page that reads back as zeroes (TRIM / WRITE_ZEROES), without 4 KiB of memory.
    Zero,
    Bytes(Box<[u8]>),
}

/// Writes of one path not yet covered by a completed flush, by 4 KiB page index.
#[derive(Default)]
struct Overlay {
    /// Where the pages go on a flush (a handle of its own, so a detached disk can still be
    /// written out).
    file: Option<Arc<File>>,
    /// Device size: pages are clamped to it when written out.
    size: u64,
    pages: BTreeMap<u64, Page>,
}

/// Fill `buf` from `off`, zeroes past the end of the device.
fn read_padded(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match FileExt::read_at(file, &mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

impl Overlay {
    fn io(what: &'static str) -> impl FnOnce(io::Error) -> FaultError {
        move |source| FaultError::Io { what, source }
    }

    /// The page for a partial write: loaded from the device unless cached.
    fn page_mut(&mut self, idx: u64) -> Result<&mut [u8], FaultError> {
        let page = match self.pages.remove(&idx) {
            Some(Page::Bytes(b)) => b,
            Some(Page::Zero) => vec![0u8; PAGE as usize].into_boxed_slice(),
            None => {
                let file = self.file.as_ref().ok_or(FaultError::NoDevice)?;
                let mut buf = vec![0u8; PAGE as usize].into_boxed_slice();
                read_padded(file, &mut buf, idx * PAGE)
                    .map_err(Overlay::io("read for a partial write"))?;
                buf
            }
        };
        match self.pages.entry(idx).or_insert(Page::Bytes(page)) {
            Page::Bytes(b) => Ok(b),
            Page::Zero => Err(FaultError::NoDevice),
        }
    }

    fn write(&mut self, off: u64, src: Src<'_>) -> Result<(), FaultError> {
        let end = off.saturating_add(src.len());
        let mut pos = off;
        while pos < end {
            let idx = pos / PAGE;
            let in_page = pos - idx * PAGE;
            let n = (end - pos).min(PAGE - in_page);
            let from = (pos - off) as usize;
            let full = in_page == 0 && n == PAGE;
            match src {
                Src::Zeros(_) if full => {
                    self.pages.insert(idx, Page::Zero);
                }
                Src::Bytes(b) if full => {
                    let bytes = b[from..from + PAGE as usize].to_vec().into_boxed_slice();
                    self.pages.insert(idx, Page::Bytes(bytes));
                }
                _ => {
                    let page = self.page_mut(idx)?;
                    let dst = &mut page[in_page as usize..(in_page + n) as usize];
                    match src {
                        Src::Bytes(b) => dst.copy_from_slice(&b[from..from + n as usize]),
                        Src::Zeros(_) => dst.fill(0),
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// Lay the cached pages over `buf`, which was read from the device at `off`.
    fn patch(&self, buf: &mut [u8], off: u64) {
        if self.pages.is_empty() || buf.is_empty() {
            return;
        }
        let end = off + buf.len() as u64;
        for (&idx, page) in self.pages.range(off / PAGE..=(end - 1) / PAGE) {
            let start = idx * PAGE;
            let (s, e) = (start.max(off), (start + PAGE).min(end));
            let dst = &mut buf[(s - off) as usize..(e - off) as usize];
            match page {
                Page::Zero => dst.fill(0),
                Page::Bytes(p) => {
                    dst.copy_from_slice(&p[(s - start) as usize..(e - start) as usize])
                }
            }
        }
    }

    /// A completed flush: every cached page to the device, fdatasync, cache empty.
    fn write_out(&mut self) -> Result<(), FaultError> {
        let Some(file) = self.file.clone() else {
            return if self.pages.is_empty() {
                Ok(())
            } else {
                Err(FaultError::NoDevice)
            };
        };
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0;
        for (&idx, page) in &self.pages {
            let start = idx * PAGE;
            if !run.is_empty()
                && (run_start + run.len() as u64 != start || run.len() >= WRITE_OUT_RUN_BYTES)
            {
                self.put(&file, run_start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = start;
            }
            match page {
                Page::Zero => run.resize(run.len() + PAGE as usize, 0),
                Page::Bytes(p) => run.extend_from_slice(p),
            }
        }
        if !run.is_empty() {
            self.put(&file, run_start, &run)?;
        }
        file.sync_data().map_err(Overlay::io("fdatasync"))?;
        self.pages.clear();
        Ok(())
    }

    fn put(&self, file: &File, start: u64, run: &[u8]) -> Result<(), FaultError> {
        let len = usize::try_from(self.size.saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(run.len());
        file.write_all_at(&run[..len], start)
            .map_err(Overlay::io("write-out"))
    }

    /// FUA: the bytes go to the device and are synced now (the overlay has them too).
    fn write_through(&self, off: u64, src: Src<'_>) -> Result<(), FaultError> {
        let file = self.file.as_ref().ok_or(FaultError::NoDevice)?;
        match src {
            Src::Bytes(b) => file.write_all_at(b, off),
            Src::Zeros(len) => {
                let zeros = vec![0u8; WRITE_OUT_RUN_BYTES];
                let mut pos = off;
                let end = off.saturating_add(len);
                let mut res = Ok(());
                while pos < end && res.is_ok() {
                    let n = (end - pos).min(WRITE_OUT_RUN_BYTES as u64);
                    res = file.write_all_at(&zeros[..n as usize], pos);
                    pos += n;
                }
                res
            }
        }
        .and_then(|()| file.sync_data())
        .map_err(Overlay::io("FUA write-through"))
    }
}

#[derive(Default)]
struct State {
    rules: Vec<DiskErrorRule>,
    volatile: bool,
    powered_off: bool,
    /// Added to every metadata write (`meta-delay`).
    meta_delay: Duration,
    /// Added to every data write (`disk-delay`).
    data_delay: Duration,
    /// The metadata lives on the backing device: disk-error rules apply to its writes.
    meta_internal: bool,
    data: Overlay,
    meta: Overlay,
}

impl State {
    fn overlay(&mut self, dev: Dev) -> &mut Overlay {
        match dev {
            Dev::Data => &mut self.data,
            Dev::Meta => &mut self.meta,
        }
    }

    /// Fail the operation if a rule matches (counting it) or the power is off.
    fn inject(
        &mut self,
        dev: Dev,
        kind: Kind,
        range: Option<(u64, u64)>,
    ) -> Result<(), FaultError> {
        if self.powered_off {
            return Err(FaultError::PoweredOff);
        }
        let meta_internal = self.meta_internal;
        let Some(i) = self
            .rules
            .iter()
            .position(|r| rule_matches(r, dev, kind, range, meta_internal))
        else {
            return Ok(());
        };
        let rule = &mut self.rules[i];
        let op = rule.op.name();
        if let Some(left) = rule.remaining.as_mut() {
            *left -= 1;
            if *left == 0 {
                self.rules.remove(i);
            }
        }
        let what = match (dev, kind) {
            (Dev::Data, Kind::Read) => "read",
            (Dev::Data, Kind::Write { fua: false }) => "write",
            (Dev::Data, Kind::Write { fua: true }) => "FUA write",
            (Dev::Data, Kind::Flush) => "flush",
            (Dev::Meta, Kind::Flush) => "metadata flush",
            (Dev::Meta, _) => "metadata write",
        };
        tracing::warn!("fault hook: failing a {what} with EIO (disk-error {op})");
        Err(FaultError::Injected { op: what, rule: op })
    }

    fn write_out_all(&mut self) -> Result<(), FaultError> {
        self.data.write_out()?;
        self.meta.write_out()
    }
}

/// Whether `rule` fails this operation. Metadata operations match only rules without a range
/// (the range is in the data area), only for internal metadata, and only writes and flushes.
fn rule_matches(
    rule: &DiskErrorRule,
    dev: Dev,
    kind: Kind,
    range: Option<(u64, u64)>,
    meta_internal: bool,
) -> bool {
    if dev == Dev::Meta && (!meta_internal || rule.range.is_some() || kind == Kind::Read) {
        return false;
    }
    let op = match rule.op {
        FaultOp::Read => kind == Kind::Read,
        FaultOp::Write => matches!(kind, Kind::Write { .. }),
        // A FUA write includes a cache flush of its own.
        FaultOp::Flush => matches!(kind, Kind::Flush | Kind::Write { fua: true }),
        FaultOp::Any => true,
    };
    op && match rule.range {
        None => true,
        Some((start, end)) => range.is_some_and(|(s, e)| s < end && start < e),
    }
}

/// The hook's state, shared by the data and metadata wrappers and the control handler.
#[derive(Clone, Default)]
pub struct FaultHook {
    state: Arc<Mutex<State>>,
    /// Held by a metadata-thread operation from its fault check to its end, and by every
    /// `repadm fault` command (see the module header). Lock order: gate, then state.
    meta_gate: Arc<Mutex<()>>,
}

impl FaultHook {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gate(&self) -> MutexGuard<'_, ()> {
        self.meta_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Give `dev`'s overlay the device it writes to. A cache left from a previous attach stays
    /// when it is the same device (the disk kept its power and its cache); for another device
    /// it is written to its old device first.
    fn attach(&self, dev: Dev, file: Arc<File>, size: u64) {
        let mut st = self.lock();
        let overlay = st.overlay(dev);
        let same = |a: &File, b: &File| match (a.metadata(), b.metadata()) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        if !overlay.file.as_deref().is_some_and(|old| same(old, &file)) {
            if let Err(e) = overlay.write_out() {
                tracing::error!(
                    "fault hook: cannot write out the cache of the previous device, dropped: {e}"
                );
                overlay.pages.clear();
            }
        }
        overlay.file = Some(file);
        overlay.size = size;
    }

    fn inject(&self, dev: Dev, kind: Kind, range: Option<(u64, u64)>) -> Result<(), FaultError> {
        self.lock().inject(dev, kind, range)
    }

    /// `disk-delay`: wait before a data write reaches the device (the faults are checked
    /// after it, so a power loss meanwhile keeps the write off the disk).
    async fn delay_data_write(&self) {
        let delay = self.lock().data_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    fn data_delayed(&self) -> bool {
        !self.lock().data_delay.is_zero()
    }

    /// A write: into the overlay while the cache is on (and through to the device for FUA);
    /// `None` = the cache is off, perform it on the device.
    fn cached_write(
        &self,
        dev: Dev,
        off: u64,
        src: Src<'_>,
        fua: bool,
    ) -> Option<Result<(), FaultError>> {
        let mut st = self.lock();
        if !st.volatile {
            return None;
        }
        let overlay = st.overlay(dev);
        Some(overlay.write(off, src).and_then(|()| {
            if fua {
                overlay.write_through(off, src)
            } else {
                Ok(())
            }
        }))
    }

    /// A flush: writes the overlay out while the cache is on; `None` = perform it on the device.
    fn cached_flush(&self, dev: Dev) -> Option<Result<(), FaultError>> {
        let mut st = self.lock();
        if !st.volatile && st.overlay(dev).pages.is_empty() {
            return None;
        }
        Some(st.overlay(dev).write_out())
    }

    /// Whether reads of `dev` go through the overlay (`cached_read` answers them).
    fn overlaid(&self, dev: Dev) -> bool {
        let mut st = self.lock();
        st.volatile || !st.overlay(dev).pages.is_empty()
    }

    /// A read while the cache is on: from `file`, with the overlay laid over it.
    fn cached_read(
        &self,
        dev: Dev,
        file: &File,
        buf: &mut [u8],
        off: u64,
    ) -> Option<io::Result<()>> {
        let mut st = self.lock();
        if !st.volatile && st.overlay(dev).pages.is_empty() {
            return None;
        }
        Some(
            file.read_exact_at(buf, off)
                .map(|()| st.overlay(dev).patch(buf, off)),
        )
    }

    /// Wrap the device holding the metadata (`internal`: the backing device).
    fn meta_dev(&self, file: File, internal: bool) -> Box<dyn MetaDev> {
        self.lock().meta_internal = internal;
        match file.try_clone() {
            Ok(own) => {
                let size = MetaDev::size_bytes(&file).unwrap_or(u64::MAX);
                self.attach(Dev::Meta, Arc::new(own), size);
            }
            Err(e) => tracing::error!("fault hook: cannot duplicate the meta device handle: {e}"),
        }
        Box::new(FaultMetaDev {
            file,
            hook: self.clone(),
        })
    }

    pub fn powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// repd ends normally (`down`, SIGTERM): the disk keeps power, its cache reaches the media.
    pub fn write_back_on_exit(&self) {
        let _gate = self.gate();
        let mut st = self.lock();
        if st.powered_off {
            return;
        }
        if let Err(e) = st.write_out_all() {
            tracing::error!("fault hook: cannot write out the volatile cache at exit: {e}");
        }
    }

    /// Carry out one `repadm fault` command; the message says what happened.
    pub fn apply(&self, cmd: &FaultCmd) -> Result<String, String> {
        let rule = cmd.disk_error_rule().map_err(|e| e.to_string())?;
        let _gate = self.gate();
        let mut st = self.lock();
        if st.powered_off {
            return Err(FaultError::PoweredOff.to_string());
        }
        let message = match cmd {
            FaultCmd::DiskError { .. } => {
                let Some(rule) = rule else {
                    return Err("internal: disk-error without a rule".into());
                };
                st.rules.push(rule);
                let range = rule.range.map_or(String::new(), |(s, e)| {
                    format!(" overlapping bytes {s}..{e}")
                });
                let count = rule
                    .remaining
                    .map_or("until `clear`".to_string(), |n| format!("for the next {n}"));
                format!(
                    "disk-error: {} operations{range} fail with EIO {count}",
                    rule.op.name()
                )
            }
            FaultCmd::VolatileCache { on: true } => {
                st.volatile = true;
                "volatile-cache on: writes stay in memory until a flush".into()
            }
            FaultCmd::VolatileCache { on: false } => {
                st.write_out_all().map_err(|e| e.to_string())?;
                st.volatile = false;
                "volatile-cache off: cache written out".into()
            }
            FaultCmd::MetaDelay { ms } => {
                if *ms > META_DELAY_MS_MAX {
                    return Err(format!(
                        "meta-delay {ms}: at most {META_DELAY_MS_MAX} ms (a delay, not a hang)"
                    ));
                }
                st.meta_delay = Duration::from_millis(*ms);
                format!("meta-delay: every metadata write takes {ms} ms longer")
            }
            FaultCmd::DiskDelay { ms } => {
                if *ms > DISK_DELAY_MS_MAX {
                    return Err(format!(
                        "disk-delay {ms}: at most {DISK_DELAY_MS_MAX} ms (a delay, not a hang)"
                    ));
                }
                st.data_delay = Duration::from_millis(*ms);
                format!("disk-delay: every data write takes {ms} ms longer")
            }
            FaultCmd::Clear => {
                st.rules.clear();
                st.write_out_all().map_err(|e| e.to_string())?;
                st.volatile = false;
                st.meta_delay = Duration::ZERO;
                st.data_delay = Duration::ZERO;
                "clear: no disk errors, no delays, volatile cache off (written out)".into()
            }
            FaultCmd::PowerLoss => {
                let dropped = st.data.pages.len() + st.meta.pages.len();
                st.powered_off = true;
                st.volatile = false;
                st.meta_delay = Duration::ZERO;
                st.data_delay = Duration::ZERO;
                st.rules.clear();
                st.data = Overlay::default();
                st.meta = Overlay::default();
                format!("power-loss: {dropped} cached pages dropped; repd ends now")
            }
        };
        tracing::warn!("fault hook: {message}");
        Ok(message)
    }
}

/// The control socket's `fault` request.
pub fn handle(hook: &FaultHook, status: impl FnOnce() -> Status, cmd: &FaultCmd) -> Response {
    match hook.apply(cmd) {
        Ok(message) => Response::Ok {
            message,
            status: Box::new(status()),
        },
        Err(message) => Response::Error {
            message,
            exit_code: FAULT_REFUSED_EXIT,
        },
    }
}

/// Right after `power-loss` was applied (before the control loop yields to any other task):
/// send the reply with a plain non-blocking send, then end the process the way a power cut
/// ends a machine, with SIGKILL: no shutdown path, no metadata write, no goodbye to the peer,
/// and no other task gets to run in between.
pub fn cut_power_if_lost(hook: &FaultHook, stream: &impl AsRawFd, reply: &Response) {
    if !hook.powered_off() {
        return;
    }
    if let Ok(mut line) = crate::control::encode_line(reply) {
        line.push('\n');
        let mut rest = line.as_bytes();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        while let Ok(n) = nix::sys::socket::send(stream.as_raw_fd(), rest, flags) {
            rest = rest.get(n..).unwrap_or_default();
            if n == 0 || rest.is_empty() {
                break;
            }
        }
    }
    tracing::warn!("fault hook: power cut, SIGKILL to self");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // Not reached; should raise fail, leave without unwinding or running destructors.
    std::process::abort();
}

/// Open the backing device and the metadata behind the hook (the driver's `open_disk`).
pub fn open(
    hook: &FaultHook,
    view: &NodeView,
) -> Result<(FaultDisk, MetaHandle, AttachInfo), DiskError> {
    let disk = FaultDisk::open(&view.disk, hook.clone())?;
    let internal = matches!(view.meta_disk, MetaDisk::Internal);
    let (meta, info) =
        MetaHandle::open_with(view, disk.size_bytes, &|file| hook.meta_dev(file, internal))?;
    Ok((disk, meta, info))
}

/// `BackingDisk` behind the hook: same interface, same results when no fault is set.
pub struct FaultDisk {
    inner: BackingDisk,
    /// A handle of our own for the cached (synchronous) reads.
    file: Arc<File>,
    hook: FaultHook,
    pub size_bytes: u64,
}

fn range(offset: u64, len: u64) -> Option<(u64, u64)> {
    Some((offset, offset.saturating_add(len)))
}

/// `Fault` of `op` on the backing disk at `path`, for `map_err`.
fn fault(op: Op, path: &Path) -> impl FnOnce(FaultError) -> DiskError + '_ {
    move |source| DiskError::Fault {
        device: Device::Backing,
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl FaultDisk {
    pub fn open(path: &Path, hook: FaultHook) -> Result<FaultDisk, DiskError> {
        let inner = BackingDisk::open(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Arc::new)
            .map_err(DiskError::io(Device::Backing, Op::Open, path))?;
        hook.attach(Dev::Data, Arc::clone(&file), inner.size_bytes);
        Ok(FaultDisk {
            size_bytes: inner.size_bytes,
            inner,
            file,
            hook,
        })
    }

    pub async fn read(&self, offset: u64, len: u32) -> (Result<(), DiskError>, Vec<u8>) {
        let path = &self.inner.path;
        if let Err(e) = self
            .hook
            .inject(Dev::Data, Kind::Read, range(offset, u64::from(len)))
        {
            return (Err(fault(Op::Read, path)(e)), vec![0u8; len as usize]);
        }
        let mut buf = vec![0u8; len as usize];
        match self
            .hook
            .cached_read(Dev::Data, &self.file, &mut buf, offset)
        {
            Some(r) => (
                r.map_err(DiskError::io(Device::Backing, Op::Read, path)),
                buf,
            ),
            None => self.inner.read(offset, len).await,
        }
    }

    /// `BackingDisk::read_sparse` with the faults of `read`. While the volatile cache holds
    /// pages the file's holes say nothing about them: the range is read whole, overlay laid
    /// over it, and only the zero check applies.
    pub async fn read_sparse(&self, offset: u64, len: u32) -> Result<Vec<Extent>, DiskError> {
        let path = &self.inner.path;
        self.hook
            .inject(Dev::Data, Kind::Read, range(offset, u64::from(len)))
            .map_err(fault(Op::Read, path))?;
        if !self.hook.overlaid(Dev::Data) {
            return self.inner.read_sparse(offset, len).await;
        }
        let (r, buf) = self.read(offset, len).await;
        r?;
        let mut out = Vec::new();
        split_zero_blocks(offset, buf, &mut out);
        Ok(out)
    }

    pub async fn write(
        &self,
        offset: u64,
        buf: Vec<u8>,
        fua: bool,
    ) -> (Result<(), DiskError>, Vec<u8>) {
        let path = &self.inner.path;
        self.hook.delay_data_write().await;
        let r = range(offset, buf.len() as u64);
        if let Err(e) = self.hook.inject(Dev::Data, Kind::Write { fua }, r) {
            return (Err(fault(Op::Write, path)(e)), buf);
        }
        match self
            .hook
            .cached_write(Dev::Data, offset, Src::Bytes(&buf), fua)
        {
            Some(r) => (r.map_err(fault(Op::Write, path)), buf),
            None => self.inner.write(offset, buf, fua).await,
        }
    }

    /// `BackingDisk::write_now` with the faults of `write`.
    pub fn write_now(&self, offset: u64, buf: &[u8], fua: bool) -> Option<Result<(), DiskError>> {
        if !self.inner.writes_now(buf.len(), fua) || self.hook.data_delayed() {
            return None;
        }
        let path = &self.inner.path;
        let r = range(offset, buf.len() as u64);
        if let Err(e) = self.hook.inject(Dev::Data, Kind::Write { fua }, r) {
            return Some(Err(fault(Op::Write, path)(e)));
        }
        match self
            .hook
            .cached_write(Dev::Data, offset, Src::Bytes(buf), fua)
        {
            Some(r) => Some(r.map_err(fault(Op::Write, path))),
            None => self.inner.write_now(offset, buf, fua),
        }
    }

    pub async fn flush(&self) -> Result<(), DiskError> {
        let path = &self.inner.path;
        self.hook
            .inject(Dev::Data, Kind::Flush, None)
            .map_err(fault(Op::Flush, path))?;
        match self.hook.cached_flush(Dev::Data) {
            Some(r) => r.map_err(fault(Op::Flush, path)),
            None => self.inner.flush().await,
        }
    }

    /// The data flush that precedes metadata writes (on the metadata thread): a flush like any
    /// other for the hook.
    pub fn data_flusher(&self) -> Result<FaultFlush, DiskError> {
        Ok(FaultFlush {
            inner: self.inner.data_flusher()?,
            path: self.inner.path.clone(),
            hook: self.hook.clone(),
        })
    }

    pub async fn zero(
        &self,
        offset: u64,
        len: u32,
        allocate: bool,
        fua: bool,
    ) -> Result<(), DiskError> {
        let path = &self.inner.path;
        let len64 = u64::from(len);
        self.hook.delay_data_write().await;
        self.hook
            .inject(Dev::Data, Kind::Write { fua }, range(offset, len64))
            .map_err(fault(Op::WriteZeroes, path))?;
        match self
            .hook
            .cached_write(Dev::Data, offset, Src::Zeros(len64), fua)
        {
            Some(r) => r.map_err(fault(Op::WriteZeroes, path)),
            None => self.inner.zero(offset, len, allocate, fua).await,
        }
    }
}

/// `BackingFlush` behind the hook, for the metadata thread.
pub struct FaultFlush {
    inner: BackingFlush,
    path: std::path::PathBuf,
    hook: FaultHook,
}

impl DataFlush for FaultFlush {
    fn flush_data(&self) -> Result<(), DiskError> {
        let _gate = self.hook.gate();
        let path = &self.path;
        self.hook
            .inject(Dev::Data, Kind::Flush, None)
            .map_err(fault(Op::FlushBeforeMeta, path))?;
        match self.hook.cached_flush(Dev::Data) {
            Some(r) => r.map_err(fault(Op::FlushBeforeMeta, path)),
            None => self.inner.flush_data(),
        }
    }
}

/// The metadata device behind the hook.
struct FaultMetaDev {
    file: File,
    hook: FaultHook,
}

impl MetaDev for FaultMetaDev {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let _gate = self.hook.gate();
        self.hook
            .inject(Dev::Meta, Kind::Read, None)
            .map_err(FaultError::into_io)?;
        match self.hook.cached_read(Dev::Meta, &self.file, buf, off) {
            Some(r) => r,
            None => self.file.read_exact_at(buf, off),
        }
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let _gate = self.hook.gate();
        self.hook
            .inject(Dev::Meta, Kind::Write { fua: false }, None)
            .map_err(FaultError::into_io)?;
        // Outside the state lock: the data path goes on meanwhile, as with a slow meta disk.
        let delay = self.hook.lock().meta_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        match self
            .hook
            .cached_write(Dev::Meta, off, Src::Bytes(buf), false)
        {
            Some(r) => r.map_err(FaultError::into_io),
            None => self.file.write_all_at(buf, off),
        }
    }

    fn flush(&self) -> io::Result<()> {
        let _gate = self.hook.gate();
        self.hook
            .inject(Dev::Meta, Kind::Flush, None)
            .map_err(FaultError::into_io)?;
        match self.hook.cached_flush(Dev::Meta) {
            Some(r) => r.map_err(FaultError::into_io),
            None => self.file.sync_data(),
        }
    }

    fn size_bytes(&self) -> io::Result<u64> {
        MetaDev::size_bytes(&self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let t = tempfile::NamedTempFile::new().expect("temp file");
        t.as_file().write_all_at(bytes, 0).expect("fill");
        let f = Arc::new(t.reopen().expect("reopen"));
        (t, f)
    }

    fn file_bytes(f: &File, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        f.read_exact_at(&mut v, 0).expect("read back");
        v
    }

    fn cmd(hook: &FaultHook, c: FaultCmd) {
        hook.apply(&c).expect("fault command");
    }

    #[test]
    fn the_file_holds_only_what_a_flush_or_fua_made_durable() {
        let (_t, f) = temp_file(&[0x11; 4 * PAGE as usize]);
        let hook = FaultHook::default();
        hook.attach(Dev::Data, Arc::clone(&f), 4 * PAGE);
        cmd(&hook, FaultCmd::VolatileCache { on: true });
        let w = |off: u64, b: &[u8], fua| {
            hook.cached_write(Dev::Data, off, Src::Bytes(b), fua)
                .expect("cache on")
                .expect("cached write");
        };
        w(0, &[0xaa; 100], false); // partial page: read-modify-write
        assert!(hook.cached_flush(Dev::Data).expect("cache on").is_ok());
        w(PAGE, &[0xbb; PAGE as usize], false);
        w(2 * PAGE + 10, &[0xcc; 20], true);
        hook.cached_write(Dev::Data, 3 * PAGE, Src::Zeros(PAGE), false)
            .expect("cache on")
            .expect("cached zero");
        // Reads see everything.
        let mut buf = vec![0u8; 4 * PAGE as usize];
        hook.cached_read(Dev::Data, &f, &mut buf, 0)
            .expect("cache on")
            .expect("read");
        assert_eq!(&buf[..100], &[0xaa; 100]);
        assert_eq!(buf[100], 0x11);
        assert_eq!(
            &buf[PAGE as usize..2 * PAGE as usize],
            &[0xbb; PAGE as usize]
        );
        assert_eq!(
            &buf[2 * PAGE as usize + 10..2 * PAGE as usize + 30],
            &[0xcc; 20]
        );
        assert_eq!(&buf[3 * PAGE as usize..], &[0u8; PAGE as usize]);
        // The file: the flushed write and the FUA write, nothing else.
        let on_disk = file_bytes(&f, 4 * PAGE as usize);
        assert_eq!(&on_disk[..100], &[0xaa; 100]);
        assert_eq!(
            &on_disk[PAGE as usize..2 * PAGE as usize],
            &[0x11; PAGE as usize]
        );
        assert_eq!(
            &on_disk[2 * PAGE as usize + 10..2 * PAGE as usize + 30],
            &[0xcc; 20]
        );
        assert_eq!(&on_disk[3 * PAGE as usize..], &[0x11; PAGE as usize]);
        // Power loss: the file stays as it is, every further operation fails.
        cmd(&hook, FaultCmd::PowerLoss);
        assert!(hook.powered_off());
        assert!(matches!(
            hook.inject(Dev::Data, Kind::Read, None),
            Err(FaultError::PoweredOff)
        ));
        assert_eq!(file_bytes(&f, 4 * PAGE as usize), on_disk);
        assert!(hook.apply(&FaultCmd::Clear).is_err());
    }

    #[test]
    fn volatile_cache_off_writes_the_cache_out() {
        let (_t, f) = temp_file(&[0u8; 2 * PAGE as usize]);
        let hook = FaultHook::default();
        hook.attach(Dev::Data, Arc::clone(&f), 2 * PAGE);
        cmd(&hook, FaultCmd::VolatileCache { on: true });
        hook.cached_write(Dev::Data, 5, Src::Bytes(&[7; PAGE as usize]), false)
            .expect("cache on")
            .expect("write");
        assert_eq!(
            file_bytes(&f, 2 * PAGE as usize),
            vec![0u8; 2 * PAGE as usize]
        );
        cmd(&hook, FaultCmd::Clear);
        let on_disk = file_bytes(&f, 2 * PAGE as usize);
        assert_eq!(&on_disk[5..5 + PAGE as usize], &[7; PAGE as usize]);
        assert!(hook
            .cached_write(Dev::Data, 0, Src::Zeros(1), false)
            .is_none());
        assert!(hook.cached_flush(Dev::Data).is_none());
    }

    #[test]
    fn a_reattach_keeps_the_cache_of_the_same_device_and_writes_out_another_s() {
        let (t, f) = temp_file(&[0u8; PAGE as usize]);
        let hook = FaultHook::default();
        hook.attach(Dev::Meta, Arc::clone(&f), PAGE);
        cmd(&hook, FaultCmd::VolatileCache { on: true });
        hook.cached_write(Dev::Meta, 0, Src::Bytes(&[9; 8]), false)
            .expect("cache on")
            .expect("write");
        hook.attach(Dev::Meta, Arc::new(t.reopen().expect("reopen")), PAGE);
        assert_eq!(file_bytes(&f, 8), vec![0u8; 8], "same device: still cached");
        let (_t2, other) = temp_file(&[0u8; PAGE as usize]);
        hook.attach(Dev::Meta, other, PAGE);
        assert_eq!(
            file_bytes(&f, 8),
            vec![9u8; 8],
            "written out to its own device"
        );
    }

    #[test]
    fn disk_error_rules_match_op_range_and_count() {
        let hook = FaultHook::default();
        let rule = |op, offset, length, count| FaultCmd::DiskError {
            op,
            offset,
            length,
            count,
        };
        cmd(&hook, rule(FaultOp::Read, Some(4096), Some(4096), Some(2)));
        let read = |off| hook.inject(Dev::Data, Kind::Read, range(off, 512));
        assert!(read(0).is_ok(), "outside the range");
        assert!(hook
            .inject(Dev::Data, Kind::Write { fua: false }, range(4096, 512))
            .is_ok());
        assert!(read(4096 + 512).is_err());
        assert!(read(3584 + 1).is_err(), "overlapping counts");
        assert!(read(4096).is_ok(), "count exhausted");

        // Metadata: only internal, only unranged write/flush/any rules.
        cmd(&hook, rule(FaultOp::Write, None, None, None));
        assert!(hook
            .inject(Dev::Meta, Kind::Write { fua: false }, None)
            .is_ok());
        hook.lock().meta_internal = true;
        assert!(hook
            .inject(Dev::Meta, Kind::Write { fua: false }, None)
            .is_err());
        assert!(hook.inject(Dev::Meta, Kind::Read, None).is_ok());
        assert!(hook.inject(Dev::Data, Kind::Flush, None).is_ok());
        cmd(&hook, FaultCmd::Clear);
        assert!(hook
            .inject(Dev::Meta, Kind::Write { fua: false }, None)
            .is_ok());

        cmd(&hook, rule(FaultOp::Flush, None, None, Some(1)));
        assert!(hook
            .inject(Dev::Data, Kind::Write { fua: false }, range(0, 1))
            .is_ok());
        assert!(
            hook.inject(Dev::Data, Kind::Write { fua: true }, range(0, 1))
                .is_err(),
            "a FUA write flushes"
        );
        assert!(hook.inject(Dev::Data, Kind::Flush, None).is_ok());
        cmd(&hook, rule(FaultOp::Any, Some(0), Some(10), None));
        assert!(
            hook.inject(Dev::Data, Kind::Flush, None).is_ok(),
            "a flush has no range"
        );
        assert!(
            hook.inject(Dev::Meta, Kind::Flush, None).is_ok(),
            "ranges are data-only"
        );
        assert!(hook.inject(Dev::Data, Kind::Read, range(9, 1)).is_err());
    }
}
