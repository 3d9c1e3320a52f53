//! `flowlens replay`: pcap/pcapng files through the kernel programs' counting
//! rules ([`parse`], [`flows`]) into the same correlator and sinks as `run`.
//!
//! The capture drives the clock: a packet's capture time is both the
//! monotonic and the wall-clock time the correlator sees (never going back:
//! a packet older than one already read counts at the newest time), records
//! are exported every `--export-interval` of capture time and at the end.
//! Each interface id of a file is ifindex id + 1 (hook: ingress); the files
//! are read in order as one capture (as `tcpdump -C` splits one), so
//! interface 0 of every file is the same ifindex.

pub mod flows;
pub mod parse;
pub mod reader;
mod summary;

#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod reader_tests;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use flowlens_correlator::conversation::{ConversationTable, TableConfig};
use flowlens_correlator::record::ConversationRecord;
use flowlens_correlator::types::{ContainerMeta, Lookup};

use crate::config::{parse_duration, JsonlTarget};
use crate::influx::settings::{InfluxArgs, InfluxSettings};
use crate::influx::sink::InfluxSink;
use crate::sinks::{JsonlSink, RecordSink, SummarySink};

use flows::FlowAccounts;
use parse::parse_frame;
use reader::CaptureReader;
pub use summary::ReplaySummary;

/// Flags of `flowlens replay`.
#[derive(Debug, Args, Default)]
pub struct ReplayArgs {
    /// pcap or pcapng files, read in order as one capture.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Write JSON lines to PATH (appending), or to stdout with "-".
    #[arg(long, value_name = "PATH|-")]
    pub jsonl: Option<String>,
    /// Export interval in capture time, e.g. 10s, 500ms, 1m.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub export_interval: String,
    /// Conversations idle longer than this (capture time) are evicted.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub idle_timeout: String,
    /// Host name written into every record (default: the first file's name).
    #[arg(long)]
    pub host: Option<String>,
    /// Conversations shown by the on-screen summary each interval.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// InfluxDB output (`--influx-*`, as for `flowlens run`; points keep the
    /// capture's timestamps).
    #[command(flatten)]
    pub influx: Box<InfluxArgs>,
}

/// Interface names from pcapng `if_name` options (the correlator's lookups).
#[derive(Default)]
struct CaptureLookup {
    iface_names: HashMap<u32, String>,
}

impl Lookup for CaptureLookup {
    fn user_name(&self, _uid: u32) -> Option<String> {
        None
    }
    fn iface_name(&self, ifindex: u32) -> Option<String> {
        self.iface_names.get(&ifindex).cloned()
    }
    fn container_meta(&self, _runtime: &str, _id: &str) -> Option<ContainerMeta> {
        None
    }
}

/// Capture frames in, records out: the flow table, the correlator, the sink.
pub struct Replay {
    accounts: FlowAccounts,
    table: ConversationTable,
    lookup: CaptureLookup,
    sink: Box<dyn RecordSink>,
    host: String,
    interval_ns: u64,
    next_export_ns: Option<u64>,
    clock_ns: u64,
    conversations: HashSet<(String, String, u16, String, u16)>,
    summary: ReplaySummary,
}

