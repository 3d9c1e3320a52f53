//! Where conversation records go. A sink is anything that takes one
//! interval's records: JSON lines ([`jsonl`]), the on-screen summary
//! ([`summary`]) or, on a terminal, the live view ([`live_view`]), InfluxDB (`influx::sink`), and next the web's live
//! store.
//!
//! # Adding a sink
//! Implement [`RecordSink`] and push it into the [`Sinks`] the exporter is
//! built with (`outputs::open` for `run` and `replay`). The exporter
//! streams each interval on its own thread: [`RecordSink::begin_interval`],
//! then the records sorted by conversation in one or more chunks of at most
//! the exporter's chunk size ([`RecordSink::write_chunk`], so an export
//! never holds every record at once), then [`RecordSink::end_interval`]. A
//! sink does its per-interval work (a flush, a summary, a count) once, at
//! the end; a sink that needs time (network, disk) must queue and return,
//! as the InfluxDB sink does. An error counts the interval's records as lost
//! (`records_lost_sink`, an ERROR line), the sink gets no more of that
//! interval, and the run goes on. After the records,
//! [`RecordSink::write_self_metrics`] gets the interval's self-metrics (a
//! sink that keeps history writes them; the others ignore them).
//! [`RecordSink::close`] runs once at shutdown, after the last interval.

pub mod jsonl;
pub mod live_model;
pub mod live_view;
pub mod summary;

use std::{
    io,
    time::{Duration, Instant},
};

use flowlens_correlator::record::ConversationRecord;
use tracing::{error, info};

use crate::metrics::SelfMetrics;

pub use jsonl::JsonlSink;
pub use live_view::LiveViewSink;
pub use summary::SummarySink;

/// A destination for records.
pub trait RecordSink {
    /// An interval starts (forget what a failed one left behind).
    fn begin_interval(&mut self) {}

    /// Writes the next records of the current interval (in order; an
    /// interval may come in several chunks, or none when it has no record).
    fn write_chunk(&mut self, records: &[ConversationRecord]) -> io::Result<()>;

    /// The current interval's records are all written: its per-interval
    /// work (flush, summary, hand-over) happens here, once.
    fn end_interval(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Writes one whole interval: begin, one chunk, end.
    fn write_interval(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        self.begin_interval();
        self.write_chunk(records)?;
        self.end_interval()
    }

    /// Writes the collector's own counters after an interval (`host`: the
    /// records' host name; `ts_unix_ns`: the interval's time, that of its
    /// records). Only sinks that keep history do something with them
    /// (InfluxDB: the `flowlens_self` measurement).
    fn write_self_metrics(&mut self, _metrics: &SelfMetrics, _host: &str, _ts_unix_ns: i64) {}

    /// Called once at shutdown after the last interval: flush within a
    /// bounded time (the InfluxDB sink spools what it cannot send).
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// What this output is, for messages (e.g. `JSON lines file '/x'`).
    fn describe(&self) -> String {
        "output".into()
    }

    /// Whether it writes to standard output: there, a closed pipe means its
    /// reader went away (`flowlens run --jsonl - | head`), which ends the run.
    fn is_stdout(&self) -> bool {
        false
    }

    /// Opens its file again by its path (SIGHUP, after log rotation moved
    /// it); `Ok(false)`: nothing to reopen.
    fn reopen(&mut self) -> io::Result<bool> {
        Ok(false)
    }
}

/// Why the outputs end a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputsEnd {
    /// Standard output was closed by its reader: a normal end.
    StdoutClosed,
    /// Every output failed and none has ever written: nothing can be
    /// written (the message says what failed and why).
    NothingWritable(String),
}

/// What one interval's write came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Records lost: the interval's records once per output that failed.
    pub lost: u64,
    /// The outputs ask to end the run.
    pub end: Option<OutputsEnd>,
}

/// A failing output logs again at most this often (with the count since).
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// What to do about a write error, by its cause.
pub fn write_advice(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "the file system is full: free space, or write elsewhere",
        Some(libc::EDQUOT) => "the disk quota is exceeded: free space, or write elsewhere",
        Some(libc::EROFS) => "the file system is read-only: write elsewhere",
        Some(libc::EACCES | libc::EPERM) => "flowlens may not write there: check the permissions",
        Some(libc::EFBIG) => {
            "the file reached its size limit: rotate it (SIGHUP makes flowlens reopen it)"
        }
        Some(libc::EPIPE) => "its reader went away",
        Some(libc::EIO) => "the device reported an I/O error: check it (dmesg)",
        _ => "see the error",
    }
}

