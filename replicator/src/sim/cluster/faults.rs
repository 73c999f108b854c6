//! Faults a schedule injects into a node's storage: failing I/O, slow writes, failing flushes,
//! power cut in the middle of a metadata write, a crash timed to a link loss, bit rot.

use std::time::Duration;

use super::world::Cluster;
use crate::sim::config::{BLOCK, SECTOR};

impl Cluster {
    /// Node `i`'s data and metadata I/O fail with EIO (or work again).
    pub fn set_disk_failing(&mut self, i: usize, failing: bool) {
        self.log(format!("node {i} disk failing={failing}"));
        self.nodes[i].disk_failing = failing;
        self.nodes[i].meta_dev.set_failing(failing);
    }

    pub fn disk_failing(&self, i: usize) -> bool {
        self.nodes[i].disk_failing
    }

    /// Every data write of node `i`'s disk takes `delay` longer (zero: back to normal), like
    /// `repadm fault RES disk-delay MS`: writes the node receives from its peer queue up.
    pub fn set_disk_delay(&mut self, i: usize, delay: Duration) {
        self.log(format!("node {i}: data writes delayed by {delay:?}"));
        self.nodes[i].disk_delay = delay;
    }

    pub fn disk_delay(&self, i: usize) -> Duration {
        self.nodes[i].disk_delay
    }

    /// The next `n` flushes of node `i`'s data disk fail, losing what they should have written.
    pub fn fail_flushes(&mut self, i: usize, n: u32) {
        self.log(format!("node {i}: next {n} data flushes fail"));
        self.nodes[i].disk.flush_failures = n;
    }

    /// Node `i` loses power at its `n`-th metadata write from now, tearing that write.
    pub fn cut_meta_power_after(&mut self, i: usize, n: u32) {
        self.log(format!(
            "node {i}: power lost at metadata write #{n} from now"
        ));
        self.nodes[i].meta_dev.cut_power_after(n);
    }

    /// Node `i` (connected now) loses power right after the input in which it notices that
    /// its link is gone: replies and metadata writes it issued then are the only trace.
    pub fn crash_on_link_loss(&mut self, i: usize) {
        self.nodes[i].die_on_link_loss = true;
    }

    /// Flip a byte of 4 KiB block `block` on node `i`'s disk behind rep's back (bit rot).
    pub fn corrupt(&mut self, i: usize, block: u64) {
        self.nodes[i].disk.rot(block * BLOCK / SECTOR);
    }
}
