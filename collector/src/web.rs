//! The web explorer inside the collector: the embedded live store as one
//! more sink of the exporter, the collector's self-metrics as the web's
//! metrics source, the server of `flowlens run` (started before capture, so a
//! bad address or a missing token stops flowlens before anything is attached),
//! and `flowlens web` (the UI and API alone, over InfluxDB). The settings are
//! validated in `config::web`.

use std::{
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use flowlens_correlator::record::ConversationRecord;
use flowlens_web::{
    health::{EmbeddedHealthLog, HealthLog, MemoryHealthLog},
    metrics::{MetricsSource, Sample},
    server::{self, WebServer},
    store::{embedded::EmbeddedStore, embedded::EmbeddedWriter, influx::InfluxStore, FlowStore},
    AppStateBuilder,
};
use tracing::{error, info};

use crate::{
    cli::{InfluxArgs, WebCmdArgs},
    config::{
        self,
        web::{influx_reader, server_config, WebSettings, WebStore},
        ConfigError,
    },
    metrics::SelfMetrics,
    sinks::{RecordSink, Sinks},
};

/// A day of health history in memory (when there is no history file).
const HEALTH_IN_MEMORY_NS: i64 = 86_400_000_000_000;

/// The live store as a sink of the export loop: hands each interval over
/// whole, without blocking (a full queue is counted and logged by the
/// store). The store keeps an interval's records in its live window and
/// rolls them up per interval, so they are gathered here until its end.
pub struct LiveStoreSink(EmbeddedWriter, Vec<ConversationRecord>);

impl LiveStoreSink {
    fn new(writer: EmbeddedWriter) -> Self {
        Self(writer, Vec::new())
    }
}

impl RecordSink for LiveStoreSink {
    fn begin_interval(&mut self) {
        self.1.clear();
    }

    fn write_chunk(&mut self, records: &[ConversationRecord]) -> std::io::Result<()> {
        self.1.extend_from_slice(records);
        Ok(())
    }

    fn end_interval(&mut self) -> std::io::Result<()> {
        // A refused interval is counted by the store (web_store_dropped_records);
        // it is not a loss of the other outputs.
        self.0.offer_owned(std::mem::take(&mut self.1));
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
        if let Some(i) = &m.influx {
            out.push(
                Sample::gauge(
                    "flowlens_sink_up",
                    "1 when the output has no error since its last success",
                    if i.last_error.is_some() { 0.0 } else { 1.0 },
                )
                .label("sink", "influxdb"),
            );
        }
    }
}

/// The web of a run: the server, the live store's sink until the exporter
/// takes it, and the self-metrics snapshot the exporter updates.
pub struct RunWeb {
    /// The snapshot the exporter updates at every interval.
    pub metrics: Arc<Mutex<SelfMetrics>>,
    server: Option<WebServer>,
    sink: Option<LiveStoreSink>,
}

impl RunWeb {
    /// No web (`--no-web`).
    pub fn off() -> Self {
        RunWeb {
            metrics: Arc::new(Mutex::new(SelfMetrics::default())),
            server: None,
            sink: None,
        }
    }

    /// Adds the live store (when it is the web's store) to the outputs.
    pub fn add_sink(&mut self, sinks: &mut Sinks) {
        if let Some(s) = self.sink.take() {
            sinks.push(Box::new(s));
        }
    }

    /// The explorer's URL when the server runs.
    pub fn url(&self) -> Option<String> {
        self.server
            .as_ref()
            .map(|s| format!("http://{}/", s.addr()))
    }

    /// Stops the server (after the exporter handed over the last interval).
    pub fn stop(self) {
        if let Some(s) = self.server {
            s.stop();
        }
    }
}

/// Starts the store and the server of `flowlens run` (`None` settings: off).
/// When the default address is taken the capture goes on without the web
/// (an ERROR says so); a taken address that was asked for is an error.
pub fn start_for_run(settings: Option<&WebSettings>) -> anyhow::Result<RunWeb> {
    let mut run = RunWeb::off();
    let Some(s) = settings else {
        return Ok(run);
    };
    if !s.listen_explicit {
        if let Err(e) = std::net::TcpListener::bind(s.server.listen) {
            error!(listen = %s.server.listen, error = %e, "The web UI and API are off: the default address is taken (choose one with --listen, or --no-web).");
            return Ok(run);
        }
    }
    let source: Arc<dyn MetricsSource> = Arc::new(CollectorMetrics(Arc::clone(&run.metrics)));
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
                None => Arc::new(MemoryHealthLog::new(HEALTH_IN_MEMORY_NS, 500_000)),
            };
            (Arc::new(store), health, Some(LiveStoreSink::new(writer)))
        }
        WebStore::Influx(c) => (
            Arc::new(InfluxStore::new((**c).clone())),
            Arc::new(MemoryHealthLog::new(HEALTH_IN_MEMORY_NS, 500_000)),
            None,
        ),
    };
    let server = server::spawn(
        s.server.clone(),
        AppStateBuilder::new(store, source, health),
    )
    .context("web UI and API")?;
    run.server = Some(server);
    run.sink = sink;
    Ok(run)
}

/// `flowlens web`: the UI and API alone, reading InfluxDB; until `stop`.
pub fn run_web(args: &WebCmdArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => config::file::load_web(p)?,
        None => config::file::WebCmdFile::default(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let iargs = InfluxArgs {
        influx_url: args.influx_url.clone(),
        influx_db: args.influx_db.clone(),
        influx_rp: args.influx_rp.clone(),
        ..InfluxArgs::default()
    };
    let influx = config::influx::resolve(&iargs, file.influx.as_ref(), &env)
        .map_err(ConfigError::from)?
        .context(
            "flowlens web reads InfluxDB: give --influx-url (or [influx] url in the config file)",
        )?;
    let wf = file.web.clone().unwrap_or_default();
    let server = server_config(args.listen.as_ref().or(wf.listen.as_ref()), &wf, &env)?;
    let store = Arc::new(InfluxStore::new(influx_reader(&influx)));
    let health = Arc::new(MemoryHealthLog::new(HEALTH_IN_MEMORY_NS, 500_000));
    let metrics: Arc<dyn MetricsSource> = Arc::new(flowlens_web::metrics::NoMetrics);
    let srv = server::spawn(server, AppStateBuilder::new(store, metrics, health))?;
    info!(url = %format!("http://{}/", srv.addr()), influx = %influx.target.url, db = %influx.target.db, "flowlens web serving InfluxDB.");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    srv.stop();
    info!("flowlens web stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
