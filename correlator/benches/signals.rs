//! Userspace cost of the golden signals per event, beside the plain record
//! path measured in the same run: one flow observation of a known
//! conversation (`signals_per_event/flow_update_baseline`). Then the same
//! conversations' TCP signal (RTT + retransmits of one socket read), reset,
//! and a DNS query + answer (parsed from the bytes the kernel copies, then
//! accounted), and the DNS parser alone on three messages.
//! `cargo bench -p flowlens-correlator --bench signals`.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowlens_correlator::dns::parse_message;
use flowlens_correlator::signals::{DnsObservation, RttStats, TcpReset, TcpSignal};
use flowlens_correlator::{ConversationTable, TableConfig};

use common::{client, feed, flow, server, StaticLookup, S, UNIX0};

/// Conversations known to the table, each touched once per iteration.
const N: u32 = 1_000;
const RESOLVER: (IpAddr, u16) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)), 53);

fn name(out: &mut Vec<u8>, labels: &[&str]) {
    for l in labels {
        out.push(u8::try_from(l.len()).unwrap_or(63));
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

fn header(id: u16, flags: u16, qd: u16, an: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    for v in [id, flags, qd, an, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m
}

fn question(m: &mut Vec<u8>) {
    name(m, &["www", "example", "com"]);
    m.extend_from_slice(&[0, 1, 0, 1]); // A, IN
}

/// A query for www.example.com A (33 bytes).
fn query(id: u16) -> Vec<u8> {
    let mut m = header(id, 0x0100, 1, 0);
    question(&mut m);
    m
}

/// The answer: www.example.com CNAME edge.example.net, which has two A
/// records (the owner names compressed), as a resolver sends it.
fn answer(id: u16) -> Vec<u8> {
    let mut m = header(id, 0x8180, 1, 3);
    question(&mut m);
    m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 44]); // ptr to qname, CNAME, IN, ttl 300
    let mut target = Vec::new();
    name(&mut target, &["edge", "example", "net"]);
    let target_at = u8::try_from(m.len() + 2).unwrap_or(0);
    m.extend_from_slice(&u16::try_from(target.len()).unwrap_or(0).to_be_bytes());
    m.extend_from_slice(&target);
    for last in [34u8, 35] {
        m.extend_from_slice(&[0xc0, target_at, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(&[93, 184, 216, last]);
    }
    m
}

/// NXDOMAIN for the same question.
fn nxdomain(id: u16) -> Vec<u8> {
    let mut m = header(id, 0x8183, 1, 0);
    question(&mut m);
    m
}

fn table() -> ConversationTable {
    let mut t = ConversationTable::new(TableConfig {
        max_conversations: 4 * N as usize,
        max_sockets: 4 * N as usize,
        ..TableConfig::default()
    });
    feed(&mut t, 0, N, 10, 2);
    t.export(2 * S, UNIX0 + i128::from(2 * S), "h", &StaticLookup);
    t
}

fn per_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("signals_per_event");
    g.throughput(Throughput::Elements(u64::from(N)));
    // Baseline: the plain record path, one flow observation per conversation.
    g.bench_function("flow_update_baseline", |b| {
        let mut t = table();
        let mut tick = 2u64;
        b.iter(|| {
            tick += 1;
            for i in 0..N {
                t.observe_flow(black_box(&flow(i, true, 10 * tick, tick)));
            }
        })
    });
    g.bench_function("tcp_signal", |b| {
        let mut t = table();
        let mut tick = 2u64;
        b.iter(|| {
            tick += 1;
            for i in 0..N {
                let us = 100 + u64::from(i % 50);
                t.observe_tcp_signal(
                    black_box(TcpSignal {
                        local: client(i),
                        remote: server(),
                        retransmits: 1,
                        rtt: RttStats {
                            samples: 2,
                            sum_us: 2 * us,
                            min_us: us,
                            max_us: us,
                        },
                    }),
                    tick * S,
                );
            }
        })
    });
    g.bench_function("tcp_reset", |b| {
        let mut t = table();
        let mut tick = 2u64;
        b.iter(|| {
            tick += 1;
            for i in 0..N {
                t.observe_tcp_reset(black_box(TcpReset {
                    local: client(i),
                    remote: server(),
                    sent: i % 2 == 0,
                    ts_ns: tick * S,
                }));
            }
        })
    });
    // Two events per element (query and answer): parse + account each.
    g.throughput(Throughput::Elements(2 * u64::from(N)));
    g.bench_function("dns_query_and_answer_parse_and_account", |b| {
        let mut t = table();
        let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..N)
            .map(|i| {
                let id = u16::try_from(i & 0xffff).unwrap_or(0);
                (query(id), answer(id))
            })
            .collect();
        let mut tick = 2u64;
        b.iter(|| {
            tick += 1;
            for (i, (q, a)) in (0..N).zip(&msgs) {
                for (bytes, to_resolver) in [(q, true), (a, false)] {
                    let Ok(message) = parse_message(black_box(bytes)) else {
                        panic!("bench message does not parse");
                    };
                    let (src, dst) = if to_resolver {
                        (client(i), RESOLVER)
                    } else {
                        (RESOLVER, client(i))
                    };
                    t.observe_dns(&DnsObservation {
                        proto: 17,
                        src,
                        dst,
                        egress: to_resolver,
                        message,
                        ts_ns: tick * S + u64::from(!to_resolver) * 1_000_000,
                    });
                }
            }
        })
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("dns_parse");
    g.throughput(Throughput::Elements(1));
    for (case, bytes) in [
        ("query_33B", query(7)),
        ("answer_cname_2a", answer(7)),
        ("nxdomain", nxdomain(7)),
    ] {
        let m = parse_message(&bytes).expect("bench message parses");
        assert!(m.response || case == "query_33B");
        if case == "answer_cname_2a" {
            assert_eq!(m.resolved_addresses().len(), 2, "{m:?}");
        }
        g.bench_function(case, |b| b.iter(|| parse_message(black_box(&bytes))));
    }
    g.finish();
}

criterion_group!(benches, per_event, parse);
criterion_main!(benches);
