//! `flowlens replay` writes to the same sinks as `flowlens run`: the records
//! of a capture land in a real InfluxDB (Debian's influxd) with the capture's
//! timestamps and the same values as the JSON lines, and so do the
//! collector's loss counters (`flowlens_self`); many replays at once deliver
//! every point, small intervals batched together; what InfluxDB does not
//! take by the end is reported (exit 1) and `flowlens influx-flush` sends it.

use std::process::Command;

use flowlens_tests::influx::{influx_args, FakeInflux, Influxd, Reply, TempDir};
use serde_json::Value;

const DB: &str = "replay";

/// A pcap (Ethernet, µs) of UDP 10.1.0.1:5000 <-> 10.1.0.2:53: `n` queries of
/// 40 bytes of payload and their 100-byte answers, one per second from t0.
fn capture(n: u32) -> Vec<u8> {
    capture_of(n, 1)
}

/// Like [`capture`], with `per_second` conversations each second (client
/// ports 1024 + a running number): as many records per 1 s interval.
fn capture_of(n: u32, per_second: u32) -> Vec<u8> {
    let mut f = Vec::new();
    for v in [0xa1b2_c3d4_u32, 0x0002_0004, 0, 0, 65535, 1] {
        match v {
            0x0002_0004 => {
                f.extend_from_slice(&2u16.to_le_bytes());
                f.extend_from_slice(&4u16.to_le_bytes());
            }
            _ => f.extend_from_slice(&v.to_le_bytes()),
        }
    }
    let frame = |src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize| {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload) as u16;
        p.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend(std::iter::repeat_n(0x61, payload));
        p
    };
    let (a, b) = ([10, 1, 0, 1], [10, 1, 0, 2]);
    for i in 0..n {
        for c in 0..per_second {
            let port = if per_second == 1 {
                5000
            } else {
                1024 + ((i * per_second + c) % 64_000) as u16
            };
            for (k, pkt) in [frame(a, b, port, 53, 40), frame(b, a, 53, port, 100)]
                .into_iter()
                .enumerate()
            {
                f.extend_from_slice(&(1_700_000_000 + i).to_le_bytes());
                f.extend_from_slice(&((c * 2 + k as u32) * 1000).to_le_bytes());
                f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
                f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
                f.extend_from_slice(&pkt);
            }
        }
    }
    f
}

/// `flowlens replay FILE --export-interval 1s --host HOST --influx-*`.
fn replay_cmd(pcap: &std::path::Path, host: &str, url: &str, spool: &std::path::Path) -> Command {
    let mut c = Command::new(flowlens_tests::flowlens::binary());
    c.arg("replay")
        .arg(pcap)
        .args(["--export-interval", "1s", "--host", host])
        .args(["--influx-url", url, "--influx-db", DB, "--influx-spool-dir"])
        .arg(spool);
    c
}

/// `count(bytes_c2s)` of `flow` per host.
fn flow_counts(influx: &Influxd) -> std::collections::BTreeMap<String, i64> {
    let v = influx.query(DB, "SELECT count(bytes_c2s) FROM flow GROUP BY host");
    v.pointer("/results/0/series")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s.pointer("/tags/host")?.as_str()?.to_owned(),
                s.pointer("/values/0/1")?.as_i64()?,
            ))
        })
        .collect()
}

