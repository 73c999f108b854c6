//! The `Status` a control client, the status files and the metrics read: one snapshot of the
//! engine and the running configuration (docs/json.md).

use crate::control::Status;
use crate::core::Engine;
use crate::runtime::paths::RunPaths;
use rep_resources::NodeView;

/// What `e` and `v` say now, in the form `status --json` prints.
pub fn status_of(e: &Engine, v: &NodeView, paths: &RunPaths) -> Status {
    let u = e.uuids();
    Status {
        version: crate::control::JSON_VERSION,
        resource: v.resource.clone(),
        node: v.node.clone(),
        peer_node: v.peer_node.clone(),
        minor: v.minor,
        device: v.device.clone(),
        pid: std::process::id(),
        role: e.role(),
        peer_role: e.peer_role(),
        cstate: e.cstate(),
        disk: e.disk(),
        peer_disk: e.pdsk(),
        protocol: v.net.protocol.to_string(),
        suspended: e.suspended_by_fencing(),
        quorum_enabled: e.config().quorum.enabled(),
        quorum: e.quorum(),
        suspended_quorum: e.suspended_by_quorum(),
        size_bytes: e.usable_bytes(),
        backing_disk: v.disk.display().to_string(),
        nbd_socket: paths.nbd().display().to_string(),
        nbd_uri: paths.nbd_uri(),
        nbd_listen: v.nbd_listen.map(|a| a.to_string()),
        address: v.address.map(|a| a.to_string()),
        peer_address: v.peer_address.map(|a| a.to_string()),
        open_clients: e.open_clients(),
        counters: e.counters(),
        oos_kib: e.oos_kib(),
        verify_oos_blocks: e.last_verify_oos(),
        oos_notice: e.oos_notice().map(str::to_owned),
        split_brain: e.split_brain(),
        uuids: [u.current, u.bitmap, u.history[0], u.history[1]],
        md_flags: e.flags().bits(),
        sync: e
            .verify_progress()
            .map(|(done, total)| crate::control::SyncProgress::of_verify(done, total))
            .or_else(|| {
                e.resync_info()
                    .map(|r| crate::control::SyncProgress::of_resync(&r))
            }),
        peers: e
            .peer_list()
            .into_iter()
            .map(
                |(node_id, node, witness, role, cstate, disk)| crate::control::PeerStatus {
                    node,
                    node_id,
                    role,
                    cstate,
                    disk,
                    witness,
                },
            )
            .collect(),
    }
}
