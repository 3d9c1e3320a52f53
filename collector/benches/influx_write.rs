//! InfluxDB write throughput on this machine, against a local influxd
//! (`/usr/bin/influxd`, started on a free loopback port with temporary
//! directories): the ingest ceiling (pre-encoded batches, gzip and plain,
//! posted by 2 and 4 parallel plain HTTP clients) beside the sink end to end
//! with its defaults (`write_interval` of 10k records per interval ->
//! encoder -> writer threads -> InfluxDB), and the collector's CPU per 10k
//! records (getrusage). Every case runs once per round, in a rotating order,
//! on a fresh influxd (no drift from earlier cases); the ratio is the sink against the
//! best ceiling of the same round, median over the rounds.
//!
//! `cargo bench -p flowlens-collector --bench influx_write -- [--rounds=N]
//! [--intervals=N] [--smoke] [--no-header]` (not part of the tests;
//! `--no-header`: only rows for `bench/run-all.sh`'s table).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Rng;
use flowlens_collector::influx::http::gzip;
use flowlens_collector::influx::settings::InfluxSettings;
use flowlens_collector::influx::sink::InfluxSink;
use flowlens_collector::influx::{Encoder, SchemaConfig};
use flowlens_collector::sinks::RecordSink;
use flowlens_correlator::record::{ConversationRecord, Endpoint, ProcessAttribution};

const INFLUXD: &str = "/usr/bin/influxd";
const PER_INTERVAL: u32 = 10_000;
const TS0: i64 = 1_700_000_000_000_000_000;

fn process(rng: &mut Rng) -> ProcessAttribution {
    const COMMS: [&str; 8] = [
        "nginx", "curl", "java", "python3", "postgres", "sshd", "node", "envoy",
    ];
    let comm = COMMS[rng.below(COMMS.len() as u64) as usize];
    let n = rng.below(40);
    let container = n < 30;
    let id = format!("{n:02x}{}", "5e".repeat(31));
    ProcessAttribution {
        pid: 1000 + rng.below(30_000) as u32,
        comm: comm.to_owned(),
        exe: Some(format!("/usr/bin/{comm}")),
        uid: if container { 0 } else { 1000 },
        user: Some(if container { "root" } else { "app" }.to_owned()),
        gid: 0,
        cgroup: Some(format!("/docker/{id}")),
        container_id: container.then(|| id.clone()),
        container_runtime: if container { "docker" } else { "host" }.to_owned(),
        container_name: container.then(|| format!("svc-{n}")),
        container_image: container.then(|| format!("registry.local/{comm}:1")),
        pod_uid: None,
    }
}

/// One interval of conversations: local processes to many remote addresses.
fn interval(k: u32, per_interval: u32, rng: &mut Rng) -> Vec<ConversationRecord> {
    let ts = TS0 + i64::from(k) * 10_000_000_000;
    (0..per_interval)
        .map(|_| ConversationRecord {
            ts: String::new(),
            ts_unix_ns: ts,
            interval_ms: 10_000,
            host: "bench".to_owned(),
            proto: "tcp".to_owned(),
            client: Endpoint {
                addr: format!("172.17.0.{}", 2 + rng.below(40)),
                port: 32768 + rng.below(28_000) as u16,
                local: true,
                nat_addr: None,
                nat_port: None,
                name: None,
                process: Some(process(rng)),
            },
            server: Endpoint {
                addr: format!(
                    "10.{}.{}.{}",
                    rng.below(256),
                    rng.below(256),
                    rng.below(256)
                ),
                port: [80, 443, 5432, 6379][rng.below(4) as usize],
                local: false,
                nat_addr: None,
                nat_port: None,
                name: None,
                process: None,
            },
            client_evidence: "socket".to_owned(),
            bytes_c2s: rng.below(1 << 24),
            bytes_s2c: rng.below(1 << 26),
            packets_c2s: rng.below(20_000),
            packets_s2c: rng.below(50_000),
            first_seen: String::new(),
            first_seen_unix_ns: ts - 5_000_000_000,
            last_seen: String::new(),
            last_seen_unix_ns: ts - 1_000,
            duration_ms: 4_999,
            tcp_flags: 0x1b,
            tcp_flags_text: "SYN|ACK|PSH|FIN".to_owned(),
            ifaces: vec!["eth0".to_owned()],
            nat: None,
            signals: Default::default(),
        })
        .collect()
}

/// A throwaway influxd; killed and its directory removed on drop.
struct Influxd {
    child: Child,
    dir: PathBuf,
    url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18086)
}

