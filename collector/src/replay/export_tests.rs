//! The exporter's calls to its sinks, driven by a real replay (capture time
//! makes the intervals exact): every interval's records, then that
//! interval's self-metrics with the same time.
#![allow(clippy::unwrap_used)]

use std::{
    io,
    sync::{atomic::AtomicBool, Arc, Mutex},
};

use flowlens_correlator::{conversation::TableConfig, record::ConversationRecord};

use super::{reader_tests::pcap, summary::Progress, ReplaySource};
use crate::{
    capture::{
        linktype,
        parse_tests::{eth, udp, v4},
    },
    exporter::{ExportConfig, Exporter, Names},
    metrics::SelfMetrics,
    sinks::{RecordSink, Sinks},
};

/// What a sink was given, in order.
#[derive(Debug, PartialEq)]
enum Call {
    /// `write_interval`: the records' times and bytes (client to server).
    Records(Vec<(i64, u64)>),
    /// `write_self_metrics`: host, time, intervals so far, records exported so far.
    SelfMetrics(String, i64, u64, u64),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>, Vec<(i64, u64)>);

impl RecordSink for Recorder {
    fn begin_interval(&mut self) {
        self.1.clear();
    }

    fn write_chunk(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        self.1
            .extend(records.iter().map(|r| (r.ts_unix_ns, r.bytes_c2s)));
        Ok(())
    }

    fn end_interval(&mut self) -> io::Result<()> {
        let seen = std::mem::take(&mut self.1);
        self.0.lock().unwrap().push(Call::Records(seen));
        Ok(())
    }

    fn write_self_metrics(&mut self, m: &SelfMetrics, host: &str, ts_unix_ns: i64) {
        self.0.lock().unwrap().push(Call::SelfMetrics(
            host.to_owned(),
            ts_unix_ns,
            m.intervals,
            m.records_exported,
        ));
    }
}

