//! The embedded store's history on disk: per-interval rollup rows and the
//! collector's health counters in one SQLite file (compiled in), with a
//! retention and a size cap. A corrupt file is moved aside and a fresh one
//! started; a full one loses its oldest rows first. Every loss is counted.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use flowlens_query::{
    fact::Role,
    field::Field,
    filter::{Expr, Literal, Op},
    influx_rows::OwnedEnd,
    time::{Buckets, TimeRange},
};
use rusqlite::{params_from_iter, Connection, ErrorCode, OpenFlags};
use serde::Serialize;
use tracing::{error, warn};

use super::StoreError;

/// Where and how much history is kept.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    /// The SQLite file.
    pub path: PathBuf,
    /// Rows older than this are deleted, ns.
    pub retention_ns: i64,
    /// The file is kept under this size; the oldest rows go first.
    pub max_bytes: u64,
}

/// One rollup row (a group of local ends in one interval).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    /// Interval end, ns.
    pub ts: i64,
    /// Labels.
    pub host: String,
    /// Protocol.
    pub proto: String,
    /// Container.
    pub container: String,
    /// Process.
    pub process: String,
    /// User.
    pub user: String,
    /// Client (false) or server (true).
    pub server: bool,
    /// Peer.
    pub peer: String,
    /// Peer is a local process.
    pub peer_local: bool,
    /// Server port (-1: absent).
    pub server_port: i32,
}

/// Sums of a rollup row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollupSums {
    /// Sent bytes.
    pub bytes_out: u64,
    /// Sent packets.
    pub packets_out: u64,
    /// Received bytes.
    pub bytes_in: u64,
    /// Received packets.
    pub packets_in: u64,
    /// Ends summed.
    pub conversations: u64,
}

/// Counters of the history file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiskStats {
    /// Rows written.
    pub rows_written: u64,
    /// Rows that could not be written (lost from the history; the live window still has them).
    pub rows_lost: u64,
    /// Write failures.
    pub write_failures: u64,
    /// Rows deleted to stay under the size cap before their retention ended.
    pub rows_evicted_size: u64,
    /// Rows deleted at the end of their retention.
    pub rows_expired: u64,
    /// Times the file was found corrupt and replaced by a fresh one.
    pub recovered_corrupt: u64,
    /// Times the file was full (size cap or disk) when writing.
    pub full_events: u64,
    /// Bytes of the file (and its WAL) now.
    pub file_bytes: u64,
    /// Whether the file is open.
    pub available: bool,
    /// The last problem.
    pub last_error: Option<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS label (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS rollup (
  ts INTEGER NOT NULL, host INTEGER NOT NULL, proto INTEGER NOT NULL, container INTEGER NOT NULL,
  process INTEGER NOT NULL, user INTEGER NOT NULL, role INTEGER NOT NULL, peer INTEGER NOT NULL,
  peer_local INTEGER NOT NULL, server_port INTEGER NOT NULL,
  bytes_out INTEGER NOT NULL, packets_out INTEGER NOT NULL, bytes_in INTEGER NOT NULL,
  packets_in INTEGER NOT NULL, conversations INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS rollup_ts ON rollup(ts);
CREATE TABLE IF NOT EXISTS health (ts INTEGER NOT NULL, name INTEGER NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS health_ts ON health(ts);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '1');
";

/// How often every health value is written even when unchanged (so a range
/// start always finds a value within this much before it).
pub const HEALTH_FULL_EVERY_NS: i64 = 600_000_000_000;

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

fn is_full(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DiskFull))
}

fn file_bytes(path: &Path) -> u64 {
    let mut n = 0;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        n += std::fs::metadata(&p).map_or(0, |m| m.len());
    }
    n
}

/// The writer's side of the history file (owned by the store's writer thread).
pub struct RollupDb {
    cfg: DiskConfig,
    conn: Option<Connection>,
    labels: HashMap<String, i64>,
    last_health: HashMap<String, (i64, f64)>,
    generation: Arc<AtomicU64>,
    corrupt_seen: Arc<AtomicBool>,
    stats: Arc<Mutex<DiskStats>>,
}