impl Influxd {
    /// A fresh influxd; `run` makes its directory unique in this process.
    fn start(run: usize) -> Option<Self> {
        if !Path::new(INFLUXD).exists() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "flowlens-bench-influx-{}-{run}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let (port, rpc) = (free_port(), free_port());
        let d = dir.display();
        let conf = format!(
            "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n"
        );
        std::fs::write(dir.join("influxdb.conf"), conf).ok()?;
        let child = Command::new(INFLUXD)
            .arg("-config")
            .arg(dir.join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let s = Influxd {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(ureq::get(&format!("{}/ping", s.url)).call(), Ok(r) if r.status() == 204) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn create_db(&self, db: &str) {
        let q = format!("CREATE DATABASE \"{db}\"");
        let r = ureq::post(&format!("{}/query", self.url))
            .query("q", &q)
            .call();
        assert!(r.is_ok(), "{q}: {r:?}");
    }

    fn count(&self, db: &str) -> u64 {
        let r = ureq::get(&format!("{}/query", self.url))
            .query("db", db)
            .query("q", "SELECT count(bytes_c2s) FROM flow")
            .call();
        let mut body = String::new();
        if let Ok(r) = r {
            let _ = r.into_reader().read_to_string(&mut body);
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.pointer("/results/0/series/0/values/0/1")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU seconds (user + system) of the process or the calling thread.
fn cpu(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `who` is RUSAGE_SELF or RUSAGE_THREAD.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Posts pre-encoded batches (`gz`: gzip bodies) with `par` clients, each
/// retrying a 5xx or transport error (an overloaded influxd answers 500
/// "timeout") after 100 ms, as any client would; returns points/s and the
/// retries. Every record must be in InfluxDB afterwards.
fn ceiling(
    influx: &Influxd,
    db: &str,
    batches: &[(u32, Vec<u8>)],
    gz: bool,
    par: usize,
    records: u64,
) -> (f64, u64) {
    influx.create_db(db);
    let url = format!("{}/write?db={db}&precision=ns", influx.url);
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(batches.to_vec());
    let t0 = Instant::now();
    let threads: Vec<_> = (0..par)
        .map(|_| {
            let (next, retries, batches, url) = (
                Arc::clone(&next),
                Arc::clone(&retries),
                Arc::clone(&batches),
                url.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().build();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, body)) = batches.get(i) else {
                        break;
                    };
                    loop {
                        let mut req = agent
                            .post(&url)
                            .set("Content-Type", "text/plain; charset=utf-8");
                        if gz {
                            req = req.set("Content-Encoding", "gzip");
                        }
                        match req.send_bytes(body) {
                            Ok(r) => {
                                // Read the (empty) answer: only then does
                                // the connection go back for the next request.
                                let _ = r.into_reader().read_to_end(&mut Vec::new());
                                break;
                            }
                            Err(ureq::Error::Status(code, _)) if code < 500 => {
                                panic!("write refused: {code}")
                            }
                            Err(_) => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().is_ok(), "a client failed");
    }
    let secs = t0.elapsed().as_secs_f64();
    let points: u64 = batches.iter().map(|(n, _)| u64::from(*n)).sum();
    assert_eq!(influx.count(db), records, "every record is in InfluxDB");
    (points as f64 / secs, retries.load(Ordering::Relaxed) as u64)
}

/// One end-to-end run of the sink: points/s, CPU seconds (whole process,
/// calling thread) and the sink's retries.
fn end_to_end(
    influx: &Influxd,
    db: &str,
    intervals: &[Vec<ConversationRecord>],
    gz: bool,
    in_flight: usize,
) -> Option<(f64, f64, f64, u64)> {
    influx.create_db(db);
    let spool = influx.dir.join(format!("spool-{db}"));
    let mut s = InfluxSettings::new(&influx.url, db, &spool).ok()?;
    s.target.gzip = gz;
    s.requests_in_flight = in_flight;
    s.queue_batches = 10_000; // measure the writers, not the spool
    let mut sink = InfluxSink::start(s).ok()?;
    let (cpu0, t0) = (cpu(libc::RUSAGE_SELF), Instant::now());
    let main0 = cpu(libc::RUSAGE_THREAD);
    for recs in intervals {
        let _ = sink.write_interval(recs);
    }
    let encode_cpu = cpu(libc::RUSAGE_THREAD) - main0;
    let stats = sink.stats();
    let accepted = stats.snapshot().points_accepted;
    while stats.snapshot().points_written < accepted {
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t0.elapsed().as_secs_f64();
    let total_cpu = cpu(libc::RUSAGE_SELF) - cpu0;
    sink.close();
    let m = stats.snapshot();
    let records: u64 = intervals.iter().map(|i| i.len() as u64).sum();
    assert_eq!(influx.count(db), records, "every record is in InfluxDB");
    let _ = std::fs::remove_dir_all(&spool);
    Some((
        m.points_written as f64 / secs,
        total_cpu,
        encode_cpu,
        m.retries,
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What one round measures.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    Ceiling { gz: bool, par: usize },
    Sink { gz: bool, in_flight: usize },
}

impl Case {
    fn name(self) -> String {
        let z = |gz: bool| if gz { "gzip" } else { "plain" };
        match self {
            Case::Ceiling { gz, par } => {
                format!(
                    "ceiling: {par} parallel clients, pre-encoded {} batches",
                    z(gz)
                )
            }
            Case::Sink { gz, in_flight } => {
                format!(
                    "sink end to end, {} bodies, {in_flight} requests in flight",
                    z(gz)
                )
            }
        }
    }
}

/// Command-line options.
struct Options {
    rounds: usize,
    intervals: u32,
    per_interval: u32,
    smoke: bool,
    no_header: bool,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let num = |name: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(name).and_then(|n| n.parse::<u32>().ok()))
        };
        let smoke = args.iter().any(|a| a == "--smoke");
        Options {
            rounds: num("--rounds=").map_or(if smoke { 1 } else { 3 }, |n| n.max(1) as usize),
            intervals: num("--intervals=").map_or(if smoke { 2 } else { 10 }, |n| n.max(1)),
            per_interval: if smoke { 1_000 } else { PER_INTERVAL },
            smoke,
            no_header: args.iter().any(|a| a == "--no-header"),
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let o = Options::parse();
    let Some(influx) = Influxd::start(0) else {
        eprintln!("influx_write: {INFLUXD} not available; skipped");
        return;
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let intervals: Vec<Vec<ConversationRecord>> = (0..o.intervals)
        .map(|k| interval(k, o.per_interval, &mut rng))
        .collect();
    let records = u64::from(o.per_interval * o.intervals);

    // Pre-encoded batches as the sink cuts them (plain and gzip).
    let defaults = InfluxSettings::new(&influx.url, "x", &influx.dir).ok();
    let (max_lines, max_bytes) = defaults
        .as_ref()
        .map_or((5000, 1 << 20), |s| (s.batch_lines, s.batch_bytes));
    let mut enc = Encoder::new(SchemaConfig::default());
    let (mut plain, mut gzipped) = (Vec::new(), Vec::new());
    let mut buf = Vec::new();
    let mut raw_bytes = 0usize;
    // Every interval's lines, then cut like the writers take them from the
    // queue: at most a request's lines and bytes, across intervals.
    for recs in &intervals {
        enc.encode_interval(recs, &mut buf);
    }
    raw_bytes += buf.len();
    let text = String::from_utf8_lossy(&buf);
    let (mut body, mut n) = (String::new(), 0u32);
    for l in text.lines() {
        if n > 0 && (n as usize == max_lines || body.len() + l.len() + 1 > max_bytes) {
            gzipped.push((n, gzip(body.as_bytes())));
            plain.push((n, std::mem::take(&mut body).into_bytes()));
            n = 0;
        }
        body.push_str(l);
        body.push('\n');
        n += 1;
    }
    if n > 0 {
        gzipped.push((n, gzip(body.as_bytes())));
        plain.push((n, body.into_bytes()));
    }
    let points: u64 = plain.iter().map(|(n, _)| u64::from(*n)).sum();
    let (sink_gz, sink_in_flight) = defaults
        .as_ref()
        .map_or((true, 4), |s| (s.target.gzip, s.requests_in_flight));
    drop(influx);
    if !o.no_header {
        println!(
            "influx_write: {records} records in {} intervals -> {points} points ({:.2} points/record), {} batches, {raw_bytes} bytes of line protocol, {} gzipped; {} rounds",
            o.intervals,
            points as f64 / records as f64,
            plain.len(),
            gzipped.iter().map(|(_, b)| b.len()).sum::<usize>(),
            o.rounds
        );
    }
    // The sink with its defaults is the figure; the other cases say where
    // the ceiling is (parallelism, gzip or not) and what gzip costs the sink.
    let mut cases = vec![Case::Sink {
        gz: sink_gz,
        in_flight: sink_in_flight,
    }];
    let pars: &[usize] = if o.smoke { &[2] } else { &[2, 4] };
    for gz in [true, false] {
        for &par in pars {
            cases.push(Case::Ceiling { gz, par });
        }
    }
    if !o.smoke {
        cases.push(Case::Sink {
            gz: !sink_gz,
            in_flight: sink_in_flight,
        });
    }
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut cpu_total: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut cpu_encode: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut retries = vec![0u64; cases.len()];
    // Per round: the default sink against the best ceiling of that round.
    let mut ratios = Vec::new();
    let mut run = 0usize;
    let started = Instant::now();
    for round in 0..o.rounds {
        let (mut best, mut sink) = (0.0f64, 0.0f64);
        for k in 0..cases.len() {
            let i = (k + round * 2) % cases.len();
            let db = format!("run{run}");
            run += 1;
            // Every case on a fresh influxd: one that ingested (and dropped)
            // earlier cases' series slows down over a run, which would bias
            // whichever case comes later.
            let Some(influx) = Influxd::start(run) else {
                eprintln!("influx_write: influxd did not start");
                return;
            };
            let t = Instant::now();
            let p = match cases[i] {
                Case::Ceiling { gz, par } => {
                    let b = if gz { &gzipped } else { &plain };
                    let (p, r) = ceiling(&influx, &db, b, gz, par, records);
                    retries[i] += r;
                    best = best.max(p);
                    p
                }
                Case::Sink { gz, in_flight } => {
                    let Some((p, total, encode, r)) =
                        end_to_end(&influx, &db, &intervals, gz, in_flight)
                    else {
                        eprintln!("influx_write: the sink did not start");
                        return;
                    };
                    retries[i] += r;
                    cpu_total[i].push(total);
                    cpu_encode[i].push(encode);
                    if i == 0 {
                        sink = p;
                    }
                    p
                }
            };
            pps[i].push(p);
            drop(influx);
            eprintln!(
                "influx_write: round {round}: {}: {p:.0} points/s ({:.1} s; {:.0} s so far)",
                cases[i].name(),
                t.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
        }
        ratios.push(sink / best);
    }
    let med: Vec<f64> = pps.iter_mut().map(|v| median(v)).collect();
    let (best, best_case) = cases
        .iter()
        .zip(&med)
        .filter(|(c, _)| matches!(c, Case::Ceiling { .. }))
        .map(|(c, m)| (*m, *c))
        .fold((0.0, cases[1]), |a, b| if b.0 > a.0 { b } else { a });
    let per_record = records as f64 / points as f64;
    let per10k = |c: f64| c * 1e3 * 10_000.0 / records as f64;
    let cpu_of = |i: usize, cpu_total: &mut [Vec<f64>], cpu_encode: &mut [Vec<f64>]| {
        let t = median(&mut cpu_total[i]);
        let e = median(&mut cpu_encode[i]);
        (per10k(t), per10k(e), per10k(t - e))
    };
    let ratio = median(&mut ratios);
    let (lo_r, hi_r) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
    if o.no_header {
        let (t, e, w) = cpu_of(0, &mut cpu_total, &mut cpu_encode);
        let goal = match (o.smoke, ratio >= 0.9) {
            (true, _) => "smoke: tiny counts, not a measurement",
            (false, true) => "≥ 90 %: met",
            (false, false) => "≥ 90 %: MISSED",
        };
        println!(
            "| influx | sink end to end ({records} records, defaults), median of {} | {:.0} records/s | best ceiling {:.0} records/s ({}) | {:.1} % (rounds {:.1}-{:.1} %) | {goal} |",
            o.rounds,
            med[0] * per_record,
            best * per_record,
            best_case.name(),
            100.0 * ratio,
            100.0 * lo_r,
            100.0 * hi_r
        );
        println!(
            "| influx | collector CPU per 10k records written (encode + writer threads) | {t:.1} ms = {e:.1} + {w:.1} ms | | | |"
        );
        return;
    }
    println!("| case | points/s (median) | records/s | min-max over rounds | / best ceiling | retries (all rounds) | collector CPU per 10k records: total = encode + writers |");
    println!("|---|---|---|---|---|---|---|");
    for (i, c) in cases.iter().enumerate() {
        let (lo, hi) = pps[i]
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let cpu = match c {
            Case::Sink { .. } => {
                let (t, e, w) = cpu_of(i, &mut cpu_total, &mut cpu_encode);
                format!("{t:.1} ms = {e:.1} + {w:.1} ms")
            }
            Case::Ceiling { .. } => String::new(),
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.0}-{:.0} | {:.1} % | {} | {cpu} |",
            c.name(),
            med[i],
            med[i] * per_record,
            lo,
            hi,
            100.0 * med[i] / best,
            retries[i]
        );
    }
    println!(
        "best ceiling (medians): {} ({best:.0} points/s)",
        best_case.name()
    );
    println!(
        "sink with its defaults / best ceiling of the same round: median {:.1} % (rounds {:.1}-{:.1} %); {:.0} s in all",
        100.0 * ratio,
        100.0 * lo_r,
        100.0 * hi_r,
        started.elapsed().as_secs_f64()
    );
}
