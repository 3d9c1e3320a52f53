//! Issue 15 §2, §3, §6 with real traffic: a conversation whose route moves
//! between interfaces and back, a reused tuple (TCP and UDP) with another
//! owner, a full conversation table. tcpdump on the host-side veths is the
//! reference. `cargo build -p flowlens-collector && cargo test -p
//! flowlens-tests --test e2e_hard_hosts -- --test-threads=1`

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use flowlens_tests::checks::{check_conversation, ExpectedConversation};
use flowlens_tests::names::free_subnet;
use flowlens_tests::netns::{disable_offloads_in, ifindex};
use flowlens_tests::pcap::Capture;
use flowlens_tests::spawn::expected_identity;
use flowlens_tests::{
    agent, cmd, ipproto, scenario, sleep_ms, ArtifactDir, ExpectedEndpoint, FakeContainer,
    Flowlens, Place, Proc, Tcpdump, Uniq, VethNetns, NOBODY,
};
use serde_json::Value;

/// `send HOST PORT SRC SPORT`: a UDP socket bound to SRC:SPORT; each stdin
/// line `N SIZE` sends N datagrams of SIZE bytes (paced) and prints `SENT`.
/// `tcp HOST PORT SRC SPORT SEND`: connects from SRC:SPORT (SO_REUSEADDR),
/// sends SEND bytes, reads to EOF, closes, prints `DONE`. `udp1 ...` the same
/// over UDP: SEND bytes in one datagram per stdin line, each answered.
/// `sink ADDR PORT`: a UDP receiver; `tcpserve ADDR PORT N REPLY`: accepts N
/// connections, reads to the client's data, answers REPLY bytes, closes first.
const TOOLS: &str = r#"
import os, socket, sys, time, signal
signal.alarm(60)
mode = sys.argv[1]
def say(*a): print(*a, flush=True)
if mode == 'send':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[4], int(sys.argv[5])))
    say('READY', os.getpid())
    for line in sys.stdin:
        n, size = map(int, line.split())
        for i in range(n):
            s.sendto(b'x' * size, (sys.argv[2], int(sys.argv[3])))
            if i % 50 == 49: time.sleep(0.002)
        say('SENT')
elif mode == 'sink':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[2], int(sys.argv[3])))
    say('READY', os.getpid())
    while True: s.recv(65536)
elif mode == 'tcpserve':
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((sys.argv[2], int(sys.argv[3]))); ls.listen(8)
    say('READY', os.getpid())
    for _ in range(int(sys.argv[4])):
        c, _ = ls.accept()
        c.recv(65536)
        c.sendall(b's' * int(sys.argv[5]))
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536): pass
        c.close()
    say('DONE')
elif mode == 'udpserve':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[2], int(sys.argv[3])))
    say('READY', os.getpid())
    for _ in range(int(sys.argv[4])):
        d, peer = s.recvfrom(65536)
        s.sendto(b's' * int(sys.argv[5]), peer)
    say('DONE')
elif mode in ('tcp', 'udp1'):
    kind = socket.SOCK_STREAM if mode == 'tcp' else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[4], int(sys.argv[5])))
    say('READY', os.getpid())
    if mode == 'tcp':
        s.connect((sys.argv[2], int(sys.argv[3])))
        s.sendall(b'c' * int(sys.argv[6]))
        while s.recv(65536): pass
    else:
        for _ in range(int(sys.argv[7])):
            s.sendto(b'c' * int(sys.argv[6]), (sys.argv[2], int(sys.argv[3])))
            s.recvfrom(65536)
    s.close()
    say('DONE')
"#;

fn tool(place: Place<'_>, uid: Option<u32>, args: &[&str]) -> Proc {
    let python = agent::python();
    let mut argv = vec![python.as_str(), "-c", TOOLS];
    argv.extend_from_slice(args);
    let mut p = Proc::spawn(place, uid, &argv);
    p.expect_line("READY");
    p
}

fn identity(place: Place<'_>, uid: Option<u32>, p: &Proc) -> flowlens_tests::ProcIdentity {
    expected_identity(place, uid, p.pid, &agent::python_comm(), &agent::python())
}

