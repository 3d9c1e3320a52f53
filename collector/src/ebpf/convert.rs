//! Kernel structs -> domain types: the one place where the records of the
//! kernel ABI (`flowlens_ebpf::abi`) become the correlator's types.

use std::net::IpAddr;

use flowlens_correlator::signals::{ConnectEvent, ConnectStep};
use flowlens_correlator::types::{
    ip_to_mapped, mapped_to_ip, FlowObservation, FlowTuple, Hook, ProcessIdentity, Role,
    SocketOwnerEvent, TcpStateChange,
};
use flowlens_ebpf::abi::{
    self, FlowKey, FlowValue, IcmpEchoKey, ProcEvent, SockEvent, TcpStateEvent,
};

fn hook_of(h: u8) -> Hook {
    if h == abi::FLOW_HOOK_TC_EGRESS {
        Hook::Egress
    } else {
        Hook::Ingress
    }
}

/// The observation of a kernel flow key with its totals (a [`FlowValue`]
/// summed over CPUs, slots and the overflow hash).
pub fn observation(key: &FlowKey, t: &FlowValue) -> FlowObservation {
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
        packets: t.packets,
        bytes: t.bytes,
        first_seen_ns: t.first_seen_ns,
        last_seen_ns: t.last_seen_ns,
        tcp_flags: t.tcp_flags,
        initiator: t.flags & abi::FLOW_F_INITIATOR != 0,
        responder: t.flags & abi::FLOW_F_RESPONDER != 0,
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

/// An echo request a local socket sent: (socket cookie, local end, remote end);
/// the ends' ports are the echo identifier.
pub type IcmpEcho = (u64, (IpAddr, u16), (IpAddr, u16));

/// An echo request of the ICMP echo map, sent by the socket with `cookie`.
pub fn icmp_echo(k: &IcmpEchoKey, cookie: u64) -> IcmpEcho {
    (
        cookie,
        (mapped_to_ip(k.src), k.ident),
        (mapped_to_ip(k.dst), k.ident),
    )
}

/// A decoded ring-buffer event, before enrichment.
#[derive(Debug, Clone)]
pub enum RawEvent {
    /// Socket ownership.
    Sock(SockEvent),
    /// TCP state change.
    TcpState(TcpStateChange, Option<ConnectEvent>),
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
            Self::TcpState(t, _) => t.ts_ns,
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
            Ok(RawEvent::TcpState(tcp_state(&e), connect_end(&e)))
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

/// A TCP state change record.
pub fn tcp_state(e: &TcpStateEvent) -> TcpStateChange {
    TcpStateChange {
        cookie: e.cookie,
        local: (mapped_to_ip(e.laddr), e.lport),
        remote: (mapped_to_ip(e.raddr), e.rport),
        old_state: e.oldstate,
        new_state: e.newstate,
        ts_ns: e.hdr.ts_ns,
    }
}

/// The end of a local client's connect, from a TCP state change: SYN_SENT
/// to ESTABLISHED (its latency) or to CLOSE (its error).
pub fn connect_end(e: &TcpStateEvent) -> Option<ConnectEvent> {
    use flowlens_correlator::types::tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
    if e.oldstate != SYN_SENT {
        return None;
    }
    let step = match e.newstate {
        ESTABLISHED => ConnectStep::Established,
        CLOSE => ConnectStep::Failed(i32::try_from(e.sk_err).unwrap_or(0)),
        _ => return None,
    };
    Some(ConnectEvent {
        cookie: e.cookie,
        local: (mapped_to_ip(e.laddr), e.lport),
        remote: (mapped_to_ip(e.raddr), e.rport),
        step,
        ts_ns: e.hdr.ts_ns,
    })
}

/// The start of a local client's TCP connect, from its owner record.
pub fn connect_start(s: &SockEvent) -> Option<ConnectEvent> {
    (s.hook == abi::SOCK_HOOK_CONNECT && s.proto == flowlens_correlator::types::proto::TCP).then(
        || ConnectEvent {
            cookie: s.cookie,
            local: (mapped_to_ip(s.laddr), s.lport),
            remote: (mapped_to_ip(s.raddr), s.rport),
            step: ConnectStep::Started,
            ts_ns: s.hdr.ts_ns,
        },
    )
}

/// The owner event of a socket record. `exe` and `cgroup_path` come from
/// the collector's caches (the kernel sends the cgroup id and no path).
pub fn socket_owner(
    s: &SockEvent,
    exe: Option<String>,
    cgroup_path: Option<String>,
) -> SocketOwnerEvent {
    let raddr = mapped_to_ip(s.raddr);
    let remote = if s.rport == 0 && raddr.is_unspecified() {
        None
    } else {
        Some((raddr, s.rport))
    };
    SocketOwnerEvent {
        cookie: s.cookie,
        proto: s.proto,
        local: (mapped_to_ip(s.laddr), s.lport),
        remote,
        netns: s.netns,
        role: role_of(s.role),
        process: ProcessIdentity {
            pid: s.pid,
            comm: c_str(&s.comm),
            exe,
            uid: s.uid,
            gid: s.gid,
            cgroup_id: s.cgroup_id,
            cgroup_path,
        },
        ts_ns: s.hdr.ts_ns,
    }
}

/// The executable path an exec record carries (what was passed to execve()).
pub fn exec_path(p: &ProcEvent) -> String {
    c_str(&p.exe)
}

#[cfg(test)]
mod tests {
    use super::*;

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
