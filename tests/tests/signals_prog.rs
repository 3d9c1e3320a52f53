//! Exact tests of the DNS copy programs of `signals.bpf.c` with
//! `BPF_PROG_TEST_RUN`: hand-made frames in, the ring-buffer records and
//! counters out. What is copied is the L4 payload of UDP/TCP with port 53 on
//! either side, byte for byte, in a small (256) or large (1024) record, cut
//! at 1024 and counted; nothing else (other ports, handshakes without
//! payload, later fragments, cut headers) makes a record, and every packet
//! passes (return 1). The DNS parser behind it (hostile messages:
//! compression loops, oversized labels, lying counts) is tested in
//! `correlator/src/dns/parse_tests.rs`.
//!
//! In a cgroup_skb test run the kernel strips the frame's Ethernet header:
//! the program sees the IP packet, as on a socket's egress/ingress.
//! Needs root: `cargo test -p flowlens-tests --test signals_prog`.

#[path = "flow_prog/packets.rs"]
#[allow(dead_code)]
mod packets;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{CgroupSkb, TestRun, TestRunOptions},
    Btf, Ebpf, EbpfLoader,
};
use flowlens_ebpf::{abi::*, signals, SIGNALS_OBJ};
use packets::*;

struct Dns {
    _bpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
}

/// One record read back: its header and the copied payload.
struct Copy {
    hdr: DnsEventHdr,
    payload: Vec<u8>,
}

impl Dns {
    fn load() -> Self {
        flowlens_tests::assert_root();
        let btf = Btf::from_sys_fs().expect("kernel BTF");
        let mut bpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries(signals::MAP_EVENTS, 1 << 16)
            .load(SIGNALS_OBJ)
            .expect("load signals.bpf.o");
        for name in [signals::PROG_DNS_EGRESS, signals::PROG_DNS_INGRESS] {
            let p: &mut CgroupSkb = bpf
                .program_mut(name)
                .expect("program")
                .try_into()
                .expect("cgroup_skb");
            p.load().unwrap_or_else(|e| panic!("load {name}: {e:?}"));
        }
        let ring =
            RingBuf::try_from(bpf.take_map(signals::MAP_EVENTS).expect("ring")).expect("ringbuf");
        let counters =
            PerCpuArray::try_from(bpf.take_map(signals::MAP_COUNTERS).expect("counters"))
                .expect("array");
        Dns {
            _bpf: bpf,
            ring,
            counters,
        }
    }

    /// Runs a program on `frame` (an Ethernet frame): it passes the packet.
    fn run(&self, egress: bool, frame: &[u8]) {
        let name = if egress {
            signals::PROG_DNS_EGRESS
        } else {
            signals::PROG_DNS_INGRESS
        };
        let p: &CgroupSkb = self
            ._bpf
            .program(name)
            .expect("program")
            .try_into()
            .expect("cgroup_skb");
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test run of {} bytes: {e:?}", frame.len()));
        assert_eq!(r.return_value, 1, "the program passes every packet");
    }

