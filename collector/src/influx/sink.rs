//! The InfluxDB sink: the start-up health check, and [`InfluxSink`], whose
//! `write_interval` only encodes and enqueues (the writer threads do the
//! HTTP, see `writer.rs`).

use std::{
    io,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowlens_correlator::record::ConversationRecord;
use tracing::{error, info, warn};

pub use super::error::InfluxError;
use super::{
    encode::Encoder,
    http::{Auth, Client, Outcome, RequestError},
    queue::MemoryQueue,
    self_metrics::SelfMetricsEncoder,
    settings::InfluxSettings,
    spool::Spool,
    stats::{spool_or_count, InfluxStats},
    writer::{lock, Batch, DeadLetter, Writers},
};
use crate::{metrics::SelfMetrics, sinks::RecordSink};

/// Start-up health check: reachability, credentials, database. Config
/// errors (credentials, database, retention policy) fail; an unreachable
/// server is logged and the spool takes the records until it answers.
fn health_check(client: &Client, create_db: bool) -> Result<(), InfluxError> {
    let t = client.target();
    let url = t.url.to_string();
    let timeout = t.timeout.min(Duration::from_secs(5));
    match client.ping(timeout) {
        Ok(()) => {}
        // A 4xx to GET /ping (InfluxDB 1.x-3.x answer it, without
        // credentials): another HTTP server answers at this URL.
        Err(RequestError::Status { status, message }) if is_not_influx(status, &message) => {
            return Err(InfluxError::NotInflux {
                url,
                answer: format!("GET /ping answered HTTP {status} ({message})"),
            });
        }
        Err(e) => {
            error!(%url, error = %e, "InfluxDB is not reachable (down, or nothing listens at this URL); records are spooled until it answers.");
            return Ok(());
        }
    }
    let mut created = false;
    loop {
        match client.probe(timeout) {
            Outcome::Written => {
                info!(%url, db = %t.db, "InfluxDB reachable; database and credentials OK.");
                return Ok(());
            }
            Outcome::Rejected {
                status: status @ (401 | 403),
                message,
            } => {
                let hint = match t.auth {
                    Auth::None => "no credentials are configured: set INFLUX_TOKEN(_FILE), or INFLUX_USERNAME and INFLUX_PASSWORD(_FILE)",
                    _ => "check the credentials (INFLUX_TOKEN / INFLUX_USERNAME / INFLUX_PASSWORD) and their write permission on the database",
                };
                return Err(InfluxError::AuthRefused {
                    url,
                    status,
                    message,
                    hint,
                });
            }
            Outcome::DatabaseMissing { .. } if create_db && !created => {
                client
                    .create_database(timeout)
                    .map_err(|source| InfluxError::CreateDatabase {
                        db: t.db.clone(),
                        source,
                    })?;
                info!(%url, db = %t.db, "Created the InfluxDB database.");
                created = true;
            }
            Outcome::Rejected { status, message } if is_not_influx(status, &message) => {
                return Err(InfluxError::NotInflux {
                    url,
                    answer: format!("POST of an empty write answered HTTP {status} ({message})"),
                });
            }
            Outcome::DatabaseMissing { message }
            | Outcome::Rejected {
                status: 404,
                message,
            } => {
                return Err(InfluxError::DatabaseMissing {
                    url,
                    db: t.db.clone(),
                    message,
                });
            }
            Outcome::Retry { reason, .. } if reason.contains("retention policy not found") => {
                return Err(InfluxError::RetentionPolicyMissing {
                    url,
                    db: t.db.clone(),
                    rp: t.rp.clone().unwrap_or_default(),
                    message: reason,
                });
            }
            Outcome::Retry { reason, .. } => {
                error!(%url, error = %reason, "InfluxDB is not writable; records are spooled until it is.");
                return Ok(());
            }
            Outcome::Partial { message } | Outcome::Rejected { message, .. } => {
                warn!(%url, answer = %message, "InfluxDB answered the start-up write probe unexpectedly; going on.");
                return Ok(());
            }
        }
    }
}

/// Whether an answer says the server is not InfluxDB: an HTML page, or a
/// 4xx InfluxDB never gives to a ping or an empty write (404 without a
/// database/bucket named, 405 method not allowed); credentials refused
/// (401/403), 408 and 429 are InfluxDB's own.
fn is_not_influx(status: u16, message: &str) -> bool {
    let html = message.starts_with("an HTML page");
    match status {
        401 | 403 | 408 | 429 => false,
        404 => html || !(message.contains("database") || message.contains("bucket")),
        405 => true,
        400..=499 => html,
        _ => false,
    }
}

#[cfg(test)]
#[test]
fn answers_of_other_servers_are_told_apart() {
    assert!(is_not_influx(404, "an HTML page: Error response"));
    assert!(is_not_influx(404, "404 page not found"));
    assert!(is_not_influx(405, "Method Not Allowed"));
    assert!(is_not_influx(400, "an HTML page: Bad Request"));
    assert!(!is_not_influx(404, "database not found: \"x\""));
    assert!(!is_not_influx(404, "bucket \"x\" not found"));
    assert!(!is_not_influx(401, "an HTML page: Unauthorized"));
    assert!(!is_not_influx(400, "partial write"));
    assert!(!is_not_influx(503, "an HTML page: Service Unavailable"));
}

/// Writes records to InfluxDB without ever waiting on the network.
pub struct InfluxSink {
    encoder: Encoder,
    self_metrics: SelfMetricsEncoder,
    buf: Vec<u8>,
    writers: Arc<Writers>,
    threads: Vec<JoinHandle<()>>,
    closed: bool,
    batch_lines: usize,
    batch_bytes: usize,
    close_timeout: Duration,
    drain_progress: bool,
    spool_dir: std::path::PathBuf,
}

impl InfluxSink {
    /// Opens the spool, runs the health check and starts the writer threads.
    pub fn start(s: InfluxSettings) -> Result<Self, InfluxError> {
        let spool = if s.spool_max > 0 {
            Some(Arc::new(Mutex::new(Spool::open(
                &s.spool_dir,
                s.spool_max,
            )?)))
        } else {
            None
        };
        let stats = Arc::new(InfluxStats::default());
        if let Some(sp) = &spool {
            let sp = lock(sp);
            stats.sync_spool(&sp);
            if !sp.is_empty() {
                info!(dir = %s.spool_dir.display(), pending_bytes = sp.pending_bytes(), pending_points = sp.pending_lines(), "InfluxDB spool has records from before; replaying them first.");
            }
        }
        let threads = s.requests_in_flight.max(1);
        let client = Client::with_connections(s.target.clone(), threads);
        health_check(&client, s.create_db)?;
        info!(url = %client.write_url(), spool_dir = %s.spool_dir.display(), spool_max = s.spool_max, dead_letter = %s.dead_letter.display(), requests_in_flight = threads, "InfluxDB output enabled.");
        let queued = s.queue_batches.max(1) as u64;
        let writers = Arc::new(Writers::new(
            client,
            MemoryQueue::new(
                queued.saturating_mul(s.batch_lines as u64),
                queued.saturating_mul(s.batch_bytes as u64),
            ),
            spool,
            Arc::clone(&stats),
            DeadLetter::new(s.dead_letter.clone(), s.dead_letter_max),
            (s.backoff_base, s.backoff_cap),
            s.create_db,
            (
                u32::try_from(s.batch_lines).unwrap_or(u32::MAX),
                s.batch_bytes,
            ),
            threads,
        ));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let w = Arc::clone(&writers);
            match std::thread::Builder::new()
                .name(format!("influx-writer-{i}"))
                .spawn(move || w.run())
            {
                Ok(h) => handles.push(h),
                Err(e) if handles.is_empty() => return Err(InfluxError::Thread(e)),
                Err(e) => {
                    // Fewer requests in flight, still correct.
                    warn!(error = %e, started = handles.len(), "Cannot start every InfluxDB writer thread.");
                    writers.running.fetch_sub(threads - handles.len(), Relaxed);
                    break;
                }
            }
        }
        Ok(Self {
            encoder: Encoder::new(s.schema),
            self_metrics: SelfMetricsEncoder::default(),
            buf: Vec::with_capacity(s.batch_bytes.min(4 << 20)),
            writers,
            threads: handles,
            closed: false,
            batch_lines: s.batch_lines,
            batch_bytes: s.batch_bytes,
            close_timeout: s.close_timeout,
            drain_progress: s.drain_progress,
            spool_dir: s.spool_dir,
        })
    }

    /// The live counters (for `SelfMetrics`).
    pub fn stats(&self) -> Arc<InfluxStats> {
        Arc::clone(&self.writers.stats)
    }

    /// Queues line protocol (whole `\n`-terminated lines), cut into chunks
    /// of at most a request's lines and bytes (the writers join small ones).
    /// Never waits on the network. Returns the lines.
    pub fn write_lines(&mut self, lp: &[u8]) -> io::Result<u64> {
        if self.closed {
            return Err(io::Error::other("the InfluxDB sink is closed"));
        }
        let (mut start, mut lines, mut total) = (0usize, 0u32, 0u64);
        let mut pos = 0usize;
        while pos < lp.len() {
            let end = lp[pos..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(lp.len(), |i| pos + i + 1);
            if lines > 0 && (lines as usize >= self.batch_lines || end - start > self.batch_bytes) {
                self.accept(lines, &lp[start..pos]);
                start = pos;
                lines = 0;
            }
            lines += 1;
            total += 1;
            pos = end;
        }
        if lines > 0 {
            self.accept(lines, &lp[start..]);
        }
        Ok(total)
    }

    /// Counts `lines` points of `body` as accepted and queues them: the
    /// memory queue, or the spool while InfluxDB is away (so a crash loses
    /// nothing) or when the queue is full; counted when neither takes them.
    fn accept(&self, lines: u32, body: &[u8]) {
        let w = &self.writers;
        w.stats.points_accepted.fetch_add(u64::from(lines), Relaxed);
        let b = Batch {
            lines,
            body: body.to_vec(),
        };
        let b = if w.is_down() && w.spool.is_some() {
            b
        } else {
            match w.queue.push(b) {
                Ok(()) => return,
                Err(b) => {
                    w.stats
                        .queue_overflow_points
                        .fetch_add(u64::from(b.lines), Relaxed);
                    b
                }
            }
        };
        spool_or_count(w.spool.as_deref(), &w.stats, &b);
        w.queue.notify();
    }

    /// Points not in InfluxDB yet: in memory, and in the spool.
    pub fn pending_points(&self) -> u64 {
        let spooled = self
            .writers
            .spool
            .as_deref()
            .map_or(0, |s| lock(s).pending_lines());
        self.writers.queue.lines() + spooled
    }

    /// Flushes for at most the close timeout (with progress on stderr when
    /// configured: a replay's drain), spools the rest, stops the writers.
    /// Idempotent.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let started = Instant::now();
        self.writers.queue.close(started + self.close_timeout);
        if self.drain_progress {
            let mut progress = DrainProgress::new(self.pending_points(), self.close_timeout);
            while !self.threads.iter().all(JoinHandle::is_finished) {
                std::thread::sleep(Duration::from_millis(100));
                progress.show(&self.writers.stats.snapshot(), self.pending_points());
            }
            progress.finish();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                error!("An InfluxDB writer thread panicked; its batch in memory is lost.");
            }
        }
        let pending = self.pending_points();
        if self.drain_progress && pending > 0 {
            warn!(points = pending, spool_dir = %self.spool_dir.display(), waited = ?started.elapsed(), "InfluxDB did not take every point in time; the rest is in the spool.");
        }
    }
}

