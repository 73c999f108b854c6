//! The backing device: a regular file or a block device, driven through io_uring.
//!
//! Regular files use the page cache (durability through fdatasync on FLUSH/FUA, the same
//! contract as a disk's volatile write cache), which is also what the nbdkit file plugin
//! we are measured against does. Block devices are written with O_DIRECT where a request is
//! aligned to the device's logical block size (docs/architecture.md §6.7): a write error then reaches the
//! request that caused it instead of surfacing, once, at some later fdatasync; requests that
//! are not aligned go through the page cache and the next FLUSH. TRIM is implemented as "reads back zeroes" on both kinds, so
//! that two replicas never differ after a discard.

use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio_uring::buf::BoundedBuf;

use super::error::{Device, DiskError, Op};
use crate::core::io::{push_zero, split_zero_blocks, Extent, SPARSE_BLOCK};

/// A buffer a data write can take: a peer packet's `Vec`, or a client write's `Bytes`, which the
/// peer's send queue may still hold (docs/architecture.md §6.2: the payload is not copied).
pub trait WriteBuf: tokio_uring::buf::IoBuf + std::ops::Deref<Target = [u8]> {}
impl<B: tokio_uring::buf::IoBuf + std::ops::Deref<Target = [u8]>> WriteBuf for B {}

const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
/// tmpfs writes up to this size are copied inline; larger ones (resync blocks, big client
/// writes) go through io_uring, whose workers copy them while this thread keeps receiving
/// (1 GiB full sync on /dev/shm: 612 MB/s inline, 570-817 MB/s, median ~700, this way).
const SYNC_WRITE_MAX: usize = 64 * 1024;
/// Zeroes written per step when the device cannot zero a range itself.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Alignment of the bounce buffers for O_DIRECT (covers every logical block size up to 4 KiB).
const DIRECT_ALIGN: usize = 4096;

/// The O_DIRECT handle of a block device.
struct Direct {
    file: tokio_uring::fs::File,
    /// Logical block size: offsets and lengths must be multiples of it.
    block: u64,
}

impl Direct {
    fn fits(&self, offset: u64, len: usize) -> bool {
        offset.is_multiple_of(self.block) && (len as u64).is_multiple_of(self.block) && len > 0
    }
}

/// A zeroed buffer of `len + DIRECT_ALIGN` bytes and the offset at which `len` aligned bytes
/// start (io_uring takes the slice; no unsafe allocation needed).
fn aligned_buffer(len: usize) -> (Vec<u8>, usize) {
    let buf = vec![0u8; len + DIRECT_ALIGN];
    let pad = buf.as_ptr().align_offset(DIRECT_ALIGN);
    (buf, pad)
}

/// The logical block size of a block device, from sysfs (4096 when it cannot be read, which
/// only sends more requests through the page cache).
fn logical_block_size(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let rdev = meta.rdev();
    let path = format!(
        "/sys/dev/block/{}:{}/queue/logical_block_size",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|b| b.is_power_of_two() && *b as usize <= DIRECT_ALIGN)
        .unwrap_or(DIRECT_ALIGN as u64)
}

pub struct BackingDisk {
    pub path: PathBuf,
    file: tokio_uring::fs::File,
    /// Block devices: the O_DIRECT handle for aligned requests.
    direct: Option<Direct>,
    /// Set for memory-backed files (tmpfs): the synchronous path above.
    memory: Option<std::fs::File>,
    /// A plain handle for the data flush that precedes metadata writes (made on the
    /// metadata thread, see `data_flusher`).
    sync_handle: std::fs::File,
    is_block_device: bool,
    pub size_bytes: u64,
}

