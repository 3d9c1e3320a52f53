//! The web explorer inside the collector: its settings (`--listen`,
//! `--no-web`, `[web]` in the config file), the embedded live store as one
//! more sink of the export loop, the collector's self-metrics as the web's
//! metrics source, and `flowlens web` (the UI and API alone, over InfluxDB).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use flowlens_correlator::record::ConversationRecord;
use flowlens_web::{
    health::{EmbeddedHealthLog, HealthLog, MemoryHealthLog},
    metrics::{MetricsSource, Sample},
    server::{self, WebConfig, WebServer, DEFAULT_LISTEN},
    store::{
        disk::DiskConfig,
        embedded::{EmbeddedConfig, EmbeddedStore, EmbeddedWriter},
        influx::{InfluxAuth, InfluxConfig, InfluxStore},
        FlowStore,
    },
    AppStateBuilder, Token,
};
use serde::Deserialize;
use tracing::info;

use crate::{
    config::ConfigError,
    influx::{
        http::Auth,
        settings::{parse_bytes, ByteSize, InfluxArgs, InfluxFile, InfluxSettings},
    },
    metrics::SelfMetrics,
    sinks::RecordSink,
};

/// Web flags of `flowlens run`.
#[derive(Debug, Args, Default, Clone)]
pub struct WebArgs {
    /// Serve the web UI and API on this address [default: 127.0.0.1:8647].
    /// Any other than loopback needs a token in FLOWLENS_WEB_TOKEN or the file
    /// named by FLOWLENS_WEB_TOKEN_FILE.
    #[arg(long, value_name = "IP:PORT", env = "FLOWLENS_LISTEN")]
    pub listen: Option<String>,
    /// Do not serve the web UI and API (and keep no live store).
    #[arg(long, env = "FLOWLENS_NO_WEB")]
    pub no_web: bool,
    /// The embedded store's history file [default: /var/lib/flowlens/history.sqlite].
    #[arg(long, value_name = "FILE", env = "FLOWLENS_WEB_HISTORY")]
    pub web_history: Option<PathBuf>,
}

/// `[web]` in the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFile {
    /// Serve the UI and API (default true).
    pub enabled: Option<bool>,
    /// Listen address.
    pub listen: Option<String>,
    /// File holding the bearer token (FLOWLENS_WEB_TOKEN(_FILE) win).
    pub token_file: Option<PathBuf>,
    /// `embedded` or `influxdb` (default: `influxdb` when InfluxDB is configured).
    pub store: Option<String>,
    /// How long conversation records stay in memory ("1h").
    pub live_window: Option<String>,
    /// Memory cap of the live window ("256MiB").
    pub live_max_bytes: Option<ByteSize>,
    /// The history file (rollups and health), default /var/lib/flowlens/history.sqlite.
    pub history_file: Option<PathBuf>,
    /// How long history is kept ("7d").
    pub history_retention: Option<String>,
    /// Size cap of the history file ("1GiB").
    pub history_max_bytes: Option<ByteSize>,
    /// Seconds identical API answers are reused (default 5; 0 disables).
    pub cache_seconds: Option<u64>,
}

/// Which store the web reads.
#[derive(Debug, Clone)]
pub enum WebStore {
    /// The embedded live store (this process).
    Embedded(EmbeddedConfig),
    /// InfluxDB.
    Influx(Box<InfluxConfig>),
}

/// Validated web settings.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Server settings.
    pub server: WebConfig,
    /// The store.
    pub store: WebStore,
    /// The listen address was asked for (a busy default port only disables the web).
    pub listen_explicit: bool,
}

fn invalid(what: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        what,
        message: message.into(),
    }
}

fn duration_ns(what: &'static str, v: Option<&String>, default: &str) -> Result<i64, ConfigError> {
    let s = v.map_or(default, String::as_str);
    flowlens_query::time::parse_duration(s).map_err(|m| invalid(what, m))
}

fn size(what: &'static str, v: Option<&ByteSize>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(ByteSize::Bytes(n)) => Ok(*n),
        Some(ByteSize::Text(s)) => parse_bytes(s).map_err(|m| invalid(what, m)),
    }
}

/// How the web reads InfluxDB with the write settings' target.
pub fn influx_reader(s: &InfluxSettings) -> InfluxConfig {
    let mut c = InfluxConfig::new(s.target.url.clone(), &s.target.db);
    c.auth = match &s.target.auth {
        Auth::None => InfluxAuth::None,
        Auth::Basic { username, password } => InfluxAuth::Basic {
            username: username.clone(),
            password: password.expose().to_owned(),
        },
        Auth::Token(t) => InfluxAuth::Token(t.expose().to_owned()),
    };
    c.schema.flow = s.schema.flow_measurement.clone();
    c.schema.rollup = s.schema.rollup_measurement.clone();
    c.schema.rp = s.target.rp.clone();
    c
}

