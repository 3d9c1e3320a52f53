//! The HTTP API: `fn app(state) -> Router`, built once; handlers are thin and
//! the questions are answered by the store and `flowlens-query`. Every
//! response carries security headers (CSP, no CORS); `/api` and `/metrics`
//! need the bearer token when one is configured; a Host check guards the
//! token-less loopback listener against DNS rebinding.

pub mod cache;
pub mod error;
mod handlers;
pub use handlers::sample_health;
pub mod params;

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use axum::{
    body::{to_bytes, Body},
    extract::{MatchedPath, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::sync::Semaphore;

use self::{
    cache::{Cached, ResponseCache},
    error::AppError,
};
use crate::{
    health::HealthLog,
    metrics::{MetricsSource, WebCounters},
    store::FlowStore,
};

/// Bounds on what one question may ask.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest time range, ns (default 31 days).
    pub max_range_ns: i64,
    /// Most points of a series (default 1000).
    pub max_points: u64,
    /// Most groups named in a series, table or sankey (default 50).
    pub max_top: u64,
    /// Most rows of a conversation page (default 1000).
    pub max_rows: u64,
    /// Most rows of a CSV export (default 100,000).
    pub max_csv_rows: u64,
    /// Most edges of a graph (default 500).
    pub max_edges: u64,
    /// Longest time a question may take (default 30 s).
    pub query_timeout: Duration,
    /// Questions answered at once (default 4).
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_range_ns: 31 * 86_400 * 1_000_000_000,
            max_points: 1000,
            max_top: 50,
            max_rows: 1000,
            max_csv_rows: 100_000,
            max_edges: 500,
            query_timeout: Duration::from_secs(30),
            concurrency: 4,
        }
    }
}

/// A secret compared in constant time and never printed.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(s: impl Into<String>) -> Self {
        Token(s.into())
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), other.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// The token text (for the login cookie).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Everything the handlers share.
pub struct Inner {
    /// The questions.
    pub store: Arc<dyn FlowStore>,
    /// The collector's self-metrics.
    pub metrics: Arc<dyn MetricsSource>,
    /// Health over time.
    pub health: Arc<dyn HealthLog>,
    /// Bounds.
    pub limits: Limits,
    /// Bearer token (required on /api and /metrics when set).
    pub token: Option<Token>,
    /// Host headers accepted (`None`: any).
    pub allowed_hosts: Option<Vec<String>>,
    /// Short response cache.
    pub cache: ResponseCache,
    /// Request counters.
    pub counters: WebCounters,
    /// The clock (Unix ns), injectable for tests.
    pub clock: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Questions answered at once.
    pub slots: Semaphore,
}

/// The shared state.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl AppState {
    /// State with defaults: no token, any Host, a 5 s cache, the system clock.
    pub fn new(
        store: Arc<dyn FlowStore>,
        metrics: Arc<dyn MetricsSource>,
        health: Arc<dyn HealthLog>,
    ) -> Self {
        AppStateBuilder::new(store, metrics, health).build()
    }

    /// Now, Unix ns.
    pub fn now(&self) -> i64 {
        (self.0.clock)()
    }
}

/// Builds an [`AppState`].
pub struct AppStateBuilder {
    inner: Inner,
}

/// The system clock, Unix ns.
pub fn system_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl AppStateBuilder {
    /// Defaults around a store.
    pub fn new(
        store: Arc<dyn FlowStore>,
        metrics: Arc<dyn MetricsSource>,
        health: Arc<dyn HealthLog>,
    ) -> Self {
        let limits = Limits::default();
        AppStateBuilder {
            inner: Inner {
                store,
                metrics,
                health,
                slots: Semaphore::new(limits.concurrency),
                limits,
                token: None,
                allowed_hosts: None,
                cache: ResponseCache::new(Duration::from_secs(5), 256, 64 << 20),
                counters: WebCounters::default(),
                clock: Box::new(system_clock),
            },
        }
    }

    /// Bounds.
    pub fn limits(mut self, l: Limits) -> Self {
        self.inner.slots = Semaphore::new(l.concurrency.max(1));
        self.inner.limits = l;
        self
    }

    /// Requires this bearer token.
    pub fn token(mut self, t: Option<Token>) -> Self {
        self.inner.token = t;
        self
    }

    /// Accepts only these Host headers.
    pub fn allowed_hosts(mut self, h: Option<Vec<String>>) -> Self {
        self.inner.allowed_hosts = h;
        self
    }

    /// Cache TTL (zero disables).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.inner.cache = ResponseCache::new(ttl, 256, 64 << 20);
        self
    }

    /// The clock.
    pub fn clock(mut self, f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.inner.clock = Box::new(f);
        self
    }

    /// The state.
    pub fn build(self) -> AppState {
        AppState(Arc::new(self.inner))
    }
}

