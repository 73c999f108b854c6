//! `repadm adjust` on a running resource: what differs between the running configuration and
//! the re-read `.res` file, and how each difference can be applied. Pure: repd computes it,
//! repadm prints it, and the unit tests pin the classification.
//!
//! The comparison walks the serialized `NodeView`s, so a field added to the view later is
//! never silently ignored: a difference this table does not know refuses the whole adjust.

use std::collections::BTreeMap;

use rep_resources::NodeView;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How one changed option reaches the running resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// Takes effect at once (the next ping, the next resync request, the next I/O error…).
    Live,
    /// The peers agree on it at the handshake: a connected resource reconnects now; an
    /// unconnected one uses it at its next connection.
    Reconnect,
    /// The backing device or its metadata moves: detach, then attach the new one.
    Reattach,
    /// Not applied; `reason` says why and what to do instead.
    Refused,
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            How::Live => "live",
            How::Reconnect => "reconnect",
            How::Reattach => "reattach",
            How::Refused => "refused",
        })
    }
}

/// One changed option, as `repadm adjust` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `net`, `disk`, `startup`, `options`, `handlers` or `on` (the host section).
    pub section: String,
    /// The `.res` keyword (a handler's name in `handlers`).
    pub option: String,
    pub old: String,
    pub new: String,
    pub how: How,
    /// Why it was refused (only for `refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Change {
    /// `net ping-int 10 -> 3 (live)`.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {} {} -> {} ({})",
            self.section, self.option, self.old, self.new, self.how
        );
        if let Some(r) = &self.reason {
            s.push_str(": ");
            s.push_str(r);
        }
        s
    }
}

/// The answer to an adjust request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub dry_run: bool,
    pub changes: Vec<Change>,
    /// Exit code for repadm: 0, or the code of the first refusal (10: the configuration asks
    /// for what a running resource cannot do; 11: the current state forbids it).
    pub exit_code: i32,
}

impl Report {
    pub fn text(&self, resource: &str) -> String {
        if self.changes.is_empty() {
            return format!("{resource}: no changes\n");
        }
        let mut out = String::new();
        for c in &self.changes {
            out.push_str(&format!("{resource}: {}\n", c.line()));
        }
        if self.dry_run {
            out.push_str(&format!("{resource}: dry run: nothing was changed\n"));
        }
        out
    }
}

/// How values print: in the `.res` file's own units where the view converted them.
#[derive(Clone, Copy)]
enum Fmt {
    Plain,
    /// KiB/s or KiB, printed with DRBD's `k`/`M` suffixes.
    Kib,
    /// Never printed (shared-secret).
    Secret,
    /// `internal`, `PATH` or `PATH [IDX]`.
    MetaDisk,
}

