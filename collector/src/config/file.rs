//! The optional TOML file (`--config`): what the user wrote, unvalidated.
//! Unknown keys are an error.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ConfigError;
use crate::{cli::CaptureMode, influx::http::ApiVersion, influx::schema::SchemaConfig};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Interfaces to monitor.
    pub ifaces: Option<Vec<String>>,
    /// Without `ifaces`: glob patterns of the interfaces to monitor.
    pub iface_include: Option<Vec<String>>,
    /// Without `ifaces`: glob patterns of interfaces never to monitor.
    pub iface_exclude: Option<Vec<String>>,
    /// Export interval ("10s", or seconds).
    pub export_interval: Option<DurationValue>,
    /// JSON lines path or "-".
    pub jsonl: Option<String>,
    /// Idle timeout ("60s", or seconds).
    pub idle_timeout: Option<DurationValue>,
    /// Host name override.
    pub host: Option<String>,
    /// Summary rows.
    pub top: Option<usize>,
    /// Capture mode: "ebpf" (default) or "afpacket".
    pub capture: Option<CaptureMode>,
    /// Load the golden-signal programs (default true).
    pub signals: Option<bool>,
    /// Table and map sizes.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Docker API socket (default: $DOCKER_HOST if unix://, else /var/run/docker.sock).
    pub docker_socket: Option<PathBuf>,
    /// `[influx]`: InfluxDB output.
    pub influx: Option<InfluxFile>,
    /// `[web]`: the web UI and API, the live store and its history.
    pub web: Option<WebFile>,
}

/// `[web]`. The token is never a key here, only a file.
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
    pub live_window: Option<DurationValue>,
    /// Memory cap of the live window ("256MiB").
    pub live_max_bytes: Option<SizeValue>,
    /// The history file (rollups and health).
    pub history_file: Option<PathBuf>,
    /// How long history is kept ("7d").
    pub history_retention: Option<DurationValue>,
    /// Size cap of the history file ("1GiB").
    pub history_max_bytes: Option<SizeValue>,
    /// Seconds identical API answers are reused (default 5; 0 disables).
    pub cache_seconds: Option<u64>,
}

/// What `flowlens web` reads of a run's file: `[influx]` and `[web]` (the
/// other sections are a run's business and ignored).
#[derive(Debug, Default, Deserialize)]
pub struct WebCmdFile {
    /// `[influx]`.
    pub influx: Option<InfluxFile>,
    /// `[web]`.
    pub web: Option<WebFile>,
}

/// `[limits]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Kernel flow map entries (per direction, interface and hook).
    pub flow_map_entries: Option<u32>,
    /// Flow slots per CPU in front of the flow map (power of two; 0 = off).
    pub flow_slots_per_cpu: Option<u32>,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ringbuf_bytes: Option<u32>,
    /// Conversations tracked at once in userspace.
    pub max_conversations: Option<usize>,
    /// Sockets (owners) tracked at once in userspace.
    pub max_sockets: Option<usize>,
    /// Events queued between the ring-buffer reader and the correlator.
    pub event_queue: Option<usize>,
}

/// A duration in the file: a string with units ("1m30s") or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    /// Whole seconds.
    Seconds(u64),
    /// Seconds with a fraction.
    FractionalSeconds(f64),
    /// "500ms", "1m30s", "10".
    Text(String),
}

impl DurationValue {
    /// The value as text, for the duration parser and its messages.
    pub fn as_text(&self) -> String {
        match self {
            Self::Seconds(n) => n.to_string(),
            Self::FractionalSeconds(f) => f.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// A byte size in the file: a number or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// "512MiB", "1G", ...
    Text(String),
}

/// `[influx]`. Secrets are never keys here, only files.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxFile {
    /// http(s) URL.
    pub url: Option<String>,
    /// Database or bucket.
    pub db: Option<String>,
    /// Retention policy.
    pub rp: Option<String>,
    /// Organization (v2).
    pub org: Option<String>,
    /// "v1" or "v2".
    pub api: Option<ApiVersion>,
    /// User name (v1 Basic auth; the password comes from the environment or `password_file`).
    pub username: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// Spool directory.
    pub spool_dir: Option<PathBuf>,
    /// Spool bound.
    pub spool_max: Option<SizeValue>,
    /// Dead-letter file.
    pub dead_letter: Option<PathBuf>,
    /// Dead-letter file bound.
    pub dead_letter_max: Option<SizeValue>,
    /// Create the database when missing.
    pub create_db: Option<bool>,
    /// Lines per request.
    pub batch_lines: Option<usize>,
    /// Bytes per request before gzip.
    pub batch_bytes: Option<SizeValue>,
    /// Requests' worth of lines queued in memory.
    pub queue_batches: Option<usize>,
    /// Requests sent at once.
    pub requests_in_flight: Option<usize>,
    /// Per-request time limit ("10s").
    pub timeout: Option<DurationValue>,
    /// Flush time at shutdown ("5s").
    pub close_timeout: Option<DurationValue>,
    /// gzip request bodies.
    pub gzip: Option<bool>,
    /// Measurement names and cardinality caps.
    pub schema: Option<SchemaConfig>,
}

/// Reads the `[influx]` and `[web]` sections for `flowlens web`.
pub fn load_web(path: &Path) -> Result<WebCmdFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads and parses the file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
