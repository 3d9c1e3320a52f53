//! Rust mirror of `bpf/include/flow_abi.h`. Sizes and offsets are asserted at
//! compile time, and `tests/abi_btf.rs` compares every struct, member by
//! member (name, offset, size), with the layout clang gave it in each compiled
//! object's BTF; keep both files in the same commit when either changes.
//!
//! Byte order: addresses are network order (IPv4 stored IPv4-mapped), every
//! other integer is host order.

#![allow(missing_docs)]

use core::mem::{align_of, offset_of, size_of};

pub const FLOW_HOOK_XDP_INGRESS: u8 = 0;
pub const FLOW_HOOK_TC_EGRESS: u8 = 1;

pub const FLOW_F_INITIATOR: u8 = 0x01;
pub const FLOW_F_FRAGMENT: u8 = 0x02;
pub const FLOW_F_RESPONDER: u8 = 0x04;

/// One direction of a flow at one hook of one interface (map key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub hook: u8,
    pub pad: u16,
    pub ifindex: u32,
}

/// Per-CPU counters of one [`FlowKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub tcp_flags: u8,
    pub flags: u8,
    pub pad: [u8; 6],
}

/// One slot of the per-CPU flow slot table (`flowlens_slots`, see
/// `flow_abi.h`): `seq` 0 = never used, odd = changing hands, even = stable;
/// +2 per claim, so (slot index, seq) names one occupancy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowSlot {
    pub seq: u32,
    pub pad0: u32,
    pub key: FlowKey,
    pub pad1: u32,
    pub val: FlowValue,
    pub pad2: [u8; 32],
}

/// Probed slots per lookup.
pub const FLOW_SLOT_PROBES: u32 = 8;

/// `flowlens_ctl[0]`, written by the collector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCtl {
    /// CLOCK_MONOTONIC ns: a slot whose `last_seen_ns` is older may be reclaimed.
    pub reclaim_before_ns: u64,
    pub pad: [u64; 7],
}

/// Key of the fragment map: one IP datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// Ports remembered from a datagram's first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragValue {
    pub sport: u16,
    pub dport: u16,
    pub pad: u32,
}

/// Key of the ICMP echo map: an echo request sent by a local socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IcmpEchoKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ident: u16,
    pub proto: u8,
    pub pad: u8,
}

// SAFETY: plain old data, repr(C), explicit padding, no invalid bit patterns.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for IcmpEchoKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowValue {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowSlot {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowCtl {}
// SAFETY: as above.
unsafe impl aya::Pod for FragKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FragValue {}
// SAFETY: as above.
unsafe impl aya::Pod for EventHdr {}
// SAFETY: as above.
unsafe impl aya::Pod for SockEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for TcpStateEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for ProcEvent {}

pub const CNT_FLOW_MAP_FULL: u32 = 0;
pub const CNT_FRAG_MAP_FULL: u32 = 1;
pub const CNT_FRAG_NO_FIRST: u32 = 2;
pub const CNT_PARSE_TRUNCATED: u32 = 3;
pub const CNT_NON_IP: u32 = 4;
pub const CNT_RINGBUF_FULL: u32 = 5;
pub const CNT_SOCK_MAP_FULL: u32 = 6;
pub const CNT_PACKETS_SEEN: u32 = 7;
/// `EV_SOCK` + `EV_TCP_STATE` emit attempts, including those lost to a full
/// ring buffer: delivered = `CNT_SOCK_EVENTS + CNT_PROC_EVENTS - CNT_RINGBUF_FULL`.
pub const CNT_SOCK_EVENTS: u32 = 8;
/// `EV_EXEC` + `EV_EXIT` emit attempts (see [`CNT_SOCK_EVENTS`]).
pub const CNT_PROC_EVENTS: u32 = 9;
pub const CNT_ICMP_MAP_FULL: u32 = 10;
/// Packets of flows without a slot (no free one in their probe window),
/// counted in the hash instead: informational, nothing is lost.
pub const CNT_FLOW_SLOTS_FULL: u32 = 11;
/// A TCP socket the signals map had no room for: its RTT and retransmits are missing.
pub const CNT_TCP_SIG_MAP_FULL: u32 = 12;
/// Reset and final-signal events lost: the signals ring buffer was full.
pub const CNT_SIG_RINGBUF_FULL: u32 = 13;
/// DNS messages lost: the signals ring buffer was full.
pub const CNT_DNS_RINGBUF_FULL: u32 = 14;
/// DNS packets copied or attempted.
pub const CNT_DNS_MESSAGES: u32 = 15;
/// DNS packets longer than [`DNS_PAYLOAD_MAX`], copied in part.
pub const CNT_DNS_CUT: u32 = 16;
/// `EV_TCP_RESET` + `EV_TCP_SIG_FINAL` emit attempts.
pub const CNT_SIG_EVENTS: u32 = 17;
/// RTT samples taken.
pub const CNT_RTT_SAMPLES: u32 = 18;
pub const CNT_MAX: u32 = 32;

