//! repd: one daemon per resource. See `rep_replicator::runtime::daemon`.

/// Every request moves a buffer of 4 KiB .. 1 MiB. By default glibc serves those above 128 KiB
/// with fresh mmaps and trims freed heap eagerly, so each resync block and large write pays
/// page faults on first touch (measured: 12% of a resync target's CPU). Keeping such buffers on
/// the heap took a 1 GiB full sync from 404 to 586 MB/s and QD1 4 KiB writes from 34 to 28 µs.
fn tune_allocator() {
    #[allow(unsafe_code)]
    // SAFETY: mallopt only adjusts glibc's allocation thresholds; it is called once, at the
    // start of main, before any other thread exists, and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() {
    tune_allocator();
    std::process::exit(rep_replicator::runtime::daemon::main());
}
