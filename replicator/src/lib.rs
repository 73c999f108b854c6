//! rep-replicator