fn open_conn(path: &Path, max_bytes: u64) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(5))?;
    // auto_vacuum must be chosen before the first table exists.
    c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    let check: String = c.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("quick_check: {check}")),
        ));
    }
    c.execute_batch(SCHEMA)?;
    let page: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    // A hard bound a little above the cap: past it SQLite reports FULL.
    let pages = (max_bytes / page.max(512) as u64).max(64) * 11 / 10;
    c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    Ok(c)
}

impl RollupDb {
    /// Opens (or creates) the file; a corrupt file is moved aside. Never fails:
    /// an unusable file leaves the history unavailable (reported) and the live
    /// window working.
    pub fn open(cfg: DiskConfig) -> Self {
        let mut db = RollupDb {
            cfg,
            conn: None,
            labels: HashMap::new(),
            last_health: HashMap::new(),
            generation: Arc::new(AtomicU64::new(0)),
            corrupt_seen: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(Mutex::new(DiskStats::default())),
        };
        db.reopen();
        db
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, DiskStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_error(&self, e: String) {
        self.stats_mut().last_error = Some(e);
    }

    fn reopen(&mut self) {
        self.conn = None;
        self.labels.clear();
        self.last_health.clear();
        if let Some(dir) = self.cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                error!(path = %dir.display(), error = %e, "Cannot create the history directory; history is not kept (the live window still works).");
                self.set_error(format!("{}: {e}", dir.display()));
                self.stats_mut().available = false;
                return;
            }
        }
        match open_conn(&self.cfg.path, self.cfg.max_bytes) {
            Ok(c) => self.conn = Some(c),
            Err(e) if is_corrupt(&e) => {
                self.move_aside(&e.to_string());
                match open_conn(&self.cfg.path, self.cfg.max_bytes) {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        error!(path = %self.cfg.path.display(), error = %e, "Cannot open a fresh history file; history is not kept.");
                        self.set_error(e.to_string());
                    }
                }
            }
            Err(e) => {
                error!(path = %self.cfg.path.display(), error = %e, "Cannot open the history file; history is not kept (the live window still works).");
                self.set_error(e.to_string());
            }
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        let available = self.conn.is_some();
        let mut s = self.stats_mut();
        s.available = available;
        s.file_bytes = file_bytes(&self.cfg.path);
    }

    /// Renames a corrupt file (and its WAL) to `<file>.corrupt-<unix ns>`.
    fn move_aside(&mut self, why: &str) {
        self.conn = None;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for suffix in ["", "-wal", "-shm"] {
            let mut from = self.cfg.path.as_os_str().to_owned();
            from.push(suffix);
            let mut to = self.cfg.path.as_os_str().to_owned();
            to.push(format!(".corrupt-{stamp}{suffix}"));
            let _ = std::fs::rename(&from, &to);
        }
        error!(path = %self.cfg.path.display(), error = why, "The history file is corrupt: moved aside, starting a fresh one (its history is lost; the live window is not).");
        let mut s = self.stats_mut();
        s.recovered_corrupt += 1;
        s.last_error = Some(format!("corrupt file moved aside: {why}"));
    }

    /// The readers' handle.
    pub fn reader(&self) -> DiskReader {
        DiskReader {
            path: self.cfg.path.clone(),
            generation: Arc::clone(&self.generation),
            corrupt_seen: Arc::clone(&self.corrupt_seen),
            pool: Mutex::new(Vec::new()),
            labels: Mutex::new(HashMap::new()),
        }
    }

    /// The shared counters.
    pub fn stats_handle(&self) -> Arc<Mutex<DiskStats>> {
        Arc::clone(&self.stats)
    }

    fn label(&mut self, s: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.labels.get(s) {
            return Ok(*id);
        }
        let Some(c) = &self.conn else {
            return Err(rusqlite::Error::InvalidQuery);
        };
        c.prepare_cached("INSERT OR IGNORE INTO label(text) VALUES (?1)")?
            .execute([s])?;
        let id: i64 = c
            .prepare_cached("SELECT id FROM label WHERE text = ?1")?
            .query_row([s], |r| r.get(0))?;
        if self.labels.len() > 200_000 {
            self.labels.clear();
        }
        self.labels.insert(s.to_owned(), id);
        Ok(id)
    }

    fn try_write(&mut self, rows: &[(RollupKey, RollupSums)]) -> rusqlite::Result<()> {
        if self.conn.is_none() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        // Labels first (their own statements), then one transaction of rows.
        let mut ids = Vec::with_capacity(rows.len());
        for (k, _) in rows {
            ids.push([
                self.label(&k.host)?,
                self.label(&k.proto)?,
                self.label(&k.container)?,
                self.label(&k.process)?,
                self.label(&k.user)?,
                self.label(&k.peer)?,
            ]);
        }
        let Some(c) = self.conn.as_mut() else {
            return Err(rusqlite::Error::InvalidQuery);
        };
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO rollup VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for ((k, s), l) in rows.iter().zip(ids) {
                st.execute(rusqlite::params![
                    k.ts,
                    l[0],
                    l[1],
                    l[2],
                    l[3],
                    l[4],
                    i64::from(k.server),
                    l[5],
                    i64::from(k.peer_local),
                    k.server_port,
                    clamp(s.bytes_out),
                    clamp(s.packets_out),
                    clamp(s.bytes_in),
                    clamp(s.packets_in),
                    clamp(s.conversations),
                ])?;
            }
        }
        tx.commit()
    }

    /// Writes an interval's rollup rows; on a full file deletes the oldest
    /// rows and retries; on a corrupt file starts a fresh one and retries.
    pub fn write_rollup(&mut self, rows: &[(RollupKey, RollupSums)]) {
        self.check_if_reported_corrupt();
        if rows.is_empty() {
            return;
        }
        if self.conn.is_none() {
            self.count_lost(rows.len(), "the history file is not open");
            return;
        }
        let mut r = self.try_write(rows);
        if let Err(e) = &r {
            if is_full(e) {
                self.stats_mut().full_events += 1;
                warn!(error = %e, "The history file is full; deleting its oldest rows.");
                self.evict_oldest(0.2);
                r = self.try_write(rows);
            } else if is_corrupt(e) {
                self.move_aside(&e.to_string());
                self.reopen();
                r = self.try_write(rows);
            }
        }
        match r {
            Ok(()) => self.stats_mut().rows_written += rows.len() as u64,
            Err(e) => self.count_lost(rows.len(), &e.to_string()),
        }
    }

    fn count_lost(&self, n: usize, why: &str) {
        let mut s = self.stats_mut();
        s.rows_lost += n as u64;
        s.write_failures += 1;
        s.last_error = Some(why.to_owned());
        drop(s);
        error!(rows = n, error = why, "History rows lost: writing the history file failed (the live window still has the records).");
    }

    /// Writes the health values that changed (and all of them every 10 minutes).
    pub fn record_health(&mut self, ts: i64, values: &[(String, f64)]) {
        if self.conn.is_none() {
            return;
        }
        let mut changed = Vec::new();
        for (name, v) in values {
            let due = match self.last_health.get(name) {
                Some((t, old)) => old != v || ts - t >= HEALTH_FULL_EVERY_NS,
                None => true,
            };
            if due {
                changed.push((name.clone(), *v));
            }
        }
        let mut ids = Vec::new();
        for (n, v) in &changed {
            match self.label(n) {
                Ok(id) => ids.push((id, *v)),
                Err(e) => {
                    self.set_error(e.to_string());
                    return;
                }
            }
        }
        let Some(c) = self.conn.as_mut() else { return };
        let r = (|| -> rusqlite::Result<()> {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached("INSERT INTO health VALUES (?1, ?2, ?3)")?;
                for (id, v) in &ids {
                    st.execute(rusqlite::params![ts, id, v])?;
                }
            }
            tx.commit()
        })();
        match r {
            Ok(()) => {
                for (n, v) in changed {
                    self.last_health.insert(n, (ts, v));
                }
            }
            Err(e) => {
                if is_corrupt(&e) {
                    self.move_aside(&e.to_string());
                    self.reopen();
                }
                self.set_error(e.to_string());
            }
        }
    }

    /// A reader met a corrupt page: check the whole file, replace it if bad.
    fn check_if_reported_corrupt(&mut self) {
        if !self.corrupt_seen.swap(false, Ordering::Relaxed) {
            return;
        }
        if self.conn.is_none() {
            return;
        }
        // A fresh connection: the writer's own page cache may still hold good copies.
        let verdict: Result<String, rusqlite::Error> = Connection::open(&self.cfg.path)
            .and_then(|c| c.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)));
        match verdict {
            Ok(v) if v == "ok" => {}
            Ok(v) => {
                self.move_aside(&v);
                self.reopen();
            }
            Err(e) => {
                self.move_aside(&e.to_string());
                self.reopen();
            }
        }
    }

    fn used_bytes(c: &Connection) -> rusqlite::Result<u64> {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// Deletes the oldest `share` of the rollup and health rows.
    fn evict_oldest(&mut self, share: f64) {
        let Some(c) = &self.conn else { return };
        let r = (|| -> rusqlite::Result<u64> {
            let n: i64 = c.query_row("SELECT count(*) FROM rollup", [], |r| r.get(0))?;
            let k = ((n as f64 * share).ceil() as i64).max(1);
            let cut: Option<i64> = c
                .query_row(
                    "SELECT ts FROM rollup ORDER BY ts LIMIT 1 OFFSET ?1",
                    [k - 1],
                    |r| r.get(0),
                )
                .ok();
            let Some(cut) = cut else { return Ok(0) };
            let gone = c.execute("DELETE FROM rollup WHERE ts <= ?1", [cut])?;
            c.execute("DELETE FROM health WHERE ts <= ?1", [cut])?;
            c.execute_batch("PRAGMA incremental_vacuum")?;
            Ok(gone as u64)
        })();
        match r {
            Ok(n) => {
                self.stats_mut().rows_evicted_size += n;
                if n > 0 {
                    warn!(rows = n, "History rows deleted before their retention ended to stay under the size cap (raise web.history_max_bytes to keep more).");
                }
            }
            Err(e) => self.set_error(e.to_string()),
        }
    }

    /// Retention, size cap and WAL checkpoint; call about once a minute.
    pub fn maintain(&mut self, now_ns: i64) {
        self.check_if_reported_corrupt();
        if self.conn.is_none() {
            // Try again: the directory may have become writable.
            self.reopen();
            return;
        }
        let cutoff = now_ns.saturating_sub(self.cfg.retention_ns);
        if let Some(c) = &self.conn {
            let r = (|| -> rusqlite::Result<u64> {
                let n = c.execute("DELETE FROM rollup WHERE ts < ?1", [cutoff])?;
                c.execute("DELETE FROM health WHERE ts < ?1", [cutoff])?;
                Ok(n as u64)
            })();
            match r {
                Ok(n) => self.stats_mut().rows_expired += n,
                Err(e) => self.set_error(e.to_string()),
            }
        }
        for _ in 0..20 {
            let used = match self.conn.as_ref().map(Self::used_bytes) {
                Some(Ok(u)) => u,
                _ => break,
            };
            if used * 10 <= self.cfg.max_bytes * 9 {
                break;
            }
            self.evict_oldest(0.1);
        }
        if let Some(c) = &self.conn {
            let _ = c.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);");
        }
        self.stats_mut().file_bytes = file_bytes(&self.cfg.path);
    }
}

