//! The userspace twin of `flow.bpf.c`'s parser: one captured frame in, the
//! same [`ParsedPacket`] the kernel's `struct pkt_meta` holds out.
//!
//! Header views are `pnet_packet`'s; every offset and length is checked here
//! first (pnet's constructors only check a header's minimum size, and its
//! variable-length accessors such as `payload()` trust the header).
//! What the kernel parses (Ethernet, two VLAN tags, IPv4 with options, six
//! IPv6 extension headers, TCP/UDP/ICMP/ICMPv6) follows its rules exactly;
//! link types and encapsulations the kernel never sees (cooked, raw, loopback,
//! PPPoE, MPLS) only change where the IP header starts.

use std::net::IpAddr;

use flowlens_correlator::types::proto;
use pnet_packet::{
    ethernet::EthernetPacket, icmp::IcmpPacket, icmpv6::Icmpv6Packet, ipv4::Ipv4Packet,
    ipv6::Ipv6Packet, tcp::TcpPacket, udp::UdpPacket,
};

/// pcap link types this parser reads.
pub mod linktype {
    /// BSD loopback, address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet.
    pub const ETHERNET: u32 = 1;
    /// DLT_RAW as written by most systems.
    pub const DLT_RAW_12: u32 = 12;
    /// DLT_RAW as written by OpenBSD.
    pub const DLT_RAW_14: u32 = 14;
    /// Raw IP (version from the first nibble).
    pub const RAW: u32 = 101;
    /// OpenBSD loopback, address family in network byte order.
    pub const LOOP: u32 = 108;
    /// Linux cooked capture v1.
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: u32 = 276;
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const ETH_P_PPPOE_SESS: u16 = 0x8864;
const ETH_P_MPLS_UC: u16 = 0x8847;
const ETH_P_MPLS_MC: u16 = 0x8848;
const PPP_IP: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;
const MAX_VLAN_TAGS: usize = 2;

const IP_MF: u16 = 0x2000;
const IP_OFFMASK: u16 = 0x1fff;
const IP6_OFFMASK: u16 = 0xfff8;
const IP6_MF: u16 = 0x0001;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
const IPV6_MAX_EXT_HDRS: usize = 6;

const ICMP_ECHOREPLY: u8 = 0;
const ICMP_ECHO: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Where a frame stands towards the fragment map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment.
    None,
    /// Offset 0, more fragments: carries the L4 header.
    First,
    /// Offset != 0: takes the ports of its first fragment.
    Later,
}

/// What the parser found in one frame (the kernel's `struct pkt_meta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedPacket {
    /// IP protocol (the last next-header read for IPv6).
    pub proto: u8,
    /// Sender address.
    pub src: IpAddr,
    /// Receiver address.
    pub dst: IpAddr,
    /// Sender port (ICMP echo: identifier; otherwise 0 when not parsed).
    pub sport: u16,
    /// Receiver port.
    pub dport: u16,
    /// Bytes before the IP header (L2 and encapsulations).
    pub l2_len: u32,
    /// L3 length claimed by the IP header (0 if none usable).
    pub claimed: u32,
    /// TCP flags byte (0 otherwise).
    pub tcp_flags: u8,
    /// TCP SYN without ACK, or ICMP echo request.
    pub initiator: bool,
    /// TCP SYN+ACK, or ICMP echo reply.
    pub responder: bool,
    /// Something after the addresses was cut (counted as far as parsed).
    pub truncated: bool,
    /// Fragment state.
    pub frag: Frag,
    /// Fragment id (IPv4 identification or IPv6 fragment id).
    pub frag_id: u32,
}

/// Why a frame yields no flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// A link type this parser does not read.
    UnsupportedLinkType,
    /// Not IPv4/IPv6: ARP, LLDP, a third VLAN tag, a PPP control frame,
    /// non-IP MPLS payload, or a version nibble that does not match.
    NonIp,
    /// The link-layer (or VLAN, PPPoE, MPLS) header is cut.
    TruncatedL2,
    /// The fixed IPv4/IPv6 header is cut.
    TruncatedL3,
}

impl Skip {
    /// A short name for summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedLinkType => "unsupported link type",
            Self::NonIp => "not IP",
            Self::TruncatedL2 => "link-layer header cut",
            Self::TruncatedL3 => "IP header cut",
        }
    }
}

