//! Line-protocol encoder throughput: one interval of 10k realistic conversation records on one core.
//!
//! `cargo bench -p flowlens-collector --bench influx_encode`

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::Rng;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowlens_collector::influx::{Encoder, SchemaConfig};
use flowlens_correlator::record::{ConversationRecord, Endpoint, ProcessAttribution};

const RECORDS: usize = 10_000;
const TS: i64 = 1_700_000_010_000_000_000;

fn process(rng: &mut Rng) -> ProcessAttribution {
    const COMMS: [&str; 12] = [
        "nginx",
        "curl",
        "java",
        "python3",
        "postgres",
        "redis-server",
        "sshd",
        "node",
        "envoy",
        "coredns",
        "kubelet",
        "containerd",
    ];
    let comm = COMMS[rng.below(COMMS.len() as u64) as usize];
    let container = rng.below(3) > 0;
    let n = rng.below(40);
    let id = format!("{n:02x}{}", "5e".repeat(31));
    ProcessAttribution {
        pid: 1000 + rng.below(30_000) as u32,
        comm: comm.to_owned(),
        exe: Some(format!("/usr/bin/{comm}")),
        uid: if container {
            0
        } else {
            1000 + rng.below(5) as u32
        },
        user: Some(if container {
            "root".to_owned()
        } else {
            format!("user{}", rng.below(5))
        }),
        gid: 0,
        cgroup: Some(if container {
            format!("/docker/{id}")
        } else {
            "/system.slice/app.service".to_owned()
        }),
        container_id: container.then(|| id.clone()),
        container_runtime: if container { "docker" } else { "host" }.to_owned(),
        container_name: container.then(|| format!("svc-{n}")),
        container_image: container.then(|| format!("registry.local/{comm}:1.{n}")),
        pod_uid: None,
    }
}

/// 10k conversations: 40% container/host → internet, 30% between local containers, 30% inbound.
fn records() -> Vec<ConversationRecord> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..RECORDS)
        .map(|i| {
            let remote = format!(
                "{}.{}.{}.{}",
                1 + rng.below(223),
                rng.below(256),
                rng.below(256),
                rng.below(256)
            );
            let local_addr = format!("172.17.0.{}", 2 + rng.below(40));
            let ephemeral = 32768 + rng.below(28000) as u16;
            let service = [80, 443, 5432, 6379, 53, 8080][rng.below(6) as usize];
            let ep = |addr: String, port, process: Option<ProcessAttribution>| Endpoint {
                addr,
                port,
                local: process.is_some(),
                nat_addr: None,
                nat_port: None,
                name: None,
                process,
            };
            let (client, server) = match i % 10 {
                0..=3 => (
                    ep(local_addr, ephemeral, Some(process(&mut rng))),
                    ep(remote, service, None),
                ),
                4..=6 => (
                    ep(local_addr, ephemeral, Some(process(&mut rng))),
                    ep("172.17.0.9".to_owned(), service, Some(process(&mut rng))),
                ),
                _ => (
                    ep(remote, ephemeral, None),
                    ep(local_addr, service, Some(process(&mut rng))),
                ),
            };
            ConversationRecord {
                ts: "2023-11-14T22:13:30Z".to_owned(),
                ts_unix_ns: TS,
                interval_ms: 10_000,
                host: "node-17.prod".to_owned(),
                proto: if service == 53 { "udp" } else { "tcp" }.to_owned(),
                client,
                server,
                client_evidence: "socket".to_owned(),
                bytes_c2s: rng.below(1 << 24),
                bytes_s2c: rng.below(1 << 26),
                packets_c2s: rng.below(20_000),
                packets_s2c: rng.below(50_000),
                first_seen: "2023-11-14T22:10:00Z".to_owned(),
                first_seen_unix_ns: TS - 210_000_000_000,
                last_seen: "2023-11-14T22:13:29.5Z".to_owned(),
                last_seen_unix_ns: TS - 500_000_000,
                duration_ms: 209_500,
                tcp_flags: 0x1b,
                tcp_flags_text: "SYN|ACK|PSH|FIN".to_owned(),
                ifaces: vec!["eth0".to_owned(), "docker0".to_owned()],
                nat: None,
                signals: Default::default(),
            }
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let records = records();
    let mut encoder = Encoder::new(SchemaConfig::default());
    let mut buf = Vec::with_capacity(16 << 20);
    let lines = encoder.encode_interval(&records, &mut buf);
    eprintln!(
        "influx_encode: {RECORDS} records -> {lines} lines, {} bytes ({:.0} bytes/line)",
        buf.len(),
        buf.len() as f64 / lines as f64
    );
    let mut group = c.benchmark_group("influx_encode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(lines as u64));
    group.bench_function("10k_records_lines", |b| {
        b.iter(|| {
            buf.clear();
            black_box(encoder.encode_interval(black_box(&records), &mut buf))
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
