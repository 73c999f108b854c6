//! The driver's metadata path.
//!
//! `MetaHandle` opens the `MetaStore` of the resource's backing (internal) or external meta
//! disk at attach and turns it into the engine's `AttachInfo`; that read is synchronous, on the
//! io_uring thread, once per attach.
//!
//! `MetaWriter` then owns it on a thread of its own ("rep-meta") and performs the engine's
//! metadata updates there, so that an activity-log transaction or a superblock (pwrite +
//! fdatasync, `md-flushes`) never stalls pings, acks and data I/O on the io_uring thread. The
//! guarantees the engine relies on are those of the synchronous path it replaces:
//!
//! - **Order.** One thread takes the jobs from one FIFO channel and answers through another
//!   FIFO channel, so updates reach the device, and their `Input::MetaDone` reach the engine,
//!   in the order the engine emitted them; `CloseDisk` is a job in the same queue, so the
//!   final superblock is written before the device is closed and `DiskClosed` comes after its
//!   `MetaDone`.
//! - **Data first.** An update with `flushes_data_first()` fdatasyncs the data device on this
//!   thread before it writes; the flush starts after the update was emitted, hence after every
//!   data write whose completion the engine had seen, and covers them.
//! - **Durable before done.** `MetaDone` is sent after `MetaStore` returned, which is after its
//!   own flush of the metadata device.
//!
//! Never: touches the data area, or reorders two jobs.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use rep_resources::{MetaDisk, NodeView};
use tokio::sync::mpsc;

use super::backing::BackingFlush;
use super::error::{Device, DiskError, Op};
use super::port::Feed;
use crate::core::{AttachInfo, Input, IoId, IoResult, MetaOpKind};
use crate::meta::store::{MetaDev, MetaStore};

/// The metadata of the attached device, and where it lives (for error messages).
pub struct MetaHandle {
    store: MetaStore,
    device: Device,
    path: PathBuf,
}

fn open_rw(path: &Path, device: Device) -> Result<std::fs::File, DiskError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(DiskError::io(device, Op::Open, path))
}

impl MetaHandle {
    /// Open and validate the metadata; replay the activity log into the bitmap after a crash.
    pub fn open(
        view: &NodeView,
        backing_bytes: u64,
    ) -> Result<(MetaHandle, AttachInfo), DiskError> {
        MetaHandle::open_with(view, backing_bytes, &|file| Box::new(file))
    }

    /// `open`, with the device that holds the metadata (the backing device for internal
    /// metadata, else the meta disk) handed to `wrap` first (the fault hook wraps it).
    pub fn open_with(
        view: &NodeView,
        backing_bytes: u64,
        wrap: &dyn Fn(std::fs::File) -> Box<dyn MetaDev>,
    ) -> Result<(MetaHandle, AttachInfo), DiskError> {
        let (device, path) = match &view.meta_disk {
            MetaDisk::Internal => (Device::Backing, view.disk.clone()),
            MetaDisk::External { path, .. } => (Device::Meta, path.clone()),
        };
        let file = wrap(open_rw(&path, device)?);
        let store = match &view.meta_disk {
            MetaDisk::Internal => MetaStore::open_internal(file, backing_bytes),
            MetaDisk::External { index, .. } => {
                MetaStore::open_external(file, *index, backing_bytes)
            }
        }
        .map_err(|source| DiskError::Meta {
            device,
            op: Op::OpenMetadata,
            path: path.clone(),
            source,
        })?;
        let info = crate::meta::attach::attach_info(&store, view.disk_conf.size_bytes);
        Ok((
            MetaHandle {
                store,
                device,
                path,
            },
            info,
        ))
    }

    fn apply(&mut self, op: &MetaOpKind) -> Result<(), DiskError> {
        crate::meta::attach::apply(&mut self.store, op).map_err(|source| DiskError::Meta {
            device: self.device,
            op: Op::MetadataWrite,
            path: self.path.clone(),
            source,
        })
    }
}

/// The data flush a metadata update may need first, callable from the metadata thread.
pub trait DataFlush: Send {
    fn flush_data(&self) -> Result<(), DiskError>;
}

impl DataFlush for BackingFlush {
    fn flush_data(&self) -> Result<(), DiskError> {
        BackingFlush::flush_data(self)
    }
}

enum Job {
    /// A device was opened: its metadata and the flush of its data.
    Attach(Box<MetaHandle>, Box<dyn DataFlush>),
    Write {
        io: IoId,
        op: MetaOpKind,
    },
    /// Close after the jobs before it (`Output::CloseDisk`).
    Close {
        io: IoId,
    },
}

enum Done {
    Write { io: IoId, result: IoResult },
    Closed { io: IoId },
}

/// The metadata thread's queue (see the module header).
pub struct MetaWriter {
    jobs: crossbeam::channel::Sender<Job>,
}

impl MetaWriter {
    /// Start the thread and the task that feeds its completions to the engine.
    pub fn start(feed: Feed) -> std::io::Result<MetaWriter> {
        let (jobs, rx) = crossbeam::channel::unbounded::<Job>();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        std::thread::Builder::new()
            .name("rep-meta".into())
            .spawn(move || run(&rx, &done_tx))?;
        tokio_uring::spawn(async move {
            while let Some(done) = done_rx.recv().await {
                feed(match done {
                    Done::Write { io, result } => Input::MetaDone { io, result },
                    Done::Closed { io } => Input::DiskClosed { io },
                });
            }
        });
        Ok(MetaWriter { jobs })
    }

    pub fn attach(&self, meta: MetaHandle, flush: Box<dyn DataFlush>) {
        self.send(Job::Attach(Box::new(meta), flush));
    }

