#![no_main]
//! NBD request headers and option payloads from a hostile client never panic the decoder.
use libfuzzer_sys::fuzz_target;

mod logic {
    include!("../logic/nbd_request.rs");
}

fuzz_target!(|data: &[u8]| logic::check(data));
