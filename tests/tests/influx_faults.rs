//! The InfluxDB sink against a misbehaving InfluxDB: a small local HTTP
//! server (`FakeInflux`, not a real InfluxDB) that answers 400 partial
//! write, 401, 404, 429 with Retry-After, 500, or never answers. Asserts the
//! retry / no-retry behaviour by counting requests, the counters, the
//! dead-letter file, the spool, and that the pipeline's call never waits on
//! the network. Then the faults a real InfluxDB (Debian's influxd) has —
//! killed (SIGKILL) and restarted, hung (SIGSTOP), down while the collector
//! restarts — under parallel requests: every point stored, each acknowledged
//! once (a recording forwarder in front of influxd sees every request).
//! `cargo test -p flowlens-tests --test influx_faults -- --test-threads=1`
//!
//! Length: one fault per test against the fake server or influxd and the
//! real sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowlens_collector::influx::settings::InfluxSettings;
use flowlens_collector::influx::spool::Spool;
use flowlens_collector::influx::stats::InfluxMetrics;
use flowlens_collector::influx::{sink::InfluxSink, InfluxError};
use flowlens_collector::sinks::RecordSink;
use flowlens_tests::influx::{
    free_port, lines, logs, record, wait_for, FakeInflux, Influxd, Reply, TempDir,
};

/// Fast settings: 3 lines per batch, short backoff, 2 s request timeout.
fn settings(url: &str, dir: &TempDir) -> InfluxSettings {
    let mut s = InfluxSettings::new(url, "flowlens", &dir.path().join("spool")).expect("settings");
    s.dead_letter = dir.path().join("dead-letter.lp");
    s.batch_lines = 3;
    s.backoff_base = Duration::from_millis(20);
    s.backoff_cap = Duration::from_millis(200);
    s.target.timeout = Duration::from_secs(2);
    s.close_timeout = Duration::from_secs(2);
    s
}

fn stats(s: &InfluxSink) -> InfluxMetrics {
    s.stats().snapshot()
}

fn wait_stats(s: &InfluxSink, what: &str, cond: impl Fn(&InfluxMetrics) -> bool) {
    let ok = wait_for(Duration::from_secs(15), || cond(&stats(s)));
    assert!(ok, "{what}: not reached; counters {:#?}", stats(s));
}

/// Answers the start-up probe (an empty write) and /ping with 204, writes via `f`.
fn writes_answer(f: impl Fn(usize) -> Reply + Send + Sync + 'static) -> FakeInflux {
    FakeInflux::start(move |r, n| if r.is_write() { f(n) } else { Reply::ok() })
}

