//! Admin commands and client I/O: requests submitted to a node and registered with the data
//! model (the write history), the seeded workload's draws, and each reply checked against the
//! model (a read returns what it allows; a write or flush that became durable-required is on
//! every disk that must hold it).

use std::time::Duration;

use super::world::{Buffer, Client, ClientKind, Cluster};
use crate::core::{AdminCmd, AdminId, ClientOp, Input, Refusal, ReqId, Role};
use crate::sim::config::{Workload, MAX_REQUEST_BYTES, SECTOR};

impl Cluster {
    /// Run an admin command and the cluster until it is answered (at most 10 s).
    pub fn admin(&mut self, i: usize, cmd: AdminCmd) -> Result<String, Refusal> {
        let id = self.admin_nowait(i, cmd);
        for _ in 0..2000 {
            if let Some(r) = self.nodes[i].admin_replies.remove(&id) {
                if let Err(e) = &r {
                    self.log(format!("  refused: {e}"));
                }
                return r;
            }
            if !self.nodes[i].up {
                break;
            }
            self.run_for(Duration::from_millis(5));
        }
        Err(Refusal::MetaIo {
            message: "admin command not answered".into(),
        })
    }

    /// Hand node `i` an admin command and return at once (`admin` waits for the answer).
    pub fn admin_nowait(&mut self, i: usize, cmd: AdminCmd) -> AdminId {
        let id = self.nodes[i].next_admin;
        self.nodes[i].next_admin = self.nodes[i].next_admin.next();
        self.log(format!("{} {:?}", self.nodes[i].name, cmd));
        self.feed(i, Input::Admin { id, cmd });
        id
    }

    pub(super) fn new_req(&mut self) -> ReqId {
        let r = self.next_req;
        self.next_req = self.next_req.next();
        r
    }

    /// Submit a write of `len` bytes at `offset` (multiples of 512) on node `i`.
    pub fn write_at(&mut self, i: usize, offset: u64, len: u64, fua: bool) -> ReqId {
        let (first, count) = (offset / SECTOR, len / SECTOR);
        let wid = self.model.new_write(i, first, count, false, fua);
        self.stats.max_request = self.stats.max_request.max(len);
        self.stats.bytes_written += len;
        let op = ClientOp::Write {
            offset,
            len: len as u32,
            fua,
        };
        self.submit(
            i,
            op,
            ClientKind::Write {
                wid,
                data: Some(Buffer { wid, first, count }),
            },
        )
    }

    /// Submit a TRIM (`trim`) or WRITE_ZEROES of `len` bytes at `offset` on node `i`.
    pub fn zero_at(&mut self, i: usize, offset: u64, len: u64, trim: bool, fua: bool) -> ReqId {
        let wid = self
            .model
            .new_write(i, offset / SECTOR, len / SECTOR, true, fua);
        let len = len as u32;
        let op = if trim {
            ClientOp::Trim { offset, len, fua }
        } else {
            ClientOp::WriteZeroes { offset, len, fua }
        };
        self.submit(i, op, ClientKind::Write { wid, data: None })
    }

    pub fn flush(&mut self, i: usize) -> ReqId {
        let flush = self.model.flush_submitted(i);
        self.submit(i, ClientOp::Flush, ClientKind::Flush { flush })
    }

    pub fn read_at(&mut self, i: usize, offset: u64, len: u64) -> ReqId {
        let floors = self.model.read_floors(offset / SECTOR, len / SECTOR);
        let epoch = (self.nodes[0].unreliable, self.nodes[1].unreliable);
        let op = ClientOp::Read {
            offset,
            len: len as u32,
        };
        self.submit(
            i,
            op,
            ClientKind::Read {
                floors,
                data: None,
                epoch,
            },
        )
    }

    pub(super) fn submit(&mut self, i: usize, op: ClientOp, kind: ClientKind) -> ReqId {
        let req = self.new_req();
        let to_secondary = self.nodes[i].engine.role() != Role::Primary;
        self.nodes[i].clients.insert(
            req,
            Client {
                op,
                kind,
                to_secondary,
            },
        );
        self.feed(i, Input::Client { req, op });
        req
    }

