//! The traffic scenario of the dashboard queries: two netns "containers" (Docker-named cgroups) and the
//! host, processes with their own command names (symlinks to the interpreter) run as root, daemon and
//! nobody, and a remote endpoint (raw frames from an address no socket of this host uses).

use std::path::PathBuf;

use flowlens_tests::netns::mac_of;
use flowlens_tests::{agent, FakeContainer, Place, Proc, Uniq, VethNetns, NOBODY};

/// uid of `daemon` on Debian.
pub const DAEMON: u32 = 1;

// ---------------------------------------------------------------------------------------------------
// The traffic scenario

pub const SCRIPT: &str = r#"
import os, signal, socket, struct, sys
signal.alarm(60)
def say(*a): print(*a, flush=True)
mode = sys.argv[1]
if mode == 'tcp-server':
    addr, port, recv_n, send_n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(1); say('READY')
    c, _ = ls.accept(); got = 0
    while got < recv_n:
        b = c.recv(65536)
        if not b: sys.exit('EOF')
        got += len(b)
    c.sendall(b's' * send_n); c.shutdown(socket.SHUT_WR)
    while c.recv(65536): pass
    say('DONE')
elif mode == 'tcp-client':
    addr, port, send_n, recv_n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    s = socket.create_connection((addr, port)); s.sendall(b'c' * send_n); got = 0
    while True:
        b = s.recv(65536)
        if not b: break
        got += len(b)
    s.close()
    if got != recv_n: sys.exit('got %d' % got)
    say('DONE')
elif mode == 'udp-server':
    addr, port, count, reply = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, port)); say('READY')
    for _ in range(count):
        d, peer = s.recvfrom(65536)
        if reply: s.sendto(b's' * reply, peer)
    say('DONE')
elif mode == 'udp-client':
    addr, port, sizes = sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4].split(',')]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10); s.connect((addr, port))
    for n in sizes:
        s.send(b'c' * n); s.recv(65536)
    say('DONE')
elif mode == 'raw-udp':
    # IPv4/UDP frames written on an AF_PACKET socket: no UDP socket owns their source.
    ifname, dmac, smac, src, dst, sport, dport = sys.argv[2:9]
    sizes = [int(x) for x in sys.argv[9].split(',')]
    mac = lambda m: bytes(int(x, 16) for x in m.split(':'))
    def csum(b):
        s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
        while s >> 16: s = (s & 0xffff) + (s >> 16)
        return ~s & 0xffff
    k = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); k.bind((ifname, 0))
    for i, n in enumerate(sizes):
        udp = struct.pack('!HHHH', int(sport), int(dport), 8 + n, 0) + b'r' * n
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28 + n, 4242 + i, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
        k.send(mac(dmac) + mac(smac) + b'\x08\x00' + ip + udp)
    say('DONE')
"#;

/// Symlinks to the Python interpreter named like services, so each process has its own `comm`
/// (the kernel names a process after the path it was executed by). Removed on drop.
pub struct Commands(pub PathBuf);

