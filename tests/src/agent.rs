//! A small Python traffic agent with exactly known payload sizes, so the tests
//! know what every conversation carried and which process carried it.

use std::net::IpAddr;
use std::time::Duration;

use super::spawn::{expected_identity, Place, Proc, ProcIdentity};

/// The interpreter by its real path: not `python3` from PATH (may be a pyenv
/// shim under /root that uid 65534 cannot run), and not the `python3` symlink,
/// so the path given to execve() is also what `/proc/<pid>/exe` says.
pub fn python() -> String {
    let real = std::fs::canonicalize("/usr/bin/python3")
        .expect("/usr/bin/python3 (apt-get install python3)");
    real.to_string_lossy().into_owned()
}

/// The agent's `comm`: the interpreter's file name.
pub fn python_comm() -> String {
    let path = python();
    let name = path.rsplit('/').next().unwrap_or_default();
    name.chars().take(15).collect()
}

/// The identity an agent started at `place` as `uid` has (see
/// [`expected_identity`]), for agents that may exit before /proc is read.
pub fn expected(place: Place<'_>, uid: Option<u32>, pid: u32) -> ProcIdentity {
    expected_identity(place, uid, pid, &python_comm(), &python())
}

const AGENT: &str = r#"
import os, signal, socket, sys, time
signal.alarm(60)
def say(*a): print(*a, flush=True)
def family(addr): return socket.AF_INET6 if ':' in addr else socket.AF_INET
def recv_exact(s, n):
    got = 0
    while got < n:
        b = s.recv(min(65536, n - got))
        if not b: sys.exit('EOF after %d of %d bytes' % (got, n))
        got += len(b)
