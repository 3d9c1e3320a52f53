//! Correlator throughput: joining flows with owners per conversation, and
//! encoding records. `cargo bench -p flowlens-correlator`.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flowlens_correlator::{ConversationTable, TableConfig};

use common::{feed, StaticLookup, S, UNIX0};

fn config(n: u32) -> TableConfig {
    TableConfig {
        max_conversations: n as usize,
        max_sockets: 2 * n as usize,
        ..TableConfig::default()
    }
}

/// observe_owner + 2 × observe_flow + export, per conversation, into a fresh table.
fn join(c: &mut Criterion) {
    let mut g = c.benchmark_group("join_per_conversation");
    g.sample_size(10);
    for n in [1_000u32, 10_000, 100_000] {
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_function(format!("new_{n}"), |b| {
            b.iter_batched(
                || ConversationTable::new(config(n)),
                |mut t| {
                    feed(&mut t, 0, n, 10, 2);
                    let records = t.export(2 * S, UNIX0 + i128::from(2 * S), "h", &StaticLookup);
                    assert_eq!(records.len(), n as usize);
                    (t, records)
                },
                BatchSize::PerIteration,
            )
        });
        // The steady interval: every conversation already known, counters grew.
        g.bench_function(format!("update_{n}"), |b| {
            let mut t = ConversationTable::new(config(n));
            feed(&mut t, 0, n, 10, 2);
            t.export(2 * S, UNIX0 + i128::from(2 * S), "h", &StaticLookup);
            let mut tick = 2u64;
            b.iter(|| {
                tick += 1;
                for i in 0..n {
                    t.observe_flow(&common::flow(i, true, 10 * tick, tick));
                    t.observe_flow(&common::flow(i, false, 10 * tick, tick));
                }
                let records = t.export(tick * S, UNIX0 + i128::from(tick * S), "h", &StaticLookup);
                black_box(records.len())
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut t = ConversationTable::new(config(1_000));
    feed(&mut t, 0, 1_000, 10, 2);
    let records = t.export(2 * S, UNIX0 + i128::from(2 * S), "h", &StaticLookup);
    let mut g = c.benchmark_group("record_encode");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("serde_json_1k_records", |b| {
        let mut buf = Vec::with_capacity(1 << 20);
        b.iter(|| {
            buf.clear();
            for r in &records {
                serde_json::to_writer(&mut buf, r).expect("encode");
                buf.push(b'\n');
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, join, encode);
criterion_main!(benches);
