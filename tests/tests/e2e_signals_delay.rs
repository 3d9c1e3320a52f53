//! Golden signals behind a delay, without netem: a client namespace —veth—
//! root namespace (flowlens on the host veth) —a userspace TUN relay
//! ([`flowlens_tests::relay`]) holding every packet 20 ms each way— a server
//! namespace. The server is two hops from the client; `ping` over the same
//! path is the reference round-trip time.
//! - RTT and connect latency of a ping-pong conversation within 20 % of
//!   ping's average; min and max sane.
//! - Relay loss (3 % of the long packets toward the client) on a bulk
//!   transfer: retransmits equal `TcpRetransSegs` of each end's namespace.
//! - A SYN answered with ICMP host-unreachable (the server namespace's
//!   firewall rejects it): `connect_error` = `unreachable`, for the client pid.
//! - DNS latency against a real dnsmasq behind the relay, for the querying
//!   process; SERVFAIL from a DNS server of the test's own, counted for the
//!   process that got it and not for another one; DNS over TCP (two queries
//!   on one connection to dnsmasq): counted, and the resolved name on the
//!   conversation that followed.
//!
//! `connect_error` = `reset` is not tested: Linux gives a connecting socket
//! no ECONNRESET (see docs/schema.md).
//! Run as root: `cargo build --release -p flowlens-collector && FLOWLENS_BIN=$PWD/target/release/flowlens cargo test -p flowlens-tests --test e2e_signals_delay -- --test-threads=1`

use std::net::IpAddr;
use std::time::Duration;

use flowlens_tests::agent::python;
use flowlens_tests::relay::{Loss, RelayConfig, RelayedPath};
use flowlens_tests::signals::{
    dump, records_of, retrans_segs, sum, u64s, values, weighted_mean, Rule,
};
use flowlens_tests::{scenario, sleep_ms, ArtifactDir, Flowlens, Place, Proc};

/// Each way: a 40 ms round trip.
const ONE_WAY: Duration = Duration::from_millis(20);

const DELAY_AGENT: &str = r#"
import os, signal, socket, struct, sys
signal.alarm(60)
def say(*a): print(*a, flush=True)
mode = sys.argv[1]
def client():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('0.0.0.0', 0))
    say('PORT', s.getsockname()[1])
    return s
def listener(addr, port):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(1)
    say('READY')
    return ls
