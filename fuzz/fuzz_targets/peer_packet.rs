#![no_main]
//! Peer frames never panic the decoder; a decoded packet re-encodes to the same packet.
use libfuzzer_sys::fuzz_target;

mod logic {
    include!("../logic/peer_packet.rs");
}

fuzz_target!(|data: &[u8]| logic::check(data));
