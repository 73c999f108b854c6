//! `get-gi` / `show-gi` renderings (docs/drbd-semantics.md §13.4), in drbdmeta's exact format
//! (drbd-utils `dt_print_uuids` / `dt_pretty_print_uuids`: `%016llX`, upper-case hex).
//! Used both offline (from the superblock) and online (from the daemon's status).

use super::superblock::MdFlags;

/// The generation identifiers of one device as printed by get-gi/show-gi.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiView {
    /// current, bitmap, history[0] (younger), history[1] (older).
    pub uuids: [u64; 4],
    /// Raw MDF_* bits.
    pub flags: u32,
}

impl GiView {
    fn flag(&self, bit: u32) -> u8 {
        u8::from(self.flags & bit != 0)
    }

    /// `CURRENT:BITMAP:HIST1:HIST2:c:u:p:n:f:o:C` (no trailing newline).
    pub fn get_gi(&self) -> String {
        let [c, b, h1, h2] = self.uuids;
        format!(
            "{c:016X}:{b:016X}:{h1:016X}:{h2:016X}:{}:{}:{}:{}:{}:{}:{}",
            self.flag(MdFlags::CONSISTENT),
            self.flag(MdFlags::WAS_UP_TO_DATE),
            self.flag(MdFlags::PRIMARY_IND),
            self.flag(MdFlags::CONNECTED_IND),
            self.flag(MdFlags::FULL_SYNC),
            self.flag(MdFlags::PEER_OUT_DATED),
            self.flag(MdFlags::CRASHED_PRIMARY),
        )
    }

    /// get-gi plus drbdmeta's ASCII legend and the one-line flag summary.
    pub fn show_gi(&self) -> String {
        let f = self.flags;
        let has = |bit: u32| f & bit != 0;
        let mut s = String::new();
        s.push_str(concat!(
            "\n",
            "       +--<  Current data generation UUID  >-\n",
            "       |               +--<  Bitmap's base data generation UUID  >-\n",
            "       |               |                 +--<  younger history UUID  >-\n",
            "       |               |                 |         +-<  older history  >-\n",
            "       V               V                 V         V\n",
        ));
        s.push_str(&self.get_gi());
        s.push('\n');
        s.push_str(concat!(
            "                                                                    ^ ^ ^ ^ ^ ^ ^\n",
            "                                      -<  Data consistency flag  >--+ | | | | | |\n",
            "                             -<  Data was/is currently up-to-date  >--+ | | | | |\n",
            "                                  -<  Node was/is currently primary  >--+ | | | |\n",
            "                                  -<  Node was/is currently connected  >--+ | | |\n",
            "         -<  Node was in the progress of setting all bits in the bitmap  >--+ | |\n",
            "                        -<  The peer's disk was out-dated or inconsistent  >--+ |\n",
            "      -<  This node was a crashed primary, and has not seen its peer since   >--+\n",
            "\n",
        ));
        let disk = if has(MdFlags::CONSISTENT) {
            if has(MdFlags::WAS_UP_TO_DATE) {
                "UpToDate"
            } else {
                "Outdated"
            }
        } else {
            "Inconsistent"
        };
        s.push_str(&format!(
            "flags:{} {}, {}, {}{}{}\n",
            if has(MdFlags::CRASHED_PRIMARY) {
                " crashed"
            } else {
                ""
            },
            if has(MdFlags::PRIMARY_IND) {
                "Primary"
            } else {
                "Secondary"
            },
            if has(MdFlags::CONNECTED_IND) {
                "Connected"
            } else {
                "StandAlone"
            },
            disk,
            if has(MdFlags::FULL_SYNC) {
                ", need full sync"
            } else {
                ""
            },
            if has(MdFlags::PEER_OUT_DATED) {
                ", peer Outdated"
            } else {
                ""
            },
        ));
        s
    }

    /// `--json`: UUIDs as upper-case hex strings (a u64 does not survive JSON doubles), flags
    /// by name and as raw bits.
    pub fn to_json(&self) -> serde_json::Value {
        let hex = |v: u64| serde_json::Value::String(format!("{v:016X}"));
        let flags = MdFlags::from_bits(self.flags & MdFlags::ALL).unwrap_or_default();
        serde_json::json!({
            "current": hex(self.uuids[0]),
            "bitmap": hex(self.uuids[1]),
            "history": [hex(self.uuids[2]), hex(self.uuids[3])],
            "flags": self.flags,
            "flag_names": flags.names(),
            "consistent": self.flag(MdFlags::CONSISTENT) == 1,
            "was_up_to_date": self.flag(MdFlags::WAS_UP_TO_DATE) == 1,
            "primary_ind": self.flag(MdFlags::PRIMARY_IND) == 1,
            "connected_ind": self.flag(MdFlags::CONNECTED_IND) == 1,
            "full_sync": self.flag(MdFlags::FULL_SYNC) == 1,
            "peer_out_dated": self.flag(MdFlags::PEER_OUT_DATED) == 1,
            "crashed_primary": self.flag(MdFlags::CRASHED_PRIMARY) == 1,
            "get_gi": self.get_gi(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_metadata_prints_like_drbdmeta() {
        let gi = GiView {
            uuids: [4, 0, 0, 0],
            flags: 0,
        };
        assert_eq!(
            gi.get_gi(),
            "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0"
        );
        let show = gi.show_gi();
        assert!(show.contains("Current data generation UUID"));
        assert!(
            show.ends_with("flags: Secondary, StandAlone, Inconsistent\n"),
            "{show}"
        );
    }

    #[test]
    fn flag_order_and_upper_case_hex() {
        let all = MdFlags::CONSISTENT
            | MdFlags::WAS_UP_TO_DATE
            | MdFlags::PRIMARY_IND
            | MdFlags::CONNECTED_IND
            | MdFlags::FULL_SYNC
            | MdFlags::PEER_OUT_DATED
            | MdFlags::CRASHED_PRIMARY;
        let gi = GiView {
            uuids: [0xABCD_EF01_2345_6789, 1, 2, 3],
            flags: all,
        };
        assert!(gi
            .get_gi()
            .starts_with("ABCDEF0123456789:0000000000000001:"));
        assert!(gi.get_gi().ends_with(":1:1:1:1:1:1:1"));
        let one = GiView {
            uuids: [0; 4],
            flags: MdFlags::FULL_SYNC,
        };
        assert!(one.get_gi().ends_with(":0:0:0:0:1:0:0"));
        let up = GiView {
            uuids: [0; 4],
            flags: all,
        };
        assert!(up.show_gi().ends_with(
            "flags: crashed Primary, Connected, UpToDate, need full sync, peer Outdated\n"
        ));
        assert_eq!(gi.to_json()["current"], "ABCDEF0123456789");
    }
}
