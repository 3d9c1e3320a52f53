//! A minimal pcap reader: enough to count packets and L3 bytes per direction
//! the way flowlens defines them, as an independent reference.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Link types we decode.
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// One IP packet of a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// IP protocol (the upper-layer one after IPv6 extension headers).
    pub proto: u8,
    /// Sender, with its port (ICMP echo: the identifier; other: 0).
    pub src: SocketAddr,
    /// Receiver, with its port.
    pub dst: SocketAddr,
    /// L3 length: IPv4 total length, or IPv6 payload length + 40.
    pub l3_len: u32,
    /// Transport payload length (TCP after the data offset, UDP after 8
    /// bytes, ICMP after 8 bytes), from the IP length fields.
    pub payload_len: u32,
    /// TCP flags byte (0 otherwise).
    pub tcp_flags: u8,
}

/// Sums for one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounts {
    /// Packets.
    pub packets: u64,
    /// L3 bytes.
    pub bytes: u64,
    /// Transport payload bytes (to check the traffic generator, not flowlens).
    pub payload: u64,
    /// OR of TCP flags.
    pub tcp_flags: u8,
}

/// `(proto, src, dst)` of one direction.
pub type Direction = (u8, SocketAddr, SocketAddr);

/// A parsed capture.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// IP packets in capture order (non-IP frames are skipped).
    pub packets: Vec<Packet>,
    /// Every frame of the file, IP or not (ARP, ...).
    pub frames: u64,
}

