//! Runs the web server on its own thread with its own tokio runtime (the
//! collector is synchronous threads). Binds `127.0.0.1:8647` by default; any
//! other address needs a bearer token from `FLOWLENS_WEB_TOKEN` or the file
//! named by `FLOWLENS_WEB_TOKEN_FILE` (never a flag), else it refuses to start.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::Duration,
};

use tokio::sync::oneshot;
use tracing::{error, info};

use crate::api::{self, AppState, AppStateBuilder, Limits, Token};

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8647";
/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A non-loopback address without a token.
    #[error("refusing to listen on {0} without a token: anyone who can reach it would see every flow. Set FLOWLENS_WEB_TOKEN or FLOWLENS_WEB_TOKEN_FILE (at least {MIN_TOKEN_LEN} characters), or listen on 127.0.0.1")]
    NeedToken(SocketAddr),
    /// The token file could not be read.
    #[error("cannot read the web token file {path}: {source}")]
    TokenFile {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The token is too short.
    #[error("the web token is {0} characters long; use at least {MIN_TOKEN_LEN}")]
    TokenTooShort(usize),
    /// The listen address does not parse.
    #[error("invalid listen address '{0}': use IP:PORT, e.g. 127.0.0.1:8647 or [::1]:8647")]
    BadListen(String),
    /// The runtime thread could not start.
    #[error("cannot start the web server thread: {0}")]
    Thread(std::io::Error),
}

/// Parses `--listen`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, WebError> {
    s.parse().map_err(|_| WebError::BadListen(s.to_owned()))
}

/// The token from `$FLOWLENS_WEB_TOKEN`, else the file named by
/// `$FLOWLENS_WEB_TOKEN_FILE`, else `file` (config); `None` when none is set.
pub fn resolve_token(
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&Path>,
) -> Result<Option<Token>, WebError> {
    let text = if let Some(t) = env("FLOWLENS_WEB_TOKEN").filter(|t| !t.is_empty()) {
        t
    } else {
        let path = env("FLOWLENS_WEB_TOKEN_FILE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| file.map(Path::to_path_buf));
        let Some(path) = path else {
            return Ok(None);
        };
        std::fs::read_to_string(&path)
            .map_err(|source| WebError::TokenFile { path, source })?
            .trim_end_matches(['\n', '\r'])
            .to_owned()
    };
    let n = text.chars().count();
    if n < MIN_TOKEN_LEN {
        return Err(WebError::TokenTooShort(n));
    }
    Ok(Some(Token::new(text)))
}

/// Refuses a non-loopback address without a token.
pub fn check_listen(addr: SocketAddr, token: Option<&Token>) -> Result<(), WebError> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(WebError::NeedToken(addr));
    }
    Ok(())
}

/// The Host headers a token-less loopback listener accepts (DNS rebinding guard).
pub fn loopback_hosts(addr: SocketAddr) -> Vec<String> {
    let p = addr.port();
    let mut v = vec![
        format!("127.0.0.1:{p}"),
        format!("localhost:{p}"),
        format!("[::1]:{p}"),
        addr.to_string(),
    ];
    if p == 80 {
        v.extend(["127.0.0.1".into(), "localhost".into(), "[::1]".into()]);
    }
    v
}

/// Settings of the server.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token.
    pub token: Option<Token>,
    /// Bounds on questions.
    pub limits: Limits,
    /// Response cache TTL.
    pub cache_ttl: Duration,
    /// How often metrics are sampled into the health history.
    pub health_every: Duration,
}

impl WebConfig {
    /// Defaults on `listen`.
    pub fn new(listen: SocketAddr, token: Option<Token>) -> Self {
        WebConfig {
            listen,
            token,
            limits: Limits::default(),
            cache_ttl: Duration::from_secs(5),
            health_every: Duration::from_secs(10),
        }
    }
}

/// The running server; dropping it stops it.
pub struct WebServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// The address it listens on (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds (errors are reported here, before anything else starts) and serves
/// on a new thread.
pub fn spawn(cfg: WebConfig, state: AppStateBuilder) -> Result<WebServer, WebError> {
    check_listen(cfg.listen, cfg.token.as_ref())?;
    let listener = TcpListener::bind(cfg.listen).map_err(|source| WebError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| WebError::Bind {
        addr: cfg.listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| WebError::Bind { addr, source })?;
    let hosts = (cfg.token.is_none() && addr.ip().is_loopback()).then(|| loopback_hosts(addr));
    let state: AppState = state
        .limits(cfg.limits.clone())
        .token(cfg.token.clone())
        .allowed_hosts(hosts)
        .cache_ttl(cfg.cache_ttl)
        .build();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let every = cfg.health_every;
    let thread = std::thread::Builder::new()
        .name("web".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(8)
                .thread_name("web-worker")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "Cannot start the web server's runtime; the web UI and API are off.");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        error!(error = %e, "Cannot listen; the web UI and API are off.");
                        return;
                    }
                };
                let sampler = {
                    let st = state.clone();
                    tokio::spawn(async move {
                        let mut t = tokio::time::interval(every);
                        loop {
                            t.tick().await;
                            let st = st.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                api::sample_health(&st)
                            })
                            .await;
                        }
                    })
                };
                let app = api::app(state);
                let r = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
                sampler.abort();
                if let Err(e) = r {
                    error!(error = %e, "The web server stopped.");
                }
            });
        })
        .map_err(WebError::Thread)?;
    info!(url = %format!("http://{addr}/"), "Web UI and API listening.");
    Ok(WebServer {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
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
    fn tokens_come_from_env_or_files_and_are_required_off_loopback() {
        assert!(resolve_token(&env_of(&[]), None).unwrap().is_none());
        let t = resolve_token(&env_of(&[("FLOWLENS_WEB_TOKEN", "0123456789abcdef")]), None)
            .unwrap()
            .unwrap();
        assert!(t.matches("0123456789abcdef") && !t.matches("0123456789abcdeF"));
        assert!(!format!("{t:?}").contains("0123"), "redacted");
        assert!(matches!(
            resolve_token(&env_of(&[("FLOWLENS_WEB_TOKEN", "short")]), None),
            Err(WebError::TokenTooShort(5))
        ));
        let dir = std::env::temp_dir().join(format!("flowlens-webtok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tok");
        std::fs::write(&f, "file-token-0123456789\n").unwrap();
        let t = resolve_token(&env_of(&[]), Some(&f)).unwrap().unwrap();
        assert!(t.matches("file-token-0123456789"));
        let e = resolve_token(
            &env_of(&[("FLOWLENS_WEB_TOKEN_FILE", "/nonexistent/x")]),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);

        let any: SocketAddr = "0.0.0.0:8647".parse().unwrap();
        let e = check_listen(any, None).unwrap_err();
        assert!(e.to_string().contains("FLOWLENS_WEB_TOKEN"), "{e}");
        assert!(check_listen(any, Some(&t)).is_ok());
        assert!(check_listen(parse_listen("[::1]:1").unwrap(), None).is_ok());
        assert!(parse_listen("localhost:8647").is_err());
    }
}