fn be16(d: &[u8], off: usize) -> Option<u16> {
    let b = d.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(d: &[u8], off: usize) -> Option<u32> {
    let b = d.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The network layer of a frame: where the IP header starts and what the
/// link layer says it is.
enum L3 {
    /// An ethertype (Ethernet, VLAN, cooked captures) at `off`.
    Ethertype(u16, usize),
    /// IP of unknown version at `off` (raw, MPLS): decided by the nibble.
    Guess(usize),
}

/// Parses one frame of link type `link` (what was captured of it).
pub fn parse_frame(link: u32, data: &[u8]) -> Result<ParsedPacket, Skip> {
    let l3 = match link {
        linktype::ETHERNET => {
            let eth = EthernetPacket::new(data).ok_or(Skip::TruncatedL2)?;
            L3::Ethertype(eth.get_ethertype().0, 14)
        }
        linktype::LINUX_SLL => L3::Ethertype(be16(data, 14).ok_or(Skip::TruncatedL2)?, 16),
        linktype::LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(Skip::TruncatedL2);
            }
            L3::Ethertype(be16(data, 0).ok_or(Skip::TruncatedL2)?, 20)
        }
        linktype::RAW | linktype::DLT_RAW_12 | linktype::DLT_RAW_14 => L3::Guess(0),
        linktype::IPV4 => L3::Ethertype(ETH_P_IP, 0),
        linktype::IPV6 => L3::Ethertype(ETH_P_IPV6, 0),
        linktype::NULL | linktype::LOOP => {
            let b = data.get(..4).ok_or(Skip::TruncatedL2)?;
            let mut af = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            // NULL is in the capturing host's byte order: a family is < 2^16.
            if link == linktype::NULL && af & 0xffff_0000 != 0 {
                af = af.swap_bytes();
            }
            match af {
                2 => L3::Ethertype(ETH_P_IP, 4),
                10 | 24 | 28 | 30 => L3::Ethertype(ETH_P_IPV6, 4),
                _ => return Err(Skip::NonIp),
            }
        }
        _ => return Err(Skip::UnsupportedLinkType),
    };
    let (ethertype, off) = match l3 {
        L3::Ethertype(t, off) => resolve_ethertype(data, t, off)?,
        L3::Guess(off) => guess_version(data, off)?,
    };
    let l2_len = u32::try_from(off).map_err(|_| Skip::TruncatedL2)?;
    let ip = data.get(off..).ok_or(Skip::TruncatedL2)?;
    let mut m = match ethertype {
        ETH_P_IP => parse_ipv4(ip)?,
        ETH_P_IPV6 => parse_ipv6(ip)?,
        _ => return Err(Skip::NonIp),
    };
    m.l2_len = l2_len;
    Ok(m)
}

/// VLAN tags (two at most, as the kernel), then PPPoE or MPLS.
fn resolve_ethertype(data: &[u8], mut t: u16, mut off: usize) -> Result<(u16, usize), Skip> {
    for _ in 0..MAX_VLAN_TAGS {
        if t != ETH_P_8021Q && t != ETH_P_8021AD {
            break;
        }
        t = be16(data, off + 2).ok_or(Skip::TruncatedL2)?;
        off += 4;
    }
    match t {
        ETH_P_PPPOE_SESS => {
            // ver/type, code, session id, length; then the PPP protocol.
            let ppp = be16(data, off + 6).ok_or(Skip::TruncatedL2)?;
            match ppp {
                PPP_IP => Ok((ETH_P_IP, off + 8)),
                PPP_IPV6 => Ok((ETH_P_IPV6, off + 8)),
                _ => Err(Skip::NonIp),
            }
        }
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => loop {
            let label = be32(data, off).ok_or(Skip::TruncatedL2)?;
            off += 4;
            if label & 0x100 != 0 {
                break guess_version(data, off);
            }
        },
        _ => Ok((t, off)),
    }
}

fn guess_version(data: &[u8], off: usize) -> Result<(u16, usize), Skip> {
    let first = data.get(off).ok_or(Skip::TruncatedL3)?;
    match first >> 4 {
        4 => Ok((ETH_P_IP, off)),
        6 => Ok((ETH_P_IPV6, off)),
        _ => Err(Skip::NonIp),
    }
}

fn empty(proto: u8, src: IpAddr, dst: IpAddr, claimed: u32) -> ParsedPacket {
    ParsedPacket {
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
        l2_len: 0,
        claimed,
        tcp_flags: 0,
        initiator: false,
        responder: false,
        truncated: false,
        frag: Frag::None,
        frag_id: 0,
    }
}

fn parse_ipv4(ip: &[u8]) -> Result<ParsedPacket, Skip> {
    let h = Ipv4Packet::new(ip).ok_or(Skip::TruncatedL3)?;
    if h.get_version() != 4 {
        return Err(Skip::NonIp);
    }
    let mut m = empty(
        h.get_next_level_protocol().0,
        IpAddr::V4(h.get_source()),
        IpAddr::V4(h.get_destination()),
        u32::from(h.get_total_length()),
    );
    // pnet splits flags and offset; the kernel tests the raw 16-bit field.
    let frag_off = (u16::from(h.get_flags()) << 13) | h.get_fragment_offset();
    if frag_off & (IP_MF | IP_OFFMASK) != 0 {
        m.frag = if frag_off & IP_OFFMASK != 0 {
            Frag::Later
        } else {
            Frag::First
        };
        m.frag_id = u32::from(h.get_identification());
    }
    let ihl = usize::from(h.get_header_length()) * 4;
    if ihl < 20 || ihl > ip.len() {
        m.truncated = true;
    } else if m.frag != Frag::Later {
        parse_l4(&mut m, &ip[ihl..]);
    }
    Ok(m)
}