/// Open the backing device for data I/O. Errors name the path and the fix.
fn open_std(path: &Path) -> Result<(std::fs::File, u64, bool), DiskError> {
    let meta = std::fs::metadata(path).map_err(|source| DiskError::Missing {
        device: Device::Backing,
        path: path.to_path_buf(),
        source,
    })?;
    let is_block_device = meta.file_type().is_block_device();
    if !is_block_device && !meta.is_file() {
        return Err(DiskError::NotADisk {
            device: Device::Backing,
            path: path.to_path_buf(),
        });
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(DiskError::io(Device::Backing, Op::Open, path))?;
    let size_bytes =
        file.seek(SeekFrom::End(0))
            .map_err(DiskError::io(Device::Backing, Op::Size, path))?;
    Ok((file, size_bytes, is_block_device))
}

/// A second handle on the block device with O_DIRECT.
fn open_direct(path: &Path) -> Result<Direct, DiskError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(DiskError::io(Device::Backing, Op::OpenDirect, path))?;
    let meta = file
        .metadata()
        .map_err(DiskError::io(Device::Backing, Op::Stat, path))?;
    Ok(Direct {
        block: logical_block_size(&meta),
        file: tokio_uring::fs::File::from_std(file),
    })
}

/// The data flush that precedes a metadata write, on a handle of its own: it runs on the
/// metadata thread (`metaio`), not on the io_uring thread.
pub struct BackingFlush {
    file: std::fs::File,
    path: PathBuf,
}

impl BackingFlush {
    /// fdatasync: covers every write that completed before it started.
    pub fn flush_data(&self) -> Result<(), DiskError> {
        self.file.sync_data().map_err(DiskError::io(
            Device::Backing,
            Op::FlushBeforeMeta,
            &self.path,
        ))
    }
}

impl BackingDisk {
    pub fn open(path: &Path) -> Result<BackingDisk, DiskError> {
        let (file, size_bytes, is_block_device) = open_std(path)?;
        let on_tmpfs = !is_block_device
            && nix::sys::statfs::fstatfs(&file)
                .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let dup = |f: &std::fs::File| {
            f.try_clone()
                .map_err(DiskError::io(Device::Backing, Op::DuplicateHandle, path))
        };
        let memory = if on_tmpfs { Some(dup(&file)?) } else { None };
        let sync_handle = dup(&file)?;
        let direct = if is_block_device {
            Some(open_direct(path)?)
        } else {
            None
        };
        Ok(BackingDisk {
            path: path.to_path_buf(),
            direct,
            memory,
            sync_handle,
            file: tokio_uring::fs::File::from_std(file),
            is_block_device,
            size_bytes,
        })
    }

