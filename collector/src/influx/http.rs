//! The InfluxDB HTTP API as the writer needs it: the write endpoint (v1
//! `/write` or v2 `/api/v2/write`), authentication, gzip, the start-up probes
//! and `CREATE DATABASE`; every answer classified into an [`Outcome`].

use std::{
    fmt,
    io::{Read, Write},
    time::Duration,
};

use base64::Engine;
use flate2::{write::GzEncoder, Compression};
use url::Url;

/// Which write API to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// `POST /write?db=&rp=&precision=ns` (1.x, 2.x v1 compatibility, 3.x).
    #[default]
    V1,
    /// `POST /api/v2/write?org=&bucket=&precision=ns` (2.x, 3.x).
    V2,
}

/// A secret (password, token): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How we authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Basic` (1.x users; never `u`/`p` in the URL).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Token <t>` (2.x and 3.x, also on `/write`).
    Token(Secret),
}

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL (http or https, no credentials, no query), may have a path prefix.
    pub url: Url,
    /// Write API.
    pub api: ApiVersion,
    /// Database (v1) or bucket (v2).
    pub db: String,
    /// Retention policy (v1).
    pub rp: Option<String>,
    /// Organization (v2).
    pub org: Option<String>,
    /// Credentials.
    pub auth: Auth,
    /// Per-request time limit (connect + send + answer).
    pub timeout: Duration,
    /// Send bodies gzip-compressed.
    pub gzip: bool,
}

/// What one write request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: every point stored.
    Written,
    /// 400 "partial write": the valid points were stored, the rest refused.
    Partial {
        /// The server's message.
        message: String,
    },
    /// The database (v1) does not exist (404 "database not found").
    DatabaseMissing {
        /// The server's message.
        message: String,
    },
    /// A 4xx other than 408/429: sending it again cannot succeed.
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// Connect error, timeout, 408, 429 or 5xx: try again later.
    Retry {
        /// What went wrong, for logs and `last_error`.
        reason: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
}

/// Why a start-up request (ping, `CREATE DATABASE`) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// No answer: connection refused, timeout, TLS, DNS.
    #[error("{0}")]
    Transport(String),
    /// The query was answered with an error inside (InfluxDB 1.x answers 200).
    #[error("{0}")]
    Query(String),
}

impl From<ureq::Error> for RequestError {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::Status(status, r) => Self::Status {
                status,
                message: read_message(r),
            },
            ureq::Error::Transport(t) => Self::Transport(transport_error(&t)),
        }
    }
}

/// The longest `Retry-After` we honour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// An HTTP client for one InfluxDB target (keep-alive connection pool).
pub struct Client {
    agent: ureq::Agent,
    target: Target,
    write_url: String,
    authorization: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("write_url", &self.write_url)
            .field("auth", &self.target.auth)
            .finish()
    }
}

fn endpoint(base: &Url, path: &str, query: &[(&str, &str)]) -> Url {
    let mut u = base.clone();
    u.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    if !query.is_empty() {
        let mut q = u.query_pairs_mut();
        for (k, v) in query {
            q.append_pair(k, v);
        }
    }
    u
}

/// The longest server message kept (logs, errors, the dead-letter file).
const MESSAGE_MAX_CHARS: usize = 200;

/// `s` on one line (whitespace runs become one space), cut after
/// [`MESSAGE_MAX_CHARS`] characters.
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= MESSAGE_MAX_CHARS {
        return joined;
    }
    let mut cut: String = joined.chars().take(MESSAGE_MAX_CHARS).collect();
    cut.push('…');
    cut
}

/// The `<title>` of an HTML page, if it has one.
fn html_title(page: &str) -> Option<&str> {
    let lower = page.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = start + lower[start..].find('>')? + 1;
    let end = open_end + lower[open_end..].find("</title")?;
    page.get(open_end..end)
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The server's message, on one short line: `{"error": "..."}` (1.x),
/// `{"message": ...}` (2.x/3.x), "an HTML page: <title>" (not InfluxDB:
/// a web server or proxy), or the text.
fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for key in ["error", "message"] {
            if let Some(s) = v.get(key).and_then(|m| m.as_str()) {
                return one_line(s);
            }
        }
    }
    let t = body.trim();
    if t.is_empty() {
        return "(empty answer)".to_owned();
    }
    let head = t.get(..t.len().min(256)).unwrap_or(t).to_ascii_lowercase();
    if head.starts_with("<!doctype html") || head.starts_with("<html") || head.contains("<html") {
        return match html_title(t) {
            Some(title) => format!("an HTML page: {}", one_line(title)),
            None => "an HTML page".to_owned(),
        };
    }
    one_line(t)
}

