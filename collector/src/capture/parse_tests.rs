//! Parser and accounting tests over crafted frames.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use super::accounts::FlowAccounts;
use super::parse::{linktype as lt, parse_frame, Frag, ParsedPacket, Skip};

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const A6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub(crate) fn eth(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for t in tags {
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(&[0, 7]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(crate) fn v4(proto: u8, frag_off: u16, id: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let tot = (20 + options.len() + payload.len()) as u16;
    v4_claiming(proto, frag_off, id, options, payload, tot)
}

pub(crate) fn v4_claiming(
    proto: u8,
    fo: u16,
    id: u16,
    opts: &[u8],
    payload: &[u8],
    tot: u16,
) -> Vec<u8> {
    let mut p = vec![0x40 | (5 + opts.len() / 4) as u8, 0];
    p.extend_from_slice(&tot.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&fo.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&A);
    p.extend_from_slice(&B);
    p.extend_from_slice(opts);
    p.extend_from_slice(payload);
    p
}

fn v6(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&A6);
    p.extend_from_slice(&B6);
    p.extend_from_slice(rest);
    p
}

fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0; 8]);
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

pub(crate) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn icmp_echo(kind: u8, id: u16) -> Vec<u8> {
    let mut i = vec![kind, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&[0, 1, 0xaa, 0xbb]);
    i
}

fn ok(link: u32, f: &[u8]) -> ParsedPacket {
    parse_frame(link, f).unwrap()
}

fn ports(m: &ParsedPacket) -> (u8, u16, u16) {
    (m.proto, m.sport, m.dport)
}

#[test]
fn ethernet_vlan_and_qinq() {
    let ip = v4(6, 0x4000, 1, &[], &tcp(40000, 443, 0x02, b"hello"));
    for tags in [&[][..], &[0x8100], &[0x88a8, 0x8100]] {
        let m = ok(lt::ETHERNET, &eth(tags, 0x0800, &ip));
        assert_eq!(ports(&m), (6, 40000, 443));
        assert_eq!(m.l2_len as usize, 14 + 4 * tags.len());
        assert_eq!((m.claimed, m.tcp_flags, m.initiator), (45, 0x02, true));
        assert_eq!(m.src, IpAddr::from(A));
    }
    // A third tag is not parsed (as in the kernel); a cut tag is an L2 cut.
    let three = eth(&[0x88a8, 0x8100, 0x8100], 0x0800, &ip);
    assert_eq!(parse_frame(lt::ETHERNET, &three), Err(Skip::NonIp));
    assert_eq!(
        parse_frame(lt::ETHERNET, &eth(&[0x8100], 0x0800, &[])[..16]),
        Err(Skip::TruncatedL2)
    );
    assert_eq!(
        parse_frame(lt::ETHERNET, &[0u8; 13]),
        Err(Skip::TruncatedL2)
    );
    assert_eq!(
        parse_frame(lt::ETHERNET, &eth(&[], 0x0806, &[0; 28])),
        Err(Skip::NonIp)
    );
    assert_eq!(parse_frame(9999, &ip), Err(Skip::UnsupportedLinkType));
}

