//! The built-in fence-peer (DRBD's drbd-peer-outdater, `dopd`): when no `fence-peer` handler is
//! configured, repd itself asks the peer's repd to outdate its disk over a short connection of
//! its own to the peer's replication address. This reaches the peer when the replication link
//! broke but the peer is still reachable (a reset, a ko-count timeout, a graceful `disconnect`
//! of a Primary). When the peer cannot be reached at all it answers 5 ("peer unreachable,
//! assumed dead"), as dopd does: without an arbiter a dead peer and a partitioned one look the
//! same, which only STONITH (a handler for `resource-and-stonith`) can tell apart.
//!
//! Requester: `OutdateRequest` → (`AuthChallenge` ⇄ `AuthResponse` with a shared-secret) →
//! `OutdateReply { role, disk }`, once the peer's Outdated is durable. Exit codes: 4 outdated,
//! 3 the peer is Inconsistent or has no disk, 6 the peer is Primary, 5 unreachable, 1 anything
//! else.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use super::tls::PeerStream;
use rep_nbd::server::stream::{Reader, Stream};

use super::driver::Driver;
use super::link::wire::{connect_to_peer, read_first_packet};
use crate::core::AdminCmd;
use crate::wire::auth;
use crate::wire::codes::{disk_code, disk_from, role_code, role_from};
use crate::wire::Packet;
use rep_resources::HmacAlg;

/// How long the whole exchange may take (the peer persists Outdated before it answers).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

async fn send(stream: &PeerStream, p: &Packet) -> io::Result<()> {
    let mut buf = Vec::new();
    p.encode(&mut buf);
    stream.write_vec(buf).await.0
}

/// Ask the peer to outdate itself; DRBD's fence-peer exit code.
pub async fn outdate_peer(driver: Rc<Driver>) -> i32 {
    if driver.witness.get().is_some() {
        // With a witness, the peer is outdated through it, never directly: it relays one
        // request at a time, which is what keeps two nodes from both winning.
        return super::witness_link::relay_outdate(driver).await;
    }
    let res = driver.paths.resource.clone();
    let Some(settings) = driver.link_settings() else {
        tracing::error!(resource = %res, "fence-peer: no peer address configured");
        return 1;
    };
    if driver.status().cstate >= crate::core::ConnState::Connected {
        // Connected again: asking the peer now would only break the new link.
        tracing::info!(resource = %res, "fence-peer (built in): connected again, not asking the peer");
        return 1;
    }
    let stream = match connect_to_peer(&settings).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(resource = %res, "fence-peer (built in): the peer at {} is unreachable ({e}): taken as dead", settings.peer_addr);
            return 5;
        }
    };
    let view = driver.view();
    let net = &view.net;
    let exchange = async {
        let stream = Rc::new(stream);
        let mut reader = Reader::new(Rc::clone(&stream));
        let request = Packet::OutdateRequest {
            node: settings.node.clone(),
        };
        send(&stream, &request).await?;
        loop {
            match read_first_packet(&mut reader).await? {
                Some(Packet::AuthChallenge { nonce }) => {
                    let Some(secret) = net.shared_secret.as_deref() else {
                        return Err(io::Error::other(
                            "the peer requires authentication but no shared-secret is set here",
                        ));
                    };
                    let alg = net.cram_hmac_alg.unwrap_or(HmacAlg::Sha1);
                    let mac = auth::response(alg, secret, &nonce, &settings.node);
                    send(&stream, &Packet::AuthResponse { mac }).await?;
                }
                Some(Packet::OutdateReply { role, disk }) => {
                    let (Some(role), Some(disk)) = (role_from(role), disk_from(disk)) else {
                        return Err(io::Error::other("invalid OutdateReply"));
                    };
                    return Ok((role, disk));
                }
                Some(other) => {
                    return Err(io::Error::other(format!(
                        "unexpected {} from the peer",
                        other.name()
                    )))
                }
                None => return Err(io::Error::other("the peer closed the connection")),
            }
        }
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
        Ok(Ok((role, disk))) => {
            let code = crate::core::fence_code::outdate_exit_code(role, disk);
            tracing::info!(resource = %res, "fence-peer (built in): the peer is {role}/{disk}: exit code {code}");
            code
        }
        Ok(Err(e)) => {
            tracing::error!(resource = %res, "fence-peer (built in): {e}");
            1
        }
        Err(_) => {
            tracing::error!(resource = %res, "fence-peer (built in): the peer did not answer within {} s", EXCHANGE_TIMEOUT.as_secs());
            1
        }
    }
}

/// The peer's fence-peer asks us to outdate ourselves (`OutdateRequest` from `node`, already
/// checked to come from the peer's address): authenticate it if a shared-secret is set, carry
/// it out, answer with our role and disk state.
pub async fn serve_outdate_request(
    driver: Rc<Driver>,
    stream: Rc<PeerStream>,
    mut reader: Reader<PeerStream>,
    node: String,
) {
    let res = driver.paths.resource.clone();
    let view = driver.view();
    if view.peer_node.as_deref() != Some(node.as_str()) {
        tracing::warn!(resource = %res, "refusing an outdate request from {node}: the peer is {:?}", view.peer_node);
        return;
    }
    if let Some(secret) = view.net.shared_secret.clone() {
        let nonce = match super::link::wire::os_random() {
            Ok(n) => n.to_vec(),
            Err(e) => {
                tracing::error!(resource = %res, "outdate request: no random source: {e}");
                return;
            }
        };
        let challenge = Packet::AuthChallenge {
            nonce: nonce.clone(),
        };
        if send(&stream, &challenge).await.is_err() {
            return;
        }
        let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, read_first_packet(&mut reader)).await;
        let Ok(Ok(Some(Packet::AuthResponse { mac }))) = answer else {
            tracing::warn!(resource = %res, "outdate request from {node}: no authentication response");
            return;
        };
        let alg = view.net.cram_hmac_alg.unwrap_or(HmacAlg::Sha1);
        if !auth::verify(alg, &secret, &nonce, &node, &mac) {
            tracing::warn!(resource = %res, "outdate request from {node}: authentication failed (wrong shared-secret)");
            return;
        }
    }
    tracing::info!(resource = %res, "the peer {node} asks to outdate our disk (it lost the connection)");
    if let Err(refusal) = driver.admin(AdminCmd::PeerOutdate).await {
        tracing::warn!(resource = %res, "outdate request from {node}: {refusal}");
    }
    let s = driver.status();
    let reply = Packet::OutdateReply {
        role: role_code(s.role),
        disk: disk_code(s.disk),
    };
    let _ = send(&stream, &reply).await;
}