fn read_message(resp: ureq::Response) -> String {
    let mut body = String::new();
    let _ = resp.into_reader().take(16 << 10).read_to_string(&mut body);
    server_message(&body)
}

/// A transport error without the URL (it is logged next to it already).
fn transport_error(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s = format!("{s}: {m}");
    }
    if let Some(src) = std::error::Error::source(t) {
        s = format!("{s}: {src}");
    }
    s
}

/// `Retry-After` in seconds (an HTTP date falls back to our own backoff).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    let secs: u64 = v?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Classifies a non-2xx answer.
pub fn classify(status: u16, message: String, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Written,
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("HTTP {status}: {message}"),
            retry_after,
        },
        400 if message.contains("partial write") => Outcome::Partial { message },
        404 if message.contains("database not found") => Outcome::DatabaseMissing { message },
        _ => Outcome::Rejected { status, message },
    }
}

/// gzip of `body`.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

impl Client {
    /// A client for `target` keeping up to 4 idle connections.
    pub fn new(target: Target) -> Self {
        Self::with_connections(target, 4)
    }

    /// A client for `target` keeping up to `connections` idle keep-alive
    /// connections: one per request in flight, so every writer reuses its
    /// connection instead of opening one per request.
    pub fn with_connections(target: Target, connections: usize) -> Self {
        let connections = connections.max(1);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(target.timeout.min(Duration::from_secs(5)))
            .max_idle_connections(connections.max(100))
            .max_idle_connections_per_host(connections)
            .user_agent(concat!("flowlens/", env!("CARGO_PKG_VERSION")))
            .build();
        let write_url = match target.api {
            ApiVersion::V1 => {
                let mut q = vec![("db", target.db.as_str())];
                if let Some(rp) = &target.rp {
                    q.push(("rp", rp));
                }
                q.push(("precision", "ns"));
                endpoint(&target.url, "/write", &q)
            }
            ApiVersion::V2 => {
                let mut q = Vec::new();
                if let Some(org) = &target.org {
                    q.push(("org", org.as_str()));
                }
                q.push(("bucket", &target.db));
                q.push(("precision", "ns"));
                endpoint(&target.url, "/api/v2/write", &q)
            }
        }
        .to_string();
        let authorization = match &target.auth {
            Auth::None => None,
            Auth::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            Auth::Token(t) => Some(format!("Token {}", t.expose())),
        };
        Self {
            agent,
            target,
            write_url,
            authorization,
        }
    }

