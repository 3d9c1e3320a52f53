//! Docker's own NAT (issue 15 §1): a private dockerd with `--iptables=true`
//! (masquerade for its containers, a published port), a client or server in
//! a network namespace routed through the host. flowlens watches the
//! container's veth, the bridge and the namespace's veth: ONE conversation,
//! counted = tcpdump on the container's veth, both ends attributed, the
//! translated address in `nat_addr`. Needs dockerd and iptables.
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_docker_nat -- --test-threads=1`

use std::net::{IpAddr, SocketAddr};

use flowlens_tests::checks::{check_conversation, ExpectedConversation};
use flowlens_tests::docker::{nc_script, Container, Dockerd, IMAGE};
use flowlens_tests::router::forwarding;
use flowlens_tests::spawn::identity_once_comm;
use flowlens_tests::{
    agent, ipproto, scenario, sleep_ms, ArtifactDir, ExpectedEndpoint, FakeContainer, Flowlens,
    Place, Tcpdump, VethNetns,
};
use serde_json::{json, Value};

const C2S: usize = 2000;
const S2C: usize = 3000;

fn nc_end(c: &Container) -> ExpectedEndpoint {
    let id = identity_once_comm(c.pid, "nc");
    ExpectedEndpoint::in_container(id, &c.id, "docker", Some(&c.name), Some(IMAGE))
}

fn nat_of(recs: &[Value], client: SocketAddr) -> Vec<&Value> {
    recs.iter()
        .filter(|l| {
            l["client"]["port"] == client.port() && l["client"]["addr"] == client.ip().to_string()
        })
        .collect()
}

#[test]
fn docker_published_port_is_one_attributed_conversation() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let d = Dockerd::start_nat(u);
        d.import_busybox(&[("data/s2c", vec![b's'; S2C])]);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        forwarding(&net.host_if, true);
        let publish = format!("{}:8080:5000", net.host_v4);
        let srv = d.run_with(
            &format!("{u}-srv"),
            &["-p", &publish],
            &nc_script("-l -p 5000", "s2c", false),
        );
        let srv_end = nc_end(&srv);
        let dump = Tcpdump::start(&srv.host_veth, art.path());
        let fl = Flowlens::start(
            art.path(),
            &[&srv.host_veth, &d.bridge, &net.host_if],
            &[("DOCKER_HOST", d.host.as_str())],
        );
        let public = IpAddr::V4(net.host_v4);
        let (mut cli, cport) =
            agent::tcp_client(Place::In(&ctr), None, public, 8080, C2S, S2C, 0, true);
        cli.expect_line("RECEIVED");
        d.wait_received(&srv.name, C2S);
        let cli_end = ExpectedEndpoint::in_container(cli.identity(), &ctr.id, "docker", None, None);
        sleep_ms(300);
        let cap = dump.stop();
        let recs = fl.stop();
        let (client, server) = (
            SocketAddr::new(IpAddr::V4(net.peer_v4), cport),
            SocketAddr::new(IpAddr::V4(srv.ip), 5000),
        );
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "Docker published port (DNAT): namespace client -> container nc",
                proto: "tcp",
                client,
                server,
                ifaces: &[&srv.host_veth, &d.bridge, &net.host_if],
                client_end: Some(cli_end),
                server_end: Some(srv_end),
                evidence: Some("socket"),
            },
        );
        ck.finish();
        for l in nat_of(&recs, client) {
            assert_eq!(
                (
                    &l["nat"],
                    &l["server"]["nat_addr"],
                    &l["server"]["nat_port"]
                ),
                (
                    &json!("dnat"),
                    &json!(net.host_v4.to_string()),
                    &json!(8080)
                ),
                "{l}"
            );
        }
        assert!(
            !recs.iter().any(|l| l["server"]["port"] == 8080),
            "the published side is reported on its own"
        );
    });
}

#[test]
fn docker_masquerade_is_one_attributed_conversation() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let d = Dockerd::start_nat(u);
        d.import_busybox(&[("data/c2s", vec![b'c'; C2S])]);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        forwarding(&net.host_if, true);
        let peer = IpAddr::V4(net.peer_v4);
        let mut srv = agent::tcp_server_opts(Place::In(&ctr), None, peer, 5002, C2S, S2C, true);
        let srv_end = ExpectedEndpoint::in_container(srv.identity(), &ctr.id, "docker", None, None);
        let cli = d.run(
            &format!("{u}-cli"),
            &nc_script(&format!("{peer} 5002"), "c2s", true),
        );
        let dump = Tcpdump::start(&cli.host_veth, art.path());
        let fl = Flowlens::start(
            art.path(),
            &[&cli.host_veth, &d.bridge, &net.host_if],
            &[("DOCKER_HOST", d.host.as_str())],
        );
        d.cli(&["exec", &cli.name, "touch", "/tmp/go"]);
        srv.expect_line("SENT");
        d.wait_received(&cli.name, S2C);
        let cli_end = nc_end(&cli);
        sleep_ms(300);
        let cap = dump.stop();
        let recs = fl.stop();
        let server = SocketAddr::new(peer, 5002);
        let peers = cap.peers_of(ipproto::TCP, server);
        assert_eq!(peers.len(), 1, "HARNESS: one client\n{}", cap.summary());
        let client = peers[0];
        assert_eq!(client.ip(), IpAddr::V4(cli.ip), "HARNESS: private side");
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "Docker masquerade (SNAT): container nc -> namespace server",
                proto: "tcp",
                client,
                server,
                ifaces: &[&cli.host_veth, &d.bridge, &net.host_if],
                client_end: Some(cli_end),
                server_end: Some(srv_end),
                evidence: Some("socket"),
            },
        );
        ck.finish();
        for l in nat_of(&recs, client) {
            assert_eq!(
                (&l["nat"], &l["client"]["nat_addr"]),
                (&json!("snat"), &json!(net.host_v4.to_string())),
                "{l}"
            );
        }
        assert!(
            !recs
                .iter()
                .any(|l| l["client"]["addr"] == net.host_v4.to_string()),
            "the masqueraded side is reported on its own"
        );
        drop(srv);
    });
}
