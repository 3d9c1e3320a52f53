//! The web API on a real InfluxDB (Debian's influxd 1.6), filled by the
//! collector's own InfluxDB sink: every endpoint with exact answers, errors
//! and hostile inputs; and the differential test: the same records in the
//! embedded store and in InfluxDB give the same rows for every question.
//! `cargo test -p flowlens-tests --test web_influx -- --test-threads=1`

#[path = "../../web/tests/common/checks.rs"]
mod checks;

use std::{sync::Arc, time::Duration};

use checks::{comparable, enc, get_raw, ok, Scenario};
use flowlens_collector::{
    influx::{settings::InfluxSettings, sink::InfluxSink},
    sinks::RecordSink,
};
use flowlens_correlator::record::ConversationRecord;
use flowlens_tests::influx::{wait_for, Influxd, TempDir};
use flowlens_web::{
    health::MemoryHealthLog,
    metrics::NoMetrics,
    store::{
        disk::DiskConfig,
        embedded::{EmbeddedConfig, EmbeddedStore},
        influx::{InfluxConfig, InfluxStore},
        FlowStore,
    },
    testdata::{small_host, S},
    AppStateBuilder,
};

const INTERVALS: u32 = 12;

/// Two hours ago, half a second off every bucket boundary.
fn start() -> i64 {
    static T: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        (now - 7200) / 10 * 10 * S + 3 * S + S / 2
    })
}

fn now() -> i64 {
    start() + INTERVALS as i64 * 10 * S
}

fn range() -> String {
    format!("from={}&to={}", (start() - 10 * S) / S, now() / S + 1)
}

/// Writes the batches through the collector's InfluxDB sink and waits for them.
fn fill(influx: &Influxd, dir: &TempDir, batches: &[Vec<ConversationRecord>]) {
    influx.exec("CREATE DATABASE flowlens");
    let s = InfluxSettings::new(&influx.url(), "flowlens", &dir.path().join("spool"))
        .expect("settings");
    let mut sink = InfluxSink::start(s).expect("sink");
    for b in batches {
        sink.write_interval(b).expect("write");
    }
    let stats = sink.stats();
    let ok = wait_for(Duration::from_secs(30), || {
        let m = stats.snapshot();
        m.points_accepted > 0 && m.points_written == m.points_accepted
    });
    assert!(ok, "{:#?}", stats.snapshot());
    sink.close();
}

fn influx_store(influx: &Influxd, pushdown: bool) -> Arc<InfluxStore> {
    let mut c = InfluxConfig::new(influx.url().parse().expect("url"), "flowlens");
    c.pushdown = pushdown;
    Arc::new(InfluxStore::new(c))
}

/// A reader that does not know the rollup has `server_port` and `peer_local`
/// (as for data written before they were tags): those questions read the
/// `flow` measurement's tags.
fn influx_store_without_rollup_ports(influx: &Influxd) -> Arc<InfluxStore> {
    let mut c = InfluxConfig::new(influx.url().parse().expect("url"), "flowlens");
    c.detect_schema = false;
    c.schema.rollup_user_tag = "username";
    Arc::new(InfluxStore::new(c))
}

fn app(store: Arc<dyn FlowStore>) -> axum::Router {
    flowlens_web::app(
        AppStateBuilder::new(
            store,
            Arc::new(NoMetrics),
            Arc::new(MemoryHealthLog::new(3600 * S, 1000)),
        )
        .cache_ttl(Duration::ZERO)
        .clock(now)
        .build(),
    )
}

