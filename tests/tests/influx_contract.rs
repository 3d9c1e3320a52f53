//! The request format of the InfluxDB sink, checked by a small local HTTP
//! server that records requests (no InfluxDB 2.x/3.x server is available
//! here): the v2 write API with token auth, the v1 API with Basic auth, gzip
//! bodies that decompress to exactly the encoded lines, and secrets that
//! never reach a URL, a log line or a `Debug` print.
//! `cargo test -p flowlens-tests --test influx_contract -- --test-threads=1`

use std::time::Duration;

use base64::Engine;
use flowlens_collector::influx::encode::Encoder;
use flowlens_collector::influx::http::{ApiVersion, Auth, Secret};
use flowlens_collector::influx::schema::SchemaConfig;
use flowlens_collector::influx::settings::InfluxSettings;
use flowlens_collector::influx::sink::InfluxSink;
use flowlens_collector::sinks::RecordSink;
use flowlens_tests::influx::{logs, record, wait_for, FakeInflux, Reply, TempDir};

const TOKEN: &str = "xyz-token-7f3a9c";
const PASSWORD: &str = "pw-5b1e2d-secret";

fn settings(url: &str, dir: &TempDir) -> InfluxSettings {
    let mut s = InfluxSettings::new(url, "flowlens", &dir.path().join("spool")).expect("settings");
    s.dead_letter = dir.path().join("dead-letter.lp");
    s.backoff_base = Duration::from_millis(20);
    s.backoff_cap = Duration::from_millis(100);
    s
}

fn wait_written(sink: &InfluxSink, n: u64) {
    let ok = wait_for(Duration::from_secs(10), || {
        sink.stats().snapshot().points_written >= n
    });
    assert!(ok, "not written: {:#?}", sink.stats().snapshot());
}

/// The lines the sink's encoder makes of `recs` (a fresh encoder, as the sink's).
fn encoded(recs: &[flowlens_correlator::record::ConversationRecord]) -> Vec<String> {
    let mut buf = Vec::new();
    Encoder::new(SchemaConfig::default()).encode_interval(recs, &mut buf);
    String::from_utf8(buf)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn v2_write_api_with_token() {
    let dir = TempDir::new("v2");
    let srv = FakeInflux::start(|_, _| Reply::ok());
    let mut s = settings(&srv.url(), &dir);
    s.target.api = ApiVersion::V2;
    s.target.org = Some("acme corp".into());
    s.target.db = "net/flows".into();
    s.target.auth = Auth::Token(Secret::new(TOKEN));
    // gzip as to a remote InfluxDB (the default for a loopback URL is off).
    s.target.gzip = true;
    let mut sink = InfluxSink::start(s).expect("start");
    let recs: Vec<_> = (0..20)
        .map(|i| record(i, 1_700_000_000_000_000_000))
        .collect();
    sink.write_interval(&recs).expect("write");
    let want = encoded(&recs);
    wait_written(&sink, want.len() as u64);
    sink.close();
    let reqs = srv.requests();
    assert!(!reqs.is_empty());
    for r in reqs.iter().filter(|r| r.path != "/ping") {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v2/write");
        assert_eq!(r.param("org"), Some("acme corp"));
        assert_eq!(r.param("bucket"), Some("net/flows"));
        assert_eq!(r.param("precision"), Some("ns"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Token {TOKEN}").as_str())
        );
        assert!(
            !r.target.contains(TOKEN),
            "no token in the URL: {}",
            r.target
        );
    }
    let writes: Vec<_> = reqs.iter().filter(|r| r.is_write()).collect();
    assert_eq!(writes.len(), 1, "one batch (under 5000 lines and 1 MiB)");
    let w = writes[0];
    assert_eq!(w.header("content-encoding"), Some("gzip"));
    assert!(w.header("connection") != Some("close"), "keep-alive");
    assert_eq!(
        w.lines(),
        want,
        "the body decompresses to exactly the encoded lines"
    );
}

#[test]
fn v1_write_api_with_basic_auth_and_no_password_in_urls() {
    let dir = TempDir::new("v1basic");
    let srv = FakeInflux::start(|_, _| Reply::ok());
    let mut s = settings(&srv.url(), &dir);
    s.target.rp = Some("two weeks".into());
    s.target.auth = Auth::Basic {
        username: "flowlens".into(),
        password: Secret::new(PASSWORD),
    };
    s.batch_lines = 7;
    let mut sink = InfluxSink::start(s).expect("start");
    let recs: Vec<_> = (0..10)
        .map(|i| record(i, 1_700_000_001_000_000_000))
        .collect();
    sink.write_interval(&recs).expect("write");
    let want = encoded(&recs);
    wait_written(&sink, want.len() as u64);
    sink.close();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("flowlens:{PASSWORD}"))
    );
    let mut got = Vec::new();
    let writes: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path == "/write")
        .collect();
    assert!(
        writes.len() >= 3,
        "probe + batches of 7 lines: {}",
        writes.len()
    );
    for r in &writes {
        assert_eq!(r.method, "POST");
        assert_eq!(r.param("db"), Some("flowlens"));
        assert_eq!(r.param("rp"), Some("two weeks"));
        assert_eq!(r.param("precision"), Some("ns"));
        assert_eq!(r.param("u"), None);
        assert_eq!(r.param("p"), None);
        assert!(!r.target.contains(PASSWORD), "{}", r.target);
        assert_eq!(r.header("authorization"), Some(basic.as_str()));
        assert!(r.lines().len() <= 7, "batches bounded by lines");
        got.extend(r.lines());
    }
    // Requests in flight at once may arrive in any order (points carry their
    // own timestamps): every line, exactly once.
    let (mut got, mut want) = (got, want);
    got.sort();
    want.sort();
    assert_eq!(got, want, "all lines, once");
}