    /// The write URL (no credentials in it).
    pub fn write_url(&self) -> &str {
        &self.write_url
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn request(&self, method: &str, url: &str, timeout: Duration) -> ureq::Request {
        let mut req = self.agent.request(method, url).timeout(timeout);
        if let Some(a) = &self.authorization {
            req = req.set("Authorization", a);
        }
        req
    }

    fn outcome(result: Result<ureq::Response, ureq::Error>) -> Outcome {
        match result {
            Ok(resp) => {
                let status = resp.status();
                // Read the (empty) body so the connection is reused.
                let msg = read_message(resp);
                classify(status, msg, None)
            }
            Err(ureq::Error::Status(status, resp)) => {
                let retry_after = parse_retry_after(resp.header("Retry-After"));
                classify(status, read_message(resp), retry_after)
            }
            Err(ureq::Error::Transport(t)) => Outcome::Retry {
                reason: transport_error(&t),
                retry_after: None,
            },
        }
    }

    /// Writes one batch of line protocol (`body`, gzipped already when
    /// `gzipped`) within `timeout`.
    pub fn write(&self, body: &[u8], gzipped: bool, timeout: Duration) -> Outcome {
        let mut req = self
            .request("POST", &self.write_url, timeout)
            .set("Content-Type", "text/plain; charset=utf-8");
        if gzipped {
            req = req.set("Content-Encoding", "gzip");
        }
        Self::outcome(req.send_bytes(body))
    }

    /// `GET /ping`: is anything answering? `Err` says what failed.
    pub fn ping(&self, timeout: Duration) -> Result<(), RequestError> {
        let url = endpoint(&self.target.url, "/ping", &[]).to_string();
        self.request("GET", &url, timeout).call()?;
        Ok(())
    }

    /// An empty write: checks credentials, database and retention policy
    /// without storing anything.
    pub fn probe(&self, timeout: Duration) -> Outcome {
        self.write(&[], false, timeout)
    }

    /// `CREATE DATABASE` (v1; a no-op when it exists).
    pub fn create_database(&self, timeout: Duration) -> Result<(), RequestError> {
        let name = self.target.db.replace('\\', "\\\\").replace('"', "\\\"");
        let q = format!("CREATE DATABASE \"{name}\"");
        let url = endpoint(&self.target.url, "/query", &[("q", &q)]).to_string();
        let resp = self.request("POST", &url, timeout).call()?;
        let mut body = String::new();
        let _ = resp.into_reader().take(16 << 10).read_to_string(&mut body);
        // 1.x answers 200 with the statement's error inside.
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match v.pointer("/results/0/error").and_then(|e| e.as_str()) {
            Some(e) => Err(RequestError::Query(e.to_owned())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(api: ApiVersion, auth: Auth) -> Target {
        Target {
            url: Url::parse("https://influx.example:8086/prefix/").expect("url"),
            api,
            db: "flow lens".into(),
            rp: Some("a&b".into()),
            org: Some("my org".into()),
            auth,
            timeout: Duration::from_secs(1),
            gzip: true,
        }
    }

    #[test]
    fn write_urls_are_escaped_and_credential_free() {
        let c = Client::new(target(
            ApiVersion::V1,
            Auth::Basic {
                username: "u".into(),
                password: Secret::new("hunter2"),
            },
        ));
        assert_eq!(
            c.write_url(),
            "https://influx.example:8086/prefix/write?db=flow+lens&rp=a%26b&precision=ns"
        );
        assert_eq!(c.authorization.as_deref(), Some("Basic dTpodW50ZXIy"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = Client::new(target(ApiVersion::V2, Auth::Token(Secret::new("xyz"))));
        assert_eq!(
            c.write_url(),
            "https://influx.example:8086/prefix/api/v2/write?org=my+org&bucket=flow+lens&precision=ns"
        );
        assert_eq!(c.authorization.as_deref(), Some("Token xyz"));
        assert!(!format!("{c:?} {:?}", c.target).contains("xyz"));
    }

    #[test]
    fn answers_are_classified() {
        let m = |s: &str| s.to_owned();
        assert_eq!(classify(204, m(""), None), Outcome::Written);
        assert!(matches!(
            classify(429, m("slow down"), Some(Duration::from_secs(2))),
            Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        for s in [408, 500, 503] {
            assert!(matches!(classify(s, m("x"), None), Outcome::Retry { .. }));
        }
        assert!(matches!(
            classify(400, m("partial write: field type conflict dropped=1"), None),
            Outcome::Partial { .. }
        ));
        assert!(matches!(
            classify(404, m("database not found: \"x\""), None),
            Outcome::DatabaseMissing { .. }
        ));
        for s in [400, 401, 403, 404, 413] {
            assert!(matches!(
                classify(s, m("no"), None),
                Outcome::Rejected { status, .. } if status == s
            ));
        }
    }

    #[test]
    fn server_messages_and_retry_after() {
        assert_eq!(server_message(r#"{"error":"boom"}"#), "boom");
        assert_eq!(
            server_message(r#"{"code":"invalid","message":"bad"}"#),
            "bad"
        );
        assert_eq!(server_message(" plain \n"), "plain");
        assert_eq!(server_message(""), "(empty answer)");
        // A web server's error page: one line, its title.
        let page = "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 404</p>\n    </body>\n</html>\n";
        assert_eq!(server_message(page), "an HTML page: Error response");
        assert_eq!(
            server_message("<html><body>x</body></html>"),
            "an HTML page"
        );
        let long = format!("line one\n\nline two {}", "y".repeat(5000));
        let m = server_message(&long);
        assert!(
            !m.contains('\n') && m.starts_with("line one line two"),
            "{m}"
        );
        assert_eq!(m.chars().count(), MESSAGE_MAX_CHARS + 1);
        let json = format!(r#"{{"error":"a\nb {}"}}"#, "z".repeat(500));
        assert!(!server_message(&json).contains('\n'));
        assert_eq!(parse_retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(Some("99999")), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"m,t=a f=1i 1\n".repeat(100);
        let z = gzip(&body);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        assert_eq!(out, body);
        assert!(z.len() < body.len() / 4);
    }
}