    pub fn write(&self, io: IoId, op: MetaOpKind) {
        self.send(Job::Write { io, op });
    }

    pub fn close(&self, io: IoId) {
        self.send(Job::Close { io });
    }

    fn send(&self, job: Job) {
        // The thread lives as long as the process (it returns only when this sender is gone).
        let _ = self.jobs.send(job);
    }
}

/// The metadata thread: one job at a time, in queue order.
fn run(jobs: &crossbeam::channel::Receiver<Job>, done: &mpsc::UnboundedSender<Done>) {
    let mut attached: Option<(Box<MetaHandle>, Box<dyn DataFlush>)> = None;
    while let Ok(job) = jobs.recv() {
        let reply = match job {
            Job::Attach(meta, flush) => {
                attached = Some((meta, flush));
                continue;
            }
            Job::Write { io, op } => {
                let result = match attached.as_mut() {
                    None => Err(DiskError::NotAttached),
                    Some((meta, flush)) => {
                        let flushed = if op.flushes_data_first() {
                            flush.flush_data()
                        } else {
                            Ok(())
                        };
                        flushed.and_then(|()| meta.apply(&op))
                    }
                };
                Done::Write {
                    io,
                    result: result.map_err(Into::into),
                }
            }
            Job::Close { io } => {
                attached = None;
                Done::Closed { io }
            }
        };
        if done.send(reply).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::meta::layout::MetaDiskKind;
    use crate::meta::store::create_md;

    const DEV_BYTES: u64 = 64 << 20;

    /// What reached the devices, in order.
    type Log = Arc<Mutex<Vec<&'static str>>>;

    /// An in-memory metadata device that logs its writes and flushes.
    struct LogDev {
        data: Mutex<Vec<u8>>,
        log: Log,
    }

    impl MetaDev for LogDev {
        fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
            let d = self.data.lock().map_err(|_| io::Error::other("poisoned"))?;
            buf.copy_from_slice(&d[off as usize..off as usize + buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
            let mut d = self.data.lock().map_err(|_| io::Error::other("poisoned"))?;
            d[off as usize..off as usize + buf.len()].copy_from_slice(buf);
            self.log.lock().expect("log").push("meta write");
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            self.log.lock().expect("log").push("meta flush");
            Ok(())
        }
        fn size_bytes(&self) -> io::Result<u64> {
            Ok(DEV_BYTES)
        }
    }

    struct LogFlush(Log);

    impl DataFlush for LogFlush {
        fn flush_data(&self) -> Result<(), DiskError> {
            self.0.lock().expect("log").push("data flush");
            Ok(())
        }
    }

    fn store(log: &Log) -> MetaStore {
        let dev = LogDev {
            data: Mutex::new(vec![0; DEV_BYTES as usize]),
            log: Arc::clone(log),
        };
        create_md(&dev, None, DEV_BYTES, MetaDiskKind::Internal, 61, 7, false).expect("create-md");
        log.lock().expect("log").clear();
        MetaStore::open_internal(Box::new(dev), DEV_BYTES).expect("open")
    }

    #[test]
    fn jobs_complete_in_order_data_flushed_first_and_close_after_the_writes_before_it() {
        let log: Log = Arc::default();
        let store = store(&log);
        let sb = store.superblock().clone();
        let (jobs, rx) = crossbeam::channel::unbounded();
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let meta = MetaHandle {
            store,
            device: Device::Backing,
            path: "/test".into(),
        };
        jobs.send(Job::Attach(
            Box::new(meta),
            Box::new(LogFlush(Arc::clone(&log))),
        ))
        .expect("send");
        let page = MetaOpKind::BitmapPages {
            pages: vec![(0, vec![0xff; 4096])],
            flush_data: false,
        };
        let superblock = MetaOpKind::Superblock {
            uuids: sb.uuids,
            flags: sb.flags,
            clean: true,
        };
        for (io, op) in [(1, page.clone()), (2, superblock)] {
            jobs.send(Job::Write { io: IoId(io), op }).expect("send");
        }
        jobs.send(Job::Close { io: IoId(3) }).expect("send");
        jobs.send(Job::Write {
            io: IoId(4),
            op: page,
        })
        .expect("send");
        drop(jobs);
        run(&rx, &done_tx);

        let mut order = Vec::new();
        while let Ok(d) = done.try_recv() {
            order.push(match d {
                Done::Write { io, result } => (io.0, result.map_err(|e| e.errno)),
                Done::Closed { io } => (io.0, Ok(())),
            });
        }
        assert_eq!(
            order,
            vec![
                (1, Ok(())),
                (2, Ok(())),
                (3, Ok(())),
                (4, Err(libc::ENODEV))
            ],
            "completions in queue order; nothing attached after the close"
        );
        let log = log.lock().expect("log").clone();
        let first_data_flush = log.iter().position(|e| *e == "data flush");
        assert_eq!(
            log.iter().filter(|e| **e == "data flush").count(),
            1,
            "only the superblock flushes the data first: {log:?}"
        );
        let before = &log[..first_data_flush.expect("a data flush")];
        let after = &log[first_data_flush.expect("a data flush") + 1..];
        assert_eq!(
            before.last(),
            Some(&"meta flush"),
            "the bitmap page is durable first: {log:?}"
        );
        assert!(
            after.contains(&"meta write"),
            "the superblock after the data flush: {log:?}"
        );
        assert_eq!(
            after.last(),
            Some(&"meta flush"),
            "and durable before its completion: {log:?}"
        );
    }
}
