//! rep-nbd: NBD server side.
