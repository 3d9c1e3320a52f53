//! The embedded store across a collector restart: history kept, retention
//! and the size cap enforced, a corrupt or full file reported and recovered
//! from without losing the live view.

mod common;

use std::{sync::Arc, time::Duration};

use common::{checks::*, *};
use flowlens_web::{
    store::{
        disk::DiskConfig,
        embedded::{EmbeddedConfig, EmbeddedStore},
        FlowStore,
    },
    testdata::{busy_host, small_host, S},
};

fn open(dir: &TempDir, max_bytes: u64) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig {
        disk: Some(DiskConfig {
            path: dir.0.join("history.sqlite"),
            retention_ns: 7 * 86_400 * S,
            max_bytes,
        }),
        ..EmbeddedConfig::default()
    })
    .expect("store")
}

async fn by_container(app: &axum::Router, q: &str) -> serde_json::Value {
    ok(
        app,
        &format!("/api/top?{}&dims=container&top=50{q}", range()),
    )
    .await
}

fn want_by_container() -> std::collections::BTreeMap<String, u64> {
    totals_by(&ends(&scenario().concat()), |e| Some(e.container.clone()))
}

fn got(v: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["dims"]["container"].as_str().unwrap_or("").to_owned(),
                r["total"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test]
async fn history_survives_a_restart_and_the_live_window_starts_again() {
    let dir = TempDir::new("restart");
    {
        let s = open(&dir, 64 << 20);
        let w = s.writer();
        for b in scenario() {
            w.offer(&b);
        }
        assert!(w.sync(Duration::from_secs(10)));
    } // the collector stops
    let s = Arc::new(open(&dir, 64 << 20));
    assert_eq!(s.live_stats().records, 0, "memory starts empty");
    let app = app(s.clone());
    let v = by_container(&app, "").await;
    assert_eq!(v["source"], "rollup");
    assert_eq!(
        got(&v),
        want_by_container(),
        "history from before the restart"
    );
    // A question only the records answer covers only this run.
    let v = by_container(&app, &format!("&filter={}", enc("pid > 0"))).await;
    assert_eq!(v["source"], "records");
    assert_eq!(v["totals"]["total"], 0);
    // New intervals after the restart add to the history.
    let w = s.writer();
    let more = small_host(start() + INTERVALS as i64 * 10 * S, 1);
    w.offer(&more[0]);
    assert!(w.sync(Duration::from_secs(10)));
    let v = ok(
        &app,
        &format!(
            "/api/top?from={}&to={}&dims=container&top=50",
            (start() - 10 * S) / S,
            now() / S + 20
        ),
    )
    .await;
    let extra = totals_by(&ends(&more[0]), |e| Some(e.container.clone()));
    let mut want = want_by_container();
    for (k, v) in extra {
        *want.entry(k).or_default() += v;
    }
    assert_eq!(got(&v), want);
}

#[tokio::test]
async fn retention_deletes_old_rows() {
    let dir = TempDir::new("retention");
    let s = Arc::new(open(&dir, 64 << 20));
    let w = s.writer();
    let old = start() - 8 * 86_400 * S;
    for b in small_host(old, 3).into_iter().chain(scenario()) {
        w.offer(&b);
    }
    assert!(w.sync(Duration::from_secs(10)));
    w.maintain(now());
    assert!(w.sync(Duration::from_secs(10)));
    let d = s.disk_stats().expect("disk");
    assert!(d.rows_expired > 0, "{d:?}");
    let app = app(s.clone());
    let v = ok(
        &app,
        &format!(
            "/api/top?from={}&to={}&dims=container",
            (old - S) / S,
            (old + 60 * S) / S
        ),
    )
    .await;
    assert_eq!(
        v["totals"]["total"], 0,
        "8 days old, past the 7 day retention: {v}"
    );
    assert_eq!(got(&by_container(&app, "").await), want_by_container());
}

#[tokio::test]
async fn the_size_cap_keeps_the_newest_history() {
    let dir = TempDir::new("sizecap");
    let cap: u64 = 1 << 20;
    let s = Arc::new(open(&dir, cap));
    let w = s.writer();
    // About 6 MB of rollup rows: far over the cap.
    let start = start() - 3600 * S;
    for (i, b) in busy_host(start, 360, 400, 400, 20, 5000).enumerate() {
        w.offer(&b);
        assert!(w.sync(Duration::from_secs(30)));
        if i % 30 == 29 {
            w.maintain(now()); // the store's minutely maintenance
        }
    }
    assert!(w.sync(Duration::from_secs(60)));
    w.maintain(now());
    assert!(w.sync(Duration::from_secs(60)));
    let d = s.disk_stats().expect("disk");
    assert!(d.rows_evicted_size > 0, "{d:?}");
    assert!(
        d.file_bytes <= cap * 12 / 10,
        "file {} over cap {cap}: {d:?}",
        d.file_bytes
    );
    let app = app(s.clone());
    // The newest interval is still in the history; the oldest is not.
    let last = start + 359 * 10 * S;
    let v = ok(
        &app,
        &format!(
            "/api/top?from={}&to={}&dims=container",
            last / S - 1,
            last / S + 1
        ),
    )
    .await;
    assert_eq!(v["source"], "rollup");
    assert!(v["totals"]["total"].as_u64().unwrap_or(0) > 0, "{v} {d:?}");
    let v = ok(
        &app,
        &format!(
            "/api/top?from={}&to={}&dims=container",
            start / S - 1,
            start / S + 1
        ),
    )
    .await;
    assert_eq!(v["totals"]["total"], 0, "{v}");
    // The full file was reported (rows lost or deleted early are counted).
    let (_, _, metrics) = get_raw(&app, "/metrics", &[]).await;
    assert!(
        metrics.contains("flowlens_web_history_rows_evicted_size_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_file_loses_its_oldest_rows_first() {
    let dir = TempDir::new("full");
    // No maintenance runs in between: only SQLite's hard page limit stops growth.
    let s = Arc::new(open(&dir, 300 << 10));
    let w = s.writer();
    let start = start() - 3600 * S;
    let batches: Vec<_> = busy_host(start, 100, 400, 400, 20, 5000).collect();
    for b in &batches {
        w.offer(b);
        assert!(w.sync(Duration::from_secs(30)));
    }
    let d = s.disk_stats().expect("disk");
    assert!(d.full_events > 0, "{d:?}");
    assert!(d.rows_evicted_size > 0, "{d:?}");
    let app = app(s.clone());
    let last = start + 99 * 10 * S;
    let v = ok(
        &app,
        &format!(
            "/api/top?from={}&to={}&dims=container",
            last / S - 1,
            last / S + 1
        ),
    )
    .await;
    let want: u64 = ends(&batches[99]).iter().map(|e| e.sent + e.received).sum();
    assert_eq!(
        v["totals"]["total"], want,
        "the newest interval was written after making room"
    );
    // The live window has every record regardless.
    assert_eq!(s.live_stats().records, 100 * 400);
}

#[tokio::test]
async fn a_corrupt_file_is_moved_aside_at_start() {
    let dir = TempDir::new("corrupt-start");
    let path = dir.0.join("history.sqlite");
    std::fs::write(&path, vec![0x5a; 64 << 10]).expect("garbage");
    let s = Arc::new(open(&dir, 64 << 20));
    let d = s.disk_stats().expect("disk");
    assert_eq!(d.recovered_corrupt, 1, "{d:?}");
    assert!(
        d.available && d.last_error.as_deref().unwrap_or("").contains("corrupt"),
        "{d:?}"
    );
    let aside: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for inspection");
    let w = s.writer();
    for b in scenario() {
        w.offer(&b);
    }
    assert!(w.sync(Duration::from_secs(10)));
    let app = app(s.clone());
    assert_eq!(got(&by_container(&app, "").await), want_by_container());
    let (_, _, m) = get_raw(&app, "/metrics", &[]).await;
    assert!(
        m.contains("flowlens_web_history_recovered_corrupt_total 1"),
        "{m}"
    );
}

#[tokio::test]
async fn corruption_while_running_keeps_the_live_view_and_recovers() {
    let dir = TempDir::new("corrupt-run");
    let path = dir.0.join("history.sqlite");
    let s = Arc::new(open(&dir, 64 << 20));
    let w = s.writer();
    for b in busy_host(start() - 600 * S, 30, 400, 400, 20, 5000) {
        w.offer(&b);
    }
    assert!(w.sync(Duration::from_secs(30)));
    w.maintain(now()); // checkpoint: the rows are in the main file
    assert!(w.sync(Duration::from_secs(30)));
    // Damage every page after the first two (the schema survives, the data does not).
    let len = std::fs::metadata(&path).expect("meta").len();
    assert!(len > 64 << 10, "{len}");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.seek(SeekFrom::Start(8192)).expect("seek");
        f.write_all(&vec![0xa5; (len - 8192) as usize])
            .expect("write");
    }
    for b in scenario() {
        w.offer(&b);
    }
    assert!(w.sync(Duration::from_secs(10)));
    let app = app(s.clone());
    // The rollup cannot be read: the answer comes from the live window, exact, with a notice.
    let v = by_container(&app, "").await;
    assert_eq!(got(&v), want_by_container(), "{v}");
    assert_eq!(v["source"], "records");
    assert!(
        v["notices"][0].as_str().unwrap_or("").contains("history"),
        "{v}"
    );
    // The writer checks the file the reader reported, replaces it, and goes on.
    let next = small_host(now(), 1);
    w.offer(&next[0]);
    assert!(w.sync(Duration::from_secs(10)));
    let d = s.disk_stats().expect("disk");
    assert_eq!(d.recovered_corrupt, 1, "{d:?}");
    let v = ok(
        &app,
        &format!(
            "/api/top?from={}&to={}&dims=container&top=50",
            now() / S - 1,
            now() / S + 1
        ),
    )
    .await;
    assert_eq!(v["source"], "rollup", "{v}");
    assert_eq!(
        got(&v),
        totals_by(&ends(&next[0]), |e| Some(e.container.clone()))
    );
    let st = s.status();
    assert_eq!(st.kind, "embedded");
}
