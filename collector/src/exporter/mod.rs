//! The exporter: one run loop for every capture mode. It owns the
//! conversation table, the export-time lookups, the outputs, the
//! self-metrics and the schedule; a [`FlowSource`] (eBPF, AF_PACKET, pcap
//! replay) only captures. Every interval:
//!
//! ```text
//! source.collect() -> table.export_with(chunk -> sinks) -> source.forget(evicted) -> sinks (end of interval)
//!                  -> metrics + log -> sinks (self-metrics)
//! ```
//!
//! The records go to the sinks in chunks of [`EXPORT_CHUNK`] as the table
//! builds them: an export holds one chunk of records, not one record per
//! conversation.
//!
//! A policy (timeouts, limits, which losses are errors, what is logged)
//! lives here once, whatever the source.

pub mod interfaces;
pub mod names;
pub mod schedule;
pub mod source;

use crate::conntrack::NatFeed;
use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use flowlens_correlator::{
    conversation::{ConversationTable, TableConfig},
    record::clamp_i64,
};
use tracing::{debug, info};

use crate::{
    ifaces::{Iface, IfaceSelection},
    influx::stats::InfluxStats,
    metrics::SelfMetrics,
    sinks::{OutputsEnd, Sinks},
};
pub use interfaces::{ExplicitAttachError, IfaceStats, Interfaces};
pub use names::Names;
pub use schedule::Schedule;
pub use source::{AttachError, FlowSource, Now, Timeline, Waited};

/// Records handed to the sinks at a time: what an export holds of them at
/// most (~1.7 KB each), however many conversations there are.
pub const EXPORT_CHUNK: usize = 4096;

/// How a run exports.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `host` of every record.
    pub host: String,
    /// Export interval (source clock), ns.
    pub interval_ns: u64,
    /// The conversation table's limits and timeouts.
    pub table: TableConfig,
    /// The interfaces a live source captures on.
    pub ifaces: IfaceSelection,
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finished {
    /// Outputs that failed to close (each logged).
    pub close_failures: usize,
    /// The outputs ended the run (standard output closed, or nothing can
    /// be written); `None`: a stop request or the end of the input.
    pub outputs_end: Option<OutputsEnd>,
}

/// Table, lookups, outputs and metrics of one run.
pub struct Exporter {
    cfg: ExportConfig,
    table: ConversationTable,
    names: Names,
    sinks: Sinks,
    influx: Option<Arc<InfluxStats>>,
    metrics: Arc<Mutex<SelfMetrics>>,
    interfaces: Interfaces,
    last_losses: std::collections::BTreeMap<&'static str, u64>,
    last_problems: u64,
    /// Connection tracking for the NAT join (live sources).
    nat: Option<NatFeed>,
    /// Set (SIGHUP): the outputs reopen their files.
    reopen: Option<Arc<AtomicBool>>,
    /// The outputs asked to end the run.
    outputs_end: Option<OutputsEnd>,
    /// The first moment on the source's clock (live: start-up; capture: the
    /// first packet), and the previous export's: where intervals start.
    clock_start: Option<u64>,
    last_export: Option<u64>,
    /// Records per chunk handed to the sinks.
    chunk: usize,
}

impl Exporter {
    /// An exporter writing to `sinks`; `influx`: the InfluxDB sink's
    /// counters, when it is one of them.
    pub fn new(
        cfg: ExportConfig,
        names: Names,
        sinks: Sinks,
        influx: Option<Arc<InfluxStats>>,
    ) -> Self {
        Self {
            table: ConversationTable::new(cfg.table),
            interfaces: Interfaces::new(cfg.ifaces.clone()),
            cfg,
            names,
            sinks,
            influx,
            metrics: Arc::new(Mutex::new(SelfMetrics::default())),
            nat: None,
            reopen: None,
            outputs_end: None,
            clock_start: None,
            last_export: None,
            last_losses: Default::default(),
            last_problems: 0,
            chunk: EXPORT_CHUNK,
        }
    }

    /// Hands the sinks `records` records at a time (default [`EXPORT_CHUNK`];
    /// tests make intervals span several chunks).
    pub fn with_export_chunk(mut self, records: usize) -> Self {
        self.chunk = records.max(1);
        self
    }

    /// Publishes the self-metrics into `m` (shared with the web server, which
    /// starts before the exporter).
    pub fn with_metrics(mut self, m: Arc<Mutex<SelfMetrics>>) -> Self {
        self.metrics = m;
        self
    }