/// `(JSON path in the serialized NodeView, section, keyword, how, format)`.
const TABLE: &[(&str, &str, &str, How, Fmt)] = &[
    (
        "net.protocol",
        "net",
        "protocol",
        How::Reconnect,
        Fmt::Plain,
    ),
    ("net.timeout_ds", "net", "timeout", How::Live, Fmt::Plain),
    (
        "net.connect_int_s",
        "net",
        "connect-int",
        How::Live,
        Fmt::Plain,
    ),
    ("net.ping_int_s", "net", "ping-int", How::Live, Fmt::Plain),
    (
        "net.ping_timeout_ds",
        "net",
        "ping-timeout",
        How::Live,
        Fmt::Plain,
    ),
    ("net.ko_count", "net", "ko-count", How::Live, Fmt::Plain),
    (
        "net.max_buffers",
        "net",
        "max-buffers",
        How::Live,
        Fmt::Plain,
    ),
    (
        "net.max_epoch_size",
        "net",
        "max-epoch-size",
        How::Live,
        Fmt::Plain,
    ),
    (
        "net.sndbuf_size",
        "net",
        "sndbuf-size",
        How::Live,
        Fmt::Plain,
    ),
    (
        "net.rcvbuf_size",
        "net",
        "rcvbuf-size",
        How::Live,
        Fmt::Plain,
    ),
    (
        "net.shared_secret",
        "net",
        "shared-secret",
        How::Reconnect,
        Fmt::Secret,
    ),
    (
        "net.cram_hmac_alg",
        "net",
        "cram-hmac-alg",
        How::Reconnect,
        Fmt::Plain,
    ),
    (
        "net.verify_alg",
        "net",
        "verify-alg",
        How::Reconnect,
        Fmt::Plain,
    ),
    (
        "net.csums_alg",
        "net",
        "csums-alg",
        How::Reconnect,
        Fmt::Plain,
    ),
    (
        "net.after_sb_0pri",
        "net",
        "after-sb-0pri",
        How::Reconnect,
        Fmt::Plain,
    ),
    (
        "net.after_sb_1pri",
        "net",
        "after-sb-1pri",
        How::Reconnect,
        Fmt::Plain,
    ),
    (
        "net.after_sb_2pri",
        "net",
        "after-sb-2pri",
        How::Reconnect,
        Fmt::Plain,
    ),
    (
        "net.rr_conflict",
        "net",
        "rr-conflict",
        How::Live,
        Fmt::Plain,
    ),
    (
        "net.allow_two_primaries",
        "net",
        "allow-two-primaries",
        How::Reconnect,
        Fmt::Plain,
    ),
    (
        "net.always_asbp",
        "net",
        "always-asbp",
        How::Live,
        Fmt::Plain,
    ),
    (
        "net.data_integrity_alg",
        "net",
        "data-integrity-alg",
        How::Reconnect,
        Fmt::Plain,
    ),
    ("net.use_rle", "net", "use-rle", How::Live, Fmt::Plain),
    (
        "disk_conf.fencing",
        "disk",
        "fencing",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.on_io_error",
        "disk",
        "on-io-error",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.size_bytes",
        "disk",
        "size",
        How::Refused,
        Fmt::Plain,
    ),
    (
        "disk_conf.al_extents",
        "disk",
        "al-extents",
        How::Refused,
        Fmt::Plain,
    ),
    (
        "disk_conf.resync_rate_kib",
        "disk",
        "resync-rate",
        How::Live,
        Fmt::Kib,
    ),
    (
        "disk_conf.resync_after",
        "disk",
        "resync-after",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.c_plan_ahead_ds",
        "disk",
        "c-plan-ahead",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.c_fill_target_sectors",
        "disk",
        "c-fill-target",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.c_delay_target_ds",
        "disk",
        "c-delay-target",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.c_max_rate_kib",
        "disk",
        "c-max-rate",
        How::Live,
        Fmt::Kib,
    ),
    (
        "disk_conf.c_min_rate_kib",
        "disk",
        "c-min-rate",
        How::Live,
        Fmt::Kib,
    ),
    (
        "disk_conf.disk_barrier",
        "disk",
        "disk-barrier",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.disk_flushes",
        "disk",
        "disk-flushes",
        How::Live,
        Fmt::Plain,
    ),
    (
        "disk_conf.md_flushes",
        "disk",
        "md-flushes",
        How::Live,
        Fmt::Plain,
    ),
    (
        "startup.wfc_timeout_s",
        "startup",
        "wfc-timeout",
        How::Live,
        Fmt::Plain,
    ),
    (
        "startup.degr_wfc_timeout_s",
        "startup",
        "degr-wfc-timeout",
        How::Live,
        Fmt::Plain,
    ),
    (
        "startup.outdated_wfc_timeout_s",
        "startup",
        "outdated-wfc-timeout",
        How::Live,
        Fmt::Plain,
    ),
    (
        "startup.wait_after_sb",
        "startup",
        "wait-after-sb",
        How::Live,
        Fmt::Plain,
    ),
    (
        "startup.become_primary_on",
        "startup",
        "become-primary-on",
        How::Live,
        Fmt::Plain,
    ),
    (
        "options.cpu_mask",
        "options",
        "cpu-mask",
        How::Live,
        Fmt::Plain,
    ),
    (
        "options.on_no_data_accessible",
        "options",
        "on-no-data-accessible",
        How::Live,
        Fmt::Plain,
    ),
    ("disk", "on", "disk", How::Reattach, Fmt::Plain),
    ("meta_disk", "on", "meta-disk", How::Reattach, Fmt::MetaDisk),
    ("address", "on", "address", How::Reconnect, Fmt::Plain),
    (
        "peer_address",
        "on",
        "peer address",
        How::Reconnect,
        Fmt::Plain,
    ),
    ("peer_node", "on", "peer name", How::Live, Fmt::Plain),
    ("device", "on", "device", How::Live, Fmt::Plain),
    ("minor", "on", "minor", How::Live, Fmt::Plain),
    ("nbd_listen", "on", "nbd-listen", How::Refused, Fmt::Plain),
    (
        "metrics_listen",
        "on",
        "metrics-listen",
        How::Refused,
        Fmt::Plain,
    ),
    ("volume", "on", "volume", How::Refused, Fmt::Plain),
    ("busy_poll_us", "on", "busy-poll", How::Refused, Fmt::Plain),
];

