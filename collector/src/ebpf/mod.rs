//! eBPF capture: the kernel programs count flows into the slot table and
//! the overflow hash, the socket and process hooks send owners through the
//! ring buffer. This module reads both and is the flow source of
//! `flowlens run` (default mode).
//!
//! - [`mmap`]: the slot table and the control map mapped into this process;
//! - [`flow_map`]: slots + hash read into cumulative per-key totals;
//! - [`maps`]: the per-CPU counters and the ICMP echo map;
//! - [`convert`]: kernel structs -> domain types (the only place);
//! - [`events`]: the ring-buffer reader thread;
//! - [`EbpfSource`]: all of it behind [`crate::exporter::FlowSource`].

pub mod convert;
pub mod events;
pub mod flow_map;
pub mod maps;
mod mmap;
pub mod signals;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use crossbeam_channel::{bounded, never, select, Receiver, RecvTimeoutError};
use flowlens_correlator::{
    conversation::ConversationTable,
    types::{FlowObservation, FlowTuple, Hook},
};
use flowlens_ebpf::{abi::IcmpEchoKey, flow, sock};
use tracing::{info, warn};

use crate::{
    clock,
    docker::DockerResolver,
    exporter::{AttachError, FlowSource, Now, Timeline, Waited},
    ifaces::Iface,
    loader::{self, FlowAttachments, LoadError, LoadOptions},
    metrics::SelfMetrics,
    signals_loader::{load_signals, SignalOptions},
};
use convert::IcmpEcho;
use events::{EventBarrier, EventReader, EventStats, ReaderEvent};
use flow_map::{FlowMapError, FlowMapReader};
use signals::SignalReader;

/// How long an export waits for the event reader to catch up with the kernel.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);
/// A wait returns at least this often, so a stop request is seen.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// Why the eBPF source could not start.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The kernel objects could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The flow maps could not be opened.
    #[error("flow maps: {0}")]
    FlowMaps(#[from] FlowMapError),
    /// A map is missing or has another type.
    #[error("map {name}: {message}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The event reader thread could not be started.
    #[error("starting the event reader thread: {0}")]
    Thread(std::io::Error),
}

