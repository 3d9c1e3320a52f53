//! Shared fixtures of the correlator integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use flowlens_correlator::types::{
    ContainerMeta, FlowObservation, FlowTuple, Hook, Lookup, ProcessIdentity, Role,
    SocketOwnerEvent,
};
use flowlens_correlator::{ConversationRecord, ConversationTable};

/// One second in ns.
pub const S: u64 = 1_000_000_000;
/// Wall clock at monotonic 0 in these tests: 2023-11-14T22:13:20Z.
pub const UNIX0: i128 = 1_700_000_000_000_000_000;

/// An address and a port.
pub type Addr = (IpAddr, u16);

/// A `Lookup` backed by maps.
#[derive(Default)]
pub struct FakeLookup {
    pub users: HashMap<u32, String>,
    pub ifaces: HashMap<u32, String>,
    pub containers: HashMap<(String, String), ContainerMeta>,
}

impl FakeLookup {
    /// root, alice (1000), www-data (33); lo, eth0 (2), docker0 (3), veth1 (5).
    pub fn standard() -> Self {
        let mut l = Self::default();
        for (uid, name) in [(0, "root"), (1000, "alice"), (33, "www-data")] {
            l.users.insert(uid, name.to_owned());
        }
        for (i, name) in [(1, "lo"), (2, "eth0"), (3, "docker0"), (5, "veth1")] {
            l.ifaces.insert(i, name.to_owned());
        }
        l
    }
}

impl Lookup for FakeLookup {
    fn user_name(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }
    fn iface_name(&self, ifindex: u32) -> Option<String> {
        self.ifaces.get(&ifindex).cloned()
    }
    fn container_meta(&self, runtime: &str, id: &str) -> Option<ContainerMeta> {
        self.containers
            .get(&(runtime.to_owned(), id.to_owned()))
            .cloned()
    }
}

/// An IPv4 address and port.
pub fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Addr {
    (IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

/// Cumulative counters of one kernel entry, seen from `first` to `last` seconds.
#[allow(clippy::too_many_arguments)]
pub fn obs(
    proto: u8,
    src: Addr,
    dst: Addr,
    ifindex: u32,
    hook: Hook,
    packets: u64,
    bytes: u64,
    (first, last): (u64, u64),
) -> FlowObservation {
    FlowObservation {
        tuple: FlowTuple::new(proto, src, dst),
        ifindex,
        hook,
        packets,
        bytes,
        first_seen_ns: first * S,
        last_seen_ns: last * S,
        tcp_flags: 0,
        initiator: false,
        responder: false,
    }
}

/// TCP on eth0 egress.
pub fn tcp(src: Addr, dst: Addr, packets: u64, bytes: u64, seen: (u64, u64)) -> FlowObservation {
    obs(6, src, dst, 2, Hook::Egress, packets, bytes, seen)
}

/// UDP on eth0 egress.
pub fn udp(src: Addr, dst: Addr, packets: u64, bytes: u64, seen: (u64, u64)) -> FlowObservation {
    obs(17, src, dst, 2, Hook::Egress, packets, bytes, seen)
}

/// A process identity.
pub fn process(pid: u32, comm: &str, uid: u32, cgroup: Option<&str>) -> ProcessIdentity {
    ProcessIdentity {
        pid,
        comm: comm.to_owned(),
        exe: Some(format!("/usr/bin/{comm}")),
        uid,
        gid: uid,
        cgroup_id: 1000 + u64::from(pid),
        cgroup_path: cgroup.map(str::to_owned),
    }
}

/// An owner event at `ts` seconds.
pub fn owner(
    cookie: u64,
    proto: u8,
    local: Addr,
    remote: Option<Addr>,
    role: Role,
    process: ProcessIdentity,
    ts: u64,
) -> SocketOwnerEvent {
    SocketOwnerEvent {
        cookie,
        proto,
        local,
        remote,
        netns: 4026531840,
        role,
        process,
        ts_ns: ts * S,
    }
}

/// Exports at `now` seconds (monotonic), wall clock `UNIX0 + now`.
pub fn export_at(
    t: &mut ConversationTable,
    now: u64,
    lookup: &FakeLookup,
) -> Vec<ConversationRecord> {
    t.export(now * S, UNIX0 + i128::from(now * S), "host1", lookup)
}

/// The only record of an export.
pub fn only(records: Vec<ConversationRecord>) -> ConversationRecord {
    assert_eq!(records.len(), 1, "{records:#?}");
    records.into_iter().next().expect("one record")
}
