//! One parser truth: the same frames through the kernel XDP program
//! (`BPF_PROG_TEST_RUN`) and through `flowlens replay`'s userspace parser and
//! accounting must give identical per-direction tables and counters.
//!
//! Needs root (loads `flow.bpf.o`).

#[allow(dead_code)]
#[path = "flow_prog/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "flow_prog/packets.rs"]
mod packets;

use std::collections::HashMap;

use flowlens_collector::capture::FlowAccounts;
use flowlens_collector::capture::{linktype, parse_frame, Skip};
use flowlens_correlator::types::ip_to_mapped;
use flowlens_ebpf::abi::*;
use harness::*;
use packets::*;

const A4: [u8; 4] = [10, 0, 0, 1];
const B4: [u8; 4] = [10, 0, 0, 2];
const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Hand-made frames covering every branch of the parser.
fn corpus() -> Vec<Vec<u8>> {
    let tcp4 = |f: u8, n: usize| {
        V4::new(A4, B4, IPPROTO_TCP).packet(&[], &tcp(40000, 80, f, &[], &filler(n)))
    };
    let mut v = vec![
        ether(ETH_P_IP, &tcp4(TCP_SYN, 0)),
        ether(
            ETH_P_IP,
            &V4::new(B4, A4, IPPROTO_TCP).packet(&[], &tcp(80, 40000, TCP_SYN | TCP_ACK, &[], &[])),
        ),
        pad60(ether(ETH_P_IP, &tcp4(TCP_ACK, 0))),
        eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &tcp4(TCP_ACK | TCP_PSH, 300)),
        eth(
            &[(ETH_P_8021AD, 5), (ETH_P_8021Q, 6)],
            ETH_P_IP,
            &tcp4(TCP_FIN, 3),
        ),
        eth(
            &[(ETH_P_8021AD, 5), (ETH_P_8021Q, 6), (ETH_P_8021Q, 7)],
            ETH_P_IP,
            &tcp4(0, 0),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet(&[1, 1, 1, 0], &udp(5353, 53, b"q")),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_ICMP).packet(&[], &icmp(8, 0, 77, 1, b"ping")),
        ),
        ether(
            ETH_P_IP,
            &V4::new(B4, A4, IPPROTO_ICMP).packet(&[], &icmp(0, 0, 77, 1, b"ping")),
        ),
        ether(
            ETH_P_IP,
            &V4::new(B4, A4, IPPROTO_ICMP).packet(&[], &icmp(3, 1, 0, 0, &[0; 28])),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_GRE).packet(&[], &gre(b"inner")),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet_claiming(&[], &udp(1, 2, b"abc"), 1400),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet_claiming(&[], &udp(1, 2, b"abc"), 3),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_TCP).packet(&[], &tcp(1, 2, 0, &[], &[])[..12]),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP).packet(&[], &[])[..16],
        ),
        ether(ETH_P_ARP, &arp_request()),
        ether(ETH_P_LLDP, &[0; 40]),
        ether(
            ETH_P_IPV6,
            &V4::new(A4, B4, IPPROTO_UDP).packet(&[], &udp(1, 2, &[0; 30])),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6(A6, B6, IPPROTO_TCP, &tcp(5000, 443, TCP_SYN, &[], &[])),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6(
                A6,
                B6,
                IPPROTO_HOPOPTS,
                &ext_hdr(
                    IPPROTO_ROUTING,
                    0,
                    &ext_hdr(
                        IPPROTO_AH,
                        1,
                        &ah_hdr(
                            IPPROTO_DSTOPTS,
                            1,
                            &ext_hdr(IPPROTO_UDP, 0, &udp(7, 8, b"x")),
                        ),
                    ),
                ),
            ),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6(A6, B6, IPPROTO_ICMPV6, &icmp(128, 0, 9, 1, b"")),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6(A6, B6, IPPROTO_ROUTING, &[IPPROTO_UDP, 0, 0]),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6_claiming(A6, B6, IPPROTO_UDP, &udp(1, 2, b""), 0),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6_claiming(A6, B6, IPPROTO_UDP, &udp(1, 2, b""), 900),
        ),
        // Fragments: a later one before its first, the first, the later again, an orphan.
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP)
                .frag(9, 3)
                .packet(&[], &filler(16)),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP)
                .frag(9, IP_MF)
                .packet(&[], &udp(6000, 53, &filler(16))),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP)
                .frag(9, 3)
                .packet(&[], &filler(16)),
        ),
        ether(
            ETH_P_IP,
            &V4::new(A4, B4, IPPROTO_UDP)
                .frag(10, 3)
                .packet(&[], &filler(16)),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6(
                A6,
                B6,
                IPPROTO_FRAGMENT,
                &frag6_hdr(IPPROTO_UDP, 0, true, 5, &udp(1, 9, &filler(8))),
            ),
        ),
        ether(
            ETH_P_IPV6,
            &ipv6(
                A6,
                B6,
                IPPROTO_FRAGMENT,
                &frag6_hdr(IPPROTO_UDP, 16, false, 5, &filler(8)),
            ),
        ),
        ether(ETH_P_IP, &[0x45, 0, 0, 20]),
        eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &[])[..16].to_vec(),
    ];
    let mut v6 = ipv6(A6, B6, IPPROTO_DSTOPTS, &[]);
    for _ in 0..7 {
        v6.extend(ext_hdr(IPPROTO_DSTOPTS, 0, &[]));
    }
    v.push(ether(ETH_P_IPV6, &v6));
    // Mutations of the well-formed frames: cut and flipped bytes.
    let mut rng = Rng::new(7);
    let base = v.clone();
    for f in &base {
        for _ in 0..12 {
            let mut m = f.clone();
            m.truncate(14 + rng.below((m.len() - 13) as u64) as usize);
            for _ in 0..rng.below(4) {
                let i = 12 + rng.below((m.len() - 12) as u64) as usize;
                m[i] = rng.next_u64() as u8;
            }
            v.push(m);
        }
    }
    v
}

