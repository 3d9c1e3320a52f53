//! The writer threads: each takes a request's worth of lines from the
//! memory queue, else from the spool, and sends it; retries with jittered
//! exponential backoff; moves everything to the spool while InfluxDB is
//! away; dead-letters what the server refuses for good. A bounded number of
//! requests is in flight at once (one per thread: InfluxDB ingests in
//! parallel), in no particular order (every point carries its timestamp).
//! The writers own every network wait, so the exporter never waits on
//! InfluxDB.
//!
//! Length: one state machine (memory queue -> HTTP -> retry -> spool -> dead
//! letter) whose states share the batch in hand and the counters; split into
//! files, each part would need all the others. The tests follow the code.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use tracing::{debug, error, info, warn};

use super::{
    http::{gzip, ApiVersion, Client, Outcome},
    queue::MemoryQueue,
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

/// While less than a request is queued and more keeps coming (a replay's
/// intervals, microseconds apart), a writer waits for it up to [`LINGER`];
/// after [`QUIET`] without more (one live interval comes at once) it sends.
const QUIET: Duration = Duration::from_millis(20);
const LINGER: Duration = Duration::from_millis(250);

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

/// How sending one batch ended.
enum Sent {
    /// Written, or refused for good (dead-lettered): take the next one.
    Done,
    /// InfluxDB is away and the batch is in the spool now.
    Spooled,
    /// The flush deadline passed with the batch in hand.
    Deadline(InFlight),
}

/// What the writer threads share.
pub(crate) struct Writers {
    /// HTTP client (a keep-alive connection per thread at most).
    pub client: Client,
    /// Chunks from the sink.
    pub queue: MemoryQueue,
    /// The spool, unless disabled.
    pub spool: Option<Arc<Mutex<Spool>>>,
    /// Counters.
    pub stats: Arc<InfluxStats>,
    /// Refused batches.
    pub dead: Mutex<DeadLetter>,
    /// Retry waits, shared: a failure makes every writer wait.
    backoff: Mutex<Backoff>,
    /// No request before this (after a retryable failure).
    retry_at: Mutex<Option<Instant>>,
    /// While InfluxDB fails, one writer at a time sends (a probe).
    probing: AtomicBool,
    /// `CREATE DATABASE` when a write says it is missing (v1).
    pub create_db: bool,
    /// Lines and bytes per request.
    pub batch: (u32, usize),
    /// Writer threads still running.
    pub running: AtomicUsize,
    log: Mutex<LogOnce>,
    /// Since when InfluxDB fails (None: it answers).
    down_since: Mutex<Option<Instant>>,
    /// `down_since` is set: the sink spools directly.
    down: AtomicBool,
    last_report: Mutex<Option<(Instant, u64)>>,
}

impl Writers {
    /// The state `threads` writer threads share.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: Client,
        queue: MemoryQueue,
        spool: Option<Arc<Mutex<Spool>>>,
        stats: Arc<InfluxStats>,
        dead: DeadLetter,
        backoff: (Duration, Duration),
        create_db: bool,
        batch: (u32, usize),
        threads: usize,
    ) -> Self {
        Self {
            client,
            queue,
            spool,
            stats,
            dead: Mutex::new(dead),
            backoff: Mutex::new(Backoff::new(backoff.0, backoff.1)),
            retry_at: Mutex::new(None),
            probing: AtomicBool::new(false),
            create_db,
            batch,
            running: AtomicUsize::new(threads),
            log: Mutex::new(LogOnce::new(Duration::from_secs(600))),
            down_since: Mutex::new(None),
            down: AtomicBool::new(false),
            last_report: Mutex::new(None),
        }
    }

    /// InfluxDB failed the last attempt and no write succeeded since.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    /// One writer thread: runs until the queue is closed and its flush
    /// deadline passes or nothing is left; the last one out spools what
    /// is still in memory and closes the spool.
    pub(crate) fn run(&self) {
        let mut held = None;
        while let Some(src) = self.next_batch() {
            let f = InFlight {
                src,
                gz: None,
                created_db: false,
            };
            match self.send(f) {
                Sent::Done | Sent::Spooled => {}
                Sent::Deadline(f) => {
                    held = Some(f);
                    break;
                }
            }
            self.report();
        }
        if let Some(InFlight {
            src: Source::Memory(b),
            ..
        }) = held
        {
            spool_or_count(self.spool.as_deref(), &self.stats, &b);
        }
        // A spooled batch in hand stays in the spool: sent after a restart.
        if self.running.fetch_sub(1, Relaxed) == 1 {
            self.shutdown();
        }
    }

    /// The next batch: the memory queue, then the spool; waits for one
    /// unless closing. `None` when closing and nothing is left, or the
    /// deadline passed.
    fn next_batch(&self) -> Option<Source> {
        let (lines, bytes) = self.batch;
        loop {
            if self.queue.deadline().is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            if let Some(b) = self.queue.take_lingering(lines, bytes, QUIET, LINGER) {
                return Some(Source::Memory(b));
            }
            if let Some(spool) = &self.spool {
                let mut s = lock(spool);
                let b = s.take(lines, bytes);
                self.stats.sync_spool(&s);
                if let Some(b) = b {
                    return Some(Source::Spool(b));
                }
            }
            if self.queue.deadline().is_some() {
                return None;
            }
            // The sink notifies when it spools; poll anyway.
            self.queue.wait(Duration::from_secs(1));
        }
    }

    /// Waits until this writer may send: after a retryable failure until
    /// the backoff (or `Retry-After`) passes, and while InfluxDB fails until
    /// no other writer is probing it. True with the probe taken (release it
    /// after the attempt); `None` when the flush deadline passed.
    fn wait_turn(&self) -> Option<bool> {
        loop {
            let now = Instant::now();
            let deadline = self.queue.deadline();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let at = *lock(&self.retry_at);
            if let Some(at) = at.filter(|at| now < *at) {
                if deadline.is_some_and(|d| at >= d) {
                    return None;
                }
                self.pause(at - now);
                continue;
            }
            if !self.is_down() {
                return Some(false);
            }
            if self
                .probing
                .compare_exchange(false, true, Relaxed, Relaxed)
                .is_ok()
            {
                return Some(true);
            }
            self.pause(Duration::from_millis(20));
        }
    }

    /// Sleeps `d`; before the close, the close wakes it.
    fn pause(&self, d: Duration) {
        match self.queue.deadline() {
            Some(deadline) => {
                std::thread::sleep(d.min(deadline.saturating_duration_since(Instant::now())))
            }
            None => self.queue.sleep_unless_closed(d),
        }
    }

    /// Sends one batch until it is written, refused, spooled (InfluxDB
    /// away) or the flush deadline passes.
    fn send(&self, mut f: InFlight) -> Sent {
        loop {
            let Some(probe) = self.wait_turn() else {
                return Sent::Deadline(f);
            };
            let now = Instant::now();
            let limit = self.client.target().timeout;
            let timeout = match self.queue.deadline() {
                Some(d) => limit.min(d.saturating_duration_since(now)),
                None => limit,
            };
            if probe {
                // InfluxDB failed before: this request is a retry.
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
            let failed = matches!(outcome, Outcome::Retry { .. });
            if failed {
                // Before the probe is released: the others see InfluxDB down.
                if let Outcome::Retry {
                    reason,
                    retry_after,
                } = &outcome
                {
                    self.outage(reason);
                    let delay = lock(&self.backoff)
                        .next_delay()
                        .max(retry_after.unwrap_or_default());
                    *lock(&self.retry_at) = Some(Instant::now() + delay);
                }
            }
            if probe {
                self.probing.store(false, Relaxed);
            }
            match outcome {
                Outcome::Written => {
                    self.stats
                        .points_written
                        .fetch_add(u64::from(lines), Relaxed);
                    self.stats.batches_written.fetch_add(1, Relaxed);
                    debug!(points = lines, "InfluxDB batch written.");
                    self.up_again();
                    self.finish(f.src);
                    return Sent::Done;
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
                    self.refused(400, &message, lines, body);
                    self.finish(f.src);
                    return Sent::Done;
                }
                Outcome::DatabaseMissing { message } => {
                    self.refused(404, &message, lines, body);
                    self.finish(f.src);
                    return Sent::Done;
                }
                Outcome::Rejected { status, message } => {
                    self.refused(status, &message, lines, body);
                    self.finish(f.src);
                    return Sent::Done;
                }
                Outcome::Retry { .. } => {
                    if let Source::Memory(b) = &f.src {
                        if self.spill(b) {
                            // The spool has it now; a writer sends it from
                            // there once the backoff passed.
                            return Sent::Spooled;
                        }
                    }
                    // The next attempt waits for the backoff (wait_turn).
                }
            }
        }
    }

    /// InfluxDB is away: moves the failed batch, then the memory queue, to
    /// the spool (so a crash loses nothing and memory stays small). False
    /// when `b` could not be spooled (it stays in memory and is retried).
    fn spill(&self, b: &Batch) -> bool {
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
        let mut queued = self.queue.drain().into_iter();
        for q in queued.by_ref() {
            if s.append(q.lines, &q.body).is_err() {
                let mut back = vec![q];
                back.extend(queued);
                self.queue.put_back(back);
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
    fn finish(&self, src: Source) {
        if let (Source::Spool(b), Some(spool)) = (src, &self.spool) {
            let mut s = lock(spool);
            s.commit(&b);
            self.stats.sync_spool(&s);
        }
    }

    /// A batch InfluxDB will never take: dead-letter it, count it, log once.
    fn refused(&self, status: u16, message: &str, lines: u32, body: &[u8]) {
        let n = u64::from(lines);
        let mut dead = lock(&self.dead);
        let path = dead.path().display().to_string();
        match dead.append(status, message, lines, body) {
            Ok(()) => {
                self.stats.batches_dead_lettered.fetch_add(1, Relaxed);
                self.stats.points_dead_lettered.fetch_add(n, Relaxed);
            }
            Err(e) => {
                self.stats.dead_letter_overflow_points.fetch_add(n, Relaxed);
                error!(points = n, dead_letter = %path, error = %e, "A batch InfluxDB refused could not be dead-lettered; its points are lost.");
            }
        }
        drop(dead);
        let what = if status == 400 && message.contains("partial write") {
            "InfluxDB stored part of a batch (partial write); the whole batch is in the dead-letter file, not retried."
        } else {
            "InfluxDB refused a batch; it is in the dead-letter file, not retried."
        };
        self.stats.set_error(format!("HTTP {status}: {message}"));
        if let Some(repeats) = lock(&self.log).check(&format!("{status} {message}")) {
            error!(status, server_message = %message, points = n, dead_letter = %path, repeats_since_last_log = repeats, "{what}");
        }
    }

    fn outage(&self, reason: &str) {
        self.stats.set_error(reason.to_owned());
        let url = self.client.write_url();
        let mut down = lock(&self.down_since);
        let mut log = lock(&self.log);
        if down.is_none() {
            *down = Some(Instant::now());
            self.down.store(true, Relaxed);
            log.check(reason);
            warn!(%url, error = %reason, "InfluxDB write failed; retrying with backoff, records go to the spool meanwhile.");
        } else if let Some(repeats) = log.check(reason) {
            warn!(%url, error = %reason, repeats_since_last_log = repeats, "InfluxDB still not writable.");
        }
    }

    fn up_again(&self) {
        if !self.down.load(Relaxed) {
            return;
        }
        lock(&self.backoff).reset();
        *lock(&self.retry_at) = None;
        if let Some(since) = lock(&self.down_since).take() {
            self.down.store(false, Relaxed);
            info!(outage = ?since.elapsed(), spool_bytes = self.stats.spool_bytes.load(Relaxed), "InfluxDB accepts writes again; replaying the spool.");
        }
    }

    /// Logs the counters at most once a minute while they change.
    fn report(&self) {
        let written = self.stats.points_written.load(Relaxed);
        let mut last = lock(&self.last_report);
        let due = match *last {
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
            *last = Some((Instant::now(), written));
        }
    }

    /// After the last writer stopped: whatever is still in memory goes to
    /// the spool (or is counted), and the spool is closed (fsync).
    fn shutdown(&self) {
        let spool = self.spool.as_deref();
        for b in self.queue.drain() {
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
            spool_pending_points = m.spool_pending_points,
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
