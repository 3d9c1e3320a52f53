//! Kernel maps and ring buffer -> domain types. This is the one place where
//! kernel structs become correlator types.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use flowlens_correlator::types::{FlowObservation, FlowTuple, Hook, Role, TcpStateChange};
use flowlens_ebpf::abi::{
    self, FlowKey, FlowValue, IcmpEchoKey, ProcEvent, SockEvent, TcpStateEvent,
};

/// Converts a stored (IPv4-mapped or IPv6) address to the domain form.
pub fn mapped_to_ip(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Converts a domain address to the stored form.
pub fn ip_to_mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn hook_of(h: u8) -> Hook {
    if h == abi::FLOW_HOOK_TC_EGRESS {
        Hook::Egress
    } else {
        Hook::Ingress
    }
}

/// Sums the per-CPU values of one flow into an observation.
pub fn observation(key: &FlowKey, per_cpu: &[FlowValue]) -> FlowObservation {
    let mut packets = 0u64;
    let mut bytes = 0u64;
    let mut first = u64::MAX;
    let mut last = 0u64;
    let mut tcp_flags = 0u8;
    let mut flags = 0u8;
    for v in per_cpu {
        if v.packets == 0 {
            continue;
        }
        packets = packets.saturating_add(v.packets);
        bytes = bytes.saturating_add(v.bytes);
        first = first.min(v.first_seen_ns);
        last = last.max(v.last_seen_ns);
        tcp_flags |= v.tcp_flags;
        flags |= v.flags;
    }
    if first == u64::MAX {
        first = 0;
    }
    FlowObservation {
        tuple: FlowTuple {
            proto: key.proto,
            src: mapped_to_ip(key.src),
            dst: mapped_to_ip(key.dst),
            sport: key.sport,
            dport: key.dport,
        },
        ifindex: key.ifindex,
        hook: hook_of(key.hook),
        packets,
        bytes,
        first_seen_ns: first,
        last_seen_ns: last,
        tcp_flags,
        initiator: flags & abi::FLOW_F_INITIATOR != 0,
        responder: flags & abi::FLOW_F_RESPONDER != 0,
    }
}

/// The kernel key of an observation, for deleting evicted entries.
pub fn flow_key(tuple: &FlowTuple, ifindex: u32, hook: Hook) -> FlowKey {
    FlowKey {
        src: ip_to_mapped(tuple.src),
        dst: ip_to_mapped(tuple.dst),
        sport: tuple.sport,
        dport: tuple.dport,
        proto: tuple.proto,
        hook: match hook {
            Hook::Ingress => abi::FLOW_HOOK_XDP_INGRESS,
            Hook::Egress => abi::FLOW_HOOK_TC_EGRESS,
        },
        pad: 0,
        ifindex,
    }
}

/// Reads and prunes the per-CPU flow map.
pub struct FlowMapReader {
    map: PerCpuHashMap<MapData, FlowKey, FlowValue>,
    /// Entries that vanished between listing and lookup (normal under churn).
    pub read_races: u64,
    /// Deletes that failed for another reason than "already gone".
    pub delete_errors: u64,
}

impl FlowMapReader {
    /// Wraps the map.
    pub fn new(map: PerCpuHashMap<MapData, FlowKey, FlowValue>) -> Self {
        Self {
            map,
            read_races: 0,
            delete_errors: 0,
        }
    }

    /// Appends one observation per kernel entry to `out`; returns how many.
    pub fn drain(&mut self, out: &mut Vec<FlowObservation>) -> usize {
        let before = out.len();
        for item in self.map.iter() {
            match item {
                Ok((key, values)) => out.push(observation(&key, &values)),
                Err(_) => self.read_races += 1,
            }
        }
        out.len() - before
    }

    /// Deletes an entry whose conversation was evicted.
    pub fn remove(&mut self, tuple: &FlowTuple, ifindex: u32, hook: Hook) {
        match self.map.remove(&flow_key(tuple, ifindex, hook)) {
            Ok(()) => {}
            Err(MapError::KeyNotFound) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(_) => self.delete_errors += 1,
        }
    }
}

/// An echo request a local socket sent: (socket cookie, local end, remote end);
/// the ends' ports are the echo identifier.
pub type IcmpEcho = (u64, (IpAddr, u16), (IpAddr, u16));

/// Drains the ICMP echo map: (cookie, local end, remote end) of each echo
/// request a local socket sent since the last call.
pub fn drain_icmp_echo(map: &mut HashMap<MapData, IcmpEchoKey, u64>, out: &mut Vec<IcmpEcho>) {
    let keys: Vec<IcmpEchoKey> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        if let Ok(cookie) = map.get(&k, 0) {
            out.push((
                cookie,
                (mapped_to_ip(k.src), k.ident),
                (mapped_to_ip(k.dst), k.ident),
            ));
        }
        let _ = map.remove(&k);
    }
}