/// Why a `Refused` entry of the table is refused.
fn refusal_reason(path: &str) -> &'static str {
    match path {
        "disk_conf.al_extents" => {
            "the activity log's size is fixed in the metadata by create-md; to change it: \
             `repadm down`, `repadm create-md --force` (the sync state is lost: a full sync \
             follows), `repadm up`"
        }
        "disk_conf.size_bytes" => "rep cannot resize a running device; `repadm down` and `up`",
        "nbd_listen" | "metrics_listen" => {
            "listeners are opened when repd starts; `repadm down` and `up` to change them"
        }
        "busy_poll_us" => "the busy-poll window is set when repd starts; `repadm down` and `up`",
        _ => "not adjustable on a running resource; `repadm down` and `up`",
    }
}

fn kib(n: u64) -> String {
    if n > 0 && n.is_multiple_of(1024) {
        format!("{}M", n / 1024)
    } else {
        format!("{n}k")
    }
}

fn show(v: Option<&Value>, fmt: Fmt) -> String {
    match (v, fmt) {
        (None | Some(Value::Null), _) => "none".into(),
        (Some(_), Fmt::Secret) => "(secret)".into(),
        (Some(Value::String(s)), Fmt::MetaDisk) => s.to_lowercase(),
        (Some(Value::Number(n)), Fmt::Kib) => n.as_u64().map_or_else(|| n.to_string(), kib),
        (Some(Value::String(s)), _) => s.clone(),
        (Some(Value::Bool(b)), _) => if *b { "yes" } else { "no" }.into(),
        (Some(Value::Object(o)), _) => compact_meta_disk(o),
        (Some(other), _) => other.to_string(),
    }
}

/// `meta-disk` serializes as `"Internal"` or `{"External": {"path": …, "index": …}}`.
fn compact_meta_disk(o: &serde_json::Map<String, Value>) -> String {
    if let Some(Value::Object(ext)) = o.get("External") {
        let path = ext.get("path").and_then(Value::as_str).unwrap_or("?");
        return match ext.get("index").and_then(Value::as_u64) {
            Some(i) => format!("{path} [{i}]"),
            None => path.to_string(),
        };
    }
    Value::Object(o.clone()).to_string()
}

/// The view as `path → value`, one level deep for the option sections.
fn flatten(view: &NodeView) -> Result<BTreeMap<String, Value>, String> {
    let v = serde_json::to_value(view).map_err(|e| format!("cannot compare views: {e}"))?;
    let Value::Object(top) = v else {
        return Err("a node view is not a JSON object".into());
    };
    let mut out = BTreeMap::new();
    for (k, v) in top {
        match (k.as_str(), v) {
            ("net" | "disk_conf" | "startup" | "options" | "handlers", Value::Object(inner)) => {
                for (ik, iv) in inner {
                    out.insert(format!("{k}.{ik}"), iv);
                }
            }
            (_, v) => {
                out.insert(k, v);
            }
        }
    }
    Ok(out)
}