/// Names of the kernel counters, indexed by `CNT_*`.
pub const COUNTER_NAMES: [(u32, &str); 19] = [
    (CNT_FLOW_MAP_FULL, "flow_map_full"),
    (CNT_FRAG_MAP_FULL, "frag_map_full"),
    (CNT_FRAG_NO_FIRST, "frag_without_first"),
    (CNT_PARSE_TRUNCATED, "truncated_headers"),
    (CNT_NON_IP, "non_ip_frames"),
    (CNT_RINGBUF_FULL, "ringbuf_full"),
    (CNT_SOCK_MAP_FULL, "sock_map_full"),
    (CNT_PACKETS_SEEN, "packets_seen"),
    (CNT_SOCK_EVENTS, "sock_events"),
    (CNT_PROC_EVENTS, "proc_events"),
    (CNT_ICMP_MAP_FULL, "icmp_map_full"),
    (CNT_FLOW_SLOTS_FULL, "flow_slots_full"),
    (CNT_TCP_SIG_MAP_FULL, "tcp_sig_map_full"),
    (CNT_SIG_RINGBUF_FULL, "sig_ringbuf_full"),
    (CNT_DNS_RINGBUF_FULL, "dns_ringbuf_full"),
    (CNT_DNS_MESSAGES, "dns_messages"),
    (CNT_DNS_CUT, "dns_cut"),
    (CNT_SIG_EVENTS, "sig_events"),
    (CNT_RTT_SAMPLES, "rtt_samples"),
];

pub const EV_SOCK: u32 = 1;
pub const EV_TCP_STATE: u32 = 2;
pub const EV_EXEC: u32 = 3;
pub const EV_EXIT: u32 = 4;
pub const EV_TCP_RESET: u32 = 5;
pub const EV_TCP_SIG_FINAL: u32 = 6;
pub const EV_DNS: u32 = 7;

pub const ROLE_UNKNOWN: u8 = 0;
pub const ROLE_CLIENT: u8 = 1;
pub const ROLE_SERVER: u8 = 2;

pub const SOCK_HOOK_SEND: u8 = 1;
pub const SOCK_HOOK_RECV: u8 = 2;
pub const SOCK_HOOK_CONNECT: u8 = 3;
pub const SOCK_HOOK_ACCEPT: u8 = 4;

pub const COMM_LEN: usize = 16;
pub const EXE_LEN: usize = 256;

/// Header of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHdr {
    pub kind: u32,
    pub size: u32,
    pub ts_ns: u64,
}

/// `EV_SOCK`: who owns a socket, taken in the owner's context.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockEvent {
    pub hdr: EventHdr,
    pub cookie: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub netns: u32,
    pub lport: u16,
    pub rport: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub proto: u8,
    pub role: u8,
    pub hook: u8,
    pub pad: u8,
    pub comm: [u8; COMM_LEN],
    pub pad2: u32,
}

/// `EV_TCP_STATE`: a TCP state change (any context: no owner).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpStateEvent {
    pub hdr: EventHdr,
    pub cookie: u64,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub lport: u16,
    pub rport: u16,
    pub oldstate: u8,
    pub newstate: u8,
    pub pad: [u8; 2],
    pub netns: u32,
    /// Newstate CLOSE: the socket's error (errno), 0 if none.
    pub sk_err: u32,
}

/// `EV_EXEC` / `EV_EXIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcEvent {
    pub hdr: EventHdr,
    pub cgroup_id: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; COMM_LEN],
    pub exe: [u8; EXE_LEN],
}

/// A TCP socket as the signals map keys it (local = this host's end).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SigKey {
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub lport: u16,
    pub rport: u16,
    pub pad: u32,
}

/// RTT samples of one export interval (`gen`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RttSlot {
    pub gen: u32,
    pub samples: u32,
    pub min_us: u32,
    pub max_us: u32,
    pub sum_us: u64,
}

/// Signals of one TCP socket (`flowlens_tcp_sigs` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpSig {
    pub created_ns: u64,
    pub total_retrans: u32,
    pub retrans_base: u32,
    pub rtt: [RttSlot; 2],
}

/// `flowlens_sig_ctl[0]`, written by the collector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SigCtl {
    pub gen: u32,
    pub pad: u32,
    pub pad2: [u64; 7],
}

/// `EV_TCP_RESET`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpResetEvent {
    pub hdr: EventHdr,
    pub key: SigKey,
    pub sent: u8,
    pub socket: u8,
    pub pad: [u8; 6],
}

