//! Deterministic randomness for the engine (generation UUIDs, challenges).
//!
//! The engine never asks the OS for entropy: the seed is an input, so a simulation run replays
//! exactly. The runtime seeds it from the OS once at start.

/// splitmix64: small, fast, and good enough for UUIDs that only need to be distinct.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A generation UUID: never 0 and never UUID_JUST_CREATED, bit 0 cleared (the role bit).
    pub fn uuid(&mut self) -> u64 {
        loop {
            let v = self.next_u64() & !1;
            if v > 4 {
                return v;
            }
        }
    }
}
