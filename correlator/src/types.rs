//! Domain types handed to the correlator by the collector's readers.
//! Kernel structs become these in exactly one place: `collector::ebpf::convert`.

use std::net::{IpAddr, Ipv6Addr};

use serde::Serialize;

/// IP protocol numbers the correlator names.
pub mod proto {
    /// ICMP
    pub const ICMP: u8 = 1;
    /// TCP
    pub const TCP: u8 = 6;
    /// UDP
    pub const UDP: u8 = 17;
    /// ICMPv6
    pub const ICMPV6: u8 = 58;
}

/// Kernel TCP states the correlator interprets (`include/net/tcp_states.h`).
pub mod tcp_state {
    /// ESTABLISHED
    pub const ESTABLISHED: u8 = 1;
    /// SYN_SENT
    pub const SYN_SENT: u8 = 2;
    /// SYN_RECV
    pub const SYN_RECV: u8 = 3;
    /// CLOSE
    pub const CLOSE: u8 = 7;
    /// LISTEN
    pub const LISTEN: u8 = 10;
    /// NEW_SYN_RECV (request socket of a listener)
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Converts an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to IPv4; any other address is returned unchanged.
#[inline]
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// An address as the kernel programs key it: 16 bytes in network order,
/// IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
#[inline]
pub fn ip_to_mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`ip_to_mapped`]: an IPv4-mapped address becomes IPv4.
#[inline]
pub fn mapped_to_ip(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Which program saw a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// XDP on ingress.
    Ingress,
    /// TC on egress.
    Egress,
}

/// One direction of a flow: who sent to whom. IPv4-mapped IPv6 addresses are
/// always converted to IPv4 before they get here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowTuple {
    /// IP protocol number.
    pub proto: u8,
    /// Sender address.
    pub src: IpAddr,
    /// Receiver address.
    pub dst: IpAddr,
    /// Sender port (ICMP echo: identifier; other non-TCP/UDP: 0).
    pub sport: u16,
    /// Receiver port.
    pub dport: u16,
}

impl FlowTuple {
    /// A tuple from sender and receiver, with IPv4-mapped addresses converted to IPv4.
    pub fn new(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Self {
        Self {
            proto,
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
        }
        .normalized()
    }

    /// This tuple with IPv4-mapped addresses converted to IPv4.
    pub fn normalized(self) -> Self {
        Self {
            src: normalize_ip(self.src),
            dst: normalize_ip(self.dst),
            ..self
        }
    }

    /// The opposite direction.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..self
        }
    }
}

/// Cumulative counters of one kernel flow entry (one direction, one interface
/// hook), summed over CPUs. Cumulative since the entry was created: the
/// correlator turns them into per-interval deltas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowObservation {
    /// The direction.
    pub tuple: FlowTuple,
    /// Interface index the packets were seen on.
    pub ifindex: u32,
    /// Which hook saw them.
    pub hook: Hook,
    /// Packets (GSO super-packets count as their segments).
    pub packets: u64,
    /// L3 bytes.
    pub bytes: u64,
    /// First packet, nanoseconds of CLOCK_MONOTONIC.
    pub first_seen_ns: u64,
    /// Last packet, nanoseconds of CLOCK_MONOTONIC.
    pub last_seen_ns: u64,
    /// OR of TCP flags.
    pub tcp_flags: u8,
    /// The sender sent a TCP SYN without ACK or an ICMP echo request.
    pub initiator: bool,
    /// The sender sent a TCP SYN+ACK or an ICMP echo reply.
    pub responder: bool,
}

/// Which end of a conversation a socket hook says its socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Not known from the hook.
    #[default]
    Unknown,
    /// Connected, or sent first.
    Client,
    /// Accepted, or received first.
    Server,
}

/// The process behind a socket, captured in the owner's own context, already
/// enriched by the collector with exe and cgroup path (the process and the
/// cgroup may be gone by export time).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ProcessIdentity {
    /// Thread group id (what users call the pid).
    pub pid: u32,
    /// Command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// Executable path, when known.
    pub exe: Option<String>,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// cgroup v2 id (inode of the cgroup directory).
    pub cgroup_id: u64,
    /// cgroup v2 path relative to the v2 root, e.g. `/docker/<id>`, when known.
    pub cgroup_path: Option<String>,
}

