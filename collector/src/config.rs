//! Command-line flags and the optional TOML file, validated once into a
//! [`Config`] (raw args -> validated config, as ripgrep does).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::influx::{
    settings::{InfluxArgs, InfluxFile, InfluxSettings},
    sink::InfluxError,
};

/// flowlens: who is behind every network flow on this host.
#[derive(Debug, Parser)]
#[command(name = "flowlens", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture flows with the kernel programs and report attributed conversations.
    ///
    /// Needs root (or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and CAP_SYS_PTRACE).
    /// Without --jsonl it prints a summary of the top conversations every interval.
    Run(RunArgs),
    /// Check that this kernel and these privileges can run flowlens; exits
    /// non-zero naming what is missing.
    Doctor,
    /// Count the flows of pcap/pcapng files with the kernel programs' rules and
    /// report their conversations (no root needed; see docs/replay.md).
    Replay(crate::replay::ReplayArgs),
}

/// Flags of `flowlens run`. Each may also come from the config file; flags win.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Interface to monitor (repeatable). Default: every interface that is up,
    /// and interfaces that appear later (new container veths).
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// Export interval, e.g. 10s, 500ms, 1m.
    #[arg(long, value_name = "DURATION", env = "FLOWLENS_EXPORT_INTERVAL")]
    pub export_interval: Option<String>,
    /// Write JSON lines to PATH (appending), or to stdout with "-".
    #[arg(long, value_name = "PATH|-")]
    pub jsonl: Option<String>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE", env = "FLOWLENS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Conversations idle longer than this are evicted (e.g. 60s).
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Host name written into every record (default: the system host name).
    #[arg(long, env = "FLOWLENS_HOST")]
    pub host: Option<String>,
    /// Conversations shown by the on-screen summary each interval.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// How packets are captured: `ebpf` (default; falls back to `afpacket`
    /// when the kernel refuses the programs) or `afpacket` (userspace, no BPF;
    /// see docs/afpacket.md for what it cannot see).
    #[arg(long, value_enum, value_name = "MODE", env = "FLOWLENS_CAPTURE")]
    pub capture: Option<CaptureMode>,
    /// InfluxDB output (`--influx-*`).
    #[command(flatten)]
    pub influx: Box<InfluxArgs>,
}

/// Where packets are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// XDP/TC programs in the kernel, owners from socket tracepoints.
    #[default]
    Ebpf,
    /// AF_PACKET sockets read in userspace, owners from /proc scans.
    Afpacket,
}

/// The optional TOML file. Unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Interfaces to monitor.
    pub ifaces: Option<Vec<String>>,
    /// Export interval ("10s").
    pub export_interval: Option<String>,
    /// JSON lines path or "-".
    pub jsonl: Option<String>,
    /// Idle timeout ("60s").
    pub idle_timeout: Option<String>,
    /// Host name override.
    pub host: Option<String>,
    /// Summary rows.
    pub top: Option<usize>,
    /// Capture mode: "ebpf" (default) or "afpacket".
    pub capture: Option<CaptureMode>,
    /// Table and map sizes.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Docker API socket (default: $DOCKER_HOST if unix://, else /var/run/docker.sock).
    pub docker_socket: Option<PathBuf>,
    /// `[influx]`: InfluxDB output.
    pub influx: Option<InfluxFile>,
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

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonlTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// Validated configuration of `flowlens run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Explicit interfaces; empty means all that are up, and new ones.
    pub ifaces: Vec<String>,
    /// Export interval.
    pub export_interval: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// JSON lines output.
    pub jsonl: Option<JsonlTarget>,
    /// Host name in records.
    pub host: String,
    /// Rows in the summary.
    pub top: usize,
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
    /// InfluxDB output, when `--influx-url` (or `influx.url`) is set.
    pub influx: Option<InfluxSettings>,
    /// How packets are captured.
    pub capture: CaptureMode,
}

/// A configuration error, phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// An InfluxDB setting is malformed, or a secret file unreadable.
    #[error(transparent)]
    Influx(#[from] InfluxError),
}

/// Parses "10s", "500ms", "1m", "2h" or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 10s, 500ms, 1m)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("'{s}' must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
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

