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
