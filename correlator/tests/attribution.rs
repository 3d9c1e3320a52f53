//! Joining conversations with socket owners, processes and containers.

mod common;

use std::net::{IpAddr, Ipv6Addr};

use common::*;
use flowlens_correlator::types::{ContainerMeta, Role, TcpStateChange};
use flowlens_correlator::{ConversationTable, TableConfig};

const CTR: &str = "4a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef";

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

#[test]
fn owner_joins_by_full_tuple() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(93, 184, 216, 34, 443));
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        9,
        6,
        c,
        Some(s),
        Role::Client,
        process(42, "curl", 1000, None),
        1,
    ));
    t.observe_flow(&tcp(c, s, 5, 500, (1, 2)));
    let r = only(export_at(&mut t, 3, &FakeLookup::standard()));
    let p = r.client.process.as_ref().expect("client attributed");
    assert!(r.client.local);
    assert_eq!(
        (p.pid, p.comm.as_str(), p.user.as_deref()),
        (42, "curl", Some("alice"))
    );
    assert_eq!(
        (p.container_runtime.as_str(), p.container_id.as_deref()),
        ("host", None)
    );
    assert!(!r.server.local && r.server.process.is_none());
    assert_eq!(r.client_evidence, "socket");
}

#[test]
fn unconnected_udp_joins_by_local_half_and_wildcard() {
    let dns = v4(10, 0, 0, 1, 53);
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    // A DNS server bound to 0.0.0.0:53, an NTP client bound to 10.0.0.1:123.
    t.observe_owner(owner(
        1,
        17,
        v4(0, 0, 0, 0, 53),
        None,
        Role::Unknown,
        process(5, "named", 0, None),
        1,
    ));
    t.observe_owner(owner(
        2,
        17,
        v4(10, 0, 0, 1, 123),
        None,
        Role::Unknown,
        process(6, "ntpd", 0, None),
        1,
    ));
    t.observe_flow(&udp(v4(10, 0, 0, 7, 33333), dns, 1, 80, (1, 1)));
    t.observe_flow(&udp(
        v4(10, 0, 0, 1, 123),
        v4(1, 2, 3, 4, 123),
        1,
        90,
        (1, 1),
    ));
    let mut rs = export_at(&mut t, 2, &l);
    rs.sort_by_key(|r| r.server.port);
    let comm = |e: &flowlens_correlator::Endpoint| e.process.as_ref().map(|p| p.comm.clone());
    assert_eq!(
        (comm(&rs[0].server), rs[0].server.port),
        (Some("named".into()), 53)
    );
    assert_eq!(comm(&rs[0].client), None);
    // Equal ports: 1.2.3.4 (lower address) serves; the ntpd end is attributed either way.
    assert_eq!(comm(&rs[1].client), Some("ntpd".into()));
}

#[test]
fn dual_stack_wildcard_receives_ipv4() {
    let any6 = (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8053);
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        1,
        17,
        any6,
        None,
        Role::Server,
        process(5, "dnsd", 0, None),
        1,
    ));
    t.observe_flow(&udp(
        v4(10, 0, 0, 7, 40000),
        v4(10, 0, 0, 1, 8053),
        1,
        80,
        (1, 1),
    ));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(r.server.process.map(|p| p.comm), Some("dnsd".into()));
}

#[test]
fn connect_before_bind_is_completed_by_the_state_change() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 8080));
    let mut t = ConversationTable::default();
    // connect(): port not bound yet, role unknown to the hook.
    t.observe_owner(owner(
        9,
        6,
        v4(0, 0, 0, 0, 0),
        Some(s),
        Role::Unknown,
        process(42, "curl", 1000, None),
        1,
    ));
    // CLOSE -> SYN_SENT before the port is chosen, then SYN_SENT -> ESTABLISHED in softirq context.
    t.observe_tcp_state(state(9, v4(0, 0, 0, 0, 0), s, 7, 2, 1));
    t.observe_tcp_state(state(9, c, s, 2, 1, 1));
    t.observe_flow(&tcp(s, c, 1, 60, (1, 1)));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(
        r.client.process.as_ref().map(|p| (p.pid, p.comm.as_str())),
        Some((42, "curl"))
    );
    assert_eq!(
        (r.client.port, r.client_evidence.as_str()),
        (40000, "socket")
    );
}

