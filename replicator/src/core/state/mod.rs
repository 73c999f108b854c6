//! The node's visible state and the one path that changes it (`change_state`), the rules for
//! promotion, and the sticky split-brain flag.

/// The state vocabulary lives beside the core (the wire format encodes it too).
pub use crate::states::*;

pub(crate) mod change;
pub(crate) mod node_state;
pub(crate) mod promotion;
pub(crate) mod split_brain;
