//! Exact tests of the packet-flow programs (`flow.bpf.c`) with
//! `BPF_PROG_TEST_RUN`: hand-made frames in, exact map contents and counters out.
//!
//! Needs root. Every test loads its own object, so maps start empty and the
//! tests can run in parallel threads.
//!
//! What a test run looks like from inside the programs (kernel 6.18):
//! - XDP: `ingress_ifindex` is the loopback device of the caller's network
//!   namespace (ifindex 1); TC: `skb->ifindex` is the same device.
//! - Frames shorter than an Ethernet header (0..13 bytes) are refused by the
//!   kernel with EINVAL before the program runs; so are TC (skb) runs of an
//!   IPv4/IPv6 ethertype whose fixed IP header is incomplete. Those cut
//!   headers are tested through XDP, and behind a VLAN tag for TC.
//! - TC accepts a `struct __sk_buff` context whose `gso_segs` / `gso_size`
//!   are copied into the skb, so the GSO accounting is tested here too.
//!
//! Length: one test per parser and accounting rule of the program, sharing
//! the harness in `flow_prog/`; splitting them over binaries would load the
//! same objects in each.

#[path = "flow_prog/harness.rs"]
mod harness;
#[path = "flow_prog/packets.rs"]
mod packets;

use std::collections::HashMap;

use aya::programs::{TestRun, TestRunOptions};
use flowlens_ebpf::abi::*;
use harness::*;
use packets::*;

const A4: [u8; 4] = [10, 0, 0, 1];
const B4: [u8; 4] = [10, 0, 0, 2];
const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    ether(ETH_P_IP, &V4::new(src, dst, proto).packet(&[], l4))
}

fn v6(src: [u8; 16], dst: [u8; 16], next: u8, rest: &[u8]) -> Vec<u8> {
    ether(ETH_P_IPV6, &ipv6(src, dst, next, rest))
}

#[test]
fn tcp_handshake_and_data_ipv4() {
    let h = Harness::new();
    let mss = [2, 4, 0x05, 0xb4];
    let frames = [
        v4(A4, B4, IPPROTO_TCP, &tcp(40000, 80, TCP_SYN, &mss, &[])),
        v4(
            B4,
            A4,
            IPPROTO_TCP,
            &tcp(80, 40000, TCP_SYN | TCP_ACK, &mss, &[]),
        ),
        pad60(v4(A4, B4, IPPROTO_TCP, &tcp(40000, 80, TCP_ACK, &[], &[]))),
        v4(
            A4,
            B4,
            IPPROTO_TCP,
            &tcp(40000, 80, TCP_PSH | TCP_ACK, &[], &filler(100)),
        ),
        pad60(v4(
            A4,
            B4,
            IPPROTO_TCP,
            &tcp(40000, 80, TCP_FIN | TCP_ACK, &[], &[]),
        )),
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            // 44 + 40 + 140 + 40 (Ethernet padding is not counted)
            (
                key4(A4, B4, 40000, 80, IPPROTO_TCP),
                tot(
                    4,
                    264,
                    TCP_SYN | TCP_ACK | TCP_PSH | TCP_FIN,
                    FLOW_F_INITIATOR,
                ),
            ),
            (
                key4(B4, A4, 80, 40000, IPPROTO_TCP),
                tot(1, 44, TCP_SYN | TCP_ACK, FLOW_F_RESPONDER),
            ),
        ]),
        &[(CNT_PACKETS_SEEN, 10)],
    );
}

#[test]
fn udp_ipv4_with_options_and_padding() {
    let h = Harness::new();
    let ra_nops = [1, 1, 1, 1, 0x94, 4, 0, 0];
    let max_opts = [1u8; 40];
    let frames = [
        pad60(v4(A4, B4, IPPROTO_UDP, &udp(5000, 53, &[1, 2, 3, 4]))),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet(&ra_nops, &udp(5000, 53, &filler(20))),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet(&max_opts, &udp(6000, 7000, &[])),
        ),
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            // 32 + (28 + 8 + 20)
            (key4(A4, B4, 5000, 53, IPPROTO_UDP), tot(2, 88, 0, 0)),
            // ihl 15: 60 + 8
            (key4(A4, B4, 6000, 7000, IPPROTO_UDP), tot(1, 68, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 6)],
    );
}

#[test]
fn vlan_and_qinq() {
    let h = Harness::new();
    let q = (ETH_P_8021Q, 100);
    let ad = (ETH_P_8021AD, 200);
    let frames = [
        pad60(eth(
            &[q],
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet(&[], &udp(1111, 2222, &filler(10))),
        )),
        eth(
            &[ad, q],
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_ICMP).packet(&[], &icmp(8, 0, 0x4242, 1, &filler(56))),
        ),
        eth(
            &[q, q],
            ETH_P_IPV6,
            &ipv6(A6, B6, IPPROTO_UDP, &udp(3333, 4444, &filler(2))),
        ),
        // A third tag is beyond the parser: not IP for it.
        eth(
            &[ad, q, q],
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet(&[], &udp(1, 2, &[])),
        ),
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            (key4(A4, B4, 1111, 2222, IPPROTO_UDP), tot(1, 38, 0, 0)),
            (
                key4(A4, B4, 0x4242, 0x4242, IPPROTO_ICMP),
                tot(1, 84, 0, FLOW_F_INITIATOR),
            ),
            (key6(A6, B6, 3333, 4444, IPPROTO_UDP), tot(1, 50, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 8), (CNT_NON_IP, 2)],
    );
}

