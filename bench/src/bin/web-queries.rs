//! The web explorer's stores under one hour of a busy host (≈ 1M `flow`
//! points, ≈ 50k rollup points): median and p95 latency of every endpoint on
//! the embedded store and on a real InfluxDB (Debian's influxd 1.6), the
//! embedded store's memory and disk per day of history, and the export loop's
//! cost with the store on vs off.
//!
//! `web-queries [--intervals=360] [--per-interval=2800] [--reps=20] [--smoke] [--no-influx] [--no-header]`

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::body::{to_bytes, Body};
use flowlens_bench::{arg_u64, median, print_table, rss_kib, smoke_requested, Row};
use flowlens_collector::{
    influx::{encode::Encoder, schema::SchemaConfig, settings::InfluxSettings, sink::InfluxSink},
    sinks::RecordSink,
};
use flowlens_correlator::record::ConversationRecord;
use flowlens_web::{
    health::MemoryHealthLog,
    metrics::NoMetrics,
    store::{
        disk::DiskConfig,
        embedded::{EmbeddedConfig, EmbeddedStore},
        influx::{InfluxConfig, InfluxStore},
        FlowStore,
    },
    testdata::{busy_host, S},
    AppStateBuilder,
};
use tower::ServiceExt;

fn p95(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(0.0)
}

struct Influxd {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18086)
}

fn start_influxd(base: &Path) -> Influxd {
    let dir = base.join("influxd");
    std::fs::create_dir_all(&dir).expect("influxd dir");
    let (port, rpc) = (free_port(), free_port());
    let d = dir.display();
    let conf = format!(
        "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[monitor]\n  store-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n[continuous_queries]\n  enabled = false\n"
    );
    std::fs::write(dir.join("influxdb.conf"), conf).expect("conf");
    let log = std::fs::File::create(dir.join("influxd.log")).expect("log");
    let child = Command::new("/usr/bin/influxd")
        .arg("-config")
        .arg(dir.join("influxdb.conf"))
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("influxd (apt-get install influxdb)");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(ureq::get(&format!("{url}/ping")).call(), Ok(r) if r.status() == 204) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ureq::post(&format!("{url}/query"))
        .query("q", "CREATE DATABASE flowlens")
        .call()
        .expect("create db");
    Influxd { dir, port, child }
}

/// The questions, named by endpoint, and how often each is asked.
fn questions(now_s: i64, heavy_reps: usize, reps: usize) -> Vec<(&'static str, String, usize)> {
    let h = format!("from={}&to={}", now_s - 3600, now_s);
    let q15 = format!("from={}&to={}", now_s - 900, now_s);
    vec![
        (
            "overview: series by container, 1 h (rollup)",
            format!("/api/series?{h}&dims=container&points=120"),
            reps,
        ),
        (
            "table: top processes, 1 h (rollup)",
            format!("/api/top?{h}&dims=process&top=20"),
            reps,
        ),
        (
            "table: top server ports, 1 h",
            format!("/api/top?{h}&dims=server_port&top=20"),
            reps,
        ),
        (
            "sankey user→container→peer, 1 h (rollup)",
            format!("/api/sankey?{h}&dims=user,container,peer"),
            reps,
        ),
        ("topology, 1 h (rollup)", format!("/api/topology?{h}"), reps),
        ("health, 1 h", format!("/api/health?{h}"), reps),
        (
            "complete container values, 1 h",
            format!("/api/complete?{h}&filter=container%20%3D%20"),
            reps,
        ),
        (
            "conversations page, 15 min (records)",
            format!("/api/conversations?{q15}&limit=100"),
            heavy_reps,
        ),
        (
            "series with addr << /24, 15 min (records)",
            format!("/api/series?{q15}&dims=container&filter=addr%20%3C%3C%20198.51.0.0%2F24"),
            heavy_reps,
        ),
        (
            "entity container, 15 min (7 questions)",
            format!("/api/entity?{q15}&kind=container&name=svc-3"),
            heavy_reps,
        ),
        (
            "conversations page, 1 h (records)",
            format!("/api/conversations?{h}&limit=100"),
            heavy_reps.min(3),
        ),
    ]
}

async fn measure(app: &axum::Router, uri: &str, reps: usize) -> (Vec<f64>, usize, u16) {
    let mut ms = Vec::new();
    let mut size = 0;
    let mut status = 0;
    for _ in 0..reps {
        let req = axum::http::Request::get(uri)
            .body(Body::empty())
            .expect("req");
        let t = Instant::now();
        let r = app.clone().oneshot(req).await.expect("infallible");
        status = r.status().as_u16();
        let b = to_bytes(r.into_body(), 1 << 30).await.expect("body");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        size = b.len();
    }
    (ms, size, status)
}

