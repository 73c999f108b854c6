//! The metadata path behind the hook: the `MetaDev` under the `MetaStore` (superblock,
//! activity log and bitmap I/O), run on the metadata thread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::overlay::Src;
use super::{Dev, FaultError, FaultHook, Kind};
use crate::meta::store::MetaDev;

/// The metadata device behind the hook.
pub(super) struct FaultMetaDev {
    pub(super) file: File,
    pub(super) hook: FaultHook,
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