#[test]
fn pppoe_and_mpls() {
    let ip = v4(17, 0, 1, &[], &udp(5353, 53, b"q"));
    let mut pppoe = vec![0x11, 0, 0x12, 0x34, 0, 0];
    pppoe.extend_from_slice(&0x0021u16.to_be_bytes());
    pppoe.extend_from_slice(&ip);
    let m = ok(lt::ETHERNET, &eth(&[0x8100], 0x8864, &pppoe));
    assert_eq!((ports(&m), m.l2_len), ((17, 5353, 53), 26));
    let mut lcp = pppoe[..6].to_vec();
    lcp.extend_from_slice(&0xc021u16.to_be_bytes());
    assert_eq!(
        parse_frame(lt::ETHERNET, &eth(&[], 0x8864, &lcp)),
        Err(Skip::NonIp)
    );
    let mut pppoe6 = pppoe[..6].to_vec();
    pppoe6.extend_from_slice(&0x0057u16.to_be_bytes());
    pppoe6.extend_from_slice(&v6(17, &udp(1, 2, b"")));
    assert_eq!(
        ports(&ok(lt::ETHERNET, &eth(&[], 0x8864, &pppoe6))),
        (17, 1, 2)
    );

    // Two labels, bottom of stack on the second; then IPv6 by its nibble.
    let mut mpls = vec![0, 0x01, 0x00, 64, 0, 0x02, 0x01, 64];
    mpls.extend_from_slice(&v6(6, &tcp(1000, 22, 0x12, b"")));
    let m = ok(lt::ETHERNET, &eth(&[], 0x8847, &mpls));
    assert_eq!(
        (ports(&m), m.responder, m.l2_len),
        ((6, 1000, 22), true, 22)
    );
    assert_eq!(
        parse_frame(lt::ETHERNET, &eth(&[], 0x8847, &mpls[..4])),
        Err(Skip::TruncatedL2)
    );
    let mut pw = mpls[..8].to_vec();
    pw.extend_from_slice(&[0; 20]);
    assert_eq!(
        parse_frame(lt::ETHERNET, &eth(&[], 0x8848, &pw)),
        Err(Skip::NonIp)
    );
}

#[test]
fn cooked_raw_and_loopback_link_types() {
    let ip = v4(17, 0, 1, &[], &udp(1, 2, b"x"));
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
    sll.extend_from_slice(&0x0800u16.to_be_bytes());
    sll.extend_from_slice(&ip);
    assert_eq!(ok(lt::LINUX_SLL, &sll).l2_len, 16);
    let mut sll2 = 0x86ddu16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0; 18]);
    sll2.extend_from_slice(&v6(17, &udp(3, 4, b"")));
    assert_eq!(
        (
            ports(&ok(lt::LINUX_SLL2, &sll2)),
            ok(lt::LINUX_SLL2, &sll2).l2_len
        ),
        ((17, 3, 4), 20)
    );
    assert_eq!(
        parse_frame(lt::LINUX_SLL2, &sll2[..19]),
        Err(Skip::TruncatedL2)
    );
    for link in [lt::RAW, lt::DLT_RAW_12, lt::DLT_RAW_14, lt::IPV4] {
        assert_eq!(ok(link, &ip).l2_len, 0);
    }
    let long4 = v4(17, 0, 1, &[], &udp(1, 2, &[0; 40]));
    assert_eq!(parse_frame(lt::IPV6, &long4), Err(Skip::NonIp));
    assert_eq!(parse_frame(lt::RAW, &[0x50; 40]), Err(Skip::NonIp));
    assert_eq!(parse_frame(lt::RAW, &ip[..19]), Err(Skip::TruncatedL3));
    // NULL: host byte order of the capturing machine, either way; LOOP: network order.
    for af in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
        let mut f = af.to_vec();
        f.extend_from_slice(&ip);
        assert_eq!(ok(lt::NULL, &f).l2_len, 4);
    }
    for af in [24u32, 28, 30, 10] {
        let mut f = af.to_be_bytes().to_vec();
        f.extend_from_slice(&v6(17, &udp(3, 4, b"")));
        assert_eq!(ports(&ok(lt::LOOP, &f)), (17, 3, 4));
    }
    assert_eq!(parse_frame(lt::LOOP, &[0, 0, 0, 7, 0x45]), Err(Skip::NonIp));
}

