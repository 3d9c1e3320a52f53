//! The flow-source interface: what the exporter needs from a way of seeing
//! packets (the eBPF programs, AF_PACKET sockets, a pcap replay).

use std::collections::BTreeMap;

use crossbeam_channel::Receiver;
use flowlens_correlator::{
    conversation::ConversationTable,
    types::{FlowTuple, Hook},
};

pub use crate::clock::Now;
use crate::{ifaces::Iface, metrics::SelfMetrics};

/// Whose clock a source runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeline {
    /// The host's clocks (CLOCK_MONOTONIC and wall time). Exports every
    /// interval from start-up, at the time they happen; interfaces are polled
    /// every second.
    Live,
    /// Capture time (a replay): exports fall on multiples of the interval of
    /// capture time, stamped with that boundary; intervals without packets are
    /// skipped; no interfaces to poll.
    Capture,
}

/// What [`FlowSource::wait`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The deadline came, or something else asks the loop to look again.
    Continue,
    /// The source has no more input (end of the capture files).
    End,
}

/// An interface the source could not start capturing on.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The flow programs could not be attached.
    #[error(transparent)]
    Programs(#[from] crate::loader::LoadError),
    /// A packet socket could not be opened.
    #[error("opening a packet socket: {0}")]
    Socket(#[from] std::io::Error),
    /// This source does not capture from interfaces.
    #[error("this source does not capture from interfaces")]
    Unsupported,
}

/// A way of seeing packets and their owners. The [`super::Exporter`] drives
/// it: it waits on it between exports, collects its counters into the
/// conversation table at each export, and hands back what the table evicted.
/// Every policy (intervals, timeouts, limits, outputs, metrics, logging)
/// lives in the exporter; a source only captures.
pub trait FlowSource {
    /// Name in logs and metrics: "ebpf", "afpacket", "replay".
    fn name(&self) -> &'static str;

    /// Whose clock the source runs on.
    fn timeline(&self) -> Timeline;

    /// Now on the source's clock; `None` until a capture has its first packet.
    fn now(&self) -> Option<Now>;

    /// Called once, after the first interfaces were attached and before the
    /// loop (AF_PACKET scans /proc for the sockets that exist already).
    fn start(&mut self, _table: &mut ConversationTable) {}

    /// Runs until the source's clock reaches `until` (or, on a live source,
    /// at most ~200 ms, so a stop request is seen), feeding `table` what
    /// arrives meanwhile (socket owners). `None`: no deadline yet (a capture
    /// before its first packet: return after it).
    fn wait(&mut self, table: &mut ConversationTable, until: Option<u64>) -> Waited;

    /// Moves everything counted since the last call into `table` (flow
    /// counters, and the owners that must be known before an export); returns
    /// how many flow entries changed.
    fn collect(&mut self, table: &mut ConversationTable) -> u64;

    /// The table evicted these flow entries (tuple, ifindex, hook): forget
    /// their counters, so packets from now on start a new conversation.
    fn forget(&mut self, evicted: &[(FlowTuple, u32, Hook)]);

    /// Interface names the source knows itself (a capture's interface
    /// descriptions); live sources leave this to the interface poll.
    fn iface_names(&self, _names: &mut BTreeMap<u32, String>) {}

    /// Interfaces captured on now: index -> name.
    fn monitored(&self) -> BTreeMap<u32, String> {
        BTreeMap::new()
    }

    /// Starts capturing on `iface`; on failure nothing stays attached.
    fn attach(&mut self, _iface: &Iface) -> Result<(), AttachError> {
        Err(AttachError::Unsupported)
    }

    /// Stops capturing on an interface (it may be gone already). Its last
    /// counters still go into the next export.
    fn detach(&mut self, _ifindex: u32) {}

    /// From now on a [`FlowSource::wait`] also ends as soon as `wake` has a
    /// message (an interface appeared: the exporter attaches it at once).
    /// Live sources keep it; the default ignores it.
    fn wake_on(&mut self, _wake: Receiver<()>) {}

    /// Adds this source's counters to the metrics snapshot.
    fn report(&mut self, m: &mut SelfMetrics);

    /// This source's numbers for the `Interval exported.` log line.
    fn log_detail(&self, m: &SelfMetrics) -> String;

    /// Stops capturing before the final export (reader threads end after
    /// their last read).
    fn stop(&mut self) {}

    /// Releases the capture after the final export (programs detached).
    fn close(&mut self) {}
}
