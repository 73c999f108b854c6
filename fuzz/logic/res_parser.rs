// Shared by the fuzz target and the replay test (tests/tests/fuzz_replay.rs).

pub fn check(data: &[u8]) {
    let dir = std::path::Path::new("/nonexistent");
    if let Ok(c) = rep_resources::parse_bytes(data, "fuzz.res", dir) {
        let dump = c.dump(None).expect("dump of a parsed config");
        let again = rep_resources::parse_str(&dump, "dump.res", dir).expect("dump re-parses");
        assert_eq!(again.dump(None).expect("second dump"), dump);
    }
}
