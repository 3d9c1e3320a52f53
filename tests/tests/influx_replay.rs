//! `flowlens replay` writes to the same sinks as `flowlens run`: the records
//! of a capture land in a real InfluxDB (Debian's influxd) with the capture's
//! timestamps and the same values as the JSON lines, and so do the
//! collector's loss counters (`flowlens_self`).

use std::process::Command;

use flowlens_tests::influx::{influx_args, Influxd, TempDir};
use serde_json::Value;

const DB: &str = "replay";

/// A pcap (Ethernet, µs) of UDP 10.1.0.1:5000 <-> 10.1.0.2:53: `n` queries of
/// 40 bytes of payload and their 100-byte answers, one per second from t0.
fn capture(n: u32) -> Vec<u8> {
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
        for (k, pkt) in [frame(a, b, 5000, 53, 40), frame(b, a, 53, 5000, 100)]
            .into_iter()
            .enumerate()
        {
            f.extend_from_slice(&(1_700_000_000 + i).to_le_bytes());
            f.extend_from_slice(&(k as u32 * 1000).to_le_bytes());
            f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
            f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
            f.extend_from_slice(&pkt);
        }
    }
    f
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
