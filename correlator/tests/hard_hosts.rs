//! What real hosts make hard (issue 15): a conversation moving between
//! interfaces, a reused tuple, NAT, a full table.

mod common;

use common::*;
use flowlens_correlator::types::{FlowTuple, Hook, NatEvent, NatMapping, Role, TcpStateChange};
use flowlens_correlator::{ConversationRecord, ConversationTable, NatJoin, TableConfig};

const MS: u64 = 1_000_000;

/// `obs` with times in ms.
#[allow(clippy::too_many_arguments)]
fn obs_ms(
    proto: u8,
    src: Addr,
    dst: Addr,
    ifindex: u32,
    hook: Hook,
    packets: u64,
    bytes: u64,
    (first, last): (u64, u64),
) -> flowlens_correlator::types::FlowObservation {
    let mut o = obs(proto, src, dst, ifindex, hook, packets, bytes, (0, 0));
    o.first_seen_ns = first * MS;
    o.last_seen_ns = last * MS;
    o
}

fn state(cookie: u64, local: Addr, remote: Addr, old: u8, new: u8, ts: u64) -> TcpStateChange {
    TcpStateChange {
        cookie,
        local,
        remote,
        old_state: old,
        new_state: new,
        ts_ns: ts * S,
    }
}

fn pid(r: &ConversationRecord, client: bool) -> Option<u32> {
    let e = if client { &r.client } else { &r.server };
    e.process.as_ref().map(|p| p.pid)
}

#[test]
fn a_route_change_and_back_counts_every_packet() {
    // One UDP tuple: 1000 packets via veth A (if 5), 1000 via veth B (if 6)
    // after a route change, 500 via A again; reads every second.
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 9, 0, 2, 5353));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    let mut total = 0;
    t.observe_flow(&obs_ms(
        17,
        c,
        s,
        5,
        Hook::Egress,
        1000,
        100_000,
        (100, 900),
    ));
    total += only(export_at(&mut t, 1, &l)).packets_c2s;
    t.observe_flow(&obs_ms(
        17,
        c,
        s,
        6,
        Hook::Egress,
        1000,
        100_000,
        (1100, 1900),
    ));
    total += only(export_at(&mut t, 2, &l)).packets_c2s;
    t.observe_flow(&obs_ms(
        17,
        c,
        s,
        5,
        Hook::Egress,
        1500,
        150_000,
        (100, 2900),
    ));
    let r = only(export_at(&mut t, 3, &l));
    total += r.packets_c2s;
    assert_eq!(total, 2500);
    assert_eq!(r.bytes_c2s, 50_000);
    assert_eq!(t.stats().conversations_moved, 2);
}

#[test]
fn reused_tcp_tuple_is_a_new_conversation_with_its_own_owner() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 8080));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    // python3 (uid 65534) connects, talks, closes.
    t.observe_owner(owner(
        1,
        6,
        c,
        Some(s),
        Role::Client,
        process(100, "python3", 65534, None),
        1,
    ));
    t.observe_tcp_state(state(1, c, s, 2, 1, 1));
    t.observe_flow(&tcp(c, s, 6, 600, (1, 1)));
    t.observe_flow(&tcp(s, c, 5, 500, (1, 1)));
    t.observe_tcp_state(state(1, c, s, 9, 7, 1));
    let r = only(export_at(&mut t, 2, &l));
    assert_eq!(
        (pid(&r, true), r.packets_c2s, r.packets_s2c),
        (Some(100), 6, 5)
    );
    // The port is reused by root's curl: a new connection on the same tuple.
    t.observe_owner(owner(
        2,
        6,
        c,
        Some(s),
        Role::Client,
        process(200, "curl", 0, None),
        3,
    ));
    t.observe_tcp_state(state(2, c, s, 2, 1, 3));
    t.observe_flow(&tcp(c, s, 16, 1600, (1, 3)));
    t.observe_flow(&tcp(s, c, 9, 900, (1, 3)));
    let r = only(export_at(&mut t, 4, &l));
    assert_eq!(
        (pid(&r, true), r.client.process.as_ref().map(|p| p.uid)),
        (Some(200), Some(0)),
        "the new connection has its own owner"
    );
    assert_eq!((r.packets_c2s, r.packets_s2c, r.bytes_c2s), (10, 4, 1000));
    assert_eq!(r.first_seen_unix_ns, (UNIX0 + i128::from(3 * S)) as i64);
    let st = t.stats();
    assert_eq!((st.connections_reused, st.connections_unsplit), (1, 0));
}