fn take_map<T>(bpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map>,
    <T as TryFrom<aya::maps::Map>>::Error: std::fmt::Display,
{
    let map = bpf.take_map(name).ok_or(EbpfError::Map {
        name,
        message: "missing from the object".into(),
    })?;
    T::try_from(map).map_err(|e| EbpfError::Map {
        name,
        message: e.to_string(),
    })
}

/// The objects: flow programs loaded, socket programs attached, and the
/// golden-signal programs attached where the kernel allows (`None`: records
/// carry no signals; logged). `signal_opts` `None` (`--no-signals`): the
/// signal programs are not loaded at all.
pub fn load_objects(
    opts: LoadOptions,
    signal_opts: Option<SignalOptions>,
) -> Result<(Ebpf, Ebpf, Option<Ebpf>), LoadError> {
    let flow = loader::load_flow_object(opts)?;
    let sock = loader::load_sock_object(opts, true)?;
    let signals = match signal_opts {
        Some(o) => load_signals(o).map(|(bpf, _)| bpf),
        None => {
            info!("Golden signals off (--no-signals / signals = false): records carry no RTT, retransmits, resets or DNS names.");
            None
        }
    };
    Ok((flow, sock, signals))
}

/// The eBPF flow source: loaded objects, map readers and the event thread.
pub struct EbpfSource {
    flow_bpf: Ebpf,
    /// Kept loaded (its hooks stay attached) until the source is dropped.
    _sock_bpf: Ebpf,
    /// Likewise; `None` when the signals object did not load.
    _signals_bpf: Option<Ebpf>,
    signals: Option<SignalReader>,
    attachments: FlowAttachments,
    reader: FlowMapReader,
    flow_counters: PerCpuArray<MapData, u64>,
    sock_counters: PerCpuArray<MapData, u64>,
    icmp_echo: HashMap<MapData, IcmpEchoKey, u64>,
    icmp_scratch: Vec<IcmpEcho>,
    obs: Vec<FlowObservation>,
    rx: Receiver<ReaderEvent>,
    event_stats: Arc<EventStats>,
    barrier: Arc<EventBarrier>,
    events: Option<EventReader>,
    /// Events taken off the queue while the reader made its final drain
    /// (applied by the last collect, before what is still queued).
    stopping: Vec<ReaderEvent>,
    stop: Arc<AtomicBool>,
    /// Ends a wait early (an interface appeared).
    wake: Receiver<()>,
}

impl EbpfSource {
    /// Takes the maps out of the loaded objects and starts the event reader
    /// (first a /proc scan for the sockets that exist, then the ring
    /// buffer). `stop` ends the reader; `event_queue`: events queued between
    /// it and the exporter.
    pub fn start(
        mut flow_bpf: Ebpf,
        mut sock_bpf: Ebpf,
        mut signals_bpf: Option<Ebpf>,
        slots_per_cpu: u32,
        event_queue: usize,
        docker: DockerResolver,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, EbpfError> {
        let reader = FlowMapReader::from_object(&mut flow_bpf, slots_per_cpu)?;
        let flow_counters = take_map(&mut flow_bpf, flow::MAP_COUNTERS)?;
        let sock_counters = take_map(&mut sock_bpf, sock::MAP_COUNTERS)?;
        let ring: RingBuf<MapData> = take_map(&mut sock_bpf, sock::MAP_EVENTS)?;
        let icmp_echo = take_map(&mut sock_bpf, sock::MAP_ICMP_ECHO)?;
        let signals = signals_bpf.as_mut().map(SignalReader::new).transpose()?;
        let (tx, rx) = bounded(event_queue);
        let event_stats = Arc::new(EventStats::default());
        let events = EventReader::start(
            ring,
            tx,
            Arc::clone(&event_stats),
            Arc::clone(&stop),
            docker,
        )
        .map_err(EbpfError::Thread)?;
        Ok(Self {
            flow_bpf,
            _sock_bpf: sock_bpf,
            _signals_bpf: signals_bpf,
            signals,
            attachments: FlowAttachments::new(),
            reader,
            flow_counters,
            sock_counters,
            icmp_echo,
            icmp_scratch: Vec::new(),
            obs: Vec::with_capacity(4096),
            rx,
            event_stats,
            barrier: events.barrier(),
            events: Some(events),
            stopping: Vec::new(),
            stop,
            wake: never(),
        })
    }

    fn handle_event(table: &mut ConversationTable, ev: ReaderEvent) {
        match ev {
            ReaderEvent::Owner(o) => table.observe_owner(o),
            ReaderEvent::TcpState(t) => table.observe_tcp_state(t),
            ReaderEvent::Connect(c) => table.observe_connect(c),
            ReaderEvent::Exec { pid, exe } => table.observe_exec(pid, exe),
            ReaderEvent::Exit { pid } => table.observe_exit(pid, clock::monotonic_ns()),
            // The answer to an earlier barrier we stopped waiting for.
            ReaderEvent::Synced(_) => {}
        }
    }

    /// Applies every event the kernel committed before now (see
    /// [`EventBarrier`]); call it after reading the flow map. Gives up after
    /// [`SYNC_TIMEOUT`]: the export then goes on with what arrived.
    fn sync_events(&mut self, table: &mut ConversationTable) {
        let n = self.barrier.request();
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            match self.rx.recv_deadline(deadline) {
                Ok(ReaderEvent::Synced(m)) if m >= n => return,
                Ok(ev) => Self::handle_event(table, ev),
                Err(RecvTimeoutError::Timeout) => {
                    self.event_stats
                        .sync_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(timeout = ?SYNC_TIMEOUT, "The event reader is behind; exporting without all socket events (attribution may be late).");
                    return;
                }
                // The reader has stopped (shutdown): its final drain is what there is.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

impl FlowSource for EbpfSource {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn timeline(&self) -> Timeline {
        Timeline::Live
    }

    fn now(&self) -> Option<Now> {
        Some(clock::now())
    }

    fn wait(&mut self, table: &mut ConversationTable, until: Option<u64>) -> Waited {
        let now = clock::monotonic_ns();
        let wait = until
            .map_or(MAX_WAIT, |u| Duration::from_nanos(u.saturating_sub(now)))
            .min(MAX_WAIT);
        let received = select! {
            recv(self.rx) -> ev => ev.map_err(|_| RecvTimeoutError::Disconnected),
            recv(self.wake) -> _ => return Waited::Continue,
            default(wait) => Err(RecvTimeoutError::Timeout),
        };
        match received {
            Ok(ev) => {
                Self::handle_event(table, ev);
                while let Ok(ev) = self.rx.try_recv() {
                    Self::handle_event(table, ev);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if !self.stop.load(Ordering::Relaxed) {
                    warn!("The event reader stopped; socket attribution is no longer updated.");
                    std::thread::sleep(MAX_WAIT);
                }
            }
        }
        // Resets, closed sockets and DNS copies: drained often, so bursts fit the ring buffer.
        if let Some(sig) = &mut self.signals {
            sig.drain_events(table);
        }
        Waited::Continue
    }

    fn collect(&mut self, table: &mut ConversationTable) -> u64 {
        // Kernel maps first, then every socket event committed before they were
        // read: an owner whose socket's packets were counted is known at export.
        self.icmp_scratch.clear();
        maps::drain_icmp_echo(&mut self.icmp_echo, &mut self.icmp_scratch);
        self.obs.clear();
        let entries = self.reader.drain(&mut self.obs);
        for ev in self.stopping.drain(..) {
            Self::handle_event(table, ev);
        }
        self.sync_events(table);
        // Echo requests of raw ICMP sockets: join their owners by cookie.
        let now = clock::monotonic_ns();
        for (cookie, local, remote) in self.icmp_scratch.drain(..) {
            table.observe_socket_tuple(cookie, local, remote, now);
        }
        for o in &self.obs {
            table.observe_flow(o);
        }
        if let Some(sig) = &mut self.signals {
            sig.read_sockets(table, now);
        }
        entries as u64
    }

    fn forget(&mut self, evicted: &[(FlowTuple, u32, Hook)]) {
        for (tuple, ifindex, hook) in evicted {
            self.reader.remove(tuple, *ifindex, *hook);
        }
        if evicted.len() >= 1024 {
            self.reader.shrink();
        }
    }

    fn monitored(&self) -> BTreeMap<u32, String> {
        self.attachments
            .attached()
            .map(|(i, n)| (i, n.to_string()))
            .collect()
    }

    fn attach(&mut self, iface: &Iface) -> Result<(), AttachError> {
        self.attachments.attach(&mut self.flow_bpf, iface)?;
        Ok(())
    }

    fn detach(&mut self, ifindex: u32) {
        self.attachments.detach(&mut self.flow_bpf, ifindex);
    }

    fn wake_on(&mut self, wake: Receiver<()>) {
        self.wake = wake;
    }

    fn report(&mut self, m: &mut SelfMetrics) {
        let mut kernel = BTreeMap::new();
        maps::read_counters(&self.flow_counters, &mut kernel);
        maps::read_counters(&self.sock_counters, &mut kernel);
        if let Some(sig) = &self.signals {
            maps::read_counters(sig.counters(), &mut kernel);
            m.signals = Some(sig.stats());
        }
        m.kernel = kernel;
        self.event_stats.report(m);
        m.flow_read_races = self.reader.read_races;
        m.flow_delete_errors = self.reader.delete_errors;
        m.flow_keys_tracked = self.reader.tracked_keys() as u64;
        m.flow_slot_reads_busy = self.reader.slots_busy;
    }

    fn log_detail(&self, m: &SelfMetrics) -> String {
        format!(
            "events={} packets_seen={}",
            m.events_received,
            m.kernel.get("packets_seen").copied().unwrap_or(0)
        )
    }

    fn stop(&mut self) {
        // The reader drains the ring buffer one last time and ends (`stop` is
        // set). It may wait for room in the queue: keep taking events off it
        // until it has ended.
        if let Some(events) = self.events.take() {
            while !events.is_finished() {
                match self.rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(ev) => self.stopping.push(ev),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            events.join();
        }
    }

    fn close(&mut self) {
        self.attachments.detach_all(&mut self.flow_bpf);
    }
}
