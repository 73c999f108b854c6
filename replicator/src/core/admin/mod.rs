//! Admin commands (`repadm`'s verbs), the answers they wait for, and reconfiguration.

pub(crate) mod commands;
pub(crate) mod pending;
pub(crate) mod reconfigure;
pub(crate) mod renegotiate;