fn app(store: Arc<dyn FlowStore>, now: i64) -> axum::Router {
    flowlens_web::app(
        AppStateBuilder::new(
            store,
            Arc::new(NoMetrics),
            Arc::new(MemoryHealthLog::new(3600 * S, 10_000)),
        )
        .cache_ttl(Duration::ZERO)
        .clock(move || now)
        .build(),
    )
}

fn main() {
    let smoke = smoke_requested();
    let intervals = arg_u64("intervals", if smoke { 6 } else { 360 }) as u32;
    let per = arg_u64("per-interval", if smoke { 200 } else { 2800 }) as u32;
    let reps = arg_u64("reps", if smoke { 2 } else { 20 }) as usize;
    let heavy = if smoke { 1 } else { reps.min(5) };
    let with_influx = !std::env::args().any(|a| a == "--no-influx");
    let header = !std::env::args().any(|a| a == "--no-header");
    let mut rows = Vec::new();
    let base = std::env::temp_dir().join(format!("flowlens-web-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("tmp");
    // 35 processes × 2 peers: ≈ 70 rollup groups per interval, as the ratio asks.
    // The hour before now (the store's retention runs on the real clock).
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let start = (wall - i64::from(intervals) * 10) / 10 * 10 * S + 3 * S + S / 2;
    let gen = || busy_host(start, intervals, per, 35, 8, 2);
    let batches: Vec<Vec<ConversationRecord>> = gen().collect();
    let records: usize = batches.iter().map(Vec::len).sum();
    let now = start + i64::from(intervals) * 10 * S;

    // The export loop's cost: handing an interval to the store vs the InfluxDB
    // encoder's work on the same interval (the sink that runs on the loop today).
    let rss0 = rss_kib("self").unwrap_or(0);
    let store = EmbeddedStore::open(EmbeddedConfig {
        disk: Some(DiskConfig {
            path: base.join("history.sqlite"),
            retention_ns: 7 * 86_400 * S,
            max_bytes: 8 << 30,
        }),
        queue_intervals: intervals as usize + 1,
        ..EmbeddedConfig::default()
    })
    .expect("store");
    let w = store.writer();
    let mut enc = Encoder::new(SchemaConfig::default());
    let mut buf = Vec::new();
    let (mut offer_ns, mut encode_ns) = (Vec::new(), Vec::new());
    let t_ingest = Instant::now();
    for b in &batches {
        let t = Instant::now();
        buf.clear();
        enc.encode_interval(b, &mut buf);
        encode_ns.push(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        assert!(w.offer(b), "queue full");
        offer_ns.push(t.elapsed().as_nanos() as f64);
        // The store's thread works while the loop waits for the next interval.
        assert!(w.sync(Duration::from_secs(120)));
    }
    let ingest = t_ingest.elapsed();
    let (o, e) = (median(&offer_ns), median(&encode_ns));
    rows.push(Row {
        section: "web",
        case: format!(
            "export loop: hand {per} records to the embedded store (per interval, median)"
        ),
        value: format!("{:.0} µs ({:.0} ns/record)", o / 1000.0, o / f64::from(per)),
        baseline: format!(
            "InfluxDB encoder on the same interval: {:.0} µs",
            e / 1000.0
        ),
        ratio: format!("{:.2}×", o / e),
        goal: "no blocking: a bounded queue".into(),
    });
    rows.push(Row {
        section: "web",
        case: format!(
            "embedded store thread: insert + rollup + SQLite, per interval of {per} records"
        ),
        value: format!(
            "{:.1} ms",
            ingest.as_secs_f64() * 1000.0 / f64::from(intervals) - e / 1e6
        ),
        baseline: "interval: 10 s".into(),
        ratio: format!(
            "{:.2} % of a core",
            ingest.as_secs_f64() * 100.0 / (f64::from(intervals) * 10.0)
        ),
        goal: String::new(),
    });
    w.maintain(now); // updates the file size
    assert!(w.sync(Duration::from_secs(120)));
    let live = store.live_stats();
    let disk = store.disk_stats().unwrap_or_default();
    let rss1 = rss_kib("self").unwrap_or(0);
    let hours = f64::from(intervals) * 10.0 / 3600.0;
    rows.push(Row {
        section: "web",
        case: format!(
            "embedded live window: {} records ({:.2} h)",
            live.records, hours
        ),
        value: format!(
            "{:.0} MiB estimated, {:.0} B/record",
            live.bytes as f64 / 1048576.0,
            live.bytes as f64 / live.records.max(1) as f64
        ),
        baseline: format!(
            "process RSS grew {:.0} MiB",
            (rss1.saturating_sub(rss0)) as f64 / 1024.0
        ),
        ratio: String::new(),
        goal: "cap 256 MiB (counted when it evicts early)".into(),
    });
    rows.push(Row {
        section: "web",
        case: format!(
            "embedded history: {} rollup rows for {:.2} h",
            disk.rows_written, hours
        ),
        value: format!(
            "{:.1} MiB per day",
            disk.file_bytes as f64 / 1048576.0 / hours * 24.0
        ),
        baseline: format!(
            "file after the run: {:.1} MiB",
            disk.file_bytes as f64 / 1048576.0
        ),
        ratio: format!(
            "{:.0} B/row",
            disk.file_bytes as f64 / disk.rows_written.max(1) as f64
        ),
        goal: "7 days default retention".into(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let embedded = app(Arc::new(store), now);
    let qs = questions(now / S, heavy, reps);
    let mut results: Vec<(String, String, String, String)> = Vec::new();
    let influx = with_influx.then(|| {
        let srv = start_influxd(&base);
        let url = format!("http://127.0.0.1:{}", srv.port);
        let mut s = InfluxSettings::new(&url, "flowlens", &base.join("spool")).expect("settings");
        s.queue_batches = 1024;
        let mut sink = InfluxSink::start(s).expect("sink");
        let t = Instant::now();
        for b in gen() {
            sink.write_interval(&b).expect("write");
        }
        let stats = sink.stats();
        while stats.snapshot().points_written < stats.snapshot().points_accepted {
            std::thread::sleep(Duration::from_millis(200));
        }
        let m = stats.snapshot();
        sink.close();
        eprintln!(
            "InfluxDB: {} points written in {:.1} s",
            m.points_written,
            t.elapsed().as_secs_f64()
        );
        let mut c = InfluxConfig::new(url.parse().expect("url"), "flowlens");
        c.max_records = 5_000_000;
        (
            srv,
            app(Arc::new(InfluxStore::new(c)), now),
            m.points_written,
        )
    });
    for (name, uri, n) in &qs {
        let (e, esize, es) = rt.block_on(measure(&embedded, uri, *n));
        let inf = influx
            .as_ref()
            .map(|(_, a, _)| rt.block_on(measure(a, uri, *n)));
        let fmt = |v: &[f64], status: u16| {
            if status != 200 {
                format!("HTTP {status}")
            } else {
                format!("{:.1} / {:.1} ms", median(v), p95(v))
            }
        };
        results.push((
            name.to_string(),
            fmt(&e, es),
            inf.as_ref().map_or("-".into(), |(v, _, s)| fmt(v, *s)),
            format!("{} KiB", esize / 1024),
        ));
        let goal = if name.starts_with("overview") || name.starts_with("table") {
            let worst = p95(&e).max(inf.as_ref().map_or(0.0, |(v, _, _)| p95(v)));
            if worst < 300.0 {
                "p95 < 300 ms: met"
            } else {
                "p95 < 300 ms: MISSED"
            }
        } else {
            ""
        };
        rows.push(Row {
            section: "web",
            case: format!("{name}, median / p95 (n={n})"),
            value: format!("embedded {}", fmt(&e, es)),
            baseline: inf
                .as_ref()
                .map_or("-".into(), |(v, _, s)| format!("InfluxDB {}", fmt(v, *s))),
            ratio: format!("answer {} KiB", esize / 1024),
            goal: goal.into(),
        });
    }
    // Baseline: InfluxDB answering the overview's statement itself (no decoding).
    if let Some((srv, _, _)) = &influx {
        use flowlens_query::{
            field::{Dim, Field},
            influxql::InfluxSchema,
            time::{choose_step, Buckets, TimeRange},
        };
        let range = TimeRange {
            from: now - 3600 * S,
            to: now,
        };
        let step = choose_step(range, 120, 0);
        let stmt = InfluxSchema::default()
            .rollup_statement(range, &Buckets::new(range, step), &[Field::Container], None)
            .unwrap_or_default();
        let url = format!("http://127.0.0.1:{}/query", srv.port);
        let mut ms = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let body = ureq::get(&url)
                .query("db", "flowlens")
                .query("q", &stmt)
                .query("epoch", "ns")
                .call()
                .map(|r| r.into_string().unwrap_or_default())
                .unwrap_or_default();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(body.contains("series"), "{body}");
        }
        let _ = Dim::Container;
        rows.push(Row {
            section: "web",
            case: format!("baseline: influxd answering the overview's InfluxQL alone, median / p95 (n={reps})"),
            value: format!("{:.1} / {:.1} ms", median(&ms), p95(&ms)),
            baseline: String::new(),
            ratio: String::new(),
            goal: String::new(),
        });
    }
    if let Some((_, _, points)) = &influx {
        eprintln!("({records} records, {points} InfluxDB points)");
    }
    drop(influx);
    let _ = std::fs::remove_dir_all(&base);
    print_table(&rows, header);
}