/// The readers' side: a small pool of connections, reopened when the writer
/// replaced the file.
pub struct DiskReader {
    path: PathBuf,
    generation: Arc<AtomicU64>,
    corrupt_seen: Arc<AtomicBool>,
    pool: Mutex<Vec<(u64, Connection)>>,
    labels: Mutex<HashMap<i64, String>>,
}

fn column(f: Field) -> Option<&'static str> {
    Some(match f {
        Field::Host => "host",
        Field::Proto => "proto",
        Field::Container => "container",
        Field::Process => "process",
        Field::User => "user",
        Field::Role => "role",
        Field::Peer => "peer",
        Field::PeerLocal => "peer_local",
        Field::ServerPort => "server_port",
        _ => return None,
    })
}

fn is_label(f: Field) -> bool {
    !matches!(f, Field::Role | Field::PeerLocal | Field::ServerPort)
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("history file: {e}"))
}

impl DiskReader {
    /// Another reader of the same file (its own connections).
    pub fn another(&self) -> DiskReader {
        DiskReader {
            path: self.path.clone(),
            generation: Arc::clone(&self.generation),
            corrupt_seen: Arc::clone(&self.corrupt_seen),
            pool: Mutex::new(Vec::new()),
            labels: Mutex::new(HashMap::new()),
        }
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let gen = self.generation.load(Ordering::Relaxed);
        let pooled = {
            let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            p.retain(|(g, _)| *g == gen);
            p.pop()
        };
        let conn = match pooled {
            Some((_, c)) => c,
            None => {
                self.labels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(db_err)?;
                c.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
                c.pragma_update(None, "query_only", true).map_err(db_err)?;
                c
            }
        };
        let r = f(&conn);
        if let Err(e) = &r {
            if is_corrupt(e) {
                // The writer checks the file and replaces it before its next write.
                self.corrupt_seen.store(true, Ordering::Relaxed);
            }
        }
        let r = r.map_err(db_err);
        if r.is_ok() {
            let mut p = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if p.len() < 4 {
                p.push((gen, conn));
            }
        }
        r
    }