    /// The self-metrics, updated at every export (for readers on other
    /// threads: the web and Prometheus endpoints).
    pub fn metrics(&self) -> Arc<Mutex<SelfMetrics>> {
        Arc::clone(&self.metrics)
    }

    /// The conversation table.
    pub fn table(&self) -> &ConversationTable {
        &self.table
    }

    /// Subscribes to interface notifications and attaches `source` to the
    /// `--iface` interfaces (`explicit`), or (none named) to every selected
    /// interface. A named interface that fails is an error, and nothing
    /// stays attached.
    pub fn attach_initial<S: FlowSource>(
        &mut self,
        source: &mut S,
        explicit: &[Iface],
    ) -> Result<(), ExplicitAttachError> {
        self.interfaces
            .start(source, explicit, &mut self.names.ifaces)
    }

    /// From now on, `flag` set (by SIGHUP) makes the outputs reopen their
    /// files (log rotation); the loop sees it within ~200 ms.
    pub fn reopen_on(&mut self, flag: Arc<AtomicBool>) {
        self.reopen = Some(flag);
    }

    /// Runs the loop until `stop` is set, the source ends or the outputs
    /// end the run (standard output closed, nothing writable), then exports the
    /// last interval (nothing waits for its owner any more) and closes the
    /// source and the outputs.
    pub fn run<S: FlowSource>(&mut self, source: &mut S, stop: &AtomicBool) -> Finished {
        source.start(&mut self.table);
        if source.timeline() == Timeline::Live {
            self.nat = Some(NatFeed::start(&mut self.table));
            let monitored: BTreeSet<String> = source.monitored().into_values().collect();
            info!(
                capture = source.name(),
                interfaces = ?monitored,
                export_interval = ?std::time::Duration::from_nanos(self.cfg.interval_ns),
                "flowlens running."
            );
        }
        let mut schedule = Schedule::new(source.timeline(), self.cfg.interval_ns);
        if let Some(now) = source.now() {
            schedule.anchor(now.mono_ns);
            self.clock_start = Some(now.mono_ns);
        }
        while !stop.load(Ordering::Relaxed) && self.outputs_end.is_none() {
            let waited = source.wait(&mut self.table, schedule.next_wake());
            if self
                .reopen
                .as_ref()
                .is_some_and(|f| f.swap(false, Ordering::Relaxed))
            {
                self.sinks.reopen();
            }
            self.interfaces
                .apply_notifications(source, &mut self.names.ifaces);
            if let Some(now) = source.now() {
                self.clock_start.get_or_insert(now.mono_ns);
                let due = schedule.due(now.mono_ns);
                if due.poll {
                    self.interfaces.poll(source, &mut self.names.ifaces);
                }
                if let Some(at) = due.export_at {
                    self.export(source, at, false);
                }
            }
            if waited == Waited::End {
                break;
            }
        }
        if source.timeline() == Timeline::Live {
            info!("Stopping: flushing the last interval and detaching.");
        }
        // Ended by the outputs: the source's threads watch the same flag.
        stop.store(true, Ordering::Relaxed);
        source.stop();
        let at = source.now().map_or(0, |n| n.mono_ns);
        self.export(source, at, true);
        source.close();
        let close_failures = self.sinks.close();
        if source.timeline() == Timeline::Live {
            info!("flowlens stopped.");
        }
        Finished {
            close_failures,
            outputs_end: self.outputs_end.clone(),
        }
    }

