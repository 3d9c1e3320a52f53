//! Validated InfluxDB settings: where and how the sink writes, its bounds
//! and its schema. Built from the flags and the config file by
//! the `config::influx` module; secrets are redacted in `Debug`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use url::Url;

use crate::user_input::{check_len, quote};

use super::{
    error::InfluxError,
    http::{ApiVersion, Auth, Target},
    schema::SchemaConfig,
};

/// Validated InfluxDB settings (Debug redacts the secrets).
#[derive(Debug, Clone)]
pub struct InfluxSettings {
    /// Where and how to write.
    pub target: Target,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool bound in bytes; 0 disables it.
    pub spool_max: u64,
    /// Dead-letter file.
    pub dead_letter: PathBuf,
    /// Dead-letter bound in bytes.
    pub dead_letter_max: u64,
    /// Create the database when missing (v1).
    pub create_db: bool,
    /// Lines per request.
    pub batch_lines: usize,
    /// Bytes per request (before gzip).
    pub batch_bytes: usize,
    /// Requests' worth of lines (and bytes) queued in memory before the
    /// spool takes over.
    pub queue_batches: usize,
    /// Requests sent at once (writer threads).
    pub requests_in_flight: usize,
    /// Flush time at shutdown.
    pub close_timeout: Duration,
    /// Show the flush at shutdown (a replay waits for InfluxDB with progress).
    pub drain_progress: bool,
    /// First retry wait.
    pub backoff_base: Duration,
    /// Longest retry wait.
    pub backoff_cap: Duration,
    /// Encoder configuration.
    pub schema: SchemaConfig,
}

/// The longest InfluxDB URL accepted.
const URL_MAX_BYTES: usize = 2048;

/// The longest database, retention policy, bucket or organization name
/// accepted: InfluxDB 1.x keeps each database and retention policy as a
/// directory, and a file name is at most 255 bytes.
pub(crate) const NAME_MAX_BYTES: usize = 255;

/// The error of an invalid setting.
pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> InfluxError {
    InfluxError::Invalid {
        what,
        message: message.into(),
    }
}

/// Validates the base URL: http(s), a host, no credentials, no query.
pub fn parse_url(raw: &str) -> Result<Url, InfluxError> {
    // Logged with every connection error: a bound keeps the log readable.
    check_len(raw, URL_MAX_BYTES).map_err(|m| invalid("url", m))?;
    let u = Url::parse(raw).map_err(|e| invalid("url", format!("{}: {e}", quote(raw))))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(
            "url",
            format!("{}: the scheme must be http or https", quote(raw)),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", format!("{} has no host", quote(raw))));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(invalid(
            "url",
            "credentials in the URL would end up in logs; use INFLUX_USERNAME and INFLUX_PASSWORD(_FILE), or INFLUX_TOKEN(_FILE)",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(invalid(
            "url",
            format!(
                "{}: no query or fragment (set --influx-db/--influx-rp instead)",
                quote(raw)
            ),
        ));
    }
    Ok(u)
}

/// Whether bodies are gzipped when the configuration does not say: not to
/// an InfluxDB on this host (a loopback URL), where compressing saves no
/// network and costs CPU on both ends of the same cores (the `influx_write`
/// bench: ~25-35 ms of collector CPU per 10k records, plus InfluxDB's
/// decompression); yes to any other host.
pub fn gzip_by_default(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => !d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => !a.is_loopback(),
        Some(url::Host::Ipv6(a)) => !a.is_loopback(),
        None => true,
    }
}

impl InfluxSettings {
    /// The defaults for a validated `url` (no credentials, the v1 API, 5000
    /// lines or 1 MiB per request, a 1 GiB spool in `spool_dir`, gzip
    /// unless InfluxDB is on this host, ...).
    pub fn defaults(url: Url, db: String, spool_dir: PathBuf) -> Self {
        let dead_letter = spool_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(&spool_dir)
            .join("influx-dead-letter.lp");
        let gzip = gzip_by_default(&url);
        Self {
            target: Target {
                url,
                api: ApiVersion::V1,
                db,
                rp: None,
                org: None,
                auth: Auth::None,
                timeout: Duration::from_secs(10),
                gzip,
            },
            spool_dir,
            spool_max: 1 << 30,
            dead_letter,
            dead_letter_max: 256 << 20,
            create_db: false,
            batch_lines: 5000,
            batch_bytes: 1 << 20,
            queue_batches: 16,
            requests_in_flight: 4,
            close_timeout: Duration::from_secs(5),
            drain_progress: false,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            schema: SchemaConfig::default(),
        }
    }

    /// Defaults for `url` and `db` with the spool in `spool_dir` (tests and
    /// benches; `flowlens run` builds them from its configuration).
    pub fn new(url: &str, db: &str, spool_dir: &Path) -> Result<Self, InfluxError> {
        Ok(Self::defaults(
            parse_url(url)?,
            db.to_owned(),
            spool_dir.to_path_buf(),
        ))
    }
}

#[cfg(test)]
#[test]
fn gzip_only_to_other_hosts_by_default() {
    for (url, gz) in [
        ("http://127.0.0.1:8086", false),
        ("http://127.0.0.2:8086", false),
        ("http://localhost:8086", false),
        ("http://LOCALHOST:8086", false),
        ("http://[::1]:8086", false),
        ("http://10.0.0.5:8086", true),
        ("https://influx.example.com", true),
        ("http://[2001:db8::1]:8086", true),
    ] {
        let u = parse_url(url).expect("url");
        assert_eq!(gzip_by_default(&u), gz, "{url}");
        let s = InfluxSettings::defaults(u, "db".into(), PathBuf::from("/tmp/x"));
        assert_eq!(s.target.gzip, gz, "{url}");
    }
}
