//! NAT between namespaces (issue 15 §1): a client namespace routed through
//! the root namespace to a server namespace, with masquerade (SNAT) or a
//! published port (DNAT) in an nftables table of the scenario's own. flowlens
//! watches both host-side veths, which see the same packets under two tuples;
//! it must report ONE conversation, counted once (= tcpdump on the private
//! side), both ends attributed, the translated address as `nat_addr`.
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_nat -- --test-threads=1`

use std::net::{IpAddr, SocketAddr};

use flowlens_tests::checks::{check_conversation, ExpectedConversation};
use flowlens_tests::router::{NatRules, Router};
use flowlens_tests::{
    agent, ipproto, scenario, sleep_ms, ArtifactDir, ExpectedEndpoint, Flowlens, Place, Tcpdump,
};
use serde_json::{json, Value};

fn start(r: &Router, art: &ArtifactDir) -> (Tcpdump, Tcpdump, Flowlens) {
    let da = Tcpdump::start(&r.a.host_if, art.path());
    let db = Tcpdump::start(&r.b.host_if, art.path());
    let fl = Flowlens::start(art.path(), &[&r.a.host_if, &r.b.host_if], &[]);
    (da, db, fl)
}

/// The records of `client -> server` carry `nat` and the translated end's `nat_addr`/`nat_port`.
fn check_nat(
    recs: &[Value],
    proto: &str,
    client: SocketAddr,
    server: SocketAddr,
    kind: &str,
    side: &str,
    seen_as: SocketAddr,
) {
    let lines: Vec<&Value> = recs
        .iter()
        .filter(|l| {
            l["proto"] == proto
                && l["client"]["addr"] == client.ip().to_string()
                && l["client"]["port"] == client.port()
                && l["server"]["addr"] == server.ip().to_string()
                && l["server"]["port"] == server.port()
        })
        .collect();
    assert!(!lines.is_empty(), "no record of {client} -> {server}");
    for l in &lines {
        assert_eq!(l["nat"], json!(kind), "{l}");
        assert_eq!(l[side]["nat_addr"], json!(seen_as.ip().to_string()), "{l}");
        assert_eq!(l[side]["nat_port"], json!(seen_as.port()), "{l}");
        let other = if side == "client" { "server" } else { "client" };
        assert_eq!(l[other]["nat_addr"], Value::Null, "{l}");
    }
    // No second conversation with the translated tuple.
    let translated = recs.iter().filter(|l| {
        l["proto"] == proto
            && ["client", "server"]
                .iter()
                .any(|s| l[s]["addr"] == seen_as.ip().to_string() && l[s]["port"] == seen_as.port())
    });
    assert_eq!(
        translated.count(),
        0,
        "the translated side is reported on its own"
    );
}

fn masquerade(proto: u8) {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let r = Router::new(u);
        let nat = NatRules::new(u);
        nat.masquerade(&r.b.host_if);
        let (da, db, fl) = start(&r, &art);
        let server_ip = IpAddr::V4(r.b.peer_v4);
        let (client, srv_id, cli_id, name) = if proto == ipproto::TCP {
            let mut srv =
                agent::tcp_server(Place::In(&r.ctr_b), None, server_ip, 8000, 30_000, 70_000);
            let srv_id = srv.identity();
            let (mut cli, cport) = agent::tcp_client(
                Place::In(&r.ctr_a),
                None,
                server_ip,
                8000,
                30_000,
                70_000,
                0,
                false,
            );
            let cli_id = agent::expected(Place::In(&r.ctr_a), None, cli.pid);
            cli.wait_success();
            srv.wait_success();
            (
                SocketAddr::new(IpAddr::V4(r.a.peer_v4), cport),
                srv_id,
                cli_id,
                "tcp",
            )
        } else {
            let mut srv = agent::udp_server(Place::In(&r.ctr_b), None, server_ip, 8000, 3, 900);
            let srv_id = srv.identity();
            let (cli, cport) = agent::udp_client(
                Place::In(&r.ctr_a),
                None,
                server_ip,
                8000,
                false,
                &[100, 1000, 1400],
            );
            let cli_id = agent::expected(Place::In(&r.ctr_a), None, cli.pid);
            srv.wait_success();
            (
                SocketAddr::new(IpAddr::V4(r.a.peer_v4), cport),
                srv_id,
                cli_id,
                "udp",
            )
        };
        sleep_ms(300);
        let (cap_a, cap_b) = (da.stop(), db.stop());
        let recs = fl.stop();
        let server = SocketAddr::new(server_ip, 8000);
        // The translated client, as the server side's capture shows it.
        let public = cap_b.peers_of(proto, server);
        assert_eq!(
            public.len(),
            1,
            "HARNESS: one translated client\n{}",
            cap_b.summary()
        );
        assert_eq!(
            public[0].ip(),
            IpAddr::V4(r.b.host_v4),
            "HARNESS: not masqueraded"
        );
        let (_, ck) = check_conversation(
            &recs,
            &cap_a,
            &ExpectedConversation {
                scenario: &format!("{name} through masquerade (SNAT)"),
                proto: name,
                client,
                server,
                ifaces: &[&r.a.host_if, &r.b.host_if],
                client_end: Some(ExpectedEndpoint::in_container(
                    cli_id,
                    &r.ctr_a.id,
                    "docker",
                    None,
                    None,
                )),
                server_end: Some(ExpectedEndpoint::in_container(
                    srv_id,
                    &r.ctr_b.id,
                    "docker",
                    None,
                    None,
                )),
                evidence: Some("socket"),
            },
        );
        ck.finish();
        check_nat(&recs, name, client, server, "snat", "client", public[0]);
        drop(nat);
    });
}

fn published_port(proto: u8) {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let r = Router::new(u);
        let nat = NatRules::new(u);
        let pname = if proto == ipproto::TCP { "tcp" } else { "udp" };
        let to = format!("{}:80", r.b.peer_v4);
        nat.publish(&r.a.host_if, pname, &r.a.host_v4.to_string(), 8080, &to);
        let (da, db, fl) = start(&r, &art);
        let (server_ip, public_ip) = (IpAddr::V4(r.b.peer_v4), IpAddr::V4(r.a.host_v4));
        let (client, srv_id, cli_id) = if proto == ipproto::TCP {
            let mut srv =
                agent::tcp_server(Place::In(&r.ctr_b), None, server_ip, 80, 20_000, 50_000);
            let srv_id = srv.identity();
            let (mut cli, cport) = agent::tcp_client(
                Place::In(&r.ctr_a),
                None,
                public_ip,
                8080,
                20_000,
                50_000,
                0,
                false,
            );
            let cli_id = agent::expected(Place::In(&r.ctr_a), None, cli.pid);
            cli.wait_success();
            srv.wait_success();
            (
                SocketAddr::new(IpAddr::V4(r.a.peer_v4), cport),
                srv_id,
                cli_id,
            )
        } else {
            let mut srv = agent::udp_server(Place::In(&r.ctr_b), None, server_ip, 80, 3, 700);
            let srv_id = srv.identity();
            let (cli, cport) = agent::udp_client(
                Place::In(&r.ctr_a),
                None,
                public_ip,
                8080,
                true,
                &[200, 300, 400],
            );
            let cli_id = agent::expected(Place::In(&r.ctr_a), None, cli.pid);
            srv.wait_success();
            (
                SocketAddr::new(IpAddr::V4(r.a.peer_v4), cport),
                srv_id,
                cli_id,
            )
        };
        sleep_ms(300);
        let (_cap_a, cap_b) = (da.stop(), db.stop());
        let recs = fl.stop();
        let server = SocketAddr::new(server_ip, 80);
        let (_, ck) = check_conversation(
            &recs,
            &cap_b,
            &ExpectedConversation {
                scenario: &format!("{pname} to a published port (DNAT)"),
                proto: pname,
                client,
                server,
                ifaces: &[&r.a.host_if, &r.b.host_if],
                client_end: Some(ExpectedEndpoint::in_container(
                    cli_id,
                    &r.ctr_a.id,
                    "docker",
                    None,
                    None,
                )),
                server_end: Some(ExpectedEndpoint::in_container(
                    srv_id,
                    &r.ctr_b.id,
                    "docker",
                    None,
                    None,
                )),
                evidence: Some("socket"),
            },
        );
        ck.finish();
        check_nat(
            &recs,
            pname,
            client,
            server,
            "dnat",
            "server",
            SocketAddr::new(public_ip, 8080),
        );
        drop(nat);
    });
}

#[test]
fn tcp_through_masquerade_is_one_attributed_conversation() {
    masquerade(ipproto::TCP);
}

#[test]
fn udp_through_masquerade_is_one_attributed_conversation() {
    masquerade(ipproto::UDP);
}

#[test]
fn tcp_to_a_published_port_is_one_attributed_conversation() {
    published_port(ipproto::TCP);
}

#[test]
fn udp_to_a_published_port_is_one_attributed_conversation() {
    published_port(ipproto::UDP);
}
