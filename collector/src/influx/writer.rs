//! The writer thread: takes batches from the in-memory queue, then from the
//! spool, and sends them; retries with jittered exponential backoff; moves
//! everything to the spool while InfluxDB is away; dead-letters what the
//! server refuses for good. Owns every network wait, so the exporter never
//! waits on InfluxDB.
//!
//! Length: one state machine (memory queue -> HTTP -> retry -> spool -> dead
//! letter) whose states share the batch in hand and the counters; split into
//! files, each part would need all the others. The tests follow the code.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{atomic::Ordering::Relaxed, Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, TryRecvError};
use tracing::{debug, error, info, warn};

use super::{
    http::{gzip, ApiVersion, Client, Outcome},
    spool::{Spool, SpooledBatch},
    stats::{spool_or_count, InfluxStats},
};

/// Encoded line protocol for one request.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Lines (points) in `body`.
    pub lines: u32,
    /// Line protocol, `\n`-terminated lines.
    pub body: Vec<u8>,
}

/// Locks a mutex, also after a panic elsewhere (the data stays consistent:
/// every critical section is a single spool or stats operation).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Jittered exponential backoff: attempt `n` waits a uniformly random time in
/// `[d/2, d]` with `d = min(cap, base * 2^n)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let d = self.base.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        half + half.mul_f64(self.rng.f64())
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Logs each distinct message once, then at most every `every` with the
/// number of repeats in between.
#[derive(Debug)]
pub struct LogOnce {
    seen: HashMap<String, (Instant, u64)>,
    every: Duration,
}

impl LogOnce {
    /// A limiter re-logging a message at most every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            seen: HashMap::new(),
            every,
        }
    }

    /// `Some(repeats since last logged)` when `msg` should be logged now.
    pub fn check(&mut self, msg: &str) -> Option<u64> {
        let now = Instant::now();
        if self.seen.len() >= 256 && !self.seen.contains_key(msg) {
            self.seen.clear();
        }
        match self.seen.get_mut(msg) {
            None => {
                self.seen.insert(msg.to_owned(), (now, 0));
                Some(0)
            }
            Some((last, n)) if now.duration_since(*last) >= self.every => {
                let repeats = *n;
                *last = now;
                *n = 0;
                Some(repeats)
            }
            Some((_, n)) => {
                *n += 1;
                None
            }
        }
    }
}

/// The dead-letter file: refused batches as line protocol, each preceded by a
/// `# ...` comment line with the time, status and server message.
pub struct DeadLetter {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
}

impl DeadLetter {
    /// Appends to `path` (created when first needed), up to `max_bytes`.
    pub fn new(path: PathBuf, max_bytes: u64) -> Self {
        Self {
            path,
            max_bytes,
            file: None,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one refused batch.
    pub fn append(
        &mut self,
        status: u16,
        message: &str,
        lines: u32,
        body: &[u8],
    ) -> io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("dead-letter file not open"));
        };
        let size = f.metadata()?.len();
        if size + body.len() as u64 > self.max_bytes {
            return Err(io::Error::other(format!(
                "dead-letter file {} is at its bound ({} bytes)",
                self.path.display(),
                self.max_bytes
            )));
        }
        let when = flowlens_correlator::record::format_rfc3339(crate::clock::unix_ns());
        let one_line: String = message.replace(['\n', '\r'], " ");
        let mut out = format!(
            "# flowlens dead letter {when} status={status} lines={lines} error={one_line}\n"
        )
        .into_bytes();
        out.extend_from_slice(body);
        if !body.ends_with(b"\n") {
            out.push(b'\n');
        }
        f.write_all(&out)?;
        f.sync_data()
    }
}

/// Where the batch being sent came from.
enum Source {
    Memory(Batch),
    Spool(SpooledBatch),
}

impl Source {
    fn parts(&self) -> (u32, &[u8]) {
        match self {
            Source::Memory(b) => (b.lines, &b.body),
            Source::Spool(s) => (s.lines, &s.body),
        }
    }
}

/// The batch being sent: where from, its gzip body (kept for retries), and
/// whether `CREATE DATABASE` was tried for it.
struct InFlight {
    src: Source,
    gz: Option<Vec<u8>>,
    created_db: bool,
}

