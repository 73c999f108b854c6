//! The hook against real files: durability of the volatile cache, re-attach, disk-error rules.

use super::disk::range;
use super::overlay::PAGE;
use super::*;
use crate::control::fault::FaultCmd;

fn temp_file(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
    let t = tempfile::NamedTempFile::new().expect("temp file");
    t.as_file().write_all_at(bytes, 0).expect("fill");
    let f = Arc::new(t.reopen().expect("reopen"));
    (t, f)
}

fn file_bytes(f: &File, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, 0).expect("read back");
    v
}

fn cmd(hook: &FaultHook, c: FaultCmd) {
    hook.apply(&c).expect("fault command");
}

#[test]
fn the_file_holds_only_what_a_flush_or_fua_made_durable() {
    let (_t, f) = temp_file(&[0x11; 4 * PAGE as usize]);
    let hook = FaultHook::default();
    hook.attach(Dev::Data, Arc::clone(&f), 4 * PAGE);
    cmd(&hook, FaultCmd::VolatileCache { on: true });
    let w = |off: u64, b: &[u8], fua| {
        hook.cached_write(Dev::Data, off, Src::Bytes(b), fua)
            .expect("cache on")
            .expect("cached write");
    };
    w(0, &[0xaa; 100], false); // partial page: read-modify-write
    assert!(hook.cached_flush(Dev::Data).expect("cache on").is_ok());
    w(PAGE, &[0xbb; PAGE as usize], false);
    w(2 * PAGE + 10, &[0xcc; 20], true);
    hook.cached_write(Dev::Data, 3 * PAGE, Src::Zeros(PAGE), false)
        .expect("cache on")
        .expect("cached zero");
    // Reads see everything.
    let mut buf = vec![0u8; 4 * PAGE as usize];
    hook.cached_read(Dev::Data, &f, &mut buf, 0)
        .expect("cache on")
        .expect("read");
    assert_eq!(&buf[..100], &[0xaa; 100]);
    assert_eq!(buf[100], 0x11);
    assert_eq!(
        &buf[PAGE as usize..2 * PAGE as usize],
        &[0xbb; PAGE as usize]
    );
    assert_eq!(
        &buf[2 * PAGE as usize + 10..2 * PAGE as usize + 30],
        &[0xcc; 20]
    );
    assert_eq!(&buf[3 * PAGE as usize..], &[0u8; PAGE as usize]);
    // The file: the flushed write and the FUA write, nothing else.
    let on_disk = file_bytes(&f, 4 * PAGE as usize);
    assert_eq!(&on_disk[..100], &[0xaa; 100]);
    assert_eq!(
        &on_disk[PAGE as usize..2 * PAGE as usize],
        &[0x11; PAGE as usize]
    );
    assert_eq!(
        &on_disk[2 * PAGE as usize + 10..2 * PAGE as usize + 30],
        &[0xcc; 20]
    );
    assert_eq!(&on_disk[3 * PAGE as usize..], &[0x11; PAGE as usize]);
    // Power loss: the file stays as it is, every further operation fails.
    cmd(&hook, FaultCmd::PowerLoss);
    assert!(hook.powered_off());
    assert!(matches!(
        hook.inject(Dev::Data, Kind::Read, None),
        Err(FaultError::PoweredOff)
    ));
    assert_eq!(file_bytes(&f, 4 * PAGE as usize), on_disk);
    assert!(hook.apply(&FaultCmd::Clear).is_err());
}