fn body_lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn partial_write_is_done_dead_lettered_and_not_retried() {
    let dir = TempDir::new("partial");
    let msg = "partial write: field type conflict: input field \"v\" on measurement \"m\" is type float, already exists as type integer dropped=1";
    // The batch with the first line is refused (requests run in parallel:
    // which arrives first is not fixed).
    let srv = FakeInflux::start(move |r, _| {
        if r.is_write() && r.lines().iter().any(|l| l.contains(" v=0i ")) {
            Reply::status(400, msg)
        } else {
            Reply::ok()
        }
    });
    let mut sink = InfluxSink::start(settings(&srv.url(), &dir)).expect("start");
    let lp = lines("a", 0..5); // two batches: 3 + 2 lines
    sink.write_lines(&lp).expect("write");
    wait_stats(&sink, "both batches handled", |m| {
        m.batches_dead_lettered + m.batches_written == 2
    });
    sink.close();
    let m = stats(&sink);
    assert_eq!(srv.writes().len(), 2, "no retry of a partial write");
    assert_eq!(
        (m.retries, m.partial_writes, m.points_written),
        (0, 1, 2),
        "{m:#?}"
    );
    assert_eq!(
        (m.batches_dead_lettered, m.points_dead_lettered),
        (1, 3),
        "{m:#?}"
    );
    let dl = std::fs::read_to_string(dir.path().join("dead-letter.lp")).expect("dead letter");
    let mut dl_lines = dl.lines();
    let comment = dl_lines.next().expect("comment line");
    assert!(
        comment.starts_with("# flowlens dead letter ") && comment.contains("status=400 lines=3"),
        "{comment}"
    );
    assert!(
        comment.contains(msg),
        "the server's message is kept: {comment}"
    );
    assert_eq!(
        dl_lines.collect::<Vec<_>>(),
        body_lines(&lp)[..3]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
}

#[test]
fn refused_4xx_is_dead_lettered_never_retried_and_logged_once() {
    logs::start();
    let dir = TempDir::new("refused");
    let srv = writes_answer(|_| Reply::status(401, "authorization failed"));
    let mut sink = InfluxSink::start(settings(&srv.url(), &dir)).expect("start");
    sink.write_lines(&lines("a", 0..9)).expect("write"); // 3 batches
    wait_stats(&sink, "3 batches dead-lettered", |m| {
        m.batches_dead_lettered == 3
    });
    std::thread::sleep(Duration::from_millis(300)); // a retry would show now
    sink.close();
    let m = stats(&sink);
    assert_eq!(srv.writes().len(), 3, "one request per batch");
    assert_eq!(
        (m.retries, m.points_dead_lettered, m.points_written),
        (0, 9, 0),
        "{m:#?}"
    );
    assert_eq!(
        m.last_error.as_deref(),
        Some("HTTP 401: authorization failed")
    );
    let log = logs::text();
    assert_eq!(
        log.matches("InfluxDB refused a batch").count(),
        1,
        "logged once per distinct message:\n{log}"
    );
    assert!(
        log.contains("authorization failed"),
        "with the server's message"
    );
    let dl = std::fs::read_to_string(dir.path().join("dead-letter.lp")).expect("dead letter");
    // Requests run in parallel: batches land in any order, each whole after
    // its comment line.
    let mut points: Vec<&str> = dl.lines().filter(|l| !l.starts_with('#')).collect();
    points.sort_unstable();
    assert_eq!(points, body_lines(&lines("a", 0..9)));
    for block in dl.split("# flowlens dead letter ").skip(1) {
        let body: Vec<&str> = block.lines().skip(1).collect();
        assert_eq!(body.len(), 3, "a batch stays whole: {block}");
    }
}

#[test]
fn too_many_requests_honours_retry_after() {
    let dir = TempDir::new("429");
    let srv = writes_answer(|n| {
        if n == 0 {
            Reply::status(429, "slow down").header("Retry-After", "1")
        } else {
            Reply::ok()
        }
    });
    let mut sink = InfluxSink::start(settings(&srv.url(), &dir)).expect("start");
    sink.write_lines(&lines("a", 0..3)).expect("write");
    wait_stats(&sink, "written after the wait", |m| m.points_written == 3);
    sink.close();
    let w = srv.writes();
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].body, w[1].body, "the same batch again");
    let gap = w[1].at - w[0].at;
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_secs(3),
        "Retry-After: 1 honoured: {gap:?}"
    );
    let m = stats(&sink);
    assert_eq!((m.retries, m.batches_dead_lettered), (1, 0), "{m:#?}");
}

