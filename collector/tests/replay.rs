//! `flowlens replay` end to end: a written pcap in, exact JSON lines out.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = vec![
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0, 5, 0x08, 0x00,
    ];
    let tot = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend(std::iter::repeat_n(0x61, payload));
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// A little-endian microsecond pcap of (seconds, microseconds, frame).
fn pcap(pkts: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    for (s, us, f) in pkts {
        for x in [*s, *us, f.len() as u32, f.len() as u32] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(f);
    }
    v
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("flowlens-replay-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn replay(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    let records = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code().unwrap_or(-1),
        records,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pick(r: &Value) -> (String, String, u64, u64, u64, u64, String, String) {
    let s = |v: &Value| v.as_str().unwrap().to_string();
    (
        s(&r["ts"]),
        format!("{}:{}", s(&r["client"]["addr"]), r["client"]["port"]),
        r["packets_c2s"].as_u64().unwrap(),
        r["bytes_c2s"].as_u64().unwrap(),
        r["packets_s2c"].as_u64().unwrap(),
        r["bytes_s2c"].as_u64().unwrap(),
        s(&r["client_evidence"]),
        s(&r["tcp_flags_text"]),
    )
}

const C: [u8; 4] = [192, 168, 1, 10];
const S: [u8; 4] = [93, 184, 216, 34];
const T0: u32 = 1_700_000_000;

#[test]
fn replay_writes_exact_records_per_capture_interval() {
    let d = dir();
    let path = d.join("two-intervals.pcap");
    let pkts = vec![
        (T0 + 1, 0, frame(C, S, 40000, 443, 0x02, 0)),
        (T0 + 1, 500, frame(S, C, 443, 40000, 0x12, 0)),
        (T0 + 2, 0, frame(C, S, 40000, 443, 0x10, 100)),
        // An ARP frame: skipped, counted by reason.
        (T0 + 3, 0, {
            let mut a = vec![0xff; 12];
            a.extend_from_slice(&[0x08, 0x06]);
            a.resize(60, 0);
            a
        }),
        // The next interval (10 s boundaries of capture time).
        (T0 + 12, 0, frame(S, C, 443, 40000, 0x18, 1000)),
    ];
    std::fs::write(&path, pcap(&pkts)).unwrap();
    let (code, records, stderr) = replay(&[
        path.to_str().unwrap(),
        "--jsonl",
        "-",
        "--export-interval",
        "10s",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let got: Vec<_> = records.iter().map(pick).collect();
    let row = |ts: &str, pc, bc, ps, bs, flags: &str| {
        (
            ts.to_string(),
            "192.168.1.10:40000".to_string(),
            pc,
            bc,
            ps,
            bs,
            "handshake".to_string(),
            flags.to_string(),
        )
    };
    assert_eq!(
        got,
        vec![
            row("2023-11-14T22:13:30Z", 2, 40 + 140, 1, 40, "SYN|ACK"),
            row("2023-11-14T22:13:32Z", 0, 0, 1, 1040, "SYN|ACK|PSH"),
        ]
    );
    assert_eq!(records[0]["first_seen"], "2023-11-14T22:13:21Z");
    // Capture time: the first interval from the first packet to the 10 s
    // boundary, the last (the end of the capture) from it to the last packet.
    assert_eq!(
        (&records[0]["interval_ms"], &records[1]["interval_ms"]),
        (&serde_json::json!(9000), &serde_json::json!(2000))
    );
    assert_eq!(records[0]["ifaces"], serde_json::json!(["if1"]));
    assert!(
        stderr.contains("5 packets (4 counted, 1 skipped)"),
        "{stderr}"
    );
    assert!(stderr.contains("skipped: not IP 1"), "{stderr}");
    assert!(
        stderr.contains("L2 captured 1396, L2 on the wire 1396, L3 counted 1260"),
        "{stderr}"
    );
}

#[test]
fn truncated_capture_flushes_what_it_read_and_fails() {
    let d = dir();
    let path = d.join("cut.pcap");
    let mut bytes = pcap(&[
        (T0, 0, frame(C, S, 1, 2, 0x10, 10)),
        (T0, 1, frame(C, S, 1, 2, 0x10, 10)),
    ]);
    bytes.truncate(bytes.len() - 7);
    std::fs::write(&path, bytes).unwrap();
    let (code, records, stderr) = replay(&[path.to_str().unwrap(), "--jsonl", "-"]);
    assert_eq!(code, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0]["packets_s2c"], 1,
        "port 1 is the server by ports"
    );
    assert!(
        stderr.contains("file truncated in the packet data at byte 108"),
        "{stderr}"
    );

    let junk = d.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture").unwrap();
    let (code, records, stderr) = replay(&[junk.to_str().unwrap(), "--jsonl", "-"]);
    assert_eq!((code, records.len()), (1, 0));
    assert!(stderr.contains("not a pcap or pcapng file"), "{stderr}");
}

/// `--host` at its bound (253 bytes, a DNS name's limit) is written into
/// every record as given; one byte more is a config error naming the bound.
#[test]
fn host_names_up_to_253_bytes_reach_the_records() {
    let d = dir();
    let path = d.join("host.pcap");
    let pkts = vec![(T0 + 1, 0, frame(C, S, 40001, 443, 0x02, 0))];
    std::fs::write(&path, pcap(&pkts)).unwrap();
    let host = format!("{}.example", "n".repeat(253 - ".example".len()));
    let (code, records, stderr) =
        replay(&[path.to_str().unwrap(), "--jsonl", "-", "--host", &host]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["host"], host.as_str());
    let (code, records, stderr) = replay(&[
        path.to_str().unwrap(),
        "--jsonl",
        "-",
        "--host",
        &format!("x{host}"),
    ]);
    assert_eq!((code, records.len()), (1, 0), "{stderr}");
    assert!(
        stderr.contains("invalid host: '")
            && stderr.contains("is longer than 253 bytes (254 bytes)"),
        "{stderr}"
    );
}