#[test]
fn reused_udp_client_port_is_a_new_conversation() {
    let (c, s) = (v4(10, 0, 0, 1, 40001), v4(10, 0, 0, 2, 53));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_owner(owner(
        1,
        17,
        c,
        Some(s),
        Role::Client,
        process(100, "python3", 65534, None),
        1,
    ));
    t.observe_flow(&udp(c, s, 1, 60, (1, 1)));
    assert_eq!(pid(&only(export_at(&mut t, 2, &l)), true), Some(100));
    t.observe_owner(owner(
        2,
        17,
        c,
        Some(s),
        Role::Client,
        process(200, "dig", 0, None),
        3,
    ));
    t.observe_flow(&udp(c, s, 3, 180, (1, 3)));
    let r = only(export_at(&mut t, 4, &l));
    assert_eq!((pid(&r, true), r.packets_c2s), (Some(200), 2));
}

#[test]
fn two_connections_within_one_read_are_counted_as_merged() {
    let (c, s) = (v4(10, 0, 0, 1, 40002), v4(10, 0, 0, 2, 8080));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_owner(owner(
        1,
        6,
        c,
        Some(s),
        Role::Client,
        process(100, "python3", 65534, None),
        1,
    ));
    t.observe_tcp_state(state(1, c, s, 2, 1, 1));
    t.observe_tcp_state(state(1, c, s, 9, 7, 1));
    t.observe_owner(owner(
        2,
        6,
        c,
        Some(s),
        Role::Client,
        process(200, "curl", 0, None),
        2,
    ));
    t.observe_tcp_state(state(2, c, s, 2, 1, 2));
    t.observe_flow(&tcp(c, s, 12, 1200, (1, 2)));
    let r = only(export_at(&mut t, 3, &l));
    assert_eq!(pid(&r, true), Some(200));
    assert_eq!(t.stats().connections_merged, 1);
}

#[test]
fn a_full_table_evicts_early_and_keeps_reporting() {
    let cfg = TableConfig {
        max_conversations: 32,
        ..TableConfig::default()
    };
    let mut t = ConversationTable::new(cfg);
    let l = FakeLookup::standard();
    let server = v4(10, 0, 0, 2, 9);
    // A burst of 32 one-packet conversations fills the table.
    for p in 0..32 {
        t.observe_flow(&udp(v4(10, 0, 0, 1, 1000 + p), server, 1, 28, (1, 1)));
    }
    assert_eq!(export_at(&mut t, 2, &l).len(), 32);
    // New traffic in the next interval is reported, not refused.
    t.observe_flow(&tcp(
        v4(10, 0, 0, 3, 5000),
        v4(10, 0, 0, 4, 80),
        7,
        700,
        (3, 3),
    ));
    let recs = export_at(&mut t, 4, &l);
    let r = only(recs);
    assert_eq!((r.client.port, r.packets_c2s), (5000, 7));
    let st = t.stats();
    assert_eq!(
        (st.conversations_dropped, st.conversations_evicted_early),
        (0, 2)
    );
    // Within one interval too: the least recently active ones get their final
    // record early and nothing is lost.
    for p in 0..40 {
        t.observe_flow(&udp(
            v4(10, 0, 0, 5, 2000 + p),
            server,
            1,
            28,
            (5, 5 + u64::from(p)),
        ));
    }
    let recs = export_at(&mut t, 50, &l);
    assert_eq!(recs.iter().map(|r| r.packets_c2s).sum::<u64>(), 40);
    assert_eq!(t.stats().conversations_dropped, 0);
}

/// Container 172.17.0.2 behind the host's 192.168.1.10 (masquerade), talking
/// to 10.9.0.2:80; veth1 (5) is the container's side, eth0 (2) the host's.
fn snat() -> NatMapping {
    NatMapping {
        original: FlowTuple::new(6, v4(172, 17, 0, 2, 40000), v4(10, 9, 0, 2, 80)),
        reply: FlowTuple::new(6, v4(10, 9, 0, 2, 80), v4(192, 168, 1, 10, 61000)),
    }
}

