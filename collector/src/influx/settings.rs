//! InfluxDB settings: the `--influx-*` flags and the `[influx]` section of the
//! config file, validated once into [`InfluxSettings`]. Secrets come only
//! from the environment or from files, and are redacted in `Debug`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;
use serde::Deserialize;
use url::Url;

use super::{
    http::{ApiVersion, Auth, Secret, Target},
    schema::SchemaConfig,
    sink::InfluxError,
};

/// InfluxDB flags of `flowlens run` (flattened into its arguments).
#[derive(Debug, Args, Default, Clone)]
pub struct InfluxArgs {
    /// Write records to InfluxDB at this http(s) URL (enables the sink).
    #[arg(long, value_name = "URL")]
    pub influx_url: Option<String>,
    /// Database (v1) or bucket (v2). Default: flowlens.
    #[arg(long, value_name = "NAME")]
    pub influx_db: Option<String>,
    /// Retention policy (v1; default: the database's default).
    #[arg(long, value_name = "NAME")]
    pub influx_rp: Option<String>,
    /// Organization (v2).
    #[arg(long, value_name = "NAME")]
    pub influx_org: Option<String>,
    /// Write API: v1 (`/write`, default) or v2 (`/api/v2/write`, token auth).
    #[arg(long, value_name = "v1|v2")]
    pub influx_api: Option<String>,
    /// Spool directory (records wait here while InfluxDB is away).
    #[arg(long, value_name = "DIR")]
    pub influx_spool_dir: Option<PathBuf>,
    /// Spool bound in bytes (suffixes K, M, G, KiB, MiB, GiB; 0 disables the spool).
    #[arg(long, value_name = "BYTES")]
    pub influx_spool_max: Option<String>,
    /// Create the database at start-up when it is missing (v1).
    #[arg(long)]
    pub influx_create_db: bool,
}

/// A byte size in the config file: a number or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Bytes.
    Bytes(u64),
    /// "512MiB", "1G", ...
    Text(String),
}

/// `[influx]` in the config file. Secrets are never keys here, only files.
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
    pub api: Option<String>,
    /// User name (v1 Basic auth; the password comes from the environment or `password_file`).
    pub username: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// Spool directory.
    pub spool_dir: Option<PathBuf>,
    /// Spool bound.
    pub spool_max: Option<ByteSize>,
    /// Dead-letter file.
    pub dead_letter: Option<PathBuf>,
    /// Dead-letter file bound.
    pub dead_letter_max: Option<ByteSize>,
    /// Create the database when missing.
    pub create_db: Option<bool>,
    /// Lines per request.
    pub batch_lines: Option<usize>,
    /// Bytes per request before gzip.
    pub batch_bytes: Option<ByteSize>,
    /// Batches queued in memory.
    pub queue_batches: Option<usize>,
    /// Per-request time limit ("10s").
    pub timeout: Option<String>,
    /// Flush time at shutdown ("5s").
    pub close_timeout: Option<String>,
    /// gzip request bodies.
    pub gzip: Option<bool>,
    /// Measurement names and cardinality caps.
    pub schema: Option<SchemaConfig>,
}

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
    /// Batches queued in memory before the spool takes over.
    pub queue_batches: usize,
    /// Flush time at shutdown.
    pub close_timeout: Duration,
    /// First retry wait.
    pub backoff_base: Duration,
    /// Longest retry wait.
    pub backoff_cap: Duration,
    /// Encoder configuration.
    pub schema: SchemaConfig,
}

pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> InfluxError {
    InfluxError::Invalid {
        what,
        message: message.into(),
    }
}

/// Parses "1048576", "100k", "512MiB", "1G" (K/M/G are powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 1048576, 512MiB, 1G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("'{s}': unknown unit '{u}' (use K, M, G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn byte_size(what: &'static str, v: Option<&ByteSize>, default: u64) -> Result<u64, InfluxError> {
    match v {
        None => Ok(default),
        Some(ByteSize::Bytes(n)) => Ok(*n),
        Some(ByteSize::Text(s)) => parse_bytes(s).map_err(|m| invalid(what, m)),
    }
}

fn duration(
    what: &'static str,
    v: Option<&String>,
    default: Duration,
) -> Result<Duration, InfluxError> {
    v.map_or(Ok(default), |s| {
        crate::config::parse_duration(s).map_err(|m| invalid(what, m))
    })
}

