//! The sink's counters: live atomics shared by the sink, the writer thread
//! and the metrics, and their serializable snapshot.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Mutex,
};

use serde::Serialize;
use tracing::error;

use super::{
    cardinality::CardinalityStats,
    spool::{AppendError, Spool},
    writer::{lock, Batch},
};

/// Live counters shared by the sink, the writer thread and the metrics.
#[derive(Debug, Default)]
pub struct InfluxStats {
    pub(crate) points_written: AtomicU64,
    pub(crate) batches_written: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) batches_dead_lettered: AtomicU64,
    pub(crate) points_dead_lettered: AtomicU64,
    pub(crate) partial_writes: AtomicU64,
    pub(crate) dead_letter_overflow_points: AtomicU64,
    pub(crate) points_spooled: AtomicU64,
    pub(crate) spool_bytes: AtomicU64,
    pub(crate) spool_pending_points: AtomicU64,
    pub(crate) spool_overflow_points: AtomicU64,
    pub(crate) spool_failed_points: AtomicU64,
    pub(crate) spool_corrupt_bytes: AtomicU64,
    pub(crate) spool_corrupt_regions: AtomicU64,
    pub(crate) spool_corrupt_points: AtomicU64,
    pub(crate) queue_overflow_points: AtomicU64,
    pub(crate) points_accepted: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) cardinality: Mutex<CardinalityStats>,
}

/// A snapshot of [`InfluxStats`] (in `SelfMetrics.influx`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InfluxMetrics {
    /// Points accepted by the sink (encoded lines).
    pub points_accepted: u64,
    /// Points InfluxDB acknowledged (2xx).
    pub points_written: u64,
    /// Requests InfluxDB acknowledged.
    pub batches_written: u64,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Batches appended to the dead-letter file (refused 4xx, partial writes).
    pub batches_dead_lettered: u64,
    /// Points in those batches.
    pub points_dead_lettered: u64,
    /// 400 "partial write" answers (the valid points were stored; the batch is dead-lettered too).
    pub partial_writes: u64,
    /// Refused points not even dead-lettered (dead-letter file at its bound, or unwritable): lost.
    pub dead_letter_overflow_points: u64,
    /// Points written to the spool (cumulative).
    pub points_spooled: u64,
    /// Bytes of spool segments on disk now.
    pub spool_bytes: u64,
    /// Points in the spool not written to InfluxDB yet (now).
    pub spool_pending_points: u64,
    /// Points dropped because the spool was full or disabled: lost.
    pub spool_overflow_points: u64,
    /// Points dropped because writing the spool failed (I/O error): lost.
    pub spool_failed_points: u64,
    /// Bytes of damaged spool segments skipped at replay.
    pub spool_corrupt_bytes: u64,
    /// Damaged regions skipped at replay: lost.
    pub spool_corrupt_regions: u64,
    /// Points in damaged records whose header was readable: lost.
    pub spool_corrupt_points: u64,
    /// Points that did not fit the in-memory queue (went to the spool, or were dropped when it was full).
    pub queue_overflow_points: u64,
    /// The last failure (network, server answer, spool).
    pub last_error: Option<String>,
    /// The encoder's cardinality statistics (values folded into `other`).
    pub cardinality: CardinalityStats,
}

impl InfluxMetrics {
    /// Points that will never reach InfluxDB or the dead-letter file.
    pub fn lost_points(&self) -> u64 {
        self.spool_overflow_points
            + self.spool_failed_points
            + self.spool_corrupt_points
            + self.dead_letter_overflow_points
    }
}

impl InfluxStats {
    /// A consistent-enough snapshot (each counter is read once).
    pub fn snapshot(&self) -> InfluxMetrics {
        let g = |a: &AtomicU64| a.load(Relaxed);
        InfluxMetrics {
            points_accepted: g(&self.points_accepted),
            points_written: g(&self.points_written),
            batches_written: g(&self.batches_written),
            retries: g(&self.retries),
            batches_dead_lettered: g(&self.batches_dead_lettered),
            points_dead_lettered: g(&self.points_dead_lettered),
            partial_writes: g(&self.partial_writes),
            dead_letter_overflow_points: g(&self.dead_letter_overflow_points),
            points_spooled: g(&self.points_spooled),
            spool_bytes: g(&self.spool_bytes),
            spool_pending_points: g(&self.spool_pending_points),
            spool_overflow_points: g(&self.spool_overflow_points),
            spool_failed_points: g(&self.spool_failed_points),
            spool_corrupt_bytes: g(&self.spool_corrupt_bytes),
            spool_corrupt_regions: g(&self.spool_corrupt_regions),
            spool_corrupt_points: g(&self.spool_corrupt_points),
            queue_overflow_points: g(&self.queue_overflow_points),
            last_error: lock(&self.last_error).clone(),
            cardinality: lock(&self.cardinality).clone(),
        }
    }

    pub(crate) fn set_error(&self, e: String) {
        *lock(&self.last_error) = Some(e);
    }

    /// Copies the spool's gauges after an operation on it.
    pub(crate) fn sync_spool(&self, s: &Spool) {
        self.spool_bytes.store(s.disk_bytes(), Relaxed);
        self.spool_pending_points.store(s.pending_lines(), Relaxed);
        let c = s.corruption();
        self.spool_corrupt_bytes.store(c.bytes, Relaxed);
        self.spool_corrupt_regions.store(c.regions, Relaxed);
        self.spool_corrupt_points.store(c.lines, Relaxed);
    }
}

/// Appends `b` to the spool, or counts it as lost. Shared by the sink
/// (queue overflow) and the writer (outage, shutdown).
pub(crate) fn spool_or_count(spool: Option<&Mutex<Spool>>, stats: &InfluxStats, b: &Batch) -> bool {
    let n = u64::from(b.lines);
    let Some(spool) = spool else {
        stats.spool_overflow_points.fetch_add(n, Relaxed);
        error!(
            points = n,
            "InfluxDB batch dropped: the queue is full and the spool is disabled."
        );
        return false;
    };
    let mut s = lock(spool);
    let r = s.append(b.lines, &b.body);
    stats.sync_spool(&s);
    drop(s);
    match r {
        Ok(()) => {
            stats.points_spooled.fetch_add(n, Relaxed);
            true
        }
        Err(e @ AppendError::Full { .. }) => {
            stats.spool_overflow_points.fetch_add(n, Relaxed);
            error!(points = n, error = %e, "InfluxDB batch dropped: the spool is full (the newest batch is dropped; raise influx.spool_max).");
            stats.set_error(e.to_string());
            false
        }
        Err(e) => {
            stats.spool_failed_points.fetch_add(n, Relaxed);
            error!(points = n, error = %e, "InfluxDB batch dropped: writing the spool failed.");
            stats.set_error(e.to_string());
            false
        }
    }
}
