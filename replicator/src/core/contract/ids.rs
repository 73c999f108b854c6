//! Identifiers that cross the engine boundary. Each is its own type so that a request id can
//! never be passed where an I/O id is expected (they are all counters and look alike).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The id after this one (ids are handed out in increasing order).
            pub fn next(self) -> $name {
                $name(self.0.wrapping_add(1))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// One client request; chosen by the driver, echoed in `ClientReply`. Requests sent to the
    /// peer carry it on the wire, so that acks find the request again.
    ReqId
);
id_type!(
    /// One disk, metadata, hashing or open/close operation; chosen by the engine, echoed in
    /// the completion.
    IoId
);
id_type!(
    /// One admin command; chosen by the driver, echoed in `AdminReply`.
    AdminId
);
id_type!(
    /// One established peer connection; inputs from an older link are ignored.
    LinkId
);

/// A map keyed by one of our own counters. They are handed out in sequence by this node, never
/// chosen by a peer or a client, so a multiplicative hash spreads them as well as SipHash does
/// at a fraction of the cost (these maps are looked up several times per request). Do not key
/// one by a value that comes from the wire: that is what SipHash's keys protect against.
pub type IdMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`]: Fibonacci hashing of the id's `u64`.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only reached by keys that are not plain u64 newtypes; keep it correct, if slower.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// DRBD 9's node id: the host's `node-id` where the `.res` file gives one, else its place
/// among the resource's hosts sorted by name (both nodes derive the same ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets_and_control_bytes() {
        use std::hash::BuildHasher;
        let b = std::hash::BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1..=1024u64).map(|i| b.hash_one(ReqId(i))).collect();
        // hashbrown takes the bucket from the low bits and a tag from the top 7.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(low.len(), 1024);
        assert!(top.len() > 100, "{} distinct tags", top.len());
        let mut m: IdMap<ReqId, u64> = IdMap::default();
        for i in 0..10_000u64 {
            m.insert(ReqId(i), i);
        }
        assert!((0..10_000u64).all(|i| m.get(&ReqId(i)) == Some(&i)));
    }
}