#[test]
fn icmp_echo_and_errors_ipv4() {
    let h = Harness::new();
    let inner = V4::new(B4, A4, IPPROTO_UDP).packet(&[], &udp(5000, 33434, &[]));
    let frames = [
        v4(A4, B4, IPPROTO_ICMP, &icmp(8, 0, 7, 1, &filler(56))),
        v4(B4, A4, IPPROTO_ICMP, &icmp(0, 0, 7, 1, &filler(56))),
        v4(A4, B4, IPPROTO_ICMP, &icmp(8, 0, 7, 2, &filler(56))),
        // port unreachable quoting the offending header + 8 bytes: ports 0
        v4(A4, B4, IPPROTO_ICMP, &icmp(3, 3, 0, 0, &inner)),
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            (
                key4(A4, B4, 7, 7, IPPROTO_ICMP),
                tot(2, 168, 0, FLOW_F_INITIATOR),
            ),
            (
                key4(B4, A4, 7, 7, IPPROTO_ICMP),
                tot(1, 84, 0, FLOW_F_RESPONDER),
            ),
            (key4(A4, B4, 0, 0, IPPROTO_ICMP), tot(1, 56, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 8)],
    );
}

#[test]
fn icmpv6_echo_and_neighbour_discovery() {
    let h = Harness::new();
    let mut sol_node = [0u8; 16];
    sol_node[..2].copy_from_slice(&[0xff, 0x02]);
    sol_node[11..].copy_from_slice(&[1, 0xff, 0, 0, 2]);
    let mut ns_body = B6.to_vec();
    ns_body.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]); // source link-layer address option
    let frames = [
        v6(A6, B6, IPPROTO_ICMPV6, &icmp(128, 0, 0x99, 1, &filler(16))),
        v6(B6, A6, IPPROTO_ICMPV6, &icmp(129, 0, 0x99, 1, &filler(16))),
        v6(A6, sol_node, IPPROTO_ICMPV6, &icmp(135, 0, 0, 0, &ns_body)),
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            (
                key6(A6, B6, 0x99, 0x99, IPPROTO_ICMPV6),
                tot(1, 64, 0, FLOW_F_INITIATOR),
            ),
            (
                key6(B6, A6, 0x99, 0x99, IPPROTO_ICMPV6),
                tot(1, 64, 0, FLOW_F_RESPONDER),
            ),
            (key6(A6, sol_node, 0, 0, IPPROTO_ICMPV6), tot(1, 72, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 6)],
    );
}

#[test]
fn ipv6_extension_headers() {
    let h = Harness::new();
    // hop-by-hop (8) -> destination options (16) -> TCP SYN (20)
    let hbh_dst_tcp = ext_hdr(
        IPPROTO_DSTOPTS,
        0,
        &ext_hdr(IPPROTO_TCP, 1, &tcp(40001, 443, TCP_SYN, &[], &[])),
    );
    // routing (24) -> AH (x=4: 24) -> UDP (8 + 10)
    let rt_ah_udp = ext_hdr(
        IPPROTO_AH,
        2,
        &ah_hdr(IPPROTO_UDP, 4, &udp(5353, 5353, &filler(10))),
    );
    // n destination-options headers of 8 bytes, then UDP
    let dst_chain = |n: usize, sport: u16| {
        let mut rest = udp(sport, 9, &[]);
        for _ in 0..n {
            let next = if rest.len() == 8 {
                IPPROTO_UDP
            } else {
                IPPROTO_DSTOPTS
            };
            rest = ext_hdr(next, 0, &rest);
        }
        rest
    };
    let frames = [
        v6(A6, B6, IPPROTO_HOPOPTS, &hbh_dst_tcp),
        v6(A6, B6, IPPROTO_ROUTING, &rt_ah_udp),
        // 6 extension headers (the walk's limit) are walked, the UDP header after them is parsed
        v6(A6, B6, IPPROTO_DSTOPTS, &dst_chain(6, 8888)),
        // a 7th is beyond the walk: counted with that header as protocol
        v6(A6, B6, IPPROTO_DSTOPTS, &dst_chain(7, 9999)),
        // hop-by-hop -> no next header (59): any other protocol
        v6(A6, B6, IPPROTO_HOPOPTS, &ext_hdr(59, 0, &[])),
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            (
                key6(A6, B6, 40001, 443, IPPROTO_TCP),
                tot(1, 84, TCP_SYN, FLOW_F_INITIATOR),
            ),
            (key6(A6, B6, 5353, 5353, IPPROTO_UDP), tot(1, 106, 0, 0)),
            (
                key6(A6, B6, 8888, 9, IPPROTO_UDP),
                tot(1, 40 + 48 + 8, 0, 0),
            ),
            (
                key6(A6, B6, 0, 0, IPPROTO_DSTOPTS),
                tot(1, 40 + 56 + 8, 0, 0),
            ),
            (key6(A6, B6, 0, 0, 59), tot(1, 48, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 10)],
    );
}

#[test]
fn other_protocols_have_no_ports() {
    let h = Harness::new();
    let inner = V4::new(A4, B4, IPPROTO_UDP).packet(&[], &udp(1, 2, &[]));
    let frames = [
        v4(A4, B4, IPPROTO_GRE, &gre(&inner)),
        v6(A6, B6, IPPROTO_GRE, &gre(&inner)),
        v6(A6, B6, 50, &filler(64)), // ESP
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            (key4(A4, B4, 0, 0, IPPROTO_GRE), tot(1, 52, 0, 0)),
            (key6(A6, B6, 0, 0, IPPROTO_GRE), tot(1, 72, 0, 0)),
            (key6(A6, B6, 0, 0, 50), tot(1, 104, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 6)],
    );
}

