//! InfluxDB write throughput on this machine, against a local influxd
//! (`/usr/bin/influxd`, started on a free loopback port with temporary
//! directories): the ingest ceiling (pre-encoded batches, gzip and plain,
//! posted by 1-8 parallel clients) beside the sink end to end
//! (`write_interval` of 10k records per interval -> encoder -> writer threads
//! -> InfluxDB, 1 and 4 requests in flight), and the collector's CPU per 10k
//! records (getrusage). Every case runs once per round, in a rotating order,
//! into a fresh database (dropped after); medians over the rounds.
//!
//! `cargo bench -p flowlens-collector --bench influx_write [-- --rounds=N]`
//! (not part of the tests).

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
const INTERVALS: u32 = 20;
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
fn interval(k: u32, rng: &mut Rng) -> Vec<ConversationRecord> {
    let ts = TS0 + i64::from(k) * 10_000_000_000;
    (0..PER_INTERVAL)
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
    fn start() -> Option<Self> {
        if !Path::new(INFLUXD).exists() {
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("flowlens-bench-influx-{}", std::process::id()));
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

    fn drop_db(&self, db: &str) {
        let q = format!("DROP DATABASE \"{db}\"");
        let _ = ureq::post(&format!("{}/query", self.url))
            .query("q", &q)
            .call();
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
                        let mut req = agent.post(&url);
                        if gz {
                            req = req.set("Content-Encoding", "gzip");
                        }
                        match req.send_bytes(body) {
                            Ok(_) => break,
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::args()
        .find_map(|a| a.strip_prefix("--rounds=").and_then(|n| n.parse().ok()))
        .unwrap_or(3);
    let Some(influx) = Influxd::start() else {
        eprintln!("influx_write: {INFLUXD} not available; skipped");
        return;
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let intervals: Vec<Vec<ConversationRecord>> =
        (0..INTERVALS).map(|k| interval(k, &mut rng)).collect();
    let records = u64::from(PER_INTERVAL * INTERVALS);

    // Pre-encoded batches as the sink cuts them (plain and gzip).
    let mut enc = Encoder::new(SchemaConfig::default());
    let (mut plain, mut gzipped) = (Vec::new(), Vec::new());
    let mut buf = Vec::new();
    let mut raw_bytes = 0usize;
    for recs in &intervals {
        buf.clear();
        enc.encode_interval(recs, &mut buf);
        raw_bytes += buf.len();
        let text = String::from_utf8_lossy(&buf);
        // Cut like the sink: at most 5000 lines and 1 MiB per batch.
        let (mut body, mut n) = (String::new(), 0u32);
        for l in text.lines() {
            if n > 0 && (n == 5000 || body.len() + l.len() + 1 > 1 << 20) {
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
    }
    let points: u64 = plain.iter().map(|(n, _)| u64::from(*n)).sum();
    println!(
        "influx_write: {records} records in {INTERVALS} intervals -> {points} points ({:.2} points/record), {} batches, {raw_bytes} bytes of line protocol, {} gzipped; {rounds} rounds",
        points as f64 / records as f64,
        plain.len(),
        gzipped.iter().map(|(_, b)| b.len()).sum::<usize>()
    );
    let mut cases = Vec::new();
    for gz in [true, false] {
        for par in [1usize, 2, 4, 8] {
            cases.push(Case::Ceiling { gz, par });
        }
        for in_flight in [1usize, 4] {
            cases.push(Case::Sink { gz, in_flight });
        }
    }
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut cpu_total: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut cpu_encode: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut retries = vec![0u64; cases.len()];
    let mut run = 0usize;
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (k + round * 3) % cases.len();
            let db = format!("run{run}");
            run += 1;
            match cases[i] {
                Case::Ceiling { gz, par } => {
                    let b = if gz { &gzipped } else { &plain };
                    let (p, r) = ceiling(&influx, &db, b, gz, par, records);
                    pps[i].push(p);
                    retries[i] += r;
                }
                Case::Sink { gz, in_flight } => {
                    let Some((p, total, encode, r)) =
                        end_to_end(&influx, &db, &intervals, gz, in_flight)
                    else {
                        eprintln!("influx_write: the sink did not start");
                        return;
                    };
                    pps[i].push(p);
                    retries[i] += r;
                    cpu_total[i].push(total);
                    cpu_encode[i].push(encode);
                }
            }
            influx.drop_db(&db);
        }
    }
    let med: Vec<f64> = pps.iter_mut().map(|v| median(v)).collect();
    let (best, best_case) = cases
        .iter()
        .zip(&med)
        .filter(|(c, _)| matches!(c, Case::Ceiling { .. }))
        .map(|(c, m)| (*m, *c))
        .fold((0.0, cases[0]), |a, b| if b.0 > a.0 { b } else { a });
    let per_record = records as f64 / points as f64;
    println!("| case | points/s (median) | records/s | min-max over rounds | / best ceiling | retries (all rounds) | collector CPU per 10k records: total = encode + writers |");
    println!("|---|---|---|---|---|---|---|");
    for (i, c) in cases.iter().enumerate() {
        let (lo, hi) = pps[i]
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let per10k = |c: f64| c * 1e3 * 10_000.0 / records as f64;
        let cpu = match c {
            Case::Sink { .. } => {
                let t = median(&mut cpu_total[i]);
                let e = median(&mut cpu_encode[i]);
                format!(
                    "{:.1} ms = {:.1} + {:.1} ms",
                    per10k(t),
                    per10k(e),
                    per10k(t - e)
                )
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
    println!("best ceiling: {} ({best:.0} points/s)", best_case.name());
}