#[test]
fn server_errors_and_timeouts_are_retried_with_backoff() {
    let dir = TempDir::new("5xx");
    let srv = writes_answer(|n| match n {
        0 => Reply::status(500, "engine: cache-max-memory-size exceeded"),
        1 => Reply::status(503, ""),
        2 => Reply::status(408, "timeout"),
        3 => Reply::Stall,
        _ => Reply::ok(),
    });
    let mut s = settings(&srv.url(), &dir);
    s.target.timeout = Duration::from_millis(500);
    let mut sink = InfluxSink::start(s).expect("start");
    sink.write_lines(&lines("a", 0..3)).expect("write");
    wait_stats(&sink, "written in the end", |m| m.points_written == 3);
    sink.close();
    let w = srv.writes();
    assert_eq!(w.len(), 5, "4 failures, then success");
    assert!(w.windows(2).all(|p| p[0].body == p[1].body));
    // Jittered exponential backoff from 20 ms: waits in [10, 20], [20, 40], [40, 80] ms.
    let gaps: Vec<Duration> = w.windows(2).map(|p| p[1].at - p[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(10), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(40), "{gaps:?}");
    assert!(
        gaps[3] >= Duration::from_millis(500),
        "the stalled request timed out: {gaps:?}"
    );
    let m = stats(&sink);
    assert_eq!(
        (m.retries, m.batches_written, m.batches_dead_lettered),
        (4, 1, 0),
        "{m:#?}"
    );
    assert!(
        m.points_spooled >= 3,
        "the failed batch went to the spool: {m:#?}"
    );
    assert_eq!(m.spool_bytes, 0, "and left it once written: {m:#?}");
}

#[test]
fn a_stalled_server_never_blocks_the_pipeline_and_the_spool_keeps_everything() {
    let dir = TempDir::new("stall");
    let srv = writes_answer(|_| Reply::Stall);
    let mut s = settings(&srv.url(), &dir);
    s.batch_lines = 100;
    s.queue_batches = 2;
    s.target.timeout = Duration::from_millis(500);
    s.close_timeout = Duration::from_secs(1);
    let mut sink = InfluxSink::start(s.clone()).expect("start");
    let mut slowest = Duration::ZERO;
    let mut sent = Vec::new();
    for i in 0..30u32 {
        let lp = lines(&format!("i{i}"), 0..100);
        sent.extend(body_lines(&lp));
        let t = Instant::now();
        sink.write_lines(&lp).expect("write");
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The RecordSink path (encode + enqueue) behaves the same.
    for i in 0..5u32 {
        let recs: Vec<_> = (0..50)
            .map(|j| record(i * 50 + j, 1_700_000_000_000_000_000 + i64::from(i)))
            .collect();
        let t = Instant::now();
        sink.write_interval(&recs).expect("write_interval");
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(100),
        "write_interval/write_lines took {slowest:?} while InfluxDB stalls"
    );
    let m = stats(&sink);
    assert!(
        m.queue_overflow_points > 0 && m.points_spooled > 0,
        "{m:#?}"
    );
    let t = Instant::now();
    sink.close();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "close is bounded: {:?}",
        t.elapsed()
    );
    let m = stats(&sink);
    assert_eq!(m.points_written, 0);
    assert_eq!(
        m.points_spooled, m.points_accepted,
        "everything accepted is in the spool: {m:#?}"
    );
    assert_eq!(m.lost_points(), 0);
    drop(sink);

    // A restart against a healthy InfluxDB replays the spool: every point
    // exactly once. (Order is not asserted: batches in memory when InfluxDB
    // failed enter the spool after those that overflowed meanwhile; every
    // point carries its own timestamp.)
    let good = writes_answer(|_| Reply::ok());
    let mut s2 = s.clone();
    s2.target.url = good.url().parse().expect("url");
    let mut sink = InfluxSink::start(s2).expect("restart");
    let total = m.points_accepted;
    wait_stats(&sink, "spool replayed", |x| {
        x.points_written == total && x.spool_bytes == 0
    });
    sink.close();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for w in good.writes() {
        for l in w.lines() {
            *got.entry(l).or_default() += 1;
        }
    }
    assert_eq!(got.values().sum::<usize>() as u64, m.points_accepted);
    assert!(got.values().all(|&n| n == 1), "each point exactly once");
    assert!(
        sent.iter().all(|l| got.contains_key(l)),
        "every line sent is there"
    );
}

#[test]
fn a_full_spool_drops_the_newest_batches_and_counts_them() {
    logs::start();
    let dir = TempDir::new("full");
    let url = format!("http://127.0.0.1:{}", free_port()); // nothing listens
    let mut s = settings(&url, &dir);
    s.batch_lines = 10;
    s.queue_batches = 1;
    s.spool_max = 4096;
    s.close_timeout = Duration::from_millis(300);
    let mut sink =
        InfluxSink::start(s.clone()).expect("an unreachable server is not a start-up error");
    let mut batches = Vec::new();
    for i in 0..40u32 {
        let lp = lines("full", i * 10..i * 10 + 10);
        batches.push(lp.clone());
        sink.write_lines(&lp).expect("write");
        std::thread::sleep(Duration::from_millis(5));
    }
    sink.close();
    let m = stats(&sink);
    assert_eq!(m.points_accepted, 400);
    assert!(m.spool_overflow_points > 0, "{m:#?}");
    assert_eq!(
        m.points_spooled + m.spool_overflow_points,
        400,
        "nothing unaccounted: {m:#?}"
    );
    assert_eq!(m.lost_points(), m.spool_overflow_points);
    let log = logs::text();
    assert!(
        log.contains("the spool is full"),
        "overflow is logged:\n{log}"
    );
    drop(sink);
    let mut spool = Spool::open(&s.spool_dir, s.spool_max).expect("reopen");
    let mut kept = Vec::new();
    while let Some(b) = spool.peek() {
        kept.push(b.body.clone());
        spool.commit(&b);
    }
    assert_eq!(kept.len() as u64 * 10, m.points_spooled);
    // The oldest batches are kept, the newest dropped (give or take the one
    // or two in memory when the first request failed).
    let limit = kept.len() + 2;
    assert!(
        kept.iter().all(|k| batches[..limit].contains(k)),
        "kept batches are the oldest"
    );
    assert!(!kept.contains(&batches[39]), "the newest batch was dropped");
}

#[test]
fn start_up_health_check_names_config_errors() {
    let dir = TempDir::new("health");
    // 401: a config error.
    let srv = FakeInflux::start(|r, _| match r.path.as_str() {
        "/ping" => Reply::ok(),
        _ => Reply::status(401, "authorization failed"),
    });
    let e = InfluxSink::start(settings(&srv.url(), &dir))
        .err()
        .expect("401 fails start-up");
    assert!(
        matches!(e, InfluxError::AuthRefused { status: 401, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("refused the credentials")
            && e.to_string().contains("authorization failed"),
        "{e}"
    );
    drop(srv);
    // Missing database: a config error naming it.
    let srv = FakeInflux::start(|r, _| match r.path.as_str() {
        "/write" => Reply::status(404, "database not found: \"flowlens\""),
        _ => Reply::ok(),
    });
    let e = InfluxSink::start(settings(&srv.url(), &dir))
        .err()
        .expect("404 fails start-up");
    assert!(
        e.to_string().contains("\"flowlens\"") && e.to_string().contains("--influx-create-db"),
        "{e}"
    );
    drop(srv);
    // Missing retention policy.
    let srv = FakeInflux::start(|r, _| match r.path.as_str() {
        "/write" => Reply::status(500, "retention policy not found: week"),
        _ => Reply::ok(),
    });
    let e = InfluxSink::start(settings(&srv.url(), &dir))
        .err()
        .expect("rp fails start-up");
    assert!(
        matches!(e, InfluxError::RetentionPolicyMissing { .. }),
        "{e:?}"
    );
    drop(srv);
    // --influx-create-db creates it.
    let created = Arc::new(AtomicBool::new(false));
    let c = Arc::clone(&created);
    let srv = FakeInflux::start(move |r, _| match r.path.as_str() {
        "/query" => {
            c.store(true, Ordering::SeqCst);
            Reply::Status {
                code: 200,
                headers: vec![],
                body: r#"{"results":[{"statement_id":0}]}"#.into(),
            }
        }
        "/write" if !c.load(Ordering::SeqCst) => {
            Reply::status(404, "database not found: \"flowlens\"")
        }
        _ => Reply::ok(),
    });
    let mut s = settings(&srv.url(), &dir);
    s.create_db = true;
    let mut sink = InfluxSink::start(s).expect("created");
    sink.close();
    let q: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path == "/query")
        .collect();
    assert_eq!(q.len(), 1);
    assert_eq!(
        (q[0].method.as_str(), q[0].param("q")),
        ("POST", Some("CREATE DATABASE \"flowlens\""))
    );
}

#[test]
fn a_database_missing_at_run_time_is_created_when_allowed() {
    let dir = TempDir::new("createlater");
    let created = Arc::new(AtomicBool::new(false));
    let pings = Arc::new(AtomicUsize::new(0));
    let (c, p) = (Arc::clone(&created), Arc::clone(&pings));
    // Down at start-up (503 on /ping), then up without the database.
    let srv = FakeInflux::start(move |r, _| match r.path.as_str() {
        "/ping" => {
            p.fetch_add(1, Ordering::SeqCst);
            Reply::status(503, "starting")
        }
        "/query" => {
            c.store(true, Ordering::SeqCst);
            Reply::Status {
                code: 200,
                headers: vec![],
                body: r#"{"results":[{"statement_id":0}]}"#.into(),
            }
        }
        _ if !c.load(Ordering::SeqCst) => Reply::status(404, "database not found: \"flowlens\""),
        _ => Reply::ok(),
    });
    let mut s = settings(&srv.url(), &dir);
    s.create_db = true;
    let mut sink = InfluxSink::start(s).expect("start");
    sink.write_lines(&lines("late", 0..3)).expect("write");
    wait_stats(&sink, "written after CREATE DATABASE", |m| {
        m.points_written == 3
    });
    sink.close();
    assert!(created.load(Ordering::SeqCst));
    assert_eq!(stats(&sink).batches_dead_lettered, 0);
    assert_eq!(pings.load(Ordering::SeqCst), 1);
}

#[test]
fn close_flushes_for_its_time_limit_then_spools_the_rest() {
    let dir = TempDir::new("close");
    // A slow InfluxDB: every write takes 300 ms.
    let srv = writes_answer(|_| {
        std::thread::sleep(Duration::from_millis(300));
        Reply::ok()
    });
    let mut s = settings(&srv.url(), &dir);
    s.close_timeout = Duration::from_millis(1500);
    let in_flight = s.requests_in_flight;
    let mut sink = InfluxSink::start(s.clone()).expect("start");
    // 40 batches of 3 lines, ~12 s of work for one writer, ~3 s for four.
    sink.write_lines(&lines("c", 0..120)).expect("write");
    let t = Instant::now();
    sink.close();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(3),
        "flushed for about the close timeout: {took:?}"
    );
    let m = stats(&sink);
    assert!(
        m.points_written >= 3 * 3 * in_flight as u64,
        "it flushed while it could, {in_flight} requests at once: {m:#?}"
    );
    assert!(m.points_spooled > 0, "and spooled the rest: {m:#?}");
    assert_eq!(m.points_written + m.points_spooled, 120, "{m:#?}");
    drop(sink);
    // The next start sends the rest.
    let mut sink = InfluxSink::start(s).expect("restart");
    wait_stats(&sink, "the rest written", |x| {
        x.points_written == m.points_spooled
    });
    sink.close();
    // A request cut off by the deadline may have been stored and is sent
    // again after the restart: at most one batch per request in flight
    // twice (InfluxDB keeps one point per series and timestamp, so the
    // result is the same).
    let mut got: Vec<String> = srv.writes().iter().flat_map(|w| w.lines()).collect();
    got.sort();
    let sent = got.len();
    got.dedup();
    let mut want = body_lines(&lines("c", 0..120));
    want.sort();
    assert_eq!(got, want, "every line arrived");
    assert!(
        sent - want.len() <= 3 * in_flight,
        "at most one batch per request in flight twice: {sent} lines sent"
    );
}

// ---- A real influxd ----

/// Each write's lines and influxd's answer.
type WriteLog = Arc<std::sync::Mutex<Vec<(Vec<String>, u16)>>>;

/// A forwarder in front of a real influxd: every write is sent on
/// (uncompressed) and recorded with influxd's answer; `peak` is the most
/// writes it had in flight at once.
struct Recorder {
    srv: FakeInflux,
    writes: WriteLog,
    peak: Arc<AtomicUsize>,
}

impl Recorder {
    /// Forwards to `influx`, each write delayed by `delay` first.
    fn start(influx: &Influxd, delay: Duration) -> Self {
        let base = influx.url();
        let writes: WriteLog = Arc::new(std::sync::Mutex::new(Vec::new()));
        let peak = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let (w, p) = (Arc::clone(&writes), Arc::clone(&peak));
        let srv = FakeInflux::start(move |r, _| {
            if r.method != "POST" || !r.path.ends_with("/write") {
                return Reply::ok();
            }
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(delay);
            let answer = agent
                .post(&format!("{base}{}", r.target))
                .send_bytes(&r.body);
            now.fetch_sub(1, Ordering::SeqCst);
            let (code, body) = match answer {
                Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, resp)) => {
                    (code, resp.into_string().unwrap_or_default())
                }
                Err(e) => (503, format!("{{\"error\":\"forwarding: {e}\"}}")),
            };
            if r.is_write() {
                w.lock().expect("lock").push((r.lines(), code));
            }
            Reply::Status {
                code,
                headers: vec![],
                body,
            }
        });
        Self { srv, writes, peak }
    }

    /// How often each line was in a write influxd acknowledged (2xx).
    fn acknowledged(&self) -> BTreeMap<String, usize> {
        let mut n = BTreeMap::new();
        for (lines, code) in self.writes.lock().expect("lock").iter() {
            if (200..300).contains(code) {
                for l in lines {
                    *n.entry(l.clone()).or_default() += 1;
                }
            }
        }
        n
    }
}

