//! The hashing pool (docs/architecture.md §11.1: hashing off the I/O thread): verify and csums digests are
//! computed on crossbeam worker threads and come back to the io_uring thread as inputs.

use tokio::sync::mpsc;

use super::port::Feed;
use crate::core::{HashAlg, Input, IoId};
use crate::digest::Digests;

struct Job {
    io: IoId,
    alg: HashAlg,
    data: Vec<u8>,
}

pub struct Hasher {
    jobs: crossbeam::channel::Sender<Job>,
}

impl Hasher {
    /// Starts `threads` workers and the task that feeds their results to the engine.
    pub fn start(feed: Feed, threads: usize) -> std::io::Result<Hasher> {
        let (jobs, rx) = crossbeam::channel::unbounded::<Job>();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(IoId, Vec<u8>)>();
        for n in 0..threads.max(1) {
            let rx = rx.clone();
            let done = done_tx.clone();
            std::thread::Builder::new()
                .name(format!("hash-{n}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        if done
                            .send((job.io, job.alg.digest_blocks(&job.data)))
                            .is_err()
                        {
                            return;
                        }
                    }
                })?;
        }
        tokio_uring::spawn(async move {
            while let Some((io, digests)) = done_rx.recv().await {
                feed(Input::HashDone { io, digests });
            }
        });
        Ok(Hasher { jobs })
    }

    pub fn submit(&self, io: IoId, alg: HashAlg, data: Vec<u8>) {
        // The workers live as long as the process; a send cannot fail while we run.
        let _ = self.jobs.send(Job { io, alg, data });
    }
}