impl Commands {
    pub fn new(u: &Uniq) -> Self {
        let dir = PathBuf::from(format!("/tmp/fl13-{u}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let python = agent::python();
        for name in [
            "websrv", "loadgen", "sink", "uploader", "dnsd", "resolver", "udpsink", "rawsend",
        ] {
            std::os::unix::fs::symlink(&python, dir.join(name)).expect("symlink");
        }
        Commands(dir)
    }

    pub fn spawn(&self, comm: &str, place: Place<'_>, uid: Option<u32>, args: &[&str]) -> Proc {
        let exe = self.0.join(comm).to_string_lossy().into_owned();
        let mut argv = vec![exe.as_str(), "-c", SCRIPT];
        argv.extend_from_slice(args);
        Proc::spawn(place, uid, &argv)
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// UDP datagrams of `payload` bytes over IPv4: L3 bytes.
pub fn udp_l3(payloads: &[usize]) -> i64 {
    payloads.iter().map(|p| (p + 28) as i64).sum()
}

pub const DNS_QUERIES: [usize; 3] = [100, 200, 300];
pub const DNS_REPLY: usize = 50;
pub const REMOTE_DATAGRAMS: [usize; 2] = [1000, 1200];

/// Names and addresses of the scenario.
pub struct World {
    pub host: String,
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
    /// Address of the host process `loadgen` as its peer `websrv` sees it.
    pub a_gw: String,
    pub remote: String,
    /// The collector's loss counters at its exit, by reason (from its last "Data was lost" log line).
    /// Other flowlens instances' load on this machine can make the kernel's ring buffer or the event
    /// queue overflow: the dashboard must then show exactly what the collector counted.
    pub losses: std::collections::BTreeMap<Vec<String>, i64>,
}

pub fn run_traffic(
    cmds: &Commands,
    na: &VethNetns,
    ca: &FakeContainer,
    nb: &VethNetns,
    cb: &FakeContainer,
) {
    let (a_peer, b_peer) = (na.peer_v4.to_string(), nb.peer_v4.to_string());
    let (a_host, b_host) = (na.host_v4.to_string(), nb.host_v4.to_string());
    // T1: host loadgen (nobody) -> container A websrv (daemon), the heaviest conversation.
    let mut web = cmds.spawn(
        "websrv",
        Place::In(ca),
        Some(DAEMON),
        &["tcp-server", &a_peer, "8080", "20000", "200000"],
    );
    web.expect_line("READY");
    let mut load = cmds.spawn(
        "loadgen",
        Place::Host,
        Some(NOBODY),
        &["tcp-client", &a_peer, "8080", "20000", "200000"],
    );
    load.expect_line("DONE");
    web.expect_line("DONE");
    // T2: container B uploader (daemon) -> host sink (root).
    let mut sink = cmds.spawn(
        "sink",
        Place::Host,
        None,
        &["tcp-server", &b_host, "9090", "30000", "100"],
    );
    sink.expect_line("READY");
    let mut up = cmds.spawn(
        "uploader",
        Place::In(cb),
        Some(DAEMON),
        &["tcp-client", &b_host, "9090", "30000", "100"],
    );
    up.expect_line("DONE");
    sink.expect_line("DONE");
    // U1: host resolver (root) -> container B dnsd (nobody), UDP.
    let mut dns = cmds.spawn(
        "dnsd",
        Place::In(cb),
        Some(NOBODY),
        &["udp-server", &b_peer, "5353", "3", &DNS_REPLY.to_string()],
    );
    dns.expect_line("READY");
    let sizes = DNS_QUERIES.map(|s| s.to_string()).join(",");
    let mut res = cmds.spawn(
        "resolver",
        Place::Host,
        None,
        &["udp-client", &b_peer, "5353", &sizes],
    );
    res.expect_line("DONE");
    dns.expect_line("DONE");
    // R1: a remote endpoint (an address of A's subnet no socket uses) -> host udpsink (nobody).
    let mut us = cmds.spawn(
        "udpsink",
        Place::Host,
        Some(NOBODY),
        &["udp-server", &a_host, "7070", "2", "0"],
    );
    us.expect_line("READY");
    let (dmac, smac) = (mac_of(None, &na.host_if), mac_of(Some(&na.ns), &na.peer_if));
    let remote = remote_addr(na);
    let sizes = REMOTE_DATAGRAMS.map(|s| s.to_string()).join(",");
    let mut raw = cmds.spawn(
        "rawsend",
        Place::In(ca),
        None,
        &[
            "raw-udp",
            &na.peer_if,
            &dmac,
            &smac,
            &remote,
            &a_host,
            "40000",
            "7070",
            &sizes,
        ],
    );
    raw.expect_line("DONE");
    us.expect_line("DONE");
    for p in [
        &mut web, &mut load, &mut sink, &mut up, &mut dns, &mut res, &mut us, &mut raw,
    ] {
        p.wait_success();
    }
}

pub fn remote_addr(na: &VethNetns) -> String {
    let o = na.peer_v4.octets();
    format!("{}.{}.{}.77", o[0], o[1], o[2])
}