#[test]
fn every_request_in_flight_keeps_its_connection() {
    // 8 requests in flight (more than a default HTTP pool keeps idle):
    // each writer reuses its keep-alive connection, none is opened per
    // request (a slow server keeps all 8 busy at once).
    let dir = TempDir::new("conns");
    let srv = writes_answer(|_| {
        std::thread::sleep(Duration::from_millis(30));
        Reply::ok()
    });
    let mut s = settings(&srv.url(), &dir);
    s.requests_in_flight = 8;
    let mut sink = InfluxSink::start(s).expect("start");
    for k in 0..8 {
        // 8 rounds of 30 batches of 3 lines.
        sink.write_lines(&lines("k", k * 90..(k + 1) * 90))
            .expect("write");
        wait_stats(&sink, "the round written", |m| {
            m.points_written == u64::from(k + 1) * 90
        });
    }
    sink.close();
    let writes = srv.writes().len();
    assert!(writes >= 8 * 30, "{writes} writes");
    let conns = srv.connections();
    assert!(
        conns <= 8,
        "{conns} connections for {writes} writes with 8 requests in flight"
    );
}

/// Settings for a real influxd: 4 requests at once, 500 lines each.
fn real_settings(url: &str, dir: &TempDir, db: &str) -> InfluxSettings {
    let mut s = InfluxSettings::new(url, db, &dir.path().join("spool")).expect("settings");
    s.dead_letter = dir.path().join("dead-letter.lp");
    s.batch_lines = 500;
    s.requests_in_flight = 4;
    s.queue_batches = 64;
    s.backoff_base = Duration::from_millis(50);
    s.backoff_cap = Duration::from_millis(500);
    s.target.timeout = Duration::from_secs(2);
    s.close_timeout = Duration::from_secs(30);
    s
}