/// Splits `l4` into IPv4 fragments of `chunk` bytes (a multiple of 8).
fn v4_fragments(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    l4: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    let n = l4.len().div_ceil(chunk);
    (0..n)
        .map(|i| {
            let part = &l4[i * chunk..l4.len().min((i + 1) * chunk)];
            let off = u16::try_from(i * chunk / 8).expect("offset");
            let mf = if i + 1 < n { IP_MF } else { 0 };
            ether(
                ETH_P_IP,
                &V4::new(src, dst, proto)
                    .frag(id, mf | off)
                    .packet(&[], part),
            )
        })
        .collect()
}

fn frag_key(src: [u8; 16], dst: [u8; 16], id: u32, proto: u8) -> FragKey {
    FragKey {
        src,
        dst,
        id,
        proto,
        pad: [0; 3],
    }
}

fn frag_ports(sport: u16, dport: u16) -> FragValue {
    FragValue {
        sport,
        dport,
        pad: 0,
    }
}

#[test]
fn ipv4_fragments() {
    let h = Harness::new();
    // 3008 bytes of UDP in 1480-byte pieces: L3 1500 + 1500 + 68
    let udp_frags = v4_fragments(
        A4,
        B4,
        IPPROTO_UDP,
        0xbeef,
        &udp(5000, 5001, &filler(3000)),
        1480,
    );
    assert_eq!(udp_frags.len(), 3);
    h.both(&udp_frags);
    // a big ping: 2008 bytes of ICMP echo in 2 fragments (L3 1500 + 548)
    h.both(&v4_fragments(
        A4,
        B4,
        IPPROTO_ICMP,
        0x0777,
        &icmp(8, 0, 0x77, 1, &filler(2000)),
        1480,
    ));
    // GRE in 2 fragments (1500 + 44): no ports, so no fragment map
    h.both(&v4_fragments(
        A4,
        B4,
        IPPROTO_GRE,
        0x0999,
        &gre(&filler(1500)),
        1480,
    ));
    // reordered: the second fragment arrives before the first
    let late = v4_fragments(
        B4,
        A4,
        IPPROTO_UDP,
        0x0aaa,
        &udp(6000, 6001, &filler(1000)),
        512,
    );
    assert_eq!(late.len(), 2);
    h.both(&[late[1].clone(), late[0].clone(), late[1].clone()]);
    // a later fragment whose first fragment never comes
    h.both(&[ether(
        ETH_P_IP,
        &V4::new(A4, B4, IPPROTO_UDP)
            .frag(0x0bad, IP_MF | 100)
            .packet(&[], &filler(800)),
    )]);
    let f = FLOW_F_FRAGMENT;
    h.expect(
        &on_both(&[
            (key4(A4, B4, 5000, 5001, IPPROTO_UDP), tot(3, 3068, 0, f)),
            (
                key4(A4, B4, 0x77, 0x77, IPPROTO_ICMP),
                tot(2, 2048, 0, f | FLOW_F_INITIATOR),
            ),
            (key4(A4, B4, 0, 0, IPPROTO_GRE), tot(2, 1544, 0, f)),
            // reordered (L3 532 + 516): the early second fragment has no
            // ports; the first and the repeated second have them
            (key4(B4, A4, 0, 0, IPPROTO_UDP), tot(1, 516, 0, f)),
            (
                key4(B4, A4, 6000, 6001, IPPROTO_UDP),
                tot(2, 532 + 516, 0, f),
            ),
            (key4(A4, B4, 0, 0, IPPROTO_UDP), tot(1, 820, 0, f)),
        ]),
        &[(CNT_PACKETS_SEEN, 22), (CNT_FRAG_NO_FIRST, 4)],
    );
    let want: HashMap<FragKey, FragValue> = [
        (
            frag_key(mapped(A4), mapped(B4), 0xbeef, IPPROTO_UDP),
            frag_ports(5000, 5001),
        ),
        (
            frag_key(mapped(A4), mapped(B4), 0x0777, IPPROTO_ICMP),
            frag_ports(0x77, 0x77),
        ),
        (
            frag_key(mapped(B4), mapped(A4), 0x0aaa, IPPROTO_UDP),
            frag_ports(6000, 6001),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(h.frags(), want);
}

#[test]
fn ipv6_fragments() {
    let h = Harness::new();
    let data = udp(7000, 7001, &filler(1500));
    // hop-by-hop, then the fragment header; 1008 + 500 bytes of UDP
    let first = v6(
        A6,
        B6,
        IPPROTO_HOPOPTS,
        &ext_hdr(
            IPPROTO_FRAGMENT,
            0,
            &frag6_hdr(IPPROTO_UDP, 0, true, 0xdead_beef, &data[..1008]),
        ),
    );
    let second = v6(
        A6,
        B6,
        IPPROTO_HOPOPTS,
        &ext_hdr(
            IPPROTO_FRAGMENT,
            0,
            &frag6_hdr(IPPROTO_UDP, 1008, false, 0xdead_beef, &data[1008..]),
        ),
    );
    let orphan = v6(
        A6,
        B6,
        IPPROTO_FRAGMENT,
        &frag6_hdr(IPPROTO_UDP, 2000, true, 1, &filler(100)),
    );
    // an atomic fragment (offset 0, no M) is a whole datagram
    let atomic = v6(
        B6,
        A6,
        IPPROTO_FRAGMENT,
        &frag6_hdr(IPPROTO_UDP, 0, false, 2, &udp(9000, 9001, &[1; 4])),
    );
    h.both(&[first, second, orphan, atomic]);
    h.expect(
        &on_both(&[
            // (40 + 8 + 8 + 1008) + (40 + 8 + 8 + 500)
            (
                key6(A6, B6, 7000, 7001, IPPROTO_UDP),
                tot(2, 1064 + 556, 0, FLOW_F_FRAGMENT),
            ),
            (
                key6(A6, B6, 0, 0, IPPROTO_UDP),
                tot(1, 148, 0, FLOW_F_FRAGMENT),
            ),
            (key6(B6, A6, 9000, 9001, IPPROTO_UDP), tot(1, 60, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 8), (CNT_FRAG_NO_FIRST, 2)],
    );
    let want: HashMap<FragKey, FragValue> = [(
        frag_key(A6, B6, 0xdead_beef, IPPROTO_UDP),
        frag_ports(7000, 7001),
    )]
    .into_iter()
    .collect();
    assert_eq!(h.frags(), want);
}

fn host(n: u8) -> [u8; 4] {
    [10, 0, 1, n]
}

#[test]
fn truncated_headers_are_counted_as_far_as_parsed() {
    let h = Harness::new();
    let tcp_hdr = tcp(40000, 80, TCP_SYN, &[], &[]);
    let udp_hdr = udp(1, 2, &filler(72));
    let icmp_hdr = icmp(8, 0, 5, 1, &[]);
    let ip_udp = |n: u8| V4::new(host(n), B4, IPPROTO_UDP);
    let mut opts_cut = ip_udp(14).packet(&[1; 40], &udp(1, 2, &[]));
    opts_cut.truncate(24);
    let mut low_ihl = ip_udp(15).packet(&[], &udp(1, 2, &[]));
    low_ihl[0] = 0x43;
    let mut ip6_udp_cut = ipv6_claiming(A6, B6, IPPROTO_UDP, &udp(3, 4, &[]), 8);
    ip6_udp_cut.truncate(44);
    let frames = [
        // a: TCP header cut to 10 bytes, tot_len still claims 40
        ether(
            ETH_P_IP,
            &V4::new(host(10), B4, IPPROTO_TCP).packet_claiming(&[], &tcp_hdr[..10], 40),
        ),
        // b: TCP header cut to 10 bytes, tot_len consistent (30)
        ether(
            ETH_P_IP,
            &V4::new(host(11), B4, IPPROTO_TCP).packet(&[], &tcp_hdr[..10]),
        ),
        // c: UDP header cut to 4 bytes
        ether(ETH_P_IP, &ip_udp(12).packet(&[], &udp_hdr[..4])),
        // d: ICMP echo cut to 4 bytes
        ether(
            ETH_P_IP,
            &V4::new(host(13), B4, IPPROTO_ICMP).packet(&[], &icmp_hdr[..4]),
        ),
        // e: IPv4 header cut to 10 bytes behind a VLAN tag: no addresses, no flow
        eth(
            &[(ETH_P_8021Q, 5)],
            ETH_P_IP,
            &ip_udp(99).packet(&[], &[])[..10],
        ),
        // f: ihl 15 but only 24 bytes of the IPv4 header present
        ether(ETH_P_IP, &opts_cut),
        // g: ihl 3 (less than the fixed header)
        ether(ETH_P_IP, &low_ihl),
        // h: complete headers, tot_len claims 1000 but 80 bytes follow the IP header
        ether(ETH_P_IP, &ip_udp(16).packet_claiming(&[], &udp_hdr, 1000)),
        // i: IPv6 header cut to 30 bytes behind a VLAN tag: no flow
        eth(
            &[(ETH_P_8021Q, 5)],
            ETH_P_IPV6,
            &ipv6(A6, B6, IPPROTO_UDP, &[])[..30],
        ),
        // j: one byte of a hop-by-hop header (payload_len 1)
        v6(B6, A6, IPPROTO_HOPOPTS, &[IPPROTO_UDP]),
        // k: UDP over IPv6 cut to 4 bytes, payload_len claims 8
        ether(ETH_P_IPV6, &ip6_udp_cut),
        // l: a VLAN tag cut after 2 bytes: no flow
        eth(&[], ETH_P_8021Q, &[0, 100]),
    ];
    h.both(&frames);
    // e and i untagged: XDP, and TC where the kernel runs them (5.10; newer
    // kernels refuse a TC test run shorter than the IP header)
    let mut tc_ran = 0;
    for cut in [
        ether(ETH_P_IP, &ip_udp(99).packet(&[], &[])[..10]),
        ether(ETH_P_IPV6, &ipv6(A6, B6, IPPROTO_UDP, &[])[..30]),
    ] {
        h.xdp(&cut);
        tc_ran += h.tc_short(&cut);
    }
    h.expect(
        &on_both(&[
            (key4(host(10), B4, 0, 0, IPPROTO_TCP), tot(1, 30, 0, 0)),
            (key4(host(11), B4, 0, 0, IPPROTO_TCP), tot(1, 30, 0, 0)),
            (key4(host(12), B4, 0, 0, IPPROTO_UDP), tot(1, 24, 0, 0)),
            (key4(host(13), B4, 0, 0, IPPROTO_ICMP), tot(1, 24, 0, 0)),
            (key4(host(14), B4, 0, 0, IPPROTO_UDP), tot(1, 24, 0, 0)),
            (key4(host(15), B4, 0, 0, IPPROTO_UDP), tot(1, 28, 0, 0)),
            (key4(host(16), B4, 1, 2, IPPROTO_UDP), tot(1, 100, 0, 0)),
            (key6(B6, A6, 0, 0, IPPROTO_HOPOPTS), tot(1, 41, 0, 0)),
            (key6(A6, B6, 0, 0, IPPROTO_UDP), tot(1, 44, 0, 0)),
        ]),
        &[
            (CNT_PACKETS_SEEN, 26 + tc_ran),
            (CNT_PARSE_TRUNCATED, 26 + tc_ran),
        ],
    );
}

#[test]
fn length_fields_that_claim_less() {
    let h = Harness::new();
    let frames = [
        // IPv6 payload_len 0 (jumbogram-style) without GSO: what is present
        ether(
            ETH_P_IPV6,
            &ipv6_claiming(A6, B6, IPPROTO_UDP, &udp(1, 2, &filler(20)), 0),
        ),
        // IPv4 tot_len 0: what is present
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet_claiming(&[], &udp(3, 4, &filler(20)), 0),
        ),
        // IPv4 tot_len shorter than the frame (trailer): the claim
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet_claiming(&[], &udp(5, 6, &filler(20)), 30),
        ),
    ];
    h.both(&frames);
    h.expect(
        &on_both(&[
            (key6(A6, B6, 1, 2, IPPROTO_UDP), tot(1, 68, 0, 0)),
            (key4(A4, B4, 3, 4, IPPROTO_UDP), tot(1, 48, 0, 0)),
            (key4(A4, B4, 5, 6, IPPROTO_UDP), tot(1, 30, 0, 0)),
        ]),
        &[(CNT_PACKETS_SEEN, 6)],
    );
}

#[test]
fn non_ip_runts_and_garbage() {
    let h = Harness::new();
    let mut v6_as_v4 = ipv6(A6, B6, IPPROTO_UDP, &udp(1, 2, &[]));
    v6_as_v4.truncate(40);
    let garbage = Rng::new(0x5eed).bytes(64);
    let garbage_type = u16::from_be_bytes([garbage[12], garbage[13]]);
    assert!(
        ![ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD].contains(&garbage_type),
        "the seed gives a non-IP ethertype: {garbage_type:#06x}"
    );
    let frames = [
        pad60(arp_request()),
        ether(ETH_P_LLDP, &filler(30)),
        // version nibble does not match the ethertype
        ether(ETH_P_IP, &v6_as_v4),
        ether(ETH_P_IPV6, &v4(A4, B4, IPPROTO_UDP, &[0; 40])[14..]),
        garbage,
        // 14-byte runts: only the Ethernet header
        ether(ETH_P_ARP, &[]),
        ether(ETH_P_8021Q, &[]),
    ];
    h.both(&frames);
    // IP runts: XDP, and TC where the kernel runs them (5.10)
    let mut tc_ran = 0;
    for runt in [ether(ETH_P_IP, &[]), ether(ETH_P_IPV6, &[])] {
        h.xdp(&runt);
        tc_ran += h.tc_short(&runt);
    }
    // Frames shorter than an Ethernet header: newer kernels refuse the test
    // run (the programs never run); 5.10 runs XDP on them, which passes them
    // and counts a truncated header.
    let mut runt_ran = 0;
    for len in [0usize, 1, 13] {
        let frame = filler(len);
        let x = h.xdp_prog().test_run(TestRunOptions {
            data_in: Some(&frame),
            ..Default::default()
        });
        if let Ok(r) = &x {
            assert_eq!(r.return_value, XDP_PASS, "XDP verdict on {len} bytes");
            runt_ran += 1;
        }
        let t = h.tc_prog().test_run(TestRunOptions {
            data_in: Some(&frame),
            ..Default::default()
        });
        if let Ok(r) = &t {
            assert_eq!(r.return_value, TC_ACT_UNSPEC, "TC verdict on {len} bytes");
            runt_ran += 1;
        }
    }
    h.expect(
        &[],
        &[
            (CNT_PACKETS_SEEN, 16 + tc_ran + runt_ran),
            (CNT_NON_IP, 12),
            (CNT_PARSE_TRUNCATED, 4 + tc_ran + runt_ran),
        ],
    );
}

#[test]
fn gso_super_packets_on_tc() {
    let h = Harness::new();
    let ts_opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]; // NOP NOP timestamp: doff 8
    let tcp_gso = v4(
        A4,
        B4,
        IPPROTO_TCP,
        &tcp(40000, 80, TCP_ACK, &ts_opts, &filler(3000)),
    );
    // 3 segments of 1000: each 20 + 32 + 1000 on the wire
    h.tc_gso(&tcp_gso, 3, 1000);
    // UDP_SEGMENT over IPv6: 500 + 500 + 500 + 300, each with 40 + 8 of headers
    h.tc_gso(
        &v6(A6, B6, IPPROTO_UDP, &udp(4000, 4001, &filler(1800))),
        4,
        500,
    );
    // untrusted GSO (gso_segs not yet computed): ceil(2500 / 1000) = 3 segments
    h.tc_gso(
        &v4(
            A4,
            B4,
            IPPROTO_TCP,
            &tcp(40001, 80, TCP_ACK, &ts_opts, &filler(2500)),
        ),
        0,
        1000,
    );
    // BIG TCP-style tot_len 0 on a GSO packet: skb->len counts
    h.tc_gso(
        &ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_TCP).packet_claiming(
                &[],
                &tcp(40002, 80, TCP_ACK, &[], &filler(2000)),
                0,
            ),
        ),
        2,
        1000,
    );
    // a context with gso_segs 1 is a plain packet
    h.tc_gso(&v4(A4, B4, IPPROTO_UDP, &udp(1, 2, &filler(100))), 1, 0);
    let tc = |k| at(FLOW_HOOK_TC_EGRESS, k);
    h.expect(
        &[
            (
                tc(key4(A4, B4, 40000, 80, IPPROTO_TCP)),
                tot(3, 3 * 52 + 3000, TCP_ACK, 0),
            ),
            (
                tc(key6(A6, B6, 4000, 4001, IPPROTO_UDP)),
                tot(4, 4 * 48 + 1800, 0, 0),
            ),
            (
                tc(key4(A4, B4, 40001, 80, IPPROTO_TCP)),
                tot(3, 3 * 52 + 2500, TCP_ACK, 0),
            ),
            (
                tc(key4(A4, B4, 40002, 80, IPPROTO_TCP)),
                tot(2, 2 * 40 + 2000, TCP_ACK, 0),
            ),
            (tc(key4(A4, B4, 1, 2, IPPROTO_UDP)), tot(1, 128, 0, 0)),
        ],
        &[(CNT_PACKETS_SEEN, 5)],
    );
}