#[test]
fn state_change_before_owner_event_is_kept_briefly() {
    let (c, s) = (v4(10, 0, 0, 2, 8080), v4(10, 0, 0, 1, 40000));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    // Accepted socket: SYN_RECV -> ESTABLISHED on another CPU, before the accept() event.
    t.observe_tcp_state(state(9, c, s, 3, 1, 1));
    assert_eq!(t.stats().state_changes_pending, 1);
    t.observe_owner(owner(
        9,
        6,
        v4(0, 0, 0, 0, 0),
        None,
        Role::Unknown,
        process(80, "nginx", 33, None),
        1,
    ));
    assert_eq!(t.stats().state_changes_pending, 0);
    t.observe_flow(&tcp(s, c, 1, 60, (1, 1)));
    let r = only(export_at(&mut t, 2, &l));
    assert_eq!(
        r.server.process.as_ref().map(|p| p.comm.as_str()),
        Some("nginx")
    );
    assert_eq!(r.client_evidence, "socket");
    // One that never meets its owner expires and is counted.
    t.observe_tcp_state(state(10, c, v4(10, 0, 0, 3, 1), 3, 1, 2));
    export_at(&mut t, 30, &l);
    assert_eq!(
        (
            t.stats().state_changes_pending,
            t.stats().state_changes_expired
        ),
        (0, 1)
    );
}

#[test]
fn state_change_in_another_context_never_changes_the_process() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 443));
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        9,
        6,
        c,
        Some(s),
        Role::Client,
        process(42, "curl", 1000, None),
        1,
    ));
    // Runs in whichever process took the softirq; carries no identity to overwrite.
    t.observe_tcp_state(state(9, c, s, 1, 7, 2));
    t.observe_flow(&tcp(c, s, 1, 60, (1, 2)));
    let r = only(export_at(&mut t, 3, &FakeLookup::standard()));
    assert_eq!(r.client.process.map(|p| p.pid), Some(42));
}

#[test]
fn owner_outlives_process_exit_and_owner_eviction() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 443));
    let cfg = TableConfig {
        owner_grace_ns: 5 * S,
        ..TableConfig::default()
    };
    let mut t = ConversationTable::new(cfg);
    let l = FakeLookup::standard();
    // The exe comes from the exec event: the process is gone before the owner is enriched.
    t.observe_exec(42, "/usr/bin/short-lived".into());
    let mut p = process(42, "short", 1000, None);
    p.exe = None;
    t.observe_owner(owner(9, 6, c, Some(s), Role::Client, p, 1));
    t.observe_exit(42, 2 * S);
    t.observe_flow(&tcp(c, s, 1, 60, (1, 2)));
    assert_eq!(
        only(export_at(&mut t, 3, &l))
            .client
            .process
            .and_then(|p| p.exe)
            .as_deref(),
        Some("/usr/bin/short-lived")
    );
    // Quiet interval: nothing references the owner, it is evicted.
    assert!(export_at(&mut t, 20, &l).is_empty());
    assert_eq!(
        (t.stats().sockets_tracked, t.stats().owners_evicted),
        (0, 1)
    );
    // The conversation goes on and keeps its owner.
    t.observe_flow(&tcp(c, s, 2, 120, (1, 25)));
    let r = only(export_at(&mut t, 30, &l));
    let p = r.client.process.expect("still attributed");
    assert_eq!(
        (p.pid, p.exe.as_deref(), r.client_evidence.as_str()),
        (42, Some("/usr/bin/short-lived"), "socket")
    );
}

#[test]
fn exe_of_a_reused_pid_is_not_borrowed() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 443));
    let mut t = ConversationTable::default();
    t.observe_exec(42, "/usr/bin/old".into());
    t.observe_exit(42, S);
    let mut p = process(42, "new", 0, None);
    p.exe = None;
    t.observe_owner(owner(9, 6, c, Some(s), Role::Client, p, 2));
    t.observe_flow(&tcp(c, s, 1, 60, (2, 2)));
    let r = only(export_at(&mut t, 3, &FakeLookup::standard()));
    assert_eq!(r.client.process.map(|p| p.exe), Some(None));
}

