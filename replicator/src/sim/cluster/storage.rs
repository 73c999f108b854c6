//! The simulated storage under the engines: metadata jobs done in order by a metadata thread,
//! the metadata device opened as the daemon opens it, and the data device's client and peer
//! operations carried out on the `SimDisk` (telling the model what completed).

use std::time::Duration;

use super::world::{Buffer, Client, ClientKind, Cluster};
use crate::core::failure::{Device, MetaProblem, Op};
use crate::core::{DiskOpKind, MetaOpKind, OpenFailure, PeerDiskOp, ReqId};
use crate::meta::store::{MetaDev, MetaStore};
use crate::sim::config::SECTOR;

pub(super) fn io_failure(e: &std::io::Error) -> crate::core::IoFailure {
    crate::core::IoFailure {
        errno: e.raw_os_error().unwrap_or(5),
        message: e.to_string(),
    }
}

pub(super) fn failing_disk() -> std::io::Error {
    std::io::Error::from_raw_os_error(5)
}

impl Cluster {
    /// How long from now until the metadata thread of node `i` finishes the next job: it
    /// works through its queue in order, each job taking a while.
    pub(super) fn meta_queue_delay(&mut self, i: usize) -> Duration {
        let start = self.nodes[i].meta_free_at.max(self.now);
        let done = start + self.rand_us(20, 400);
        self.nodes[i].meta_free_at = done;
        done - self.now
    }

    pub(super) fn apply_meta(
        &mut self,
        i: usize,
        op: &MetaOpKind,
    ) -> Result<(), crate::core::IoFailure> {
        let fail = |e: String| crate::core::IoFailure {
            errno: 5,
            message: e,
        };
        if op.flushes_data_first() {
            // The runtime flushes the data device before such metadata (runtime/driver/disk_io.rs): model that
            // the flush really happened, and that it can fail.
            if self.nodes[i].disk_failing {
                return Err(fail(
                    "data flush before metadata: Input/output error".into(),
                ));
            }
            if let Err(e) = self.nodes[i].disk.flush() {
                self.nodes[i].unreliable += 1;
                return Err(fail(format!("data flush before metadata: {e}")));
            }
        }
        let n = &mut self.nodes[i];
        let store = n
            .meta
            .as_mut()
            .ok_or_else(|| fail("no metadata open".into()))?;
        let r = crate::meta::attach::apply(store, op).map_err(|e| fail(e.to_string()));
        if n.meta_dev.dead() {
            n.dying = true;
        }
        r
    }

    pub(super) fn open_meta(
        &mut self,
        i: usize,
    ) -> Result<Box<crate::core::AttachInfo>, OpenFailure> {
        let dev: Box<dyn MetaDev> = Box::new(self.nodes[i].meta_dev.clone());
        let store = MetaStore::open_external(dev, None, self.cfg.device_bytes).map_err(|e| {
            OpenFailure::Metadata {
                device: Device::Meta,
                op: Op::OpenMetadata,
                path: format!("sim-meta-{}", self.nodes[i].name).into(),
                problem: MetaProblem::from(&e),
            }
        })?;
        let info = crate::meta::attach::attach_info(&store, None);
        self.nodes[i].meta = Some(store);
        Ok(Box::new(info))
    }

    /// Whether node `i`'s superblock, as its metadata device holds it now, says the disk was
    /// closed clean (no activity-log replay on the next attach).
    pub fn superblock_clean(&self, i: usize) -> Result<bool, String> {
        let dev: Box<dyn MetaDev> = Box::new(self.nodes[i].meta_dev.clone());
        let store = MetaStore::open_external(dev, None, self.cfg.device_bytes)
            .map_err(|e| e.to_string())?;
        Ok(!crate::meta::attach::attach_info(&store, None).unclean)
    }

    /// Peer I/O (replicated and resync writes, reads, barrier flushes) on node `node`'s disk.
    pub(super) fn peer_disk_op(
        &mut self,
        node: usize,
        op: PeerDiskOp,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let n = &mut self.nodes[node];
        match op {
            _ if n.disk_failing => Err(failing_disk()),
            PeerDiskOp::Write { offset, data, fua } => {
                n.disk.write(&data, offset, fua).map(|()| None)
            }
            PeerDiskOp::Zero {
                offset, len, fua, ..
            } => n.disk.zero(offset, u64::from(len), fua).map(|()| None),
            PeerDiskOp::Read { offset, len } | PeerDiskOp::ReadSparse { offset, len } => {
                n.disk.read_vec(offset, len as usize).map(Some)
            }
            PeerDiskOp::Flush => {
                let r = n.disk.flush().map(|()| None);
                if r.is_err() {
                    n.unreliable += 1;
                }
                r
            }
        }
    }

    /// A client request's disk operation completes: do it on the SimDisk and tell the model.
    pub(super) fn client_disk_op(
        &mut self,
        node: usize,
        req: ReqId,
        op: DiskOpKind,
        data: Option<Buffer>,
    ) -> std::io::Result<()> {
        let n = &mut self.nodes[node];
        let result = match op {
            _ if n.disk_failing => Err(failing_disk()),
            DiskOpKind::Read { offset, len } => {
                let (buf, r) = match n.disk.read_vec(offset, len as usize) {
                    Ok(buf) => (buf, Ok(())),
                    Err(e) => (vec![0; len as usize], Err(e)),
                };
                if let Some(Client {
                    kind: ClientKind::Read { data, .. },
                    ..
                }) = n.clients.get_mut(&req)
                {
                    *data = Some(buf);
                }
                r
            }
            DiskOpKind::Write { offset, len, fua } => match data {
                Some(d) if d.len() == len as usize && offset == d.first * SECTOR => {
                    n.disk.write_tag(u64::from(d.wid), d.first, d.count, fua)
                }
                Some(d) if d.len() == len as usize => n.disk.write(&d.bytes(), offset, fua),
                _ => panic!(
                    "invariant violated: node {node} writes {len} bytes for request {req}, whose buffer has {:?}",
                    data.map(|d| d.len())
                ),
            },
            DiskOpKind::Flush => {
                let r = n.disk.flush();
                if r.is_err() {
                    n.unreliable += 1;
                }
                r
            }
            DiskOpKind::Trim { offset, len, fua } | DiskOpKind::WriteZeroes { offset, len, fua } => {
                n.disk.zero(offset, u64::from(len), fua)
            }
        };
        match self.nodes[node].clients.get(&req).map(|c| &c.kind) {
            Some(ClientKind::Write { wid, .. }) => self.model.local_done(*wid, result.is_ok()),
            Some(ClientKind::Flush { flush }) => {
                self.model.flush_local_done(*flush, result.is_ok())
            }
            _ => {}
        }
        result
    }
}