#[test]
fn full_flow_map_is_counted() {
    let h = Harness::with_flow_capacity(2);
    let flow = |sport| v4(A4, B4, IPPROTO_UDP, &udp(sport, 53, &[0; 4]));
    for f in [flow(1), flow(2), flow(3), flow(1)] {
        h.xdp(&f);
    }
    h.expect(
        &[
            (key4(A4, B4, 1, 53, IPPROTO_UDP), tot(2, 64, 0, 0)),
            (key4(A4, B4, 2, 53, IPPROTO_UDP), tot(1, 32, 0, 0)),
        ],
        &[(CNT_PACKETS_SEEN, 4), (CNT_FLOW_MAP_FULL, 1)],
    );
}

/// Random frames behind plausible headers: the programs pass every one
/// unchanged, and every run is accounted for exactly once (a flow packet,
/// a non-IP frame, or a truncated frame without a flow).
#[test]
fn random_frames_are_passed_unchanged_and_accounted() {
    let h = Harness::new();
    let mut rng = Rng::new(0xf10e_1e75);
    let types = [ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD, ETH_P_ARP];
    let runs = 1500u64;
    let mut tc_refused = 0u64;
    for _ in 0..runs {
        let len = 14 + rng.below(150) as usize;
        let mut f = rng.bytes(len);
        let t = types[rng.below(types.len() as u64) as usize];
        f[12..14].copy_from_slice(&t.to_be_bytes());
        if len > 14 && rng.below(4) != 0 {
            f[14] = match t {
                ETH_P_IPV6 => 0x60 | (f[14] & 0x0f),
                _ => 0x45,
            };
            if len > 23 && t == ETH_P_IP && rng.below(2) == 0 {
                f[20] = 0x20; // MF: exercise the fragment map
                f[23] = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP][rng.below(3) as usize];
            }
        }
        h.xdp(&f);
        if (t == ETH_P_IP && len < 14 + 20) || (t == ETH_P_IPV6 && len < 14 + 40) {
            tc_refused += 1 - h.tc_short(&f);
        } else {
            h.tc(&f);
        }
    }
    let runs = 2 * runs - tc_refused;
    let c = h.counters();
    let counted: u64 = h.flows().values().map(|t| t.packets).sum();
    assert_eq!(c[CNT_PACKETS_SEEN as usize], runs);
    assert_eq!(c[CNT_FLOW_MAP_FULL as usize], 0);
    let no_flow = runs
        .checked_sub(counted + c[CNT_NON_IP as usize])
        .unwrap_or_else(|| panic!("more packets counted than run: {counted} flow packets, {c:?}"));
    assert!(
        no_flow <= c[CNT_PARSE_TRUNCATED as usize],
        "{no_flow} runs neither counted nor explained: {c:?}"
    );
    for k in h.flows().keys() {
        assert!(HOOKS.contains(&k.hook) && k.ifindex == LO_IFINDEX, "{k:?}");
    }
}

