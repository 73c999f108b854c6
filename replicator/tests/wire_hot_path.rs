//! The Data path through the wire codec neither copies the block twice nor allocates: encoding
//! into a buffer with room allocates nothing, and the split decode the socket reader uses
//! hands the block's own buffer to the packet. A counting allocator checks both.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rep_replicator::wire::packet::{data_prefix_len, decode_with_data, encode_data};
use rep_replicator::wire::{FrameHeader, Packet, HEADER_BYTES};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)] // a global allocator is an unsafe trait
                      // SAFETY: forwards every call to the system allocator unchanged; only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread's watch (the test runs single-threaded inside).
fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    (r, ALLOCS.load(Ordering::Relaxed) - before)
}

#[test]
fn data_packets_encode_and_decode_without_allocating_or_copying() {
    let block = vec![0x5a_u8; 64 * 1024];
    let mut out = Vec::with_capacity(2 * (block.len() + 64));

    let ((), n) = allocations(|| encode_data(&mut out, 7, 4096, true, &block));
    assert_eq!(n, 0, "encode_data allocated");
    let p = Packet::Data {
        id: 7,
        offset: 4096,
        fua: true,
        data: block.clone().into(),
    };
    let first = out.len();
    let ((), n) = allocations(|| p.encode(&mut out));
    assert_eq!(n, 0, "Packet::encode allocated");
    assert_eq!(out[..first], out[first..]);

    let command = u16::from_be_bytes([out[4], out[5]]);
    let prefix_len = data_prefix_len(command).unwrap();
    let payload = &out[HEADER_BYTES..first];
    let h = FrameHeader {
        command,
        flags: 0,
        len: u32::try_from(payload.len()).unwrap(),
    };
    let data = bytes::Bytes::from(payload[prefix_len..].to_vec());
    let ptr = data.as_ptr();
    let (q, n) = allocations(|| decode_with_data(&h, &payload[..prefix_len], data));
    assert_eq!(n, 0, "decode_with_data allocated");
    let Ok(Packet::Data { data, .. }) = &q else {
        panic!("{q:?}")
    };
    assert_eq!(data.as_ptr(), ptr, "the block was copied");
    assert_eq!(q.as_ref().ok(), Some(&p));
}