    fn records(&mut self) -> Vec<Copy> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            let buf: &[u8] = &item;
            let hdr: DnsEventHdr = read_pod(buf).expect("record header");
            assert_eq!(hdr.hdr.kind, EV_DNS);
            assert_eq!(hdr.hdr.size as usize, buf.len().min(hdr.hdr.size as usize));
            let end = DNS_EVENT_HDR_SIZE + usize::from(hdr.cap_len);
            out.push(Copy {
                hdr,
                payload: buf[DNS_EVENT_HDR_SIZE..end].to_vec(),
            });
        }
        out
    }

    fn counter(&self, idx: u32) -> u64 {
        self.counters
            .get(&idx, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

const C: [u8; 4] = [10, 0, 0, 1];
const S: [u8; 4] = [10, 0, 0, 53];

fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

fn message(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ether(
        ETH_P_IP,
        &V4::new(src, dst, 17).packet(&[], &udp(sport, dport, payload)),
    )
}

#[test]
fn udp_query_and_response_are_copied_whole() {
    let mut d = Dns::load();
    let q = message(40);
    let r = message(200);
    d.run(true, &v4_udp(C, S, 40000, 53, &q));
    d.run(false, &v4_udp(S, C, 53, 40000, &r));
    let recs = d.records();
    assert_eq!(recs.len(), 2);
    let (a, b) = (&recs[0], &recs[1]);
    assert_eq!(
        (a.hdr.egress, a.hdr.proto, a.hdr.sport, a.hdr.dport),
        (1, 17, 40000, 53)
    );
    assert_eq!((a.hdr.saddr, a.hdr.daddr), (mapped(C), mapped(S)));
    assert_eq!((a.hdr.cap_len, a.hdr.orig_len), (40, 40));
    assert_eq!(a.payload, q);
    assert_eq!(
        a.hdr.hdr.size as usize,
        DNS_EVENT_HDR_SIZE + DNS_PAYLOAD_SMALL
    );
    assert_eq!((b.hdr.egress, b.hdr.sport, b.hdr.dport), (0, 53, 40000));
    assert_eq!((b.hdr.cap_len, b.hdr.orig_len), (200, 200));
    assert_eq!(b.payload, r);
    assert_eq!(d.counter(CNT_DNS_MESSAGES), 2);
    assert_eq!(d.counter(CNT_DNS_CUT), 0);
}

#[test]
fn large_messages_take_the_large_record_and_are_cut_at_1024() {
    let mut d = Dns::load();
    let mid = message(700);
    let big = message(2000);
    d.run(false, &v4_udp(S, C, 53, 40001, &mid));
    d.run(false, &v4_udp(S, C, 53, 40001, &big));
    // exactly at the limits of each record
    d.run(false, &v4_udp(S, C, 53, 40001, &message(256)));
    d.run(false, &v4_udp(S, C, 53, 40001, &message(257)));
    d.run(false, &v4_udp(S, C, 53, 40001, &message(1024)));
    let recs = d.records();
    let got: Vec<(u16, u32, u32)> = recs
        .iter()
        .map(|r| (r.hdr.cap_len, r.hdr.orig_len, r.hdr.hdr.size))
        .collect();
    let (small, large) = (
        (DNS_EVENT_HDR_SIZE + DNS_PAYLOAD_SMALL) as u32,
        (DNS_EVENT_HDR_SIZE + DNS_PAYLOAD_MAX) as u32,
    );
    assert_eq!(
        got,
        vec![
            (700, 700, large),
            (1024, 2000, large),
            (256, 256, small),
            (257, 257, large),
            (1024, 1024, large)
        ]
    );
    assert_eq!(recs[0].payload, mid);
    assert_eq!(recs[1].payload, big[..1024]);
    assert_eq!(d.counter(CNT_DNS_MESSAGES), 5);
    assert_eq!(d.counter(CNT_DNS_CUT), 1);
}

#[test]
fn tcp_segments_with_payload_and_ipv6() {
    let mut d = Dns::load();
    let mut framed = 300u16.to_be_bytes().to_vec();
    framed.extend(message(300));
    let seg = |flags, payload: &[u8]| {
        ether(
            ETH_P_IP,
            &V4::new(C, S, 6).packet(&[], &tcp(40002, 53, flags, &[1, 1, 1, 1], payload)),
        )
    };
    d.run(true, &seg(TCP_SYN, &[]));
    d.run(true, &seg(TCP_ACK, &[]));
    d.run(true, &seg(TCP_ACK | TCP_PSH, &framed));
    let (c6, s6) = (
        [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53],
    );
    let q6 = message(33);
    d.run(
        true,
        &ether(ETH_P_IPV6, &ipv6(c6, s6, 17, &udp(40003, 53, &q6))),
    );
    let recs = d.records();
    assert_eq!(recs.len(), 2, "handshake segments carry no DNS");
    assert_eq!((recs[0].hdr.proto, recs[0].hdr.cap_len), (6, 302));
    assert_eq!(recs[0].payload, framed);
    assert_eq!((recs[1].hdr.saddr, recs[1].hdr.daddr), (c6, s6));
    assert_eq!(recs[1].payload, q6);
}

#[test]
fn nothing_else_is_copied() {
    let mut d = Dns::load();
    // other ports
    d.run(true, &v4_udp(C, S, 40000, 5353, &message(40)));
    d.run(true, &v4_udp(C, S, 53000, 80, &message(40)));
    // a later fragment of a datagram to port 53: no ports in it
    let frag = V4::new(C, S, 17)
        .frag(7, 0x2000 | 185)
        .packet(&[], &message(64));
    d.run(true, &ether(ETH_P_IP, &frag));
    // a UDP header to port 53 without payload, and one cut short
    d.run(true, &v4_udp(C, S, 40000, 53, &[]));
    let cut = V4::new(C, S, 17).packet_claiming(&[], &udp(40000, 53, &[])[..6], 26);
    d.run(true, &ether(ETH_P_IP, &cut));
    // a TCP header cut after the ports
    let cut = V4::new(C, S, 6).packet_claiming(&[], &tcp(40000, 53, TCP_ACK, &[], &[])[..10], 30);
    d.run(true, &ether(ETH_P_IP, &cut));
    assert_eq!(d.records().len(), 0);
    assert_eq!(d.counter(CNT_DNS_MESSAGES), 0);
}
