//! flowlens against real Docker containers (a private dockerd per test, its
//! own bridge), with tcpdump on a container's host-side veth as the
//! reference. flowlens gets the daemon's socket through DOCKER_HOST to
//! resolve container names and images. Needs dockerd (fails without it).
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_docker -- --test-threads=1`

use std::net::{IpAddr, SocketAddr};

use flowlens_tests::checks::{check_conversation, ExpectedConversation};
use flowlens_tests::docker::{nc_script, Container, Dockerd, IMAGE};
use flowlens_tests::spawn::identity_once_comm;
use flowlens_tests::{
    agent, ipproto, scenario, sleep_ms, ArtifactDir, ExpectedEndpoint, Flowlens, Place, Tcpdump,
    Uniq, NOBODY,
};

const C2S: usize = 2000;
const S2C: usize = 3000;

fn start_docker(u: &Uniq) -> Dockerd {
    let d = Dockerd::start(u);
    d.import_busybox(&[("data/s2c", vec![b's'; S2C]), ("data/c2s", vec![b'c'; C2S])]);
    d
}

fn start_flowlens(art: &ArtifactDir, d: &Dockerd, ifaces: &[&str]) -> Flowlens {
    Flowlens::start(art.path(), ifaces, &[("DOCKER_HOST", d.host.as_str())])
}

/// Attribution expected for a container's `nc` (its init, root inside).
fn nc_end(c: &Container) -> ExpectedEndpoint {
    let id = identity_once_comm(c.pid, "nc");
    ExpectedEndpoint::in_container(id, &c.id, "docker", Some(&c.name), Some(IMAGE))
}

#[test]
fn docker_host_client_to_container_server() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let d = start_docker(u);
        let srv = d.run(&format!("{u}-srv"), &nc_script("-l -p 5000", "s2c", false));
        let srv_end = nc_end(&srv);
        let dump = Tcpdump::start(&srv.host_veth, art.path());
        let fl = start_flowlens(&art, &d, &[&srv.host_veth, &d.bridge]);

        let ip = IpAddr::V4(srv.ip);
        let (mut cli, cport) =
            agent::tcp_client(Place::Host, Some(NOBODY), ip, 5000, C2S, S2C, 0, true);
        cli.expect_line("RECEIVED");
        d.wait_received(&srv.name, C2S);
        let cli_end = ExpectedEndpoint::host(cli.identity());
        sleep_ms(300);
        let cap = dump.stop();
        let recs = fl.stop();

        let (client, server) = (
            SocketAddr::new(IpAddr::V4(d.gateway), cport),
            SocketAddr::new(ip, 5000),
        );
        assert_eq!(
            cap.direction(ipproto::TCP, client, server).payload,
            C2S as u64,
            "HARNESS\n{}",
            cap.summary()
        );
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "Docker: host client (nobody) -> container server (nc)",
                proto: "tcp",
                client,
                server,
                // Crosses the bridge device and the veth: reported on both,
                // counted once.
                ifaces: &[&srv.host_veth, &d.bridge],
                client_end: Some(cli_end),
                server_end: Some(srv_end),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

#[test]
fn docker_container_to_container() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let d = start_docker(u);
        let srv = d.run(&format!("{u}-srv"), &nc_script("-l -p 5000", "s2c", false));
        let cli = d.run(
            &format!("{u}-cli"),
            &nc_script(&format!("{} 5000", srv.ip), "c2s", true),
        );
        let srv_end = nc_end(&srv);
        let dump = Tcpdump::start(&cli.host_veth, art.path());
        let fl = start_flowlens(&art, &d, &[&srv.host_veth, &cli.host_veth, &d.bridge]);

        d.cli(&["exec", &cli.name, "touch", "/tmp/go"]);
        d.wait_received(&srv.name, C2S);
        d.wait_received(&cli.name, S2C);
        let cli_end = nc_end(&cli);
        sleep_ms(300);
        let cap = dump.stop();
        let recs = fl.stop();

        let server = SocketAddr::new(IpAddr::V4(srv.ip), 5000);
        let peers = cap.peers_of(ipproto::TCP, server);
        assert_eq!(
            peers.len(),
            1,
            "HARNESS: one client expected\n{}",
            cap.summary()
        );
        let client = peers[0];
        assert_eq!(client.ip(), IpAddr::V4(cli.ip));
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "Docker: container client (nc) -> container server (nc) over the bridge",
                proto: "tcp",
                client,
                server,
                // Bridged between two ports: each packet crosses both veths
                // (not the bridge device's own hooks) and is counted once.
                ifaces: &[&cli.host_veth, &srv.host_veth],
                client_end: Some(cli_end),
                server_end: Some(srv_end),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}

#[test]
fn docker_container_client_to_host_server() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let d = start_docker(u);
        let gw = IpAddr::V4(d.gateway);
        let mut srv = agent::tcp_server_opts(Place::Host, Some(NOBODY), gw, 5002, C2S, S2C, true);
        let srv_end = ExpectedEndpoint::host(srv.identity());
        let cli = d.run(
            &format!("{u}-cli"),
            &nc_script(&format!("{gw} 5002"), "c2s", true),
        );
        let dump = Tcpdump::start(&cli.host_veth, art.path());
        let fl = start_flowlens(&art, &d, &[&cli.host_veth, &d.bridge]);

        d.cli(&["exec", &cli.name, "touch", "/tmp/go"]);
        srv.expect_line("SENT");
        d.wait_received(&cli.name, S2C);
        let cli_end = nc_end(&cli);
        sleep_ms(300);
        let cap = dump.stop();
        let recs = fl.stop();

        let server = SocketAddr::new(gw, 5002);
        let peers = cap.peers_of(ipproto::TCP, server);
        assert_eq!(
            peers.len(),
            1,
            "HARNESS: one client expected\n{}",
            cap.summary()
        );
        let (_, ck) = check_conversation(
            &recs,
            &cap,
            &ExpectedConversation {
                scenario: "Docker: container client (nc) -> host server (nobody)",
                proto: "tcp",
                client: peers[0],
                server,
                ifaces: &[&cli.host_veth, &d.bridge],
                client_end: Some(cli_end),
                server_end: Some(srv_end),
                evidence: Some("socket"),
            },
        );
        ck.finish();
    });
}
