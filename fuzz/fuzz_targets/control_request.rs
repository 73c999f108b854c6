#![no_main]
//! Control-socket lines never panic repd's decoder; a decoded request re-encodes to itself.
use libfuzzer_sys::fuzz_target;

mod logic {
    include!("../logic/control_request.rs");
}

fuzz_target!(|data: &[u8]| logic::check(data));