impl WebSettings {
    /// Flags over `[web]`, secrets from `env`; `None` when the web is off.
    pub fn resolve(
        args: &WebArgs,
        file: Option<&WebFile>,
        influx: Option<&InfluxSettings>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let empty = WebFile::default();
        let f = file.unwrap_or(&empty);
        if args.no_web || f.enabled == Some(false) {
            return Ok(None);
        }
        let listen = args.listen.as_ref().or(f.listen.as_ref());
        let server = server_config(listen, f, env)?;
        let store = match (f.store.as_deref(), influx) {
            (Some("influxdb"), None) => {
                return Err(invalid(
                    "web.store",
                    "\"influxdb\" needs the InfluxDB output (--influx-url or [influx] url)",
                ))
            }
            (Some("influxdb") | None, Some(i)) => WebStore::Influx(Box::new(influx_reader(i))),
            (Some("embedded") | None, _) => {
                let mut e = embedded_config(f)?;
                if let (Some(p), Some(d)) = (&args.web_history, e.disk.as_mut()) {
                    d.path = p.clone();
                }
                WebStore::Embedded(e)
            }
            (Some(other), _) => {
                return Err(invalid(
                    "web.store",
                    format!("'{other}': use embedded or influxdb"),
                ))
            }
        };
        Ok(Some(WebSettings {
            server,
            store,
            listen_explicit: listen.is_some(),
        }))
    }
}

fn server_config(
    listen: Option<&String>,
    f: &WebFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WebConfig, ConfigError> {
    let listen: SocketAddr = server::parse_listen(listen.map_or(DEFAULT_LISTEN, String::as_str))
        .map_err(|e| invalid("listen", e.to_string()))?;
    let token = server::resolve_token(env, f.token_file.as_deref())
        .map_err(|e| invalid("web token", e.to_string()))?;
    server::check_listen(listen, token.as_ref()).map_err(|e| invalid("listen", e.to_string()))?;
    let mut c = WebConfig::new(listen, token);
    c.cache_ttl = Duration::from_secs(f.cache_seconds.unwrap_or(5));
    Ok(c)
}

fn embedded_config(f: &WebFile) -> Result<EmbeddedConfig, ConfigError> {
    let live_max = size("web.live_max_bytes", f.live_max_bytes.as_ref(), 256 << 20)?;
    let max_bytes = size(
        "web.history_max_bytes",
        f.history_max_bytes.as_ref(),
        1 << 30,
    )?;
    if max_bytes < 1 << 20 {
        return Err(invalid("web.history_max_bytes", "at least 1MiB"));
    }
    Ok(EmbeddedConfig {
        live_window_ns: duration_ns("web.live_window", f.live_window.as_ref(), "1h")?,
        live_max_bytes: usize::try_from(live_max).unwrap_or(usize::MAX),
        queue_intervals: 64,
        disk: Some(DiskConfig {
            path: f
                .history_file
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/flowlens/history.sqlite")),
            retention_ns: duration_ns("web.history_retention", f.history_retention.as_ref(), "7d")?,
            max_bytes,
        }),
    })
}

/// The live store as a sink of the export loop: hands each interval over
/// without blocking (a full queue is counted and logged by the store).
pub struct LiveStoreSink(EmbeddedWriter);

impl RecordSink for LiveStoreSink {
    fn write_interval(&mut self, records: &[ConversationRecord]) -> std::io::Result<()> {
        // A refused interval is counted by the store (web_store_dropped_records);
        // it is not a loss of the other outputs.
        self.0.offer(records);
        Ok(())
    }

    fn close(&mut self) -> std::io::Result<()> {
        self.0.sync(Duration::from_secs(5));
        Ok(())
    }
}

/// The collector's self-metrics, for `/metrics` and the health history.
pub struct CollectorMetrics(pub Arc<Mutex<SelfMetrics>>);

/// Names that are current values, not cumulative counts.
fn is_gauge(name: &str) -> bool {
    [
        "active",
        "tracked",
        "monitored",
        "awaiting",
        "spool_bytes",
        "kernel_flow_entries",
        "distinct_last_interval",
    ]
    .iter()
    .any(|g| name.contains(g))
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<Sample>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            let name = format!("flowlens_{prefix}");
            let help = format!("flowlens self-metric {prefix} (docs/schema.md, Self-metrics)");
            let value = n.as_f64().unwrap_or(0.0);
            out.push(if is_gauge(prefix) {
                Sample::gauge(&name, &help, value)
            } else {
                let mut s = Sample::counter(&name, &help, 0);
                s.value = value;
                s
            });
        }
        _ => {}
    }
}

