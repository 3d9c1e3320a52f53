//! The web UI and API's settings from `--listen`, `--no-web`,
//! `--web-history`, the `[web]` section and the environment (the token
//! comes only from `FLOWLENS_WEB_TOKEN`, `FLOWLENS_WEB_TOKEN_FILE` or
//! `web.token_file`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use flowlens_web::{
    server::{self, WebConfig, DEFAULT_LISTEN},
    store::{
        disk::DiskConfig,
        embedded::EmbeddedConfig,
        influx::{InfluxAuth, InfluxConfig},
    },
};

use super::{
    error::ConfigError,
    file::{DurationValue, SizeValue, WebFile},
    values::{parse_duration, parse_size, Bounds},
};
use crate::{
    cli::WebArgs,
    influx::{http::Auth, settings::InfluxSettings},
};

/// `web.live_window`: a minute to a day.
const LIVE_WINDOW: Bounds = Bounds::new(Duration::from_secs(60), Duration::from_secs(86_400));
/// `web.history_retention`: an hour to ten years.
const RETENTION: Bounds = Bounds::new(
    Duration::from_secs(3600),
    Duration::from_secs(10 * 365 * 86_400),
);

/// Which store the web reads.
#[derive(Debug, Clone)]
pub enum WebStore {
    /// The embedded live store (in this process).
    Embedded(EmbeddedConfig),
    /// InfluxDB.
    Influx(Box<InfluxConfig>),
}

/// Validated web settings of a run.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Server settings.
    pub server: WebConfig,
    /// The store.
    pub store: WebStore,
    /// The listen address was asked for (a busy default port only disables the web).
    pub listen_explicit: bool,
}

fn invalid(what: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        what,
        message: message.into(),
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn duration(
    what: &'static str,
    v: Option<&DurationValue>,
    default: &str,
    b: Bounds,
) -> Result<Duration, ConfigError> {
    let raw = v.map_or_else(|| default.to_owned(), DurationValue::as_text);
    parse_duration(what, &raw, b)
}

fn size(what: &'static str, v: Option<&SizeValue>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(SizeValue::Bytes(n)) => Ok(*n),
        Some(SizeValue::Text(s)) => parse_size(what, s),
    }
}

/// How the web reads InfluxDB with the output's target and credentials.
pub fn influx_reader(s: &InfluxSettings) -> InfluxConfig {
    let mut c = InfluxConfig::new(s.target.url.clone(), &s.target.db);
    c.auth = match &s.target.auth {
        Auth::None => InfluxAuth::None,
        Auth::Basic { username, password } => InfluxAuth::Basic {
            username: username.clone(),
            password: password.expose().to_owned(),
        },
        Auth::Token(t) => InfluxAuth::Token(t.expose().to_owned()),
    };
    c.schema.flow = s.schema.flow_measurement.clone();
    c.schema.rollup = s.schema.rollup_measurement.clone();
    c.schema.rp = s.target.rp.clone();
    c
}

