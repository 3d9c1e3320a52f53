//! flowlens against real traffic between the root namespace and a "container"
//! (a network namespace + a Docker-style cgroup v2 scope), with tcpdump on the
//! same veth as the reference. Run as root, one test at a time:
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_netns -- --test-threads=1`

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;

use common::checks::{check_conversation, ExpectedConversation};
use common::pcap::Capture;
use common::spawn::expected_identity;
use common::{
    agent, ipproto, scenario, sleep_ms, ArtifactDir, ExpectedEndpoint, FakeContainer, Flowlens,
    Place, Proc, Tcpdump, Uniq, VethNetns, NOBODY,
};
use serde_json::Value;

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

    fn start_flowlens(&self) -> Flowlens {
        Flowlens::start(self.art.path(), &[&self.net.host_if], &[])
    }

    fn container_end(&self, p: common::ProcIdentity) -> ExpectedEndpoint {
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
/// flushes its last interval on SIGTERM).
fn finish(dump: Tcpdump, fl: Flowlens) -> (Capture, Vec<Value>) {
    sleep_ms(300);
    let cap = dump.stop();
    (cap, fl.stop())
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

#[test]
fn tcp_host_client_to_container_server() {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens();
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), 5001, 10_000, 50_000);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            5001,
            10_000,
            50_000,
            0,
            false,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), 5001),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 10_000, 50_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "TCP host client (nobody) -> container server",
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

#[test]
fn tcp_container_client_to_host_server() {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens();
        let mut srv =
            agent::tcp_server(Place::Host, Some(NOBODY), s.host_v4(), 5011, 20_000, 7_000);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::In(&s.ctr),
            None,
            s.host_v4(),
            5011,
            20_000,
            7_000,
            0,
            false,
        );
        let cli_id = agent::expected(Place::In(&s.ctr), None, cli.pid);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

        let (client, server) = (
            SocketAddr::new(s.peer_v4(), cport),
            SocketAddr::new(s.host_v4(), 5011),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 20_000, 7_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "TCP container client -> host server (nobody)",
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

/// UDP request/response, `connected` choosing connect()+send() or sendto().
fn udp_host_client_to_container_server(connected: bool) {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens();
        let sizes = [100, 1000, 1400];
        let port = if connected { 5021 } else { 5022 };
        let mut srv =
            agent::udp_server(Place::In(&s.ctr), None, s.peer_v4(), port, sizes.len(), 500);
        let srv_id = srv.identity();
        let (cli, cport) = agent::udp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            port,
            connected,
            &sizes,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

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
                scenario: name,
                proto: "udp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(ExpectedEndpoint::host(cli_id)),
                server_end: Some(s.container_end(srv_id)),
                evidence: Some("socket"),
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

#[test]
fn udp_connected_host_client_to_container_server() {
    udp_host_client_to_container_server(true);
}

#[test]
fn udp_unconnected_host_client_to_container_server() {
    udp_host_client_to_container_server(false);
}

#[test]
fn tcp_ipv6_host_client_to_container_server() {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens();
        let (host6, peer6) = (IpAddr::V6(s.net.host_v6), IpAddr::V6(s.net.peer_v6));
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, peer6, 5031, 12_345, 23_456);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            peer6,
            5031,
            12_345,
            23_456,
            0,
            false,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

        let (client, server) = (SocketAddr::new(host6, cport), SocketAddr::new(peer6, 5031));
        assert_capture_payload(&cap, ipproto::TCP, client, server, 12_345, 23_456);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "TCP/IPv6 host client (nobody) -> container server",
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

/// `ping -c 3` as nobody (raw socket through the file capability) from the
/// host to the container, whose kernel answers: 3 requests + 3 replies.
fn ping_host_to_container(v6: bool) {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = s.start_capture();
        let fl = s.start_flowlens();
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
        let (cap, recs) = finish(dump, fl);

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
fn icmp_echo_host_to_container() {
    ping_host_to_container(false);
}

#[test]
fn icmpv6_echo_host_to_container() {
    ping_host_to_container(true);
}

/// The client is gone long before the export that reports its conversation.
#[test]
fn exited_client_is_attributed() {
    scenario(|u| {
        let s = Setup::new(u);
        let input = s.art.path().join("c2s.bin");
        std::fs::write(&input, vec![b'c'; 5000]).expect("write input");
        let dump = s.start_capture();
        let fl = s.start_flowlens();
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
        let (cap, recs) = finish(dump, fl);

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

/// A connection established (and used) before flowlens starts, used again
/// afterwards: both ends attributed, roles right, counts = what tcpdump saw
/// after the start.
#[test]
fn connection_opened_before_start_is_attributed() {
    scenario(|u| {
        let s = Setup::new(u);
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), 5051, 11_000, 30_000);
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            5051,
            11_000,
            30_000,
            1000,
            false,
        );
        let (srv_id, cli_id) = (srv.identity(), cli.identity());
        sleep_ms(300);
        let dump = s.start_capture();
        let fl = s.start_flowlens();
        sleep_ms(1500);
        cli.send_line("go");
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), 5051),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 10_000, 30_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "TCP connection opened before flowlens started",
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
#[test]
fn all_interfaces_mode_attaches_to_new_veth() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let fl = Flowlens::start(art.path(), &[], &[]);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let s = Setup { net, ctr, art };
        // Time to notice the new link and attach (netlink event).
        sleep_ms(2000);
        let dump = s.start_capture();
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), 5061, 4_000, 9_000);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            5061,
            4_000,
            9_000,
            0,
            false,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), 5061),
        );
        assert_capture_payload(&cap, ipproto::TCP, client, server, 4_000, 9_000);
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "no --iface: TCP over a veth created after start",
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
