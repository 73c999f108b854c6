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
