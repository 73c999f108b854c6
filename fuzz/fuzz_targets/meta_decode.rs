#![no_main]
//! Metadata read back from a disk (possibly torn or hostile) never panics its decoders.
use libfuzzer_sys::fuzz_target;

mod logic {
    include!("../logic/meta_decode.rs");
}

fuzz_target!(|data: &[u8]| logic::check(data));
