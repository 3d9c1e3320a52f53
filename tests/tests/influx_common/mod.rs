//! Harness of the InfluxDB tests: a real `influxd` (Debian's 1.6 at
//! /usr/bin/influxd) on free loopback ports with temporary meta/data/wal
//! directories, killable with SIGKILL and restartable on the same data; a
//! scripted HTTP server playing a misbehaving InfluxDB; `flowlens run` with
//! InfluxDB flags; InfluxQL queries. Every resource is an RAII guard.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The InfluxDB server binary.
pub const INFLUXD: &str = "/usr/bin/influxd";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `target/tmp/flowlens-influx/<name>-<pid>-<n>`: removed on drop, kept
/// (path printed) when the test panicked or `FLOWLENS_KEEP_ARTIFACTS` is set.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh empty directory.
    pub fn new(name: &str) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("flowlens-influx")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FLOWLENS_KEEP_ARTIFACTS").is_some() {
            eprintln!("artifacts kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A real InfluxDB 1.x server. Dropping it kills it (SIGKILL) and removes its
/// directories.
pub struct Influxd {
    dir: TempDir,
    /// HTTP port.
    pub port: u16,
    child: Option<Child>,
    creds: Option<(String, String)>,
    agent: ureq::Agent,
}

impl Influxd {
    /// Starts a server without authentication.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts a server with `auth-enabled` and an admin `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_owned(), password.to_owned())))
    }

    fn launch(creds: Option<(String, String)>) -> Self {
        assert!(
            Path::new(INFLUXD).exists(),
            "{INFLUXD} missing: apt-get install influxdb"
        );
        let dir = TempDir::new("influxd");
        let (port, rpc) = (free_port(), free_port());
        let d = dir.path().display();
        let config = format!(
            "reporting-enabled = false\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  auth-enabled = {}\n\
             [continuous_queries]\n  enabled = false\n",
            creds.is_some()
        );
        std::fs::write(dir.path().join("influxdb.conf"), config).expect("write influxdb.conf");
        let mut s = Influxd {
            dir,
            port,
            child: None,
            creds: None,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        };
        s.spawn();
        if let Some((u, p)) = creds {
            // 1.x lets the first admin user be created without credentials.
            s.exec(&format!(
                "CREATE USER \"{u}\" WITH PASSWORD '{p}' WITH ALL PRIVILEGES"
            ));
            s.creds = Some((u, p));
        }
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("influxd.log"))
            .expect("influxd log");
        let child = Command::new(INFLUXD)
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start influxd");
        self.child = Some(child);
        let url = format!("{}/ping", self.url());
        let up = wait_for(
            Duration::from_secs(60),
            || matches!(self.agent.get(&url).call(), Ok(r) if r.status() == 204),
        );
        assert!(
            up,
            "influxd did not answer /ping with 204 within 60 s:\n{}",
            self.log()
        );
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data (after [`Influxd::kill9`]).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn with_auth(&self, r: ureq::Request) -> ureq::Request {
        match &self.creds {
            Some((u, p)) => {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                r.set("Authorization", &format!("Basic {b}"))
            }
            None => r,
        }
    }

    /// `POST /query?q=...` (statements that change things); panics on an error.
    pub fn exec(&self, q: &str) -> Value {
        let r = self.with_auth(self.agent.post(&format!("{}/query", self.url())));
        let v: Value = r
            .query("q", q)
            .call()
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .into_string()
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .expect("json");
        assert!(v.pointer("/results/0/error").is_none(), "{q}: {v}");
        v
    }

    /// `GET /query?db=&q=&epoch=ns`.
    pub fn query(&self, db: &str, q: &str) -> Value {
        let r = self.with_auth(self.agent.get(&format!("{}/query", self.url())));
        let v: Value = r
            .query("db", db)
            .query("q", q)
            .query("epoch", "ns")
            .call()
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .into_string()
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .expect("json");
        assert!(v.pointer("/results/0/error").is_none(), "{q}: {v}");
        v
    }

    /// Rows of a `SELECT` as column -> value maps (tags and fields).
    pub fn rows(&self, db: &str, q: &str) -> Vec<BTreeMap<String, Value>> {
        let v = self.query(db, q);
        let mut out = Vec::new();
        for series in v
            .pointer("/results/0/series")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cols: Vec<String> = series["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| c.as_str().unwrap_or_default().to_owned())
                .collect();
            for row in series["values"].as_array().into_iter().flatten() {
                let row = row.as_array().expect("row");
                out.push(
                    cols.iter()
                        .cloned()
                        .zip(row.iter().cloned())
                        .filter(|(_, v)| !v.is_null())
                        .collect(),
                );
            }
        }
        out
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What the fake server answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status with headers and a body.
    Status {
        /// HTTP status.
        code: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body (JSON like InfluxDB's).
        body: String,
    },
    /// Never answer (until the server is dropped).
    Stall,
}

impl Reply {
    /// 204 No Content.
    pub fn ok() -> Self {
        Self::status(204, "")
    }

    /// `code` with InfluxDB's `{"error": ...}` body (none when empty).
    pub fn status(code: u16, error: &str) -> Self {
        let body = if error.is_empty() {
            String::new()
        } else {
            serde_json::json!({ "error": error }).to_string()
        };
        Reply::Status {
            code,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((k.to_owned(), v.to_owned()));
        }
        self
    }
}

/// One request the fake server received.
#[derive(Clone, Debug)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body, gunzipped when `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Request {
    /// A header by (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A write with points (not the empty start-up probe).
    pub fn is_write(&self) -> bool {
        self.method == "POST" && self.path.ends_with("write") && !self.body.is_empty()
    }

    /// The body's lines.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

/// A small HTTP/1.1 server (keep-alive) playing InfluxDB: `script(request,
/// n)` decides each answer, `n` counting earlier writes with points. Every
/// request is recorded.
pub struct FakeInflux {
    /// Port on 127.0.0.1.
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl FakeInflux {
    /// Starts it.
    pub fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (reqs, st) = (Arc::clone(&requests), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (reqs, st, script) =
                            (Arc::clone(&reqs), Arc::clone(&st), Arc::clone(&script));
                        std::thread::spawn(move || serve(s, &reqs, &st, &*script));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeInflux {
            port,
            requests,
            stop,
            accept: Some(accept),
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// Writes with points so far.
    pub fn writes(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::is_write)
            .collect()
    }
}

impl Drop for FakeInflux {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: TcpStream, reqs: &Mutex<Vec<Request>>, stop: &AtomicBool, script: &Script) {
    let Ok(mut out) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0u8; len];
        if r.read_exact(&mut raw).is_err() {
            return;
        }
        let gz = headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && v == "gzip");
        let body = if gz && !raw.is_empty() {
            let mut b = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut b)
                .expect("the body is not valid gzip");
            b
        } else {
            raw
        };
        let (path, q) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let query = url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let req = Request {
            method,
            path: path.to_owned(),
            target: target.clone(),
            query,
            headers,
            body,
            at: Instant::now(),
        };
        let n = {
            let mut all = reqs.lock().expect("lock");
            let n = all.iter().filter(|r| r.is_write()).count();
            all.push(req.clone());
            n
        };
        match script(&req, n) {
            Reply::Stall => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Status {
                code,
                headers,
                body,
            } => {
                let mut resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                if out.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

/// `flowlens run --iface IF --export-interval 1s --jsonl FILE` plus extra
/// arguments (the InfluxDB flags). Dropping it sends SIGTERM and waits.
pub struct FlowlensRun {
    child: Option<Child>,
    /// JSON lines output (appended to across runs).
    pub jsonl: PathBuf,
    stderr: PathBuf,
}

impl FlowlensRun {
    /// Starts it; does not wait.
    pub fn spawn(
        dir: &Path,
        iface: &str,
        extra: &[String],
        env: &[(&str, &str)],
        tag: &str,
    ) -> Self {
        let bin = crate::common::flowlens::binary();
        assert!(
            bin.is_file(),
            "flowlens binary {} not found: cargo build -p flowlens-collector",
            bin.display()
        );
        let jsonl = dir.join("flowlens.jsonl");
        let stderr = dir.join(format!("flowlens-{tag}.stderr"));
        let mut args: Vec<String> = [
            "run",
            "--iface",
            iface,
            "--export-interval",
            "1s",
            "--jsonl",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(jsonl.to_string_lossy().into_owned());
        args.extend(extra.iter().cloned());
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .env_remove("INFLUX_TOKEN")
            .env_remove("INFLUX_USERNAME")
            .env_remove("INFLUX_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start flowlens");
        FlowlensRun {
            child: Some(child),
            jsonl,
            stderr,
        }
    }

    /// Starts it and waits until it logs "flowlens running" (panics if it exits).
    pub fn start(
        dir: &Path,
        iface: &str,
        extra: &[String],
        env: &[(&str, &str)],
        tag: &str,
    ) -> Self {
        let mut f = Self::spawn(dir, iface, extra, env, tag);
        let mut exited = None;
        let ready = wait_for(Duration::from_secs(30), || {
            exited = f.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            exited.is_some() || f.log().contains("flowlens running")
        });
        if let Some(st) = exited {
            panic!("flowlens exited during start-up ({st}):\n{}", f.log());
        }
        assert!(ready, "flowlens not running after 30 s:\n{}", f.log());
        f
    }

    /// Waits for it to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut st = None;
        wait_for(timeout, || {
            st = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            st.is_some()
        });
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, wait (20 s at most), assert exit 0; returns the log.
    pub fn stop(mut self) -> String {
        let st = self.terminate();
        let log = self.log();
        assert!(
            st.is_some_and(|s| s.success()),
            "flowlens did not exit 0 on SIGTERM: {st:?}\n{}",
            crate::common::flowlens::tail(&log, 40)
        );
        log
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        crate::common::cmd::kill(child.id(), libc::SIGTERM);
        let mut st = None;
        wait_for(Duration::from_secs(20), || {
            st = child.try_wait().ok().flatten();
            st.is_some()
        });
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for FlowlensRun {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A TCP conversation record of interval `ts_ns` between a local client
/// (`curl`, pid 1000 + i) and a remote server, with `i`-dependent counters.
pub fn record(i: u32, ts_ns: i64) -> flowlens_correlator::record::ConversationRecord {
    use flowlens_correlator::record::{ConversationRecord, Endpoint, ProcessAttribution};
    ConversationRecord {
        ts: flowlens_correlator::record::format_rfc3339(i128::from(ts_ns)),
        ts_unix_ns: ts_ns,
        host: "testhost".into(),
        proto: "tcp".into(),
        client: Endpoint {
            addr: "10.0.0.1".into(),
            port: 40000 + (i % 20000) as u16,
            local: true,
            process: Some(ProcessAttribution {
                pid: 1000 + i,
                comm: "curl".into(),
                exe: Some("/usr/bin/curl".into()),
                uid: 1000,
                user: Some("alice".into()),
                gid: 1000,
                cgroup: None,
                container_id: None,
                container_runtime: "host".into(),
                container_name: None,
                container_image: None,
                pod_uid: None,
            }),
        },
        server: Endpoint {
            addr: format!("192.0.2.{}", i % 200 + 1),
            port: 443,
            local: false,
            process: None,
        },
        client_evidence: "socket".into(),
        bytes_c2s: 100 + u64::from(i),
        bytes_s2c: 1000 + u64::from(i),
        packets_c2s: 2,
        packets_s2c: 3,
        first_seen: flowlens_correlator::record::format_rfc3339(i128::from(ts_ns - 500_000_000)),
        first_seen_unix_ns: ts_ns - 500_000_000,
        last_seen: flowlens_correlator::record::format_rfc3339(i128::from(ts_ns - 1_000)),
        last_seen_unix_ns: ts_ns - 1_000,
        duration_ms: 499,
        tcp_flags: 0x1b,
        tcp_flags_text: "SYN|ACK|PSH|FIN".into(),
        ifaces: vec!["eth0".into()],
    }
}

/// `n` line-protocol lines `m,t=<tag> v=<i>i <i>` for `i` in `range`.
pub fn lines(tag: &str, range: std::ops::Range<u32>) -> Vec<u8> {
    range
        .map(|i| {
            format!(
                "m,t={tag} v={i}i {}\n",
                1_700_000_000_000_000_000i64 + i64::from(i)
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// Captured log output of this test binary (a global tracing subscriber at
/// TRACE, installed on first use; tests run one at a time).
pub mod logs {
    use std::io::Write;
    use std::sync::{Arc, Mutex, OnceLock};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn buf() -> &'static Buf {
        static B: OnceLock<Buf> = OnceLock::new();
        B.get_or_init(|| {
            let b = Buf::default();
            let w = b.clone();
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || w.clone())
                .try_init();
            b
        })
    }

    /// Starts capturing (clears what was captured).
    pub fn start() {
        buf().0.lock().expect("lock").clear();
    }

    /// Everything logged since [`start`].
    pub fn text() -> String {
        String::from_utf8_lossy(&buf().0.lock().expect("lock")).into_owned()
    }
}
