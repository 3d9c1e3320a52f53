//! The replay as a flow source: capture files read in order, frames counted
//! with the kernel's rules, capture time as the clock.
//!
//! Two stages on two threads, in capture order: a reader thread reads the
//! files (mapped, see [`super::mapped`]), parses every frame and resolves
//! fragment ports into [`FlowDelta`]s, which it sends in batches; the
//! exporter's thread counts them into the flow entries and exports at the
//! interval boundaries. Everything that decides the output (the clock, the
//! order of frames, interface names, fragment ports) is fixed by the reader
//! before a frame is sent, so the records are the same as one thread's.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::fd::AsFd,
    path::{Path, PathBuf},
    thread::JoinHandle,
};

use crossbeam_channel::{bounded, Receiver, Sender};
use flowlens_correlator::{
    conversation::ConversationTable,
    types::{FlowTuple, Hook},
};
use tracing::error;

use super::{
    reader::CaptureReader,
    summary::{Progress, ReplaySummary},
};
use crate::{
    capture::{parse_frame, FlowAccounts, FlowDelta, FragmentPorts},
    config::STDIN,
    exporter::{FlowSource, Now, Timeline, Waited},
    metrics::SelfMetrics,
};

/// Frames per batch sent from the reader thread (64 bytes each: 256 KiB).
const BATCH: usize = 4096;
/// Batches in flight between the threads (24 MiB): enough for the reader
/// to keep going through an export of tens of thousands of conversations
/// (~0.2 s) instead of waiting for it.
const IN_FLIGHT: usize = 96;

/// What the reader thread sends, in capture order.
enum Msg {
    /// Frames with a link type: a flow delta each, or clock-only (no flow).
    Frames(Vec<FlowDelta>),
    /// The interface names of the file being read changed (ifindex -> name).
    Names(BTreeMap<u32, String>),
    /// The file being read ended; its names stay known.
    FileDone,
}

/// Opens one capture: `-` is standard input (read as a stream), a regular
/// file is mapped, anything else (a pipe, a device) read as a stream.
fn open(path: &Path) -> Result<CaptureReader<File>, String> {
    if path.as_os_str() == STDIN {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?;
        return CaptureReader::new(File::from(fd)).map_err(|e| e.to_string());
    }
    let f = File::open(path).map_err(|e| e.to_string())?;
    CaptureReader::open(f).map_err(|e| e.to_string())
}

/// Interface names of `r` (pcapng `if_name`; each interface id of a file is
/// ifindex id + 1).
fn names_of(r: &CaptureReader<File>) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    for (i, d) in r.interfaces().iter().enumerate() {
        if let (Some(name), Ok(id)) = (&d.name, u32::try_from(i + 1)) {
            names.insert(id, name.clone());
        }
    }
    names
}

/// The reader thread: files in, batches of flow deltas out.
struct Reader {
    tx: Sender<Msg>,
    spare: Receiver<Vec<FlowDelta>>,
    batch: Vec<FlowDelta>,
    frags: FragmentPorts,
    progress: Progress,
    summary: ReplaySummary,
    /// Capture time of the newest frame (never going back).
    clock_ns: u64,
}

impl Reader {
    /// Sends the batch being filled; false when the receiver is gone.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let full = std::mem::replace(&mut self.batch, next);
        self.tx.send(Msg::Frames(full)).is_ok()
    }

    fn send(&mut self, m: Msg) -> bool {
        self.flush() && self.tx.send(m).is_ok()
    }

    /// Reads every file in order; returns what it read, skipped and counted.
    fn run(mut self, files: Vec<PathBuf>) -> ReplaySummary {
        for path in files {
            match open(&path) {
                Ok(r) => {
                    if !self.file(&path, r) {
                        break;
                    }
                }
                Err(e) => self.summary.errors.push(format!("{}: {e}", path.display())),
            }
        }
        self.flush();
        self.progress.finish();
        self.summary
    }

    /// One file; false when the exporter is gone.
    fn file(&mut self, path: &Path, mut r: CaptureReader<File>) -> bool {
        let mut version = r.interfaces_version();
        if !self.send(Msg::Names(names_of(&r))) {
            return false;
        }
        loop {
            let frame = match r.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.summary.errors.push(format!("{}: {e}", path.display()));
                    break;
                }
            };
            let s = &mut self.summary;
            let (len, orig_len) = (frame.data.len() as u64, frame.orig_len);
            s.packets += 1;
            s.l2_bytes_captured += len;
            s.l2_bytes_wire += u64::from(orig_len);
            if len < u64::from(orig_len) {
                s.snaplen_cut += 1;
            }
            let Some(link) = frame.link_type else {
                *s.skipped.entry("interface not described").or_default() += 1;
                continue;
            };
            let ts = frame.ts_ns.unwrap_or(self.clock_ns).max(self.clock_ns);
            self.clock_ns = ts;
            let ifindex = frame.iface.saturating_add(1);
            let delta = match parse_frame(link, frame.data) {
                Ok(m) => {
                    s.packets_counted += 1;
                    let d = self.frags.delta(&m, orig_len, ifindex, ts);
                    s.l3_bytes += d.bytes();
                    d
                }
                Err(skip) => {
                    *s.skipped.entry(skip.as_str()).or_default() += 1;
                    FlowDelta::clock_only(ts)
                }
            };
            let offset = frame.offset;
            if r.interfaces_version() != version {
                // Interface descriptions before this frame: its export
                // sees their names, earlier ones do not.
                version = r.interfaces_version();
                if !self.send(Msg::Names(names_of(&r))) {
                    return false;
                }
            }
            self.batch.push(delta);
            if self.batch.len() >= BATCH && !self.flush() {
                return false;
            }
            self.progress.tick(self.summary.packets, offset);
        }
        if r.interfaces_version() != version && !self.send(Msg::Names(names_of(&r))) {
            return false;
        }
        self.progress.file_done(r.offset());
        self.send(Msg::FileDone)
    }
}