/// A socket event from a process-context hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOwnerEvent {
    /// Socket cookie (unique for the socket's lifetime).
    pub cookie: u64,
    /// IP protocol.
    pub proto: u8,
    /// Local address and port (port may be 0 before bind, e.g. at connect).
    pub local: (IpAddr, u16),
    /// Remote address and port; `None` for unconnected UDP.
    pub remote: Option<(IpAddr, u16)>,
    /// Network namespace inode.
    pub netns: u32,
    /// Role from the hook.
    pub role: Role,
    /// The owner.
    pub process: ProcessIdentity,
    /// Event time, CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
}

impl SocketOwnerEvent {
    /// This event with IPv4-mapped addresses converted to IPv4.
    pub fn normalized(mut self) -> Self {
        self.local.0 = normalize_ip(self.local.0);
        self.remote = self.remote.map(|(a, p)| (normalize_ip(a), p));
        self
    }
}

/// A TCP state change (any context): fills in the tuple of a cookie whose
/// owner event came before the port was bound, and tells the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpStateChange {
    /// Socket cookie.
    pub cookie: u64,
    /// Local address and port.
    pub local: (IpAddr, u16),
    /// Remote address and port.
    pub remote: (IpAddr, u16),
    /// Kernel TCP state before (1 = ESTABLISHED, 2 = SYN_SENT, 3 = SYN_RECV, 7 = CLOSE, 10 = LISTEN, 12 = NEW_SYN_RECV).
    pub old_state: u8,
    /// Kernel TCP state after.
    pub new_state: u8,
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
}

impl TcpStateChange {
    /// This change with IPv4-mapped addresses converted to IPv4.
    pub fn normalized(self) -> Self {
        Self {
            local: (normalize_ip(self.local.0), self.local.1),
            remote: (normalize_ip(self.remote.0), self.remote.1),
            ..self
        }
    }

    /// The role the transition proves: leaving or entering SYN_SENT is the
    /// connecting side; SYN_RECV / NEW_SYN_RECV -> ESTABLISHED the accepting side.
    pub fn implied_role(&self) -> Role {
        use tcp_state::{ESTABLISHED, NEW_SYN_RECV, SYN_RECV, SYN_SENT};
        if self.old_state == SYN_SENT || self.new_state == SYN_SENT {
            Role::Client
        } else if (self.old_state == SYN_RECV || self.old_state == NEW_SYN_RECV)
            && self.new_state == ESTABLISHED
        {
            Role::Server
        } else {
            Role::Unknown
        }
    }
}

/// Container metadata resolved from a runtime API (Docker).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct ContainerMeta {
    /// Container name, without a leading `/`.
    pub name: Option<String>,
    /// Image reference.
    pub image: Option<String>,
}

/// Lookups the correlator needs at export time, implemented by the collector
/// with caches (never blocking).
pub trait Lookup {
    /// User name of a uid.
    fn user_name(&self, uid: u32) -> Option<String>;
    /// Interface name of an ifindex.
    fn iface_name(&self, ifindex: u32) -> Option<String>;
    /// Cached metadata of a container id (`None` while unknown).
    fn container_meta(&self, runtime: &str, id: &str) -> Option<ContainerMeta>;
}

/// A connection the kernel's connection tracking translated (NAT), as its
/// conntrack entry describes it. Addresses are normalised like flow tuples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatMapping {
    /// The first packet as it arrived: the client's own address and port to
    /// the server as the client addressed it (conntrack's ORIGINAL tuple).
    pub original: FlowTuple,
    /// The answers as the server sent them: the server's own address and
    /// port to the client as the server sees it (conntrack's REPLY tuple).
    pub reply: FlowTuple,
}

impl NatMapping {
    /// Whether anything was translated (the reply is not the original reversed).
    pub fn is_translated(&self) -> bool {
        self.reply.normalized() != self.original.normalized().reversed()
    }

    /// This mapping with IPv4-mapped addresses converted to IPv4.
    pub fn normalized(self) -> Self {
        Self {
            original: self.original.normalized(),
            reply: self.reply.normalized(),
        }
    }
}

/// A change of the kernel's connection tracking table that matters to the
/// NAT join: a translated connection appeared or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatEvent {
    /// A translated connection was confirmed (or found by a dump).
    New(NatMapping),
    /// It ended (its conntrack entry was destroyed).
    Destroy(NatMapping),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(
            ip_to_mapped(v4)[..12],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
        assert_eq!(mapped_to_ip(ip_to_mapped(v4)), v4);
        let v6: IpAddr = "fd00::1".parse().expect("v6");
        assert_eq!(mapped_to_ip(ip_to_mapped(v6)), v6);
    }
}
