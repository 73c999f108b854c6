//! The peer link's frames on a socket: dialling the peer, reading one packet, the `Hello`
//! that opens a connection. Used by the link (`link/mod.rs`) and by the built-in outdater's
//! short connections, without either importing the other.

use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::time::Duration;

use rep_nbd::server::stream::{Reader, Stream};
use tokio_uring::net::TcpStream;

use super::state::LinkSettings;
use crate::core::peer::PROTOCOL_VERSION;
use crate::runtime::tls::PeerStream;
use crate::wire::frame::{decode_header, WireError};
use crate::wire::packet::{data_prefix_len, decode_with_data, MAX_DATA_PREFIX};
use crate::wire::{Packet, HEADER_BYTES};

/// Bytes from the kernel's random source (getrandom(2) semantics through /dev/urandom).
pub(crate) fn os_random() -> io::Result<[u8; crate::wire::auth::NONCE_BYTES]> {
    use std::io::Read;
    let mut n = [0u8; crate::wire::auth::NONCE_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut n)?;
    Ok(n)
}

/// Why one frame could not be read from a peer socket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Socket(#[from] io::Error),
    /// The bytes arrived but the decoder refused them: the peer's fault, not the network's.
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{}", crate::runtime::tls::PEER_SPEAKS_TLS)]
    PeerSpeaksTls,
}

/// One packet from a short connection (the outdate exchange); `None` at a clean close.
pub(crate) async fn read_first_packet(
    reader: &mut Reader<PeerStream>,
) -> io::Result<Option<Packet>> {
    read_packet(reader).await.map_err(|e| match e {
        ReadError::Socket(e) => e,
        ReadError::Wire(e) => io::Error::other(e),
        e @ ReadError::PeerSpeaksTls => io::Error::other(e),
    })
}

/// Whether `ahead` (bytes a reader holds) starts with a whole frame, or with a header that does
/// not decode: either way `read_packet` returns without waiting for the socket.
pub(crate) fn frame_ahead(ahead: &[u8]) -> bool {
    let Some(head) = ahead.first_chunk::<HEADER_BYTES>() else {
        return false;
    };
    decode_header(head).map_or(true, |h| ahead.len() >= HEADER_BYTES + h.len as usize)
}

pub(crate) async fn read_packet<S: Stream>(
    reader: &mut Reader<S>,
) -> Result<Option<Packet>, ReadError> {
    let Some(head) = reader.read_array::<HEADER_BYTES>().await? else {
        return Ok(None);
    };
    let h = match decode_header(&head) {
        Ok(h) => h,
        Err(_) if crate::runtime::tls::looks_like_tls(&head) => {
            return Err(ReadError::PeerSpeaksTls)
        }
        Err(e) => return Err(e.into()),
    };
    let len = h.len as usize;
    if let Some(prefix_len) = data_prefix_len(h.command).filter(|&p| p <= len) {
        // A block of data: a slice of the read buffer when it is all there (the hot path, no
        // copy), else read straight into its own buffer; the packet holds it as it is.
        let mut prefix = [0u8; MAX_DATA_PREFIX];
        let prefix = &mut prefix[..prefix_len];
        reader.read_slice(prefix).await?;
        let data = reader.read_bytes(len - prefix_len).await?;
        return Ok(Some(decode_with_data(&h, prefix, data)?));
    }
    let payload = reader.read_vec(len).await?;
    Ok(Some(Packet::decode(&h, &payload)?))
}

/// A TCP connection to the peer's address, from our own (the peer tells who calls by it).
pub(crate) async fn connect_to_peer(settings: &LinkSettings) -> io::Result<PeerStream> {
    let my = settings.my_addr;
    let peer = settings.peer_addr;
    let std_stream = tokio::task::spawn_blocking(move || -> io::Result<StdTcpStream> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(peer),
            socket2::Type::STREAM,
            None,
        )?;
        sock.bind(&SocketAddr::new(my.ip(), 0).into())?;
        sock.connect_timeout(&peer.into(), Duration::from_secs(5))?;
        let s: StdTcpStream = sock.into();
        s.set_nodelay(true)?;
        Ok(s)
    })
    .await
    .map_err(io::Error::other)??;
    // TLS (net { tls yes; }) right after connect.
    crate::runtime::tls::secure_dialed(TcpStream::from_std(std_stream), peer).await
}

pub(crate) fn hello(node: &str, meta_socket: bool, session: u64) -> Packet {
    Packet::Hello {
        version_min: PROTOCOL_VERSION,
        version_max: PROTOCOL_VERSION,
        node: node.to_owned(),
        meta_socket,
        session,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Secondary's hot path: the block of a `Data` frame that arrived whole is a slice of
    /// the reader's buffer (the frames lie back to back in it), not a copy.
    #[test]
    fn data_blocks_are_lent_from_the_read_buffer() {
        use std::io::Write;
        use std::rc::Rc;
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut bytes = Vec::new();
        for i in 0..8u8 {
            Packet::Data {
                id: u64::from(i),
                offset: u64::from(i) * 4096,
                fua: false,
                data: vec![i; 4096].into(),
            }
            .encode(&mut bytes);
        }
        theirs.write_all(&bytes).expect("write");
        drop(theirs);
        let frame = bytes.len() / 8;
        tokio_uring::start(async move {
            let polled = rep_nbd::server::stream::PolledUnix::new(ours).expect("register");
            let mut reader = Reader::new(Rc::new(polled));
            let mut blocks = Vec::new();
            while let Some(p) = read_packet(&mut reader).await.expect("read") {
                let Packet::Data { id, data, .. } = p else {
                    panic!("{p:?}")
                };
                assert_eq!(data, vec![id as u8; 4096]);
                blocks.push(data);
            }
            assert_eq!(blocks.len(), 8);
            for pair in blocks.windows(2) {
                let gap = (pair[1].as_ptr() as usize).wrapping_sub(pair[0].as_ptr() as usize);
                assert_eq!(gap, frame, "a block was copied out of the read buffer");
            }
            assert!(reader.pinned_bytes() > 0);
            drop(blocks);
        });
    }

    /// A batch takes a frame only when all of it is buffered: a header alone, or a header and
    /// part of its payload, would make the reader wait for the socket inside the batch.
    #[test]
    fn a_frame_is_ahead_only_when_whole() {
        let mut two = Vec::new();
        Packet::WriteAck { id: 7 }.encode(&mut two);
        let ack = two.len();
        Packet::Data {
            id: 1,
            offset: 4096,
            fua: false,
            data: vec![5; 4096].into(),
        }
        .encode(&mut two);
        assert!(!frame_ahead(&[]));
        for cut in 1..ack {
            assert!(!frame_ahead(&two[..cut]), "{cut} bytes of an ack");
        }
        assert!(frame_ahead(&two[..ack]));
        let data = &two[ack..];
        for cut in [
            1,
            HEADER_BYTES - 1,
            HEADER_BYTES,
            HEADER_BYTES + 100,
            data.len() - 1,
        ] {
            assert!(!frame_ahead(&data[..cut]), "{cut} bytes of a data frame");
        }
        assert!(frame_ahead(data));
        // A header that does not decode is "ahead": reading it fails at once, without a wait.
        let mut bad = two[..ack].to_vec();
        bad[0] ^= 0xff;
        assert!(frame_ahead(&bad));
    }
}