impl MetricsSource for CollectorMetrics {
    fn samples(&self, out: &mut Vec<Sample>) {
        let m = match self.0.lock() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Ok(v) = serde_json::to_value(&m) {
            flatten("", &v, out);
        }
        out.push(Sample::counter(
            "flowlens_lost_all_total",
            "Sum of every counter that means data was lost",
            m.lost_total(),
        ));
        for (reason, n) in m.losses() {
            out.push(
                Sample::counter("flowlens_lost_total", "Data lost, by reason", n)
                    .label("reason", reason),
            );
        }
        out.push(
            Sample::gauge(
                "flowlens_sink_up",
                "1 when the output's last write succeeded (InfluxDB: no error since the last success)",
                if m.influx.as_ref().is_some_and(|i| i.last_error.is_some()) {
                    0.0
                } else {
                    1.0
                },
            )
            .label("sink", "influxdb"),
        );
    }
}

/// The web server of a run and the live store's sink (embedded store only).
pub struct WebRun {
    /// Keeps the server running.
    pub server: WebServer,
    /// The sink to add to the export loop.
    pub sink: Option<LiveStoreSink>,
}

/// Starts the store and the server of `flowlens run`; `None` when the
/// default address is taken (logged: the capture goes on without the web).
pub fn start_for_run(
    s: &WebSettings,
    metrics: Arc<Mutex<SelfMetrics>>,
) -> anyhow::Result<Option<WebRun>> {
    if !s.listen_explicit {
        // Probe the default address first: a second flowlens on this host
        // captures without a web UI rather than not at all.
        if let Err(e) = std::net::TcpListener::bind(s.server.listen) {
            tracing::error!(listen = %s.server.listen, error = %e, "The web UI and API are off: the default address is taken (choose one with --listen, or --no-web).");
            return Ok(None);
        }
    }
    let source: Arc<dyn MetricsSource> = Arc::new(CollectorMetrics(metrics));
    let (store, health, sink): (Arc<dyn FlowStore>, Arc<dyn HealthLog>, _) = match &s.store {
        WebStore::Embedded(c) => {
            let store = EmbeddedStore::open(c.clone()).context("starting the web's live store")?;
            if let Some(d) = &c.disk {
                info!(path = %d.path.display(), retention = %flowlens_query::time::human(d.retention_ns), max_bytes = d.max_bytes, "Web history file open.");
            }
            let writer = store.writer();
            let health: Arc<dyn HealthLog> = match store.health_reader() {
                Some(reader) => Arc::new(EmbeddedHealthLog {
                    writer: writer.clone(),
                    reader,
                }),
                None => Arc::new(MemoryHealthLog::new(86_400_000_000_000, 500_000)),
            };
            (Arc::new(store), health, Some(LiveStoreSink(writer)))
        }
        WebStore::Influx(c) => (
            Arc::new(InfluxStore::new((**c).clone())),
            Arc::new(MemoryHealthLog::new(86_400_000_000_000, 500_000)),
            None,
        ),
    };
    let server = server::spawn(
        s.server.clone(),
        AppStateBuilder::new(store, source, health),
    )?;
    Ok(Some(WebRun { server, sink }))
}

/// Flags of `flowlens web`.
#[derive(Debug, Args, Default)]
pub struct WebCmdArgs {
    /// InfluxDB to read (http or https URL).
    #[arg(long, value_name = "URL", env = "FLOWLENS_INFLUX_URL")]
    pub influx_url: Option<String>,
    /// Database (or bucket through the v1 compatibility API). Default: flowlens.
    #[arg(long, value_name = "NAME")]
    pub influx_db: Option<String>,
    /// Retention policy to read (default: the database's default).
    #[arg(long, value_name = "NAME")]
    pub influx_rp: Option<String>,
    /// Serve on this address [default: 127.0.0.1:8647].
    #[arg(long, value_name = "IP:PORT", env = "FLOWLENS_LISTEN")]
    pub listen: Option<String>,
    /// TOML configuration file: its [influx] and [web] sections.
    #[arg(long, value_name = "FILE", env = "FLOWLENS_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct WebCmdFile {
    influx: Option<InfluxFile>,
    web: Option<WebFile>,
}

fn read_file(path: &Path) -> Result<WebCmdFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Only [influx] and [web] matter here; other sections of a run's file are ignored.
    let v: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let pick = |k: &str| v.get(k).cloned();
    let mut t = toml::Table::new();
    for k in ["influx", "web"] {
        if let Some(x) = pick(k) {
            t.insert(k.into(), x);
        }
    }
    toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// `flowlens web`: the UI and API alone, reading InfluxDB; until SIGINT/SIGTERM.