#[test]
fn ipv4_options_lengths_and_cuts() {
    let opts = [1, 1, 1, 0, 0x94, 4, 0, 0];
    let m = ok(
        lt::ETHERNET,
        &eth(&[], 0x0800, &v4(17, 0, 1, &opts, &udp(7, 8, b"data"))),
    );
    assert_eq!((ports(&m), m.claimed, m.truncated), ((17, 7, 8), 40, false));
    // ihl beyond the packet, ihl < 5: counted with the protocol, ports 0.
    let mut cut = v4(6, 0, 1, &opts, &[]);
    cut.truncate(24);
    let m = ok(lt::RAW, &cut);
    assert_eq!((ports(&m), m.truncated), ((6, 0, 0), true));
    let mut low = v4(6, 0, 1, &[], &tcp(1, 2, 0, b""));
    low[0] = 0x44;
    assert!(ok(lt::RAW, &low).truncated);
    // L4 cut: ports 0.
    let m = ok(lt::RAW, &v4(6, 0, 1, &[], &tcp(1, 2, 0, b"")[..19]));
    assert_eq!((ports(&m), m.truncated), ((6, 0, 0), true));
    // Version nibble that does not match the ethertype.
    let mut bad = v4(6, 0, 1, &[], &[]);
    bad[0] = 0x65;
    assert_eq!(
        parse_frame(lt::ETHERNET, &eth(&[], 0x0800, &bad)),
        Err(Skip::NonIp)
    );
}

#[test]
fn icmp_echo_identifier_is_the_port_on_both_sides() {
    let m = ok(lt::RAW, &v4(1, 0, 1, &[], &icmp_echo(8, 0x4242)));
    assert_eq!((ports(&m), m.initiator), ((1, 0x4242, 0x4242), true));
    let m = ok(lt::RAW, &v4(1, 0, 1, &[], &icmp_echo(0, 7)));
    assert_eq!((ports(&m), m.responder), ((1, 7, 7), true));
    let m = ok(lt::RAW, &v4(1, 0, 1, &[], &icmp_echo(3, 7)));
    assert_eq!(ports(&m), (1, 0, 0));
    let m = ok(lt::RAW, &v6(58, &icmp_echo(129, 9)));
    assert_eq!((ports(&m), m.responder), ((58, 9, 9), true));
    assert!(ok(lt::RAW, &v6(58, &icmp_echo(128, 9)[..7])).truncated);
}

fn ext(next: u8, units: u8) -> Vec<u8> {
    let mut h = vec![next, units];
    h.extend_from_slice(&vec![0; 6 + 8 * usize::from(units)]);
    h
}

