//! The command line: clap types only. They hold what the user typed; the
//! validated configuration is built from them (and the config file) in
//! the `config` module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::influx::http::ApiVersion;

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
    /// Needs root (or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_PTRACE and,
    /// where tracefs is root-only, CAP_DAC_READ_SEARCH).
    /// Without --jsonl it prints a summary of the top conversations every interval.
    /// Every flag may also come from the config file (docs/configuration.md); flags win.
    ///
    /// SIGINT/SIGTERM flush the last interval, detach and exit 0; SIGHUP reopens
    /// the --jsonl file (log rotation). Exit status 1: a configuration or start-up
    /// error, or no output can be written.
    Run(RunArgs),
    /// Check that this kernel and these privileges can run flowlens; exits
    /// non-zero naming what is missing.
    Doctor,
    /// Count the flows of pcap/pcapng files with the kernel programs' rules and
    /// report their conversations (no root needed; see docs/replay.md).
    Replay(ReplayArgs),
    /// Serve the web UI and API alone, reading InfluxDB (no capture, no root
    /// needed). `flowlens run` serves them itself (docs/api.md).
    Web(WebCmdArgs),
    /// Send what an InfluxDB spool holds (left by a replay or a run that
    /// stopped before InfluxDB took everything), with progress; exits
    /// non-zero when points are still spooled at the end.
    InfluxFlush(InfluxFlushArgs),
}

// The defaults of `run` are shown in the help texts rather than given to
// clap: a flag's default would always win over the config file.

/// Flags of `flowlens run`. Each may also come from the config file; flags win.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Interface to monitor (repeatable; attached again if it is deleted and
    /// comes back) [default: every interface, and interfaces that appear later
    /// (new container veths, attached as the kernel announces them)].
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// Without --iface: monitor only interfaces whose name matches one of
    /// these glob patterns (comma-separated or repeated; `*`, `?`, `[a-z]`),
    /// e.g. 'veth*,docker0' [default: every interface].
    #[arg(long, value_name = "GLOBS", value_delimiter = ',')]
    pub iface_include: Vec<String>,
    /// Without --iface: never monitor interfaces whose name matches one of
    /// these glob patterns (comma-separated or repeated), e.g. 'eth*'.
    #[arg(long, value_name = "GLOBS", value_delimiter = ',')]
    pub iface_exclude: Vec<String>,
    /// Export interval, e.g. 10s, 500ms, 1m30s, or seconds [default: 10s].
    #[arg(long, value_name = "DURATION", env = "FLOWLENS_EXPORT_INTERVAL")]
    pub export_interval: Option<String>,
    /// Write JSON lines to PATH (appending), or to stdout with "-" [default:
    /// a summary table on stdout].
    #[arg(long, value_name = "PATH|-")]
    pub jsonl: Option<String>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE", env = "FLOWLENS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Conversations idle longer than this are evicted, e.g. 60s [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Host name written into every record [default: the system host name].
    #[arg(long, env = "FLOWLENS_HOST")]
    pub host: Option<String>,
    /// Conversations shown by the on-screen summary each interval [default: 10].
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
    /// How packets are captured: `ebpf` (falls back to `afpacket` when the
    /// kernel refuses the programs) or `afpacket` (userspace, no BPF; see
    /// docs/afpacket.md for what it cannot see) [default: ebpf].
    #[arg(long, value_enum, value_name = "MODE", env = "FLOWLENS_CAPTURE")]
    pub capture: Option<CaptureMode>,
    /// Do not load the golden-signal programs (TCP RTT, retransmits, resets,
    /// DNS names and health; docs/schema.md): records then carry none of those
    /// fields (connect latency and errors stay), and the kernel runs none of
    /// their hooks [default: loaded].
    #[arg(long, env = "FLOWLENS_NO_SIGNALS")]
    pub no_signals: bool,
    /// InfluxDB output (`--influx-*`).
    #[command(flatten)]
    pub influx: Box<InfluxArgs>,
    /// Web UI and API (`--listen`, `--no-web`, `--web-history`).
    #[command(flatten)]
    pub web: WebArgs,
}

/// Web flags of `flowlens run`.
#[derive(Debug, Args, Default, Clone)]
pub struct WebArgs {
    /// Serve the web UI and API on this address; any other than loopback needs
    /// a token in FLOWLENS_WEB_TOKEN or the file named by FLOWLENS_WEB_TOKEN_FILE
    /// [default: 127.0.0.1:8647].
    #[arg(long, value_name = "IP:PORT", env = "FLOWLENS_LISTEN")]
    pub listen: Option<String>,
    /// Do not serve the web UI and API (and keep no live store).
    #[arg(long, env = "FLOWLENS_NO_WEB")]
    pub no_web: bool,
    /// The embedded store's history file (rollups and health)
    /// [default: /var/lib/flowlens/history.sqlite].
    #[arg(long, value_name = "FILE", env = "FLOWLENS_WEB_HISTORY")]
    pub web_history: Option<PathBuf>,
}