/// `count(v)` and `sum(v)` of measurement `m` in `db`.
fn stored(influx: &Influxd, db: &str) -> (i64, i64) {
    let v = influx.query(db, "SELECT count(v), sum(v) FROM m");
    let row = v.pointer("/results/0/series/0/values/0");
    let at = |i: usize| {
        row.and_then(|r| r.get(i))
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    };
    (at(1), at(2))
}

/// `n` intervals of `per` lines each (tags `i<k>`, values 0..per).
fn intervals(n: u32, per: u32) -> Vec<Vec<u8>> {
    (0..n).map(|k| lines(&format!("i{k}"), 0..per)).collect()
}

fn expected(n: u32, per: u32) -> (i64, i64) {
    let per = i64::from(per);
    (i64::from(n) * per, i64::from(n) * per * (per - 1) / 2)
}

fn wait_long(s: &InfluxSink, what: &str, cond: impl Fn(&InfluxMetrics) -> bool) {
    let ok = wait_for(Duration::from_secs(90), || cond(&stats(s)));
    assert!(ok, "{what}: not reached; counters {:#?}", stats(s));
}

#[test]
fn parallel_requests_store_every_point_once_in_a_real_influxd() {
    let influx = Influxd::start();
    influx.exec("CREATE DATABASE par");
    let rec = Recorder::start(&influx, Duration::from_millis(20));
    let dir = TempDir::new("real-par");
    let mut s = real_settings(&rec.srv.url(), &dir, "par");
    s.queue_batches = 200; // all 40,000 lines fit in memory
    let mut sink = InfluxSink::start(s).expect("start");
    for lp in intervals(40, 1000) {
        sink.write_lines(&lp).expect("write");
    }
    wait_long(&sink, "everything written", |m| m.points_written == 40_000);
    sink.close();
    let m = stats(&sink);
    assert_eq!(
        (m.retries, m.lost_points(), m.points_spooled),
        (0, 0, 0),
        "{m:#?}"
    );
    assert!(
        rec.peak.load(Ordering::SeqCst) >= 2,
        "requests were in flight at once: peak {}",
        rec.peak.load(Ordering::SeqCst)
    );
    let acked = rec.acknowledged();
    assert_eq!(acked.len(), 40_000, "every line acknowledged");
    assert!(acked.values().all(|&n| n == 1), "each line in one request");
    assert_eq!(stored(&influx, "par"), expected(40, 1000));
}

