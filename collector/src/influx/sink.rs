//! The InfluxDB sink: the start-up health check, and [`InfluxSink`], whose
//! `write_interval` only encodes and enqueues (the writer thread does the
//! HTTP, see `writer.rs`).

use std::{
    io,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Sender, TrySendError};
use flowlens_correlator::record::ConversationRecord;
use tracing::{error, info, warn};

pub use super::error::InfluxError;
use super::{
    encode::Encoder,
    http::{Auth, Client, Outcome, RequestError},
    self_metrics::SelfMetricsEncoder,
    settings::InfluxSettings,
    spool::Spool,
    stats::{spool_or_count, InfluxStats},
    writer::{lock, Backoff, Batch, DeadLetter, Writer},
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
    queue: Option<Sender<Batch>>,
    ctl: Sender<Instant>,
    spool: Option<Arc<Mutex<Spool>>>,
    stats: Arc<InfluxStats>,
    thread: Option<JoinHandle<()>>,
    batch_lines: usize,
    batch_bytes: usize,
    close_timeout: Duration,
}

impl InfluxSink {
    /// Opens the spool, runs the health check and starts the writer thread.
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
                info!(dir = %s.spool_dir.display(), pending_bytes = sp.pending_bytes(), "InfluxDB spool has records from before; replaying them first.");
            }
        }
        let client = Client::new(s.target.clone());
        health_check(&client, s.create_db)?;
        info!(url = %client.write_url(), spool_dir = %s.spool_dir.display(), spool_max = s.spool_max, dead_letter = %s.dead_letter.display(), "InfluxDB output enabled.");
        let (tx, rx) = bounded(s.queue_batches);
        let (ctl_tx, ctl_rx) = bounded(1);
        let writer = Writer {
            client,
            queue: rx,
            ctl: ctl_rx,
            spool: spool.clone(),
            stats: Arc::clone(&stats),
            dead: DeadLetter::new(s.dead_letter.clone(), s.dead_letter_max),
            backoff: Backoff::new(s.backoff_base, s.backoff_cap),
            create_db: s.create_db,
        };
        let thread = std::thread::Builder::new()
            .name("influx-writer".into())
            .spawn(move || writer.run())
            .map_err(InfluxError::Thread)?;
        Ok(Self {
            encoder: Encoder::new(s.schema),
            self_metrics: SelfMetricsEncoder::default(),
            buf: Vec::with_capacity(s.batch_bytes.min(4 << 20)),
            queue: Some(tx),
            ctl: ctl_tx,
            spool,
            stats,
            thread: Some(thread),
            batch_lines: s.batch_lines,
            batch_bytes: s.batch_bytes,
            close_timeout: s.close_timeout,
        })
    }

    /// The live counters (for `SelfMetrics`).
    pub fn stats(&self) -> Arc<InfluxStats> {
        Arc::clone(&self.stats)
    }

    /// Queues line protocol (whole `\n`-terminated lines), cut into batches
    /// by lines and bytes. Never waits on the network. Returns the lines.
    pub fn write_lines(&mut self, lp: &[u8]) -> io::Result<u64> {
        let Some(queue) = self.queue.clone() else {
            return Err(io::Error::other("the InfluxDB sink is closed"));
        };
        let (mut start, mut lines, mut total) = (0usize, 0u32, 0u64);
        let mut pos = 0usize;
        while pos < lp.len() {
            let end = lp[pos..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(lp.len(), |i| pos + i + 1);
            if lines > 0 && (lines as usize >= self.batch_lines || end - start > self.batch_bytes) {
                self.accept(&queue, lines, &lp[start..pos]);
                start = pos;
                lines = 0;
            }
            lines += 1;
            total += 1;
            pos = end;
        }
        if lines > 0 {
            self.accept(&queue, lines, &lp[start..]);
        }
        Ok(total)
    }

    /// Memory queue while the spool is empty (keeps the order), else the
    /// spool; counted when neither takes it.
    /// Counts `lines` points of `body` as accepted and queues them as one batch.
    fn accept(&self, queue: &Sender<Batch>, lines: u32, body: &[u8]) {
        self.stats
            .points_accepted
            .fetch_add(u64::from(lines), Relaxed);
        self.enqueue(
            queue,
            Batch {
                lines,
                body: body.to_vec(),
            },
        );
    }

    fn enqueue(&self, queue: &Sender<Batch>, b: Batch) {
        let guard = self.spool.as_ref().map(|s| lock(s));
        let b = match guard.as_ref().is_none_or(|s| s.is_empty()) {
            true => match queue.try_send(b) {
                Ok(()) => return,
                Err(TrySendError::Full(b)) => {
                    self.stats
                        .queue_overflow_points
                        .fetch_add(u64::from(b.lines), Relaxed);
                    b
                }
                Err(TrySendError::Disconnected(b)) => b,
            },
            false => b,
        };
        drop(guard);
        spool_or_count(self.spool.as_deref(), &self.stats, &b);
    }

    /// Flushes for at most the close timeout, spools the rest, stops the
    /// writer. Idempotent.
    pub fn close(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.ctl.try_send(Instant::now() + self.close_timeout);
        self.queue = None;
        if thread.join().is_err() {
            error!("The InfluxDB writer thread panicked; batches in memory are lost.");
        }
    }
}

impl RecordSink for InfluxSink {
    fn write_interval(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.encoder.encode_interval(records, &mut buf);
        *lock(&self.stats.cardinality) = self.encoder.stats();
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
