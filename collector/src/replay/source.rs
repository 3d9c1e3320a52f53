//! The replay as a flow source: capture files read in order, frames counted
//! with the kernel's rules, capture time as the clock.

use std::{collections::BTreeMap, fs::File, path::PathBuf};

use flowlens_correlator::{
    conversation::ConversationTable,
    types::{FlowTuple, Hook},
};

use super::{
    reader::CaptureReader,
    summary::{Progress, ReplaySummary},
};
use crate::{
    capture::{parse_frame, FlowAccounts},
    exporter::{FlowSource, Now, Timeline, Waited},
    metrics::SelfMetrics,
};

/// A frame that crossed an export boundary: counted after that export.
struct Held {
    link: u32,
    ifindex: u32,
    ts_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
}

/// Frames of capture files in, flow counters out.
pub struct ReplaySource {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, CaptureReader<File>)>,
    accounts: FlowAccounts,
    /// Capture time of the newest frame (never going back).
    clock_ns: u64,
    started: bool,
    held: Option<Held>,
    iface_names: BTreeMap<u32, String>,
    progress: Progress,
    /// What was read, skipped and counted so far.
    pub summary: ReplaySummary,
}

/// The reader of the file being read, opening the next of `files` when
/// needed (one that cannot be opened is an error of the summary); `None` at
/// the end.
fn reader<'a>(
    files: &mut std::vec::IntoIter<PathBuf>,
    current: &'a mut Option<(PathBuf, CaptureReader<File>)>,
    errors: &mut Vec<String>,
) -> Option<&'a mut CaptureReader<File>> {
    while current.is_none() {
        let path = files.next()?;
        let opened = File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| CaptureReader::new(f).map_err(|e| e.to_string()));
        match opened {
            Ok(r) => *current = Some((path, r)),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    current.as_mut().map(|(_, r)| r)
}

/// Adds the interface names of `r` (pcapng `if_name`; each interface id of
/// a file is ifindex id + 1).
fn names_of(r: &CaptureReader<File>, names: &mut BTreeMap<u32, String>) {
    for (i, d) in r.interfaces().iter().enumerate() {
        if let (Some(name), Ok(id)) = (&d.name, u32::try_from(i + 1)) {
            names.insert(id, name.clone());
        }
    }
}

/// Counts one frame into `accounts` and the summary.
fn count(
    accounts: &mut FlowAccounts,
    s: &mut ReplaySummary,
    link: u32,
    ifindex: u32,
    ts_ns: u64,
    orig_len: u32,
    data: &[u8],
) {
    s.packets += 1;
    s.l2_bytes_captured += data.len() as u64;
    s.l2_bytes_wire += u64::from(orig_len);
    if (data.len() as u64) < u64::from(orig_len) {
        s.snaplen_cut += 1;
    }
    match parse_frame(link, data) {
        Ok(m) => {
            s.packets_counted += 1;
            s.l3_bytes += accounts.account(&m, orig_len, ifindex, ts_ns);
        }
        Err(skip) => *s.skipped.entry(skip.as_str()).or_default() += 1,
    }
}

impl ReplaySource {
    /// Reads `files` in order as one capture, showing `progress`.
    pub fn new(files: Vec<PathBuf>, progress: Progress) -> Self {
        Self {
            files: files.into_iter(),
            current: None,
            accounts: FlowAccounts::new(),
            clock_ns: 0,
            started: false,
            held: None,
            iface_names: BTreeMap::new(),
            progress,
            summary: ReplaySummary::default(),
        }
    }

    /// Ends the file being read; `error`: why it ended early.
    fn end_file(&mut self, error: Option<String>) {
        if let Some((path, r)) = self.current.take() {
            names_of(&r, &mut self.iface_names);
            self.progress.file_done(r.offset());
            if let Some(e) = error {
                self.summary.errors.push(format!("{}: {e}", path.display()));
            }
        }
    }

    /// Removes the progress bar; the summary is complete.
    pub fn finish(self) -> ReplaySummary {
        self.progress.finish();
        let mut s = self.summary;
        let acc = self.accounts.stats();
        s.truncated = acc.truncated;
        s.frag_no_first = acc.frag_no_first;
        s.frag_evicted = acc.frag_evicted;
        s
    }
}

impl FlowSource for ReplaySource {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn timeline(&self) -> Timeline {
        Timeline::Capture
    }

    fn now(&self) -> Option<Now> {
        self.started.then_some(Now {
            mono_ns: self.clock_ns,
            unix_ns: i128::from(self.clock_ns),
        })
    }

    fn wait(&mut self, _table: &mut ConversationTable, until: Option<u64>) -> Waited {
        if let Some(h) = self.held.take() {
            count(
                &mut self.accounts,
                &mut self.summary,
                h.link,
                h.ifindex,
                h.ts_ns,
                h.orig_len,
                &h.data,
            );
        }
        loop {
            let clock = self.clock_ns;
            let Some(reader) = reader(&mut self.files, &mut self.current, &mut self.summary.errors)
            else {
                return Waited::End;
            };
            let frame = match reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.end_file(None);
                    continue;
                }
                Err(e) => {
                    self.end_file(Some(e.to_string()));
                    continue;
                }
            };
            let (len, orig_len) = (frame.data.len(), frame.orig_len);
            let ifindex = frame.iface.saturating_add(1);
            let offset = frame.offset;
            let Some(link) = frame.link_type else {
                let s = &mut self.summary;
                s.packets += 1;
                s.l2_bytes_captured += len as u64;
                s.l2_bytes_wire += u64::from(orig_len);
                *s.skipped.entry("interface not described").or_default() += 1;
                continue;
            };
            let ts = frame.ts_ns.unwrap_or(clock).max(clock);
            self.clock_ns = ts;
            self.started = true;
            if until.is_some_and(|u| ts >= u) {
                // Counted after the export this frame's time makes due.
                self.held = Some(Held {
                    link,
                    ifindex,
                    ts_ns: ts,
                    orig_len,
                    data: frame.data.to_vec(),
                });
                return Waited::Continue;
            }
            count(
                &mut self.accounts,
                &mut self.summary,
                link,
                ifindex,
                ts,
                orig_len,
                frame.data,
            );
            self.progress.tick(self.summary.packets, offset);
            if until.is_none() {
                // The first frame: the schedule anchors on its time.
                return Waited::Continue;
            }
        }
    }

    fn collect(&mut self, table: &mut ConversationTable) -> u64 {
        let changed = self.accounts.take_changed();
        for obs in &changed {
            table.observe_flow(obs);
        }
        changed.len() as u64
    }

    fn forget(&mut self, evicted: &[(FlowTuple, u32, Hook)]) {
        for (tuple, ifindex, _) in evicted {
            self.accounts.forget(tuple, *ifindex);
        }
    }

    fn iface_names(&self, names: &mut BTreeMap<u32, String>) {
        names.extend(self.iface_names.iter().map(|(i, n)| (*i, n.clone())));
        if let Some((_, r)) = &self.current {
            names_of(r, names);
        }
    }

    fn report(&mut self, m: &mut SelfMetrics) {
        m.userspace_parser = self.accounts.stats();
    }

    fn log_detail(&self, _m: &SelfMetrics) -> String {
        format!("packets={}", self.summary.packets)
    }
}
