//! `repadm adjust` in the simulator: a node's engine gets a changed configuration, as the
//! daemon hands it one (`Input::Reconfigure`).

use super::cluster::Cluster;
use crate::core::{EngineConfig, Input};

impl Cluster {
    /// Give node `i` its running configuration changed by `change`.
    pub fn reconfigure(&mut self, i: usize, change: impl FnOnce(&mut EngineConfig)) {
        let mut cfg = self.nodes[i].engine.config().clone();
        change(&mut cfg);
        self.feed(i, Input::Reconfigure { cfg: Box::new(cfg) });
    }
}