fn frag6(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

#[test]
fn ipv6_extension_headers() {
    let mut rest = ext(43, 1);
    rest.extend(ext(51, 0));
    rest.extend(vec![17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // AH: (1 + 2) * 4 bytes
    rest.extend(udp(10, 20, b"x"));
    let m = ok(lt::RAW, &v6(0, &rest));
    assert_eq!(
        (ports(&m), m.truncated, m.claimed),
        ((17, 10, 20), false, 40 + rest.len() as u32)
    );
    // Seven headers: more than the walk allows; counted with the last next-header, ports 0.
    let mut many = Vec::new();
    for _ in 0..6 {
        many.extend(ext(60, 0));
    }
    many.extend(ext(17, 0));
    let m = ok(lt::RAW, &v6(60, &many));
    assert_eq!((ports(&m), m.truncated), ((60, 0, 0), false));
    // A cut extension header: its number, ports 0, truncated.
    let m = ok(lt::RAW, &v6(43, &ext(17, 0)[..5]));
    assert_eq!((ports(&m), m.truncated), ((43, 0, 0), true));
    // Fragments: the first carries ports, a later one does not parse L4.
    let mut first = frag6(17, 0, true, 77);
    first.extend(udp(10, 20, b"abcdefgh"));
    let m = ok(lt::RAW, &v6(44, &first));
    assert_eq!(
        (ports(&m), m.frag, m.frag_id),
        ((17, 10, 20), Frag::First, 77)
    );
    let mut later = frag6(17, 2, false, 77);
    later.extend_from_slice(b"tail");
    let m = ok(lt::RAW, &v6(44, &later));
    assert_eq!((ports(&m), m.frag), ((17, 0, 0), Frag::Later));
    // An atomic fragment (offset 0, M clear) is not a fragment.
    let mut atomic = frag6(17, 0, false, 1);
    atomic.extend(udp(1, 2, b""));
    assert_eq!(ok(lt::RAW, &v6(44, &atomic)).frag, Frag::None);
}

#[test]
fn lengths_follow_the_kernel() {
    let mut acc = FlowAccounts::new();
    let frame = |ip: &[u8]| eth(&[], 0x0800, ip);
    // Ethernet padding is not counted: a 28-byte datagram in a 60-byte frame.
    let mut f = frame(&v4(17, 0, 1, &[], &udp(1, 2, b"")));
    f.resize(60, 0);
    let m = ok(lt::ETHERNET, &f);
    assert_eq!(acc.account(&m, f.len() as u32, 1, 10), 28);
    // Header claims more than present: what is present, counted as truncated.
    let f = frame(&v4_claiming(17, 0, 1, &[], &udp(1, 2, b"abc"), 1500));
    assert_eq!(
        acc.account(&ok(lt::ETHERNET, &f), f.len() as u32, 1, 11),
        31
    );
    assert_eq!(acc.stats().truncated, 1);
    // ... unless the frame was longer on the wire (snap length): the claim.
    assert_eq!(acc.account(&ok(lt::ETHERNET, &f), 1514, 1, 12), 1500);
    // tot_len below a minimal header: what is present.
    let f = frame(&v4_claiming(17, 0, 1, &[], &udp(1, 2, b"abc"), 4));
    assert_eq!(
        acc.account(&ok(lt::ETHERNET, &f), f.len() as u32, 1, 13),
        31
    );
    // IPv6 payload_len 0 (jumbogram): what is present.
    let mut j = v6(17, &udp(1, 2, b"abc"));
    j[4..6].copy_from_slice(&[0, 0]);
    assert_eq!(acc.account(&ok(lt::RAW, &j), j.len() as u32, 1, 14), 51);
}

#[test]
fn fragments_take_the_ports_of_their_first_fragment() {
    let mut acc = FlowAccounts::new();
    let first = v4(17, 0x2000, 9, &[], &udp(5000, 53, &[0; 24]));
    let later = v4(17, 4, 9, &[], &[0; 12]);
    let orphan = v4(17, 4, 10, &[], &[0; 12]);
    // A later fragment before its first: ports 0, counted as such.
    for (ip, ts) in [(&later, 1), (&first, 2), (&later, 3), (&orphan, 4)] {
        let m = ok(lt::RAW, ip);
        acc.account(&m, ip.len() as u32, 1, ts);
    }
    assert_eq!(acc.stats().frag_no_first, 2);
    let mut rows: Vec<(u16, u16, u64, u64, bool)> = acc
        .entries()
        .map(|(t, _, c)| (t.sport, t.dport, c.packets, c.bytes, c.fragment))
        .collect();
    rows.sort();
    assert_eq!(rows, vec![(0, 0, 2, 64, true), (5000, 53, 2, 84, true)]);
}

#[test]
fn garbage_never_panics() {
    let seeds = [
        eth(
            &[0x8100],
            0x0800,
            &v4(6, 0, 1, &[1; 8], &tcp(1, 2, 3, b"abc")),
        ),
        eth(&[], 0x86dd, &v6(0, &ext(44, 0))),
        eth(&[], 0x8847, &[0, 0, 1, 0, 0x45]),
    ];
    let mut x = 1u64;
    for s in &seeds {
        for len in 0..=s.len() {
            for _ in 0..40 {
                let mut f = s[..len].to_vec();
                for b in f.iter_mut().skip(12) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x.is_multiple_of(5) {
                        *b = x as u8;
                    }
                }
                for link in [0, 1, 12, 101, 108, 113, 228, 229, 276] {
                    if let Ok(m) = parse_frame(link, &f) {
                        FlowAccounts::new().account(&m, f.len() as u32, 1, 1);
                    }
                }
            }
        }
    }
}