/// Progress of the flush at the end of a replay: a bar on a terminal, a
/// log line every 5 s otherwise.
struct DrainProgress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    last_log: Instant,
    timeout: Duration,
}

impl DrainProgress {
    fn new(pending: u64, timeout: Duration) -> Self {
        use std::io::IsTerminal;
        let bar = (pending > 0 && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(pending),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "InfluxDB {bar:30} {pos}/{len} points left to send {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        if pending > 0 {
            info!(points = pending, timeout = ?timeout, "Sending the rest to InfluxDB.");
        }
        let now = Instant::now();
        Self {
            bar,
            start: now,
            last_log: now,
            timeout,
        }
    }

    fn show(&mut self, m: &super::stats::InfluxMetrics, pending: u64) {
        let left = self.timeout.saturating_sub(self.start.elapsed());
        let error = m.last_error.as_deref().unwrap_or("");
        if let Some(bar) = &self.bar {
            bar.set_position(pending);
            bar.set_message(format!("({}s left) {error}", left.as_secs()));
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            info!(points_left = pending, points_written = m.points_written, time_left = ?left, last_error = %error, "Sending the rest to InfluxDB.");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl RecordSink for InfluxSink {
    fn begin_interval(&mut self) {
        self.encoder.begin_interval();
    }

    /// The interval's cardinality caps keep the heaviest tag values of the
    /// whole interval and its rollups sum over all of it: the encoder keeps
    /// what the points need (not the records) until the interval's end.
    fn write_chunk(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::other("the InfluxDB sink is closed"));
        }
        self.encoder.add(records);
        Ok(())
    }

    fn end_interval(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.encoder.finish_interval(&mut buf);
        *lock(&self.writers.stats.cardinality) = self.encoder.stats();
        let r = self.write_lines(&buf);
        self.buf = buf;
        r.map(|_| ())
    }

    fn write_self_metrics(&mut self, metrics: &SelfMetrics, host: &str, ts: i64) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.self_metrics
            .encode(&metrics.all_losses(), host, ts, &mut buf);
        if let Err(error) = self.write_lines(&buf) {
            warn!(%error, "The collector's loss counters were not queued for InfluxDB.");
        }
        self.buf = buf;
    }

    fn close(&mut self) -> io::Result<()> {
        InfluxSink::close(self);
        Ok(())
    }

    fn describe(&self) -> String {
        "InfluxDB".into()
    }
}

impl Drop for InfluxSink {
    fn drop(&mut self) {
        self.close();
    }
}
