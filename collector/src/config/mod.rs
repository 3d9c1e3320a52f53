//! Configuration: the clap types of [`crate::cli`] and the optional TOML
//! file ([`file`]) validated once into a [`RunConfig`] or [`ReplayConfig`]
//! (raw args -> validated config, as ripgrep does). Values are parsed in
//! [`values`] (durations with humantime, sizes, bounds), the InfluxDB
//! section in [`influx`].

pub mod error;
pub mod file;
pub mod influx;
pub mod values;
pub mod web;

use std::{path::PathBuf, time::Duration};

use flowlens_correlator::conversation::TableConfig;

pub use error::ConfigError;
use file::FileConfig;
use values::{parse_duration, quote, CAPTURE_TIME, EXPORT_INTERVAL, IDLE_TIMEOUT, INFLUX_TIMEOUT};

use crate::{
    cli::{CaptureMode, InfluxFlushArgs, ReplayArgs, RunArgs},
    ifaces::IfaceSelection,
    influx::settings::InfluxSettings,
};

/// Default `limits.flow_map_entries`.
pub const DEFAULT_FLOW_MAP_ENTRIES: u32 = 65_536;
/// Default `limits.ringbuf_bytes`.
pub const DEFAULT_RINGBUF_BYTES: u32 = 4 << 20;

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonlTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

impl JsonlTarget {
    /// `-` is standard output, anything else a file.
    pub fn parse(raw: &str) -> Self {
        if raw == "-" {
            Self::Stdout
        } else {
            Self::File(raw.into())
        }
    }
}

/// The outputs of a run or a replay.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    /// JSON lines output.
    pub jsonl: Option<JsonlTarget>,
    /// InfluxDB output, when `--influx-url` (or `influx.url`) is set.
    pub influx: Option<InfluxSettings>,
    /// Rows of the on-screen summary (shown when there is no other output).
    pub top: usize,
}

/// Validated configuration of `flowlens run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Explicit interfaces; empty means all (matching the patterns), and new ones.
    pub ifaces: Vec<String>,
    /// Without explicit interfaces: names to monitor (empty: all).
    pub iface_include: Vec<glob::Pattern>,
    /// Without explicit interfaces: names never to monitor.
    pub iface_exclude: Vec<glob::Pattern>,
    /// Export interval.
    pub export_interval: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Host name in records.
    pub host: String,
    /// Where records go.
    pub outputs: OutputConfig,
    /// Kernel flow map entries.
    pub flow_map_entries: u32,
    /// Flow slots per CPU (0 = hash only).
    pub flow_slots_per_cpu: u32,
    /// Ring buffer bytes.
    pub ringbuf_bytes: u32,
    /// Userspace conversation cap.
    pub max_conversations: usize,
    /// Userspace socket cap.
    pub max_sockets: usize,
    /// Event queue capacity.
    pub event_queue: usize,
    /// Docker API socket.
    pub docker_socket: PathBuf,
    /// How packets are captured.
    pub capture: CaptureMode,
    /// Load the golden-signal programs (`--no-signals`, `signals = false`: not).
    pub signals: bool,
    /// The web UI and API (`None`: `--no-web`).
    pub web: Option<web::WebSettings>,
}

/// The capture file name of `flowlens replay` that means standard input.
pub const STDIN: &str = "-";

/// Validated configuration of `flowlens replay`.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Capture files, read in order as one capture ([`STDIN`]: standard input).
    pub files: Vec<PathBuf>,
    /// Export interval (capture time).
    pub export_interval: Duration,
    /// Idle timeout (capture time).
    pub idle_timeout: Duration,
    /// Host name in records.
    pub host: String,
    /// Where records go.
    pub outputs: OutputConfig,
}

fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn default_docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

fn invalid(what: &'static str, message: String) -> ConfigError {
    ConfigError::Invalid { what, message }
}

/// The longest host name accepted: a DNS name's limit (every record and
/// InfluxDB series carries it).
const HOST_MAX_BYTES: usize = 253;

/// A host name given by the user: not empty, at most [`HOST_MAX_BYTES`].
fn host_name(raw: &str) -> Result<String, ConfigError> {
    if raw.trim().is_empty() {
        return Err(invalid(
            "host",
            "the host name is empty (leave it out for the system host name)".into(),
        ));
    }
    crate::user_input::check_len(raw, HOST_MAX_BYTES).map_err(|m| invalid("host", m))?;
    Ok(raw.to_owned())
}

/// Glob patterns of interface names (`what`: the setting, for errors).
fn iface_patterns(what: &'static str, raw: &[String]) -> Result<Vec<glob::Pattern>, ConfigError> {
    raw.iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| {
            glob::Pattern::new(p).map_err(|e| {
                invalid(
                    what,
                    format!("{} is not a glob pattern: {}", quote(p), e.msg),
                )
            })
        })
        .collect()
}

