//! The InfluxDB output's settings from the `--influx-*` flags, the
//! `[influx]` section and the environment. Secrets come only from the
//! environment or from files.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    error::ConfigError,
    file::{DurationValue, InfluxFile, SizeValue},
    values::{parse_duration, parse_size, INFLUX_TIMEOUT},
};
use crate::{
    cli::InfluxArgs,
    influx::{
        http::{ApiVersion, Auth, Secret, Target},
        settings::{invalid, parse_url, InfluxSettings, NAME_MAX_BYTES},
        InfluxError,
    },
    user_input::check_len,
};

/// A value error of the `[influx]` section, named as an InfluxDB setting.
fn influx_value<T>(r: Result<T, ConfigError>) -> Result<T, InfluxError> {
    r.map_err(|e| match e {
        ConfigError::Invalid { what, message } => invalid(what, message),
        ConfigError::Influx(e) => e,
        other => invalid("value", other.to_string()),
    })
}

fn byte_size(what: &'static str, v: Option<&SizeValue>, default: u64) -> Result<u64, InfluxError> {
    match v {
        None => Ok(default),
        Some(SizeValue::Bytes(n)) => Ok(*n),
        Some(SizeValue::Text(s)) => influx_value(parse_size(what, s)),
    }
}

fn duration(
    what: &'static str,
    v: Option<&DurationValue>,
    default: Duration,
) -> Result<Duration, InfluxError> {
    v.map_or(Ok(default), |v| {
        influx_value(parse_duration(what, &v.as_text(), INFLUX_TIMEOUT))
    })
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

/// The InfluxDB output's settings: flags over `[influx]`, secrets from
/// `env`; `None` when no URL is set.
pub fn resolve(
    a: &InfluxArgs,
    file: Option<&InfluxFile>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<InfluxSettings>, InfluxError> {
    let empty = InfluxFile::default();
    let f = file.unwrap_or(&empty);
    let Some(raw_url) = a.influx_url.as_ref().or(f.url.as_ref()) else {
        return Ok(None);
    };
    let url = parse_url(raw_url)?;
    let api = a.influx_api.or(f.api).unwrap_or_default();
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
    for (what, name) in [
        ("db", Some(&db)),
        ("rp", rp.as_ref()),
        ("org", org.as_ref()),
    ] {
        if let Some(name) = name {
            check_len(name, NAME_MAX_BYTES).map_err(|m| invalid(what, m))?;
        }
    }
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
        Some(s) => influx_value(parse_size("spool_max", s))?,
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
    let requests_in_flight = f.requests_in_flight.unwrap_or(4);
    if !(1..=64).contains(&requests_in_flight) {
        return Err(invalid(
            "requests_in_flight",
            format!("{requests_in_flight}: from 1 to 64 requests at once"),
        ));
    }
    let schema = f.schema.clone().unwrap_or_default();
    schema
        .validate()
        .map_err(|e| invalid("schema", e.to_string()))?;
    let gzip = f
        .gzip
        .unwrap_or_else(|| crate::influx::settings::gzip_by_default(&url));
    Ok(Some(InfluxSettings {
        target: Target {
            url,
            api,
            db,
            rp,
            org,
            auth: auth(api, f, env)?,
            timeout: duration("timeout", f.timeout.as_ref(), Duration::from_secs(10))?,
            gzip,
        },
        spool_dir,
        spool_max,
        dead_letter,
        dead_letter_max: byte_size("dead_letter_max", f.dead_letter_max.as_ref(), 256 << 20)?,
        create_db,
        batch_lines,
        batch_bytes: batch_bytes as usize,
        queue_batches: f.queue_batches.unwrap_or(16).max(1),
        requests_in_flight,
        close_timeout: duration(
            "close_timeout",
            f.close_timeout.as_ref(),
            Duration::from_secs(5),
        )?,
        drain_progress: false,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(30),
        schema,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::http::{ApiVersion, Auth, Secret};

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

    fn resolved(
        a: &InfluxArgs,
        f: Option<&InfluxFile>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> InfluxSettings {
        resolve(a, f, env).expect("valid").expect("enabled")
    }

    #[test]
    fn disabled_without_a_url_and_defaults_otherwise() {
        let none = resolve(&InfluxArgs::default(), None, &|_| None).expect("ok");
        assert!(none.is_none());
        let s = resolved(&args("http://127.0.0.1:8086"), None, &|_| None);
        assert_eq!(s.target.api, ApiVersion::V1);
        assert_eq!(s.target.db, "flowlens");
        assert_eq!(s.target.auth, Auth::None);
        assert_eq!((s.batch_lines, s.batch_bytes), (5000, 1 << 20));
        assert_eq!(s.spool_max, 1 << 30);
        assert_eq!(
            s.dead_letter,
            PathBuf::from("/var/lib/flowlens/influx-dead-letter.lp")
        );
        assert!(!s.target.gzip, "InfluxDB on this host: no gzip");
        let s = resolved(&args("http://influx.example.com:8086"), None, &|_| None);
        assert!(s.target.gzip, "another host: gzip");
    }

    #[test]
    fn urls_are_validated() {
        for bad in [
            "ftp://h:1",
            "127.0.0.1:8086",
            "http://user:pw@h:8086",
            "http://h:8086/?db=x",
        ] {
            let e = resolve(&args(bad), None, &|_| None).expect_err(bad);
            assert!(e.to_string().contains("url"), "{bad}: {e}");
        }
        let e = resolve(&args("http://u:secret@h"), None, &|_| None).expect_err("creds");
        assert!(!e.to_string().contains("secret"), "{e}");
        let s = resolved(&args("https://h.example/influx/"), None, &|_| None);
        assert_eq!(s.target.url.as_str(), "https://h.example/influx/");
    }

    #[test]
    fn secrets_come_from_env_or_files_and_are_redacted() {
        let dir = std::env::temp_dir().join(format!("flowlens-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let tok = dir.join("token");
        std::fs::write(&tok, "file-token-123\n").expect("write");
        let s = resolved(
            &args("http://h"),
            None,
            &env_of(&[("INFLUX_TOKEN", "env-token-456")]),
        );
        assert_eq!(s.target.auth, Auth::Token(Secret::new("env-token-456")));
        let tok_s = tok.to_string_lossy().into_owned();
        let env = env_of(&[("INFLUX_TOKEN_FILE", &tok_s)]);
        let s = resolved(&args("http://h"), None, &env);
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
        let s = resolved(&args("http://h"), Some(&f), &|_| None);
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
        assert!(resolve(&args("http://h"), None, &both).is_err());
        let user_only = env_of(&[("INFLUX_USERNAME", "u")]);
        let e = resolve(&args("http://h"), None, &user_only).expect_err("no password");
        assert!(e.to_string().contains("INFLUX_PASSWORD"), "{e}");
        let v2 = InfluxArgs {
            influx_api: Some(ApiVersion::V2),
            ..args("http://h")
        };
        let basic = env_of(&[("INFLUX_USERNAME", "u"), ("INFLUX_PASSWORD", "p")]);
        assert!(resolve(&v2, None, &basic).is_err());
        let missing = env_of(&[
            ("INFLUX_PASSWORD_FILE", "/nonexistent/pw"),
            ("INFLUX_USERNAME", "u"),
        ]);
        let e = resolve(&args("http://h"), None, &missing).expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sizes_and_the_config_file_section() {
        let file: crate::config::file::FileConfig = toml::from_str(
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
        let s = resolved(&InfluxArgs::default(), file.influx.as_ref(), &|_| None);
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
        let s = resolved(&a, file.influx.as_ref(), &|_| None);
        assert_eq!((s.target.db.as_str(), s.spool_max), ("other", 0));
        let bad: Result<crate::config::file::FileConfig, _> =
            toml::from_str("[influx]\ntoken = \"x\"\n");
        assert!(bad.is_err(), "a token is never a config key");
    }
}