/// Every difference between the running view and the new one, classified. `Err` when the two
/// differ in a field this table does not know (the adjust is refused whole).
/// Re-read `path` for the running resource's node and compare: the new view and the changes,
/// or why the file cannot be used (an error naming the place).
pub fn reread(
    path: &std::path::Path,
    running: &NodeView,
) -> Result<(NodeView, Vec<Change>), String> {
    let parsed = rep_resources::parse_file(path).map_err(|e| format!("adjust: {e}"))?;
    let new = parsed
        .node_view(&running.resource, &running.node)
        .map_err(|e| format!("adjust: {}: {e}", path.display()))?;
    let changes = diff(running, &new).map_err(|e| format!("adjust: {e}"))?;
    Ok((new, changes))
}

pub fn diff(running: &NodeView, new: &NodeView) -> Result<Vec<Change>, String> {
    let (a, b) = (flatten(running)?, flatten(new)?);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changes = Vec::new();
    for key in keys {
        let (old, newv) = (a.get(key), b.get(key));
        if old == newv {
            continue;
        }
        if let Some(name) = key.strip_prefix("handlers.") {
            changes.push(Change {
                section: "handlers".into(),
                option: name.into(),
                old: show(old, Fmt::Plain),
                new: show(newv, Fmt::Plain),
                how: How::Live,
                reason: None,
            });
            continue;
        }
        let Some(&(_, section, option, mut how, fmt)) = TABLE.iter().find(|e| e.0 == key) else {
            return Err(format!(
                "{key} differs and adjust does not know how to apply it; `repadm down` and `up`"
            ));
        };
        let absent = |v: Option<&Value>| matches!(v, None | Some(Value::Null));
        let mut reason = None;
        if matches!(key.as_str(), "address" | "peer_address" | "peer_node")
            && absent(old) != absent(newv)
        {
            how = How::Refused;
            reason = Some(
                "adding or removing an address or the peer changes what the resource is; `repadm down` and `up`"
                    .to_string(),
            );
        }
        changes.push(Change {
            section: section.into(),
            option: option.into(),
            old: show(old, fmt),
            new: show(newv, fmt),
            how,
            reason: reason.or_else(|| (how == How::Refused).then(|| refusal_reason(key).into())),
        });
    }
    Ok(changes)
}

