//! What a replay read, skipped and counted; and its progress line.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowlens_correlator::record::ConversationRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sinks::RecordSink;

/// Totals of one replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Files given.
    pub files: u64,
    /// Packet records read.
    pub packets: u64,
    /// Packets counted into a flow.
    pub packets_counted: u64,
    /// Frame bytes as captured.
    pub l2_bytes_captured: u64,
    /// Frame bytes on the wire (original lengths).
    pub l2_bytes_wire: u64,
    /// L3 bytes counted (the records' unit).
    pub l3_bytes: u64,
    /// Records written.
    pub records: u64,
    /// Distinct conversations (protocol, client, server) in the records.
    pub conversations: u64,
    /// Packets without a flow, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Packets counted as far as parsed (header cut after the addresses, or an IP
    /// length beyond the frame).
    pub truncated: u64,
    /// Later fragments counted with ports 0 (first fragment not seen before them).
    pub frag_no_first: u64,
    /// Fragment map entries pushed out by newer datagrams.
    pub frag_evicted: u64,
    /// Packets captured shorter than they were (snap length).
    pub snaplen_cut: u64,
    /// Flow entries refused by the correlator (conversation limit).
    pub conversations_dropped: u64,
    /// Files that could not be read to their end, with the reason and offset.
    pub errors: Vec<String>,
}

impl ReplaySummary {
    /// The summary printed at the end of a replay.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let skipped: u64 = self.skipped.values().sum();
        let _ = writeln!(
            s,
            "replay: {} file(s), {} packets ({} counted, {} skipped), {} conversations, {} records",
            self.files,
            self.packets,
            self.packets_counted,
            skipped,
            self.conversations,
            self.records
        );
        let _ = writeln!(
            s,
            "  bytes: L2 captured {}, L2 on the wire {}, L3 counted {}",
            self.l2_bytes_captured, self.l2_bytes_wire, self.l3_bytes
        );
        if skipped > 0 {
            let reasons: Vec<String> = self
                .skipped
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(s, "  skipped: {}", reasons.join(", "));
        }
        let problems = [
            ("truncated", self.truncated),
            ("later fragment without first", self.frag_no_first),
            ("fragment map evictions", self.frag_evicted),
            ("cut by snap length", self.snaplen_cut),
            ("conversations dropped (limit)", self.conversations_dropped),
        ];
        let problems: Vec<String> = problems
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        if !problems.is_empty() {
            let _ = writeln!(s, "  counted with problems: {}", problems.join(", "));
        }
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
        s
    }
}

/// (protocol, client address, client port, server address, server port).
type ConversationId = (String, String, u16, String, u16);

#[derive(Default)]
struct Tally {
    records: u64,
    conversations: HashSet<ConversationId>,
}

/// Counts the records a replay writes and the distinct conversations among
/// them: a sink beside the outputs, first in line.
#[derive(Clone, Default)]
pub struct RecordTally(Arc<Mutex<Tally>>);

impl RecordTally {
    /// Puts the counts into `s`.
    pub fn fill(&self, s: &mut ReplaySummary) {
        if let Ok(t) = self.0.lock() {
            s.records = t.records;
            s.conversations = t.conversations.len() as u64;
        }
    }
}

impl RecordSink for RecordTally {
    fn write_chunk(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        let mut t = self
            .0
            .lock()
            .map_err(|_| io::Error::other("record tally poisoned"))?;
        t.records += records.len() as u64;
        for r in records {
            t.conversations.insert((
                r.proto.clone(),
                r.client.addr.clone(),
                r.client.port,
                r.server.addr.clone(),
                r.server.port,
            ));
        }
        Ok(())
    }
}

/// A progress bar on stderr (only on a terminal): packets/s and ETA by bytes read.
pub struct Progress {
    bar: Option<ProgressBar>,
    done_files: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Progress over `total` bytes of input; hidden unless `visible`.
    pub fn new(total: u64, visible: bool) -> Self {
        let bar = visible.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ETA {eta}")
            {
                bar.set_style(style);
            }
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            done_files: 0,
            started: now,
            last: now,
        }
    }

    /// Called per packet; redraws at most every 200 ms.
    pub fn tick(&mut self, packets: u64, offset: u64) {
        let Some(bar) = &self.bar else {
            return;
        };
        if !packets.is_multiple_of(1024) || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(self.done_files + offset);
        bar.set_message(format!(
            "{packets} packets, {:.0} packets/s",
            packets as f64 / secs
        ));
    }

    /// A file was read up to `offset`.
    pub fn file_done(&mut self, offset: u64) {
        self.done_files += offset;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done_files);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