/// Frames of capture files in, flow counters out.
pub struct ReplaySource {
    rx: Option<Receiver<Msg>>,
    spare: Sender<Vec<FlowDelta>>,
    thread: Option<JoinHandle<ReplaySummary>>,
    batch: Vec<FlowDelta>,
    /// Next frame of `batch`.
    next: usize,
    /// The frame at `next` crossed an export boundary: it is counted first
    /// thing after that export.
    held: bool,
    accounts: FlowAccounts,
    /// Capture time of the newest frame taken.
    clock_ns: u64,
    started: bool,
    frames: u64,
    /// Names of the files read to their end.
    done_names: BTreeMap<u32, String>,
    /// Names of the file being read.
    names: BTreeMap<u32, String>,
}

impl ReplaySource {
    /// Reads `files` in order as one capture (`-`: standard input) on a
    /// thread of its own, showing `progress`.
    pub fn new(files: Vec<PathBuf>, progress: Progress) -> Self {
        let (tx, rx) = bounded(IN_FLIGHT);
        let (spare_tx, spare_rx) = bounded(IN_FLIGHT + 2);
        let reader = Reader {
            tx,
            spare: spare_rx,
            batch: Vec::with_capacity(BATCH),
            frags: FragmentPorts::default(),
            progress,
            summary: ReplaySummary::default(),
            clock_ns: 0,
        };
        let thread = std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || reader.run(files));
        let (rx, thread) = match thread {
            Ok(t) => (Some(rx), Some(t)),
            Err(e) => {
                error!(error = %e, "Cannot start the replay's reader thread.");
                (None, None)
            }
        };
        Self {
            rx,
            spare: spare_tx,
            thread,
            batch: Vec::new(),
            next: 0,
            held: false,
            accounts: FlowAccounts::new(),
            clock_ns: 0,
            started: false,
            frames: 0,
            done_names: BTreeMap::new(),
            names: BTreeMap::new(),
        }
    }

    /// Waits for the reader thread; the summary is complete.
    pub fn finish(mut self) -> ReplaySummary {
        self.rx = None;
        let mut s = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(s)) => s,
            Some(Err(_)) => ReplaySummary {
                errors: vec!["the reader thread panicked".into()],
                ..ReplaySummary::default()
            },
            None => ReplaySummary {
                errors: vec!["the reader thread could not be started".into()],
                ..ReplaySummary::default()
            },
        };
        let acc = self.accounts.stats();
        s.truncated = acc.truncated;
        s.frag_no_first = acc.frag_no_first;
        s.frag_evicted = acc.frag_evicted;
        s
    }

    /// The next batch from the reader; false at the end of the capture.
    fn refill(&mut self) -> bool {
        let Some(rx) = &self.rx else {
            return false;
        };
        loop {
            match rx.recv() {
                Ok(Msg::Frames(b)) => {
                    let mut old = std::mem::replace(&mut self.batch, b);
                    old.clear();
                    let _ = self.spare.try_send(old);
                    self.next = 0;
                    return true;
                }
                Ok(Msg::Names(n)) => self.names = n,
                Ok(Msg::FileDone) => {
                    let names = std::mem::take(&mut self.names);
                    self.done_names.extend(names);
                }
                Err(_) => return false,
            }
        }
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
        if self.held {
            self.held = false;
            self.accounts.add(&self.batch[self.next]);
            self.next += 1;
        }
        loop {
            if self.next >= self.batch.len() && !self.refill() {
                return Waited::End;
            }
            let d = &self.batch[self.next];
            let ts = d.ts_ns();
            self.clock_ns = ts;
            self.started = true;
            self.frames += 1;
            if until.is_some_and(|u| ts >= u) {
                // Counted after the export this frame's time makes due.
                self.held = true;
                return Waited::Continue;
            }
            self.accounts.add(d);
            self.next += 1;
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
        names.extend(self.done_names.iter().map(|(i, n)| (*i, n.clone())));
        names.extend(self.names.iter().map(|(i, n)| (*i, n.clone())));
    }

    fn report(&mut self, m: &mut SelfMetrics) {
        m.userspace_parser = self.accounts.stats();
    }

    fn log_detail(&self, _m: &SelfMetrics) -> String {
        format!("frames={}", self.frames)
    }
}

impl Drop for ReplaySource {
    fn drop(&mut self) {
        // The reader stops at its next send once the receiver is gone.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
