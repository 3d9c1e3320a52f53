//! The embedded store (the default; no database needed): the live window of
//! conversation records in memory plus rollups and health history in SQLite.
//! The collector hands records over through [`EmbeddedWriter::offer`], which
//! never blocks: a bounded queue to the store's own thread, whose overflow is
//! counted. The history file's failures never touch the live window.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use flowlens_correlator::record::ConversationRecord;
use flowlens_query::{
    conversations::ConversationBuilder,
    cube::{CubeBuilder, TrafficQuery},
    fact::{OwnedConv, Role},
    field::{Field, FieldSet},
    filter::Val,
    influxql::group_fields,
    plan::{base_rollup_fields, Capabilities, Source},
    time::{human, rfc3339, TimeRange},
};
use tracing::{error, warn};

use super::{
    disk::{DiskConfig, DiskReader, DiskStats, RollupDb, RollupKey, RollupSums},
    live::{LiveStats, LiveWindow},
    sort_values, FlowStore, StoreError, StoreStatus, TrafficAnswer,
};
use crate::metrics::Sample;

/// Settings of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// How long conversation records stay in memory, ns (default 1 h).
    pub live_window_ns: i64,
    /// Memory cap of the live window, bytes (default 256 MiB).
    pub live_max_bytes: usize,
    /// Intervals queued between the export loop and the store (default 64).
    pub queue_intervals: usize,
    /// The history file; `None` keeps only the live window.
    pub disk: Option<DiskConfig>,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            live_window_ns: 3600 * 1_000_000_000,
            live_max_bytes: 256 << 20,
            queue_intervals: 64,
            disk: None,
        }
    }
}

enum Msg {
    Records(Vec<ConversationRecord>),
    Health(i64, Vec<(String, f64)>),
    Sync(Sender<()>),
    Maintain(i64),
    Stop,
}

/// Hand-over counters (the export loop's side).
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Records offered by the collector.
    pub offered: AtomicU64,
    /// Records dropped because the store's queue was full (lost to the web view).
    pub dropped: AtomicU64,
    /// Intervals written.
    pub intervals: AtomicU64,
}

/// The collector's handle: hands records to the store without blocking.
#[derive(Clone)]
pub struct EmbeddedWriter {
    tx: Sender<Msg>,
    counters: Arc<WriterCounters>,
}

impl EmbeddedWriter {
    /// Queues an interval's records; false (and counted) when the queue is full.
    pub fn offer(&self, records: &[ConversationRecord]) -> bool {
        self.offer_owned(records.to_vec())
    }

    /// Like [`EmbeddedWriter::offer`], with records the caller gives up (no copy).
    pub fn offer_owned(&self, records: Vec<ConversationRecord>) -> bool {
        let n = records.len() as u64;
        self.counters.offered.fetch_add(n, Ordering::Relaxed);
        if records.is_empty() {
            return true;
        }
        match self.tx.try_send(Msg::Records(records)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let before = self.counters.dropped.fetch_add(n, Ordering::Relaxed);
                if before == 0 {
                    error!(records = n, "The web store's queue is full: records dropped from the web view (counted as web_store_dropped_records).");
                }
                false
            }
        }
    }

    /// Queues health values for the history (dropped silently when full: the next sample follows).
    pub fn offer_health(&self, ts: i64, values: Vec<(String, f64)>) {
        let _ = self.tx.try_send(Msg::Health(ts, values));
    }

    /// Waits until everything queued before this call is stored (tests, shutdown).
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = bounded(1);
        if self.tx.send_timeout(Msg::Sync(tx), timeout).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    /// Runs retention and the size cap now with `now_ns` as the clock (tests).
    pub fn maintain(&self, now_ns: i64) {
        let _ = self.tx.send(Msg::Maintain(now_ns));
    }
}