/// `new` with every refused change put back to its running value, so that the running
/// configuration only holds what was applied (and the next adjust reports the rest again).
pub fn applied_view(running: &NodeView, new: &NodeView, changes: &[Change]) -> NodeView {
    let mut v = new.clone();
    for c in changes.iter().filter(|c| c.how == How::Refused) {
        match (c.section.as_str(), c.option.as_str()) {
            ("disk", "al-extents") => v.disk_conf.al_extents = running.disk_conf.al_extents,
            ("disk", "size") => v.disk_conf.size_bytes = running.disk_conf.size_bytes,
            ("on", "nbd-listen") => v.nbd_listen = running.nbd_listen,
            ("on", "metrics-listen") => v.metrics_listen = running.metrics_listen,
            ("on", "busy-poll") => v.busy_poll_us = running.busy_poll_us,
            ("on", "volume") => v.volume = running.volume,
            ("on", "address" | "peer address" | "peer name") => {
                v.address = running.address;
                v.peer_address = running.peer_address;
                v.peer_node = running.peer_node.clone();
            }
            ("on", "disk" | "meta-disk") => {
                v.disk = running.disk.clone();
                v.meta_disk = running.meta_disk.clone();
            }
            _ => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(extra: &str, on_a: &str) -> NodeView {
        let text = format!(
            "resource r0 {{\n device /dev/drbd0; meta-disk internal;\n {extra}\n on a {{ disk /a.img; address 127.0.0.1:7789; {on_a} }}\n on b {{ disk /b.img; address 127.0.0.2:7789; }}\n}}\n"
        );
        rep_resources::parse_str(&text, "t.res", std::path::Path::new("/nonexistent"))
            .expect("test config parses")
            .node_view("r0", "a")
            .expect("node a")
    }

    #[test]
    fn unchanged_views_have_no_changes() {
        let v = view("net { ping-int 3; }", "");
        assert_eq!(diff(&v, &v.clone()).unwrap(), vec![]);
    }

    #[test]
    fn each_option_is_classified_and_printed_in_res_units() {
        let old = view(
            "protocol C; net { ping-int 10; } disk { resync-rate 250k; }",
            "",
        );
        let new = view(
            "protocol A; net { ping-int 3; shared-secret \"x\"; } disk { resync-rate 40M; al-extents 67; }",
            "",
        );
        let lines: Vec<String> = diff(&old, &new).unwrap().iter().map(Change::line).collect();
        assert!(
            lines.contains(&"net protocol C -> A (reconnect)".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"net ping-int 10 -> 3 (live)".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"disk resync-rate 250k -> 40M (live)".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"net shared-secret none -> (secret) (reconnect)".to_string()),
            "the secret is never printed: {lines:?}"
        );
        let al = lines
            .iter()
            .find(|l| l.contains("al-extents"))
            .expect("al-extents line");
        assert!(
            al.starts_with("disk al-extents 1237 -> 67 (refused): "),
            "{al}"
        );
        assert!(al.contains("create-md"), "{al}");
    }

    #[test]
    fn refused_changes_keep_their_running_value() {
        let old = view("", "");
        let new = view("disk { al-extents 67; } net { ping-int 3; }", "");
        let changes = diff(&old, &new).unwrap();
        let applied = applied_view(&old, &new, &changes);
        assert_eq!(applied.disk_conf.al_extents, old.disk_conf.al_extents);
        assert_eq!(applied.net.ping_int_s, 3);
        let again = diff(&applied, &new).unwrap();
        assert_eq!(again.len(), 1, "only the refused change is left: {again:?}");
    }

    #[test]
    fn moving_the_peer_reconnects_but_removing_it_is_refused() {
        let old = view("", "");
        let text = |peer: &str| {
            format!("resource r0 {{\n device /dev/drbd0; meta-disk internal;\n on a {{ disk /a.img; address 127.0.0.1:7789; }}\n{peer}}}\n")
        };
        let parse = |t: &str| {
            rep_resources::parse_str(t, "t.res", std::path::Path::new("/nonexistent"))
                .expect("parses")
                .node_view("r0", "a")
                .expect("node a")
        };
        let moved = parse(&text(" on b { disk /b.img; address 127.0.0.3:7789; }\n"));
        let lines: Vec<String> = diff(&old, &moved)
            .unwrap()
            .iter()
            .map(Change::line)
            .collect();
        assert_eq!(
            lines,
            ["on peer address 127.0.0.2:7789 -> 127.0.0.3:7789 (reconnect)"]
        );
        let alone = parse(&text(""));
        let changes = diff(&old, &alone).unwrap();
        let peer = changes
            .iter()
            .find(|c| c.option == "peer address")
            .expect("peer line");
        assert_eq!(peer.how, How::Refused, "{changes:?}");
        let applied = applied_view(&old, &alone, &changes);
        assert_eq!(applied.peer_address, old.peer_address);
    }

    #[test]
    fn disk_and_listeners_and_handlers() {
        let old = view("", "");
        let new = view(
            "handlers { split-brain \"echo sb\"; }",
            "meta-disk /m.img [0]; metrics-listen 127.0.0.1:9100;",
        );
        let lines: Vec<String> = diff(&old, &new).unwrap().iter().map(Change::line).collect();
        assert!(
            lines.contains(&"on meta-disk internal -> /m.img [0] (reattach)".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"handlers split-brain none -> echo sb (live)".to_string()),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("on metrics-listen none -> 127.0.0.1:9100 (refused)")),
            "{lines:?}"
        );
    }
}
