//! The simulated network: two FIFO channels per direction, the wire limits every frame must
//! pass, links set up and dropped, and partitions (one way or both) that hold frames until
//! they heal.

use std::time::Duration;

use super::world::{Cluster, Ev};
use crate::core::{LinkId, LinkLoss};
use crate::wire::frame::{WireError, MAX_DATA_BYTES};
use crate::wire::{Channel, Packet};

/// The wire limits a frame must pass on its way, as the real decoder applies them. Bulk
/// payloads are only measured (encoding megabytes per packet would dominate the run); every
/// other packet goes through encode → decode and must come out equal.
fn wire_check(p: &Packet) -> Result<(), WireError> {
    let bulk = match p {
        Packet::Data { data, .. }
        | Packet::RsData { data, .. }
        | Packet::DataReply { data, .. } => Some(data.len()),
        Packet::Bitmap { rle, .. } => Some(rle.len()),
        _ => None,
    };
    if let Some(n) = bulk {
        if n > MAX_DATA_BYTES {
            return Err(WireError::Invalid {
                cmd: p.name(),
                what: format!("{n} bytes of data: beyond the frame limit of {MAX_DATA_BYTES}"),
            });
        }
        return Ok(());
    }
    let mut buf = Vec::new();
    p.encode(&mut buf);
    match crate::wire::packet::decode_frame(&buf) {
        Ok((q, used)) if used == buf.len() && &q == p => Ok(()),
        Ok((q, _)) => Err(WireError::Invalid {
            cmd: p.name(),
            what: format!("{p:?} decodes as {q:?}"),
        }),
        Err(e) => Err(e),
    }
}

impl Cluster {
    pub(super) fn send(&mut self, from: usize, link: LinkId, packet: Packet) {
        if self.link != Some(link) {
            return;
        }
        let bulk = match &packet {
            Packet::Data { data, .. }
            | Packet::RsData { data, .. }
            | Packet::DataReply { data, .. } => data.len() as u64,
            _ => 0,
        };
        match &packet {
            Packet::RsData { data, .. } => self.stats.rs_data_bytes += data.len() as u64,
            Packet::RsZero { len, .. } => self.stats.rs_zero_bytes += u64::from(*len),
            _ => {}
        }
        let ev = match wire_check(&packet) {
            Ok(()) => Ev::Deliver {
                to: 1 - from,
                link,
                packet,
            },
            Err(why) => {
                // The receiver's decoder refuses the frame and closes the connection.
                self.stats.wire_rejects += 1;
                self.log(format!("wire: {} → {}: {why}", from, 1 - from));
                Ev::LinkDown {
                    to: 1 - from,
                    link,
                    loss: LinkLoss::ProtocolError(why),
                }
            }
        };
        let meta = match &ev {
            Ev::Deliver { packet, .. } => packet.channel() == Channel::Meta,
            _ => false,
        };
        if self.hold[from] {
            self.held[from].push(ev);
            return;
        }
        // About 10 Gbit/s plus latency.
        let lat = self.rand_us(20, 400) + Duration::from_nanos(bulk);
        self.schedule_fifo(from, meta, lat, ev);
    }

    pub(super) fn schedule_fifo(&mut self, from: usize, meta: bool, lat: Duration, ev: Ev) {
        let last = self
            .last_delivery
            .get(&(from, meta))
            .copied()
            .unwrap_or(Duration::ZERO);
        let when = (self.now + lat).max(last);
        self.last_delivery.insert((from, meta), when);
        self.seq += 1;
        self.queue.insert((when, self.seq), ev);
    }

    /// The link goes away (closed or reset by `closer`); the other side hears of it unless
    /// frames from `closer` are held, in which case it hears once they flow again.
    pub(super) fn drop_link(&mut self, closer: usize) {
        let Some(link) = self.link.take() else {
            return;
        };
        for h in &mut self.held {
            h.retain(|ev| !matches!(ev, Ev::Deliver { link: l, .. } if *l == link));
        }
        let ev = Ev::LinkDown {
            to: 1 - closer,
            link,
            loss: LinkLoss::BrokenPipe,
        };
        if self.hold[closer] {
            self.held[closer].push(ev);
        } else {
            let d = self.rand_us(20, 400);
            self.schedule_fifo(closer, false, d, ev);
        }
    }

    pub(super) fn maybe_link(&mut self) {
        let both = self.nodes.iter().all(|n| n.up && n.wants_link);
        if both && self.link.is_none() && !self.hold[0] && !self.hold[1] {
            let link = self.next_link;
            self.next_link = link.next();
            self.link = Some(link);
            let d = self.rand_us(100, 2000);
            self.schedule(d, Ev::LinkUp { link });
        }
    }

    /// Hold (or release) every frame node `from` sends: a one-way partition.
    pub fn set_one_way(&mut self, from: usize, cut: bool) {
        self.log(format!("frames from node {from} held={cut}"));
        self.hold[from] = cut;
        if !cut {
            for ev in std::mem::take(&mut self.held[from]) {
                let meta =
                    matches!(&ev, Ev::Deliver { packet, .. } if packet.channel() == Channel::Meta);
                let lat = self.rand_us(20, 400);
                self.schedule_fifo(from, meta, lat, ev);
            }
            self.maybe_link();
        }
    }

    /// Silent partition in both directions: only pings notice it.
    pub fn set_cut(&mut self, cut: bool) {
        self.set_one_way(0, cut);
        self.set_one_way(1, cut);
    }

    pub fn partitioned(&self) -> bool {
        self.hold[0] || self.hold[1]
    }
}