#[test]
fn secrets_never_reach_logs_debug_or_errors() {
    logs::start();
    let dir = TempDir::new("secrets");
    // Refuses writes, then fails with 500 a few times: plenty of logging.
    let srv = FakeInflux::start(|r, n| match (r.is_write(), n) {
        (false, _) => Reply::ok(),
        (true, 0) => Reply::status(403, "forbidden"),
        (true, 1..=3) => Reply::status(500, "boom"),
        _ => Reply::ok(),
    });
    for auth in [
        Auth::Token(Secret::new(TOKEN)),
        Auth::Basic {
            username: "flowlens".into(),
            password: Secret::new(PASSWORD),
        },
    ] {
        let mut s = settings(&srv.url(), &dir);
        s.target.auth = auth;
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(TOKEN) && !dbg.contains(PASSWORD), "{dbg}");
        let mut sink = InfluxSink::start(s).expect("start");
        let recs: Vec<_> = (0..3)
            .map(|i| record(i, 1_700_000_002_000_000_000))
            .collect();
        sink.write_interval(&recs).expect("write");
        sink.write_interval(&recs).expect("write");
        // Both intervals may travel in one batch (batches fill across
        // intervals): wait until every accepted point is settled.
        let ok = wait_for(Duration::from_secs(10), || {
            let m = sink.stats().snapshot();
            m.points_accepted > 0 && m.points_written + m.points_dead_lettered >= m.points_accepted
        });
        assert!(ok, "{:#?}", sink.stats().snapshot());
        let m = sink.stats().snapshot();
        sink.close();
        assert!(!format!("{m:?}").contains(TOKEN) && !format!("{m:?}").contains(PASSWORD));
    }
    let log = logs::text();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "logs were captured at debug/trace"
    );
    assert!(
        log.contains("forbidden") && log.contains("boom"),
        "failures were logged"
    );
    assert!(!log.contains(TOKEN), "token in the logs");
    assert!(!log.contains(PASSWORD), "password in the logs");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("flowlens:{PASSWORD}"));
    assert!(!log.contains(&b64), "Basic credentials in the logs");
}

#[test]
fn batches_are_bounded_by_lines_and_bytes() {
    let dir = TempDir::new("bytes");
    let srv = FakeInflux::start(|_, _| Reply::ok());
    let mut s = settings(&srv.url(), &dir);
    s.batch_bytes = 1024;
    s.batch_lines = 5000;
    let mut sink = InfluxSink::start(s).expect("start");
    let lp = flowlens_tests::influx::lines("bytes", 0..200); // ~38 bytes per line
    sink.write_lines(&lp).expect("write");
    wait_written(&sink, 200);
    sink.close();
    let writes = srv.writes();
    assert!(writes.len() >= lp.len() / 1024, "{} batches", writes.len());
    for w in &writes {
        assert!(w.body.len() <= 1024, "{} bytes", w.body.len());
    }
    // Several requests are in flight at once, so batches may arrive in any
    // order (points carry their own timestamps): each body is whole lines,
    // and together they are every line exactly once.
    for w in &writes {
        assert!(w.body.ends_with(b"\n"), "a batch cut inside a line");
    }
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = b
            .split_inclusive(|c| *c == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        v.sort();
        v
    };
    let all: Vec<u8> = writes.iter().flat_map(|w| w.body.clone()).collect();
    assert_eq!(
        lines(&all),
        lines(&lp),
        "cut at line ends, nothing lost or repeated"
    );
}
