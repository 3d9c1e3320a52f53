//! Shared helpers of the web tests.
#![allow(dead_code)]

pub mod checks;

use std::{
    path::PathBuf,
    sync::{atomic::AtomicU32, atomic::Ordering, Arc},
    time::Duration,
};

use flowlens_correlator::record::ConversationRecord;
use flowlens_web::{
    health::MemoryHealthLog,
    metrics::NoMetrics,
    store::{
        disk::DiskConfig,
        embedded::{EmbeddedConfig, EmbeddedStore},
        FlowStore,
    },
    testdata::{small_host, S},
    AppStateBuilder,
};

static N: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the target's tmp dir (removed by the guard).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "web-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Intervals written.
pub const INTERVALS: u32 = 12;

/// The scenario's first interval end: two hours ago (the store's own
/// retention runs on the real clock), half a second off every bucket boundary.
pub fn start() -> i64 {
    static T: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        (now - 7200) / 10 * 10 * S + 3 * S + S / 2
    })
}

/// The clock of the tests: just after the last interval.
pub fn now() -> i64 {
    start() + INTERVALS as i64 * 10 * S
}

/// `from=&to=` covering the scenario (Unix seconds).
pub fn range() -> String {
    format!("from={}&to={}", (start() - 10 * S) / S, now() / S + 1)
}

/// The scenario's records, by interval.
pub fn scenario() -> Vec<Vec<ConversationRecord>> {
    small_host(start(), INTERVALS)
}

/// An embedded store in `dir` holding the scenario.
pub fn embedded(dir: &TempDir) -> Arc<EmbeddedStore> {
    let store = EmbeddedStore::open(EmbeddedConfig {
        disk: Some(DiskConfig {
            path: dir.0.join("history.sqlite"),
            retention_ns: 7 * 86_400 * S,
            max_bytes: 64 << 20,
        }),
        ..EmbeddedConfig::default()
    })
    .expect("store");
    let w = store.writer();
    for batch in scenario() {
        assert!(w.offer(&batch));
    }
    assert!(w.sync(Duration::from_secs(10)));
    Arc::new(store)
}

/// A router over `store` with the test clock and no cache.
pub fn app(store: Arc<dyn FlowStore>) -> axum::Router {
    let st = AppStateBuilder::new(
        store,
        Arc::new(NoMetrics),
        Arc::new(MemoryHealthLog::new(86_400 * S, 100_000)),
    )
    .cache_ttl(Duration::ZERO)
    .clock(now)
    .build();
    flowlens_web::app(st)
}