impl Capture {
    /// Parses a whole pcap file.
    pub fn parse(data: &[u8]) -> Result<Capture, String> {
        if data.len() < 24 {
            return Err(format!(
                "pcap too short for a global header: {} bytes",
                data.len()
            ));
        }
        let magic = [data[0], data[1], data[2], data[3]];
        let little = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
            _ => return Err(format!("not a pcap file (magic {magic:02x?})")),
        };
        let u32_at = |b: &[u8], off: usize| {
            let v = [b[off], b[off + 1], b[off + 2], b[off + 3]];
            if little {
                u32::from_le_bytes(v)
            } else {
                u32::from_be_bytes(v)
            }
        };
        let linktype = u32_at(data, 20) & 0x0fff_ffff;
        let mut packets = Vec::new();
        let mut frames = 0u64;
        let mut off = 24;
        while off < data.len() {
            if data.len() - off < 16 {
                return Err(format!("truncated record header at offset {off}"));
            }
            let incl = u32_at(data, off + 8) as usize;
            let start = off + 16;
            let end = start.checked_add(incl).filter(|&e| e <= data.len());
            let Some(end) = end else {
                return Err(format!(
                    "truncated record at offset {off}: {incl} bytes announced"
                ));
            };
            if let Some(p) = decode_frame(linktype, &data[start..end])? {
                packets.push(p);
            }
            frames += 1;
            off = end;
        }
        Ok(Capture { packets, frames })
    }

    /// Reads and parses a file.
    pub fn read(path: &std::path::Path) -> Capture {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Capture::parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Per-direction sums.
    pub fn by_direction(&self) -> BTreeMap<Direction, DirCounts> {
        let mut map: BTreeMap<Direction, DirCounts> = BTreeMap::new();
        for p in &self.packets {
            let c = map.entry((p.proto, p.src, p.dst)).or_default();
            c.packets += 1;
            c.bytes += u64::from(p.l3_len);
            c.payload += u64::from(p.payload_len);
            c.tcp_flags |= p.tcp_flags;
        }
        map
    }

    /// Sums of one direction (zeros if never seen).
    pub fn direction(&self, proto: u8, src: SocketAddr, dst: SocketAddr) -> DirCounts {
        self.by_direction()
            .get(&(proto, src, dst))
            .copied()
            .unwrap_or_default()
    }

    /// Directions of `proto` towards or from `server`, for finding the other
    /// end when only the server is known (e.g. a client's ephemeral port).
    pub fn peers_of(&self, proto: u8, server: SocketAddr) -> Vec<SocketAddr> {
        let mut peers: Vec<SocketAddr> = self
            .packets
            .iter()
            .filter(|p| p.proto == proto)
            .filter_map(|p| {
                if p.dst == server {
                    Some(p.src)
                } else if p.src == server {
                    Some(p.dst)
                } else {
                    None
                }
            })
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// A readable per-direction listing for failure messages.
    pub fn summary(&self) -> String {
        self.by_direction()
            .iter()
            .map(|((proto, s, d), c)| {
                format!(
                    "  proto {proto} {s} -> {d}: {} pkts {} bytes (payload {})\n",
                    c.packets, c.bytes, c.payload
                )
            })
            .collect()
    }
}

fn decode_frame(linktype: u32, frame: &[u8]) -> Result<Option<Packet>, String> {
    let (ethertype, l3) = match linktype {
        LINKTYPE_ETHERNET => {
            if frame.len() < 14 {
                return Ok(None);
            }
            let mut et = be16(frame, 12);
            let mut off = 14;
            // 802.1Q / 802.1ad tags.
            while (et == 0x8100 || et == 0x88a8) && frame.len() >= off + 4 {
                et = be16(frame, off + 2);
                off += 4;
            }
            (et, &frame[off..])
        }
        LINKTYPE_LINUX_SLL => {
            if frame.len() < 16 {
                return Ok(None);
            }
            (be16(frame, 14), &frame[16..])
        }
        LINKTYPE_LINUX_SLL2 => {
            if frame.len() < 20 {
                return Ok(None);
            }
            (be16(frame, 0), &frame[20..])
        }
        LINKTYPE_RAW => match frame.first().map(|b| b >> 4) {
            Some(4) => (0x0800, frame),
            Some(6) => (0x86dd, frame),
            _ => return Ok(None),
        },
        other => return Err(format!("unsupported link type {other}")),
    };
    Ok(match ethertype {
        0x0800 => decode_ipv4(l3),
        0x86dd => decode_ipv6(l3),
        _ => None,
    })
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn decode_ipv4(ip: &[u8]) -> Option<Packet> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = u32::from(be16(ip, 2));
    let frag_off = be16(ip, 6) & 0x1fff;
    let proto = ip[9];
    let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
    let l4 = ip.get(ihl..).unwrap_or(&[]);
    let l4_len = total.saturating_sub(ihl as u32);
    // Non-first fragments carry no transport header.
    let (sport, dport, flags, payload) = if frag_off == 0 {
        transport(proto, l4, l4_len)
    } else {
        (0, 0, 0, l4_len)
    };
    Some(Packet {
        proto,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        l3_len: total,
        payload_len: payload,
        tcp_flags: flags,
    })
}

fn decode_ipv6(ip: &[u8]) -> Option<Packet> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let plen = u32::from(be16(ip, 4));
    let addr = |off: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[off..off + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let (src, dst) = (addr(8), addr(24));
    let mut next = ip[6];
    let mut off = 40usize;
    let mut first_fragment = true;
    // Walk extension headers: hop-by-hop, routing, fragment, destination options.
    while matches!(next, 0 | 43 | 44 | 60) && ip.len() >= off + 8 {
        let hdr_len = if next == 44 {
            first_fragment = be16(ip, off + 2) & 0xfff8 == 0;
            8
        } else {
            (usize::from(ip[off + 1]) + 1) * 8
        };
        next = ip[off];
        off += hdr_len;
    }
    let l4 = ip.get(off..).unwrap_or(&[]);
    let l4_len = (plen + 40).saturating_sub(off as u32);
    let (sport, dport, flags, payload) = if first_fragment {
        transport(next, l4, l4_len)
    } else {
        (0, 0, 0, l4_len)
    };
    Some(Packet {
        proto: next,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        l3_len: plen + 40,
        payload_len: payload,
        tcp_flags: flags,
    })
}

/// (sport, dport, tcp flags, payload length) of a transport header.
fn transport(proto: u8, l4: &[u8], l4_len: u32) -> (u16, u16, u8, u32) {
    match proto {
        6 if l4.len() >= 14 => {
            let doff = u32::from(l4[12] >> 4) * 4;
            (
                be16(l4, 0),
                be16(l4, 2),
                l4[13],
                l4_len.saturating_sub(doff),
            )
        }
        17 if l4.len() >= 8 => (be16(l4, 0), be16(l4, 2), 0, l4_len.saturating_sub(8)),
        // ICMP echo request/reply (8/0) and ICMPv6 echo (128/129): the
        // identifier is the "port" on both sides, as flowlens reports it.
        1 | 58 if l4.len() >= 8 && matches!((proto, l4[0]), (1, 0 | 8) | (58, 128 | 129)) => {
            let id = be16(l4, 4);
            (id, id, 0, l4_len.saturating_sub(8))
        }
        _ => (0, 0, 0, l4_len.saturating_sub(8.min(l4_len))),
    }
}
