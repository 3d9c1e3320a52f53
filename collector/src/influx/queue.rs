//! The memory queue between the sink and the writer threads: encoded line
//! protocol in chunks as the sink cut them (one interval's lines, at most a
//! request each), taken by the writers as requests of up to a batch's lines
//! and bytes. Small intervals (a replay's, ~7 points each) go out together
//! whenever they are already waiting; a live run's interval goes out as soon
//! as a writer is free. Bounded in lines and bytes; the sink spools what
//! does not fit.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::writer::Batch;

#[derive(Default)]
struct State {
    chunks: VecDeque<Batch>,
    /// When the oldest chunk was queued.
    oldest: Option<Instant>,
    /// When the newest chunk was queued.
    newest: Option<Instant>,
    lines: u64,
    bytes: u64,
    /// Set by `close`: writers flush until then.
    deadline: Option<Instant>,
    /// Bumped by `notify`: something new to look at (the spool).
    wakeups: u64,
}

/// Chunks of line protocol waiting for a writer.
pub(crate) struct MemoryQueue {
    state: Mutex<State>,
    wake: Condvar,
    max_lines: u64,
    max_bytes: u64,
}

impl MemoryQueue {
    /// A queue holding at most `max_lines` lines and `max_bytes` bytes.
    pub(crate) fn new(max_lines: u64, max_bytes: u64) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `b`; gives it back when the queue is full or closed.
    pub(crate) fn push(&self, b: Batch) -> Result<(), Batch> {
        let mut s = self.lock();
        let (lines, bytes) = (u64::from(b.lines), b.body.len() as u64);
        // An empty queue takes any chunk (a chunk is at most one request).
        let fits = s.chunks.is_empty()
            || (s.lines + lines <= self.max_lines && s.bytes + bytes <= self.max_bytes);
        if s.deadline.is_some() || !fits {
            return Err(b);
        }
        s.lines += lines;
        s.bytes += bytes;
        let now = Instant::now();
        if s.chunks.is_empty() {
            s.oldest = Some(now);
        }
        s.newest = Some(now);
        s.chunks.push_back(b);
        drop(s);
        self.wake.notify_all();
        Ok(())
    }

    /// Puts chunks taken earlier back at the front (the spool refused them).
    pub(crate) fn put_back(&self, chunks: Vec<Batch>) {
        let mut s = self.lock();
        for b in chunks.into_iter().rev() {
            s.lines += u64::from(b.lines);
            s.bytes += b.body.len() as u64;
            s.chunks.push_front(b);
        }
        s.oldest.get_or_insert_with(Instant::now);
    }

    /// The oldest chunks as one request of at most `max_lines` lines and
    /// `max_bytes` bytes (at least one chunk).
    #[cfg(test)]
    pub(crate) fn take(&self, max_lines: u32, max_bytes: usize) -> Option<Batch> {
        Self::take_locked(&mut self.lock(), max_lines, max_bytes)
    }

    /// [`MemoryQueue::take`], but while less than a request is queued and
    /// more keeps coming (the newest chunk is younger than `quiet`), waits
    /// for it, `linger` at most: a replay encodes an interval every few
    /// microseconds, so its intervals go out together; a live run's
    /// interval comes at once and waits `quiet`.
    pub(crate) fn take_lingering(
        &self,
        max_lines: u32,
        max_bytes: usize,
        quiet: Duration,
        linger: Duration,
    ) -> Option<Batch> {
        let mut s = self.lock();
        loop {
            let oldest = s.oldest?;
            let newest = s.newest.unwrap_or(oldest);
            let full = s.lines >= u64::from(max_lines) || s.bytes >= max_bytes as u64;
            let wait = quiet
                .saturating_sub(newest.elapsed())
                .min(linger.saturating_sub(oldest.elapsed()));
            if full || wait.is_zero() || s.deadline.is_some() {
                return Self::take_locked(&mut s, max_lines, max_bytes);
            }
            s = self
                .wake
                .wait_timeout(s, wait)
                .map_or_else(|e| e.into_inner().0, |(s, _)| s);
        }
    }

    fn take_locked(s: &mut State, max_lines: u32, max_bytes: usize) -> Option<Batch> {
        let mut b = s.chunks.pop_front()?;
        while let Some(next) = s.chunks.front() {
            if b.lines.saturating_add(next.lines) > max_lines
                || b.body.len() + next.body.len() > max_bytes
            {
                break;
            }
            let Some(next) = s.chunks.pop_front() else {
                break;
            };
            b.lines += next.lines;
            b.body.extend_from_slice(&next.body);
        }
        s.lines -= u64::from(b.lines);
        s.bytes -= b.body.len() as u64;
        // What is left keeps the oldest time: it has waited already.
        if s.chunks.is_empty() {
            s.oldest = None;
        }
        Some(b)
    }

    /// Everything queued (shutdown, outage).
    pub(crate) fn drain(&self) -> Vec<Batch> {
        let mut s = self.lock();
        s.lines = 0;
        s.bytes = 0;
        s.oldest = None;
        s.chunks.drain(..).collect()
    }

    /// Lines queued.
    pub(crate) fn lines(&self) -> u64 {
        self.lock().lines
    }

