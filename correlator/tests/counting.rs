//! Counting, direction and lifecycle of conversations.

mod common;

use std::net::{IpAddr, Ipv6Addr};

use common::*;
use flowlens_correlator::types::{FlowTuple, Hook, Role};
use flowlens_correlator::{ConversationTable, TableConfig};

const CLIENT: fn() -> Addr = || v4(10, 0, 0, 1, 40000);
const SERVER: fn() -> Addr = || v4(93, 184, 216, 34, 443);

#[test]
fn both_directions_merge_into_one_record() {
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_flow(&tcp(CLIENT(), SERVER(), 10, 1_000, (1, 2)));
    t.observe_flow(&tcp(SERVER(), CLIENT(), 5, 7_000, (1, 3)));
    let r = only(export_at(&mut t, 5, &l));
    assert_eq!((r.client.addr.as_str(), r.client.port), ("10.0.0.1", 40000));
    assert_eq!(
        (r.server.addr.as_str(), r.server.port),
        ("93.184.216.34", 443)
    );
    assert_eq!(
        (r.packets_c2s, r.bytes_c2s, r.packets_s2c, r.bytes_s2c),
        (10, 1_000, 5, 7_000)
    );
    assert_eq!(r.ifaces, ["eth0"]);
    assert_eq!(r.proto, "tcp");
    assert_eq!(r.first_seen_unix_ns, (UNIX0 + i128::from(S)) as i64);
    assert_eq!(r.last_seen_unix_ns, (UNIX0 + i128::from(3 * S)) as i64);
    assert_eq!(r.duration_ms, 2_000);
    assert_eq!(t.stats().conversations_active, 1);
}

#[test]
fn client_rule_a_socket_role_wins() {
    // Handshake says B is the client, ports say B (40000 vs 80) is the client,
    // the socket hook on A says A connected.
    let (a, b) = (v4(10, 0, 0, 1, 80), v4(10, 0, 0, 2, 40000));
    let mut t = ConversationTable::default();
    let mut syn = tcp(b, a, 1, 60, (1, 1));
    syn.initiator = true;
    t.observe_flow(&syn);
    t.observe_owner(owner(
        1,
        6,
        a,
        Some(b),
        Role::Client,
        process(7, "curl", 0, None),
        1,
    ));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!((r.client.port, r.client_evidence.as_str()), (80, "socket"));
    // c2s is what A sent: nothing; s2c the SYN.
    assert_eq!((r.packets_c2s, r.packets_s2c), (0, 1));
}

#[test]
fn client_rule_a_server_role_on_the_other_side() {
    let (a, b) = (v4(10, 0, 0, 1, 80), v4(10, 0, 0, 2, 40000));
    let mut t = ConversationTable::default();
    t.observe_flow(&tcp(a, b, 1, 60, (1, 1)));
    t.observe_owner(owner(
        1,
        6,
        b,
        Some(a),
        Role::Server,
        process(7, "srv", 0, None),
        1,
    ));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(
        (r.client.port, r.server.port, r.client_evidence.as_str()),
        (80, 40000, "socket")
    );
}

#[test]
fn client_rule_b_handshake_beats_ports() {
    // B has the lower port but sent the SYN.
    let (a, b) = (v4(10, 0, 0, 1, 5000), v4(10, 0, 0, 2, 80));
    let mut t = ConversationTable::default();
    let mut syn = tcp(b, a, 1, 60, (1, 1));
    syn.initiator = true;
    t.observe_flow(&syn);
    t.observe_flow(&tcp(a, b, 1, 60, (1, 1)));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(
        (r.client.port, r.client_evidence.as_str()),
        (80, "handshake")
    );
}

#[test]
fn client_rule_b_responder_is_the_server() {
    let (a, b) = (v4(10, 0, 0, 1, 5000), v4(10, 0, 0, 2, 80));
    let mut t = ConversationTable::default();
    let mut synack = tcp(a, b, 1, 60, (1, 1));
    synack.responder = true;
    t.observe_flow(&synack);
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(
        (r.server.port, r.client_evidence.as_str()),
        (5000, "handshake")
    );
}

#[test]
fn client_rule_c_ports_then_addresses() {
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_flow(&udp(
        v4(10, 0, 0, 9, 53),
        v4(10, 0, 0, 1, 33000),
        1,
        100,
        (1, 1),
    ));
    let r = only(export_at(&mut t, 2, &l));
    assert_eq!((r.server.port, r.client_evidence.as_str()), (53, "ports"));
    // Equal ports: the lower address serves.
    t.observe_flow(&udp(
        v4(10, 0, 0, 1, 4789),
        v4(10, 0, 0, 9, 4789),
        1,
        100,
        (3, 3),
    ));
    let r = only(export_at(&mut t, 4, &l));
    assert_eq!(
        (r.server.addr.as_str(), r.client.addr.as_str()),
        ("10.0.0.1", "10.0.0.9")
    );
}

