//! Readers: ring-buffer record decoding and the per-CPU summing of a flow map
//! drain. `cargo bench -p flowlens-collector --bench readers`.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flowlens_collector::ebpf::{convert::decode_event, flow_map::observation};

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_event");
    let cases = [
        ("sock_112B", common::sock_event(7)),
        ("tcp_state_72B", common::tcp_state_event(7)),
        ("exec_312B", common::exec_event(7)),
    ];
    g.throughput(Throughput::Elements(1));
    for (name, buf) in &cases {
        g.bench_function(*name, |b| b.iter(|| decode_event(black_box(buf))));
    }
    let mix = common::event_mix(10_000);
    g.throughput(Throughput::Elements(mix.len() as u64));
    g.bench_function("mix_of_10k_connections", |b| {
        b.iter(|| {
            for buf in &mix {
                let _ = black_box(decode_event(black_box(buf)));
            }
        })
    });
    g.finish();
}

fn drain(c: &mut Criterion) {
    let mut g = c.benchmark_group("map_drain_observation");
    g.sample_size(20);
    // 2 CPUs as on the benchmark machine (both busy), and a 64-CPU host where
    // a flow was seen on 2 of them: the summing skips idle slots.
    for (cpus, busy) in [(2usize, 2usize), (64, 2)] {
        let entries = common::flow_entries(100_000, cpus, busy);
        g.throughput(Throughput::Elements(entries.len() as u64));
        g.bench_function(format!("100k_flows_{cpus}cpus_{busy}busy"), |b| {
            b.iter_batched_ref(
                || Vec::with_capacity(entries.len()),
                |out| {
                    for (key, values) in &entries {
                        out.push(observation(key, values));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, decode, drain);
criterion_main!(benches);
