#![no_main]
//! The .res parser never panics; whatever it accepts dumps to text it accepts again, identically.
use libfuzzer_sys::fuzz_target;

mod logic {
    include!("../logic/res_parser.rs");
}

fuzz_target!(|data: &[u8]| logic::check(data));
