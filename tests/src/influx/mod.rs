//! Harness of the InfluxDB tests: a real `influxd` (Debian's 1.6 at
//! /usr/bin/influxd) on free loopback ports with temporary meta/data/wal
//! directories, killable with SIGKILL and restartable on the same data; a
//! scripted HTTP server playing a misbehaving InfluxDB; `flowlens run` with
//! InfluxDB flags; InfluxQL queries. Every resource is an RAII guard.

pub mod fake;
pub mod flowlens;

/// Scratch directories (the InfluxDB tests' spools and servers).
pub use crate::TempDir;
pub use fake::{FakeInflux, Reply, Request};
pub use flowlens::{influx_args, FlowlensRun};

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The InfluxDB server binary.
pub const INFLUXD: &str = "/usr/bin/influxd";

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

/// One result series of a query: its `GROUP BY` tags and its rows as column
/// -> value maps (nulls included).
pub struct Series {
    /// Tag key -> value.
    pub tags: BTreeMap<String, String>,
    /// The rows, `time` included.
    pub rows: Vec<BTreeMap<String, Value>>,
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
            self.signal_pid(c.id(), libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: it keeps its connections but answers nothing (a hung server).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Influxd::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().map(|c| c.id()).expect("influxd runs");
        assert!(self.signal_pid(pid, sig), "kill({pid}, {sig})");
    }

    fn signal_pid(&self, pid: u32, sig: libc::c_int) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(pid, sig) == 0 }
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

    /// Rows of a `SELECT` as column -> value maps (tags and fields; nulls
    /// left out), the series after each other.
    pub fn rows(&self, db: &str, q: &str) -> Vec<BTreeMap<String, Value>> {
        let mut out = Vec::new();
        for s in self.series(db, q) {
            for mut row in s.rows {
                row.retain(|_, v| !v.is_null());
                out.push(row);
            }
        }
        out
    }

    /// The result series of a `SELECT` (one per `GROUP BY` tag set).
    pub fn series(&self, db: &str, q: &str) -> Vec<Series> {
        let v = self.query(db, q);
        let all = v.pointer("/results/0/series").and_then(Value::as_array);
        all.into_iter()
            .flatten()
            .map(|s| {
                let tags = s["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let cols: Vec<String> = s["columns"]
                    .as_array()
                    .expect("columns")
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect();
                let rows = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        cols.iter()
                            .cloned()
                            .zip(r.as_array().expect("row").iter().cloned())
                            .collect()
                    })
                    .collect();
                Series { tags, rows }
            })
            .collect()
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP conversation record of interval `ts_ns` between a local client
/// (`curl`, pid 1000 + i) and a remote server, with `i`-dependent counters.
pub fn record(i: u32, ts_ns: i64) -> flowlens_correlator::record::ConversationRecord {
    use flowlens_correlator::record::{ConversationRecord, Endpoint, ProcessAttribution};
    ConversationRecord {
        ts: flowlens_correlator::record::format_rfc3339(i128::from(ts_ns)),
        ts_unix_ns: ts_ns,
        interval_ms: 10_000,
        host: "testhost".into(),
        proto: "tcp".into(),
        client: Endpoint {
            addr: "10.0.0.1".into(),
            port: 40000 + (i % 20000) as u16,
            local: true,
            nat_addr: None,
            nat_port: None,
            name: None,
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
            nat_addr: None,
            nat_port: None,
            name: None,
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
        nat: None,
        signals: Default::default(),
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