fn is_ipv6_ext(h: u8) -> bool {
    matches!(
        h,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AH | NEXTHDR_FRAGMENT
    )
}

fn parse_ipv6(ip: &[u8]) -> Result<ParsedPacket, Skip> {
    let h = Ipv6Packet::new(ip).ok_or(Skip::TruncatedL3)?;
    if h.get_version() != 6 {
        return Err(Skip::NonIp);
    }
    let payload_len = u32::from(h.get_payload_length());
    // payload_len 0 is a jumbogram or BIG TCP: no usable claim.
    let claimed = if payload_len == 0 {
        0
    } else {
        payload_len + 40
    };
    let mut m = empty(
        h.get_next_header().0,
        IpAddr::V6(h.get_source()),
        IpAddr::V6(h.get_destination()),
        claimed,
    );
    if let Some(off) = walk_ipv6_ext(&mut m, ip) {
        if let Some(l4) = ip.get(off..) {
            parse_l4(&mut m, l4);
        } else {
            m.truncated = true;
        }
    }
    Ok(m)
}

/// The kernel's `walk_ipv6_ext`: the offset of the upper-layer header, or
/// `None` when there is none to parse; `m.proto` is the last next-header read.
fn walk_ipv6_ext(m: &mut ParsedPacket, ip: &[u8]) -> Option<usize> {
    let mut off = 40usize;
    let mut proto = m.proto;
    for _ in 0..IPV6_MAX_EXT_HDRS {
        if !is_ipv6_ext(proto) {
            break;
        }
        let Some(h) = off.checked_add(8).and_then(|end| ip.get(off..end)) else {
            // Every extension header is at least 8 bytes long.
            m.truncated = true;
            m.proto = proto;
            return None;
        };
        if proto == NEXTHDR_FRAGMENT {
            let fo = u16::from_be_bytes([h[2], h[3]]);
            off += 8;
            proto = h[0];
            if fo & (IP6_OFFMASK | IP6_MF) != 0 {
                m.frag_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                if fo & IP6_OFFMASK != 0 {
                    m.frag = Frag::Later;
                    m.proto = proto;
                    return None;
                }
                m.frag = Frag::First;
            }
        } else if proto == NEXTHDR_AH {
            off += (usize::from(h[1]) + 2) * 4;
            proto = h[0];
        } else {
            off += (usize::from(h[1]) + 1) * 8;
            proto = h[0];
        }
    }
    m.proto = proto;
    if is_ipv6_ext(proto) {
        None
    } else {
        Some(off)
    }
}

/// The kernel's `parse_l4`: ports, TCP flags, direction hints.
fn parse_l4(m: &mut ParsedPacket, l4: &[u8]) {
    match m.proto {
        proto::TCP => {
            let Some(t) = TcpPacket::new(l4) else {
                m.truncated = true;
                return;
            };
            m.sport = t.get_source();
            m.dport = t.get_destination();
            let f = t.get_flags();
            m.tcp_flags = f;
            if f & (TCP_SYN | TCP_ACK) == TCP_SYN {
                m.initiator = true;
            } else if f & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK) {
                m.responder = true;
            }
        }
        proto::UDP => {
            let Some(u) = UdpPacket::new(l4) else {
                m.truncated = true;
                return;
            };
            m.sport = u.get_source();
            m.dport = u.get_destination();
        }
        proto::ICMP | proto::ICMPV6 => {
            // The kernel wants the 8-byte echo header for any ICMP type.
            if l4.len() < 8 {
                m.truncated = true;
                return;
            }
            // Echo types per ICMP version, as in the kernel program.
            let kind = if m.proto == proto::ICMP {
                IcmpPacket::new(l4).map(|p| p.get_icmp_type().0)
            } else {
                Icmpv6Packet::new(l4).map(|p| p.get_icmpv6_type().0)
            };
            let Some(kind) = kind else {
                m.truncated = true;
                return;
            };
            let v4 = m.proto == proto::ICMP;
            match kind {
                ICMP_ECHO if v4 => m.initiator = true,
                ICMPV6_ECHO_REQUEST if !v4 => m.initiator = true,
                ICMP_ECHOREPLY if v4 => m.responder = true,
                ICMPV6_ECHO_REPLY if !v4 => m.responder = true,
                _ => return,
            }
            let id = be16(l4, 4).unwrap_or(0);
            m.sport = id;
            m.dport = id;
        }
        _ => {}
    }
}