    /// One interval. `at`: the export's time on a capture's clock (a live
    /// source reads its clock after collecting). `last`: the final one, where
    /// nothing waits for its owner.
    fn export<S: FlowSource>(&mut self, source: &mut S, at: u64, last: bool) {
        // Sources read their counters first, then every owner event committed
        // before: an owner whose socket's packets were counted is known now.
        // Translations first (and again after the read: a connection
        // confirmed meanwhile joins before its sides are reported).
        if let Some(n) = self.nat.as_mut() {
            n.feed(&mut self.table);
        }
        if source.timeline() == Timeline::Live {
            self.table.begin_read(crate::clock::monotonic_ns());
        }
        let entries = source.collect(&mut self.table);
        if let Some(n) = self.nat.as_mut() {
            n.feed(&mut self.table);
        }
        let now = match source.timeline() {
            Timeline::Live => source.now().unwrap_or(Now {
                mono_ns: at,
                unix_ns: i128::from(at),
            }),
            Timeline::Capture => Now {
                mono_ns: at,
                unix_ns: i128::from(at),
            },
        };
        source.iface_names(&mut self.names.ifaces);
        self.names.refresh();
        if let Some(start) = self.interval_start(source.timeline(), now.mono_ns) {
            self.table.set_interval_start(start);
        }
        self.last_export = Some(now.mono_ns);
        // The records stream to the sinks as they are built, a chunk at a time.
        self.sinks.begin_interval();
        let sinks = &mut self.sinks;
        let exported = self.table.export_with(
            now.mono_ns,
            now.unix_ns,
            &self.cfg.host,
            &self.names,
            last,
            self.chunk,
            &mut |chunk| sinks.write_chunk(chunk),
        );
        let evicted = self.table.take_evicted_flows();
        source.forget(&evicted);
        if evicted.len() >= 1024 {
            // A burst ended: give its memory back.
            crate::heap::trim_heap();
        }
        let written = self.sinks.end_interval();
        if let Some(end) = written.end {
            self.outputs_end.get_or_insert(end);
        }
        if let Some(snapshot) = self.update_metrics(source, entries, exported, written.lost) {
            // With the interval's time, so a replay's losses sit beside its records.
            self.sinks
                .write_self_metrics(&snapshot, &self.cfg.host, clamp_i64(now.unix_ns));
        }
    }

    /// Where the interval ending at `now` started: live, at the previous
    /// export (or start-up); on a capture's clock, at the interval boundary
    /// before `now` (or the first packet, when later).
    fn interval_start(&self, timeline: Timeline, now: u64) -> Option<u64> {
        match timeline {
            Timeline::Live => self.last_export.or(self.clock_start),
            Timeline::Capture => {
                let i = self.cfg.interval_ns.max(1);
                let boundary = now.saturating_sub(1) / i * i;
                Some(self.clock_start.map_or(boundary, |s| boundary.max(s)))
            }
        }
    }

    /// Updates the shared self-metrics and logs the interval; returns the
    /// snapshot (`None`: a reader panicked holding the lock).
    fn update_metrics<S: FlowSource>(
        &mut self,
        source: &mut S,
        entries: u64,
        exported: u64,
        lost: u64,
    ) -> Option<SelfMetrics> {
        let snapshot = {
            let Ok(mut m) = self.metrics.lock() else {
                return None;
            };
            m.intervals += 1;
            m.records_exported += exported;
            m.records_lost_sink += lost;
            m.kernel_flow_entries = entries;
            m.interfaces_monitored = source.monitored().len() as u64;
            let ifs = self.interfaces.stats();
            m.interface_attach_failures = ifs.attach_failures;
            m.interfaces_attached_later = ifs.attached_later;
            m.interface_frames_before_attach = ifs.before_attach.packets;
            m.interface_bytes_before_attach = ifs.before_attach.bytes;
            m.interface_notification_overruns = ifs.notification_overruns;
            m.table = self.table.stats();
            m.conntrack = self.nat.as_ref().and_then(NatFeed::stats);
            m.influx = self.influx.as_ref().map(|s| s.snapshot());
            source.report(&mut m);
            m.clone()
        };
        let t = &snapshot.table;
        let detail = source.log_detail(&snapshot);
        let lost_total = snapshot.lost_total();
        if source.timeline() == Timeline::Live {
            info!(
                capture = source.name(),
                records = exported,
                conversations = t.conversations_active,
                flows = entries,
                sockets = t.sockets_tracked,
                %detail,
                lost = lost_total,
                unattributed_local = t.records_unattributed_local,
                awaiting_owner = t.conversations_awaiting_owner,
                nat = t.records_nat,
                nat_unjoined = t.records_nat_unjoined,
                moved = t.conversations_moved,
                reused = t.connections_reused,
                merged = t.connections_merged,
                evicted_early = t.conversations_evicted_early,
                "Interval exported."
            );
        } else {
            debug!(
                capture = source.name(),
                records = exported,
                conversations = t.conversations_active,
                flows = entries,
                %detail,
                lost = lost_total,
                "Interval exported."
            );
        }
        snapshot.log_new_losses(&mut self.last_losses);
        snapshot.log_new_problems(&mut self.last_problems);
        Some(snapshot)
    }
}
