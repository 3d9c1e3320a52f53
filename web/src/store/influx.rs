//! InfluxDB as the store: InfluxQL over `/query` (1.x, 2.x v1 compatibility,
//! 3.x), reading the `flow` and `flow_rollup` measurements that `flowlens
//! run --influx-url` writes. Statements come from `flowlens_query::influxql`
//! (allow-listed identifiers, escaped literals); answers are decoded by
//! `flowlens_query::influx_rows` and aggregated like the embedded store's.

use std::{
    io::{BufRead, BufReader},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use flowlens_query::{
    conversations::ConversationBuilder,
    cube::{CubeBuilder, TrafficQuery},
    field::Field,
    influx_rows::{flow_tag_rows, record_rows, value_rows, QueryResponse, RollupRows, SeriesData},
    influxql::{group_fields, InfluxSchema, Perspective},
    plan::{Capabilities, Source},
    time::TimeRange,
};
use tracing::{debug, warn};
use url::Url;

use super::{sort_values, FlowStore, StoreError, StoreStatus, TrafficAnswer};
use crate::metrics::Sample;

/// Credentials for `/query` (from the environment or files, never flags).
#[derive(Clone, Default)]
pub enum InfluxAuth {
    /// None.
    #[default]
    None,
    /// v1 user and password.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// v2/v3 token.
    Token(String),
}

impl std::fmt::Debug for InfluxAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InfluxAuth::None => f.write_str("None"),
            InfluxAuth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            InfluxAuth::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// Where and how to read.
#[derive(Clone, Debug)]
pub struct InfluxConfig {
    /// Base URL (http or https).
    pub url: Url,
    /// Database (or bucket through the v1 compatibility API).
    pub db: String,
    /// Credentials.
    pub auth: InfluxAuth,
    /// Measurement names and retention policy (tag names are detected).
    pub schema: InfluxSchema,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Most conversation records one question may read.
    pub max_records: usize,
    /// Send the filter to InfluxDB (false: read more, filter only here; for tests).
    pub pushdown: bool,
    /// Learn the rollup's tag keys from InfluxDB (`SHOW TAG KEYS`); false
    /// keeps `schema` as given (for tests of older schemas).
    pub detect_schema: bool,
}

impl InfluxConfig {
    /// Defaults for `url` and `db`.
    pub fn new(url: Url, db: &str) -> Self {
        InfluxConfig {
            url,
            db: db.to_owned(),
            auth: InfluxAuth::None,
            schema: InfluxSchema::default(),
            timeout: Duration::from_secs(30),
            max_records: 2_000_000,
            pushdown: true,
            detect_schema: true,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    queries: AtomicU64,
    errors: AtomicU64,
    rows: AtomicU64,
    query_ns: AtomicU64,
}

/// The InfluxDB store.
pub struct InfluxStore {
    cfg: InfluxConfig,
    agent: ureq::Agent,
    schema: Mutex<(InfluxSchema, Option<Instant>)>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
}

/// Rows decoded from a chunked answer, per statement.
type Sink<'a> = &'a mut dyn FnMut(usize, &SeriesData) -> Result<(), StoreError>;

impl InfluxStore {
    /// A store reading from `cfg` (no request is made until a question comes).
    pub fn new(cfg: InfluxConfig) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(cfg.timeout)
            .timeout_connect(Duration::from_secs(5))
            .build();
        let schema = cfg.schema.clone();
        InfluxStore {
            cfg,
            agent,
            schema: Mutex::new((schema, None)),
            counters: Counters::default(),
            last_error: Mutex::new(None),
        }
    }

    fn query_url(&self) -> String {
        let base = self.cfg.url.as_str().trim_end_matches('/');
        format!("{base}/query")
    }

    fn fail(&self, msg: String) -> StoreError {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        warn!(error = %msg, "InfluxDB query failed.");
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg.clone());
        }
        StoreError::Influx(msg)
    }

    /// Runs `q` (one or more statements), streaming each series to `sink`.
    fn run(&self, q: &str, sink: Sink<'_>) -> Result<(), StoreError> {
        debug!(query = q, "InfluxQL");
        let start = Instant::now();
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .agent
            .get(&self.query_url())
            .query("db", &self.cfg.db)
            .query("q", q)
            .query("epoch", "ns")
            .query("chunked", "true")
            .query("chunk_size", "10000");
        match &self.cfg.auth {
            InfluxAuth::None => {}
            InfluxAuth::Basic { username, password } => {
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                req = req.set("Authorization", &format!("Basic {b}"));
            }
            InfluxAuth::Token(t) => req = req.set("Authorization", &format!("Token {t}")),
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<QueryResponse>(&body)
                    .ok()
                    .and_then(|v| v.error)
                    .unwrap_or_else(|| body.chars().take(300).collect());
                return Err(self.fail(format!("HTTP {code}: {msg}")));
            }
            Err(e) => {
                return Err(self.fail(format!("cannot reach {}: {e}", self.cfg.url)));
            }
        };
        let mut reader = BufReader::with_capacity(1 << 20, resp.into_reader());
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| self.fail(format!("reading the answer: {e}")))?;
            if n == 0 {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let doc: QueryResponse = serde_json::from_str(&line)
                .map_err(|e| self.fail(format!("undecodable answer: {e}")))?;
            if let Some(e) = doc.error {
                return Err(self.fail(e));
            }
            for r in &doc.results {
                if let Some(e) = &r.error {
                    return Err(self.fail(e.clone()));
                }
                for s in &r.series {
                    self.counters
                        .rows
                        .fetch_add(s.values.len() as u64, Ordering::Relaxed);
                    sink(r.statement_id, s)?;
                }
            }
        }
        self.counters
            .query_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The schema, with the rollup's tag names detected (refreshed every 10 minutes).
    fn schema(&self) -> InfluxSchema {
        if !self.cfg.detect_schema {
            return self.cfg.schema.clone();
        }
        let (cached, when) = self
            .schema
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if when.is_some_and(|w| w.elapsed() < Duration::from_secs(600)) {
            return cached;
        }
        let mut keys: Vec<String> = Vec::new();
        let q = format!(
            "SHOW TAG KEYS FROM {}",
            flowlens_query::influxql::ident(&self.cfg.schema.rollup)
        );
        let ok = self
            .run(&q, &mut |_, s| {
                for row in &s.values {
                    if let Some(serde_json::Value::String(k)) = row.first() {
                        keys.push(k.clone());
                    }
                }
                Ok(())
            })
            .is_ok();
        let mut schema = self.cfg.schema.clone();
        if ok && !keys.is_empty() {
            let has = |k: &str| keys.iter().any(|x| x == k);
            if has("username") && !has("user") {
                schema.rollup_user_tag = "username";
            }
            schema.rollup_server_port = has("server_port");
            schema.rollup_peer_local = has("peer_local");
        }
        if let Ok(mut s) = self.schema.lock() {
            // An empty database says nothing yet: ask again next time.
            *s = (schema.clone(), (ok && !keys.is_empty()).then(Instant::now));
        }
        schema
    }

    fn filter_for<'a>(
        &self,
        f: Option<&'a flowlens_query::filter::Expr>,
    ) -> Option<&'a flowlens_query::filter::Expr> {
        f.filter(|_| self.cfg.pushdown)
    }
}