#[test]
fn volatile_cache_off_writes_the_cache_out() {
    let (_t, f) = temp_file(&[0u8; 2 * PAGE as usize]);
    let hook = FaultHook::default();
    hook.attach(Dev::Data, Arc::clone(&f), 2 * PAGE);
    cmd(&hook, FaultCmd::VolatileCache { on: true });
    hook.cached_write(Dev::Data, 5, Src::Bytes(&[7; PAGE as usize]), false)
        .expect("cache on")
        .expect("write");
    assert_eq!(
        file_bytes(&f, 2 * PAGE as usize),
        vec![0u8; 2 * PAGE as usize]
    );
    cmd(&hook, FaultCmd::Clear);
    let on_disk = file_bytes(&f, 2 * PAGE as usize);
    assert_eq!(&on_disk[5..5 + PAGE as usize], &[7; PAGE as usize]);
    assert!(hook
        .cached_write(Dev::Data, 0, Src::Zeros(1), false)
        .is_none());
    assert!(hook.cached_flush(Dev::Data).is_none());
}

#[test]
fn a_reattach_keeps_the_cache_of_the_same_device_and_writes_out_another_s() {
    let (t, f) = temp_file(&[0u8; PAGE as usize]);
    let hook = FaultHook::default();
    hook.attach(Dev::Meta, Arc::clone(&f), PAGE);
    cmd(&hook, FaultCmd::VolatileCache { on: true });
    hook.cached_write(Dev::Meta, 0, Src::Bytes(&[9; 8]), false)
        .expect("cache on")
        .expect("write");
    hook.attach(Dev::Meta, Arc::new(t.reopen().expect("reopen")), PAGE);
    assert_eq!(file_bytes(&f, 8), vec![0u8; 8], "same device: still cached");
    let (_t2, other) = temp_file(&[0u8; PAGE as usize]);
    hook.attach(Dev::Meta, other, PAGE);
    assert_eq!(
        file_bytes(&f, 8),
        vec![9u8; 8],
        "written out to its own device"
    );
}

#[test]
fn disk_error_rules_match_op_range_and_count() {
    let hook = FaultHook::default();
    let rule = |op, offset, length, count| FaultCmd::DiskError {
        op,
        offset,
        length,
        count,
    };
    cmd(&hook, rule(FaultOp::Read, Some(4096), Some(4096), Some(2)));
    let read = |off| hook.inject(Dev::Data, Kind::Read, range(off, 512));
    assert!(read(0).is_ok(), "outside the range");
    assert!(hook
        .inject(Dev::Data, Kind::Write { fua: false }, range(4096, 512))
        .is_ok());
    assert!(read(4096 + 512).is_err());
    assert!(read(3584 + 1).is_err(), "overlapping counts");
    assert!(read(4096).is_ok(), "count exhausted");

    // Metadata: only internal, only unranged write/flush/any rules.
    cmd(&hook, rule(FaultOp::Write, None, None, None));
    assert!(hook
        .inject(Dev::Meta, Kind::Write { fua: false }, None)
        .is_ok());
    hook.lock().meta_internal = true;
    assert!(hook
        .inject(Dev::Meta, Kind::Write { fua: false }, None)
        .is_err());
    assert!(hook.inject(Dev::Meta, Kind::Read, None).is_ok());
    assert!(hook.inject(Dev::Data, Kind::Flush, None).is_ok());
    cmd(&hook, FaultCmd::Clear);
    assert!(hook
        .inject(Dev::Meta, Kind::Write { fua: false }, None)
        .is_ok());

    cmd(&hook, rule(FaultOp::Flush, None, None, Some(1)));
    assert!(hook
        .inject(Dev::Data, Kind::Write { fua: false }, range(0, 1))
        .is_ok());
    assert!(
        hook.inject(Dev::Data, Kind::Write { fua: true }, range(0, 1))
            .is_err(),
        "a FUA write flushes"
    );
    assert!(hook.inject(Dev::Data, Kind::Flush, None).is_ok());
    cmd(&hook, rule(FaultOp::Any, Some(0), Some(10), None));
    assert!(
        hook.inject(Dev::Data, Kind::Flush, None).is_ok(),
        "a flush has no range"
    );
    assert!(
        hook.inject(Dev::Meta, Kind::Flush, None).is_ok(),
        "ranges are data-only"
    );
    assert!(hook.inject(Dev::Data, Kind::Read, range(9, 1)).is_err());
}
