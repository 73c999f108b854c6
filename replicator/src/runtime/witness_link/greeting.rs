//! How a witness link opens, the same from both ends (docs/quorum.md, "The witness"): each
//! side sends `Hello` (protocol range, its node name) and, with a `shared-secret`, an
//! `AuthChallenge` of its own; each answers the other's challenge and checks the answer to
//! its own. Mutual, because either side can have the other's disk outdated.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use rep_nbd::server::stream::{Reader, Stream};

use crate::runtime::link::wire::{hello, os_random, read_first_packet};
use crate::runtime::tls::PeerStream;
use crate::wire::codes::PROTOCOL_VERSION;
use crate::wire::{auth, Packet};
use rep_resources::HmacAlg;

/// A peer that says nothing, or not enough, is dropped after this.
pub(crate) const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn send(stream: &PeerStream, p: &Packet) -> io::Result<()> {
    let mut buf = Vec::new();
    p.encode(&mut buf);
    stream.write_vec(buf).await.0
}

/// The task that writes `rx`'s frames to `stream` in order, and closes it when `rx` ends or a
/// write fails (both ends of a witness link write from several tasks: pings, answers, relays).
pub(crate) fn spawn_writer(
    stream: &Rc<PeerStream>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Packet>,
) -> tokio::task::JoinHandle<()> {
    let stream = Rc::clone(stream);
    tokio_uring::spawn(async move {
        while let Some(p) = rx.recv().await {
            if send(&stream, &p).await.is_err() {
                break;
            }
        }
        stream.close();
    })
}

/// Greet the other end; `accept` says whether a node name may be on the other end. Returns
/// that name.
pub(crate) async fn greet(
    stream: &Rc<PeerStream>,
    reader: &mut Reader<PeerStream>,
    me: &str,
    secret: Option<(&str, HmacAlg)>,
    accept: impl Fn(&str) -> Result<(), String>,
) -> io::Result<String> {
    let exchange = async {
        send(stream, &hello(me, false, 0)).await?;
        let nonce = match secret {
            Some(_) => {
                let n = os_random()?.to_vec();
                send(stream, &Packet::AuthChallenge { nonce: n.clone() }).await?;
                Some(n)
            }
            None => None,
        };
        let (mut peer, mut answered, mut verified) =
            (None::<String>, secret.is_none(), nonce.is_none());
        while peer.is_none() || !answered || !verified {
            let Some(p) = read_first_packet(reader).await? else {
                return Err(io::Error::other(
                    "the other end closed the connection during the greeting",
                ));
            };
            match p {
                Packet::Hello {
                    version_min,
                    version_max,
                    node,
                    ..
                } => {
                    if !(version_min..=version_max).contains(&PROTOCOL_VERSION) {
                        return Err(io::Error::other(format!(
                            "{node} speaks protocol {version_min}..{version_max}, this node {PROTOCOL_VERSION}: run the same rep version on every node"
                        )));
                    }
                    accept(&node).map_err(io::Error::other)?;
                    peer = Some(node);
                }
                Packet::AuthChallenge { nonce } => {
                    let Some((secret, alg)) = secret else {
                        return Err(io::Error::other(
                            "the other end requires authentication but no shared-secret is set here",
                        ));
                    };
                    let mac = auth::response(alg, secret, &nonce, me);
                    send(stream, &Packet::AuthResponse { mac }).await?;
                    answered = true;
                }
                Packet::AuthResponse { mac } => {
                    let (Some((secret, alg)), Some(nonce), Some(node)) = (secret, &nonce, &peer)
                    else {
                        return Err(io::Error::other("an unexpected AuthResponse"));
                    };
                    if !auth::verify(alg, secret, nonce, node, &mac) {
                        return Err(io::Error::other(format!(
                            "{node} failed authentication (a different shared-secret)"
                        )));
                    }
                    verified = true;
                }
                other => {
                    return Err(io::Error::other(format!(
                        "unexpected {} during the greeting",
                        other.name()
                    )))
                }
            }
        }
        Ok(peer.unwrap_or_default())
    };
    match tokio::time::timeout(GREETING_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no complete greeting within {} s (with a shared-secret on one end only, the other never answers)",
                GREETING_TIMEOUT.as_secs()
            ),
        )),
    }
}