impl FlowStore for InfluxStore {
    fn capabilities(&self) -> Capabilities {
        self.schema().capabilities()
    }

    fn traffic(&self, q: &TrafficQuery) -> Result<TrafficAnswer, StoreError> {
        let schema = self.schema();
        let source = schema.capabilities().choose(q.needed());
        let group = group_fields(&q.dims, q.filter.as_ref());
        let pushed = self.filter_for(q.filter.as_ref());
        let mut b = CubeBuilder::new(q);
        match source {
            Source::Rollup => {
                if let Some(stmt) = schema.rollup_statement(q.range, &q.buckets, &group, pushed) {
                    let mut rows = RollupRows::new(&schema, &group);
                    self.run(&stmt, &mut |_, s| {
                        rows.add(s);
                        Ok(())
                    })?;
                    for e in rows.finish() {
                        b.add_end(&e.view());
                    }
                }
            }
            Source::FlowTags => {
                let stmts = schema.flow_tag_statements(q.range, &q.buckets, &group, pushed);
                let persp: Vec<(Perspective, String)> = [Perspective::Client, Perspective::Server]
                    .into_iter()
                    .zip(stmts)
                    .filter_map(|(p, s)| s.map(|s| (p, s)))
                    .collect();
                if !persp.is_empty() {
                    let text = persp
                        .iter()
                        .map(|(_, s)| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ");
                    let mut ends = Vec::new();
                    self.run(&text, &mut |i, s| {
                        if let Some((p, _)) = persp.get(i) {
                            flow_tag_rows(s, *p, &group, &mut ends);
                        }
                        Ok(())
                    })?;
                    for e in &ends {
                        b.add_end(&e.view());
                    }
                }
            }
            Source::Records => {
                if let Some(stmt) = schema.records_statement(q.range, pushed, Some(q.needed())) {
                    let limit = self.cfg.max_records;
                    let mut seen = 0usize;
                    let mut recs = Vec::new();
                    self.run(&stmt, &mut |_, s| {
                        seen += s.values.len();
                        if seen > limit {
                            return Err(StoreError::TooMuchData { limit });
                        }
                        recs.clear();
                        record_rows(s, &mut recs);
                        for c in &recs {
                            b.add_conv(&c.view());
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(TrafficAnswer {
            cube: b.finish()?,
            source,
            notices: Vec::new(),
        })
    }

    fn conversations(&self, b: &mut ConversationBuilder) -> Result<Vec<String>, StoreError> {
        let schema = self.schema();
        let filter = b.filter().cloned();
        let Some(stmt) =
            schema.records_statement(b.range(), self.filter_for(filter.as_ref()), None)
        else {
            return Ok(Vec::new());
        };
        let limit = self.cfg.max_records;
        let mut seen = 0usize;
        let mut recs = Vec::new();
        self.run(&stmt, &mut |_, s| {
            seen += s.values.len();
            if seen > limit {
                return Err(StoreError::TooMuchData { limit });
            }
            recs.clear();
            record_rows(s, &mut recs);
            for c in &recs {
                b.add(&c.view());
            }
            Ok(())
        })?;
        Ok(Vec::new())
    }

    fn values(&self, field: Field, range: TimeRange) -> Result<Vec<(String, u64)>, StoreError> {
        let schema = self.schema();
        let Some((stmt, tag)) = schema.values_statement(range, field) else {
            return Ok(Vec::new());
        };
        let mut v = Vec::new();
        self.run(&stmt, &mut |_, s| {
            value_rows(s, tag, &mut v);
            Ok(())
        })?;
        // Several rows may share a value (e.g. an absent tag): sum them.
        let mut m: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for (k, b) in v {
            *m.entry(k).or_default() += b;
        }
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        sort_values(&mut v);
        Ok(v)
    }

    fn status(&self) -> StoreStatus {
        let mut url = self.cfg.url.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        StoreStatus {
            kind: "influxdb",
            records_from: None,
            retention_ns: None,
            details: serde_json::json!({
                "url": url.as_str(),
                "db": self.cfg.db,
                "rp": self.cfg.schema.rp,
                "measurements": [self.cfg.schema.flow, self.cfg.schema.rollup],
                "queries": self.counters.queries.load(Ordering::Relaxed),
                "errors": self.counters.errors.load(Ordering::Relaxed),
                "last_error": self.last_error.lock().ok().and_then(|e| e.clone()),
            }),
        }
    }

    fn samples(&self, out: &mut Vec<Sample>) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push(Sample::counter(
            "flowlens_web_influx_queries_total",
            "InfluxDB queries sent by the web server",
            g(&self.counters.queries),
        ));
        out.push(Sample::counter(
            "flowlens_web_influx_errors_total",
            "InfluxDB queries that failed",
            g(&self.counters.errors),
        ));
        out.push(Sample::counter(
            "flowlens_web_influx_rows_total",
            "Rows read from InfluxDB",
            g(&self.counters.rows),
        ));
        let mut s = Sample::counter(
            "flowlens_web_influx_query_seconds_total",
            "Time spent in InfluxDB queries, seconds",
            0,
        );
        s.value = g(&self.counters.query_ns) as f64 / 1e9;
        out.push(s);
    }
}