#[test]
fn decision_is_revisited_until_proven_then_kept() {
    let (a, b) = (v4(10, 0, 0, 1, 5000), v4(10, 0, 0, 2, 6000));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_flow(&udp(a, b, 1, 100, (1, 1)));
    let r = only(export_at(&mut t, 2, &l));
    assert_eq!((r.client.port, r.client_evidence.as_str()), (6000, "ports"));
    // Evidence arrives later: the hook on A says A is the client.
    t.observe_owner(owner(
        1,
        17,
        a,
        Some(b),
        Role::Client,
        process(7, "app", 0, None),
        2,
    ));
    t.observe_flow(&udp(a, b, 2, 200, (1, 3)));
    let r = only(export_at(&mut t, 4, &l));
    assert_eq!(
        (r.client.port, r.client_evidence.as_str()),
        (5000, "socket")
    );
    // Contradicting handshake evidence later does not flip a proven decision.
    let mut late = udp(b, a, 1, 100, (5, 5));
    late.initiator = true;
    t.observe_flow(&late);
    let r = only(export_at(&mut t, 6, &l));
    assert_eq!((r.client.port, r.packets_s2c), (5000, 1));
}

#[test]
fn cumulative_counters_become_deltas_that_sum_to_the_total() {
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    let mut sum = (0, 0);
    for (now, (p, b)) in [(10, (10, 1_000)), (20, (25, 2_500)), (30, (40, 4_000))] {
        t.observe_flow(&tcp(CLIENT(), SERVER(), p, b, (1, now - 1)));
        // A second read in the same interval changes nothing.
        t.observe_flow(&tcp(CLIENT(), SERVER(), p, b, (1, now - 1)));
        let r = only(export_at(&mut t, now, &l));
        sum = (sum.0 + r.packets_c2s, sum.1 + r.bytes_c2s);
    }
    assert_eq!(sum, (40, 4_000));
    // No new packets: no record.
    t.observe_flow(&tcp(CLIENT(), SERVER(), 40, 4_000, (1, 29)));
    assert!(export_at(&mut t, 40, &l).is_empty());
    assert_eq!(t.stats().records_exported, 3);
}

#[test]
fn recreated_entry_counts_from_zero() {
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_flow(&tcp(CLIENT(), SERVER(), 100, 10_000, (1, 9)));
    assert_eq!(only(export_at(&mut t, 10, &l)).packets_c2s, 100);
    // The kernel entry was deleted and recreated: the counter went down.
    t.observe_flow(&tcp(CLIENT(), SERVER(), 30, 3_000, (15, 19)));
    let r = only(export_at(&mut t, 20, &l));
    assert_eq!((r.packets_c2s, r.bytes_c2s), (30, 3_000));
}

#[test]
fn packets_seen_on_several_interfaces_count_once() {
    // Container 172.17.0.2 -> 1.1.1.1: veth1 ingress, docker0 egress... each sees all packets.
    let (c, s) = (v4(172, 17, 0, 2, 40000), v4(1, 1, 1, 1, 443));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_flow(&obs(6, c, s, 5, Hook::Ingress, 10, 1_000, (1, 9)));
    // docker0's entry was read a little before its last packets arrived.
    t.observe_flow(&obs(6, c, s, 3, Hook::Egress, 8, 800, (1, 9)));
    let r = only(export_at(&mut t, 10, &l));
    assert_eq!((r.packets_c2s, r.bytes_c2s), (10, 1_000));
    assert_eq!(r.ifaces, ["docker0", "veth1"]);
    t.observe_flow(&obs(6, c, s, 5, Hook::Ingress, 20, 2_000, (1, 19)));
    t.observe_flow(&obs(6, c, s, 3, Hook::Egress, 20, 2_000, (1, 19)));
    t.observe_flow(&obs(6, c, s, 2, Hook::Egress, 10, 1_000, (11, 19)));
    let r = only(export_at(&mut t, 20, &l));
    // Total 20, not 10 + 12 (per-interval max) nor a sum over hooks.
    assert_eq!((r.packets_c2s, r.bytes_c2s), (10, 1_000));
    assert_eq!(r.ifaces, ["eth0", "docker0", "veth1"]);
}