/// Validates the base URL: http(s), a host, no credentials, no query.
pub fn parse_url(raw: &str) -> Result<Url, InfluxError> {
    let u = Url::parse(raw).map_err(|e| invalid("url", format!("'{raw}': {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(
            "url",
            format!("'{raw}': the scheme must be http or https"),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", format!("'{raw}' has no host")));
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
            format!("'{raw}': no query or fragment (set --influx-db/--influx-rp instead)"),
        ));
    }
    Ok(u)
}

fn read_secret(what: &'static str, path: &Path) -> Result<Secret, InfluxError> {
    let text = std::fs::read_to_string(path).map_err(|source| InfluxError::SecretFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let t = text.trim_end_matches(['\n', '\r']);
    if t.is_empty() {
        return Err(invalid(what, format!("{} is empty", path.display())));
    }
    Ok(Secret::new(t))
}

/// A secret from `$VAR`, else the file named by `$VAR_FILE`, else `file_key`.
fn secret(
    what: &'static str,
    var: &str,
    file_key: Option<&PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, InfluxError> {
    if let Some(v) = env(var).filter(|v| !v.is_empty()) {
        return Ok(Some(Secret::new(v)));
    }
    if let Some(p) = env(&format!("{var}_FILE")).filter(|v| !v.is_empty()) {
        return read_secret(what, Path::new(&p)).map(Some);
    }
    file_key.map(|p| read_secret(what, p)).transpose()
}

fn auth(
    api: ApiVersion,
    f: &InfluxFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Auth, InfluxError> {
    let token = secret("token", "INFLUX_TOKEN", f.token_file.as_ref(), env)?;
    let password = secret("password", "INFLUX_PASSWORD", f.password_file.as_ref(), env)?;
    let username = env("INFLUX_USERNAME")
        .filter(|v| !v.is_empty())
        .or_else(|| f.username.clone());
    match (token, username, password) {
        (None, None, None) => Ok(Auth::None),
        (Some(t), None, None) => Ok(Auth::Token(t)),
        (Some(_), _, _) => Err(invalid(
            "credentials",
            "both a token and a user name/password are set; keep one",
        )),
        (None, Some(_), None) => Err(invalid(
            "credentials",
            "a user name without a password (INFLUX_PASSWORD or INFLUX_PASSWORD_FILE)",
        )),
        (None, None, Some(_)) => Err(invalid(
            "credentials",
            "a password without a user name (INFLUX_USERNAME or influx.username)",
        )),
        (None, Some(_), Some(_)) if api == ApiVersion::V2 => Err(invalid(
            "credentials",
            "the v2 API takes a token (INFLUX_TOKEN), not a user name and password",
        )),
        (None, Some(username), Some(password)) => Ok(Auth::Basic { username, password }),
    }
}

impl InfluxSettings {
    /// Defaults for `url` and `db` (no credentials, the v1 API, spool in
    /// `spool_dir`), for tests and benches; `flowlens run` uses [`Self::resolve`].
    pub fn new(url: &str, db: &str, spool_dir: &Path) -> Result<Self, InfluxError> {
        let file = InfluxFile {
            url: Some(url.to_owned()),
            db: Some(db.to_owned()),
            spool_dir: Some(spool_dir.to_path_buf()),
            ..Default::default()
        };
        Self::resolve(&InfluxArgs::default(), Some(&file), &|_| None)?
            .ok_or_else(|| invalid("url", "missing"))
    }

    /// Flags over `[influx]`, secrets from `env`; `None` when no URL is set.
    pub fn resolve(
        a: &InfluxArgs,
        file: Option<&InfluxFile>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, InfluxError> {
        let empty = InfluxFile::default();
        let f = file.unwrap_or(&empty);
        let Some(raw_url) = a.influx_url.as_ref().or(f.url.as_ref()) else {
            return Ok(None);
        };
        let url = parse_url(raw_url)?;
        let api = match a.influx_api.as_deref().or(f.api.as_deref()).unwrap_or("v1") {
            "v1" => ApiVersion::V1,
            "v2" => ApiVersion::V2,
            other => return Err(invalid("api", format!("'{other}': use v1 or v2"))),
        };
        let db = a
            .influx_db
            .clone()
            .or(f.db.clone())
            .unwrap_or_else(|| "flowlens".into());
        if db.is_empty() {
            return Err(invalid("db", "empty"));
        }
        let rp = a
            .influx_rp
            .clone()
            .or(f.rp.clone())
            .filter(|s| !s.is_empty());
        let org = a
            .influx_org
            .clone()
            .or(f.org.clone())
            .filter(|s| !s.is_empty());
        let create_db = a.influx_create_db || f.create_db.unwrap_or(false);
        if api == ApiVersion::V2 && create_db {
            return Err(invalid(
                "create_db",
                "only for the v1 API (create the bucket with the influx CLI)",
            ));
        }
        let spool_dir = a
            .influx_spool_dir
            .clone()
            .or(f.spool_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/flowlens/influx-spool"));
        let spool_max = match &a.influx_spool_max {
            Some(s) => parse_bytes(s).map_err(|m| invalid("spool_max", m))?,
            None => byte_size("spool_max", f.spool_max.as_ref(), 1 << 30)?,
        };
        let dead_letter = f.dead_letter.clone().unwrap_or_else(|| {
            spool_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(&spool_dir)
                .join("influx-dead-letter.lp")
        });
        let batch_lines = f.batch_lines.unwrap_or(5000);
        let batch_bytes = byte_size("batch_bytes", f.batch_bytes.as_ref(), 1 << 20)?;
        if batch_lines == 0 || !(1024..=64 << 20).contains(&batch_bytes) {
            return Err(invalid(
                "batch_lines/batch_bytes",
                "batch_lines ≥ 1 and 1KiB ≤ batch_bytes ≤ 64MiB",
            ));
        }
        let schema = f.schema.clone().unwrap_or_default();
        schema
            .validate()
            .map_err(|e| invalid("schema", e.to_string()))?;
        Ok(Some(Self {
            target: Target {
                url,
                api,
                db,
                rp,
                org,
                auth: auth(api, f, env)?,
                timeout: duration("timeout", f.timeout.as_ref(), Duration::from_secs(10))?,
                gzip: f.gzip.unwrap_or(true),
            },
            spool_dir,
            spool_max,
            dead_letter,
            dead_letter_max: byte_size("dead_letter_max", f.dead_letter_max.as_ref(), 256 << 20)?,
            create_db,
            batch_lines,
            batch_bytes: batch_bytes as usize,
            queue_batches: f.queue_batches.unwrap_or(16).max(1),
            close_timeout: duration(
                "close_timeout",
                f.close_timeout.as_ref(),
                Duration::from_secs(5),
            )?,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(30),
            schema,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> InfluxArgs {
        InfluxArgs {
            influx_url: Some(url.into()),
            ..Default::default()
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn resolve(
        a: &InfluxArgs,
        f: Option<&InfluxFile>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> InfluxSettings {
        InfluxSettings::resolve(a, f, env)
            .expect("valid")
            .expect("enabled")
    }

    #[test]
    fn disabled_without_a_url_and_defaults_otherwise() {
        let none = InfluxSettings::resolve(&InfluxArgs::default(), None, &|_| None).expect("ok");
        assert!(none.is_none());
        let s = resolve(&args("http://127.0.0.1:8086"), None, &|_| None);
        assert_eq!(s.target.api, ApiVersion::V1);
        assert_eq!(s.target.db, "flowlens");
        assert_eq!(s.target.auth, Auth::None);
        assert_eq!((s.batch_lines, s.batch_bytes), (5000, 1 << 20));
        assert_eq!(s.spool_max, 1 << 30);
        assert_eq!(
            s.dead_letter,
            PathBuf::from("/var/lib/flowlens/influx-dead-letter.lp")
        );
        assert!(s.target.gzip);
    }

    #[test]
    fn urls_are_validated() {
        for bad in [
            "ftp://h:1",
            "127.0.0.1:8086",
            "http://user:pw@h:8086",
            "http://h:8086/?db=x",
        ] {
            let e = InfluxSettings::resolve(&args(bad), None, &|_| None).expect_err(bad);
            assert!(e.to_string().contains("url"), "{bad}: {e}");
        }
        let e = InfluxSettings::resolve(&args("http://u:secret@h"), None, &|_| None)
            .expect_err("creds");
        assert!(!e.to_string().contains("secret"), "{e}");
        let s = resolve(&args("https://h.example/influx/"), None, &|_| None);
        assert_eq!(s.target.url.as_str(), "https://h.example/influx/");
    }

    #[test]
    fn secrets_come_from_env_or_files_and_are_redacted() {
        let dir = std::env::temp_dir().join(format!("flowlens-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let tok = dir.join("token");
        std::fs::write(&tok, "file-token-123\n").expect("write");
        let s = resolve(
            &args("http://h"),
            None,
            &env_of(&[("INFLUX_TOKEN", "env-token-456")]),
        );
        assert_eq!(s.target.auth, Auth::Token(Secret::new("env-token-456")));
        let tok_s = tok.to_string_lossy().into_owned();
        let env = env_of(&[("INFLUX_TOKEN_FILE", &tok_s)]);
        let s = resolve(&args("http://h"), None, &env);
        assert_eq!(s.target.auth, Auth::Token(Secret::new("file-token-123")));
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("file-token-123") && dbg.contains("<redacted>"),
            "{dbg}"
        );
        let f = InfluxFile {
            username: Some("flow".into()),
            password_file: Some(tok.clone()),
            ..Default::default()
        };
        let s = resolve(&args("http://h"), Some(&f), &|_| None);
        assert_eq!(
            s.target.auth,
            Auth::Basic {
                username: "flow".into(),
                password: Secret::new("file-token-123")
            }
        );
        assert!(!format!("{s:?}").contains("file-token-123"));
        // Inconsistent combinations are errors naming the fix.
        let both = env_of(&[
            ("INFLUX_TOKEN", "t"),
            ("INFLUX_USERNAME", "u"),
            ("INFLUX_PASSWORD", "p"),
        ]);
        assert!(InfluxSettings::resolve(&args("http://h"), None, &both).is_err());
        let user_only = env_of(&[("INFLUX_USERNAME", "u")]);
        let e =
            InfluxSettings::resolve(&args("http://h"), None, &user_only).expect_err("no password");
        assert!(e.to_string().contains("INFLUX_PASSWORD"), "{e}");
        let v2 = InfluxArgs {
            influx_api: Some("v2".into()),
            ..args("http://h")
        };
        let basic = env_of(&[("INFLUX_USERNAME", "u"), ("INFLUX_PASSWORD", "p")]);
        assert!(InfluxSettings::resolve(&v2, None, &basic).is_err());
        let missing = env_of(&[
            ("INFLUX_PASSWORD_FILE", "/nonexistent/pw"),
            ("INFLUX_USERNAME", "u"),
        ]);
        let e =
            InfluxSettings::resolve(&args("http://h"), None, &missing).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_and_the_config_file_section() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("100k"), Ok(100 << 10));
        assert!(parse_bytes("1Q").is_err());
        assert!(parse_bytes("").is_err());
        let file: crate::config::FileConfig = toml::from_str(
            r#"
            [influx]
            url = "http://127.0.0.1:8086"
            db = "net"
            rp = "week"
            spool_max = "64MiB"
            batch_lines = 100
            create_db = true
            [influx.schema]
            flow_measurement = "conv"
            "#,
        )
        .expect("toml");
        let s = resolve(&InfluxArgs::default(), file.influx.as_ref(), &|_| None);
        assert_eq!(
            (s.target.db.as_str(), s.target.rp.as_deref()),
            ("net", Some("week"))
        );
        assert_eq!(
            (s.spool_max, s.batch_lines, s.create_db),
            (64 << 20, 100, true)
        );
        assert_eq!(s.schema.flow_measurement, "conv");
        // Flags win over the file.
        let a = InfluxArgs {
            influx_db: Some("other".into()),
            influx_spool_max: Some("0".into()),
            ..Default::default()
        };
        let s = resolve(&a, file.influx.as_ref(), &|_| None);
        assert_eq!((s.target.db.as_str(), s.spool_max), ("other", 0));
        let bad: Result<crate::config::FileConfig, _> = toml::from_str("[influx]\ntoken = \"x\"\n");
        assert!(bad.is_err(), "a token is never a config key");
    }
}