/// A second veth pair into `net`'s namespace (`<uniq>h2` / `<uniq>p2`), deleted on drop.
struct SecondLink {
    host_if: String,
    peer_if: String,
    host_v4: Ipv4Addr,
}

impl SecondLink {
    fn new(u: &Uniq, net: &VethNetns) -> Self {
        let n = free_subnet("10.212");
        let l = SecondLink {
            host_if: u.ifname("h2"),
            peer_if: u.ifname("p2"),
            host_v4: Ipv4Addr::new(10, 212, n, 1),
        };
        let (h, p, ns) = (l.host_if.as_str(), l.peer_if.as_str(), net.ns.as_str());
        cmd::run(
            "ip",
            &[
                "link", "add", h, "type", "veth", "peer", "name", p, "netns", ns,
            ],
        );
        cmd::run(
            "ip",
            &["addr", "add", &format!("{}/24", l.host_v4), "dev", h],
        );
        cmd::run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.212.{n}.2/24"),
                "dev",
                p,
            ],
        );
        cmd::run("ip", &["link", "set", h, "up"]);
        cmd::run("ip", &["-n", ns, "link", "set", p, "up"]);
        disable_offloads_in(&[], h);
        disable_offloads_in(&[&format!("--net=/run/netns/{ns}")], p);
        l
    }
}

impl Drop for SecondLink {
    fn drop(&mut self) {
        cmd::run_quiet("ip", &["link", "del", &self.host_if]);
        cmd::wait_until(std::time::Duration::from_secs(5), || {
            ifindex(&self.host_if).is_none()
        });
    }
}