/// `EV_TCP_SIG_FINAL`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpSigFinalEvent {
    pub hdr: EventHdr,
    pub key: SigKey,
    pub sig: TcpSig,
}

pub const DNS_PAYLOAD_SMALL: usize = 256;
pub const DNS_PAYLOAD_MAX: usize = 1024;
pub const DNS_EVENT_HDR_SIZE: usize = 64;

/// `EV_DNS` without its payload (which follows, `cap_len` bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEventHdr {
    pub hdr: EventHdr,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub egress: u8,
    pub cap_len: u16,
    pub orig_len: u32,
    pub pad: u32,
}

// SAFETY: plain old data, repr(C), explicit padding, no invalid bit patterns.
unsafe impl aya::Pod for SigKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RttSlot {}
// SAFETY: as above.
unsafe impl aya::Pod for TcpSig {}
// SAFETY: as above.
unsafe impl aya::Pod for SigCtl {}
// SAFETY: as above.
unsafe impl aya::Pod for TcpResetEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for TcpSigFinalEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for DnsEventHdr {}

const _: () = {
    assert!(size_of::<SigKey>() == 40);
    assert!(offset_of!(SigKey, lport) == 32);
    assert!(size_of::<RttSlot>() == 24);
    assert!(size_of::<TcpSig>() == 64 && align_of::<TcpSig>() == 8);
    assert!(offset_of!(TcpSig, rtt) == 16);
    assert!(size_of::<SigCtl>() == 64);
    assert!(size_of::<TcpResetEvent>() == 64);
    assert!(offset_of!(TcpResetEvent, sent) == 56);
    assert!(size_of::<TcpSigFinalEvent>() == 120);
    assert!(offset_of!(TcpSigFinalEvent, sig) == 56);
    assert!(size_of::<DnsEventHdr>() == DNS_EVENT_HDR_SIZE);
    assert!(offset_of!(DnsEventHdr, sport) == 48);
    assert!(offset_of!(DnsEventHdr, cap_len) == 54);
    assert!(offset_of!(DnsEventHdr, orig_len) == 56);
};

const _: () = {
    assert!(size_of::<FlowKey>() == 44 && align_of::<FlowKey>() == 4);
    assert!(offset_of!(FlowKey, sport) == 32);
    assert!(offset_of!(FlowKey, proto) == 36);
    assert!(offset_of!(FlowKey, hook) == 37);
    assert!(offset_of!(FlowKey, ifindex) == 40);
    assert!(size_of::<FlowValue>() == 40 && align_of::<FlowValue>() == 8);
    assert!(offset_of!(FlowValue, tcp_flags) == 32);
    assert!(size_of::<FlowSlot>() == 128 && align_of::<FlowSlot>() == 8);
    assert!(offset_of!(FlowSlot, key) == 8);
    assert!(offset_of!(FlowSlot, val) == 56);
    assert!(size_of::<FlowCtl>() == 64);
    assert!(size_of::<FragKey>() == 40);
    assert!(offset_of!(FragKey, id) == 32);
    assert!(size_of::<FragValue>() == 8);
    assert!(size_of::<IcmpEchoKey>() == 36);
    assert!(offset_of!(IcmpEchoKey, ident) == 32);
    assert!(size_of::<EventHdr>() == 16);
    assert!(size_of::<SockEvent>() == 112);
    assert!(offset_of!(SockEvent, cookie) == 16);
    assert!(offset_of!(SockEvent, pid) == 32);
    assert!(offset_of!(SockEvent, netns) == 48);
    assert!(offset_of!(SockEvent, lport) == 52);
    assert!(offset_of!(SockEvent, laddr) == 56);
    assert!(offset_of!(SockEvent, raddr) == 72);
    assert!(offset_of!(SockEvent, proto) == 88);
    assert!(offset_of!(SockEvent, comm) == 92);
    assert!(size_of::<TcpStateEvent>() == 72);
    assert!(offset_of!(TcpStateEvent, laddr) == 24);
    assert!(offset_of!(TcpStateEvent, lport) == 56);
    assert!(offset_of!(TcpStateEvent, oldstate) == 60);
    assert!(offset_of!(TcpStateEvent, netns) == 64);
    assert!(size_of::<ProcEvent>() == 312);
    assert!(offset_of!(ProcEvent, pid) == 24);
    assert!(offset_of!(ProcEvent, comm) == 40);
    assert!(offset_of!(ProcEvent, exe) == 56);
};

/// Reads a `T` from the front of `buf` if it is long enough (ring-buffer
/// records have no alignment guarantee).
pub fn read_pod<T: aya::Pod>(buf: &[u8]) -> Option<T> {
    if buf.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked above; read_unaligned handles any alignment and
    // every T used here is plain old data valid for any bit pattern.
    Some(unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}
