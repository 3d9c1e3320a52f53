//! `flowlens run --capture afpacket` against real traffic between the root
//! namespace and a "container" (network namespace + Docker-style cgroup v2
//! scope), with tcpdump on the same veth as the reference: no BPF program is
//! loaded, counts per direction equal the capture's, both ends are attributed
//! from /proc scans. The processes live about a second (a TCP client pauses,
//! a UDP client paces its datagrams): AF_PACKET mode finds owners by
//! rescanning /proc at most every 500 ms after new flows, so a process that
//! exits sooner can be missed (docs/afpacket.md). Run as root, one at a time:
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_afpacket -- --test-threads=1`

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::checks::{check_conversation, ExpectedConversation};
use common::pcap::Capture;
use common::{
    agent, ipproto, scenario, sleep_ms, ArtifactDir, ExpectedEndpoint, FakeContainer, Flowlens,
    Place, Tcpdump, Uniq, VethNetns, NOBODY,
};
use serde_json::Value;

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

    fn start(&self) -> (Tcpdump, Flowlens) {
        let dump = Tcpdump::start(&self.net.host_if, self.art.path());
        let fl = Flowlens::start_with_args(
            self.art.path(),
            &[&self.net.host_if],
            &[],
            &["--capture", "afpacket"],
        );
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
        (dump, fl)
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

/// Lets the last ACKs arrive, then stops the reference and flowlens; checks
/// that flowlens counted no socket drops.
fn finish(dump: Tcpdump, fl: Flowlens) -> (Capture, Vec<Value>) {
    sleep_ms(300);
    let cap = dump.stop();
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

#[test]
fn afpacket_tcp_host_client_to_container_server() {
    scenario(|u| {
        let s = Setup::new(u);
        let (dump, fl) = s.start();
        let mut srv = agent::tcp_server(Place::In(&s.ctr), None, s.peer_v4(), 5101, 10_000, 50_000);
        let srv_id = srv.identity();
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            s.peer_v4(),
            5101,
            10_000,
            50_000,
            1_000,
            false,
        );
        let cli_id = agent::expected(Place::Host, Some(NOBODY), cli.pid);
        // Both processes live through at least one /proc rescan.
        sleep_ms(1_000);
        cli.send_line("go");
        cli.wait_success();
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

        let (client, server) = (
            SocketAddr::new(s.host_v4(), cport),
            SocketAddr::new(s.peer_v4(), 5101),
        );
        let (a, b) = (
            cap.direction(ipproto::TCP, client, server),
            cap.direction(ipproto::TCP, server, client),
        );
        assert_eq!(
            (a.payload, b.payload),
            (10_000, 50_000),
            "HARNESS: tcpdump payload"
        );
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "AF_PACKET: TCP host client (nobody) -> container server",
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
fn afpacket_udp_container_client_to_host_server() {
    scenario(|u| {
        let s = Setup::new(u);
        let (dump, fl) = s.start();
        let sizes = [100, 1000, 1400];
        let mut srv = agent::udp_server(
            Place::Host,
            Some(NOBODY),
            s.host_v4(),
            5121,
            sizes.len(),
            500,
        );
        let srv_id = srv.identity();
        let (cli, cport) = agent::udp_client_paced(
            Place::In(&s.ctr),
            None,
            s.host_v4(),
            5121,
            true,
            &sizes,
            Duration::from_millis(600),
        );
        let cli_id = agent::expected(Place::In(&s.ctr), None, cli.pid);
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);

        let (client, server) = (
            SocketAddr::new(s.peer_v4(), cport),
            SocketAddr::new(s.host_v4(), 5121),
        );
        let (a, b) = (
            cap.direction(ipproto::UDP, client, server),
            cap.direction(ipproto::UDP, server, client),
        );
        assert_eq!(
            (a.payload, b.payload),
            (2500, 1500),
            "HARNESS: tcpdump payload"
        );
        let (conv, mut ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "AF_PACKET: UDP container client -> host server (nobody)",
                proto: "udp",
                client,
                server,
                ifaces: &[&s.net.host_if],
                client_end: Some(s.container_end(cli_id)),
                server_end: Some(ExpectedEndpoint::host(srv_id)),
                // /proc has no UDP role (eBPF mode sees connect/sendmsg):
                // the client is chosen by ports.
                evidence: Some("ports"),
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

/// A host that refuses eBPF (here: root without CAP_BPF, CAP_PERFMON and
/// CAP_SYS_ADMIN, as on a locked-down node) still gets flows: flowlens says
/// why it falls back, loads no program, and counts exactly with AF_PACKET.
#[test]
fn falls_back_to_afpacket_when_ebpf_is_not_allowed() {
    scenario(|u| {
        let s = Setup::new(u);
        let dump = Tcpdump::start(&s.net.host_if, s.art.path());
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
            Duration::from_millis(600),
        );
        let cli_id = agent::expected(Place::In(&s.ctr), None, cli.pid);
        srv.wait_success();
        let (cap, recs) = finish(dump, fl);
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
                evidence: Some("ports"),
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