fn interface_name(i: &str) -> Result<(), ConfigError> {
    if i.is_empty() || i.len() > 15 || i.contains('/') || i == "." || i == ".." {
        return Err(invalid(
            "interface name",
            format!("{} is not a valid interface name", quote(i)),
        ));
    }
    Ok(())
}

/// Two export intervals + the owner wait, at least 10 s: how long the owner
/// of a closed TCP socket is kept (a late packet of its connection is still
/// attributed).
fn closed_owner_grace_ns(export_interval: Duration, owner_wait_ns: u64) -> u64 {
    u64::try_from(export_interval.as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(owner_wait_ns)
        .max(10_000_000_000)
}

impl RunConfig {
    /// Validates flags plus the optional file into a [`RunConfig`].
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => file::load(path)?,
            None => FileConfig::default(),
        };
        let export_interval = match (&args.export_interval, &file.export_interval) {
            (Some(flag), _) => flag.clone(),
            (None, Some(v)) => v.as_text(),
            (None, None) => "10s".into(),
        };
        let export_interval = parse_duration("export interval", &export_interval, EXPORT_INTERVAL)?;
        let idle_timeout = match (&args.idle_timeout, &file.idle_timeout) {
            (Some(flag), _) => flag.clone(),
            (None, Some(v)) => v.as_text(),
            (None, None) => "60s".into(),
        };
        let idle_timeout = parse_duration("idle timeout", &idle_timeout, IDLE_TIMEOUT)?;
        let ifaces = if args.ifaces.is_empty() {
            file.ifaces.clone().unwrap_or_default()
        } else {
            args.ifaces.clone()
        };
        for i in &ifaces {
            interface_name(i)?;
        }
        let pick = |flag: &Vec<String>, key: &Option<Vec<String>>| {
            if flag.is_empty() {
                key.clone().unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        let iface_include = iface_patterns(
            "iface_include",
            &pick(&args.iface_include, &file.iface_include),
        )?;
        let iface_exclude = iface_patterns(
            "iface_exclude",
            &pick(&args.iface_exclude, &file.iface_exclude),
        )?;
        let patterns = !iface_include.is_empty() || !iface_exclude.is_empty();
        if !ifaces.is_empty() && patterns {
            return Err(invalid(
                "interfaces",
                "--iface names the interfaces to monitor; --iface-include/--iface-exclude (iface_include/iface_exclude) choose among all of them when none is named: use one or the other".into(),
            ));
        }
        let host = match args.host.as_deref().or(file.host.as_deref()) {
            Some(h) => host_name(h)?,
            None => system_host_name(),
        };
        // Secrets only from the environment or files (never flags).
        let influx = influx::resolve(&args.influx, file.influx.as_ref(), &|k| {
            std::env::var(k).ok()
        })?;
        let web = web::resolve(&args.web, file.web.as_ref(), influx.as_ref(), &|k| {
            std::env::var(k).ok()
        })?;
        let limits = &file.limits;
        let ringbuf_bytes = limits.ringbuf_bytes.unwrap_or(DEFAULT_RINGBUF_BYTES);
        if !ringbuf_bytes.is_power_of_two() || ringbuf_bytes < 4096 {
            return Err(invalid(
                "limits.ringbuf_bytes",
                format!("{ringbuf_bytes} must be a power of two of at least 4096"),
            ));
        }
        let flow_map_entries = limits.flow_map_entries.unwrap_or(DEFAULT_FLOW_MAP_ENTRIES);
        if flow_map_entries < 16 {
            return Err(invalid(
                "limits.flow_map_entries",
                "must be at least 16".into(),
            ));
        }
        let flow_slots_per_cpu = limits
            .flow_slots_per_cpu
            .unwrap_or_else(|| default_flow_slots_per_cpu(crate::loader::possible_cpus()));
        if flow_slots_per_cpu != 0
            && (!flow_slots_per_cpu.is_power_of_two()
                || !(4..=1 << flowlens_ebpf::flow::MAX_SLOT_BITS).contains(&flow_slots_per_cpu))
        {
            return Err(invalid(
                "limits.flow_slots_per_cpu",
                format!(
                    "{flow_slots_per_cpu} must be 0 (off) or a power of two from 4 to {}",
                    1u32 << flowlens_ebpf::flow::MAX_SLOT_BITS
                ),
            ));
        }
        Ok(Self {
            ifaces,
            iface_include,
            iface_exclude,
            export_interval,
            idle_timeout,
            host,
            outputs: OutputConfig {
                jsonl: args
                    .jsonl
                    .as_deref()
                    .or(file.jsonl.as_deref())
                    .map(JsonlTarget::parse),
                influx,
                top: args.top.or(file.top).unwrap_or(10),
            },
            flow_map_entries,
            flow_slots_per_cpu,
            ringbuf_bytes,
            max_conversations: limits.max_conversations.unwrap_or(100_000).max(1),
            max_sockets: limits.max_sockets.unwrap_or(200_000).max(1),
            event_queue: limits.event_queue.unwrap_or(65_536).max(16),
            docker_socket: file
                .docker_socket
                .clone()
                .unwrap_or_else(default_docker_socket),
            capture: args.capture.or(file.capture).unwrap_or_default(),
            signals: !args.no_signals && file.signals.unwrap_or(true),
            web,
        })
    }

    /// The interfaces the run captures on.
    pub fn iface_selection(&self) -> IfaceSelection {
        IfaceSelection {
            explicit: self.ifaces.clone(),
            include: self.iface_include.clone(),
            exclude: self.iface_exclude.clone(),
        }
    }

    /// The conversation table of a run: the configured limits and timeouts,
    /// whatever the capture mode.
    pub fn table_config(&self) -> TableConfig {
        let defaults = TableConfig::default();
        TableConfig {
            max_conversations: self.max_conversations,
            max_sockets: self.max_sockets,
            idle_timeout_ns: u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            closed_owner_grace_ns: closed_owner_grace_ns(
                self.export_interval,
                defaults.owner_wait_ns,
            ),
            ..defaults
        }
    }
}

impl ReplayConfig {
    /// Validates the flags of `flowlens replay`.
    pub fn from_args(args: &ReplayArgs) -> Result<Self, ConfigError> {
        let export_interval =
            parse_duration("export interval", &args.export_interval, CAPTURE_TIME)?;
        let idle_timeout = parse_duration("idle timeout", &args.idle_timeout, CAPTURE_TIME)?;
        // Secrets only from the environment or files, as for `flowlens run`.
        let mut influx = influx::resolve(&args.influx, None, &|k| std::env::var(k).ok())?;
        if let Some(s) = &mut influx {
            // The end of a replay waits for InfluxDB, showing progress.
            s.close_timeout = parse_duration(
                "influx drain timeout",
                &args.influx_drain_timeout,
                INFLUX_TIMEOUT,
            )?;
            s.drain_progress = true;
        }
        let host = match &args.host {
            Some(h) => host_name(h)?,
            None => args
                .files
                .first()
                .filter(|p| p.as_os_str() != STDIN)
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "replay".into()),
        };
        Ok(Self {
            files: args.files.clone(),
            export_interval,
            idle_timeout,
            host,
            outputs: OutputConfig {
                jsonl: args.jsonl.as_deref().map(JsonlTarget::parse),
                influx,
                top: args.top,
            },
        })
    }

    /// The conversation table of a replay: no socket owners, room for a
    /// large capture's conversations.
    pub fn table_config(&self) -> TableConfig {
        TableConfig {
            max_conversations: 1_000_000,
            max_sockets: 0,
            idle_timeout_ns: u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            ..TableConfig::default()
        }
    }
}