    fn texts(
        &self,
        c: &Connection,
        ids: impl Iterator<Item = i64>,
    ) -> rusqlite::Result<HashMap<i64, String>> {
        let mut cache = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 500_000 {
            cache.clear();
        }
        let mut out = HashMap::new();
        let mut st = c.prepare_cached("SELECT text FROM label WHERE id = ?1")?;
        for id in ids {
            if out.contains_key(&id) {
                continue;
            }
            let t = match cache.get(&id) {
                Some(t) => t.clone(),
                None => {
                    let t: String = match st.query_row([id], |r| r.get(0)) {
                        Ok(t) => t,
                        Err(rusqlite::Error::QueryReturnedNoRows) => String::new(),
                        Err(e) => return Err(e),
                    };
                    cache.insert(id, t.clone());
                    t
                }
            };
            out.insert(id, t);
        }
        Ok(out)
    }

    /// Conditions on the top-level conjunction's positive equalities (the
    /// rest of the filter is checked on each row by the caller).
    fn pushdown(
        c: &Connection,
        filter: Option<&Expr>,
        sql: &mut String,
        params: &mut Vec<i64>,
    ) -> rusqlite::Result<bool> {
        let atoms: Vec<&flowlens_query::filter::Atom> = match filter {
            Some(Expr::Atom(a)) => vec![a],
            Some(Expr::And(v)) => v
                .iter()
                .filter_map(|e| match e {
                    Expr::Atom(a) => Some(a),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        for a in atoms {
            if a.negated || a.op != Op::Eq {
                continue;
            }
            let Some(col) = column(a.field) else { continue };
            let mut vals = Vec::new();
            for l in &a.values {
                match (a.field, l) {
                    (Field::Role, Literal::Text(t)) => vals.push(i64::from(t == "server")),
                    (Field::PeerLocal, Literal::Text(t)) => vals.push(i64::from(t == "true")),
                    (Field::ServerPort, Literal::Num(n)) => vals.push(*n as i64),
                    (f, Literal::Text(t)) if is_label(f) => {
                        let id: Option<i64> = c
                            .prepare_cached("SELECT id FROM label WHERE text = ?1")?
                            .query_row([t], |r| r.get(0))
                            .ok();
                        vals.extend(id);
                    }
                    _ => {}
                }
            }
            if vals.is_empty() {
                return Ok(false);
            }
            sql.push_str(&format!(" AND {col} IN ("));
            for (i, v) in vals.into_iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                params.push(v);
            }
            sql.push(')');
        }
        Ok(true)
    }

    /// Rollup rows summed per bucket and `group` fields.
    pub fn traffic(
        &self,
        range: TimeRange,
        buckets: &Buckets,
        group: &[Field],
        filter: Option<&Expr>,
    ) -> Result<Vec<OwnedEnd>, StoreError> {
        let cols: Vec<(Field, &'static str)> = group
            .iter()
            .filter_map(|f| column(*f).map(|c| (*f, c)))
            .collect();
        self.with_conn(|c| {
            let mut sql = String::from("SELECT (ts - ?) / ? AS b");
            for (_, col) in &cols {
                sql.push_str(&format!(", {col}"));
            }
            sql.push_str(", sum(bytes_out), sum(packets_out), sum(bytes_in), sum(packets_in), sum(conversations) FROM rollup WHERE ts >= ? AND ts < ?");
            let mut params = vec![buckets.start, buckets.step, range.from, range.to];
            if !Self::pushdown(c, filter, &mut sql, &mut params)? {
                return Ok(Vec::new());
            }
            sql.push_str(" GROUP BY b");
            for (_, col) in &cols {
                sql.push_str(&format!(", {col}"));
            }
            let mut st = c.prepare(&sql)?;
            let mut raw: Vec<(i64, Vec<i64>, [i64; 5])> = Vec::new();
            let mut rows = st.query(params_from_iter(params.iter()))?;
            while let Some(r) = rows.next()? {
                let b: i64 = r.get(0)?;
                let mut v = Vec::with_capacity(cols.len());
                for i in 0..cols.len() {
                    v.push(r.get::<_, i64>(i + 1)?);
                }
                let n = cols.len() + 1;
                let sums = [r.get(n)?, r.get(n + 1)?, r.get(n + 2)?, r.get(n + 3)?, r.get(n + 4)?];
                raw.push((b, v, sums));
            }
            let label_ids = raw.iter().flat_map(|(_, v, _)| {
                v.iter()
                    .zip(&cols)
                    .filter(|(_, (f, _))| is_label(*f))
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>()
            });
            let texts = self.texts(c, label_ids)?;
            let text = |id: &i64| texts.get(id).cloned().unwrap_or_default();
            Ok(raw
                .into_iter()
                .map(|(b, v, s)| {
                    let mut e = OwnedEnd {
                        ts: buckets.start + b * buckets.step,
                        sent: flowlens_query::fact::Counts {
                            bytes: s[0].max(0) as u64,
                            packets: s[1].max(0) as u64,
                        },
                        received: flowlens_query::fact::Counts {
                            bytes: s[2].max(0) as u64,
                            packets: s[3].max(0) as u64,
                        },
                        conversations: s[4].max(0) as u64,
                        ..OwnedEnd::default()
                    };
                    for ((f, _), id) in cols.iter().zip(&v) {
                        match f {
                            Field::Host => e.host = text(id),
                            Field::Proto => e.proto = text(id),
                            Field::Container => e.container = text(id),
                            Field::Process => e.process = text(id),
                            Field::User => e.user = text(id),
                            Field::Peer => e.peer = text(id),
                            Field::Role => {
                                e.role = Some(if *id == 1 { Role::Server } else { Role::Client })
                            }
                            Field::PeerLocal => e.peer_local = Some(*id == 1),
                            Field::ServerPort => {
                                e.server_port = u16::try_from(*id).ok()
                            }
                            _ => {}
                        }
                    }
                    e
                })
                .collect())
        })
    }

    /// Values of a rollup field in the range, with their bytes.
    pub fn values(&self, field: Field, range: TimeRange) -> Result<Vec<(String, u64)>, StoreError> {
        let Some(col) = column(field) else {
            return Ok(Vec::new());
        };
        self.with_conn(|c| {
            let sql = format!(
                "SELECT {col}, sum(bytes_out) + sum(bytes_in) FROM rollup WHERE ts >= ?1 AND ts < ?2 GROUP BY {col}"
            );
            let mut st = c.prepare(&sql)?;
            let rows: Vec<(i64, i64)> = st
                .query_map([range.from, range.to], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let texts = if is_label(field) {
                self.texts(c, rows.iter().map(|(id, _)| *id))?
            } else {
                HashMap::new()
            };
            Ok(rows
                .into_iter()
                .filter_map(|(id, b)| {
                    let v = match field {
                        Field::Role => Role::parse(if id == 1 { "server" } else { "client" })
                            .map(|r| r.name().to_owned())?,
                        Field::PeerLocal => (id == 1).to_string(),
                        Field::ServerPort if id < 0 => return None,
                        Field::ServerPort => id.to_string(),
                        _ => texts.get(&id).cloned().unwrap_or_default(),
                    };
                    Some((v, b.max(0) as u64))
                })
                .collect())
        })
    }

    /// Health values in `[from - 10 min, to)`: (ts, name, value), by time.
    pub fn health(&self, range: TimeRange) -> Result<Vec<(i64, String, f64)>, StoreError> {
        self.with_conn(|c| {
            let mut st = c.prepare(
                "SELECT h.ts, l.text, h.value FROM health h JOIN label l ON l.id = h.name WHERE h.ts >= ?1 AND h.ts < ?2 ORDER BY h.ts",
            )?;
            let rows = st
                .query_map(
                    [range.from.saturating_sub(HEALTH_FULL_EVERY_NS), range.to],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
    }
}
