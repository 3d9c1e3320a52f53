//! The explorer's pages in headless Chromium (WebDriver, as the browser
//! tests): page weight as sent (gzip), time to first render of the overview,
//! of a conversation view over 10,000 conversations (1,000 rows on the page,
//! the API's page limit) and of the topology at ~200 nodes, each against the
//! same page over a filter that matches nothing (shell, scripts and empty
//! answers: the baseline), interleaved rounds in one run.
//! `cargo build --release -p flowlens-bench && target/release/web-pages [--smoke] [--rounds=N]`

use std::{sync::Arc, time::Duration};

use flowlens_bench::{arg_u64, median, print_table, smoke_requested, Row};
use flowlens_tests::browser::{Driver, Session};
use flowlens_web::{
    health::MemoryHealthLog,
    metrics::NoMetrics,
    server::{spawn, WebConfig},
    store::embedded::{EmbeddedConfig, EmbeddedStore},
    testdata::{busy_host, S},
    AppStateBuilder,
};
use serde_json::{json, Value};

const NOTHING: &str = "proto = 255";

/// Loads `url` and returns ms from navigation start to the first render.
fn first_render(s: &mut Session, url: &str) -> f64 {
    s.goto(url);
    let v = s.wait_for(
        "the first render",
        Duration::from_secs(120),
        "const m = performance.getEntriesByName('flowlens-rendered'); return m.length ? m[0].startTime : null",
        &[],
    );
    v.as_f64().unwrap_or(f64::NAN)
}

/// Bytes over the wire (compressed) of the page and everything it loaded:
/// (all, assets and shell only).
fn weight(s: &Session) -> (f64, f64) {
    let v = s.exec(
        "const e = performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')); return e.map(x => [x.name, x.transferSize])",
        &[],
    );
    let (mut all, mut assets) = (0.0, 0.0);
    for e in v.as_array().into_iter().flatten() {
        let n = e[1].as_f64().unwrap_or(0.0);
        all += n;
        if !e[0].as_str().unwrap_or("").contains("/api/") {
            assets += n;
        }
    }
    (all, assets)
}

fn main() {
    let smoke = smoke_requested();
    let rounds = arg_u64("rounds", if smoke { 1 } else { 7 }) as usize;
    let header = !std::env::args().any(|a| a == "--no-header");
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let start = (wall - 120) / 10 * 10 * S;
    let store = EmbeddedStore::open(EmbeddedConfig {
        queue_intervals: 4,
        ..EmbeddedConfig::default()
    })
    .expect("store");
    let w = store.writer();
    // 10,000 conversations of 150 processes (2 programs per container) in 20
    // containers to 140 peers: the expanded topology has 1 host + 19 containers
    // + 40 programs + 140 remote ends = 200 nodes.
    for b in busy_host(start, 1, 10_000, 150, 20, 140) {
        assert!(w.offer(&b), "queue full");
    }
    assert!(w.sync(Duration::from_secs(120)));
    let srv = spawn(
        WebConfig::new("127.0.0.1:0".parse().expect("addr"), None),
        AppStateBuilder::new(
            Arc::new(store),
            Arc::new(NoMetrics),
            Arc::new(MemoryHealthLog::new(3600 * S, 10_000)),
        ),
    )
    .expect("server");
    let base = format!("http://{}", srv.addr());
    let enc = |s: &str| -> String { s.replace(' ', "+").replace('=', "%3D") };
    let expand: Vec<String> = std::iter::once("host:node-1".to_owned())
        .chain((1..20).map(|c| format!("container:node-1/svc-{c}")))
        .collect();
    let cases = [
        ("overview", format!("{base}/?from=now-15m")),
        (
            "conversations, 10,000 (1,000 rows shown)",
            format!("{base}/conversations?from=now-15m&limit=1000"),
        ),
        (
            "topology, all expanded, 500 edges",
            format!(
                "{base}/topology?from=now-15m&edges=500&expand={}",
                expand.join("%2C")
            ),
        ),
    ];
    let drv = Driver::start();
    // Page weight on a cold cache.
    let mut cold = drv.session();
    first_render(&mut cold, &cases[0].1);
    let (all, assets) = weight(&cold);
    let host = cold.exec("return fetch('/api/topology?from=now-15m&edges=500&expand=' + arguments[0]).then(r => r.json()).then(g => g.nodes.length)", &[json!(expand.join(","))]);
    drop(cold);
    let mut rows = vec![Row {
        section: "web",
        case:
            "page weight: the overview on a cold cache (gzip as sent; shell, CSS, scripts, ECharts)"
                .into(),
        value: format!("{:.0} KB", assets / 1000.0),
        baseline: String::new(),
        ratio: format!("{:.0} KB with its API answers", all / 1000.0),
        goal: format!(
            "< 600 KB: {}",
            if assets < 600_000.0 { "met" } else { "NOT met" }
        ),
    }];
    let mut s = drv.session();
    // Warm the cache: the timings are of a returning user.
    first_render(&mut s, &cases[0].1);
    for (name, url) in &cases {
        let empty = format!("{url}&filter={}", enc(NOTHING));
        let (mut t, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            b.push(first_render(&mut s, &empty));
            t.push(first_render(&mut s, url));
        }
        let (tm, bm) = (median(&t), median(&b));
        let extra = if name.starts_with("topology") {
            format!(" ({} nodes)", host.as_u64().unwrap_or(0))
        } else {
            String::new()
        };
        rows.push(Row {
            section: "web",
            case: format!("first render: {name}{extra} (median of {rounds})"),
            value: format!("{tm:.0} ms"),
            baseline: format!("{bm:.0} ms (same page, filter {NOTHING})"),
            ratio: format!("{:.2}× (+{:.0} ms)", tm / bm, tm - bm),
            goal: String::new(),
        });
    }
    let _: Value = Value::Null;
    print_table(&rows, header);
    drop(s);
    srv.stop();
}