/// The Content-Security-Policy of every response: own scripts, styles and
/// data only; no framing; no inline scripts.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn secure_headers(h: &mut HeaderMap, api: bool) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if api {
        set(h, header::CACHE_CONTROL, "no-store");
    }
}

fn needs_token(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/metrics"
}

fn presented_token(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim().to_owned());
        }
    }
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some(t) = part.trim().strip_prefix("flowlens_token=") {
                return Some(t.to_owned());
            }
        }
    }
    None
}

/// Host check, token check, request counting and security headers.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |m| m.as_str().to_owned());
    let api = needs_token(&path);
    let refused = if let (Some(allowed), Some(host)) = (
        &st.0.allowed_hosts,
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    ) {
        (!allowed.iter().any(|a| a.eq_ignore_ascii_case(host))).then(|| {
            st.0.counters.bad_host.fetch_add(1, Ordering::Relaxed);
            AppError::Forbidden(format!(
                "Host '{}' is not this server (listening on loopback without a token; set a token to serve other names)",
                params::shorten(host)
            ))
        })
    } else {
        None
    };
    let refused = refused.or_else(|| match (&st.0.token, api) {
        (Some(t), true) if !presented_token(req.headers()).is_some_and(|p| t.matches(&p)) => {
            st.0.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            Some(AppError::Unauthorized)
        }
        _ => None,
    });
    let mut resp = match refused {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    };
    secure_headers(resp.headers_mut(), api);
    st.0.counters.observe(
        &route,
        resp.status().as_u16(),
        started.elapsed().as_nanos() as u64,
    );
    resp
}

/// Serves identical GETs from the cache for a few seconds.
async fn cached(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET || !st.0.cache.enabled() {
        return next.run(req).await;
    }
    let key = req.uri().to_string();
    if let Some(c) = st.0.cache.get(&key) {
        st.0.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
        let mut r = Response::new(Body::from(c.body));
        if let Ok(v) = HeaderValue::from_str(&c.content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r.headers_mut()
            .insert("x-flowlens-cache", HeaderValue::from_static("hit"));
        return r;
    }
    st.0.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, 64 << 20).await else {
        return AppError::Store(crate::store::StoreError::Internal(
            "answer too large".into(),
        ))
        .into_response();
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    st.0.cache.put(
        key,
        Cached {
            content_type,
            body: bytes.clone(),
        },
    );
    Response::from_parts(parts, Body::from(bytes))
}

/// The router: the API, `/metrics`, the explorer's pages and assets, `/login`.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api", get(handlers::index))
        .route("/api/series", get(handlers::series).post(handlers::series))
        .route("/api/top", get(handlers::top).post(handlers::top))
        .route("/api/sankey", get(handlers::sankey).post(handlers::sankey))
        .route(
            "/api/conversations",
            get(handlers::conversations).post(handlers::conversations),
        )
        .route(
            "/api/topology",
            get(handlers::topology).post(handlers::topology),
        )
        .route("/api/entity", get(handlers::entity).post(handlers::entity))
        .route("/api/health", get(handlers::health).post(handlers::health))
        .route(
            "/api/complete",
            get(handlers::complete).post(handlers::complete),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), cached));
    Router::new()
        .merge(api)
        .route("/api/{*rest}", get(handlers::not_found))
        .route("/metrics", get(handlers::metrics))
        .route("/", get(crate::assets::overview))
        .route("/visualize", get(crate::assets::visualize))
        .route("/conversations", get(crate::assets::conversations))
        .route("/topology", get(crate::assets::topology))
        .route("/container/{name}", get(crate::assets::entity))
        .route("/process/{name}", get(crate::assets::entity))
        .route("/user/{name}", get(crate::assets::entity))
        .route("/remote/{name}", get(crate::assets::entity))
        .route("/host/{name}", get(crate::assets::entity))
        .route("/assets/{name}", get(crate::assets::asset))
        .route(
            "/login",
            get(crate::assets::login_page).post(handlers::login),
        )
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}
