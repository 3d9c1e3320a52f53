//! Data generators shared by the correlator benches and the memory benchmark
//! (`bench/src/bin/table-rss.rs` includes this file): conversations as the
//! collector feeds them, a `Lookup` without caches behind it.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};

use flowlens_correlator::types::{
    ContainerMeta, FlowObservation, FlowTuple, Hook, Lookup, ProcessIdentity, Role,
    SocketOwnerEvent,
};
use flowlens_correlator::ConversationTable;

/// One second in ns.
pub const S: u64 = 1_000_000_000;
/// Wall clock at monotonic 0.
pub const UNIX0: i128 = 1_700_000_000_000_000_000;

/// Answers every lookup from constants (the collector's caches are hits too).
pub struct StaticLookup;

impl Lookup for StaticLookup {
    fn user_name(&self, _uid: u32) -> Option<String> {
        Some("alice".to_owned())
    }
    fn iface_name(&self, _ifindex: u32) -> Option<String> {
        Some("eth0".to_owned())
    }
    fn container_meta(&self, _runtime: &str, _id: &str) -> Option<ContainerMeta> {
        None
    }
}

/// The local client end of conversation `i`: 10.a.b.c with a port from 1024 up.
pub fn client(i: u32) -> (IpAddr, u16) {
    let [_, a, b, c] = i.to_be_bytes();
    let port = 1024 + u16::try_from(i % 60_000).unwrap_or(0);
    (IpAddr::V4(Ipv4Addr::new(10, a, b, c)), port)
}

/// The remote server end every conversation talks to.
pub fn server() -> (IpAddr, u16) {
    (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)), 443)
}

/// Cumulative counters of conversation `i` in one direction at `t` seconds.
pub fn flow(i: u32, c2s: bool, packets: u64, t: u64) -> FlowObservation {
    let (src, dst, hook) = if c2s {
        (client(i), server(), Hook::Egress)
    } else {
        (server(), client(i), Hook::Ingress)
    };
    FlowObservation {
        tuple: FlowTuple::new(6, src, dst),
        ifindex: 2,
        hook,
        packets,
        bytes: packets * 1000,
        first_seen_ns: S,
        last_seen_ns: t * S,
        tcp_flags: if c2s { 0x1a } else { 0x18 },
        initiator: c2s,
        responder: !c2s,
    }
}

/// The owner event of conversation `i`'s client socket (pid varies by 64).
pub fn owner(i: u32) -> SocketOwnerEvent {
    let pid = 1000 + i % 64;
    SocketOwnerEvent {
        cookie: u64::from(i) + 1,
        proto: 6,
        local: client(i),
        remote: Some(server()),
        netns: 4_026_531_840,
        role: Role::Client,
        process: ProcessIdentity {
            pid,
            comm: "curl".to_owned(),
            exe: Some("/usr/bin/curl".to_owned()),
            uid: 1000,
            gid: 1000,
            cgroup_id: 1,
            cgroup_path: Some("/".to_owned()),
        },
        ts_ns: S,
    }
}

/// Feeds conversations `from..to` (owner, then both directions) at `t` seconds.
pub fn feed(table: &mut ConversationTable, from: u32, to: u32, packets: u64, t: u64) {
    for i in from..to {
        table.observe_owner(owner(i));
        table.observe_flow(&flow(i, true, packets, t));
        table.observe_flow(&flow(i, false, packets, t));
    }
}
