// Shared by the fuzz target and the replay test (tests/tests/fuzz_replay.rs).
use rep_nbd::codec;

pub fn check(data: &[u8]) {
    if let Some(head) = data.get(..28).and_then(|h| <&[u8; 28]>::try_from(h).ok()) {
        if let Ok(h) = codec::decode_request(head) {
            let lim = codec::Limits {
                size: u64::from_le_bytes(data.get(28..36).and_then(|b| b.try_into().ok()).unwrap_or([0; 8])),
                max_payload: 32 << 20,
                read_only: data.get(36).is_some_and(|b| b & 1 == 1),
                structured: data.get(36).is_some_and(|b| b & 2 == 2),
                block_status: data.get(36).is_some_and(|b| b & 4 == 4),
            };
            let _ = codec::validate(&h, &lim);
        }
    }
    if let Some(head) = data.get(..16).and_then(|h| <&[u8; 16]>::try_from(h).ok()) {
        let _ = codec::decode_option_header(head);
    }
    let _ = codec::decode_info_request(data);
    let _ = codec::decode_meta_context_request(data);
}
