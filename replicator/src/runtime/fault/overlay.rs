//! The volatile cache's overlay: the writes of one path (data or metadata) not yet covered by
//! a completed flush, kept as 4 KiB pages in memory and written out to the device on a flush.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::FaultError;

/// Overlay page size: the data area and the metadata area are both 4 KiB aligned, so no page
/// is shared between the two overlays.
pub(super) const PAGE: u64 = 4096;
/// Largest single pwrite when an overlay is written out (contiguous pages are coalesced).
const WRITE_OUT_RUN_BYTES: usize = 1 << 20;

/// What a write puts into the overlay.
#[derive(Clone, Copy)]
pub(super) enum Src<'a> {
    Bytes(&'a [u8]),
    Zeros(u64),
}

impl Src<'_> {
    pub(super) fn len(&self) -> u64 {
        match self {
            Src::Bytes(b) => b.len() as u64,
            Src::Zeros(n) => *n,
        }
    }
}

pub(super) enum Page {
    /// A page that reads back as zeroes (TRIM / WRITE_ZEROES), without 4 KiB of memory.
    Zero,
    Bytes(Box<[u8]>),
}

/// Writes of one path not yet covered by a completed flush, by 4 KiB page index.
#[derive(Default)]
pub(super) struct Overlay {
    /// Where the pages go on a flush (a handle of its own, so a detached disk can still be
    /// written out).
    pub(super) file: Option<Arc<File>>,
    /// Device size: pages are clamped to it when written out.
    pub(super) size: u64,
    pub(super) pages: BTreeMap<u64, Page>,
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

    pub(super) fn write(&mut self, off: u64, src: Src<'_>) -> Result<(), FaultError> {
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
    pub(super) fn patch(&self, buf: &mut [u8], off: u64) {
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
    pub(super) fn write_out(&mut self) -> Result<(), FaultError> {
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
    pub(super) fn write_through(&self, off: u64, src: Src<'_>) -> Result<(), FaultError> {
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