#[test]
fn both_ends_local_host_client_container_server() {
    let (c, s) = (v4(172, 17, 0, 1, 50000), v4(172, 17, 0, 2, 80));
    let mut l = FakeLookup::standard();
    let meta = ContainerMeta {
        name: Some("web".into()),
        image: Some("nginx:1.25".into()),
    };
    l.containers.insert(("docker".into(), CTR.into()), meta);
    let mut t = ConversationTable::default();
    let host_proc = process(
        42,
        "curl",
        1000,
        Some("/user.slice/user-1000.slice/session-2.scope"),
    );
    let ctr_cgroup = format!("/system.slice/docker-{CTR}.scope");
    let ctr_proc = process(4242, "nginx", 33, Some(&ctr_cgroup));
    t.observe_owner(owner(1, 6, c, Some(s), Role::Unknown, host_proc, 1));
    t.observe_owner(owner(2, 6, s, Some(c), Role::Server, ctr_proc, 1));
    t.observe_flow(&obs(
        6,
        c,
        s,
        3,
        flowlens_correlator::types::Hook::Egress,
        5,
        500,
        (1, 2),
    ));
    t.observe_flow(&obs(
        6,
        s,
        c,
        5,
        flowlens_correlator::types::Hook::Ingress,
        4,
        4_000,
        (1, 2),
    ));
    let r = only(export_at(&mut t, 3, &l));
    let (cp, sp) = (
        r.client.process.expect("client"),
        r.server.process.expect("server"),
    );
    assert_eq!(
        (
            cp.comm.as_str(),
            cp.container_runtime.as_str(),
            cp.container_id.as_deref()
        ),
        ("curl", "host", None)
    );
    assert_eq!(
        (sp.comm.as_str(), sp.user.as_deref()),
        ("nginx", Some("www-data"))
    );
    assert_eq!(
        (sp.container_runtime.as_str(), sp.container_id.as_deref()),
        ("docker", Some(CTR))
    );
    assert_eq!(
        (sp.container_name.as_deref(), sp.container_image.as_deref()),
        (Some("web"), Some("nginx:1.25"))
    );
    assert_eq!((r.packets_c2s, r.bytes_s2c), (5, 4_000));
    assert_eq!(r.ifaces, ["docker0", "veth1"]);
}

#[test]
fn loopback_attributes_each_end() {
    let (c, s) = (v4(127, 0, 0, 1, 50000), v4(127, 0, 0, 1, 5432));
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        1,
        6,
        c,
        Some(s),
        Role::Client,
        process(10, "psql", 1000, None),
        1,
    ));
    t.observe_owner(owner(
        2,
        6,
        s,
        Some(c),
        Role::Server,
        process(20, "postgres", 0, None),
        1,
    ));
    t.observe_flow(&obs(
        6,
        c,
        s,
        1,
        flowlens_correlator::types::Hook::Egress,
        2,
        200,
        (1, 1),
    ));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(r.client.process.map(|p| p.comm), Some("psql".into()));
    assert_eq!(r.server.process.map(|p| p.comm), Some("postgres".into()));
}

#[test]
fn ipv4_mapped_owner_matches_ipv4_flow() {
    let mapped = |a: Addr| match a.0 {
        IpAddr::V4(v) => (IpAddr::V6(v.to_ipv6_mapped()), a.1),
        other => (other, a.1),
    };
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 443));
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        1,
        6,
        mapped(c),
        Some(mapped(s)),
        Role::Client,
        process(7, "java", 0, None),
        1,
    ));
    t.observe_flow(&tcp(c, s, 1, 60, (1, 1)));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(r.client.process.map(|p| p.comm), Some("java".into()));
}

#[test]
fn pod_container_gets_pod_uid() {
    let (c, s) = (v4(10, 244, 1, 5, 40000), v4(10, 96, 0, 1, 443));
    let cgroup = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f0c2e1a_3b4d_4c5e_8f9a_0b1c2d3e4f50.slice/cri-containerd-{CTR}.scope"
    );
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        1,
        6,
        c,
        Some(s),
        Role::Client,
        process(7, "app", 0, Some(&cgroup)),
        1,
    ));
    t.observe_flow(&tcp(c, s, 1, 60, (1, 1)));
    let p = only(export_at(&mut t, 2, &FakeLookup::standard()))
        .client
        .process
        .expect("attributed");
    assert_eq!(
        (p.container_runtime.as_str(), p.container_id.as_deref()),
        ("containerd", Some(CTR))
    );
    assert_eq!(
        p.pod_uid.as_deref(),
        Some("6f0c2e1a-3b4d-4c5e-8f9a-0b1c2d3e4f50")
    );
    assert_eq!(p.container_name, None);
}