fn scenario() -> Vec<Vec<ConversationRecord>> {
    small_host(start(), INTERVALS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_on_influxdb() {
    let influx = Influxd::start();
    let dir = TempDir::new("web-influx");
    fill(&influx, &dir, &scenario());
    let app = app(influx_store(&influx, true));
    let s = Scenario {
        app: &app,
        records: scenario().concat(),
        range: range(),
    };
    s.every_endpoint().await;
    s.errors_and_hostile_inputs().await;
    checks::security_headers(&app).await;
    let (_, _, m) = get_raw(&app, "/metrics", &[]).await;
    assert!(m.contains("flowlens_web_influx_queries_total"), "{m}");
    assert!(
        m.contains("flowlens_web_influx_errors_total 0\n"),
        "no failed query: {m}"
    );
}

/// The questions of the differential test.
fn questions() -> Vec<String> {
    let mut q: Vec<String> = Vec::new();
    let filters = [
        "",
        "container = web",
        "NOT container = web AND proto = tcp",
        "server_port IN (443, 5432)",
        "server_port >= 1024 OR role = server",
        "peer = db OR peer = \"203.0.113.7\"",
        "addr << 172.17.0.0/16",
        "peer_addr << 198.51.100.0/24 OR local_addr = 10.0.0.5",
        "user = alice AND process ~ TH",
        "process = \"py \\\"th'on\\\",=x\"",
        "container ~ \"ünï\"",
        "direction = out",
        "direction = in AND NOT user IN (root, postgres)",
        "peer_local = true",
        "pid > 300 AND exe ~ /usr/",
        "proto = icmp OR proto = udp",
    ];
    let dims = [
        "container",
        "process",
        "user",
        "host",
        "peer",
        "proto",
        "server_port",
        "direction",
        "role",
        "container,process",
        "user,peer",
        "server_port,direction",
        "container,peer,proto",
    ];
    for f in filters {
        let f = if f.is_empty() {
            String::new()
        } else {
            format!("&filter={}", enc(f))
        };
        for d in dims {
            for unit in ["bytes", "packets", "conversations"] {
                q.push(format!(
                    "/api/series?dims={d}&top=5&points=14&unit={unit}{f}"
                ));
            }
            q.push(format!("/api/top?dims={d}&top=50&points=14{f}"));
        }
        q.push(format!(
            "/api/series?dims=container&bidirectional=true&points=14{f}"
        ));
        q.push(format!("/api/sankey?dims=user,container,peer&top=8{f}"));
        q.push(format!(
            "/api/sankey?dims=process,server_port&unit=packets{f}"
        ));
        q.push(format!(
            "/api/topology?expand=host:node-1,container:node-1/web{f}"
        ));
        q.push(format!("/api/topology?unit=packets{f}"));
        if !f.contains("direction") {
            for sort in [
                "bytes",
                "bytes_s2c",
                "packets_c2s",
                "duration",
                "first_seen",
                "last_seen",
                "records",
                "rtt",
                "rtt_max",
                "connect",
                "retransmits",
                "resets",
                "errors",
                "dns_latency",
            ] {
                q.push(format!("/api/conversations?sort={sort}&limit=1000{f}"));
            }
            q.push(format!(
                "/api/conversations?sort=bytes&order=asc&limit=3&offset=2{f}"
            ));
            q.push(format!("/api/conversations?format=csv{f}"));
        }
    }
    for (k, n) in [
        ("container", "web"),
        ("container", "db"),
        ("process", "curl"),
        ("user", "alice"),
        ("user", "4242"),
        ("host", "node-1"),
        ("remote", "203.0.113.7"),
        ("remote", "198.51.100.5"),
    ] {
        q.push(format!("/api/entity?kind={k}&name={}&points=14", enc(n)));
    }
    for f in [
        "container = ",
        "process = ",
        "user = a",
        "peer = ",
        "server_port = ",
        "proto = ",
        "host = ",
    ] {
        q.push(format!("/api/complete?filter={}", enc(f)));
    }
    q
}

/// Values without their bytes: the two stores weigh completion candidates differently.
fn complete_texts(v: &serde_json::Value) -> serde_json::Value {
    let mut t: Vec<String> = v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    serde_json::json!(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_and_influxdb_give_the_same_rows() {
    let influx = Influxd::start();
    let dir = TempDir::new("web-diff");
    let batches = scenario();
    fill(&influx, &dir, &batches);
    let emb = EmbeddedStore::open(EmbeddedConfig {
        disk: Some(DiskConfig {
            path: dir.path().join("history.sqlite"),
            retention_ns: 7 * 86_400 * S,
            max_bytes: 64 << 20,
        }),
        ..EmbeddedConfig::default()
    })
    .expect("embedded");
    let w = emb.writer();
    for b in &batches {
        assert!(w.offer(b));
    }
    assert!(w.sync(Duration::from_secs(10)));
    let embedded = app(Arc::new(emb));
    let influx_app = app(influx_store(&influx, true));
    let no_pushdown = app(influx_store(&influx, false));
    let flow_tags = app(influx_store_without_rollup_ports(&influx));
    let qs = questions();
    let mut sources = std::collections::BTreeMap::<(String, String), usize>::new();
    for q in &qs {
        let u = format!("{q}&{}", range());
        let (se, he, be) = get_raw(&embedded, &u, &[]).await;
        let (si, _, bi) = get_raw(&influx_app, &u, &[]).await;
        let (sn, _, bn) = get_raw(&no_pushdown, &u, &[]).await;
        let (st, _, bt) = get_raw(&flow_tags, &u, &[]).await;
        assert_eq!(
            (se.as_u16(), si.as_u16(), sn.as_u16(), st.as_u16()),
            (200, 200, 200, 200),
            "{q}:\n{be}\n{bi}\n{bn}\n{bt}"
        );
        if he["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
        {
            assert_eq!(be, bi, "{q}");
            assert_eq!(bi, bn, "{q}");
            assert_eq!(bi, bt, "{q}");
            continue;
        }
        let json = |b: &str| -> serde_json::Value { serde_json::from_str(b).expect("json") };
        let (je, ji, jn, jt) = (json(&be), json(&bi), json(&bn), json(&bt));
        for other in [&ji, &jt] {
            if let (Some(a), Some(b)) = (je["source"].as_str(), other["source"].as_str()) {
                *sources.entry((a.to_owned(), b.to_owned())).or_default() += 1;
            }
        }
        if q.starts_with("/api/complete") {
            assert_eq!(complete_texts(&je), complete_texts(&ji), "{q}");
            continue;
        }
        assert_eq!(comparable(je), comparable(ji.clone()), "{q}");
        assert_eq!(
            comparable(ji.clone()),
            comparable(jn),
            "{q}: pushdown changed the rows"
        );
        assert_eq!(
            comparable(ji),
            comparable(jt),
            "{q}: the flow measurement's tags gave other rows than the rollup"
        );
    }
    // Every source of both stores was exercised.
    let used: Vec<String> = sources.keys().map(|(a, b)| format!("{a}/{b}")).collect();
    for want in ["rollup/rollup", "rollup/flow_tags", "records/records"] {
        assert!(
            used.iter().any(|u| u == want),
            "{want} not exercised: {used:?}"
        );
    }
    eprintln!(
        "{} questions answered alike; sources (embedded/influx): {sources:?}",
        qs.len()
    );
    // A sanity check that the comparison compares something.
    let v = ok(&influx_app, &format!("/api/top?dims=container&{}", range())).await;
    assert!(v["totals"]["total"].as_u64().unwrap_or(0) > 0);
}