/// TC ingress (virtual devices) counts like XDP ingress, under the ingress
/// hook, and a GRO/GSO packet as the segments it carries.
#[test]
fn tc_ingress_counts_as_ingress_with_segments() {
    let h = Harness::new();
    let ts_opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let frame = v4(
        A4,
        B4,
        IPPROTO_TCP,
        &tcp(40000, 80, TCP_ACK, &ts_opts, &filler(3000)),
    );
    h.tc_ingress_gso(&frame, 3, 1000);
    h.tc_ingress_gso(
        &v4(
            A4,
            B4,
            IPPROTO_TCP,
            &tcp(40000, 80, TCP_ACK, &ts_opts, &filler(100)),
        ),
        0,
        0,
    );
    let flows = h.flows();
    let key = at(FLOW_HOOK_XDP_INGRESS, key4(A4, B4, 40000, 80, IPPROTO_TCP));
    // 3 segments of 20 + 32 + 1000, then one plain packet of 20 + 32 + 100
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(
        flows.get(&key),
        Some(&tot(4, 3 * 1052 + 152, TCP_ACK, 0)),
        "{flows:?}"
    );
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: set is a zeroed cpu_set_t, CPU_SET writes inside it, and
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "pinning to CPU {cpu}");
}

fn unpin() {
    // SAFETY: as in pin_to_cpu.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..flowlens_collector::loader::possible_cpus() {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn totals_by_key(obs: &[flowlens_correlator::types::FlowObservation]) -> HashMap<u16, (u64, u64)> {
    obs.iter()
        .map(|o| (o.tuple.sport, (o.packets, o.bytes)))
        .collect()
}

