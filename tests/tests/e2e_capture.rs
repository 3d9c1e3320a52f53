//! flowlens against real traffic between the root namespace and a "container"
//! (a network namespace + a Docker-style cgroup v2 scope), with tcpdump on the
//! same veth as the reference: one scenario set, run under both capture
//! modes (`ebpf_*` and `afpacket_*` tests). A scenario that one mode cannot
//! see says why (docs/afpacket.md lists what AF_PACKET mode cannot see).
//!
//! In AF_PACKET mode the processes live about a second (a TCP client pauses,
//! a UDP client paces its datagrams): owners are found by rescanning /proc at
//! most every 500 ms after new flows, so a process that exits sooner can be
//! missed. Run as root, one at a time:
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_capture -- --test-threads=1`
//!
//! Length: the whole scenario set in one file, so every scenario visibly runs
//! under both modes (or says why not).

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use flowlens_tests::checks::{check_conversation, ExpectedConversation};
use flowlens_tests::pcap::Capture;
use flowlens_tests::spawn::expected_identity;
use flowlens_tests::{
    agent, ipproto, scenario, sleep_ms, ArtifactDir, ExpectedEndpoint, FakeContainer, Flowlens,
    Place, Proc, ProcIdentity, Tcpdump, Uniq, VethNetns, NOBODY,
};
use serde_json::Value;

/// How flowlens captures in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The kernel programs (default).
    Ebpf,
    /// `--capture afpacket`.
    Afpacket,
}

impl Mode {
    /// Starts flowlens on `ifaces` (none: every interface) in this mode.
    fn start(self, art: &ArtifactDir, ifaces: &[&str]) -> Flowlens {
        match self {
            Mode::Ebpf => Flowlens::start(art.path(), ifaces, &[]),
            Mode::Afpacket => {
                let fl =
                    Flowlens::start_with_args(art.path(), ifaces, &[], &["--capture", "afpacket"]);
                assert!(
                    fl.log().contains("capture=\"afpacket\""),
                    "flowlens did not say it runs in AF_PACKET mode:\n{}",
                    fl.log()
                );
                assert_eq!(
                    fl.programs(),
                    Vec::<String>::new(),
                    "AF_PACKET mode must not load BPF programs"
                );
                fl
            }
        }
    }

    /// The port of a scenario in this mode (each mode its own).
    fn port(self, ebpf: u16, afpacket: u16) -> u16 {
        match self {
            Mode::Ebpf => ebpf,
            Mode::Afpacket => afpacket,
        }
    }

    /// Bytes a TCP client sends before it waits for "go": in AF_PACKET mode
    /// it lives through a /proc rescan first.
    fn tcp_pause(self) -> usize {
        match self {
            Mode::Ebpf => 0,
            Mode::Afpacket => 1_000,
        }
    }

    /// Lets a paused TCP client go on (after a rescan, in AF_PACKET mode).
    fn release(self, cli: &mut Proc) {
        if self.tcp_pause() > 0 {
            sleep_ms(1_000);
            cli.send_line("go");
        }
    }

    /// Gap between a UDP client's datagrams.
    fn udp_gap(self) -> Duration {
        match self {
            Mode::Ebpf => Duration::ZERO,
            Mode::Afpacket => Duration::from_millis(600),
        }
    }

    /// How the client of a UDP conversation is known: the socket hooks see
    /// connect()/sendmsg(); /proc has no UDP role, so the ports decide.
    fn udp_evidence(self) -> &'static str {
        match self {
            Mode::Ebpf => "socket",
            Mode::Afpacket => "ports",
        }
    }
}

/// One namespace + fake container, tcpdump and flowlens on the host veth.
struct Setup {
    net: VethNetns,
    ctr: FakeContainer,
    art: ArtifactDir,
}

impl Setup {
    fn new(u: &Uniq) -> Self {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        Setup { net, ctr, art }
    }

    fn start_capture(&self) -> Tcpdump {
        Tcpdump::start(&self.net.host_if, self.art.path())
    }

    fn start_flowlens(&self, mode: Mode) -> Flowlens {
        mode.start(&self.art, &[&self.net.host_if])
    }

    fn container_end(&self, p: ProcIdentity) -> ExpectedEndpoint {
        ExpectedEndpoint::in_container(p, &self.ctr.id, "docker", None, None)
    }

    fn host_v4(&self) -> IpAddr {
        IpAddr::V4(self.net.host_v4)
    }

    fn peer_v4(&self) -> IpAddr {
        IpAddr::V4(self.net.peer_v4)
    }
}

/// Lets the last ACKs arrive, then stops the reference and flowlens (which
/// flushes its last interval on SIGTERM). In AF_PACKET mode, checks that no
/// socket dropped packets.
fn finish(mode: Mode, dump: Tcpdump, fl: Flowlens) -> (Capture, Vec<Value>) {
    sleep_ms(300);
    let cap = dump.stop();
    if mode == Mode::Ebpf {
        return (cap, fl.stop());
    }
    // The log after the exit: it ends with the interval flushed at shutdown
    // (read before, it may hold no exported interval yet on a slow run).
    let (recs, log) = fl.stop_with_log();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("Interval exported."))
        .unwrap_or_default();
    assert!(
        last.contains("afpacket_drops=0"),
        "expected no AF_PACKET drops, last interval: {last}"
    );
    (cap, recs)
}

/// The capture shows exactly the generated payload, or the harness is broken.
fn assert_capture_payload(
    cap: &Capture,
    proto: u8,
    client: SocketAddr,
    server: SocketAddr,
    c2s: u64,
    s2c: u64,
) {
    let (a, b) = (
        cap.direction(proto, client, server),
        cap.direction(proto, server, client),
    );
    assert_eq!(
        (a.payload, b.payload),
        (c2s, s2c),
        "HARNESS: tcpdump payload {client} <-> {server} is not what the agents sent\n{}",
        cap.summary()
    );
}

/// One test per capture mode for each scenario named.
macro_rules! in_both_modes {
    ($($scenario:ident => $ebpf:ident, $afpacket:ident;)+) => {
        $(
            #[test]
            fn $ebpf() {
                $scenario(Mode::Ebpf);
            }

            #[test]
            fn $afpacket() {
                $scenario(Mode::Afpacket);
            }
        )+
    };
}

in_both_modes! {
    tcp_host_client_to_container_server
        => ebpf_tcp_host_client_to_container_server, afpacket_tcp_host_client_to_container_server;
    tcp_container_client_to_host_server
        => ebpf_tcp_container_client_to_host_server, afpacket_tcp_container_client_to_host_server;
    udp_connected_host_client_to_container_server
        => ebpf_udp_connected_host_client_to_container_server, afpacket_udp_connected_host_client_to_container_server;
    udp_unconnected_host_client_to_container_server
        => ebpf_udp_unconnected_host_client_to_container_server, afpacket_udp_unconnected_host_client_to_container_server;
    udp_container_client_to_host_server
        => ebpf_udp_container_client_to_host_server, afpacket_udp_container_client_to_host_server;
    tcp_ipv6_host_client_to_container_server
        => ebpf_tcp_ipv6_host_client_to_container_server, afpacket_tcp_ipv6_host_client_to_container_server;
    connection_opened_before_start_is_attributed
        => ebpf_connection_opened_before_start_is_attributed, afpacket_connection_opened_before_start_is_attributed;
    all_interfaces_mode_attaches_to_new_veth
        => ebpf_all_interfaces_mode_attaches_to_new_veth, afpacket_all_interfaces_mode_attaches_to_new_veth;
    http_server_in_container_closes_its_socket_first
        => ebpf_http_server_in_container_closes_its_socket_first, afpacket_http_server_in_container_closes_its_socket_first;
}

fn tcp_host_client_to_container_server(mode: Mode) {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let port = mode.port(5001, 5101);
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), port, 10_000, 50_000);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            port,
            10_000,
            50_000,
            mode.tcp_pause(),
            false,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        mode.release(&mut cli);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), port),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 10_000, 50_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: TCP host client (nobody) -> container server"),
                proto: "tcp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

fn tcp_container_client_to_host_server(mode: Mode) {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let port = mode.port(5011, 5111);
        let mut srv =
            agent::tcp_server(Place::Host, Some(NOBODY), s.host_v4(), port, 20_000, 7_000);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::In(&s.ctr),
            None,
            s.host_v4(),
            port,
            20_000,
            7_000,
            mode.tcp_pause(),
            false,
        );
        let cli_id = agent::expected(Place::In(&s.ctr), None, cli.pid);
        mode.release(&mut cli);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        let (client, server) = (
            SocketAddr::new(s.peer_v4(), cport),
            SocketAddr::new(s.host_v4(), port),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 20_000, 7_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: TCP container client -> host server (nobody)"),
                proto: "tcp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(s.container_end(cli_id)),
                server_end: Some(ExpectedEndpoint::host(srv_id)),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

fn udp_connected_host_client_to_container_server(mode: Mode) {
    udp_host_client_to_container_server(mode, true);
}

fn udp_unconnected_host_client_to_container_server(mode: Mode) {
    udp_host_client_to_container_server(mode, false);
}

/// UDP request/response, `connected` choosing connect()+send() or sendto().
fn udp_host_client_to_container_server(mode: Mode, connected: bool) {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let sizes = [100, 1000, 1400];
        let port = match (connected, mode) {
            (true, _) => mode.port(5021, 5141),
            (false, _) => mode.port(5022, 5142),
        };
        let mut srv =
            agent::udp_server(Place::In(&s.ctr), None, s.peer_v4(), port, sizes.len(), 500);
        let srv_id = srv.identity();
        let (cli, cport) = agent::udp_client_paced(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            port,
            connected,
            &sizes,
            mode.udp_gap(),
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), port),
        );
        assert_capture_payload(&cap, ipproto::UDP, client, server, 2500, 1500);
        let name = if connected {
            "UDP connected host client -> container"
        } else {
            "UDP unconnected (sendto) host client -> container"
        };
        let (conv, mut ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: {name}"),
                proto: "udp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: Some(mode.udp_evidence()),
            },
        );
        // Known without the capture: 3 datagrams each way, payload + 28 header bytes.
        ck.eq(
            "packets c2s/s2c (absolute)",
            (conv.packets_c2s, conv.packets_s2c),
            (3, 3),
        );
        ck.eq(
            "bytes c2s/s2c (absolute)",
            (conv.bytes_c2s, conv.bytes_s2c),
            (2500 + 3 * 28, 3 * 528),
        );
        ck.finish();
    });
}

fn udp_container_client_to_host_server(mode: Mode) {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let sizes = [100, 1000, 1400];
        let port = mode.port(5026, 5121);
        let mut srv = agent::udp_server(
            Place::Host,
            Some(NOBODY),
            s.host_v4(),
            port,
            sizes.len(),
            500,
        );
        let srv_id = srv.identity();
        let (cli, cport) = agent::udp_client_paced(
            Place::In(&s.ctr),
            None,
            s.host_v4(),
            port,
            true,
            &sizes,
            mode.udp_gap(),
        );
        let cli_id = agent::expected(Place::In(&s.ctr), None, cli.pid);
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        let (client, server) = (
            SocketAddr::new(s.peer_v4(), cport),
            SocketAddr::new(s.host_v4(), port),
        );
        assert_capture_payload(&cap, ipproto::UDP, client, server, 2500, 1500);
        let (conv, mut ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: UDP container client -> host server (nobody)"),
                proto: "udp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(s.container_end(cli_id)),
                server_end: Some(ExpectedEndpoint::host(srv_id)),
                evidence: Some(mode.udp_evidence()),
            },
        );
        // Known without the capture: 3 datagrams each way, payload + 28 header bytes.
        ck.eq(
            "packets c2s/s2c (absolute)",
            (conv.packets_c2s, conv.packets_s2c),
            (3, 3),
        );
        ck.eq(
            "bytes c2s/s2c (absolute)",
            (conv.bytes_c2s, conv.bytes_s2c),
            (2500 + 3 * 28, 3 * 528),
        );
        ck.finish();
    });
}

fn tcp_ipv6_host_client_to_container_server(mode: Mode) {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let port = mode.port(5031, 5135);
        let (host6, peer6) = (IpAddr::V6(s.net.host_v6), IpAddr::V6(s.net.peer_v6));
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, peer6, port, 12_345, 23_456);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            peer6,
            port,
            12_345,
            23_456,
            mode.tcp_pause(),
            false,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        mode.release(&mut cli);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        let (client, server) = (SocketAddr::new(host6, cport), SocketAddr::new(peer6, port));
        assert_capture_payload(&cap, ipproto::TCP, client, server, 12_345, 23_456);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: TCP/IPv6 host client (nobody) -> container server"),
                proto: "tcp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

/// A connection established (and used) before flowlens starts, used again
/// afterwards: both ends attributed, roles right, counts = what tcpdump saw
/// after the start.
fn connection_opened_before_start_is_attributed(mode: Mode) {
    scenario(|u| {
        let s = Setup::new(u);
        let port = mode.port(5051, 5151);
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), port, 11_000, 30_000);
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            port,
            11_000,
            30_000,
            1000,
            false,
        );
        let (srv_id, cli_id) = (srv.identity(), cli.identity());
        sleep_ms(300);
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        sleep_ms(1500);
        cli.send_line("go");
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), port),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 10_000, 30_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: TCP connection opened before flowlens started"),
                proto: "tcp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: None,
            },
        );
        ck.finish();
    });
}

/// Without `--iface` flowlens monitors every interface, including ones that
/// appear after it started (here the test veth).
fn all_interfaces_mode_attaches_to_new_veth(mode: Mode) {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let fl = mode.start(&art, &[]);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let s = Setup { net, ctr, art };
        // Time to notice the new link and attach (polled every second).
        sleep_ms(2000);
        let dump = s.start_capture();
        let port = mode.port(5061, 5161);
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), port, 4_000, 9_000);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            port,
            4_000,
            9_000,
            mode.tcp_pause(),
            false,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        mode.release(&mut cli);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), port),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 4_000, 9_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: no --iface: TCP over a veth created after start"),
                proto: "tcp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

/// HTTP: Python's `http.server` in the container serves a 50 kB file to a
/// client on the host that asks, waits 1.5 s, then reads. The answer fits in
/// the client's receive buffer, so the server closes its socket at once:
/// only its listening socket stays (in the container's network namespace).
/// Both ends are attributed; in AF_PACKET mode the server through that
/// listener.
fn http_server_in_container_closes_its_socket_first(mode: Mode) {
    scenario(|u| {
        let s = Setup::new(u);
        let www = s.art.path().join("www");
        std::fs::create_dir_all(&www).expect("www");
        std::fs::write(www.join("file.bin"), vec![b'w'; 50_000]).expect("file");
        let port = mode.port(5071, 5171);
        let (p, dir, addr) = (
            port.to_string(),
            www.to_string_lossy().into_owned(),
            s.peer_v4().to_string(),
        );
        let python = agent::python();
        let srv = Proc::spawn(
            Place::In(&s.ctr),
            None,
            &[
                &python,
                "-m",
                "http.server",
                &p,
                "--bind",
                &addr,
                "--directory",
                &dir,
            ],
        );
        let srv_id = agent::expected(Place::In(&s.ctr), None, srv.pid);
        let up = flowlens_tests::cmd::wait_until(Duration::from_secs(10), || {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &s.net.ns,
                    "ss",
                    "-Hltn",
                    &format!("sport = :{port}"),
                ])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        });
        assert!(up, "HARNESS: http.server does not listen");
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let client_py = "import socket, sys, time\n\
            s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
            s.sendall(b'GET /file.bin HTTP/1.0\\r\\nHost: ctr\\r\\n\\r\\n')\n\
            time.sleep(1.5)\n\
            n = 0\n\
            while True:\n\
            \x20   b = s.recv(65536)\n\
            \x20   if not b: break\n\
            \x20   n += len(b)\n\
            s.close()\n\
            print('GOT', n)\n";
        let mut cli = Proc::spawn(
            Place::Host,
            Some(NOBODY),
            &[&python, "-c", client_py, &addr, &p],
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        let got = cli.expect_line("GOT");
        cli.wait_success();
        assert!(
            got.first()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 50_000),
            "HARNESS: the client got {got:?}"
        );
        let (cap, recs) = finish(mode, dump, fl);
        drop(srv);

        let server = SocketAddr::new(s.peer_v4(), port);
        let peers = cap.peers_of(ipproto::TCP, server);
        assert_eq!(peers.len(), 1, "HARNESS: one client\n{}", cap.summary());
        let client = peers[0];
        let body = cap.direction(ipproto::TCP, server, client).payload;
        assert!(
            body > 50_000,
            "HARNESS: the file did not go out\n{}",
            cap.summary()
        );
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{mode:?}: HTTP, curl on the host <- http.server in a container that closes first"),
                proto: "tcp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: None,
            },
        );
        ck.finish();
    });
}

// eBPF mode only: AF_PACKET mode has no ICMP owners (ping's sockets are not
// in /proc/net/{tcp,udp}) and misses processes that exit between two /proc
// scans (docs/afpacket.md).

/// `ping -c 3` as nobody (raw socket through the file capability) from the
/// host to the container, whose kernel answers: 3 requests + 3 replies.
fn ping_host_to_container(v6: bool) {
    let mode = Mode::Ebpf;
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let (src, target) = if v6 {
            (IpAddr::V6(s.net.host_v6), IpAddr::V6(s.net.peer_v6))
        } else {
            (s.host_v4(), s.peer_v4())
        };
        let t = target.to_string();
        let argv = ["/usr/bin/ping", "-c", "3", "-i", "0.2", "-W", "2", &t];
        let mut ping = Proc::spawn(Place::Host, Some(NOBODY), &argv);
        let id = expected_identity(Place::Host, Some(NOBODY), ping.pid, "ping", "/usr/bin/ping");
        ping.wait_success();
        let (cap, recs) = finish(mode, dump, fl);

        // IPv4: 20 + 8 + 56 bytes; IPv6: 40 + 8 + 56.
        let (proto, name, size) = if v6 {
            (ipproto::ICMPV6, "icmpv6", 104)
        } else {
            (ipproto::ICMP, "icmp", 84)
        };
        // The echo identifier (the "port") is ping's choice: take it from the capture.
        let echo = cap
            .packets
            .iter()
            .find(|p| p.proto == proto && p.src.ip() == src && p.src.port() != 0);
        let echo = echo
            .unwrap_or_else(|| panic!("HARNESS: no {name} echo in the capture\n{}", cap.summary()));
        let echo_id = echo.src.port();
        let (client, server) = (
            SocketAddr::new(src, echo_id),
            SocketAddr::new(target, echo_id),
        );
        let (a, b) = (
            cap.direction(proto, client, server),
            cap.direction(proto, server, client),
        );
        let seen = (a.packets, a.bytes, b.packets, b.bytes);
        assert_eq!(
            seen,
            (3, 3 * size, 3, 3 * size),
            "HARNESS\n{}",
            cap.summary()
        );
        let (conv, mut ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: &format!("{name} echo (ping -c 3, nobody) host -> container"),
                proto: name,
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(id)),
                // The container's kernel answers: no process.
                server_end: None,
                evidence: None,
            },
        );
        let counts = (
            conv.packets_c2s,
            conv.packets_s2c,
            conv.bytes_c2s,
            conv.bytes_s2c,
        );
        ck.eq(
            "packets c2s/s2c, bytes c2s/s2c (absolute)",
            counts,
            (3, 3, 3 * size, 3 * size),
        );
        ck.finish();
    });
}

#[test]
fn ebpf_icmp_echo_host_to_container() {
    ping_host_to_container(false);
}

#[test]
fn ebpf_icmpv6_echo_host_to_container() {
    ping_host_to_container(true);
}

/// The client is gone long before the export that reports its conversation.
#[test]
fn ebpf_exited_client_is_attributed() {
    let mode = Mode::Ebpf;
    scenario(|u| {
        let s = Setup::new(u);
        let input = s.art.path().join("c2s.bin");
        std::fs::write(&input, vec![b'c'; 5000]).expect("write input");
        let dump = s.start_capture();
        let fl = s.start_flowlens(mode);
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), 5041, 5000, 1000);
        let srv_id = srv.identity();
        let target = format!("TCP:{}:5041", s.net.peer_v4);
        let stdin = Stdio::from(std::fs::File::open(&input).expect("open input"));
        let mut cli = Proc::spawn_with_stdin(
            Place::Host,
            Some(NOBODY),
            &["/usr/bin/socat", "-t", "5", "-", &target],
            stdin,
        );
        let cli_id = expected_identity(
            Place::Host,
            Some(NOBODY),
            cli.pid,
            "socat",
            "/usr/bin/socat",
        );
        cli.wait_success();
        srv.wait_success();
        assert!(
            !std::path::Path::new(&format!("/proc/{}", cli.pid)).exists(),
            "client must be gone"
        );
        // Two full export intervals after the client's exit.
        sleep_ms(2500);
        let (cap, recs) = finish(mode, dump, fl);

        let server = SocketAddr::new(s.peer_v4(), 5041);
        let peers = cap.peers_of(ipproto::TCP, server);
        assert_eq!(
            peers.len(),
            1,
            "HARNESS: one client expected\n{}",
            cap.summary()
        );
        let client = peers[0];
        assert_capture_payload(&cap, ipproto::TCP, client, server, 5000, 1000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "TCP client (socat, nobody) that exited 2.5 s before the last export",
                proto: "tcp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

/// A host that refuses eBPF (here: root without CAP_BPF, CAP_PERFMON and
/// CAP_SYS_ADMIN, as on a locked-down node) still gets flows: flowlens says
/// why it falls back, loads no program, and counts exactly with AF_PACKET.
#[test]
fn afpacket_fallback_when_ebpf_is_not_allowed() {
    let mode = Mode::Afpacket;
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let drop = "-bpf,-perfmon,-sys_admin";
        let fl = Flowlens::start_wrapped(
            s.art.path(),
            &[&s.net.host_if],
            &[],
            &[],
            &["setpriv", "--bounding-set", drop, "--inh-caps", drop, "--"],
        );
        let log = fl.log();
        assert!(
            log.contains("falling back to AF_PACKET capture") && log.contains("CAP_BPF"),
            "flowlens must say why it falls back:\n{log}"
        );
        assert_eq!(
            fl.programs(),
            Vec::<String>::new(),
            "no BPF program may be loaded"
        );
        let mut srv = agent::udp_server(Place::Host, None, s.host_v4(), 5131, 2, 300);
        let srv_id = srv.identity();
        let (cli, cport) = agent::udp_client_paced(
            Place::In(&s.ctr),
            None,
            s.host_v4(),
            5131,
            true,
            &[200, 700],
            mode.udp_gap(),
        );
        let cli_id = agent::expected(Place::In(&s.ctr), None, cli.pid);
        srv.wait_success();
        let (cap, recs) = finish(mode, dump, fl);
        let (client, server) = (
            SocketAddr::new(s.peer_v4(), cport),
            SocketAddr::new(s.host_v4(), 5131),
        );
        let (conv, mut ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "fallback: UDP container client -> host server",
                proto: "udp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(s.container_end(cli_id)),
                server_end: Some(ExpectedEndpoint::host(srv_id)),
                evidence: Some(mode.udp_evidence()),
            },
        );
        ck.eq(
            "packets c2s/s2c",
            (conv.packets_c2s, conv.packets_s2c),
            (2, 2),
        );
        ck.eq(
            "bytes c2s/s2c",
            (conv.bytes_c2s, conv.bytes_s2c),
            (228 + 728, 2 * 328),
        );
        ck.finish();
    });
}
