//! `repadm dump-md`: a drbdmeta-like text (and JSON) view of the superblock, activity log and
//! bitmap of a detached device. Presentation only; the metadata module owns the formats.

use std::fmt::Write as _;

use serde_json::json;

use crate::meta::layout::BITMAP_BLOCK_BYTES;
use crate::meta::store::MetaStore;

/// Set ranges listed by dump-md before it summarises the rest.
const DUMP_RANGES_MAX: usize = 1000;

/// `repadm dump-md`: drbdmeta-like text dump of superblock, AL and bitmap.
pub fn dump_md(store: &MetaStore) -> String {
    let sb = store.superblock();
    let l = store.layout();
    let mut s = String::new();
    let u = sb.uuids;
    let flag_names = sb.flags.names();
    let _ = writeln!(s, "# rep meta-data on {}", store.location());
    let _ = writeln!(s, "version \"v{}\";", sb.version);
    let _ = writeln!(
        s,
        "# seq {} (superblock slot {}), {}",
        sb.seq,
        store.superblock_slot(),
        if sb.clean {
            "clean"
        } else {
            "unclean (attached, or crashed)"
        }
    );
    let _ = writeln!(s, "# meta-disk {:?}", l.kind());
    let _ = writeln!(
        s,
        "# md_offset {}\n# md_size {}\n# al_offset {}\n# bm_offset {}",
        l.md_offset(),
        l.md_bytes(),
        l.al_offset(),
        l.bm_offset()
    );
    let _ = writeln!(s, "uuid {{");
    let _ = writeln!(
        s,
        "    0x{:016X}; 0x{:016X}; 0x{:016X}; 0x{:016X};",
        u.current, u.bitmap, u.history[0], u.history[1]
    );
    let _ = writeln!(
        s,
        "    flags 0x{:08X}; # {}",
        sb.flags.bits(),
        if flag_names.is_empty() {
            "none".to_string()
        } else {
            flag_names.join(", ")
        }
    );
    let _ = writeln!(s, "}}");
    let _ = writeln!(s, "la-size-bytes {};", sb.la_size_bytes);
    let _ = writeln!(s, "# usable-size-bytes {}", l.usable_bytes());
    let _ = writeln!(s, "bm-byte-per-bit {};", sb.bm_bytes_per_bit);
    let _ = writeln!(s, "device-uuid 0x{:016X};", sb.device_uuid);
    let _ = writeln!(
        s,
        "al-extents {};\nal-stripes {};\nal-stripe-size-4k {};",
        sb.al_extents, sb.al_stripes, sb.al_stripe_blocks
    );
    let rec = store.recovered_al();
    let last_tr = rec.last_tr.map_or("none".to_string(), |t| t.to_string());
    let _ = writeln!(
        s,
        "# activity log: last transaction {last_tr}, {} valid / {} invalid blocks",
        rec.valid_blocks, rec.invalid_blocks
    );
    let active: Vec<String> = store
        .activity_log()
        .active_extents()
        .map(|e| e.to_string())
        .collect();
    let _ = writeln!(
        s,
        "al-active-extents {{ {} }}; # {} of {}",
        active.join(" "),
        active.len(),
        store.activity_log().capacity()
    );
    let bm = store.bitmap();
    let _ = writeln!(s, "# bm-bytes {};", l.bitmap_bytes());
    let _ = writeln!(s, "bm {{");
    for (i, r) in bm.runs().enumerate() {
        if i == DUMP_RANGES_MAX {
            let _ = writeln!(s, "    # ... more ranges not shown");
            break;
        }
        let _ = writeln!(
            s,
            "    bits {}..{}; # bytes {}..{}",
            r.start,
            r.end,
            r.start * BITMAP_BLOCK_BYTES,
            (r.end * BITMAP_BLOCK_BYTES).min(bm.size_bytes())
        );
    }
    let _ = writeln!(s, "}}");
    let _ = writeln!(
        s,
        "# bits-total {};\n# bits-set {}; ({} KiB out of sync)",
        bm.len_bits(),
        bm.count_ones(),
        bm.count_ones() * 4
    );
    s
}

/// `repadm dump-md --json`.
pub fn dump_md_json(store: &MetaStore) -> serde_json::Value {
    let ranges: Vec<[u64; 2]> = store
        .bitmap()
        .runs()
        .take(DUMP_RANGES_MAX)
        .map(|r| [r.start, r.end])
        .collect();
    json!({
        "location": store.location(),
        "superblock_slot": store.superblock_slot(),
        "superblock": store.superblock(),
        "uuids_hex": store.superblock().uuids.as_array().iter().map(|u| format!("{u:016X}")).collect::<Vec<_>>(),
        "flag_names": store.superblock().flags.names(),
        "layout": store.layout(),
        "activity_log": {
            "last_tr": store.recovered_al().last_tr,
            "valid_blocks": store.recovered_al().valid_blocks,
            "invalid_blocks": store.recovered_al().invalid_blocks,
            "capacity": store.activity_log().capacity(),
            "active_extents": store.activity_log().active_extents().collect::<Vec<_>>(),
        },
        "bitmap": {
            "bits_total": store.bitmap().len_bits(),
            "bits_set": store.bitmap().count_ones(),
            "oos_kib": store.bitmap().count_ones() * 4,
            "set_ranges": ranges,
            "set_ranges_truncated": store.bitmap().runs().nth(DUMP_RANGES_MAX).is_some(),
        },
        "get_gi": store.get_gi(),
    })
}
