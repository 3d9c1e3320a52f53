//! Live-traffic helper: short TCP connections from many processes.
//!
//! `conn-churn server --bind=IP:PORT --secs=S`: accepts, answers one byte, closes.
//! `conn-churn client --dst=IP:PORT --secs=S --procs=P`: P worker processes each
//! connect, send one byte, read the answer and close, in a loop; prints the
//! connections completed, failed, and their distinct 5-tuples (client ports).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use flowlens_bench::{arg_u64, arg_value};

fn server() -> anyhow::Result<()> {
    let bind: SocketAddr = arg_value("bind").context("--bind")?.parse()?;
    let secs = arg_u64("secs", 10);
    let l = TcpListener::bind(bind)?;
    l.set_nonblocking(true)?;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut served = 0u64;
    while Instant::now() < end {
        match l.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)?;
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
                    served += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => {}
        }
    }
    println!("{served}");
    Ok(())
}

fn worker() -> anyhow::Result<()> {
    let dst: SocketAddr = arg_value("dst").context("--dst")?.parse()?;
    let end = Instant::now() + Duration::from_secs(arg_u64("secs", 5));
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut ports = Vec::new();
    while Instant::now() < end {
        let r = (|| -> std::io::Result<u16> {
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(1))?;
            s.write_all(b"x")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            Ok(s.local_addr()?.port())
        })();
        match r {
            Ok(port) => {
                ok += 1;
                ports.push(port);
            }
            Err(_) => failed += 1,
        }
    }
    println!("{ok} {failed}");
    for p in ports {
        println!("{p}");
    }
    Ok(())
}

fn client() -> anyhow::Result<()> {
    let procs = arg_u64("procs", 8);
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..procs)
        .map(|_| {
            Command::new(&exe)
                .arg("worker")
                .args(std::env::args().skip(2))
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let (mut ok, mut failed) = (0u64, 0u64);
    // A client port reused while the server still holds the old connection in
    // TIME_WAIT gives the same 5-tuple, i.e. the same conversation.
    let mut tuples = std::collections::HashSet::new();
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let v: Vec<u64> = lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        ok += v.first().copied().unwrap_or(0);
        failed += v.get(1).copied().unwrap_or(0);
        tuples.extend(lines.filter_map(|l| l.parse::<u16>().ok()));
    }
    println!("{ok} {failed} {}", tuples.len());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("server") => server(),
        Some("client") => client(),
        Some("worker") => worker(),
        _ => anyhow::bail!("usage: conn-churn server|client ..."),
    }
}