/// Four slots per CPU (fewer than a probe window: every window covers them all): the fifth new flow goes to the
/// hash (counted as flow_slots_full, not lost), the hash's overflow is
/// flow_map_full; once the collector has read the slots and published its
/// horizon, idle slots are reclaimed for new flows and the reader neither
/// loses nor repeats a count of the flows that left them.
#[test]
fn slot_window_overflow_and_reclaim() {
    pin_to_cpu(0);
    let h = Harness::with_slots(4, 2);
    let flow = |sport| v4(A4, B4, IPPROTO_UDP, &udp(sport, 53, &[0; 4]));
    for sport in 1..=7 {
        h.xdp(&flow(sport));
    }
    h.xdp(&flow(1));
    // 1..=4 in the slots, 5 and 6 in the hash, 7 lost (hash full).
    h.expect(
        &[
            (key4(A4, B4, 1, 53, IPPROTO_UDP), tot(2, 64, 0, 0)),
            (key4(A4, B4, 2, 53, IPPROTO_UDP), tot(1, 32, 0, 0)),
            (key4(A4, B4, 3, 53, IPPROTO_UDP), tot(1, 32, 0, 0)),
            (key4(A4, B4, 4, 53, IPPROTO_UDP), tot(1, 32, 0, 0)),
            (key4(A4, B4, 5, 53, IPPROTO_UDP), tot(1, 32, 0, 0)),
            (key4(A4, B4, 6, 53, IPPROTO_UDP), tot(1, 32, 0, 0)),
        ],
        &[
            (CNT_PACKETS_SEEN, 8),
            (CNT_FLOW_SLOTS_FULL, 3),
            (CNT_FLOW_MAP_FULL, 1),
        ],
    );
    let in_slots = |h: &Harness| -> Vec<(u16, u32)> {
        let mut v: Vec<(u16, u32)> = h
            .reader()
            .slot_snapshot()
            .iter()
            .map(|(_, s)| (s.key.sport, s.seq))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(in_slots(&h), vec![(1, 2), (2, 2), (3, 2), (4, 2)]);

    // The collector reads everything, then lets go of what was idle before now.
    let mut obs = Vec::new();
    let mut reader = h.reader();
    reader.clear_totals();
    reader.drain(&mut obs);
    let first = totals_by_key(&obs);
    assert_eq!(first.len(), 6);
    assert_eq!(first[&1], (2, 64));
    reader.set_reclaim_before(flowlens_collector::clock::monotonic_ns() + 1);
    drop(reader);

    // Flow 8 takes a reclaimed slot instead of going to the (full) hash.
    h.xdp(&flow(8));
    let slots = in_slots(&h);
    assert_eq!(slots.len(), 4);
    assert!(
        slots.contains(&(8, 4)),
        "flow 8 reclaimed a slot: {slots:?}"
    );
    let gone: Vec<u16> = [1u16, 2, 3, 4]
        .into_iter()
        .filter(|p| !slots.iter().any(|(s, _)| s == p))
        .collect();
    assert_eq!(gone.len(), 1, "exactly one flow left the slots: {slots:?}");
    // Flow 1 again: its slot may have gone; either way it is counted once more.
    h.xdp(&flow(1));
    let mut obs = Vec::new();
    h.reader().drain(&mut obs);
    let second = totals_by_key(&obs);
    assert_eq!(second.get(&8), Some(&(1, 32)), "{second:?}");
    assert_eq!(
        second.get(&1),
        Some(&(3, 96)),
        "cumulative over both occupancies: {second:?}"
    );
    for p in [2u16, 3, 4, 5, 6] {
        assert!(
            !second.contains_key(&p),
            "{p} did not change, so it is not reported: {second:?}"
        );
    }
    let c = h.counters();
    assert_eq!(c[CNT_FLOW_MAP_FULL as usize], 1, "nothing else was lost");
    assert_eq!(c[CNT_FLOW_SLOTS_FULL as usize], 3);
    unpin();
}

/// The same flow on two CPUs lives in a slot of each; the reader reports
/// one key with the sum.
#[test]
fn one_flow_on_two_cpus_is_summed() {
    if flowlens_collector::loader::possible_cpus() < 2 {
        eprintln!("one CPU: nothing to test");
        return;
    }
    let h = Harness::with_slots(1024, 64);
    let f = v4(
        A4,
        B4,
        IPPROTO_TCP,
        &tcp(40000, 80, TCP_ACK, &[], &filler(10)),
    );
    pin_to_cpu(0);
    h.xdp(&f);
    h.xdp(&f);
    pin_to_cpu(1);
    h.xdp(&f);
    unpin();
    let slots = h.reader().slot_snapshot();
    let cpus: Vec<usize> = slots.iter().map(|(i, _)| i / 1024).collect();
    assert_eq!(cpus.len(), 2, "one slot on each CPU: {slots:?}");
    assert_ne!(cpus[0], cpus[1]);
    h.expect(
        &[(
            key4(A4, B4, 40000, 80, IPPROTO_TCP),
            tot(3, 3 * 50, TCP_ACK, 0),
        )],
        &[(CNT_PACKETS_SEEN, 3)],
    );
}

/// The reader drains and publishes its horizon from another thread while
/// packets of ever new flows run through four slots per CPU (so slots are
/// reclaimed all the time, some during a read): at the end every packet is
/// reported exactly once per key.
#[test]
fn concurrent_reads_and_reclaims_count_every_packet_once() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    pin_to_cpu(0);
    let h = Harness::with_slots(4, 4096);
    let done = Arc::new(AtomicBool::new(false));
    let mut reader = h.take_reader();
    reader.reclaim_margin_ns = 20_000_000; // 20 ms: > 1 tick at HZ >= 100
    let stop = Arc::clone(&done);
    let reading = std::thread::spawn(move || {
        pin_to_cpu(1 % flowlens_collector::loader::possible_cpus());
        let mut latest: HashMap<u16, (u64, u64)> = HashMap::new();
        let mut obs = Vec::new();
        let mut reads = 0u64;
        loop {
            let last = stop.load(Ordering::Acquire);
            obs.clear();
            reader.drain(&mut obs);
            reads += 1;
            for o in &obs {
                let e = latest.entry(o.tuple.sport).or_default();
                assert!(
                    o.packets >= e.0,
                    "totals only grow: {} < {}",
                    o.packets,
                    e.0
                );
                *e = (o.packets, o.bytes);
            }
            if last {
                let max_seq = reader.slot_snapshot().iter().map(|(_, s)| s.seq).max();
                return (latest, reads, reader.slots_busy, max_seq);
            }
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
    });
    // Phases of 4 new flows, each sent for ~30 ms: older slots go idle and
    // are reclaimed by later phases.
    let mut sent: HashMap<u16, u64> = HashMap::new();
    // Longer phases where the CPU is emulated (the kernel matrix): the reader
    // must still complete reads, and so reclaims, within each phase.
    let phase_len = std::time::Duration::from_millis(30) * time_scale();
    for phase in 0..20u16 {
        let t0 = std::time::Instant::now();
        let mut i = 0u16;
        while t0.elapsed() < phase_len {
            let sport = 1000 + phase * 4 + i % 4;
            h.xdp(&v4(A4, B4, IPPROTO_UDP, &udp(sport, 53, &[0; 4])));
            *sent.entry(sport).or_default() += 1;
            i = i.wrapping_add(1);
        }
    }
    // Let the reader see the end state after the last packet.
    std::thread::sleep(std::time::Duration::from_millis(20) * time_scale());
    done.store(true, Ordering::Release);
    let (latest, reads, busy, max_seq) = reading.join().expect("reader thread");
    unpin();
    let c = h.counters();
    assert_eq!(c[CNT_FLOW_MAP_FULL as usize], 0);
    assert!(
        reads > 20,
        "the reader ran during the phases ({reads} reads)"
    );
    let got: HashMap<u16, u64> = latest.iter().map(|(k, v)| (*k, v.0)).collect();
    assert_eq!(
        got, sent,
        "per-flow packets reported vs sent ({busy} busy slot reads)"
    );
    for (k, (p, b)) in &latest {
        assert_eq!(*b, p * 32, "bytes of {k}");
    }
    // Each claim adds 2 to a slot's seq: 4 slots served 80 flows.
    assert!(
        max_seq.unwrap_or(0) >= 2 * 10,
        "slots were reclaimed again and again: highest seq {max_seq:?}"
    );
    assert!(
        c[CNT_FLOW_SLOTS_FULL as usize] > 0,
        "and some packets waited in the hash"
    );
}

/// A conversation the collector evicted while its slot kept the key: when
/// the flow comes back, the reader reports only what came after — its
/// packets, bytes, a first_seen after the old last packet and no flags from
/// before — as a new conversation.
#[test]
fn evicted_flow_that_returns_starts_fresh() {
    pin_to_cpu(0);
    let h = Harness::with_slots(1024, 64);
    let syn = v4(A4, B4, IPPROTO_TCP, &tcp(40000, 80, TCP_SYN, &[], &[]));
    let ack = v4(
        A4,
        B4,
        IPPROTO_TCP,
        &tcp(40000, 80, TCP_ACK, &[], &filler(10)),
    );
    h.xdp(&syn);
    let mut obs = Vec::new();
    h.reader().drain(&mut obs);
    assert_eq!(obs.len(), 1);
    let old = obs[0];
    assert_eq!(
        (old.packets, old.tcp_flags, old.initiator),
        (1, TCP_SYN, true)
    );
    // The correlator evicts the conversation; the slot keeps the key.
    h.reader().remove(&old.tuple, old.ifindex, old.hook);
    assert_eq!(h.reader().tracked_keys(), 0);
    std::thread::sleep(std::time::Duration::from_millis(20)); // a few ticks
    h.xdp(&ack);
    obs.clear();
    h.reader().drain(&mut obs);
    unpin();
    assert_eq!(obs.len(), 1, "{obs:?}");
    let new = obs[0];
    assert_eq!((new.packets, new.bytes), (1, 50), "only the new packet");
    assert_eq!(
        new.tcp_flags, TCP_ACK,
        "no SYN from the evicted conversation"
    );
    assert!(!new.initiator);
    assert!(
        new.first_seen_ns > old.last_seen_ns,
        "first_seen {} must follow the evicted conversation's last packet {}",
        new.first_seen_ns,
        old.last_seen_ns
    );
    assert_eq!(
        h.reader().slot_snapshot().len(),
        1,
        "still one slot: the same occupancy"
    );
}
