//! Tests of `MetaStore` over real files (tempfile) and an in-memory device that counts writes.

use std::sync::Mutex;

use super::super::layout::{EXTERNAL_INDEXED_SLOT_BYTES, USABLE_BYTES_MIN};
use super::super::superblock::{MdFlags, UUID_JUST_CREATED};
use super::*;

const MIB: u64 = 1 << 20;

/// In-memory device; remembers the offsets of all writes.
struct MemDev {
    data: Mutex<Vec<u8>>,
    writes: Mutex<Vec<(u64, usize)>>,
}

impl MemDev {
    fn new(len: u64) -> MemDev {
        MemDev {
            data: Mutex::new(vec![0; len as usize]),
            writes: Mutex::new(Vec::new()),
        }
    }
    fn take_writes(&self) -> Vec<(u64, usize)> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

impl MetaDev for MemDev {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let d = self.data.lock().unwrap();
        let end = off as usize + buf.len();
        if end > d.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&d[off as usize..end]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut d = self.data.lock().unwrap();
        let end = off as usize + buf.len();
        if end > d.len() {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        d[off as usize..end].copy_from_slice(buf);
        self.writes.lock().unwrap().push((off, buf.len()));
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.data.lock().unwrap().len() as u64)
    }
}

impl MetaDev for std::sync::Arc<MemDev> {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        (**self).read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        (**self).write_at(buf, off)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn size_bytes(&self) -> io::Result<u64> {
        (**self).size_bytes()
    }
}

fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn file_with_pattern(len: u64) -> (tempfile::NamedTempFile, Vec<u8>) {
    let f = tempfile::NamedTempFile::new().unwrap();
    let p = pattern(len);
    f.as_file().write_all_at(&p, 0).unwrap();
    (f, p)
}

fn reopen(f: &tempfile::NamedTempFile) -> Box<dyn MetaDev> {
    Box::new(f.reopen().unwrap())
}

fn corrupt(f: &tempfile::NamedTempFile, off: u64) {
    let mut b = [0u8; 1];
    f.as_file().read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x5a;
    f.as_file().write_all_at(&b, off).unwrap();
}

/// Goal: create-md on an internal layout touches nothing outside the metadata area, and the
/// result opens as fresh metadata. Method: fill the whole file with a pattern first.
#[test]
fn create_internal_preserves_data_and_opens_fresh() {
    let size = 64 * MIB + 12345;
    let (f, p) = file_with_pattern(size);
    let layout = create_md(
        f.as_file(),
        None,
        size,
        MetaDiskKind::Internal,
        1237,
        0xabc,
        false,
    )
    .unwrap();
    let mut now = vec![0u8; size as usize];
    f.as_file().read_exact_at(&mut now, 0).unwrap();
    let (md_start, md_end) = (
        layout.md_offset() as usize,
        (layout.md_offset() + layout.md_bytes()) as usize,
    );
    assert!(now[..md_start] == p[..md_start], "data area changed");
    assert!(
        now[md_end..] == p[md_end..],
        "tail after the metadata changed"
    );
    assert!(now[md_start..md_end].iter().any(|&b| b != 0)); // superblock written

    let store = MetaStore::open_internal(reopen(&f), size).unwrap();
    let sb = store.superblock();
    assert_eq!(sb.uuids.current, UUID_JUST_CREATED);
    assert_eq!(sb.flags, MdFlags::default());
    assert!(sb.clean);
    assert_eq!(sb.device_uuid, 0xabc);
    assert_eq!(store.bitmap().count_ones(), 0);
    assert_eq!(store.activity_log().len(), 0);
    assert_eq!(store.layout(), &layout);
    assert_eq!(
        store.get_gi(),
        "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0"
    );
}

