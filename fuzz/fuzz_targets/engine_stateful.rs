#![no_main]
//! The engine driven by arbitrary input sequences (hostile peer packets, completions in any
//! order, admin commands) never panics and keeps its invariants after every input.
use libfuzzer_sys::fuzz_target;

mod logic {
    include!("../logic/engine_stateful.rs");
}

fuzz_target!(|data: &[u8]| logic::check(data));