impl Config {
    /// Validates flags plus the optional file into a [`Config`].
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let dur =
            |what: &'static str, flag: &Option<String>, file: &Option<String>, default: &str| {
                let raw = flag.as_deref().or(file.as_deref()).unwrap_or(default);
                parse_duration(raw).map_err(|message| ConfigError::Invalid { what, message })
            };
        let export_interval = dur(
            "export interval",
            &args.export_interval,
            &file.export_interval,
            "10s",
        )?;
        if export_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                what: "export interval",
                message: "must be at least 100ms".into(),
            });
        }
        let idle_timeout = dur(
            "idle timeout",
            &args.idle_timeout,
            &file.idle_timeout,
            "60s",
        )?;
        let ifaces = if args.ifaces.is_empty() {
            file.ifaces.clone().unwrap_or_default()
        } else {
            args.ifaces.clone()
        };
        for i in &ifaces {
            if i.is_empty() || i.len() > 15 || i.contains('/') || i == "." || i == ".." {
                return Err(ConfigError::Invalid {
                    what: "interface name",
                    message: format!("'{i}' is not a valid interface name"),
                });
            }
        }
        let jsonl = args.jsonl.clone().or(file.jsonl.clone()).map(|p| {
            if p == "-" {
                JsonlTarget::Stdout
            } else {
                JsonlTarget::File(p.into())
            }
        });
        // Secrets only from the environment or files (never flags).
        let influx = InfluxSettings::resolve(&args.influx, file.influx.as_ref(), &|k| {
            std::env::var(k).ok()
        })?;
        let limits = &file.limits;
        let ringbuf_bytes = limits.ringbuf_bytes.unwrap_or(4 << 20);
        if !ringbuf_bytes.is_power_of_two() || ringbuf_bytes < 4096 {
            return Err(ConfigError::Invalid {
                what: "limits.ringbuf_bytes",
                message: format!("{ringbuf_bytes} must be a power of two of at least 4096"),
            });
        }
        let flow_map_entries = limits.flow_map_entries.unwrap_or(65_536);
        if flow_map_entries < 16 {
            return Err(ConfigError::Invalid {
                what: "limits.flow_map_entries",
                message: "must be at least 16".into(),
            });
        }
        let flow_slots_per_cpu = limits
            .flow_slots_per_cpu
            .unwrap_or_else(|| default_flow_slots_per_cpu(crate::loader::possible_cpus()));
        if flow_slots_per_cpu != 0
            && (!flow_slots_per_cpu.is_power_of_two()
                || !(4..=1 << flowlens_ebpf::flow::MAX_SLOT_BITS).contains(&flow_slots_per_cpu))
        {
            return Err(ConfigError::Invalid {
                what: "limits.flow_slots_per_cpu",
                message: format!(
                    "{flow_slots_per_cpu} must be 0 (off) or a power of two from 4 to {}",
                    1u32 << flowlens_ebpf::flow::MAX_SLOT_BITS
                ),
            });
        }
        Ok(Self {
            ifaces,
            export_interval,
            idle_timeout,
            jsonl,
            host: args
                .host
                .clone()
                .or(file.host.clone())
                .unwrap_or_else(system_host_name),
            top: args.top.or(file.top).unwrap_or(10),
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
            influx,
            capture: args.capture.or(file.capture).unwrap_or_default(),
        })
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
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
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn flow_slot_defaults_share_a_32_mib_budget() {
        assert_eq!(default_flow_slots_per_cpu(1), 131_072);
        assert_eq!(default_flow_slots_per_cpu(2), 131_072);
        assert_eq!(default_flow_slots_per_cpu(3), 65_536);
        assert_eq!(default_flow_slots_per_cpu(64), 4096);
        assert_eq!(default_flow_slots_per_cpu(1024), 1024);
    }

    #[test]
    fn flow_slots_must_be_a_power_of_two_or_zero() {
        let dir = std::env::temp_dir().join(format!("flowlens-slots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join("slots.toml");
        for (v, ok) in [
            (0u32, true),
            (4, true),
            (1024, true),
            (3, false),
            (2, false),
            (1000, false),
        ] {
            std::fs::write(&p, format!("[limits]\nflow_slots_per_cpu = {v}\n")).expect("write");
            let args = RunArgs {
                config: Some(p.clone()),
                ..Default::default()
            };
            match Config::from_args(&args) {
                Ok(c) => {
                    assert!(ok, "{v} accepted");
                    assert_eq!(c.flow_slots_per_cpu, v);
                }
                Err(e) => {
                    assert!(!ok, "{v} refused: {e}");
                    assert!(e.to_string().contains("flow_slots_per_cpu"), "{e}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("flowlens-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join("bad.toml");
        std::fs::write(&p, "export_intervall = \"1s\"\n").expect("write");
        let args = RunArgs {
            config: Some(p.clone()),
            ..Default::default()
        };
        let err = Config::from_args(&args).expect_err("unknown key must fail");
        assert!(err.to_string().contains("export_intervall"), "{err}");
        std::fs::write(
            &p,
            "export_interval = \"2s\"\njsonl = \"-\"\n[limits]\nmax_conversations = 5\n",
        )
        .expect("write");
        let cfg = Config::from_args(&args).expect("valid file");
        assert_eq!(cfg.export_interval, Duration::from_secs(2));
        assert_eq!(cfg.jsonl, Some(JsonlTarget::Stdout));
        assert_eq!(cfg.max_conversations, 5);
        assert_eq!(cfg.capture, CaptureMode::Ebpf);
        std::fs::write(&p, "capture = \"afpacket\"\n").expect("write");
        let cfg = Config::from_args(&args).expect("valid file");
        assert_eq!(cfg.capture, CaptureMode::Afpacket);
        std::fs::write(&p, "capture = \"pcap\"\n").expect("write");
        assert!(Config::from_args(&args).is_err());
        std::fs::write(
            &p,
            "export_interval = \"2s\"\njsonl = \"-\"\n[limits]\nmax_conversations = 5\n",
        )
        .expect("write");
        // flags win over the file
        let args = RunArgs {
            config: Some(p.clone()),
            export_interval: Some("3s".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_args(&args).expect("ok").export_interval,
            Duration::from_secs(3)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_values_are_named() {
        let args = RunArgs {
            export_interval: Some("10q".into()),
            ..Default::default()
        };
        let err = Config::from_args(&args).expect_err("bad unit");
        assert!(err.to_string().contains("export interval"), "{err}");
        let args = RunArgs {
            ifaces: vec!["a/b".into()],
            ..Default::default()
        };
        assert!(Config::from_args(&args).is_err());
    }
}
