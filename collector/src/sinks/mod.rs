//! Where conversation records go. A sink is anything that takes one
//! interval's records: JSON lines ([`jsonl`]), the on-screen summary
//! ([`summary`]), InfluxDB (`influx::sink`), and next the web's live
//! store.
//!
//! # Adding a sink
//! Implement [`RecordSink`] and push it into the [`Sinks`] the exporter is
//! built with (`outputs::open` for `run` and `replay`). The exporter
//! calls [`RecordSink::write_interval`] once per interval on its own thread,
//! with the records sorted by conversation; a sink that needs time (network,
//! disk) must queue and return, as the InfluxDB sink does. An error counts the
//! interval's records as lost (`records_lost_sink`, an ERROR line) and the run
//! goes on. After the records, [`RecordSink::write_self_metrics`] gets the
//! interval's self-metrics (a sink that keeps history writes them; the
//! others ignore them). [`RecordSink::close`] runs once at shutdown, after
//! the last interval.

pub mod jsonl;
pub mod summary;

use std::io;

use flowlens_correlator::record::ConversationRecord;
use tracing::error;

use crate::metrics::SelfMetrics;

pub use jsonl::JsonlSink;
pub use summary::SummarySink;

/// A destination for records.
pub trait RecordSink {
    /// Writes one interval's records.
    fn write_interval(&mut self, records: &[ConversationRecord]) -> io::Result<()>;

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
}

/// Every output of a run: each interval goes to all of them.
#[derive(Default)]
pub struct Sinks {
    sinks: Vec<Box<dyn RecordSink>>,
}

impl Sinks {
    /// No output yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an output.
    pub fn push(&mut self, sink: Box<dyn RecordSink>) {
        self.sinks.push(sink);
    }

    /// Adds every output of `other`.
    pub fn extend(&mut self, other: Sinks) {
        self.sinks.extend(other.sinks);
    }

    /// How many outputs there are.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// No output.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Writes one interval to every sink; returns the records lost (the
    /// interval's records once per sink that failed, each failure logged).
    pub fn write_interval(&mut self, records: &[ConversationRecord]) -> u64 {
        let mut lost = 0u64;
        for sink in &mut self.sinks {
            if let Err(e) = sink.write_interval(records) {
                lost += records.len() as u64;
                error!(error = %e, records = records.len(), "Writing records failed; this interval's records are lost.");
            }
        }
        lost
    }

    /// Gives every sink the self-metrics after an interval (see
    /// [`RecordSink::write_self_metrics`]).
    pub fn write_self_metrics(&mut self, metrics: &SelfMetrics, host: &str, ts_unix_ns: i64) {
        for sink in &mut self.sinks {
            sink.write_self_metrics(metrics, host, ts_unix_ns);
        }
    }

    /// Closes every sink (the InfluxDB sink flushes or spools); returns how
    /// many failed (each logged).
    pub fn close(&mut self) -> usize {
        let mut failed = 0;
        for sink in &mut self.sinks {
            if let Err(e) = sink.close() {
                failed += 1;
                error!(error = %e, "Closing an output failed.");
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
        fn write_interval(&mut self, _: &[ConversationRecord]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
        fn close(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl RecordSink for Counting {
        fn write_interval(&mut self, r: &[ConversationRecord]) -> io::Result<()> {
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
        assert_eq!(sinks.write_interval(&records), 3);
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(sinks.close(), 1);
    }
}