def drain(s):
    while s.recv(65536): pass
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == 'tcp-server':
    recv_n, send_n, hold = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:] == ['hold']
    ls = socket.socket(family(addr), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(1)
    say('READY', os.getpid())
    c, peer = ls.accept()
    say('ACCEPTED', peer[0], peer[1])
    recv_exact(c, recv_n)
    c.sendall(b's' * send_n)
    if hold:
        say('SENT')
        sys.stdin.readline()
    c.shutdown(socket.SHUT_WR)
    drain(c)
    c.close(); ls.close()
    say('DONE')
elif mode == 'tcp-client':
    send_n, recv_n, pause_after = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    hold = sys.argv[7:] == ['hold']
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.connect((addr, port))
    say('CONNECTED', os.getpid(), s.getsockname()[1])
    if pause_after > 0:
        s.sendall(b'c' * pause_after)
        say('PAUSED')
        sys.stdin.readline()
    s.sendall(b'c' * (send_n - max(pause_after, 0)))
    recv_exact(s, recv_n)
    if hold:
        say('RECEIVED')
        sys.stdin.readline()
    drain(s)
    s.close()
    say('DONE')
elif mode == 'udp-server':
    count, reply_n = int(sys.argv[4]), int(sys.argv[5])
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    say('READY', os.getpid())
    for _ in range(count):
        data, peer = s.recvfrom(65536)
        s.sendto(b's' * reply_n, peer)
    say('DONE')
elif mode == 'udp-client':
    connected = sys.argv[4] == 'connected'
    sizes = [int(x) for x in sys.argv[5].split(',')]
    gap = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(10)
    if connected: s.connect((addr, port))
    for i, n in enumerate(sizes):
        if i > 0 and gap > 0: time.sleep(gap)
        if connected:
            s.send(b'c' * n); s.recv(65536)
        else:
            s.sendto(b'c' * n, (addr, port)); s.recvfrom(65536)
    say('DONE', os.getpid(), s.getsockname()[1])
else:
    sys.exit('unknown mode ' + mode)
"#;

/// Starts the agent with `args` at `place` as `uid`.
pub fn spawn(place: Place<'_>, uid: Option<u32>, args: &[&str]) -> Proc {
    let python = python();
    let mut cmd = vec![python.as_str(), "-c", AGENT];
    cmd.extend_from_slice(args);
    Proc::spawn(place, uid, &cmd)
}

/// A TCP server that accepts one connection, reads exactly `recv_n` bytes,
/// answers `send_n` bytes, half-closes and waits for the client's close.
/// Returns once it listens.
pub fn tcp_server(
    place: Place<'_>,
    uid: Option<u32>,
    addr: IpAddr,
    port: u16,
    recv_n: usize,
    send_n: usize,
) -> Proc {
    tcp_server_opts(place, uid, addr, port, recv_n, send_n, false)
}

/// [`tcp_server`]; with `hold` it prints `SENT` after answering and waits
/// for a line on stdin before it half-closes (keeps the peer alive).
pub fn tcp_server_opts(
    place: Place<'_>,
    uid: Option<u32>,
    addr: IpAddr,
    port: u16,
    recv_n: usize,
    send_n: usize,
    hold: bool,
) -> Proc {
    let (a, p, r, s) = (
        addr.to_string(),
        port.to_string(),
        recv_n.to_string(),
        send_n.to_string(),
    );
    let mut args = vec!["tcp-server", &a, &p, &r, &s];
    if hold {
        args.push("hold");
    }
    let mut proc = spawn(place, uid, &args);
    proc.expect_line("READY");
    proc
}

/// A TCP client that connects, sends `send_n` bytes, reads `recv_n` bytes and
/// the server's FIN, then closes. With `pause_after > 0` it first sends that
/// many bytes and waits for a line on stdin (see [`Proc::send_line`]) before
/// the rest. With `hold` it prints `RECEIVED` after reading `recv_n` bytes
/// and waits for a line on stdin before it closes. Returns the process and
/// its local port once connected.
#[allow(clippy::too_many_arguments)]
pub fn tcp_client(
    place: Place<'_>,
    uid: Option<u32>,
    addr: IpAddr,
    port: u16,
    send_n: usize,
    recv_n: usize,
    pause_after: usize,
    hold: bool,
) -> (Proc, u16) {
    let (a, p) = (addr.to_string(), port.to_string());
    let (s, r, x) = (
        send_n.to_string(),
        recv_n.to_string(),
        pause_after.to_string(),
    );
    let mut args = vec!["tcp-client", &a, &p, &s, &r, &x];
    if hold {
        args.push("hold");
    }
    let mut proc = spawn(place, uid, &args);
    let words = proc.expect_line("CONNECTED");
    let lport = words
        .get(1)
        .and_then(|w| w.parse().ok())
        .expect("CONNECTED <pid> <port>");
    if pause_after > 0 {
        proc.expect_line("PAUSED");
    }
    (proc, lport)
}

/// A UDP server answering each of `count` datagrams with `reply_n` bytes
/// (recvfrom/sendto). Returns once bound.
pub fn udp_server(
    place: Place<'_>,
    uid: Option<u32>,
    addr: IpAddr,
    port: u16,
    count: usize,
    reply_n: usize,
) -> Proc {
    let (a, p, c, r) = (
        addr.to_string(),
        port.to_string(),
        count.to_string(),
        reply_n.to_string(),
    );
    let mut proc = spawn(place, uid, &["udp-server", &a, &p, &c, &r]);
    proc.expect_line("READY");
    proc
}

/// A UDP client sending one datagram per entry of `sizes`, each followed by
/// reading the reply; `connected` chooses connect()+send() over sendto().
/// Runs to completion; returns the process (exited) and its local port.
pub fn udp_client(
    place: Place<'_>,
    uid: Option<u32>,
    addr: IpAddr,
    port: u16,
    connected: bool,
    sizes: &[usize],
) -> (Proc, u16) {
    udp_client_paced(place, uid, addr, port, connected, sizes, Duration::ZERO)
}

/// [`udp_client`] waiting `gap` between one reply and the next datagram
/// (keeps the process alive for `(sizes.len() - 1) * gap`).
pub fn udp_client_paced(
    place: Place<'_>,
    uid: Option<u32>,
    addr: IpAddr,
    port: u16,
    connected: bool,
    sizes: &[usize],
    gap: Duration,
) -> (Proc, u16) {
    let (a, p) = (addr.to_string(), port.to_string());
    let sizes = sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mode = if connected {
        "connected"
    } else {
        "unconnected"
    };
    let gap = gap.as_secs_f64().to_string();
    let mut args = vec!["udp-client", &a, &p, mode, &sizes];
    if gap != "0" {
        args.push(&gap);
    }
    let mut proc = spawn(place, uid, &args);
    let words = proc.expect_line("DONE");
    let lport = words
        .get(1)
        .and_then(|w| w.parse().ok())
        .expect("DONE <pid> <port>");
    proc.wait_success();
    (proc, lport)
}