#[test]
fn create_twice_refuses_without_force() {
    let size = 16 * MIB;
    let (f, _) = file_with_pattern(size);
    create_md(
        f.as_file(),
        None,
        size,
        MetaDiskKind::Internal,
        1237,
        1,
        false,
    )
    .unwrap();
    let err = create_md(
        f.as_file(),
        None,
        size,
        MetaDiskKind::Internal,
        1237,
        2,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::AlreadyExists {
                current_uuid: UUID_JUST_CREATED,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("--force") && msg.contains("destroys the sync state"),
        "{msg}"
    );
    // Bump seq in slot 1 so a stale superblock would win if create-md did not clear it.
    let mut store = MetaStore::open_internal(reopen(&f), size).unwrap();
    let mut sb = store.superblock().clone();
    sb.uuids.current = 0x1234;
    store.write_superblock(sb).unwrap();
    create_md(
        f.as_file(),
        None,
        size,
        MetaDiskKind::Internal,
        1237,
        3,
        true,
    )
    .unwrap();
    let store = MetaStore::open_internal(reopen(&f), size).unwrap();
    assert_eq!(store.superblock().device_uuid, 3);
    assert_eq!(store.superblock().uuids.current, UUID_JUST_CREATED);
}

/// Goal: a torn write of the newer slot falls back to the older slot; both bad → error.
#[test]
fn torn_superblock_falls_back_then_both_corrupt_errors() {
    let size = 16 * MIB;
    let (f, _) = file_with_pattern(size);
    let layout = create_md(
        f.as_file(),
        None,
        size,
        MetaDiskKind::Internal,
        1237,
        1,
        false,
    )
    .unwrap();
    let mut store = MetaStore::open_internal(reopen(&f), size).unwrap();
    for (i, cur) in [0x100u64, 0x200, 0x300].into_iter().enumerate() {
        let mut sb = store.superblock().clone();
        sb.uuids.current = cur;
        store.write_superblock(sb).unwrap();
        assert_eq!(store.superblock().seq, 2 + i as u64);
        assert_eq!(store.superblock_slot(), (1 + i as u32) % 2);
    }
    // Newest (seq 4, current 0x300) is in slot 1: tear it.
    assert_eq!(store.superblock_slot(), 1);
    corrupt(&f, layout.sb_slot_offset(1) + 40);
    let store = MetaStore::open_internal(reopen(&f), size).unwrap();
    assert_eq!(store.superblock().seq, 3);
    assert_eq!(store.superblock().uuids.current, 0x200);
    assert_eq!(store.superblock_slot(), 0);
    corrupt(&f, layout.sb_slot_offset(0) + 2000);
    let err = MetaStore::open_internal(reopen(&f), size).err().unwrap();
    assert!(matches!(err, MetaError::BothSlotsCorrupt { .. }), "{err}");
    assert!(err.to_string().contains("create-md --force"), "{err}");
}

#[test]
fn garbage_or_empty_device_is_no_metadata() {
    let size = 16 * MIB;
    let (f, _) = file_with_pattern(size);
    let err = MetaStore::open_internal(reopen(&f), size).err().unwrap();
    assert!(matches!(err, MetaError::NoMetadata { .. }), "{err}");
    assert!(
        err.to_string().contains("run `repadm create-md RES` first"),
        "{err}"
    );
    let tiny = MemDev::new(4096);
    let err = MetaStore::open_internal(Box::new(tiny), 4096)
        .err()
        .unwrap();
    assert!(matches!(err, MetaError::NoMetadata { .. }), "{err}");
    let zeros = MemDev::new(MIB);
    let err = MetaStore::open_external(Box::new(zeros), None, 64 * MIB)
        .err()
        .unwrap();
    assert!(matches!(err, MetaError::NoMetadata { .. }), "{err}");
}

#[test]
fn external_meta_too_small_names_needed_size() {
    let data = MemDev::new(0);
    let meta = MemDev::new(32 * 1024);
    let err = create_md(
        &data,
        Some(&meta),
        1 << 30,
        MetaDiskKind::ExternalFlex,
        1237,
        1,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::MetaDevTooSmall {
                need_bytes: 73728,
                have_bytes: 32768,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("73728 bytes needed"), "{err}");
}

/// Goal: external flex and indexed metadata never touch the data device, and indexed slots
/// are independent. Method: MemDev records every write.
#[test]
fn external_create_writes_only_meta_device_slot() {
    let data = MemDev::new(0);
    let meta = std::sync::Arc::new(MemDev::new(3 * EXTERNAL_INDEXED_SLOT_BYTES));
    let data_bytes = 256 * MIB;
    let l = create_md(
        &data,
        Some(meta.as_ref()),
        data_bytes,
        MetaDiskKind::ExternalIndexed(1),
        1237,
        7,
        false,
    )
    .unwrap();
    assert!(data.take_writes().is_empty());
    for (off, len) in meta.take_writes() {
        assert!(
            off >= EXTERNAL_INDEXED_SLOT_BYTES
                && off + len as u64 <= 2 * EXTERNAL_INDEXED_SLOT_BYTES
        );
    }
    assert_eq!(l.usable_bytes(), data_bytes);
    create_md(
        &data,
        Some(meta.as_ref()),
        data_bytes,
        MetaDiskKind::ExternalIndexed(2),
        1237,
        8,
        false,
    )
    .unwrap();
    let s1 = MetaStore::open_external(Box::new(meta.clone()), Some(1), data_bytes).unwrap();
    let s2 = MetaStore::open_external(Box::new(meta.clone()), Some(2), data_bytes).unwrap();
    assert_eq!(
        (s1.superblock().device_uuid, s2.superblock().device_uuid),
        (7, 8)
    );
    let err = MetaStore::open_external(Box::new(meta.clone()), Some(0), data_bytes)
        .err()
        .unwrap();
    assert!(matches!(err, MetaError::NoMetadata { .. }), "{err}");
    // Flex on its own device.
    let flex = std::sync::Arc::new(MemDev::new(MIB));
    create_md(
        &data,
        Some(flex.as_ref()),
        data_bytes,
        MetaDiskKind::ExternalFlex,
        1237,
        9,
        false,
    )
    .unwrap();
    assert!(MetaStore::open_external(Box::new(flex), None, data_bytes).is_ok());
}

/// Goal: bitmap pages and AL transactions survive a reopen; only dirty pages are written.
#[test]
fn bitmap_and_al_persist() {
    let size = 512 * MIB;
    let dev = std::sync::Arc::new(MemDev::new(size));
    create_md(
        dev.as_ref(),
        None,
        size,
        MetaDiskKind::Internal,
        61,
        1,
        false,
    )
    .unwrap();
    let mut store = MetaStore::open_internal(Box::new(dev.clone()), size).unwrap();
    dev.take_writes();
    store.bitmap_mut().set_range(4096, 3 * 4096);
    store.bitmap_mut().set_range(300 * MIB, 1);
    assert_eq!(store.persist_bitmap_pages().unwrap(), 2);
    assert_eq!(dev.take_writes().len(), 2);
    assert_eq!(store.persist_bitmap_pages().unwrap(), 0);
    assert!(dev.take_writes().is_empty());
    // The engine's path: its own bitmap's dirty pages handed over one by one.
    let mut engine_bm = store.bitmap().clone();
    engine_bm.set_range(100 * MIB, 8192);
    for (i, page) in engine_bm.take_dirty_pages() {
        store.write_bitmap_page(i, &page).unwrap();
    }
    assert!(store.write_bitmap_page(99, &[0; 4096]).is_err());
    assert!(store.write_bitmap_page(0, &[0; 10]).is_err());
    // AL: more extents than fit, so some are evicted.
    let mut al = store.activity_log().clone();
    for ext in [5u64, 9, 5, 70, 127] {
        if let Some(tr) = al.begin_write(ext) {
            store.write_al_transaction(&tr).unwrap();
        }
    }
    for ext in 200..260u64 {
        if let Some(tr) = al.begin_write(ext) {
            store.write_al_block(tr.ring_slot(), &tr.encode()).unwrap();
        }
    }
    assert!(store.write_al_block(8, &[0; 4096]).is_err());
    assert!(store.write_al_block(0, &[0; 4096]).is_err());
    let mut sb = store.superblock().clone();
    sb.clean = false;
    sb.flags.set_primary_ind(true);
    store.write_superblock(sb).unwrap();
    drop(store);

    let store = MetaStore::open_internal(Box::new(dev.clone()), size).unwrap();
    assert_eq!(store.bitmap().count_ones(), 3 + 1 + 2);
    assert!(store.bitmap().get(300 * MIB / 4096));
    let expected: Vec<u64> = al.active_extents().collect();
    assert_eq!(
        store.activity_log().active_extents().collect::<Vec<_>>(),
        expected
    );
    assert_eq!(store.recovered_al().active_extents.len(), 61);
    assert!(!store.superblock().clean);
    assert!(store.superblock().flags.primary_ind());
    assert_eq!(
        store.get_gi(),
        "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:1:0:0:0:0"
    );

    let dump = crate::control::md_dump::dump_md(&store);
    assert!(dump.contains("bits 1..4; # bytes 4096..16384"), "{dump}");
    assert!(dump.contains("flags 0x00000002; # primary-ind"), "{dump}");
    assert!(dump.contains("al-active-extents { 127 200"), "{dump}");
    assert!(dump.contains("# bits-set 6;"), "{dump}");
    let j = crate::control::md_dump::dump_md_json(&store);
    assert_eq!(j["bitmap"]["bits_set"], 6);
    assert_eq!(j["uuids_hex"][0], "0000000000000004");
    assert_eq!(
        j["activity_log"]["active_extents"]
            .as_array()
            .unwrap()
            .len(),
        61
    );
    assert!(store.show_gi().contains("Node was/is currently primary"));
}

/// Goal: a changed device size is reported, not silently accepted. Method: internal grows
/// by a MiB (superblock no longer at the end), grows by less than a block (same layout, fine),
/// external data device grows (bitmap would be too small).
#[test]
fn resized_devices_are_reported() {
    let size = 64 * MIB;
    let (f, _) = file_with_pattern(size + MIB);
    create_md(
        f.as_file(),
        None,
        size,
        MetaDiskKind::Internal,
        1237,
        1,
        false,
    )
    .unwrap();
    let err = MetaStore::open_internal(reopen(&f), size + MIB)
        .err()
        .unwrap();
    assert!(matches!(err, MetaError::NoMetadata { .. }), "{err}");
    assert!(MetaStore::open_internal(reopen(&f), size + 100).is_ok());
    let data = MemDev::new(0);
    let meta = std::sync::Arc::new(MemDev::new(MIB));
    create_md(
        &data,
        Some(meta.as_ref()),
        size,
        MetaDiskKind::ExternalFlex,
        1237,
        1,
        false,
    )
    .unwrap();
    let err = MetaStore::open_external(Box::new(meta), None, 2 * size)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            MetaError::Inconsistent {
                field: "md_geometry",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("resizing is not supported"),
        "{err}"
    );
}

#[test]
fn file_size_and_minimum_backing() {
    let (f, _) = file_with_pattern(4 * MIB);
    assert_eq!(f.as_file().size_bytes().unwrap(), 4 * MIB);
    let err = create_md(
        f.as_file(),
        None,
        4 * MIB,
        MetaDiskKind::Internal,
        1237,
        1,
        false,
    )
    .unwrap_err();
    match err {
        MetaError::BackingTooSmall {
            min_bytes,
            short_by_bytes,
            ..
        } => {
            assert!(min_bytes > USABLE_BYTES_MIN);
            assert_eq!(short_by_bytes, min_bytes - 4 * MIB);
        }
        e => panic!("unexpected {e}"),
    }
    let err = create_md(
        f.as_file(),
        None,
        64 * MIB,
        MetaDiskKind::Internal,
        100_000,
        1,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, MetaError::BadAlGeometry { .. }), "{err}");
}