/// One output and how its writes went.
struct Output {
    sink: Box<dyn RecordSink>,
    /// It has written records at least once.
    wrote: bool,
    /// Its reader closed standard output: not written to any more.
    closed: bool,
    /// Intervals failed in a row, and when that was last logged.
    failing: u64,
    logged: Option<(Instant, String)>,
    /// The current interval failed (it gets none of the rest of it).
    error: Option<io::Error>,
}

/// Every output of a run: each interval goes to all of them.
#[derive(Default)]
pub struct Sinks {
    outputs: Vec<Output>,
    /// Records of the current interval so far.
    records: u64,
}

impl Sinks {
    /// No output yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an output.
    pub fn push(&mut self, sink: Box<dyn RecordSink>) {
        self.outputs.push(Output {
            sink,
            wrote: false,
            closed: false,
            failing: 0,
            logged: None,
            error: None,
        });
    }

    /// Adds every output of `other`.
    pub fn extend(&mut self, other: Sinks) {
        self.outputs.extend(other.outputs);
    }

    /// How many outputs there are.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// No output.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Writes one whole interval to every output (see
    /// [`Sinks::end_interval`]).
    pub fn write_interval(&mut self, records: &[ConversationRecord]) -> Written {
        self.begin_interval();
        self.write_chunk(records);
        self.end_interval()
    }

    /// Starts an interval.
    pub fn begin_interval(&mut self) {
        self.records = 0;
        for o in self.outputs.iter_mut().filter(|o| !o.closed) {
            o.error = None;
            o.sink.begin_interval();
        }
    }

    /// Writes the next records of the interval to every output that has
    /// not failed in it.
    pub fn write_chunk(&mut self, records: &[ConversationRecord]) {
        self.records += records.len() as u64;
        for o in self
            .outputs
            .iter_mut()
            .filter(|o| !o.closed && o.error.is_none())
        {
            if let Err(e) = o.sink.write_chunk(records) {
                o.error = Some(e);
            }
        }
    }

    /// Ends the interval at every output. A failure counts the interval's
    /// records as lost for that output and logs an ERROR that says what
    /// failed and what to do (a repeat at most once a minute, with the
    /// count); a closed standard output, or every output failing without
    /// ever having written, asks to end the run.
    pub fn end_interval(&mut self) -> Written {
        let records = self.records;
        let mut out = Written::default();
        let (mut tried, mut failed) = (0, 0);
        for o in self.outputs.iter_mut().filter(|o| !o.closed) {
            tried += 1;
            let e = match o.error.take().map_or_else(|| o.sink.end_interval(), Err) {
                Ok(()) => {
                    if o.failing > 0 {
                        info!(output = %o.sink.describe(), failed_intervals = o.failing, "Output writes again.");
                    }
                    o.wrote |= records > 0;
                    o.failing = 0;
                    o.logged = None;
                    continue;
                }
                Err(e) => e,
            };
            if o.sink.is_stdout() && e.kind() == io::ErrorKind::BrokenPipe {
                o.closed = true;
                info!(output = %o.sink.describe(), records_not_written = records, "Standard output was closed (its reader went away): stopping.");
                out.end = Some(OutputsEnd::StdoutClosed);
                continue;
            }
            failed += 1;
            out.lost += records;
            o.failing += 1;
            let message = e.to_string();
            let due = o
                .logged
                .as_ref()
                .is_none_or(|(at, last)| *last != message || at.elapsed() >= REPEAT_LOG);
            if due {
                error!(
                    output = %o.sink.describe(),
                    error = %e,
                    records,
                    failed_intervals = o.failing,
                    "Writing records failed; this interval's records are lost for this output ({}).",
                    write_advice(&e)
                );
                o.logged = Some((Instant::now(), message));
            }
        }
        let never_wrote = self.outputs.iter().all(|o| !o.wrote);
        if out.end.is_none() && records > 0 && tried > 0 && failed == tried && never_wrote {
            let what: Vec<String> = self
                .outputs
                .iter()
                .filter(|o| !o.closed)
                .map(|o| {
                    let (_, e) = o.logged.clone().unwrap_or((Instant::now(), String::new()));
                    format!("{}: {e}", o.sink.describe())
                })
                .collect();
            out.end = Some(OutputsEnd::NothingWritable(format!(
                "no output can be written ({})",
                what.join("; ")
            )));
        }
        self.records = 0;
        out
    }

