//! No two conversations overwrite each other in a real InfluxDB: thousands of
//! concurrent conversations that share every tag value (same host, processes,
//! users, containers, server port) in one interval must all be stored, and
//! replaying the same batch (spool replay after a crash) must store nothing
//! twice. Needs Debian's influxd (see flowlens_tests::influx).

use flowlens_collector::influx::{encode::Encoder, schema::SchemaConfig};
use flowlens_correlator::record::ConversationRecord;
use flowlens_tests::influx::Influxd;
use serde_json::{json, Value};

const DB: &str = "overwrite";
const N: u16 = 3000;

/// One interval of `N` conversations from one client process to one server
/// process: every tag identical, only fields (client address/port) differ.
fn records() -> Vec<ConversationRecord> {
    let process = |pid: u32, comm: &str| {
        json!({"pid": pid, "comm": comm, "exe": format!("/usr/bin/{comm}"), "uid": 1000,
               "user": "alice", "gid": 1000, "cgroup": "/user.slice", "container_id": null,
               "container_runtime": "host", "container_name": null, "container_image": null,
               "pod_uid": null})
    };
    (0..N)
        .map(|i| {
            let mut client = json!({"addr": format!("10.9.{}.{}", i / 250, i % 250 + 1),
                                    "port": 40000 + i, "local": true});
            let mut server = json!({"addr": "10.9.200.1", "port": 443, "local": true});
            for (end, p) in [(&mut client, process(4242, "curl")), (&mut server, process(7, "nginx"))] {
                if let (Some(e), Some(p)) = (end.as_object_mut(), p.as_object()) {
                    e.extend(p.clone());
                }
            }
            let v: Value = json!({
                "ts": "2026-11-25T12:00:10Z", "ts_unix_ns": 1_795_608_010_000_000_000_i64,
                "host": "node1", "proto": "tcp", "client": client, "server": server,
                "client_evidence": "socket",
                "bytes_c2s": 100 + u64::from(i), "bytes_s2c": 1000, "packets_c2s": 2, "packets_s2c": 3,
                "first_seen": "2026-11-25T12:00:01Z", "first_seen_unix_ns": 1_795_608_001_000_000_000_i64,
                "last_seen": "2026-11-25T12:00:09Z", "last_seen_unix_ns": 1_795_608_009_000_000_000_i64,
                "duration_ms": 8000, "tcp_flags": 27, "tcp_flags_text": "SYN|ACK|PSH|FIN",
                "ifaces": ["eth0"]
            });
            serde_json::from_value(v).expect("record")
        })
        .collect()
}

fn write(influx: &Influxd, body: &[u8]) {
    let status = ureq::post(&format!("{}/write", influx.url()))
        .query("db", DB)
        .query("precision", "ns")
        .send_bytes(body)
        .map(|r| r.status())
        .unwrap_or_else(|e| panic!("write: {e}"));
    assert_eq!(status, 204);
}

fn count_and_sum(influx: &Influxd) -> (i64, i64) {
    let v = influx.query(DB, "SELECT count(bytes_c2s), sum(bytes_c2s) FROM flow");
    let n = v
        .pointer("/results/0/series/0/values/0/1")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let s = v
        .pointer("/results/0/series/0/values/0/2")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    (n, s)
}

#[test]
fn conversations_sharing_every_tag_are_all_stored_once() {
    let influx = Influxd::start();
    influx.exec(&format!("CREATE DATABASE {DB}"));
    let recs = records();
    let mut enc = Encoder::new(SchemaConfig::default());
    let mut buf = Vec::new();
    let lines = enc.encode_interval(&recs, &mut buf);
    assert!(lines >= usize::from(N), "{lines} lines for {N} records");
    // Same tag set for every flow point: the series is one.
    let series: std::collections::BTreeSet<&str> = std::str::from_utf8(&buf)
        .expect("utf8")
        .lines()
        .filter(|l| l.starts_with("flow,"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        series.len(),
        1,
        "expected every flow point in one series: {series:?}"
    );
    let expected_sum: i64 = (0..i64::from(N)).map(|i| 100 + i).sum();
    write(&influx, &buf);
    assert_eq!(
        count_and_sum(&influx),
        (i64::from(N), expected_sum),
        "points overwritten"
    );
    // A replay of the same batch (spool after a crash) stores nothing twice.
    write(&influx, &buf);
    assert_eq!(
        count_and_sum(&influx),
        (i64::from(N), expected_sum),
        "replay duplicated points"
    );
}

/// The exporter hands the sinks an interval in chunks (4,096 records; 7
/// here): InfluxDB gets it whole and once, in full batches, and the
/// interval's self-metrics once.
#[test]
fn an_interval_in_chunks_is_stored_whole_and_once() {
    use flowlens_collector::influx::{settings::InfluxSettings, sink::InfluxSink};
    use flowlens_collector::{metrics::SelfMetrics, sinks::Sinks};
    const CHUNKED: &str = "chunked";
    let influx = Influxd::start();
    let dir = flowlens_tests::influx::TempDir::new("chunked");
    let mut s =
        InfluxSettings::new(&influx.url(), CHUNKED, &dir.path().join("spool")).expect("settings");
    s.create_db = true;
    s.batch_lines = 1000;
    let sink = InfluxSink::start(s).expect("start");
    let stats = sink.stats();
    let mut sinks = Sinks::new();
    sinks.push(Box::new(sink));
    let recs = records();
    let mut whole = Vec::new();
    let lines = Encoder::new(SchemaConfig::default()).encode_interval(&recs, &mut whole) as u64;
    sinks.begin_interval();
    for c in recs.chunks(7) {
        sinks.write_chunk(c);
    }
    let written = sinks.end_interval();
    assert_eq!((written.lost, written.end), (0, None));
    let metrics = SelfMetrics {
        intervals: 1,
        records_exported: u64::from(N),
        ..SelfMetrics::default()
    };
    sinks.write_self_metrics(&metrics, "node1", 1_795_608_010_000_000_000);
    assert_eq!(sinks.close(), 0);
    let m = stats.snapshot();
    assert_eq!(m.points_written, m.points_accepted, "{m:#?}");
    // The interval's points and one flowlens_self point per loss counter, nothing else.
    let selfs = m.points_accepted - lines;
    assert!(selfs > 0 && selfs < 100, "{m:#?}");
    // Full batches of 1,000 lines across the chunks (not one per chunk of 7).
    assert!(
        m.batches_written <= lines.div_ceil(1000) + 2,
        "{} batches for {lines} lines: {m:#?}",
        m.batches_written
    );
    let count = |q: &str| {
        influx
            .query(CHUNKED, q)
            .pointer("/results/0/series/0/values/0/1")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let expected_sum: i64 = (0..i64::from(N)).map(|i| 100 + i).sum();
    assert_eq!(count("SELECT count(bytes_c2s) FROM flow"), i64::from(N));
    assert_eq!(count("SELECT sum(bytes_c2s) FROM flow"), expected_sum);
    // The rollup groups of the whole interval (each client address is the server end's peer).
    let of = |m: &str| {
        std::str::from_utf8(&whole)
            .expect("utf8")
            .lines()
            .filter(|l| l.starts_with(m))
            .count() as i64
    };
    assert_eq!(
        count("SELECT count(bytes) FROM flow_rollup"),
        of("flow_rollup,")
    );
    assert_eq!(
        count("SELECT sum(conversations) FROM flow_rollup WHERE direction = 'out'"),
        2 * i64::from(N)
    );
    assert_eq!(count("SELECT count(bytes) FROM flow_iface"), 1);
    assert_eq!(of("flow_iface,"), 1);
}