def recv_exact(s, n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: sys.exit('EOF after %d of %d bytes' % (len(b), n))
        b += c
    return b
def query(i, name):
    q = struct.pack('>HHHHHH', 0x2000 + i, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\0'
    return q + struct.pack('>HH', 1, 1)
def answer(r):
    return r[3] & 0x0f, struct.unpack('>H', r[6:8])[0]
if mode == 'srv-echo':
    c, _ = listener(sys.argv[2], int(sys.argv[3])).accept()
    while True:
        b = c.recv(100)
        if not b: break
        c.sendall(b)
    c.close()
    say('DONE')
elif mode == 'pingpong':
    s = client()
    s.connect((sys.argv[2], int(sys.argv[3])))
    for i in range(int(sys.argv[4])):
        s.sendall(b'p' * 32)
        recv_exact(s, 32)
    s.close()
    say('DONE')
elif mode == 'srv-bulk':
    c, _ = listener(sys.argv[2], int(sys.argv[3])).accept()
    c.sendall(b's' * int(sys.argv[4]))
    c.close()
    say('DONE')
elif mode == 'bulk':
    s = client()
    s.connect((sys.argv[2], int(sys.argv[3])))
    n = 0
    while True:
        b = s.recv(65536)
        if not b: break
        n += len(b)
    s.close()
    say('GOT', n)
elif mode == 'unreachable':
    s = client()
    try:
        s.connect((sys.argv[2], int(sys.argv[3])))
        sys.exit('connected through a reject rule')
    except OSError as e:
        say('ERRNO', e.errno)
elif mode == 'dns-udp':
    server, names = sys.argv[2], sys.argv[3].split(',')
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(('0.0.0.0', 0))
    say('PORT', u.getsockname()[1])
    u.settimeout(5)
    for i, name in enumerate(names):
        u.sendto(query(i, name), (server, 53))
        r, _ = u.recvfrom(4096)
        say('RCODE', name, *answer(r))
elif mode == 'dns-tcp':
    server, names, port = sys.argv[2], sys.argv[3].split(','), int(sys.argv[4])
    s = client()
    s.settimeout(5)
    s.connect((server, 53))
    addr = None
    for i, name in enumerate(names):
        q = query(i, name)
        s.sendall(struct.pack('>H', len(q)) + q)
        n = struct.unpack('>H', recv_exact(s, 2))[0]
        r = recv_exact(s, n)
        say('RCODE', name, *answer(r))
        if addr is None and answer(r) == (0, 1):
            addr = socket.inet_ntoa(r[-4:])
    s.close()
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.connect((addr, port))
    say('CONNECTED', addr, t.getsockname()[1])
    while t.recv(65536): pass
    t.close()
elif mode == 'servfail-server':
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((sys.argv[2], 53))
    say('READY')
    while True:
        q, peer = u.recvfrom(4096)
        # the query echoed with QR, RD, RA and rcode 2; no answers
        u.sendto(q[:2] + b'\x81\x82' + q[4:], peer)
"#;

fn agent(place: Place<'_>, args: &[&str]) -> Proc {
    let py = python();
    let mut cmd = vec![py.as_str(), "-c", DELAY_AGENT];
    cmd.extend_from_slice(args);
    Proc::spawn(place, None, &cmd)
}

fn port_of(p: &mut Proc) -> u16 {
    p.expect_line("PORT")[0].parse().expect("port")
}

fn start_flowlens(path: &RelayedPath, art: &ArtifactDir) -> Flowlens {
    let fl = Flowlens::start(art.path(), &[&path.a.host_if], &[]);
    assert!(
        fl.log().contains("Golden-signal hooks loaded.")
            && !fl.log().contains("Signal hook unavailable"),
        "the signal programs did not all load:\n{}",
        fl.log()
    );
    fl
}

/// `v` within `pct` % of `reference`.
fn within(v: u64, reference: u64, pct: u64) -> bool {
    v * 100 >= reference * (100 - pct) && v * 100 <= reference * (100 + pct)
}

#[test]
fn ebpf_rtt_connect_latency_loss_and_unreachable_behind_a_relay() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let path = RelayedPath::new(
            u,
            RelayConfig {
                one_way: ONE_WAY,
                loss_to_far: Loss::NONE,
                // data segments toward the client; handshakes, ACKs and pings pass
                loss_to_near: Loss {
                    share: 0.03,
                    min_len: 1000,
                },
            },
            0,
        );
        let server = path.servers[0];
        let server_s = server.to_string();
        let srv = Place::In(&path.ctr_b);
        let cli = Place::In(&path.ctr_a);
        let (ping_min, ping_avg, ping_max) = path.ping(server, 10);
        eprintln!("ping over the relay: min/avg/max {ping_min}/{ping_avg}/{ping_max} us");
        assert!(
            ping_min >= 2 * ONE_WAY.as_micros() as u64,
            "HARNESS: the relay did not delay"
        );
        // The far side's firewall answers SYNs to port 5402 with ICMP host-unreachable.
        let _reject = Rule::add(
            Some(&path.b.name),
            &[
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                "5402",
                "-j",
                "REJECT",
                "--reject-with",
                "icmp-host-unreachable",
            ],
        );
        let fl = start_flowlens(&path, &art);

        // Ten small round trips: every segment is answered at once.
        let mut echo = agent(srv, &["srv-echo", &server_s, "5401"]);
        echo.expect_line("READY");
        let mut pp = agent(cli, &["pingpong", &server_s, "5401", "10"]);
        let pp_port = port_of(&mut pp);
        pp.expect_line("DONE");
        pp.wait_success();
        echo.wait_success();

        // A SYN the far side rejects.
        let mut unr = agent(cli, &["unreachable", &server_s, "5402"]);
        let unr_port = port_of(&mut unr);
        assert_eq!(
            unr.expect_line("ERRNO"),
            vec![libc::EHOSTUNREACH.to_string()]
        );
        unr.wait_success();

        // A bulk transfer to the client through 3 % loss.
        let mut bulk_srv = agent(srv, &["srv-bulk", &server_s, "5403", "600000"]);
        bulk_srv.expect_line("READY");
        let (before_b, before_a) = (retrans_segs(&path.b.name), retrans_segs(&path.a.ns));
        let mut bulk = agent(cli, &["bulk", &server_s, "5403"]);
        let bulk_port = port_of(&mut bulk);
        assert_eq!(bulk.expect_line("GOT"), vec!["600000".to_owned()]);
        bulk.wait_success();
        bulk_srv.wait_success();
        sleep_ms(500);
        let server_retrans = retrans_segs(&path.b.name) - before_b;
        let client_retrans = retrans_segs(&path.a.ns) - before_a;
        let dropped = path.relay.stats.dropped(true);
        eprintln!(
            "relay dropped {dropped} segments; TcpRetransSegs server {server_retrans}, client {client_retrans}"
        );
        assert!(dropped > 0, "HARNESS: the relay dropped nothing");
        assert!(server_retrans > 0, "HARNESS: no retransmits");

        sleep_ms(1_500);
        let recs = fl.stop();
        let srv_at = |port| (IpAddr::V4(server), port);

        let r = records_of(&recs, "tcp", pp_port, srv_at(5401));
        assert!(!r.is_empty(), "no record of the ping-pong conversation");
        assert!(
            r.iter().all(|x| x["client"]["pid"] == pp.pid),
            "the client pid {}\n{}",
            pp.pid,
            dump(&r)
        );
        let avg = weighted_mean(&r, "rtt_avg_us", "rtt_samples").expect("RTT samples");
        let (min, max) = (
            u64s(&r, "rtt_min_us").into_iter().min().unwrap_or(0),
            u64s(&r, "rtt_max_us").into_iter().max().unwrap_or(0),
        );
        eprintln!(
            "flowlens RTT min/avg/max {min}/{avg}/{max} us over {} samples",
            sum(&r, "rtt_samples")
        );
        assert!(
            within(avg, ping_avg, 20),
            "rtt_avg_us {avg} vs ping {ping_avg}\n{}",
            dump(&r)
        );
        // srtt is smoothed: never below what the relay adds, never far above ping's worst.
        assert!(
            min >= 2 * ONE_WAY.as_micros() as u64 && min <= avg && avg <= max,
            "rtt min/avg/max {min}/{avg}/{max}\n{}",
            dump(&r)
        );
        assert!(
            max <= ping_max.max(ping_avg) * 3 / 2,
            "rtt_max_us {max} vs ping max {ping_max}\n{}",
            dump(&r)
        );
        let connect = u64s(&r, "connect_us");
        assert_eq!(connect.len(), 1, "{}", dump(&r));
        eprintln!("flowlens connect_us {} vs ping avg {ping_avg}", connect[0]);
        assert!(
            within(connect[0], ping_avg, 20),
            "connect_us {} vs ping {ping_avg}\n{}",
            connect[0],
            dump(&r)
        );
        assert!(values(&r, "connect_error").is_empty(), "{}", dump(&r));

        let r = records_of(&recs, "tcp", unr_port, srv_at(5402));
        assert!(!r.is_empty(), "no record of the unreachable connect");
        assert_eq!(
            values(&r, "connect_error"),
            vec!["unreachable"],
            "{}",
            dump(&r)
        );
        assert!(values(&r, "connect_us").is_empty(), "{}", dump(&r));
        assert_eq!(
            sum(&r, "resets_c2s") + sum(&r, "resets_s2c"),
            0,
            "{}",
            dump(&r)
        );
        assert!(
            r.iter().all(|x| x["client"]["pid"] == unr.pid),
            "the failed connect belongs to the client pid {}\n{}",
            unr.pid,
            dump(&r)
        );

        let r = records_of(&recs, "tcp", bulk_port, srv_at(5403));
        assert!(!r.is_empty(), "no record of the lossy transfer");
        assert_eq!(
            sum(&r, "retransmits_s2c"),
            server_retrans,
            "vs TcpRetransSegs of the server's namespace\n{}",
            dump(&r)
        );
        assert_eq!(
            sum(&r, "retransmits_c2s"),
            client_retrans,
            "vs TcpRetransSegs of the client's namespace\n{}",
            dump(&r)
        );
    });
}