/// The server's settings: the listen address, the token, the cache.
pub fn server_config(
    listen: Option<&String>,
    f: &WebFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WebConfig, ConfigError> {
    let listen: SocketAddr = server::parse_listen(listen.map_or(DEFAULT_LISTEN, String::as_str))
        .map_err(|e| invalid("listen", e.to_string()))?;
    let token = server::resolve_token(env, f.token_file.as_deref())
        .map_err(|e| invalid("web token", e.to_string()))?;
    server::check_listen(listen, token.as_ref()).map_err(|e| invalid("listen", e.to_string()))?;
    let mut c = WebConfig::new(listen, token);
    c.cache_ttl = Duration::from_secs(f.cache_seconds.unwrap_or(5).min(3600));
    Ok(c)
}

fn embedded_config(f: &WebFile, history: Option<&PathBuf>) -> Result<EmbeddedConfig, ConfigError> {
    let live_max = size("web.live_max_bytes", f.live_max_bytes.as_ref(), 256 << 20)?;
    if live_max < 1 << 20 {
        return Err(invalid("web.live_max_bytes", "at least 1MiB"));
    }
    let max_bytes = size(
        "web.history_max_bytes",
        f.history_max_bytes.as_ref(),
        1 << 30,
    )?;
    if max_bytes < 1 << 20 {
        return Err(invalid("web.history_max_bytes", "at least 1MiB"));
    }
    let path = history
        .or(f.history_file.as_ref())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/var/lib/flowlens/history.sqlite"));
    Ok(EmbeddedConfig {
        live_window_ns: nanos(duration(
            "web.live_window",
            f.live_window.as_ref(),
            "1h",
            LIVE_WINDOW,
        )?),
        live_max_bytes: usize::try_from(live_max).unwrap_or(usize::MAX),
        queue_intervals: 64,
        disk: Some(DiskConfig {
            path,
            retention_ns: nanos(duration(
                "web.history_retention",
                f.history_retention.as_ref(),
                "7d",
                RETENTION,
            )?),
            max_bytes,
        }),
    })
}

/// Flags over `[web]`, secrets from `env`; `None` when the web is off.
pub fn resolve(
    args: &WebArgs,
    file: Option<&WebFile>,
    influx: Option<&InfluxSettings>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<WebSettings>, ConfigError> {
    let empty = WebFile::default();
    let f = file.unwrap_or(&empty);
    if args.no_web || f.enabled == Some(false) {
        return Ok(None);
    }
    let listen = args.listen.as_ref().or(f.listen.as_ref());
    let server = server_config(listen, f, env)?;
    let store = match (f.store.as_deref(), influx) {
        (Some("influxdb"), None) => {
            return Err(invalid(
                "web.store",
                "\"influxdb\" needs the InfluxDB output (--influx-url or [influx] url)",
            ))
        }
        (Some("influxdb") | None, Some(i)) => WebStore::Influx(Box::new(influx_reader(i))),
        (Some("embedded") | None, _) => {
            WebStore::Embedded(embedded_config(f, args.web_history.as_ref())?)
        }
        (Some(other), _) => {
            return Err(invalid(
                "web.store",
                format!("{}: use embedded or influxdb", super::values::quote(other)),
            ))
        }
    };
    Ok(Some(WebSettings {
        server,
        store,
        listen_explicit: listen.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_flags_file_and_refusals() {
        let s = resolve(&WebArgs::default(), None, None, &env_of(&[]))
            .expect("ok")
            .expect("on");
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8647");
        assert!(!s.listen_explicit);
        let WebStore::Embedded(e) = &s.store else {
            panic!("{s:?}")
        };
        assert_eq!(e.live_window_ns, 3_600_000_000_000);
        let d = e.disk.as_ref().expect("disk");
        assert_eq!(
            (d.retention_ns, d.max_bytes),
            (7 * 86_400_000_000_000, 1 << 30)
        );
        let off = WebArgs {
            no_web: true,
            ..Default::default()
        };
        assert!(resolve(&off, None, None, &env_of(&[]))
            .expect("ok")
            .is_none());
        let open = WebArgs {
            listen: Some("0.0.0.0:8647".into()),
            ..Default::default()
        };
        let e = resolve(&open, None, None, &env_of(&[])).expect_err("no token");
        assert!(e.to_string().contains("FLOWLENS_WEB_TOKEN"), "{e}");
        let s = resolve(
            &open,
            None,
            None,
            &env_of(&[("FLOWLENS_WEB_TOKEN", "a-long-enough-token")]),
        )
        .expect("ok")
        .expect("on");
        assert!(s.listen_explicit);
        assert!(s
            .server
            .token
            .as_ref()
            .is_some_and(|t| t.matches("a-long-enough-token")));
        let f: WebFile = toml::from_str(
            "store = \"embedded\"\nlive_window = \"30m\"\nhistory_max_bytes = \"64MiB\"\nhistory_retention = \"2d\"\nhistory_file = \"/tmp/x.sqlite\"\n",
        )
        .expect("toml");
        let s = resolve(&WebArgs::default(), Some(&f), None, &env_of(&[]))
            .expect("ok")
            .expect("on");
        let WebStore::Embedded(e) = &s.store else {
            panic!()
        };
        assert_eq!(e.live_window_ns, 1_800_000_000_000);
        assert_eq!(e.disk.as_ref().expect("disk").max_bytes, 64 << 20);
        assert!(
            toml::from_str::<WebFile>("token = \"x\"").is_err(),
            "never a token in the file"
        );
        let bad: WebFile = toml::from_str("store = \"influxdb\"").expect("toml");
        assert!(resolve(&WebArgs::default(), Some(&bad), None, &env_of(&[])).is_err());
        let bad: WebFile = toml::from_str("live_window = \"1s\"").expect("toml");
        let e = resolve(&WebArgs::default(), Some(&bad), None, &env_of(&[])).expect_err("short");
        assert!(e.to_string().contains("web.live_window"), "{e}");
    }
}
