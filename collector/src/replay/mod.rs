//! `flowlens replay`: pcap/pcapng files through the kernel programs'
//! counting rules ([`crate::capture`]) into the same exporter, correlator and
//! outputs as `run` ([`ReplaySource`] is its flow source).
//!
//! The capture drives the clock: a packet's capture time is both the
//! monotonic and the wall-clock time the correlator sees (never going back:
//! a packet older than one already read counts at the newest time), records
//! are exported every `--export-interval` of capture time and at the end.
//! Each interface id of a file is ifindex id + 1 (hook: ingress); the files
//! are read in order as one capture (as `tcpdump -C` splits one), so
//! interface 0 of every file is the same ifindex.

pub mod mapped;
pub mod reader;
mod source;
mod summary;

#[cfg(test)]
mod export_tests;
#[cfg(test)]
mod reader_tests;

use std::{
    io::{self, IsTerminal},
    sync::atomic::AtomicBool,
};

use crate::{
    config::ReplayConfig,
    exporter::{ExportConfig, Exporter, Names},
    outputs,
};
pub use source::ReplaySource;
pub use summary::{RecordTally, ReplaySummary};

/// `flowlens replay`: returns the process exit code (1 when a file could not
/// be read to its end or records could not be written).
pub fn run(cfg: &ReplayConfig) -> anyhow::Result<i32> {
    mapped::install_sigbus_report();
    let influx = outputs::start_influx(&cfg.outputs)?;
    let (outputs, influx) = outputs::open(&cfg.outputs, influx, None)?;
    let tally = RecordTally::default();
    let mut sinks = crate::sinks::Sinks::new();
    sinks.push(Box::new(tally.clone()));
    sinks.extend(outputs);
    let total: u64 = cfg
        .files
        .iter()
        .filter(|p| p.as_os_str() != crate::config::STDIN)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let progress = summary::Progress::new(total, io::stderr().is_terminal());
    let mut source = ReplaySource::new(cfg.files.clone(), progress);
    let mut exporter = Exporter::new(
        ExportConfig {
            host: cfg.host.clone(),
            interval_ns: u64::try_from(cfg.export_interval.as_nanos()).unwrap_or(u64::MAX),
            table: cfg.table_config(),
            ifaces: Default::default(),
        },
        Names::capture(),
        sinks,
        influx.clone(),
    );
    let finished = exporter.run(&mut source, &AtomicBool::new(false));
    let influx_end = influx.as_ref().map(|s| s.snapshot());
    let table = exporter.table().stats();
    let lost_sink = exporter
        .metrics()
        .lock()
        .map(|m| m.records_lost_sink)
        .unwrap_or(0);
    let mut summary = source.finish();
    summary.files = cfg.files.len() as u64;
    summary.conversations_dropped = table.conversations_dropped;
    tally.fill(&mut summary);
    if lost_sink > 0 {
        summary.errors.push(format!(
            "{lost_sink} records could not be written (see the errors above)"
        ));
    }
    if let (Some(m), Some(s)) = (&influx_end, &cfg.outputs.influx) {
        if m.lost_points() > 0 {
            summary.errors.push(format!(
                "InfluxDB: {} points lost (spool full or failing, or refused and not dead-lettered; see the errors above)",
                m.lost_points()
            ));
        }
        if let Some(msg) = crate::influx::flush::still_spooled(s, m) {
            summary.errors.push(msg);
        }
    }
    if finished.close_failures > 0 {
        summary.errors.push(format!(
            "{} output(s) failed to close (see the errors above)",
            finished.close_failures
        ));
    }
    eprint!("{}", summary.render());
    Ok(if summary.errors.is_empty() { 0 } else { 1 })
}