/// Validated configuration of `flowlens influx-flush`.
#[derive(Debug, Clone)]
pub struct FlushConfig {
    /// Where to send, the spool to send from, and how long to try.
    pub influx: InfluxSettings,
}

impl FlushConfig {
    /// Validates the flags of `flowlens influx-flush` (`--influx-url` required).
    pub fn from_args(args: &InfluxFlushArgs) -> Result<Self, ConfigError> {
        let timeout = parse_duration("timeout", &args.timeout, INFLUX_TIMEOUT)?;
        let Some(mut influx) = influx::resolve(&args.influx, None, &|k| std::env::var(k).ok())?
        else {
            return Err(invalid(
                "influx url",
                "--influx-url is required: where to send the spool".into(),
            ));
        };
        influx.close_timeout = timeout;
        influx.drain_progress = true;
        Ok(Self { influx })
    }
}

/// Default flow slots per CPU: a 32 MiB table (128 bytes a slot) shared out
/// over the CPUs, between 1,024 and 131,072 per CPU (a power of two).
pub fn default_flow_slots_per_cpu(cpus: usize) -> u32 {
    const BUDGET_SLOTS: usize = (32 << 20) / 128;
    let per_cpu = (BUDGET_SLOTS / cpus.max(1)).clamp(1024, 131_072);
    // Largest power of two not above per_cpu.
    1u32 << (usize::BITS - 1 - per_cpu.leading_zeros())
}

#[cfg(test)]
mod tests;
