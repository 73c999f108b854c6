// Shared by the fuzz target and the replay test (tests/tests/fuzz_replay.rs).
// A control line never panics repd's decoder; a decoded request re-encodes to itself.
use rep_replicator::control::{decode_request_line, encode_line, Query, Request};

pub fn check(data: &[u8]) {
    let Ok(Some(req)) = decode_request_line(data) else {
        return;
    };
    let line = encode_line(&req).expect("a decoded request encodes");
    let again = decode_request_line(line.as_bytes())
        .expect("an encoded request decodes")
        .expect("an encoded request is not blank");
    assert_eq!(again, req);
    if let Request::Query(Query::Fault { fault }) = &req {
        let _ = fault.disk_error_rule();
    }
}