#[test]
fn self_metrics_follow_every_interval_with_its_time() {
    const T0: u32 = 1_700_000_000;
    const SEC: i64 = 1_000_000_000;
    // UDP 10.0.0.1:5000 -> 10.0.0.2:53 at 0.5 s, 1.5 s and 3.5 s of capture time, intervals of 1 s: the
    // second packet exports the first at T0+1, the third the second at T0+2 (the boundary at T0+3 is a
    // missed one, skipped), the end of the file the third at its own time.
    let frame = |payload: usize| {
        eth(
            &[],
            0x0800,
            &v4(17, 0, 1, &[], &udp(5000, 53, &vec![0; payload])),
        )
    };
    let frames = [
        (T0, 500_000, frame(10)),
        (T0 + 1, 500_000, frame(20)),
        (T0 + 3, 500_000, frame(30)),
    ];
    let rows: Vec<(u32, u32, &[u8])> = frames
        .iter()
        .map(|(s, us, f)| (*s, *us, f.as_slice()))
        .collect();
    let dir = std::env::temp_dir().join(format!("flowlens-export-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("three.pcap");
    std::fs::write(&file, pcap(false, false, linktype::ETHERNET, &rows)).unwrap();

    let recorder = Recorder::default();
    let mut sinks = Sinks::new();
    sinks.push(Box::new(recorder.clone()));
    let mut exporter = Exporter::new(
        ExportConfig {
            host: "replay-host".to_owned(),
            interval_ns: SEC as u64,
            table: TableConfig::default(),
            ifaces: Default::default(),
        },
        Names::capture(),
        sinks,
        None,
    );
    let mut source = ReplaySource::new(vec![file], Progress::new(0, false));
    exporter.run(&mut source, &AtomicBool::new(false));
    std::fs::remove_dir_all(&dir).unwrap();

    let (t0, ip_udp) = (i64::from(T0) * SEC, 20 + 8);
    let at = |s: i64| t0 + s * SEC;
    let last = t0 + 3 * SEC + SEC / 2;
    let host = || "replay-host".to_owned();
    let want = vec![
        Call::Records(vec![(at(1), ip_udp + 10)]),
        Call::SelfMetrics(host(), at(1), 1, 1),
        Call::Records(vec![(at(2), ip_udp + 20)]),
        Call::SelfMetrics(host(), at(2), 2, 2),
        Call::Records(vec![(last, ip_udp + 30)]),
        Call::SelfMetrics(host(), last, 3, 3),
    ];
    assert_eq!(*recorder.0.lock().unwrap(), want);
}

/// Replays `frames` (seconds, µs, frame) with intervals of 1 s, the sinks
/// given records `chunk` at a time; returns what the recorder saw, the JSON
/// lines written and the tally's records.
fn replay_in_chunks(frames: &[(u32, u32, Vec<u8>)], chunk: usize) -> (Vec<Call>, String, u64) {
    let rows: Vec<(u32, u32, &[u8])> = frames
        .iter()
        .map(|(s, us, f)| (*s, *us, f.as_slice()))
        .collect();
    let dir = std::env::temp_dir().join(format!(
        "flowlens-export-chunks-{}-{chunk}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("many.pcap");
    std::fs::write(&file, pcap(false, false, linktype::ETHERNET, &rows)).unwrap();
    let jsonl = dir.join("out.jsonl");
    let recorder = Recorder::default();
    let tally = super::summary::RecordTally::default();
    let mut sinks = Sinks::new();
    sinks.push(Box::new(recorder.clone()));
    sinks.push(Box::new(crate::sinks::JsonlSink::file(&jsonl).unwrap()));
    sinks.push(Box::new(tally.clone()));
    let mut exporter = Exporter::new(
        ExportConfig {
            host: "replay-host".to_owned(),
            interval_ns: 1_000_000_000,
            table: TableConfig::default(),
            ifaces: Default::default(),
        },
        Names::capture(),
        sinks,
        None,
    )
    .with_export_chunk(chunk);
    let mut source = ReplaySource::new(vec![file], Progress::new(0, false));
    exporter.run(&mut source, &AtomicBool::new(false));
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut summary = super::summary::ReplaySummary::default();
    tally.fill(&mut summary);
    let calls = std::mem::take(&mut *recorder.0.lock().unwrap());
    (calls, lines, summary.records)
}

#[test]
fn an_interval_larger_than_a_chunk_reaches_every_sink_whole_and_once() {
    const T0: u32 = 1_700_000_000;
    const SEC: i64 = 1_000_000_000;
    // 10 UDP conversations (client ports 5000..5010) in the first second, 7 in the second.
    let frame = |sport: u16, payload: usize| {
        eth(
            &[],
            0x0800,
            &v4(17, 0, 1, &[], &udp(sport, 53, &vec![0; payload])),
        )
    };
    let mut frames = Vec::new();
    for i in 0..10u16 {
        frames.push((
            T0,
            100_000 + u32::from(i),
            frame(5000 + i, 10 + usize::from(i)),
        ));
    }
    for i in 0..7u16 {
        frames.push((T0 + 1, 100_000 + u32::from(i), frame(6000 + i, 40)));
    }
    let (calls, lines, tallied) = replay_in_chunks(&frames, 3);
    let (whole_calls, whole_lines, _) = replay_in_chunks(&frames, 4096);
    // Chunks of 3: the same lines, byte for byte, as in one piece.
    assert_eq!(lines, whole_lines);
    assert_eq!(lines.lines().count(), 17);
    assert_eq!(tallied, 17);
    assert_eq!(calls, whole_calls);
    let t0 = i64::from(T0) * SEC;
    let first: Vec<(i64, u64)> = (0..10).map(|i| (t0 + SEC, 28 + 10 + i)).collect();
    let end = t0 + SEC + SEC / 10 + 6_000;
    let want = vec![
        // Each interval once, whole (10 records in 4 chunks), then its self-metrics once.
        Call::Records(first),
        Call::SelfMetrics("replay-host".to_owned(), t0 + SEC, 1, 10),
        Call::Records(vec![(end, 28 + 40); 7]),
        Call::SelfMetrics("replay-host".to_owned(), end, 2, 17),
    ];
    assert_eq!(calls, want);
}