/// The writer thread's state.
pub(crate) struct Writer {
    /// HTTP client.
    pub client: Client,
    /// Batches from the sink.
    pub queue: Receiver<Batch>,
    /// The shutdown deadline, sent by `InfluxSink::close`.
    pub ctl: Receiver<Instant>,
    /// The spool, unless disabled.
    pub spool: Option<Arc<Mutex<Spool>>>,
    /// Counters.
    pub stats: Arc<InfluxStats>,
    /// Refused batches.
    pub dead: DeadLetter,
    /// Retry waits.
    pub backoff: Backoff,
    /// `CREATE DATABASE` when a write says it is missing (v1).
    pub create_db: bool,
}

/// Mutable state of one run of the thread.
#[derive(Default)]
struct RunState {
    deadline: Option<Instant>,
    /// The last attempt failed: the next send is a retry.
    retrying: bool,
    /// A queued batch the spool refused while spilling; sent next.
    held: Option<Batch>,
    down_since: Option<Instant>,
    last_report: Option<(Instant, u64)>,
}

impl Writer {
    /// The thread's body: runs until `close` (or the sink is dropped) and the
    /// bounded flush that follows.
    pub(crate) fn run(mut self) {
        let mut st = RunState::default();
        let mut log = LogOnce::new(Duration::from_secs(600));
        let mut cur: Option<InFlight> = None;
        loop {
            let f = match cur.as_mut() {
                Some(f) => f,
                None => match self.next_batch(&mut st) {
                    Some(src) => cur.insert(InFlight {
                        src,
                        gz: None,
                        created_db: false,
                    }),
                    None => break,
                },
            };
            if let Ok(d) = self.ctl.try_recv() {
                st.deadline = Some(d);
            }
            let now = Instant::now();
            let limit = self.client.target().timeout;
            let timeout = match st.deadline {
                Some(d) if now >= d => break,
                Some(d) => limit.min(d - now),
                None => limit,
            };
            if st.retrying {
                self.stats.retries.fetch_add(1, Relaxed);
            }
            let gzipped = self.client.target().gzip;
            let (lines, body) = f.src.parts();
            let outcome = if gzipped {
                let z = f.gz.get_or_insert_with(|| gzip(body));
                self.client.write(z, true, timeout)
            } else {
                self.client.write(body, false, timeout)
            };
            st.retrying = matches!(outcome, Outcome::Retry { .. });
            match outcome {
                Outcome::Written => {
                    self.stats
                        .points_written
                        .fetch_add(u64::from(lines), Relaxed);
                    self.stats.batches_written.fetch_add(1, Relaxed);
                    debug!(points = lines, "InfluxDB batch written.");
                    self.backoff.reset();
                    if let Some(since) = st.down_since.take() {
                        info!(outage = ?since.elapsed(), spool_bytes = self.stats.spool_bytes.load(Relaxed), "InfluxDB accepts writes again; replaying the spool.");
                    }
                    self.finish(cur.take());
                }
                Outcome::DatabaseMissing { .. }
                    if self.create_db
                        && !f.created_db
                        && self.client.target().api == ApiVersion::V1 =>
                {
                    f.created_db = true;
                    let db = &self.client.target().db;
                    match self.client.create_database(timeout) {
                        Ok(()) => info!(%db, "Created the InfluxDB database."),
                        Err(e) => warn!(%db, error = %e, "Creating the InfluxDB database failed."),
                    }
                }
                Outcome::Partial { message } => {
                    self.stats.partial_writes.fetch_add(1, Relaxed);
                    self.refused(&mut log, 400, &message, lines, body);
                    self.finish(cur.take());
                }
                Outcome::DatabaseMissing { message } => {
                    self.refused(&mut log, 404, &message, lines, body);
                    self.finish(cur.take());
                }
                Outcome::Rejected { status, message } => {
                    self.refused(&mut log, status, &message, lines, body);
                    self.finish(cur.take());
                }
                Outcome::Retry {
                    reason,
                    retry_after,
                } => {
                    self.outage(&mut st, &mut log, &reason);
                    if let Some(InFlight {
                        src: Source::Memory(b),
                        ..
                    }) = &cur
                    {
                        if self.spill(&mut st, b) {
                            // The spool has it now; it is sent from there.
                            cur = None;
                        }
                    }
                    let delay = self
                        .backoff
                        .next_delay()
                        .max(retry_after.unwrap_or_default());
                    if st.deadline.is_some_and(|d| Instant::now() + delay >= d) {
                        break;
                    }
                    match self.ctl.recv_timeout(delay) {
                        Ok(d) => st.deadline = Some(d),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            st.deadline.get_or_insert_with(Instant::now);
                        }
                    }
                }
            }
            self.report(&mut st);
        }
        self.shutdown(&mut st, cur);
    }

    /// The next batch: a held one, then the queue, then the spool; waits for
    /// one unless closing. `None` when closing and nothing is left.
    fn next_batch(&mut self, st: &mut RunState) -> Option<Source> {
        loop {
            if let Some(b) = st.held.take() {
                return Some(Source::Memory(b));
            }
            match self.queue.try_recv() {
                Ok(b) => return Some(Source::Memory(b)),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.closing(st);
                }
            }
            if let Some(spool) = &self.spool {
                let mut s = lock(spool);
                let b = s.peek();
                self.stats.sync_spool(&s);
                if let Some(b) = b {
                    return Some(Source::Spool(b));
                }
            }
            if st.deadline.is_some() {
                return None;
            }
            select! {
                recv(self.queue) -> b => match b {
                    Ok(b) => return Some(Source::Memory(b)),
                    Err(_) => self.closing(st),
                },
                recv(self.ctl) -> d => {
                    st.deadline = Some(d.unwrap_or_else(|_| Instant::now()));
                },
                // The sink appends to the spool directly while it is not empty.
                default(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The sink closed the queue: take the flush deadline it sent just
    /// before (now when there is none).
    fn closing(&self, st: &mut RunState) {
        if st.deadline.is_none() {
            st.deadline = Some(self.ctl.try_recv().unwrap_or_else(|_| Instant::now()));
        }
    }

    /// InfluxDB is away: moves the failed batch, then the queue, to the
    /// spool (so a crash loses nothing and memory stays small). False when
    /// `b` could not be spooled (it stays in memory and is retried).
    fn spill(&mut self, st: &mut RunState, b: &Batch) -> bool {
        let Some(spool) = self.spool.as_deref() else {
            return false;
        };
        let mut s = lock(spool);
        if s.append(b.lines, &b.body).is_err() {
            self.stats.sync_spool(&s);
            return false;
        }
        self.stats
            .points_spooled
            .fetch_add(u64::from(b.lines), Relaxed);
        while let Ok(q) = self.queue.try_recv() {
            if s.append(q.lines, &q.body).is_err() {
                st.held = Some(q);
                break;
            }
            self.stats
                .points_spooled
                .fetch_add(u64::from(q.lines), Relaxed);
        }
        self.stats.sync_spool(&s);
        true
    }

    /// A batch is done (written or dead-lettered): drop it from the spool.
    fn finish(&self, f: Option<InFlight>) {
        if let (
            Some(InFlight {
                src: Source::Spool(b),
                ..
            }),
            Some(spool),
        ) = (f, &self.spool)
        {
            let mut s = lock(spool);
            s.commit(&b);
            self.stats.sync_spool(&s);
        }
    }

    /// A batch InfluxDB will never take: dead-letter it, count it, log once.
    fn refused(&mut self, log: &mut LogOnce, status: u16, message: &str, lines: u32, body: &[u8]) {
        let n = u64::from(lines);
        let path = self.dead.path().display().to_string();
        match self.dead.append(status, message, lines, body) {
            Ok(()) => {
                self.stats.batches_dead_lettered.fetch_add(1, Relaxed);
                self.stats.points_dead_lettered.fetch_add(n, Relaxed);
            }
            Err(e) => {
                self.stats.dead_letter_overflow_points.fetch_add(n, Relaxed);
                error!(points = n, dead_letter = %path, error = %e, "A batch InfluxDB refused could not be dead-lettered; its points are lost.");
            }
        }
        let what = if status == 400 && message.contains("partial write") {
            "InfluxDB stored part of a batch (partial write); the whole batch is in the dead-letter file, not retried."
        } else {
            "InfluxDB refused a batch; it is in the dead-letter file, not retried."
        };
        self.stats.set_error(format!("HTTP {status}: {message}"));
        if let Some(repeats) = log.check(&format!("{status} {message}")) {
            error!(status, server_message = %message, points = n, dead_letter = %path, repeats_since_last_log = repeats, "{what}");
        }
    }

    fn outage(&self, st: &mut RunState, log: &mut LogOnce, reason: &str) {
        self.stats.set_error(reason.to_owned());
        let url = self.client.write_url();
        if st.down_since.is_none() {
            st.down_since = Some(Instant::now());
            log.check(reason);
            warn!(%url, error = %reason, "InfluxDB write failed; retrying with backoff, records go to the spool meanwhile.");
        } else if let Some(repeats) = log.check(reason) {
            warn!(%url, error = %reason, repeats_since_last_log = repeats, "InfluxDB still not writable.");
        }
    }

    /// Logs the counters at most once a minute while they change.
    fn report(&self, st: &mut RunState) {
        let written = self.stats.points_written.load(Relaxed);
        let due = match st.last_report {
            None => true,
            Some((at, n)) => at.elapsed() >= Duration::from_secs(60) && n != written,
        };
        if due {
            let m = self.stats.snapshot();
            info!(
                points_written = m.points_written,
                batches_written = m.batches_written,
                retries = m.retries,
                points_spooled = m.points_spooled,
                spool_bytes = m.spool_bytes,
                points_dead_lettered = m.points_dead_lettered,
                lost = m.lost_points(),
                "InfluxDB writer."
            );
            st.last_report = Some((Instant::now(), written));
        }
    }

    /// After the flush deadline: whatever is still in memory goes to the
    /// spool (or is counted), and the spool is closed (fsync).
    fn shutdown(&mut self, st: &mut RunState, cur: Option<InFlight>) {
        let spool = self.spool.as_deref();
        if let Some(InFlight {
            src: Source::Memory(b),
            ..
        }) = cur
        {
            spool_or_count(spool, &self.stats, &b);
        }
        if let Some(b) = st.held.take() {
            spool_or_count(spool, &self.stats, &b);
        }
        while let Ok(b) = self.queue.try_recv() {
            spool_or_count(spool, &self.stats, &b);
        }
        let mut pending = 0;
        if let Some(spool) = spool {
            let mut s = lock(spool);
            if let Err(e) = s.close() {
                warn!(error = %e, "Closing the spool failed.");
            }
            pending = s.pending_bytes();
            self.stats.sync_spool(&s);
        }
        let m = self.stats.snapshot();
        info!(
            points_written = m.points_written,
            batches_written = m.batches_written,
            retries = m.retries,
            spool_pending_bytes = pending,
            points_dead_lettered = m.points_dead_lettered,
            lost = m.lost_points(),
            "InfluxDB writer stopped."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for round in 0..3 {
            for n in 0..20u32 {
                let d = b.next_delay();
                let full = Duration::from_millis(100)
                    .saturating_mul(1 << n.min(20))
                    .min(Duration::from_secs(30));
                assert!(
                    d >= full / 2 && d <= full,
                    "round {round} attempt {n}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
            b.reset();
        }
        // Jitter: not every wait of the same attempt is the same.
        let waits: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
                b.next_delay();
                b.next_delay()
            })
            .collect();
        assert!(waits.len() > 1, "{waits:?}");
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn log_once_per_message_then_rate_limited() {
        let mut l = LogOnce::new(Duration::from_millis(50));
        assert_eq!(l.check("a"), Some(0));
        assert_eq!(l.check("a"), None);
        assert_eq!(l.check("b"), Some(0));
        assert_eq!(l.check("a"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.check("a"), Some(2));
    }

    #[test]
    fn dead_letters_are_line_protocol_with_a_comment() {
        let dir = std::env::temp_dir().join(format!("flowlens-dl-{}", std::process::id()));
        let path = dir.join("dl.lp");
        let mut d = DeadLetter::new(path.clone(), 200);
        d.append(400, "partial write:\nbad", 2, b"m x=1i 1\nm x=2i 2")
            .expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut lines = text.lines();
        let first = lines.next().expect("comment");
        assert!(first.starts_with("# flowlens dead letter "), "{first}");
        assert!(
            first.ends_with("status=400 lines=2 error=partial write: bad"),
            "{first}"
        );
        assert_eq!(lines.collect::<Vec<_>>(), ["m x=1i 1", "m x=2i 2"]);
        let big = vec![b'x'; 300];
        assert!(d.append(400, "x", 1, &big).is_err(), "bound");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