/// A raw ICMP socket has no port: its owner (lport 0) is joined to the echo
/// conversation through the cookie the packet path saw, never by guessing.
#[test]
fn raw_icmp_owner_joins_by_cookie_from_the_packet_path() {
    let (me, peer) = (v4(10, 0, 0, 1, 0x1234), v4(10, 0, 0, 2, 0x1234));
    let mut t = ConversationTable::default();
    let l = FakeLookup::standard();
    t.observe_owner(owner(
        77,
        1,
        v4(0, 0, 0, 0, 0),
        None,
        Role::Client,
        process(900, "ping", 1000, None),
        1,
    ));
    let mut req = obs(
        1,
        me,
        peer,
        2,
        flowlens_correlator::types::Hook::Egress,
        3,
        252,
        (1, 2),
    );
    req.initiator = true;
    let mut rep = obs(
        1,
        peer,
        me,
        2,
        flowlens_correlator::types::Hook::Ingress,
        3,
        252,
        (1, 2),
    );
    rep.responder = true;
    t.observe_flow(&req);
    t.observe_flow(&rep);
    // Without the cookie join nothing is attributed (port 0 is never indexed).
    let r = only(export_at(&mut t, 3, &l));
    assert!(r.client.process.is_none(), "{r:?}");
    t.observe_socket_tuple(77, me, peer, 3 * S);
    let (req2, rep2) = (
        FlowObservationExt::more(req, 1, 84),
        FlowObservationExt::more(rep, 1, 84),
    );
    t.observe_flow(&req2);
    t.observe_flow(&rep2);
    let r = only(export_at(&mut t, 4, &l));
    let p = r.client.process.as_ref().expect("ping attributed");
    assert_eq!((p.pid, p.comm.as_str()), (900, "ping"));
    assert_eq!((r.client.port, r.server.port), (0x1234, 0x1234));
    assert_eq!((r.packets_c2s, r.packets_s2c, r.bytes_c2s), (1, 1, 84));
    assert!(
        r.server.process.is_none(),
        "the kernel answers echo requests"
    );
}

trait FlowObservationExt {
    fn more(self, packets: u64, bytes: u64) -> Self;
}

impl FlowObservationExt for flowlens_correlator::types::FlowObservation {
    fn more(mut self, packets: u64, bytes: u64) -> Self {
        self.packets += packets;
        self.bytes += bytes;
        self.last_seen_ns += S;
        self
    }
}

/// A closed TCP socket's owner goes `closed_owner_grace_ns` after the close
/// (its conversation keeps the identity it was given); an open socket's owner
/// stays for `owner_grace_ns` after its last reference. A CLOSE that came
/// before the owner event counts too.
#[test]
fn closed_sockets_free_their_owner_early() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 443));
    let (c2, s2) = (v4(10, 0, 0, 1, 40001), v4(10, 0, 0, 2, 443));
    let (c3, s3) = (v4(10, 0, 0, 1, 40002), v4(10, 0, 0, 2, 443));
    let cfg = TableConfig {
        owner_grace_ns: 100 * S,
        closed_owner_grace_ns: 5 * S,
        ..TableConfig::default()
    };
    let mut t = ConversationTable::new(cfg);
    let l = FakeLookup::standard();
    let p = || process(42, "curl", 1000, None);
    t.observe_owner(owner(1, 6, c, Some(s), Role::Client, p(), 1));
    t.observe_owner(owner(2, 6, c2, Some(s2), Role::Client, p(), 1));
    // The CLOSE of socket 3 arrives before its owner event.
    t.observe_tcp_state(state(3, c3, s3, 1, 7, 2));
    t.observe_owner(owner(3, 6, c3, Some(s3), Role::Client, p(), 2));
    t.observe_tcp_state(state(1, c, s, 1, 7, 2));
    t.observe_flow(&tcp(c, s, 3, 180, (1, 2)));
    let r = only(export_at(&mut t, 3, &l));
    assert_eq!(
        r.client.process.map(|p| p.pid),
        Some(42),
        "found before it went"
    );
    assert_eq!(t.stats().sockets_tracked, 3);
    // 8 s: 6 s after the closes (> 5 s), far within the open socket's 100 s.
    assert!(export_at(&mut t, 8, &l).is_empty());
    assert_eq!(
        (t.stats().sockets_tracked, t.stats().owners_evicted),
        (1, 2),
        "the two closed sockets went, the open one stays"
    );
    // The conversation of socket 1 keeps its owner for its last packets.
    t.observe_flow(&tcp(c, s, 4, 220, (1, 8)));
    let r = only(export_at(&mut t, 9, &l));
    assert_eq!(r.client.process.map(|p| p.pid), Some(42));
    // The open socket's flows still find their owner.
    t.observe_flow(&tcp(c2, s2, 1, 60, (9, 9)));
    let r = only(export_at(&mut t, 10, &l));
    assert_eq!(r.client.process.map(|p| p.pid), Some(42));
}