    /// Gives every output the self-metrics after an interval (see
    /// [`RecordSink::write_self_metrics`]).
    pub fn write_self_metrics(&mut self, metrics: &SelfMetrics, host: &str, ts_unix_ns: i64) {
        for o in self.outputs.iter_mut().filter(|o| !o.closed) {
            o.sink.write_self_metrics(metrics, host, ts_unix_ns);
        }
    }

    /// Reopens every output that has a file (SIGHUP); each result logged.
    pub fn reopen(&mut self) {
        let mut any = false;
        for o in &mut self.outputs {
            match o.sink.reopen() {
                Ok(true) => {
                    any = true;
                    info!(output = %o.sink.describe(), "Reopened the output file (SIGHUP).");
                }
                Ok(false) => {}
                Err(e) => {
                    any = true;
                    error!(output = %o.sink.describe(), error = %e, "Reopening the output file failed; still writing to the file opened before ({}).", write_advice(&e));
                }
            }
        }
        if !any {
            info!("SIGHUP: no output file to reopen.");
        }
    }

    /// Closes every output (the InfluxDB sink flushes or spools); returns
    /// how many failed (each logged).
    pub fn close(&mut self) -> usize {
        let mut failed = 0;
        for o in self.outputs.iter_mut().filter(|o| !o.closed) {
            if let Err(e) = o.sink.close() {
                failed += 1;
                error!(output = %o.sink.describe(), error = %e, "Closing an output failed ({}).", write_advice(&e));
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;
    impl RecordSink for Failing {
        fn write_chunk(&mut self, _: &[ConversationRecord]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
        fn close(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl RecordSink for Counting {
        fn write_chunk(&mut self, r: &[ConversationRecord]) -> io::Result<()> {
            self.0
                .fetch_add(r.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn a_failing_sink_counts_its_records_lost_and_the_others_still_get_them() {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut sinks = Sinks::new();
        sinks.push(Box::new(Failing));
        sinks.push(Box::new(Counting(seen.clone())));
        use crate::influx::fixtures::{end, record};
        let r = record(
            end("10.0.0.1", 1, None),
            end("10.0.0.2", 2, None),
            (1, 2),
            (1, 1),
        );
        let records = vec![r; 3];
        assert_eq!(
            sinks.write_interval(&records),
            Written { lost: 3, end: None }
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(sinks.close(), 1);
    }

    #[test]
    fn nothing_writable_ends_the_run_and_a_closed_stdout_too() {
        use crate::influx::fixtures::{end, record};
        let r = record(
            end("10.0.0.1", 1, None),
            end("10.0.0.2", 2, None),
            (1, 2),
            (1, 1),
        );
        let mut sinks = Sinks::new();
        sinks.push(Box::new(Failing));
        // No records: nothing tried to write, nothing to judge.
        assert_eq!(sinks.write_interval(&[]), Written::default());
        let w = sinks.write_interval(std::slice::from_ref(&r));
        assert_eq!(w.lost, 1);
        match w.end {
            Some(OutputsEnd::NothingWritable(m)) => assert!(m.contains("disk full"), "{m}"),
            other => panic!("{other:?}"),
        }
        struct ClosedStdout;
        impl RecordSink for ClosedStdout {
            fn write_chunk(&mut self, _: &[ConversationRecord]) -> io::Result<()> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn is_stdout(&self) -> bool {
                true
            }
        }
        let mut sinks = Sinks::new();
        sinks.push(Box::new(ClosedStdout));
        let w = sinks.write_interval(std::slice::from_ref(&r));
        assert_eq!((w.lost, w.end), (0, Some(OutputsEnd::StdoutClosed)));
        // Closed: not written to again.
        assert_eq!(
            sinks.write_interval(std::slice::from_ref(&r)),
            Written::default()
        );
        assert!(write_advice(&io::Error::from_raw_os_error(libc::ENOSPC)).contains("full"));
    }
}