    /// No more pushes; writers flush until `deadline`.
    pub(crate) fn close(&self, deadline: Instant) {
        self.lock().deadline.get_or_insert(deadline);
        self.wake.notify_all();
    }

    /// The flush deadline, once closed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }

    /// Wakes every waiting writer (the spool has new records).
    pub(crate) fn notify(&self) {
        self.lock().wakeups += 1;
        self.wake.notify_all();
    }

    /// Waits up to `timeout` for a chunk, a notification or the close.
    pub(crate) fn wait(&self, timeout: Duration) {
        let s = self.lock();
        if !s.chunks.is_empty() || s.deadline.is_some() {
            return;
        }
        let seen = s.wakeups;
        let _ = self.wake.wait_timeout_while(s, timeout, |s| {
            s.chunks.is_empty() && s.deadline.is_none() && s.wakeups == seen
        });
    }

    /// Sleeps `d` (a retry's backoff), or less when the queue is closed.
    pub(crate) fn sleep_unless_closed(&self, d: Duration) {
        let s = self.lock();
        let _ = self.wake.wait_timeout_while(s, d, |s| s.deadline.is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(lines: u32, tag: &str) -> Batch {
        Batch {
            lines,
            body: (0..lines)
                .map(|i| format!("m,t={tag} v={i}i {i}\n"))
                .collect::<String>()
                .into_bytes(),
        }
    }

    #[test]
    fn small_chunks_go_out_together_up_to_a_request() {
        let q = MemoryQueue::new(1000, 1 << 20);
        for i in 0..10 {
            q.push(chunk(7, &i.to_string())).expect("room");
        }
        let b = q.take(30, 1 << 20).expect("a request");
        assert_eq!(b.lines, 28, "four chunks of 7 fit in 30 lines");
        let text = String::from_utf8(b.body).expect("utf8");
        assert_eq!(text.lines().count(), 28);
        assert!(text.starts_with("m,t=0 ") && text.contains("m,t=3 ") && !text.contains("m,t=4 "));
        assert_eq!(q.lines(), 42);
        // A chunk bigger than a request still goes out, alone.
        let q = MemoryQueue::new(1000, 1 << 20);
        q.push(chunk(50, "big")).expect("room");
        q.push(chunk(1, "small")).expect("room");
        assert_eq!(q.take(30, 1 << 20).map(|b| b.lines), Some(50));
        assert_eq!(q.take(30, 1 << 20).map(|b| b.lines), Some(1));
        assert!(q.take(30, 1 << 20).is_none());
        // Bytes bound the request too.
        let q = MemoryQueue::new(1000, 1 << 20);
        let one = chunk(1, "x");
        let size = one.body.len();
        for _ in 0..5 {
            q.push(chunk(1, "x")).expect("room");
        }
        assert_eq!(q.take(100, 2 * size).map(|b| b.lines), Some(2));
    }

    #[test]
    fn a_writer_lingers_for_more_only_briefly() {
        let q = std::sync::Arc::new(MemoryQueue::new(1000, 1 << 20));
        q.push(chunk(7, "a")).expect("room");
        let q2 = std::sync::Arc::clone(&q);
        let feeder = std::thread::spawn(move || {
            for i in 0..5 {
                std::thread::sleep(Duration::from_millis(2));
                q2.push(chunk(7, &i.to_string())).expect("room");
            }
        });
        let t = Instant::now();
        let b = q
            .take_lingering(
                5000,
                1 << 20,
                Duration::from_millis(50),
                Duration::from_millis(200),
            )
            .expect("a request");
        feeder.join().expect("feeder");
        assert!(b.lines > 7, "what came meanwhile went along: {}", b.lines);
        assert!(t.elapsed() < Duration::from_secs(2));
        // A full request goes at once.
        let q = MemoryQueue::new(100_000, 1 << 30);
        q.push(chunk(50, "full")).expect("room");
        let t = Instant::now();
        let long = Duration::from_secs(5);
        assert_eq!(
            q.take_lingering(50, 1 << 20, long, long).map(|b| b.lines),
            Some(50)
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(q.take_lingering(50, 1 << 20, long, long).is_none(), "empty");
        // Nothing more coming: the quiet time ends the wait.
        q.push(chunk(3, "alone")).expect("room");
        let t = Instant::now();
        let b = q.take_lingering(50, 1 << 20, Duration::from_millis(20), long);
        assert_eq!(b.map(|b| b.lines), Some(3));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn the_bound_refuses_and_close_refuses() {
        let q = MemoryQueue::new(10, 1 << 20);
        q.push(chunk(8, "a")).expect("room");
        let refused = q.push(chunk(3, "b")).expect_err("11 lines > 10");
        assert_eq!(refused.lines, 3);
        q.push(chunk(2, "c")).expect("10 lines fit");
        let taken = q.take(100, 1 << 20).expect("both");
        q.put_back(vec![taken]);
        assert_eq!(q.lines(), 10);
        q.close(Instant::now());
        assert!(q.push(chunk(1, "d")).is_err(), "closed");
        assert!(q.deadline().is_some());
        assert_eq!(q.drain().len(), 1);
        assert_eq!(q.lines(), 0);
    }
}
