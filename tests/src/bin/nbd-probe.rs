//! `nbd-probe ADDR:PORT EXPORT EXPECT_BYTE TIMEOUT_MS`: connect over TCP, negotiate EXPORT,
//! read the first 4 KiB and check every byte is EXPECT_BYTE; retry every 10 ms until that
//! works or TIMEOUT_MS pass. Prints `ok <unix time in µs> attempts=N` (or the last error) so a
//! failover test can time "serving again" on the wall clock it shares with the test.
//!
//! Run inside the client's network namespace (`ip netns exec NS nbd-probe …`): the addresses
//! it dials exist only there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rep_tests::nbdraw::{negotiate, CMD_READ, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC};

const BLOCK: usize = 4096;
const RETRY_EVERY: Duration = Duration::from_millis(10);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

fn read_block(addr: SocketAddr, export: &str, expect: u8) -> Result<(), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    negotiate(&mut s, export).map_err(|e| format!("handshake: {e}"))?;
    let mut r = Vec::with_capacity(28);
    r.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&CMD_READ.to_be_bytes());
    r.extend_from_slice(&1u64.to_be_bytes());
    r.extend_from_slice(&0u64.to_be_bytes());
    r.extend_from_slice(&(BLOCK as u32).to_be_bytes());
    s.write_all(&r).map_err(|e| format!("send read: {e}"))?;
    let mut h = [0u8; 16];
    s.read_exact(&mut h)
        .map_err(|e| format!("read reply: {e}"))?;
    let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let err = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if magic != SIMPLE_REPLY_MAGIC {
        return Err(format!("reply magic {magic:#x}"));
    }
    if err != 0 {
        return Err(format!("read failed with NBD error {err}"));
    }
    let mut data = vec![0u8; BLOCK];
    s.read_exact(&mut data)
        .map_err(|e| format!("read data: {e}"))?;
    if let Some(pos) = data.iter().position(|&b| b != expect) {
        return Err(format!(
            "byte {pos} is {:#x}, expected {expect:#x}",
            data[pos]
        ));
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let addr: SocketAddr = args.get(1)?.parse().ok()?;
        let export = args.get(2)?.clone();
        let expect: u8 = args.get(3)?.parse().ok()?;
        let timeout_ms: u64 = args.get(4)?.parse().ok()?;
        Some((addr, export, expect, timeout_ms))
    })();
    let Some((addr, export, expect, timeout_ms)) = parsed else {
        eprintln!("usage: nbd-probe ADDR:PORT EXPORT EXPECT_BYTE TIMEOUT_MS");
        std::process::exit(2);
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match read_block(addr, &export, expect) {
            Ok(()) => {
                let us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros());
                println!("ok {us} attempts={attempts}");
                return;
            }
            Err(e) if Instant::now() >= deadline => {
                println!("failed attempts={attempts} last error: {e}");
                std::process::exit(1);
            }
            Err(_) => std::thread::sleep(RETRY_EVERY),
        }
    }
}
