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
    Clients::OWN_ADDRESS.client(i)
}

/// The remote server end every conversation talks to.
pub fn server() -> (IpAddr, u16) {
    (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)), 443)
}

/// How the client sockets of the generated conversations are addressed.
#[derive(Clone, Copy, Debug)]
pub struct Clients {
    /// Local addresses the client sockets share (`None`: each its own).
    pub addrs: Option<u32>,
}

impl Clients {
    /// Every client socket with its own 10.a.b.c address (no real host has
    /// that many; the worst case for the owner table's local addresses).
    pub const OWN_ADDRESS: Self = Self { addrs: None };

    /// The local client end of conversation `i`: with `addrs`, 10.0.x.y for
    /// `i % addrs` and a port from 1024 up for `i / addrs` (unique up to
    /// 64,512 × addrs conversations); else 10.a.b.c with a port from 1024 up.
    pub fn client(self, i: u32) -> (IpAddr, u16) {
        match self.addrs.filter(|&n| n > 0) {
            Some(n) => {
                let [_, _, b, c] = (i % n).to_be_bytes();
                let port = 1024 + u16::try_from((i / n) % 64_512).unwrap_or(0);
                (IpAddr::V4(Ipv4Addr::new(10, 0, b, c)), port)
            }
            None => {
                let [_, a, b, c] = i.to_be_bytes();
                let port = 1024 + u16::try_from(i % 60_000).unwrap_or(0);
                (IpAddr::V4(Ipv4Addr::new(10, a, b, c)), port)
            }
        }
    }

    /// Cumulative counters of conversation `i` in one direction at `t` seconds.
    pub fn flow(self, i: u32, c2s: bool, packets: u64, t: u64) -> FlowObservation {
        let (src, dst, hook) = if c2s {
            (self.client(i), server(), Hook::Egress)
        } else {
            (server(), self.client(i), Hook::Ingress)
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
    pub fn owner(self, i: u32) -> SocketOwnerEvent {
        let pid = 1000 + i % 64;
        SocketOwnerEvent {
            cookie: u64::from(i) + 1,
            proto: 6,
            local: self.client(i),
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
    pub fn feed(self, table: &mut ConversationTable, from: u32, to: u32, packets: u64, t: u64) {
        for i in from..to {
            table.observe_owner(self.owner(i));
            table.observe_flow(&self.flow(i, true, packets, t));
            table.observe_flow(&self.flow(i, false, packets, t));
        }
    }
}

/// Cumulative counters of conversation `i` in one direction at `t` seconds.
pub fn flow(i: u32, c2s: bool, packets: u64, t: u64) -> FlowObservation {
    Clients::OWN_ADDRESS.flow(i, c2s, packets, t)
}

/// The owner event of conversation `i`'s client socket (pid varies by 64).
pub fn owner(i: u32) -> SocketOwnerEvent {
    Clients::OWN_ADDRESS.owner(i)
}

/// Feeds conversations `from..to` (owner, then both directions) at `t` seconds.
pub fn feed(table: &mut ConversationTable, from: u32, to: u32, packets: u64, t: u64) {
    Clients::OWN_ADDRESS.feed(table, from, to, packets, t);
}