pub fn run_web(args: &WebCmdArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None => WebCmdFile::default(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let iargs = InfluxArgs {
        influx_url: args.influx_url.clone(),
        influx_db: args.influx_db.clone(),
        influx_rp: args.influx_rp.clone(),
        ..InfluxArgs::default()
    };
    let influx = InfluxSettings::resolve(&iargs, file.influx.as_ref(), &env)
        .map_err(ConfigError::from)?
        .context(
            "flowlens web reads InfluxDB: give --influx-url (or [influx] url in the config file)",
        )?;
    let wf = file.web.clone().unwrap_or_default();
    let server = server_config(args.listen.as_ref().or(wf.listen.as_ref()), &wf, &env)?;
    let store = Arc::new(InfluxStore::new(influx_reader(&influx)));
    let health = Arc::new(MemoryHealthLog::new(86_400_000_000_000, 500_000));
    let metrics: Arc<dyn MetricsSource> = Arc::new(flowlens_web::metrics::NoMetrics);
    let stop = crate::pipeline::stop_on_signals()?;
    let srv = server::spawn(server, AppStateBuilder::new(store, metrics, health))?;
    info!(url = %format!("http://{}/", srv.addr()), influx = %influx.target.url, db = %influx.target.db, "flowlens web serving InfluxDB.");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    srv.stop();
    info!("flowlens web stopped.");
    Ok(())
}

/// A web token check for tests of the settings.
pub fn token_of(s: &WebSettings) -> Option<&Token> {
    s.server.token.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_flags_file_and_refusals() {
        let s = WebSettings::resolve(&WebArgs::default(), None, None, &env_of(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8647");
        let WebStore::Embedded(e) = &s.store else {
            panic!("{s:?}")
        };
        assert_eq!(e.live_window_ns, 3_600_000_000_000);
        let d = e.disk.as_ref().unwrap();
        assert_eq!(
            (d.retention_ns, d.max_bytes),
            (7 * 86_400_000_000_000, 1 << 30)
        );
        assert!(WebSettings::resolve(
            &WebArgs {
                no_web: true,
                ..Default::default()
            },
            None,
            None,
            &env_of(&[])
        )
        .unwrap()
        .is_none());
        let open = WebArgs {
            listen: Some("0.0.0.0:8647".into()),
            ..Default::default()
        };
        let e = WebSettings::resolve(&open, None, None, &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("FLOWLENS_WEB_TOKEN"), "{e}");
        let s = WebSettings::resolve(
            &open,
            None,
            None,
            &env_of(&[("FLOWLENS_WEB_TOKEN", "a-long-enough-token")]),
        )
        .unwrap()
        .unwrap();
        assert!(token_of(&s).is_some_and(|t| t.matches("a-long-enough-token")));
        let f: WebFile = toml::from_str(
            "store = \"embedded\"\nlive_window = \"30m\"\nhistory_max_bytes = \"64MiB\"\nhistory_retention = \"2d\"\nhistory_file = \"/tmp/x.sqlite\"\n",
        )
        .unwrap();
        let s = WebSettings::resolve(&WebArgs::default(), Some(&f), None, &env_of(&[]))
            .unwrap()
            .unwrap();
        let WebStore::Embedded(e) = &s.store else {
            panic!()
        };
        assert_eq!(e.live_window_ns, 1_800_000_000_000);
        assert_eq!(e.disk.as_ref().unwrap().max_bytes, 64 << 20);
        assert!(
            toml::from_str::<WebFile>("token = \"x\"").is_err(),
            "never a token in the file"
        );
        let bad: WebFile = toml::from_str("store = \"influxdb\"").unwrap();
        assert!(WebSettings::resolve(&WebArgs::default(), Some(&bad), None, &env_of(&[])).is_err());
    }

    #[test]
    fn self_metrics_become_samples() {
        let mut m = SelfMetrics {
            records_exported: 7,
            events_queue_overflow: 3,
            ..Default::default()
        };
        m.table.conversations_active = 5;
        let src = CollectorMetrics(Arc::new(Mutex::new(m)));
        let mut v = Vec::new();
        src.samples(&mut v);
        let find = |k: &str| v.iter().find(|s| s.key() == k).map(|s| (s.value, s.kind));
        use flowlens_web::metrics::Kind;
        assert_eq!(
            find("flowlens_records_exported"),
            Some((7.0, Kind::Counter))
        );
        assert_eq!(
            find("flowlens_table_conversations_active"),
            Some((5.0, Kind::Gauge))
        );
        assert_eq!(
            find("flowlens_lost_total{reason=\"event_queue_overflow\"}"),
            Some((3.0, Kind::Counter))
        );
        assert_eq!(find("flowlens_lost_all_total"), Some((3.0, Kind::Counter)));
    }
}