#[test]
fn loopback_egress_and_ingress_count_once() {
    let (c, s) = (v4(127, 0, 0, 1, 50000), v4(127, 0, 0, 1, 8080));
    let mut t = ConversationTable::default();
    for hook in [Hook::Egress, Hook::Ingress] {
        t.observe_flow(&obs(6, c, s, 1, hook, 4, 400, (1, 2)));
        t.observe_flow(&obs(6, s, c, 1, hook, 3, 900, (1, 2)));
    }
    let r = only(export_at(&mut t, 5, &FakeLookup::standard()));
    assert_eq!(
        (r.packets_c2s, r.bytes_c2s, r.packets_s2c, r.bytes_s2c),
        (4, 400, 3, 900)
    );
    assert_eq!(r.ifaces, ["lo"]);
}

#[test]
fn idle_conversations_are_evicted_with_their_kernel_entries() {
    let cfg = TableConfig {
        idle_timeout_ns: 60 * S,
        ..TableConfig::default()
    };
    let mut t = ConversationTable::new(cfg);
    let l = FakeLookup::standard();
    t.observe_flow(&tcp(CLIENT(), SERVER(), 3, 300, (1, 10)));
    t.observe_flow(&obs(
        6,
        SERVER(),
        CLIENT(),
        2,
        Hook::Ingress,
        2,
        200,
        (1, 10),
    ));
    assert_eq!(export_at(&mut t, 15, &l).len(), 1);
    assert!(export_at(&mut t, 70, &l).is_empty());
    assert!(
        t.take_evicted_flows().is_empty(),
        "idle for exactly the timeout: kept"
    );
    assert!(export_at(&mut t, 71, &l).is_empty());
    let mut evicted = t.take_evicted_flows();
    evicted.sort();
    let mut want = vec![
        (FlowTuple::new(6, CLIENT(), SERVER()), 2, Hook::Egress),
        (FlowTuple::new(6, SERVER(), CLIENT()), 2, Hook::Ingress),
    ];
    want.sort();
    assert_eq!(evicted, want);
    assert!(t.take_evicted_flows().is_empty());
    assert_eq!(
        (
            t.stats().conversations_evicted,
            t.stats().conversations_active
        ),
        (1, 0)
    );
    // A read racing the delete must not count the packets again.
    t.observe_flow(&tcp(CLIENT(), SERVER(), 3, 300, (1, 10)));
    assert!(export_at(&mut t, 72, &l).is_empty());
    assert_eq!(t.stats().flows_stale, 1);
    assert_eq!(t.take_evicted_flows().len(), 1);
}

#[test]
fn conversation_cap_evicts_early_then_drops_and_counts() {
    let cfg = TableConfig {
        max_conversations: 2,
        ..TableConfig::default()
    };
    let mut t = ConversationTable::new(cfg);
    let l = FakeLookup::standard();
    t.observe_flow(&tcp(v4(10, 0, 0, 1, 1001), SERVER(), 1, 100, (1, 1)));
    t.observe_flow(&tcp(v4(10, 0, 0, 1, 1002), SERVER(), 1, 100, (1, 2)));
    // Full: the least recently active (1001) makes room, its record comes at the export.
    t.observe_flow(&tcp(v4(10, 0, 0, 1, 1003), SERVER(), 3, 300, (1, 3)));
    t.observe_flow(&tcp(v4(10, 0, 0, 1, 1004), SERVER(), 4, 400, (1, 4)));
    // As many wait for their record as the table holds: now nothing can make room.
    let fifth = tcp(v4(10, 0, 0, 1, 1005), SERVER(), 7, 700, (1, 5));
    t.observe_flow(&fifth);
    // Known conversations still count.
    t.observe_flow(&tcp(SERVER(), v4(10, 0, 0, 1, 1004), 2, 200, (1, 4)));
    let s = t.stats();
    assert_eq!(
        (
            s.conversations_active,
            s.conversations_evicted_early,
            s.conversations_dropped
        ),
        (2, 2, 1)
    );
    assert_eq!((s.packets_dropped, s.bytes_dropped), (7, 700));
    // The refused and the evicted kernel entries are handed back for deletion
    // so they are not counted twice.
    let evicted = t.take_evicted_flows();
    assert_eq!(evicted.len(), 3);
    assert!(evicted.contains(&(fifth.tuple, fifth.ifindex, fifth.hook)));
    let recs = export_at(&mut t, 6, &l);
    let mut ports: Vec<u16> = recs.iter().map(|r| r.client.port).collect();
    ports.sort_unstable();
    assert_eq!(ports, [1001, 1002, 1003, 1004]);
    assert_eq!(recs.iter().map(|r| r.packets_c2s).sum::<u64>(), 9);
}

