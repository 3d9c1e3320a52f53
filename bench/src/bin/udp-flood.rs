//! Live-traffic helper: a UDP flood of small datagrams and its sink.
//!
//! `udp-flood send --dst=IP:PORT --secs=S [--flows=N] [--frame=64]`: sends from N
//! sockets (N flows) round-robin for S seconds, prints the datagrams sent.
//! `udp-flood recv --bind=IP:PORT --secs=S`: counts datagrams for S seconds
//! after the first one arrives (or S + 5 s in all), prints the count.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use flowlens_bench::{arg_u64, arg_value};

fn send() -> anyhow::Result<()> {
    let dst: SocketAddr = arg_value("dst").context("--dst")?.parse()?;
    let secs = arg_u64("secs", 5);
    let flows = arg_u64("flows", 4).max(1);
    // Ethernet 14 + IPv4 20 + UDP 8 + payload = frame length (no FCS).
    let payload = usize::try_from(arg_u64("frame", 64))?
        .saturating_sub(42)
        .max(1);
    let socks: Vec<UdpSocket> = (0..flows)
        .map(|_| {
            let s = UdpSocket::bind(if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            s.connect(dst)?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    let buf = vec![0x5a_u8; payload];
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u64;
    'outer: loop {
        for s in &socks {
            for _ in 0..64 {
                if s.send(&buf).is_ok() {
                    sent += 1;
                }
            }
        }
        if Instant::now() >= end {
            break 'outer;
        }
    }
    println!("{sent}");
    Ok(())
}

fn recv() -> anyhow::Result<()> {
    let bind: SocketAddr = arg_value("bind").context("--bind")?.parse()?;
    let secs = arg_u64("secs", 5);
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let hard_end = Instant::now() + Duration::from_secs(secs + 5);
    let mut end: Option<Instant> = None;
    let mut buf = [0u8; 2048];
    let mut n = 0u64;
    loop {
        let now = Instant::now();
        if now >= hard_end || end.is_some_and(|e| now >= e) {
            break;
        }
        if sock.recv(&mut buf).is_ok() {
            n += 1;
            end.get_or_insert_with(|| Instant::now() + Duration::from_secs(secs));
        }
    }
    println!("{n}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("send") => send(),
        Some("recv") => recv(),
        _ => anyhow::bail!("usage: udp-flood send|recv ..."),
    }
}