/// The embedded store.
pub struct EmbeddedStore {
    cfg: EmbeddedConfig,
    live: Arc<RwLock<LiveWindow>>,
    disk: Option<DiskReader>,
    disk_stats: Option<Arc<Mutex<DiskStats>>>,
    counters: Arc<WriterCounters>,
    writer: EmbeddedWriter,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Per-interval rollup rows of records (the embedded twin of `flow_rollup`,
/// with `server_port` and `peer_local` besides).
pub fn rollup_rows(records: &[ConversationRecord]) -> Vec<(RollupKey, RollupSums)> {
    let mut m: BTreeMap<RollupKey, RollupSums> = BTreeMap::new();
    for r in records {
        let c = OwnedConv::from_record(r);
        for e in c.view().ends() {
            let k = RollupKey {
                ts: e.ts,
                host: e.host.to_owned(),
                proto: e.proto.to_owned(),
                container: e.container.to_owned(),
                process: e.process.to_owned(),
                user: e.user.to_owned(),
                server: e.role == Role::Server,
                peer: e.peer.to_owned(),
                peer_local: e.peer_local == Some(true),
                server_port: e.server_port.map_or(-1, i32::from),
            };
            let s = m.entry(k).or_default();
            s.bytes_out = s.bytes_out.saturating_add(e.sent.bytes);
            s.packets_out = s.packets_out.saturating_add(e.sent.packets);
            s.bytes_in = s.bytes_in.saturating_add(e.received.bytes);
            s.packets_in = s.packets_in.saturating_add(e.received.packets);
            s.conversations += e.conversations;
        }
    }
    m.into_iter().collect()
}

fn run_writer(
    rx: Receiver<Msg>,
    live: Arc<RwLock<LiveWindow>>,
    mut db: Option<RollupDb>,
    counters: Arc<WriterCounters>,
) {
    let mut last_maintain = Instant::now();
    loop {
        let msg = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if last_maintain.elapsed() >= Duration::from_secs(60) {
                    if let Some(db) = db.as_mut() {
                        db.maintain(unix_now_ns());
                    }
                    last_maintain = Instant::now();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match msg {
            Msg::Records(recs) => {
                match live.write() {
                    Ok(mut w) => w.insert(&recs),
                    Err(p) => p.into_inner().insert(&recs),
                }
                if let Some(db) = db.as_mut() {
                    db.write_rollup(&rollup_rows(&recs));
                }
                counters.intervals.fetch_add(1, Ordering::Relaxed);
            }
            Msg::Health(ts, values) => {
                if let Some(db) = db.as_mut() {
                    db.record_health(ts, &values);
                }
            }
            Msg::Sync(tx) => {
                let _ = tx.send(());
            }
            Msg::Maintain(now) => {
                if let Some(db) = db.as_mut() {
                    db.maintain(now);
                }
                last_maintain = Instant::now();
            }
            Msg::Stop => return,
        }
        if last_maintain.elapsed() >= Duration::from_secs(60) {
            if let Some(db) = db.as_mut() {
                db.maintain(unix_now_ns());
            }
            last_maintain = Instant::now();
        }
    }
}

impl EmbeddedStore {
    /// Opens the store (the history file is opened, checked and recovered
    /// here) and starts its writer thread.
    pub fn open(cfg: EmbeddedConfig) -> std::io::Result<Self> {
        let live = Arc::new(RwLock::new(LiveWindow::new(
            cfg.live_window_ns,
            cfg.live_max_bytes,
        )));
        let db = cfg.disk.clone().map(RollupDb::open);
        let disk = db.as_ref().map(RollupDb::reader);
        let disk_stats = db.as_ref().map(RollupDb::stats_handle);
        let (tx, rx) = bounded(cfg.queue_intervals.max(1));
        let counters = Arc::new(WriterCounters::default());
        let thread = {
            let (live, counters) = (Arc::clone(&live), Arc::clone(&counters));
            std::thread::Builder::new()
                .name("web-store".into())
                .spawn(move || run_writer(rx, live, db, counters))?
        };
        Ok(EmbeddedStore {
            cfg,
            live,
            disk,
            disk_stats,
            writer: EmbeddedWriter {
                tx,
                counters: Arc::clone(&counters),
            },
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The collector's handle.
    pub fn writer(&self) -> EmbeddedWriter {
        self.writer.clone()
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, LiveWindow> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader of the history file (for the health history), when there is one.
    pub fn health_reader(&self) -> Option<DiskReader> {
        self.disk.as_ref().map(DiskReader::another)
    }

    /// Counters of the live window.
    pub fn live_stats(&self) -> LiveStats {
        self.live().stats()
    }

    /// Counters of the history file.
    pub fn disk_stats(&self) -> Option<DiskStats> {
        self.disk_stats
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn disk_ok(&self) -> bool {
        self.disk_stats().is_some_and(|s| s.available)
    }

    /// Rollup fields of the embedded history.
    pub fn rollup_fields() -> FieldSet {
        base_rollup_fields().union(FieldSet::of(&[Field::ServerPort, Field::PeerLocal]))
    }

    /// A notice when `from` is older than what the live window still has.
    fn window_notice(&self, from: i64) -> Option<String> {
        let s = self.live_stats();
        let lost = s.inserted > s.records;
        (lost && from < s.oldest_ns).then(|| {
            format!(
                "conversation records are kept in memory for {} (up to {} MiB): this answer covers {} onwards; questions by host, container, process, user, peer, protocol or server port reach further back",
                human(self.cfg.live_window_ns),
                self.cfg.live_max_bytes >> 20,
                rfc3339(s.oldest_ns)
            )
        })
    }

    fn cube_of_records(&self, q: &TrafficQuery) -> Result<flowlens_query::cube::Cube, StoreError> {
        let mut b = CubeBuilder::new(q);
        self.live()
            .each(q.range.from, q.range.to, |c| b.add_conv(c));
        Ok(b.finish()?)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        let _ = self
            .writer
            .tx
            .send_timeout(Msg::Stop, Duration::from_secs(5));
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl FlowStore for EmbeddedStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            rollup: Some(Self::rollup_fields()),
            flow_tags: None,
        }
    }

    fn traffic(&self, q: &TrafficQuery) -> Result<TrafficAnswer, StoreError> {
        let mut notices = Vec::new();
        let source = self.capabilities().choose(q.needed());
        if source == Source::Rollup {
            if let (Some(disk), true) = (&self.disk, self.disk_ok()) {
                let group = group_fields(&q.dims, q.filter.as_ref());
                match disk.traffic(q.range, &q.buckets, &group, q.filter.as_ref()) {
                    Ok(rows) => {
                        let mut b = CubeBuilder::new(q);
                        for r in &rows {
                            b.add_end(&r.view());
                        }
                        return Ok(TrafficAnswer {
                            cube: b.finish()?,
                            source,
                            notices,
                        });
                    }
                    Err(e) => {
                        warn!(error = %e, "History query failed; answering from the live window.");
                        notices.push(format!("the history file could not be read ({e}): this answer comes from the live window only"));
                    }
                }
            } else if self.disk.is_some() {
                notices.push("the history file is unavailable (see /api/health): this answer comes from the live window only".into());
            }
        }
        notices.extend(self.window_notice(q.range.from));
        Ok(TrafficAnswer {
            cube: self.cube_of_records(q)?,
            source: Source::Records,
            notices,
        })
    }

    fn conversations(&self, b: &mut ConversationBuilder) -> Result<Vec<String>, StoreError> {
        let range = b.range();
        self.live().each(range.from, range.to, |c| b.add(c));
        Ok(self.window_notice(range.from).into_iter().collect())
    }

    fn values(&self, field: Field, range: TimeRange) -> Result<Vec<(String, u64)>, StoreError> {
        let mut v = if Self::rollup_fields().contains(field) && self.disk_ok() {
            match &self.disk {
                Some(d) => d.values(field, range)?,
                None => Vec::new(),
            }
        } else {
            let mut m: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
            self.live().each(range.from, range.to, |c| {
                for e in c.ends() {
                    let bytes = e.sent.bytes.saturating_add(e.received.bytes);
                    let subject = flowlens_query::filter::EndSubject {
                        end: &e,
                        direction: None,
                    };
                    use flowlens_query::filter::Subject;
                    subject.any(field, &mut |v| {
                        let s = match v {
                            Val::Text(t) => t.to_owned(),
                            Val::Num(n) => n.to_string(),
                            Val::Addr(a) => a.to_string(),
                        };
                        *m.entry(s).or_default() += bytes;
                        false
                    });
                }
            });
            m.into_iter().collect()
        };
        sort_values(&mut v);
        Ok(v)
    }

    fn status(&self) -> StoreStatus {
        let live = self.live_stats();
        StoreStatus {
            kind: "embedded",
            records_from: (live.records > 0).then_some(live.oldest_ns),
            retention_ns: self.cfg.disk.as_ref().map(|d| d.retention_ns),
            details: serde_json::json!({
                "live": live,
                "history": self.disk_stats(),
                "history_file": self.cfg.disk.as_ref().map(|d| d.path.display().to_string()),
                "history_max_bytes": self.cfg.disk.as_ref().map(|d| d.max_bytes),
                "queue": {
                    "offered_records": self.counters.offered.load(Ordering::Relaxed),
                    "dropped_records": self.counters.dropped.load(Ordering::Relaxed),
                    "intervals_written": self.counters.intervals.load(Ordering::Relaxed),
                },
            }),
        }
    }

    fn samples(&self, out: &mut Vec<Sample>) {
        let l = self.live_stats();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push(Sample::gauge(
            "flowlens_web_live_records",
            "Conversation records in the live window",
            l.records as f64,
        ));
        out.push(Sample::gauge(
            "flowlens_web_live_bytes",
            "Estimated memory of the live window, bytes",
            l.bytes as f64,
        ));
        out.push(Sample::gauge(
            "flowlens_web_live_max_bytes",
            "Memory cap of the live window, bytes",
            l.cap_bytes as f64,
        ));
        out.push(Sample::counter(
            "flowlens_web_live_evicted_early_total",
            "Records pushed out of the live window by its memory cap before their hour was over",
            l.evicted_early,
        ));
        out.push(Sample::counter(
            "flowlens_web_store_offered_records_total",
            "Records handed to the web store",
            g(&self.counters.offered),
        ));
        out.push(Sample::counter(
            "flowlens_web_store_dropped_records_total",
            "Records dropped because the web store's queue was full (lost to the web view)",
            g(&self.counters.dropped),
        ));
        if let Some(d) = self.disk_stats() {
            out.push(Sample::gauge(
                "flowlens_web_history_up",
                "1 when the history file is open",
                if d.available { 1.0 } else { 0.0 },
            ));
            out.push(Sample::gauge(
                "flowlens_web_history_file_bytes",
                "Size of the history file and its WAL, bytes",
                d.file_bytes as f64,
            ));
            out.push(Sample::counter(
                "flowlens_web_history_rows_written_total",
                "Rollup rows written to the history file",
                d.rows_written,
            ));
            out.push(Sample::counter(
                "flowlens_web_history_rows_lost_total",
                "Rollup rows that could not be written (lost from the history)",
                d.rows_lost,
            ));
            out.push(Sample::counter(
                "flowlens_web_history_rows_evicted_size_total",
                "Rollup rows deleted early to stay under the size cap",
                d.rows_evicted_size,
            ));
            out.push(Sample::counter(
                "flowlens_web_history_rows_expired_total",
                "Rollup rows deleted at the end of their retention",
                d.rows_expired,
            ));
            out.push(Sample::counter(
                "flowlens_web_history_recovered_corrupt_total",
                "Times a corrupt history file was moved aside and replaced",
                d.recovered_corrupt,
            ));
            out.push(Sample::counter(
                "flowlens_web_history_full_total",
                "Times the history file was full when writing",
                d.full_events,
            ));
        }
    }
}