#[test]
fn socket_cap_drops_and_counts() {
    let cfg = TableConfig {
        max_sockets: 1,
        ..TableConfig::default()
    };
    let mut t = ConversationTable::new(cfg);
    let p = process(7, "app", 0, None);
    t.observe_owner(owner(
        1,
        17,
        v4(0, 0, 0, 0, 53),
        None,
        Role::Unknown,
        p.clone(),
        1,
    ));
    t.observe_owner(owner(
        2,
        17,
        v4(0, 0, 0, 0, 54),
        None,
        Role::Unknown,
        p.clone(),
        1,
    ));
    // An update of a tracked socket is not a new socket.
    t.observe_owner(owner(1, 17, v4(0, 0, 0, 0, 53), None, Role::Server, p, 2));
    assert_eq!(
        (t.stats().sockets_tracked, t.stats().sockets_dropped),
        (1, 1)
    );
}

#[test]
fn icmp_echo_uses_the_identifier_as_port() {
    let (c, s) = (v4(10, 0, 0, 1, 0x1234), v4(8, 8, 8, 8, 0x1234));
    let mut t = ConversationTable::default();
    let mut req = obs(1, c, s, 2, Hook::Egress, 3, 252, (1, 3));
    req.initiator = true;
    let mut rep = obs(1, s, c, 2, Hook::Ingress, 3, 252, (1, 3));
    rep.responder = true;
    t.observe_flow(&rep);
    t.observe_flow(&req);
    let r = only(export_at(&mut t, 5, &FakeLookup::standard()));
    assert_eq!(
        (r.proto.as_str(), r.client_evidence.as_str()),
        ("icmp", "handshake")
    );
    assert_eq!(
        (r.client.addr.as_str(), r.client.port, r.server.port),
        ("10.0.0.1", 0x1234, 0x1234)
    );
    assert_eq!(
        (r.packets_c2s, r.packets_s2c, r.tcp_flags_text.as_str()),
        (3, 3, "")
    );
}

#[test]
fn icmpv6_and_other_protocols_are_named() {
    let v6 = |last: u16| {
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
            0,
        )
    };
    let mut t = ConversationTable::default();
    t.observe_flow(&obs(58, v6(1), v6(2), 2, Hook::Egress, 1, 104, (1, 1)));
    t.observe_flow(&obs(
        47,
        v4(10, 0, 0, 1, 0),
        v4(10, 0, 0, 2, 0),
        2,
        Hook::Egress,
        1,
        100,
        (1, 1),
    ));
    let mut protos: Vec<String> = export_at(&mut t, 2, &FakeLookup::standard())
        .into_iter()
        .map(|r| r.proto)
        .collect();
    protos.sort();
    assert_eq!(protos, ["47", "icmpv6"]);
}

#[test]
fn ipv4_mapped_addresses_merge_with_ipv4() {
    let mapped = |a: Addr| match a.0 {
        IpAddr::V4(v4) => (IpAddr::V6(v4.to_ipv6_mapped()), a.1),
        v6 => (v6, a.1),
    };
    let mut t = ConversationTable::default();
    let mut o = tcp(CLIENT(), SERVER(), 1, 100, (1, 1));
    // Bypass the normalising constructor, as a careless reader would.
    o.tuple = FlowTuple {
        src: mapped(CLIENT()).0,
        dst: mapped(SERVER()).0,
        ..o.tuple
    };
    t.observe_flow(&o);
    t.observe_flow(&tcp(SERVER(), CLIENT(), 1, 100, (1, 1)));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(
        (r.client.addr.as_str(), r.server.addr.as_str()),
        ("10.0.0.1", "93.184.216.34")
    );
    assert_eq!((r.packets_c2s, r.packets_s2c), (1, 1));
    assert_eq!(
        FlowTuple::new(6, mapped(CLIENT()), SERVER()),
        FlowTuple::new(6, CLIENT(), SERVER())
    );
}

#[test]
fn tcp_flags_are_ored_over_the_conversation() {
    let mut t = ConversationTable::default();
    let mut a = tcp(CLIENT(), SERVER(), 3, 180, (1, 2));
    a.tcp_flags = 0x02 | 0x10 | 0x01;
    let mut b = tcp(SERVER(), CLIENT(), 2, 120, (1, 2));
    b.tcp_flags = 0x12 | 0x04;
    t.observe_flow(&a);
    t.observe_flow(&b);
    let r = only(export_at(&mut t, 3, &FakeLookup::standard()));
    assert_eq!(
        (r.tcp_flags, r.tcp_flags_text.as_str()),
        (0x17, "SYN|ACK|FIN|RST")
    );
}