/// `batches_written=N` of the writer's last log line.
fn requests_sent(stderr: &str) -> Option<u64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("InfluxDB writer stopped."))?;
    let n = line.split("batches_written=").nth(1)?;
    n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn thirteen_replays_at_once_deliver_every_point_in_few_requests() {
    let influx = Influxd::start();
    influx.exec(&format!("CREATE DATABASE {DB}"));
    let dir = TempDir::new("influx-13");
    let pcap = dir.path().join("many.pcap");
    // 1,255 intervals of 8 conversations: 10,040 records, as in the report
    // that found 1,255 requests of ~7 points each.
    std::fs::write(&pcap, capture_of(1255, 8)).expect("write pcap");
    let children: Vec<_> = (0..13)
        .map(|i| {
            replay_cmd(
                &pcap,
                &format!("r{i}"),
                &influx.url(),
                &dir.path().join(format!("spool{i}")),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start flowlens replay")
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    for (i, o) in outs.iter().enumerate() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "replay {i} failed:\n{err}");
        assert!(
            err.contains("10040 records"),
            "replay {i}: 10,040 records:\n{err}"
        );
        // Not one request per interval (1,255): intervals that are waiting
        // go out together (≥ 250 points a request on a loaded machine; a
        // few requests of up to 5,000 points on a quiet one).
        let sent = requests_sent(&err).unwrap_or(u64::MAX);
        assert!(
            sent <= 40,
            "replay {i}: intervals are batched together, {sent} requests:\n{err}"
        );
    }
    let counts = flow_counts(&influx);
    assert_eq!(counts.len(), 13, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 10_040),
        "every record of every replay: {counts:?}"
    );
    for i in 0..13 {
        let spool = dir.path().join(format!("spool{i}"));
        let left: u64 = std::fs::read_dir(&spool)
            .expect("spool dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        assert_eq!(left, 0, "spool {i} is empty");
    }
}

#[test]
fn a_replay_that_cannot_deliver_says_so_and_influx_flush_sends_the_rest() {
    let influx = Influxd::start();
    influx.exec(&format!("CREATE DATABASE {DB}"));
    let dir = TempDir::new("influx-undelivered");
    let pcap = dir.path().join("few.pcap");
    std::fs::write(&pcap, capture_of(300, 4)).expect("write pcap");
    let spool = dir.path().join("spool");
    // An InfluxDB that passes the start-up check and then answers every
    // write 503 (as an overloaded 1.x does). A scripted server, not
    // influxd: a real one cannot be made to fail only after the check
    // without racing the replay.
    let overloaded = FakeInflux::start(|r, _| {
        if r.is_write() {
            Reply::status(503, "engine: cache-max-memory-size exceeded")
        } else {
            Reply::ok()
        }
    });
    let out = replay_cmd(&pcap, "stuck", &overloaded.url(), &spool)
        .args(["--influx-drain-timeout", "3s"])
        .output()
        .expect("run flowlens replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        overloaded.writes().len() >= 3,
        "it kept trying during the drain: {} writes",
        overloaded.writes().len()
    );
    assert!(
        err.contains("points are still in the spool") && err.contains("flowlens influx-flush"),
        "says how many and how to send them:\n{err}"
    );
    assert!(
        err.contains("cache-max-memory-size"),
        "and the last error:\n{err}"
    );
    // The command it names delivers them.
    let flush = Command::new(flowlens_tests::flowlens::binary())
        .args([
            "influx-flush",
            "--influx-url",
            &influx.url(),
            "--influx-db",
            DB,
        ])
        .arg("--influx-spool-dir")
        .arg(&spool)
        .output()
        .expect("run influx-flush");
    let ferr = String::from_utf8_lossy(&flush.stderr);
    assert!(flush.status.success(), "influx-flush:\n{ferr}");
    assert!(ferr.contains("is empty"), "{ferr}");
    assert_eq!(
        flow_counts(&influx).get("stuck"),
        Some(&1200),
        "every record after the flush"
    );
}

#[test]
fn replayed_records_land_in_influxdb_with_capture_timestamps() {
    let influx = Influxd::start();
    let dir = TempDir::new("influx-replay");
    let pcap = dir.path().join("dns.pcap");
    std::fs::write(&pcap, capture(25)).expect("write pcap");
    let jsonl = dir.path().join("out.jsonl");
    let out = Command::new(flowlens_tests::flowlens::binary())
        .args([
            "replay",
            pcap.to_str().expect("utf8"),
            "--export-interval",
            "10s",
            "--jsonl",
        ])
        .arg(&jsonl)
        .args(influx_args(&influx.url(), DB, &dir.path().join("spool")))
        .output()
        .expect("run flowlens replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = flowlens_tests::flowlens::read_jsonl(&jsonl);
    // 25 s of capture, 10 s intervals: three records of one conversation.
    assert_eq!(records.len(), 3, "{records:?}");
    let sum = |k: &str| {
        records
            .iter()
            .map(|r| r[k].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    assert_eq!((sum("packets_c2s"), sum("packets_s2c")), (25, 25));
    assert_eq!((sum("bytes_c2s"), sum("bytes_s2c")), (25 * 68, 25 * 128));
    let v = influx.query(
        DB,
        "SELECT count(bytes_c2s), sum(bytes_c2s), sum(bytes_s2c), sum(packets_c2s) FROM flow",
    );
    let row: Vec<i64> = v
        .pointer("/results/0/series/0/values/0")
        .and_then(Value::as_array)
        .map(|r| r.iter().skip(1).filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    assert_eq!(row, vec![3, 25 * 68, 25 * 128, 25], "InfluxDB: {v}");
    // Points carry the capture's time (2023-11-14), not the wall clock.
    let v = influx.query(DB, "SELECT bytes_c2s FROM flow");
    let times: Vec<i64> = v
        .pointer("/results/0/series/0/values")
        .and_then(Value::as_array)
        .map(|rows| rows.iter().filter_map(|r| r[0].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(times.len(), 3, "{v}");
    for t in &times {
        assert!(
            (1_700_000_000_000_000_000..1_700_000_030_000_000_000).contains(t),
            "time {t}"
        );
    }
    // The collector's loss counters follow every interval with its time: one point per reason at each
    // record time, all zero (this replay loses nothing).
    let reasons = influx.series(DB, "SELECT lost FROM flowlens_self GROUP BY reason");
    assert!(reasons.len() >= 10, "every loss reason: {}", reasons.len());
    for s in &reasons {
        let got: Vec<(i64, i64)> = s
            .rows
            .iter()
            .map(|r| {
                (
                    r["time"].as_i64().unwrap_or(-1),
                    r["lost"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        let want: Vec<(i64, i64)> = times.iter().map(|t| (*t, 0)).collect();
        assert_eq!(got, want, "flowlens_self of {:?}", s.tags);
    }
}