#[test]
fn kernel_and_replay_count_every_frame_alike() {
    let h = Harness::new();
    let mut acc = FlowAccounts::new();
    let (mut skip_trunc, mut skip_non_ip) = (0u64, 0u64);
    let frames = corpus();
    for (i, f) in frames.iter().enumerate() {
        h.xdp(f);
        match parse_frame(linktype::ETHERNET, f) {
            Ok(m) => {
                acc.account(&m, f.len() as u32, LO_IFINDEX, i as u64 + 1);
            }
            Err(Skip::NonIp) => skip_non_ip += 1,
            Err(Skip::TruncatedL2 | Skip::TruncatedL3) => skip_trunc += 1,
            Err(Skip::UnsupportedLinkType) => unreachable!(),
        }
    }
    let mine: HashMap<FlowKey, Totals> = acc
        .entries()
        .map(|(t, ifindex, c)| {
            let mut k = key6(
                ip_to_mapped(t.src),
                ip_to_mapped(t.dst),
                t.sport,
                t.dport,
                t.proto,
            );
            k.ifindex = ifindex;
            let flags = (u8::from(c.initiator) * FLOW_F_INITIATOR)
                | (u8::from(c.fragment) * FLOW_F_FRAGMENT)
                | (u8::from(c.responder) * FLOW_F_RESPONDER);
            (k, tot(c.packets, c.bytes, c.tcp_flags, flags))
        })
        .collect();
    let kernel = h.flows();
    for (k, t) in &kernel {
        assert_eq!(mine.get(k), Some(t), "kernel flow {k:?}");
    }
    for (k, t) in &mine {
        assert_eq!(kernel.get(k), Some(t), "replay flow {k:?}");
    }
    let c = h.counters();
    let s = acc.stats();
    assert_eq!(c[CNT_PACKETS_SEEN as usize], frames.len() as u64);
    assert_eq!(
        c[CNT_PARSE_TRUNCATED as usize],
        s.truncated + skip_trunc,
        "truncated"
    );
    assert_eq!(c[CNT_NON_IP as usize], skip_non_ip, "non-IP");
    assert_eq!(
        c[CNT_FRAG_NO_FIRST as usize], s.frag_no_first,
        "fragments without first"
    );
    assert!(
        kernel.len() > 20,
        "the corpus should produce many flows: {}",
        kernel.len()
    );
}