/// Reads a `flowlens_counters` per-CPU array into name -> sum.
pub fn read_counters(map: &PerCpuArray<MapData, u64>, into: &mut BTreeMap<&'static str, u64>) {
    for (idx, name) in abi::COUNTER_NAMES {
        if let Ok(values) = map.get(&idx, 0) {
            let sum: u64 = values.iter().fold(0u64, |a, v| a.saturating_add(*v));
            *into.entry(name).or_insert(0) += sum;
        }
    }
}

/// A decoded ring-buffer event, before enrichment.
#[derive(Debug, Clone)]
pub enum RawEvent {
    /// Socket ownership.
    Sock(SockEvent),
    /// TCP state change.
    TcpState(TcpStateChange),
    /// exec.
    Exec(ProcEvent),
    /// Thread-group exit.
    Exit(ProcEvent),
}

impl RawEvent {
    /// When the kernel emitted it (CLOCK_MONOTONIC ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Sock(s) => s.hdr.ts_ns,
            Self::TcpState(t) => t.ts_ns,
            Self::Exec(p) | Self::Exit(p) => p.hdr.ts_ns,
        }
    }
}

/// Why an event could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header or its declared type.
    Short,
    /// Unknown type.
    UnknownType(u32),
}

/// Decodes one ring-buffer record (length-checked, unaligned reads).
pub fn decode_event(buf: &[u8]) -> Result<RawEvent, DecodeError> {
    let hdr: abi::EventHdr = abi::read_pod(buf).ok_or(DecodeError::Short)?;
    match hdr.kind {
        abi::EV_SOCK => abi::read_pod::<SockEvent>(buf)
            .map(RawEvent::Sock)
            .ok_or(DecodeError::Short),
        abi::EV_TCP_STATE => {
            let e: TcpStateEvent = abi::read_pod(buf).ok_or(DecodeError::Short)?;
            Ok(RawEvent::TcpState(TcpStateChange {
                cookie: e.cookie,
                local: (mapped_to_ip(e.laddr), e.lport),
                remote: (mapped_to_ip(e.raddr), e.rport),
                old_state: e.oldstate,
                new_state: e.newstate,
                ts_ns: e.hdr.ts_ns,
            }))
        }
        abi::EV_EXEC => abi::read_pod::<ProcEvent>(buf)
            .map(RawEvent::Exec)
            .ok_or(DecodeError::Short),
        abi::EV_EXIT => abi::read_pod::<ProcEvent>(buf)
            .map(RawEvent::Exit)
            .ok_or(DecodeError::Short),
        other => Err(DecodeError::UnknownType(other)),
    }
}

/// Role from the kernel constant.
pub fn role_of(r: u8) -> Role {
    match r {
        abi::ROLE_CLIENT => Role::Client,
        abi::ROLE_SERVER => Role::Server,
        _ => Role::Unknown,
    }
}

/// A NUL-terminated kernel string as UTF-8 (lossy).
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(mapped_to_ip(ip_to_mapped(v4)), v4);
        let v6: IpAddr = "fd00::1".parse().expect("v6");
        assert_eq!(mapped_to_ip(ip_to_mapped(v6)), v6);
    }

    #[test]
    fn per_cpu_values_are_summed() {
        let key = FlowKey {
            proto: 6,
            sport: 1,
            dport: 2,
            ifindex: 3,
            hook: 1,
            ..Default::default()
        };
        let a = FlowValue {
            packets: 2,
            bytes: 100,
            first_seen_ns: 50,
            last_seen_ns: 60,
            tcp_flags: 0x02,
            flags: 1,
            ..Default::default()
        };
        let b = FlowValue {
            packets: 1,
            bytes: 40,
            first_seen_ns: 40,
            last_seen_ns: 70,
            tcp_flags: 0x10,
            ..Default::default()
        };
        let idle = FlowValue::default();
        let o = observation(&key, &[a, idle, b]);
        assert_eq!(
            (o.packets, o.bytes, o.first_seen_ns, o.last_seen_ns),
            (3, 140, 40, 70)
        );
        assert_eq!(o.tcp_flags, 0x12);
        assert!(o.initiator && !o.responder);
        assert_eq!(o.hook, Hook::Egress);
    }

    #[test]
    fn short_and_unknown_events_are_rejected() {
        assert_eq!(decode_event(&[1, 0, 0]).err(), Some(DecodeError::Short));
        let mut buf = vec![0u8; 16];
        buf[0] = 99;
        assert_eq!(decode_event(&buf).err(), Some(DecodeError::UnknownType(99)));
        let mut buf = vec![0u8; 20];
        buf[0] = abi::EV_SOCK as u8;
        assert_eq!(decode_event(&buf).err(), Some(DecodeError::Short));
    }

    #[test]
    fn c_strings() {
        assert_eq!(c_str(b"curl\0\0junk"), "curl");
        assert_eq!(c_str(b"full"), "full");
    }
}