impl Replay {
    /// A replay writing to `sink`, exporting every `interval` of capture time.
    pub fn new(
        sink: Box<dyn RecordSink>,
        host: String,
        interval: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let config = TableConfig {
            max_conversations: 1_000_000,
            max_sockets: 0,
            idle_timeout_ns: u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            ..TableConfig::default()
        };
        Self {
            accounts: FlowAccounts::new(),
            table: ConversationTable::new(config),
            lookup: CaptureLookup::default(),
            sink,
            host,
            interval_ns: u64::try_from(interval.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            next_export_ns: None,
            clock_ns: 0,
            conversations: HashSet::new(),
            summary: ReplaySummary::default(),
        }
    }

    /// Counts one frame of link type `link` seen on `ifindex` at capture time `ts_ns`
    /// (`None`: no timestamp, counted at the newest time seen).
    pub fn frame(
        &mut self,
        link: u32,
        ifindex: u32,
        ts_ns: Option<u64>,
        orig_len: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let ts = ts_ns.unwrap_or(self.clock_ns).max(self.clock_ns);
        self.clock_ns = ts;
        let next = *self
            .next_export_ns
            .get_or_insert_with(|| boundary_after(ts, self.interval_ns));
        if ts >= next {
            self.export(next)?;
            self.next_export_ns = Some(boundary_after(ts, self.interval_ns));
        }
        let s = &mut self.summary;
        s.packets += 1;
        s.l2_bytes_captured += data.len() as u64;
        s.l2_bytes_wire += u64::from(orig_len);
        if (data.len() as u64) < u64::from(orig_len) {
            s.snaplen_cut += 1;
        }
        match parse_frame(link, data) {
            Ok(m) => {
                s.packets_counted += 1;
                s.l3_bytes += self.accounts.account(&m, orig_len, ifindex, ts);
            }
            Err(skip) => *s.skipped.entry(skip.as_str()).or_default() += 1,
        }
        Ok(())
    }

    /// Counts a frame that could not be attributed to an interface.
    pub fn skip(&mut self, reason: &'static str, len: usize, orig_len: u32) {
        let s = &mut self.summary;
        s.packets += 1;
        s.l2_bytes_captured += len as u64;
        s.l2_bytes_wire += u64::from(orig_len);
        *s.skipped.entry(reason).or_default() += 1;
    }

    fn export(&mut self, now_ns: u64) -> io::Result<()> {
        for obs in self.accounts.take_changed() {
            self.table.observe_flow(&obs);
        }
        let records = self
            .table
            .export(now_ns, i128::from(now_ns), &self.host, &self.lookup);
        for (tuple, ifindex, _) in self.table.take_evicted_flows() {
            self.accounts.forget(&tuple, ifindex);
        }
        self.note_records(&records);
        self.sink.write_interval(&records)
    }

    fn note_records(&mut self, records: &[ConversationRecord]) {
        self.summary.records += records.len() as u64;
        for r in records {
            self.conversations.insert((
                r.proto.clone(),
                r.client.addr.clone(),
                r.client.port,
                r.server.addr.clone(),
                r.server.port,
            ));
        }
    }

    /// Exports what is left and closes the sink; returns the summary.
    pub fn finish(mut self) -> io::Result<ReplaySummary> {
        self.export(self.clock_ns)?;
        self.sink.close()?;
        let acc = self.accounts.stats();
        let table = self.table.stats();
        let mut s = self.summary;
        s.conversations = self.conversations.len() as u64;
        s.truncated = acc.truncated;
        s.frag_no_first = acc.frag_no_first;
        s.frag_evicted = acc.frag_evicted;
        s.conversations_dropped = table.conversations_dropped;
        Ok(s)
    }
}

/// The first multiple of `interval` after `ts`.
fn boundary_after(ts: u64, interval: u64) -> u64 {
    (ts / interval).saturating_add(1).saturating_mul(interval)
}

/// Reads one file into `replay`; `done` is the byte count of the files before it.
fn replay_file(
    replay: &mut Replay,
    path: &Path,
    progress: &mut summary::Progress,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = CaptureReader::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
    let io_err = |e: io::Error| format!("writing records: {e}");
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                progress.file_done(reader.offset());
                return Err(format!("{}: {e}", path.display()));
            }
        };
        let (len, orig) = (frame.data.len(), frame.orig_len);
        let ifindex = frame.iface.saturating_add(1);
        match frame.link_type {
            Some(link) => replay
                .frame(link, ifindex, frame.ts_ns, orig, frame.data)
                .map_err(io_err)?,
            None => replay.skip("interface not described", len, orig),
        }
        progress.tick(replay.summary.packets, reader.offset());
        // Names are known once the interface blocks are read; cheap to refresh.
        if replay.summary.packets % 4096 == 1 {
            for (i, d) in reader.interfaces().iter().enumerate() {
                if let (Some(name), Ok(id)) = (&d.name, u32::try_from(i + 1)) {
                    replay.lookup.iface_names.insert(id, name.clone());
                }
            }
        }
    }
    for (i, d) in reader.interfaces().iter().enumerate() {
        if let (Some(name), Ok(id)) = (&d.name, u32::try_from(i + 1)) {
            replay.lookup.iface_names.insert(id, name.clone());
        }
    }
    progress.file_done(reader.offset());
    Ok(())
}

/// Every record to every sink; the first error is reported after all were tried.
struct FanOut(Vec<Box<dyn RecordSink>>);

impl RecordSink for FanOut {
    fn write_interval(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        let mut first = Ok(());
        for s in &mut self.0 {
            if let Err(e) = s.write_interval(records) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn close(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for s in &mut self.0 {
            if let Err(e) = s.close() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// `flowlens replay`: returns the process exit code.
pub fn run(args: &ReplayArgs) -> anyhow::Result<i32> {
    let interval = parse_duration(&args.export_interval)
        .map_err(|e| anyhow::anyhow!("invalid export interval: {e}"))?;
    let idle = parse_duration(&args.idle_timeout)
        .map_err(|e| anyhow::anyhow!("invalid idle timeout: {e}"))?;
    let target = args.jsonl.as_deref().map(|j| match j {
        "-" => JsonlTarget::Stdout,
        p => JsonlTarget::File(PathBuf::from(p)),
    });
    // Secrets only from the environment or files, as for `flowlens run`.
    let influx = InfluxSettings::resolve(&args.influx, None, &|k| std::env::var(k).ok())?
        .map(InfluxSink::start)
        .transpose()
        .map_err(|e| anyhow::anyhow!("InfluxDB output: {e}"))?;
    let mut sinks: Vec<Box<dyn RecordSink>> = Vec::new();
    match &target {
        Some(JsonlTarget::Stdout) => sinks.push(Box::new(JsonlSink::stdout())),
        Some(JsonlTarget::File(p)) => sinks.push(Box::new(
            JsonlSink::file(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        )),
        None if influx.is_none() => sinks.push(Box::new(SummarySink::new(args.top))),
        None => {}
    }
    if let Some(influx) = influx {
        sinks.push(Box::new(influx));
    }
    let sink: Box<dyn RecordSink> = Box::new(FanOut(sinks));
    let host = args.host.clone().unwrap_or_else(|| {
        args.files
            .first()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "replay".into())
    });
    let total: u64 = args
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = summary::Progress::new(total, io::stderr().is_terminal());
    let mut replay = Replay::new(sink, host, interval, idle);
    let mut errors = Vec::new();
    for path in &args.files {
        if let Err(e) = replay_file(&mut replay, path, &mut progress) {
            errors.push(e);
        }
    }
    progress.finish();
    let mut summary = replay.finish()?;
    summary.files = args.files.len() as u64;
    summary.errors = errors;
    eprint!("{}", summary.render());
    Ok(if summary.errors.is_empty() { 0 } else { 1 })
}
