//! Ethernet frames for `BPF_PROG_TEST_RUN`: TCP/UDP over IPv4/IPv6 with exact
//! lengths. Checksums stay zero: the flow programs never read them.

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// IPPROTO_TCP.
pub const TCP: u8 = 6;
/// IPPROTO_UDP.
pub const UDP: u8 = 17;

fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    if proto == TCP {
        h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]); // seq, ack
        h.push(5 << 4); // data offset 5 words
        h.push(0x18); // PSH|ACK
        h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
    } else {
        h.extend_from_slice(&[0, 0, 0, 0]); // length (patched below), checksum
    }
    h
}

/// An IPv4 frame of exactly `frame_len` bytes (≥ 14 + 20 + L4 header).
pub fn ipv4(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let l4h = l4(proto, sport, dport);
    let ip_len = frame_len - 14;
    let mut f = Vec::with_capacity(frame_len);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    f.push(0x45);
    f.push(0);
    f.extend_from_slice(&u16::try_from(ip_len).unwrap_or(u16::MAX).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0]); // id, DF
    f.push(64);
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4h);
    if proto == UDP {
        let udp_len = u16::try_from(ip_len - 20).unwrap_or(u16::MAX);
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&udp_len.to_be_bytes());
    }
    f.resize(frame_len, 0);
    f
}

/// An IPv6 frame of exactly `frame_len` bytes (≥ 14 + 40 + L4 header).
pub fn ipv6(
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    frame_len: usize,
) -> Vec<u8> {
    let l4h = l4(proto, sport, dport);
    let payload = frame_len - 14 - 40;
    let mut f = Vec::with_capacity(frame_len);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(payload).unwrap_or(u16::MAX).to_be_bytes());
    f.push(proto);
    f.push(64);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4h);
    if proto == UDP {
        let udp_len = u16::try_from(payload).unwrap_or(u16::MAX);
        f[14 + 40 + 4..14 + 40 + 6].copy_from_slice(&udp_len.to_be_bytes());
    }
    f.resize(frame_len, 0);
    f
}

/// The i-th of many distinct 64-byte TCP/IPv4 flows (distinct source address and port).
pub fn distinct_tcp4(i: u32) -> Vec<u8> {
    let [_, a, b, c] = i.to_be_bytes();
    let sport = 1024 + u16::try_from(i % 60_000).unwrap_or(0);
    ipv4(TCP, [10, a, b, c], [192, 168, 0, 1], sport, 443, 64)
}

/// A deterministic shuffle of 0..n (xorshift Fisher–Yates), so map accesses are not sequential.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut s = seed | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let j = usize::try_from(s % (i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_lengths() {
        assert_eq!(ipv4(TCP, [1; 4], [2; 4], 1, 2, 64).len(), 64);
        assert_eq!(ipv4(UDP, [1; 4], [2; 4], 1, 2, 1500).len(), 1500);
        assert_eq!(ipv6(TCP, [1; 16], [2; 16], 1, 2, 74).len(), 74);
        let f = ipv4(TCP, [1; 4], [2; 4], 1, 2, 1514);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 1500);
    }

    #[test]
    fn distinct_and_shuffled() {
        assert_ne!(distinct_tcp4(1), distinct_tcp4(2));
        let mut s = shuffled(1000, 7);
        assert_ne!(s, (0..1000).collect::<Vec<_>>());
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
    }
}