/// Flags of `flowlens web`.
#[derive(Debug, Args, Default)]
pub struct WebCmdArgs {
    /// InfluxDB to read (http or https URL).
    #[arg(long, value_name = "URL", env = "FLOWLENS_INFLUX_URL")]
    pub influx_url: Option<String>,
    /// Database (or bucket through the v1 compatibility API) [default: flowlens].
    #[arg(long, value_name = "NAME")]
    pub influx_db: Option<String>,
    /// Retention policy to read [default: the database's default].
    #[arg(long, value_name = "NAME")]
    pub influx_rp: Option<String>,
    /// Serve on this address [default: 127.0.0.1:8647].
    #[arg(long, value_name = "IP:PORT", env = "FLOWLENS_LISTEN")]
    pub listen: Option<String>,
    /// TOML configuration file: its [influx] and [web] sections are read.
    #[arg(long, value_name = "FILE", env = "FLOWLENS_CONFIG")]
    pub config: Option<PathBuf>,
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

/// Flags of `flowlens replay`.
#[derive(Debug, Args, Default)]
pub struct ReplayArgs {
    /// pcap or pcapng files, read in order as one capture; "-" reads
    /// standard input (regular files are memory-mapped, pipes read as streams).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Write JSON lines to PATH (appending), or to stdout with "-".
    #[arg(long, value_name = "PATH|-")]
    pub jsonl: Option<String>,
    /// Export interval in capture time, e.g. 10s, 500ms, 1m30s.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub export_interval: String,
    /// Conversations idle longer than this (capture time) are evicted.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub idle_timeout: String,
    /// Host name written into every record (default: the first file's name).
    #[arg(long)]
    pub host: Option<String>,
    /// Conversations shown by the on-screen summary each interval.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// At the end, how long to wait (with progress) for InfluxDB to take
    /// what is queued and spooled; what is left stays in the spool
    /// (`flowlens influx-flush` sends it) and the exit code is 1.
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub influx_drain_timeout: String,
    /// InfluxDB output (`--influx-*`, as for `flowlens run`; points keep the
    /// capture's timestamps).
    #[command(flatten)]
    pub influx: Box<InfluxArgs>,
}

/// Flags of `flowlens influx-flush`.
#[derive(Debug, Args, Default)]
pub struct InfluxFlushArgs {
    /// How long to keep sending; what is left stays in the spool.
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    pub timeout: String,
    /// Where to send (`--influx-url` is required) and the spool to send from.
    #[command(flatten)]
    pub influx: Box<InfluxArgs>,
}

/// InfluxDB flags of `flowlens run` and `flowlens replay` (flattened into their arguments).
#[derive(Debug, Args, Default, Clone)]
pub struct InfluxArgs {
    /// Write records to InfluxDB at this http(s) URL (enables the sink).
    #[arg(long, value_name = "URL")]
    pub influx_url: Option<String>,
    /// Database (v1) or bucket (v2) [default: flowlens].
    #[arg(long, value_name = "NAME")]
    pub influx_db: Option<String>,
    /// Retention policy (v1) [default: the database's default].
    #[arg(long, value_name = "NAME")]
    pub influx_rp: Option<String>,
    /// Organization (v2).
    #[arg(long, value_name = "NAME")]
    pub influx_org: Option<String>,
    /// Write API: v1 (`/write`) or v2 (`/api/v2/write`, token auth) [default: v1].
    #[arg(long, value_enum, value_name = "API")]
    pub influx_api: Option<ApiVersion>,
    /// Spool directory (records wait here while InfluxDB is away)
    /// [default: /var/lib/flowlens/influx-spool].
    #[arg(long, value_name = "DIR")]
    pub influx_spool_dir: Option<PathBuf>,
    /// Spool bound in bytes (suffixes K, M, G, KiB, MiB, GiB; 0 disables the
    /// spool) [default: 1GiB].
    #[arg(long, value_name = "BYTES")]
    pub influx_spool_max: Option<String>,
    /// Create the database at start-up when it is missing (v1).
    #[arg(long)]
    pub influx_create_db: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn run_help_shows_the_defaults() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        for default in [
            "[default: 10s]",
            "[default: 60s]",
            "[default: 10]",
            "[default: ebpf]",
            "[default: the system host name]",
            "[default: flowlens]",
            "[default: v1]",
            "[default: 1GiB]",
        ] {
            assert!(
                help.contains(default),
                "run --help lacks {default}:\n{help}"
            );
        }
    }

    #[test]
    fn the_influx_api_is_a_value_enum() {
        let cli = Cli::try_parse_from(["flowlens", "run", "--influx-api", "v2"]).expect("v2");
        let Command::Run(args) = cli.command else {
            panic!("run");
        };
        assert_eq!(args.influx.influx_api, Some(ApiVersion::V2));
        let err = Cli::try_parse_from(["flowlens", "run", "--influx-api", "v3"]).expect_err("v3");
        assert!(err.to_string().contains("possible values: v1, v2"), "{err}");
    }
}