#[test]
fn snat_both_sides_are_one_attributed_conversation_counted_once() {
    let mut t = ConversationTable::default();
    t.set_nat_join(NatJoin::Available);
    let l = FakeLookup::standard();
    let (ctr, srv, public) = (
        v4(172, 17, 0, 2, 40000),
        v4(10, 9, 0, 2, 80),
        v4(192, 168, 1, 10, 61000),
    );
    t.observe_owner(owner(
        1,
        6,
        ctr,
        Some(srv),
        Role::Client,
        process(100, "curl", 0, Some("/docker/abc")),
        1,
    ));
    // The server (in another namespace of this host) sees the public address.
    t.observe_owner(owner(
        2,
        6,
        srv,
        Some(public),
        Role::Server,
        process(300, "nginx", 33, None),
        1,
    ));
    t.observe_nat(NatEvent::New(snat()), S);
    t.observe_flow(&obs(6, ctr, srv, 5, Hook::Ingress, 10, 1_000, (1, 1)));
    t.observe_flow(&obs(6, srv, ctr, 5, Hook::Egress, 8, 9_000, (1, 1)));
    t.observe_flow(&obs(6, public, srv, 2, Hook::Egress, 10, 1_000, (1, 1)));
    t.observe_flow(&obs(6, srv, public, 2, Hook::Ingress, 8, 9_000, (1, 1)));
    let r = only(export_at(&mut t, 2, &l));
    assert_eq!(
        (r.client.addr.as_str(), r.client.port),
        ("172.17.0.2", 40000)
    );
    assert_eq!(
        (r.client.nat_addr.as_deref(), r.client.nat_port),
        (Some("192.168.1.10"), Some(61000))
    );
    assert_eq!(
        (r.server.nat_addr.as_deref(), r.server.nat_port),
        (None, None)
    );
    assert_eq!(r.nat.as_deref(), Some("snat"));
    assert_eq!(
        (r.packets_c2s, r.bytes_c2s, r.packets_s2c, r.bytes_s2c),
        (10, 1_000, 8, 9_000)
    );
    assert_eq!((pid(&r, true), pid(&r, false)), (Some(100), Some(300)));
    assert_eq!(r.ifaces, ["eth0", "veth1"]);
    assert_eq!(t.stats().records_nat, 1);
    assert_eq!(t.stats().records_unattributed_local, 0);
}

#[test]
fn dnat_published_port_joins_and_names_the_public_address() {
    let mut t = ConversationTable::default();
    t.set_nat_join(NatJoin::Available);
    let l = FakeLookup::standard();
    let (cli, public, ctr) = (
        v4(10, 9, 0, 2, 50000),
        v4(192, 168, 1, 10, 8080),
        v4(172, 17, 0, 2, 80),
    );
    t.observe_nat(
        NatEvent::New(NatMapping {
            original: FlowTuple::new(17, cli, public),
            reply: FlowTuple::new(17, ctr, cli),
        }),
        S,
    );
    t.observe_owner(owner(
        1,
        17,
        ctr,
        None,
        Role::Server,
        process(100, "dns", 0, Some("/docker/abc")),
        1,
    ));
    t.observe_flow(&obs(17, cli, public, 2, Hook::Ingress, 3, 300, (1, 1)));
    t.observe_flow(&obs(17, cli, ctr, 5, Hook::Egress, 3, 300, (1, 1)));
    t.observe_flow(&obs(17, ctr, cli, 5, Hook::Ingress, 3, 600, (1, 1)));
    t.observe_flow(&obs(17, public, cli, 2, Hook::Egress, 3, 600, (1, 1)));
    let r = only(export_at(&mut t, 2, &l));
    assert_eq!(
        (r.client.port, r.server.addr.as_str(), r.server.port),
        (50000, "172.17.0.2", 80)
    );
    assert_eq!(
        (
            r.server.nat_addr.as_deref(),
            r.server.nat_port,
            r.nat.as_deref()
        ),
        (Some("192.168.1.10"), Some(8080), Some("dnat"))
    );
    assert_eq!(
        (r.packets_c2s, r.bytes_c2s, r.packets_s2c, r.bytes_s2c),
        (3, 300, 3, 600)
    );
    assert_eq!(pid(&r, false), Some(100));
}

#[test]
fn without_connection_tracking_the_translated_side_is_flagged() {
    let mut t = ConversationTable::default();
    t.set_nat_join(NatJoin::Unavailable);
    let l = FakeLookup::standard();
    let (public, srv) = (v4(192, 168, 1, 10, 61000), v4(10, 9, 0, 2, 80));
    // A host socket used 192.168.1.10 before: it is a local address.
    t.observe_owner(owner(
        9,
        6,
        v4(192, 168, 1, 10, 22),
        Some(v4(10, 9, 0, 7, 50000)),
        Role::Server,
        process(1, "sshd", 0, None),
        1,
    ));
    t.observe_flow(&tcp(public, srv, 10, 1_000, (1, 1)));
    let r = only(export_at(&mut t, 4, &l));
    assert_eq!(r.nat.as_deref(), Some("unjoined"));
    assert_eq!(t.stats().records_nat_unjoined, 1);
}