#[test]
fn a_real_influxd_killed_and_restarted_under_parallel_writes_loses_nothing() {
    let mut influx = Influxd::start();
    influx.exec("CREATE DATABASE crash");
    let dir = TempDir::new("real-kill");
    let mut sink = InfluxSink::start(real_settings(&influx.url(), &dir, "crash")).expect("start");
    for (k, lp) in intervals(60, 500).into_iter().enumerate() {
        sink.write_lines(&lp).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        if k == 20 {
            influx.kill9();
        }
        if k == 40 {
            influx.restart();
        }
    }
    wait_long(&sink, "everything written after the restart", |m| {
        m.points_written >= 30_000 && m.spool_pending_points == 0
    });
    sink.close();
    let m = stats(&sink);
    assert_eq!(m.lost_points(), 0, "{m:#?}");
    assert!(
        m.points_spooled > 0 && m.retries > 0,
        "the outage was seen: {m:#?}"
    );
    assert_eq!(m.spool_pending_points, 0, "{m:#?}");
    assert_eq!(
        stored(&influx, "crash"),
        expected(60, 500),
        "every point, once"
    );
}

#[test]
fn a_hung_real_influxd_is_waited_out_through_the_spool() {
    let influx = Influxd::start();
    influx.exec("CREATE DATABASE hung");
    let dir = TempDir::new("real-hung");
    let mut s = real_settings(&influx.url(), &dir, "hung");
    s.target.timeout = Duration::from_millis(700);
    let mut sink = InfluxSink::start(s).expect("start");
    let mut slowest = Duration::ZERO;
    for (k, lp) in intervals(40, 500).into_iter().enumerate() {
        let t = Instant::now();
        sink.write_lines(&lp).expect("write");
        slowest = slowest.max(t.elapsed());
        // Hung from interval 10 to 30: 3 s, several request timeouts.
        let hung = (10..30).contains(&k);
        std::thread::sleep(Duration::from_millis(if hung { 150 } else { 25 }));
        if k == 10 {
            influx.pause();
        }
        if k == 30 {
            influx.resume();
        }
    }
    assert!(
        slowest < Duration::from_millis(200),
        "the pipeline never waits: {slowest:?}"
    );
    wait_long(&sink, "everything written after the resume", |m| {
        m.points_written >= 20_000 && m.spool_pending_points == 0
    });
    sink.close();
    let m = stats(&sink);
    assert_eq!(m.lost_points(), 0, "{m:#?}");
    assert!(
        m.points_spooled > 0,
        "the hang sent points to the spool: {m:#?}"
    );
    assert_eq!(
        stored(&influx, "hung"),
        expected(40, 500),
        "every point, once"
    );
}

