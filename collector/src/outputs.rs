//! The configured outputs of a run or a replay as one [`Sinks`]: JSON lines,
//! InfluxDB, or (neither configured) the on-screen summary.

use std::sync::Arc;

use crate::{
    config::{JsonlTarget, OutputConfig},
    influx::{sink::InfluxSink, stats::InfluxStats, InfluxError},
    sinks::{JsonlSink, Sinks, SummarySink},
    user_input::quote,
};

/// Why an output could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The InfluxDB output's start-up check failed (credentials, database).
    #[error("InfluxDB output")]
    Influx(#[source] InfluxError),
    /// The JSON lines file's directory does not exist.
    #[error("the directory {dir} of JSON lines output {path} does not exist: create it first (flowlens does not create directories for its outputs)")]
    JsonlDir {
        /// The directory, quoted.
        dir: String,
        /// The path, quoted.
        path: String,
    },
    /// The JSON lines file could not be opened.
    #[error("opening JSON lines output {path}")]
    Jsonl {
        /// The path, quoted.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The InfluxDB output, started first: a refused credential or a missing
/// database is a configuration error, reported before anything is loaded or
/// attached.
pub fn start_influx(cfg: &OutputConfig) -> Result<Option<InfluxSink>, OutputError> {
    cfg.influx
        .clone()
        .map(InfluxSink::start)
        .transpose()
        .map_err(OutputError::Influx)
}

/// What the on-screen summary says in AF_PACKET mode.
pub const AFPACKET_NOTE: &str =
    "AF_PACKET capture (weaker than eBPF): owners from /proc scans, short-lived processes missed; docs/afpacket.md";

/// Every configured output (`influx`: started by [`start_influx`]), and the
/// InfluxDB sink's counters when there is one. `note`: a line the
/// on-screen summary shows under each header (the capture mode, when it is
/// the weaker one).
pub fn open(
    cfg: &OutputConfig,
    influx: Option<InfluxSink>,
    note: Option<&'static str>,
) -> Result<(Sinks, Option<Arc<InfluxStats>>), OutputError> {
    let mut sinks = Sinks::new();
    match &cfg.jsonl {
        Some(JsonlTarget::Stdout) => sinks.push(Box::new(JsonlSink::stdout())),
        Some(JsonlTarget::File(p)) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(OutputError::JsonlDir {
                        dir: quote(&dir.to_string_lossy()),
                        path: quote(&p.to_string_lossy()),
                    });
                }
            }
            let sink = JsonlSink::file(p).map_err(|source| OutputError::Jsonl {
                path: quote(&p.to_string_lossy()),
                source,
            })?;
            sinks.push(Box::new(sink));
        }
        None if influx.is_none() => sinks.push(Box::new(SummarySink::new(cfg.top).with_note(note))),
        None => {}
    }
    let stats = influx.as_ref().map(InfluxSink::stats);
    if let Some(sink) = influx {
        sinks.push(Box::new(sink));
    }
    Ok((sinks, stats))
}