    pub async fn read(&self, offset: u64, len: u32) -> (Result<(), DiskError>, Vec<u8>) {
        let _uring = super::busy_poll::UringOp::start();
        if let Some(d) = self
            .direct
            .as_ref()
            .filter(|d| d.fits(offset, len as usize))
        {
            let (buf, pad) = aligned_buffer(len as usize);
            let (res, slice) = d
                .file
                .read_exact_at(buf.slice(pad..pad + len as usize), offset)
                .await;
            let buf = slice.into_inner();
            return (
                res.map_err(self.fail(Op::ReadDirect)),
                buf[pad..pad + len as usize].to_vec(),
            );
        }
        if let Some(f) = &self.memory {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len as usize];
            let r = f
                .read_exact_at(&mut buf, offset)
                .map_err(self.fail(Op::Read));
            return (r, buf);
        }
        let buf = vec![0u8; len as usize];
        let (res, buf) = self.file.read_exact_at(buf, offset).await;
        (res.map_err(self.fail(Op::Read)), buf)
    }

    /// A SyncSource read that reports what reads as zeroes, so that it travels as a zero
    /// range: holes (SEEK_DATA/SEEK_HOLE) are not read at all, and every 4 KiB block read
    /// is checked for zeroes. On a block device the kernel reports the whole device as data
    /// (it has no allocation map to offer through lseek), so there every block is read and
    /// the zero check alone finds the empty space (a thin volume's unprovisioned blocks read
    /// as zeroes).
    pub async fn read_sparse(&self, offset: u64, len: u32) -> Result<Vec<Extent>, DiskError> {
        let _uring = super::busy_poll::UringOp::start();
        let end = offset + u64::from(len);
        let mut out = Vec::new();
        let mut at = offset;
        for (d0, d1) in self.data_ranges(offset, end) {
            push_zero(&mut out, u32::try_from(d0 - at).unwrap_or(u32::MAX));
            let n = u32::try_from(d1 - d0).unwrap_or(u32::MAX);
            let (r, buf) = self.read(d0, n).await;
            r?;
            split_zero_blocks(d0, buf, &mut out);
            at = d1;
        }
        push_zero(&mut out, u32::try_from(end - at).unwrap_or(u32::MAX));
        Ok(out)
    }

    /// The parts of `[start, end)` that may hold data, widened to whole 4 KiB blocks (within
    /// the range) and merged. Where lseek cannot tell (no SEEK_DATA support), all of it.
    fn data_ranges(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        use nix::errno::Errno;
        use nix::unistd::{lseek, Whence};
        use std::os::fd::AsRawFd;
        let fd = self.sync_handle.as_raw_fd();
        let seek = |at: u64, whence| {
            let at = i64::try_from(at).map_err(|_| Errno::EOVERFLOW)?;
            lseek(fd, at, whence).map(|v| u64::try_from(v).unwrap_or(0))
        };
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = start;
        while at < end {
            let data = match seek(at, Whence::SeekData) {
                Ok(d) => d.max(at),
                // No data from `at` to the end of the file.
                Err(Errno::ENXIO) => break,
                Err(_) => {
                    out.push((at, end));
                    break;
                }
            };
            if data >= end {
                break;
            }
            let hole = seek(data, Whence::SeekHole).map_or(end, |h| h.min(end));
            if hole <= data {
                // lseek contradicting itself: read the rest rather than loop.
                out.push((data, end));
                break;
            }
            let d0 = (data - data % SPARSE_BLOCK).max(start);
            let d1 = hole
                .div_ceil(SPARSE_BLOCK)
                .saturating_mul(SPARSE_BLOCK)
                .min(end);
            match out.last_mut() {
                Some(last) if last.1 >= d0 => last.1 = last.1.max(d1),
                _ => out.push((d0, d1)),
            }
            at = d1;
        }
        out
    }

    /// Writes `buf` at `offset` (the client's own buffer, or a peer packet's) and hands it back.
    pub async fn write<B: WriteBuf>(
        &self,
        offset: u64,
        buf: B,
        fua: bool,
    ) -> (Result<(), DiskError>, B) {
        let _uring = super::busy_poll::UringOp::start();
        if let Some(d) = self.direct.as_ref().filter(|d| d.fits(offset, buf.len())) {
            let (mut bounce, pad) = aligned_buffer(buf.len());
            bounce[pad..pad + buf.len()].copy_from_slice(&buf);
            let (res, _) = d
                .file
                .write_all_at(bounce.slice(pad..pad + buf.len()), offset)
                .await;
            if let Err(e) = res {
                return (Err(self.fail(Op::WriteDirect)(e)), buf);
            }
            if fua {
                return (self.flush().await, buf);
            }
            return (Ok(()), buf);
        }
        let (res, buf) = match &self.memory {
            Some(f) if buf.len() <= SYNC_WRITE_MAX => {
                use std::os::unix::fs::FileExt;
                (f.write_all_at(&buf, offset), buf)
            }
            _ => self.file.write_all_at(buf, offset).await,
        };
        if let Err(e) = res {
            return (Err(self.fail(Op::Write)(e)), buf);
        }
        if fua {
            return (self.flush().await, buf);
        }
        (Ok(()), buf)
    }

    /// Whether a write of `len` bytes is done synchronously (memory-backed files, small
    /// writes without FUA): then `write_now` does it, without a task or a completion queue.
    pub fn writes_now(&self, len: usize, fua: bool) -> bool {
        self.memory.is_some() && len <= SYNC_WRITE_MAX && !fua && self.direct.is_none()
    }

    /// The synchronous write of `writes_now`; `None` if this write must go through `write`.
    pub fn write_now(&self, offset: u64, buf: &[u8], fua: bool) -> Option<Result<(), DiskError>> {
        use std::os::unix::fs::FileExt;
        if !self.writes_now(buf.len(), fua) {
            return None;
        }
        let f = self.memory.as_ref()?;
        Some(f.write_all_at(buf, offset).map_err(self.fail(Op::Write)))
    }

    /// `Io` of `op` on this disk, for `map_err`.
    fn fail(&self, op: Op) -> impl FnOnce(io::Error) -> DiskError + '_ {
        DiskError::io(Device::Backing, op, &self.path)
    }

    /// The handle for the data flushes that precede metadata writes (on the metadata thread:
    /// a metadata write that claims data durable must wait for it, the I/O path must not).
    pub fn data_flusher(&self) -> Result<BackingFlush, DiskError> {
        Ok(BackingFlush {
            file: self
                .sync_handle
                .try_clone()
                .map_err(self.fail(Op::DuplicateHandle))?,
            path: self.path.clone(),
        })
    }

    pub async fn flush(&self) -> Result<(), DiskError> {
        let _uring = super::busy_poll::UringOp::start();
        if let Some(f) = &self.memory {
            // tmpfs: the same fdatasync, here. Through io_uring it would be handed to an io-wq
            // worker thread (fsync cannot complete inline), a thread hop and a wake-up per
            // FLUSH for a call that returns at once.
            return f.sync_data().map_err(self.fail(Op::Flush));
        }
        self.file.sync_data().await.map_err(self.fail(Op::Flush))
    }

    /// Make `[offset, offset+len)` read back as zeroes. `allocate` keeps blocks allocated
    /// (WRITE_ZEROES with NO_HOLE semantics are always honoured this way).
    pub async fn zero(
        &self,
        offset: u64,
        len: u32,
        allocate: bool,
        fua: bool,
    ) -> Result<(), DiskError> {
        let _uring = super::busy_poll::UringOp::start();
        let len64 = u64::from(len);
        // Files: ZERO_RANGE keeps the blocks, PUNCH_HOLE frees them. Block devices (Linux
        // blkdev_fallocate): PUNCH_HOLE is a WRITE_ZEROES that may unmap and fails unless the
        // device does it natively; ZERO_RANGE is BLKZEROOUT (the kernel writes zero pages if
        // the device has no WRITE_ZEROES); both need ranges aligned to the logical block.
        let attempts: &[i32] = match (self.is_block_device, allocate) {
            (false, true) => &[FALLOC_FL_ZERO_RANGE],
            (false, false) => &[FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE],
            (true, true) => &[FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE],
            (true, false) => &[
                FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
            ],
        };
        let mut done = false;
        for &flags in attempts {
            match self.file.fallocate(offset, len64, flags).await {
                Ok(()) => {
                    done = true;
                    break;
                }
                // The filesystem or device cannot do it: try the next way, then write zeroes.
                // Any other error is the disk's, and must reach the request.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)
                    ) => {}
                Err(e) => return Err(self.fail(Op::Fallocate)(e)),
            }
        }
        if !done {
            let mut pos = offset;
            let end = offset + len64;
            while pos < end {
                let n = usize::try_from((end - pos).min(ZERO_CHUNK_BYTES as u64))
                    .unwrap_or(ZERO_CHUNK_BYTES);
                let (res, _) = self.file.write_all_at(vec![0u8; n], pos).await;
                res.map_err(self.fail(Op::WriteZeroes))?;
                pos += n as u64;
            }
        }
        if fua {
            self.flush().await?;
        }
        Ok(())
    }
}
