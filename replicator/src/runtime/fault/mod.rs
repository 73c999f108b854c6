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

mod command;
mod disk;
mod meta_dev;
mod overlay;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::control::fault::{DiskErrorRule, FaultOp};
use crate::meta::store::MetaDev;

pub use super::fault_error::FaultError;
pub use command::{cut_power_if_lost, handle};
pub use disk::{open, FaultDisk, FaultFlush};
use meta_dev::FaultMetaDev;
use overlay::{Overlay, Src};

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
}