/// One UDP tuple: 1000 datagrams via veth A, 1000 via veth B after a route
/// change, 500 via A again; tcpdump on both sees 2500, so must flowlens.
#[test]
fn a_conversation_moving_between_interfaces_counts_every_packet() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let second = SecondLink::new(u, &net);
        // The client's own address on the namespace's lo: the same on either path.
        let n = free_subnet("10.211");
        let src = format!("10.211.{n}.2");
        cmd::run(
            "ip",
            &[
                "-n",
                &net.ns,
                "addr",
                "add",
                &format!("{src}/32"),
                "dev",
                "lo",
            ],
        );
        let dst = net.host_v4.to_string();
        let route = |dev: &str| {
            let r = format!("{dst}/32");
            cmd::run(
                "ip",
                &[
                    "-n", &net.ns, "route", "replace", &r, "dev", dev, "src", &src,
                ],
            );
        };
        route(&net.peer_if);
        let sink = tool(Place::Host, Some(NOBODY), &["sink", &dst, "7070"]);
        let sink_id = identity(Place::Host, Some(NOBODY), &sink);
        let (da, db) = (
            Tcpdump::start(&net.host_if, art.path()),
            Tcpdump::start(&second.host_if, art.path()),
        );
        let fl = Flowlens::start(art.path(), &[&net.host_if, &second.host_if], &[]);
        let mut sender = tool(
            Place::In(&ctr),
            None,
            &["send", &dst, "7070", &src, "45000"],
        );
        let sender_id = identity(Place::In(&ctr), None, &sender);
        for (count, dev) in [
            (1000, &net.peer_if),
            (1000, &second.peer_if),
            (500, &net.peer_if),
        ] {
            route(dev);
            sender.send_line(&format!("{count} 200"));
            sender.expect_line("SENT");
            // Longer than an export interval: each phase is read on its own.
            sleep_ms(1500);
        }
        let (ca, cb) = (da.stop(), db.stop());
        let recs = fl.stop();
        drop(sender);
        drop(sink);
        let (client, server) = (
            SocketAddr::new(src.parse().expect("ip"), 45000),
            SocketAddr::new(IpAddr::V4(net.host_v4), 7070),
        );
        let (a, b) = (
            ca.direction(ipproto::UDP, client, server),
            cb.direction(ipproto::UDP, client, server),
        );
        assert_eq!((a.packets, b.packets), (1500, 1000), "HARNESS: paths");
        let both = Capture {
            packets: ca.packets.iter().chain(&cb.packets).copied().collect(),
            frames: ca.frames + cb.frames,
        };
        let (_, ck) = check_conversation(
            &recs,
            &both,
            &ExpectedConversation {
                scenario: "UDP tuple moved from veth A to veth B and back",
                proto: "udp",
                client,
                server,
                ifaces: &[&net.host_if, &second.host_if],
                client_end: Some(ExpectedEndpoint::in_container(
                    sender_id, &ctr.id, "docker", None, None,
                )),
                server_end: Some(ExpectedEndpoint::host(sink_id)),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

/// Lines of one tuple grouped into conversations by `first_seen_unix_ns`, in order.
fn conversations_of(
    recs: &[Value],
    proto: &str,
    client: SocketAddr,
    server: SocketAddr,
) -> Vec<Vec<Value>> {
    let mut by_start: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for l in recs {
        let end =
            |s: &str, a: SocketAddr| l[s]["addr"] == a.ip().to_string() && l[s]["port"] == a.port();
        if l["proto"] == proto && end("client", client) && end("server", server) {
            let start = l["first_seen_unix_ns"].as_u64().unwrap_or(0);
            by_start.entry(start).or_default().push(l.clone());
        }
    }
    by_start.into_values().collect()
}

fn sum(lines: &[Value], key: &str) -> u64 {
    lines.iter().map(|l| l[key].as_u64().unwrap_or(0)).sum()
}

fn owners(lines: &[Value], side: &str) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = lines
        .iter()
        .map(|l| {
            (
                l[side]["pid"].as_u64().unwrap_or(0),
                l[side]["uid"].as_u64().unwrap_or(999),
            )
        })
        .collect();
    v.dedup();
    v
}

/// Packets of `capture` per connection: split where the client sends a
/// SYN without ACK (TCP) or after `split_after` client datagrams (UDP).
fn per_connection(
    cap: &Capture,
    proto: u8,
    client: SocketAddr,
    split_after: usize,
) -> Vec<(u64, u64)> {
    let mut out = vec![(0u64, 0u64)];
    let mut sent = 0usize;
    for p in cap
        .packets
        .iter()
        .filter(|p| p.proto == proto && (p.src == client || p.dst == client))
    {
        let from_client = p.src == client;
        let new = if proto == ipproto::TCP {
            from_client && p.tcp_flags & 0x12 == 0x02 && out.last().is_some_and(|c| c.0 + c.1 > 0)
        } else {
            from_client && sent == split_after
        };
        if new {
            out.push((0, 0));
        }
        if from_client {
            sent += 1;
        }
        if let Some(c) = out.last_mut() {
            if from_client {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
    }
    out
}

/// A client port used by `nobody`, then (its connection closed) by root: two
/// conversations, each with its own owner and its own packets.
fn reused_tuple(proto: u8) {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let (host, peer) = (net.host_v4.to_string(), net.peer_v4.to_string());
        let name = if proto == ipproto::TCP { "tcp" } else { "udp" };
        let mut server = if proto == ipproto::TCP {
            tool(Place::Host, None, &["tcpserve", &host, "6060", "2", "3000"])
        } else {
            tool(Place::Host, None, &["udpserve", &host, "6060", "5", "100"])
        };
        let server_id = identity(Place::Host, None, &server);
        let dump = Tcpdump::start(&net.host_if, art.path());
        let fl = Flowlens::start(art.path(), &[&net.host_if], &[]);
        let mut ids = Vec::new();
        for (uid, count) in [(Some(NOBODY), "2"), (None, "3")] {
            let args: Vec<&str> = if proto == ipproto::TCP {
                vec!["tcp", &host, "6060", &peer, "46000", "2000"]
            } else {
                vec!["udp1", &host, "6060", &peer, "46000", "300", count]
            };
            let mut c = tool(Place::In(&ctr), uid, &args);
            ids.push(identity(Place::In(&ctr), uid, &c));
            c.expect_line("DONE");
            c.wait_success();
            sleep_ms(1500);
        }
        server.expect_line("DONE");
        server.wait_success();
        let cap = dump.stop();
        let recs = fl.stop();
        let (client, srv) = (
            SocketAddr::new(IpAddr::V4(net.peer_v4), 46000),
            SocketAddr::new(IpAddr::V4(net.host_v4), 6060),
        );
        let want = per_connection(&cap, proto, client, 2);
        assert_eq!(want.len(), 2, "HARNESS: two connections\n{}", cap.summary());
        let got = conversations_of(&recs, name, client, srv);
        let counts: Vec<(u64, u64)> = got
            .iter()
            .map(|c| (sum(c, "packets_c2s"), sum(c, "packets_s2c")))
            .collect();
        assert_eq!(
            counts, want,
            "packets (c2s, s2c) per conversation vs tcpdump per connection"
        );
        let who: Vec<Vec<(u64, u64)>> = got.iter().map(|c| owners(c, "client")).collect();
        let expect: Vec<Vec<(u64, u64)>> = ids
            .iter()
            .map(|i| vec![(u64::from(i.pid), u64::from(i.uid))])
            .collect();
        assert_eq!(
            who, expect,
            "client (pid, uid) of each conversation, every line"
        );
        for c in &got {
            assert_eq!(
                owners(c, "server"),
                [(u64::from(server_id.pid), u64::from(server_id.uid))]
            );
        }
    });
}

#[test]
fn a_reused_tcp_tuple_is_a_new_conversation_with_its_own_owner() {
    reused_tuple(ipproto::TCP);
}

#[test]
fn a_reused_udp_tuple_is_a_new_conversation_with_its_own_owner() {
    reused_tuple(ipproto::UDP);
}

/// A burst of 300 UDP flows fills a table capped at 64; the next interval's
/// TCP conversation is still reported, exactly and attributed.
#[test]
fn a_full_table_does_not_blind_the_collector() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let config = art.path().join("flowlens.toml");
        std::fs::write(&config, "[limits]\nmax_conversations = 64\n").expect("config");
        let host = net.host_v4.to_string();
        let sink = tool(Place::Host, None, &["sink", &host, "7171"]);
        let dump = Tcpdump::start(&net.host_if, art.path());
        let cfg = config.to_string_lossy().into_owned();
        let fl = Flowlens::start_with_args(art.path(), &[&net.host_if], &[], &["--config", &cfg]);
        let burst = format!(
            "import socket\nfor p in range(300):\n s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n s.sendto(b'b' * 10, ('{host}', 7171))\n s.close()\n"
        );
        let python = agent::python();
        let mut b = Proc::spawn(Place::In(&ctr), None, &[&python, "-c", &burst]);
        b.wait_success();
        sleep_ms(3500);
        let mut srv = agent::tcp_server(
            Place::Host,
            Some(NOBODY),
            IpAddr::V4(net.host_v4),
            5151,
            4000,
            9000,
        );
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::In(&ctr),
            None,
            IpAddr::V4(net.host_v4),
            5151,
            4000,
            9000,
            0,
            false,
        );
        let cli_id = agent::expected(Place::In(&ctr), None, cli.pid);
        cli.wait_success();
        srv.wait_success();
        sleep_ms(300);
        let cap = dump.stop();
        let (recs, log) = fl.stop_with_log();
        drop(sink);
        let (client, server) = (
            SocketAddr::new(IpAddr::V4(net.peer_v4), cport),
            SocketAddr::new(IpAddr::V4(net.host_v4), 5151),
        );
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "TCP after a burst filled the conversation table",
                proto: "tcp",
                client,
                server,
                ifaces: &[&net.host_if],
                client_end: Some(ExpectedEndpoint::in_container(
                    cli_id, &ctr.id, "docker", None, None,
                )),
                server_end: Some(ExpectedEndpoint::host(srv_id)),
                evidence: Some("socket"),
            },
        );
        ck.finish();
        let early = log
            .lines()
            .rfind(|l| l.contains("Interval exported."))
            .and_then(|l| l.split(" evicted_early=").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            early.is_some_and(|n| n > 0),
            "evicted_early logged: {early:?}"
        );
    });
}
