//! Hand-made frames for the flow programs: every length and field is explicit
//! so a test can state the exact bytes it expects to be counted.
//!
//! Checksums are left zero: the programs never look at them.

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// IPv4 `frag_off` bits.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Ethernet header followed by VLAN tags `(tpid, vid)`, then `ethertype`.
pub fn eth(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An untagged Ethernet frame.
pub fn ether(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    eth(&[], ethertype, payload)
}

/// IPv4 header fields that tests vary.
#[derive(Clone, Copy)]
pub struct V4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    pub id: u16,
    /// Flags and offset (in 8-byte units) as on the wire, host order.
    pub frag_off: u16,
}

impl V4 {
    pub fn new(src: [u8; 4], dst: [u8; 4], proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            id: 0x1234,
            frag_off: IP_DF,
        }
    }

    pub fn frag(mut self, id: u16, frag_off: u16) -> Self {
        self.id = id;
        self.frag_off = frag_off;
        self
    }

    /// Header (with `options`, a multiple of 4 bytes) + payload; tot_len is
    /// the real length.
    pub fn packet(&self, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let len = 20 + options.len() + payload.len();
        self.packet_claiming(options, payload, u16::try_from(len).expect("IPv4 length"))
    }

    /// As [`V4::packet`] but with an arbitrary tot_len.
    pub fn packet_claiming(&self, options: &[u8], payload: &[u8], tot_len: u16) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0, "IPv4 options are 32-bit words");
        let ihl = u8::try_from(5 + options.len() / 4).expect("ihl");
        let mut p = Vec::with_capacity(20 + options.len() + payload.len());
        p.push(0x40 | ihl);
        p.push(0);
        p.extend_from_slice(&tot_len.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.frag_off.to_be_bytes());
        p.push(64);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(options);
        p.extend_from_slice(payload);
        p
    }
}

/// IPv6 header; `next` is the first next-header, `rest` the extension headers
/// and the upper-layer data. payload_len is the real length.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, rest: &[u8]) -> Vec<u8> {
    ipv6_claiming(
        src,
        dst,
        next,
        rest,
        u16::try_from(rest.len()).expect("IPv6 payload length"),
    )
}

/// As [`ipv6`] but with an arbitrary payload_len.
pub fn ipv6_claiming(
    src: [u8; 16],
    dst: [u8; 16],
    next: u8,
    rest: &[u8],
    payload_len: u16,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + rest.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&payload_len.to_be_bytes());
    p.push(next);
    p.push(64);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(rest);
    p
}

/// Hop-by-hop, routing or destination-options header of `(units + 1) * 8`
/// bytes (filled with a PadN option), followed by `rest`.
pub fn ext_hdr(next: u8, units: u8, rest: &[u8]) -> Vec<u8> {
    let len = (usize::from(units) + 1) * 8;
    let mut h = vec![0u8; len];
    h[0] = next;
    h[1] = units;
    h[2] = 1; // PadN
    h[3] = u8::try_from(len - 4).expect("PadN length");
    h.extend_from_slice(rest);
    h
}

/// Authentication header: length field `x` means `(x + 2) * 4` bytes.
pub fn ah_hdr(next: u8, x: u8, rest: &[u8]) -> Vec<u8> {
    let len = (usize::from(x) + 2) * 4;
    let mut h = vec![0u8; len];
    h[0] = next;
    h[1] = x;
    h.extend_from_slice(rest);
    h
}

/// IPv6 fragment header: `offset` in bytes (multiple of 8), `more` = M flag.
pub fn frag6_hdr(next: u8, offset: u16, more: bool, id: u32, rest: &[u8]) -> Vec<u8> {
    assert_eq!(offset % 8, 0);
    let fo = offset | u16::from(more);
    let mut h = vec![next, 0];
    h.extend_from_slice(&fo.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(rest);
    h
}

/// TCP header with `options` (multiple of 4 bytes) and payload.
pub fn tcp(sport: u16, dport: u16, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "TCP options are 32-bit words");
    let doff = u8::try_from(5 + options.len() / 4).expect("doff");
    let mut h = Vec::with_capacity(20 + options.len() + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&1000u32.to_be_bytes()); // seq
    h.extend_from_slice(&(if flags & TCP_ACK != 0 { 2000u32 } else { 0 }).to_be_bytes());
    h.push(doff << 4);
    h.push(flags);
    h.extend_from_slice(&64240u16.to_be_bytes()); // window
    h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    h.extend_from_slice(options);
    h.extend_from_slice(payload);
    h
}

/// UDP header + payload (length field = real length).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap_or(0).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// ICMP / ICMPv6 message: type, code, checksum, then the 4-byte rest of
/// header (`id`, `seq` for echo) and payload.
pub fn icmp(kind: u8, code: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![kind, code, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A minimal GRE header (no options) carrying `payload`.
pub fn gre(payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0, 0];
    h.extend_from_slice(&ETH_P_IP.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// ARP request who-has 10.0.0.2 tell 10.0.0.1.
pub fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&SRC_MAC);
    a.extend_from_slice(&[10, 0, 0, 1]);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&[10, 0, 0, 2]);
    eth(&[], ETH_P_ARP, &a)
}

/// `n` bytes with a recognisable pattern.
pub fn filler(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Pads a frame with zeros to the 60-byte Ethernet minimum (without FCS).
pub fn pad60(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// A small deterministic PRNG (xorshift64*) for garbage and fuzz frames.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