#[test]
fn ebpf_dns_latency_servfail_and_tcp_behind_a_relay() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let path = RelayedPath::new(
            u,
            RelayConfig {
                one_way: ONE_WAY,
                loss_to_far: Loss::NONE,
                loss_to_near: Loss::NONE,
            },
            2,
        );
        // .2: dnsmasq; .3: where tcp.fltest points; .4: a DNS server that only says SERVFAIL
        let (dns, target, broken) = (path.servers[0], path.servers[1], path.servers[2]);
        let (dns_s, target_s, broken_s) = (dns.to_string(), target.to_string(), broken.to_string());
        let srv = Place::In(&path.ctr_b);
        let cli = Place::In(&path.ctr_a);
        let (_, ping_avg, _) = path.ping(dns, 10);
        eprintln!("ping over the relay: avg {ping_avg} us");
        let pidfile = art.path().join("dnsmasq.pid");
        let _dnsmasq = Proc::spawn(
            srv,
            None,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                &format!("--listen-address={dns_s}"),
                "--local=/fltest/",
                &format!("--address=/web.fltest/{dns_s}"),
                &format!("--address=/tcp.fltest/{target_s}"),
                &format!("--pid-file={}", pidfile.display()),
            ],
        );
        let mut broken_srv = agent(srv, &["servfail-server", &broken_s]);
        broken_srv.expect_line("READY");
        sleep_ms(500);
        let fl = start_flowlens(&path, &art);

        // Five answered queries over UDP: the latency the asking process waited.
        let mut q = agent(
            cli,
            &[
                "dns-udp",
                &dns_s,
                "web.fltest,web.fltest,web.fltest,web.fltest,nope.fltest",
            ],
        );
        let q_port = port_of(&mut q);
        for _ in 0..4 {
            assert_eq!(q.expect_line("RCODE"), vec!["web.fltest", "0", "1"]);
        }
        assert_eq!(q.expect_line("RCODE"), vec!["nope.fltest", "3", "0"]);
        q.wait_success();

        // Another process asks the broken server.
        let mut sf = agent(cli, &["dns-udp", &broken_s, "web.fltest"]);
        let sf_port = port_of(&mut sf);
        assert_eq!(sf.expect_line("RCODE"), vec!["web.fltest", "2", "0"]);
        sf.wait_success();

        // Two queries on one TCP connection to dnsmasq, then a connection to the answer.
        let mut target_srv = agent(srv, &["srv-bulk", &target_s, "5404", "3000"]);
        target_srv.expect_line("READY");
        let mut t = agent(cli, &["dns-tcp", &dns_s, "tcp.fltest,nope.fltest", "5404"]);
        let t_port = port_of(&mut t);
        assert_eq!(t.expect_line("RCODE"), vec!["tcp.fltest", "0", "1"]);
        assert_eq!(t.expect_line("RCODE"), vec!["nope.fltest", "3", "0"]);
        let connected = t.expect_line("CONNECTED");
        assert_eq!(connected[0], target_s);
        let conn_port: u16 = connected[1].parse().expect("port");
        t.wait_success();
        target_srv.wait_success();

        sleep_ms(1_500);
        let recs = fl.stop();

        let r = records_of(&recs, "udp", q_port, (IpAddr::V4(dns), 53));
        assert!(!r.is_empty(), "no record of the UDP queries");
        assert!(
            r.iter().all(|x| x["client"]["pid"] == q.pid),
            "the queries belong to the client pid {}\n{}",
            q.pid,
            dump(&r)
        );
        assert_eq!(sum(&r, "dns_queries"), 5, "{}", dump(&r));
        assert_eq!(sum(&r, "dns_responses"), 5, "{}", dump(&r));
        assert_eq!(sum(&r, "dns_nxdomain"), 1, "{}", dump(&r));
        assert_eq!(sum(&r, "dns_servfail"), 0, "{}", dump(&r));
        let avg = weighted_mean(&r, "dns_latency_avg_us", "dns_responses").expect("DNS latency");
        let max = u64s(&r, "dns_latency_max_us")
            .into_iter()
            .max()
            .unwrap_or(0);
        eprintln!("flowlens DNS latency avg {avg} max {max} us; ping avg {ping_avg} us");
        // The relay holds query and answer 20 ms each: never less than 40 ms.
        assert!(
            avg >= 2 * ONE_WAY.as_micros() as u64 && within(avg, ping_avg, 20),
            "dns_latency_avg_us {avg} vs ping {ping_avg}\n{}",
            dump(&r)
        );
        assert!(
            max >= avg && max <= ping_avg * 2,
            "dns_latency_max_us {max}\n{}",
            dump(&r)
        );

        let r = records_of(&recs, "udp", sf_port, (IpAddr::V4(broken), 53));
        assert!(!r.is_empty(), "no record of the SERVFAIL query");
        assert!(
            r.iter().all(|x| x["client"]["pid"] == sf.pid),
            "the SERVFAIL belongs to the client pid {}\n{}",
            sf.pid,
            dump(&r)
        );
        assert_eq!(sum(&r, "dns_queries"), 1, "{}", dump(&r));
        assert_eq!(sum(&r, "dns_servfail"), 1, "{}", dump(&r));
        assert_eq!(sum(&r, "dns_nxdomain"), 0, "{}", dump(&r));

        let r = records_of(&recs, "tcp", t_port, (IpAddr::V4(dns), 53));
        assert!(!r.is_empty(), "no record of the DNS-over-TCP connection");
        assert!(
            r.iter().all(|x| x["client"]["pid"] == t.pid),
            "the TCP queries belong to the client pid {}\n{}",
            t.pid,
            dump(&r)
        );
        assert_eq!(sum(&r, "dns_queries"), 2, "{}", dump(&r));
        assert_eq!(sum(&r, "dns_responses"), 2, "{}", dump(&r));
        assert_eq!(sum(&r, "dns_nxdomain"), 1, "{}", dump(&r));
        let tcp_avg = weighted_mean(&r, "dns_latency_avg_us", "dns_responses").unwrap_or(0);
        assert!(
            within(tcp_avg, ping_avg, 20),
            "TCP DNS latency {tcp_avg}\n{}",
            dump(&r)
        );

        let r = records_of(&recs, "tcp", conn_port, (IpAddr::V4(target), 5404));
        assert!(
            !r.is_empty(),
            "no record of the connection to the name resolved over TCP"
        );
        assert!(
            r.iter().all(|x| x["server"]["name"] == "tcp.fltest"),
            "the server end carries the name resolved over TCP\n{}",
            dump(&r)
        );
    });
}