    /// Draw a request size in sectors: mostly small, some up to 1 MiB, a few up to 32 MiB.
    pub(super) fn draw_len(&mut self, w: &Workload) -> u64 {
        let r = self.rng.next_u64();
        let pick = r % 1000;
        let x = r >> 16;
        let sectors = if pick < u64::from(w.huge) {
            // 1 MiB + 1 sector ..= 32 MiB: always split into several peer packets.
            let lo = (1 << 20) / SECTOR + 1;
            let hi = MAX_REQUEST_BYTES / SECTOR;
            lo + x % (hi - lo + 1)
        } else if pick < u64::from(w.huge + w.large) {
            128 + x % (2048 - 128 + 1)
        } else {
            // 512 B .. 64 KiB, small ones more often.
            let cap = [8u64, 32, 128][(x % 3) as usize];
            1 + (x >> 4) % cap
        };
        sectors.min(self.cfg.device_bytes / SECTOR)
    }

    /// Submit one random client request on node `i` (see `Workload`).
    pub fn client_io(&mut self, i: usize) {
        let w = self.workload;
        let r = self.rng.next_u64() % 1000;
        let device_sectors = self.cfg.device_bytes / SECTOR;
        let place = |c: &mut Cluster| {
            let sectors = c.draw_len(&w);
            let r2 = c.rng.next_u64();
            let mut first = r2 % (device_sectors - sectors + 1);
            if (r2 >> 40).is_multiple_of(2) {
                // Half the requests are 4 KiB aligned, like a filesystem's.
                first -= first % 8;
            }
            (first * SECTOR, sectors * SECTOR)
        };
        if r < u64::from(w.flush) {
            self.flush(i);
        } else if r < u64::from(w.flush + w.read) {
            let (off, len) = place(self);
            self.read_at(i, off, len);
        } else if r < u64::from(w.flush + w.read + w.zero) {
            let (off, len) = place(self);
            let trim = self.rng.next_u64().is_multiple_of(2);
            let fua = self.rng.next_u64().is_multiple_of(8);
            self.zero_at(i, off, len, trim, fua);
        } else {
            let (off, len) = place(self);
            let fua = self.rng.next_u64() % 1000 < u64::from(w.fua);
            self.write_at(i, off, len, fua);
        }
    }

    /// Kept for older tests: one random request.
    pub fn client_write(&mut self, i: usize) {
        self.client_io(i);
    }

    pub(super) fn client_reply(&mut self, i: usize, req: ReqId, ok: bool) {
        let Some(c) = self.nodes[i].clients.remove(&req) else {
            return;
        };
        if let (Some(s), Some((off, len))) = (self.watch_sector, c.op.write_range()) {
            if off / SECTOR <= s && s < (off + len) / SECTOR {
                let wid = match &c.kind {
                    ClientKind::Write { wid, .. } => *wid,
                    _ => 0,
                };
                self.log(format!(
                    "reply to request {req} (write {wid}) on node {i}: ok={ok}"
                ));
            }
        }
        // A request sent to a Secondary on purpose must fail: that is no client error.
        if !ok && !c.to_secondary {
            self.nodes[i].failed_replies += 1;
        }
        assert!(
            !(ok && c.to_secondary),
            "invariant violated: node {i} served {:?} as a Secondary",
            c.op
        );
        match c.kind {
            ClientKind::Write { wid, .. } => {
                let newly = self.model.write_replied(wid, ok);
                self.check_newly_required(newly);
            }
            ClientKind::Flush { flush } => {
                let newly = self.model.flush_replied(flush, ok);
                self.check_newly_required(newly);
            }
            ClientKind::Read {
                floors,
                data,
                epoch,
            } => {
                let ClientOp::Read { offset, len } = c.op else {
                    return;
                };
                let now = (self.nodes[0].unreliable, self.nodes[1].unreliable);
                if !ok || epoch != now {
                    return;
                }
                let Some(data) = data else {
                    panic!("invariant violated: read {req} on node {i} succeeded without data");
                };
                assert_eq!(
                    data.len(),
                    len as usize,
                    "invariant violated: read {req} returned {} bytes, {len} were asked",
                    data.len()
                );
                if let Err(e) = self.model.check_read(offset / SECTOR, &data, &floors) {
                    panic!("invariant violated: node {i}: {e}");
                }
            }
        }
    }

    pub fn outstanding_clients(&self, i: usize) -> usize {
        self.nodes[i].clients.len()
    }
}