#[test]
fn a_spool_replays_into_a_real_influxd_exactly_once_across_collector_restarts() {
    let influx = Influxd::start();
    influx.exec("CREATE DATABASE restart");
    let dir = TempDir::new("real-restart");
    // 1. InfluxDB unreachable: everything goes to the spool.
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut s = real_settings(&down, &dir, "restart");
    s.batch_lines = 100;
    s.close_timeout = Duration::from_millis(300);
    let mut sink =
        InfluxSink::start(s.clone()).expect("an unreachable server is not a start-up error");
    for lp in intervals(50, 200) {
        sink.write_lines(&lp).expect("write");
    }
    sink.close();
    let m = stats(&sink);
    assert_eq!(
        (m.points_written, m.spool_pending_points),
        (0, 10_000),
        "{m:#?}"
    );
    drop(sink);
    // 2. A restart against InfluxDB (slow: 150 ms a request), stopped half way
    //    with requests in flight.
    let slow = Recorder::start(&influx, Duration::from_millis(150));
    let mut s2 = s.clone();
    s2.target.url = slow.srv.url().parse().expect("url");
    s2.close_timeout = Duration::from_millis(600);
    let mut sink = InfluxSink::start(s2).expect("restart 1");
    wait_long(&sink, "some written", |m| m.points_written > 0);
    sink.close();
    let m2 = stats(&sink);
    assert!(m2.spool_pending_points > 0, "stopped half way: {m2:#?}");
    drop(sink);
    // 3. Another restart sends the rest.
    let rec = Recorder::start(&influx, Duration::ZERO);
    let mut s3 = s.clone();
    s3.target.url = rec.srv.url().parse().expect("url");
    let mut sink = InfluxSink::start(s3).expect("restart 2");
    wait_long(&sink, "the spool replayed", |m| m.spool_pending_points == 0);
    sink.close();
    assert_eq!(stats(&sink).lost_points(), 0);
    // Each line acknowledged once, but for batches written out of order
    // behind one still in flight when the collector stopped (sent again
    // after the restart): at most the requests in flight at the stop.
    let mut acked = slow.acknowledged();
    for (l, n) in rec.acknowledged() {
        *acked.entry(l).or_default() += n;
    }
    assert_eq!(acked.len(), 10_000, "every spooled line acknowledged");
    let twice: usize = acked.values().filter(|&&n| n > 1).count();
    assert!(acked.values().all(|&n| n <= 2), "never more than twice");
    assert!(
        twice <= 4 * 100 * 2,
        "only batches near the stop twice: {twice} lines"
    );
    assert_eq!(
        stored(&influx, "restart"),
        expected(50, 200),
        "every point, once"
    );
}
