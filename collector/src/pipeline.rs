//! `flowlens run`: kernel maps and ring buffer -> readers -> correlator ->
//! sinks, one export per interval, until SIGINT/SIGTERM.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use flowlens_correlator::{
    conversation::{ConversationTable, TableConfig},
    record::ConversationRecord,
    types::{ContainerMeta, FlowObservation, Lookup},
};
use flowlens_ebpf::{abi::IcmpEchoKey, flow, sock};
use tracing::{error, info, warn};

use crate::{
    afpacket, clock,
    config::{CaptureMode, Config, JsonlTarget},
    docker::{ContainerCache, DockerResolver},
    enrich::UserNames,
    events::{EventBarrier, EventReader, EventStats, PipelineEvent},
    ifaces::{self, Iface},
    influx::{sink::InfluxSink, stats::InfluxStats},
    loader::{self, FlowAttachments, LoadError, LoadOptions},
    metrics::SelfMetrics,
    privileges,
    readers::{self, read_counters, FlowMapReader},
    sinks::{JsonlSink, RecordSink, SummarySink},
};

/// Export-time lookups backed by the collector's caches.
pub(crate) struct Lookups<'a> {
    pub(crate) users: &'a UserNames,
    pub(crate) iface_names: &'a BTreeMap<u32, String>,
    pub(crate) containers: &'a ContainerCache,
}

impl Lookup for Lookups<'_> {
    fn user_name(&self, uid: u32) -> Option<String> {
        self.users.cached(uid)
    }
    fn iface_name(&self, ifindex: u32) -> Option<String> {
        self.iface_names.get(&ifindex).cloned()
    }
    fn container_meta(&self, runtime: &str, id: &str) -> Option<ContainerMeta> {
        if runtime == "docker" {
            self.containers.get(id)
        } else {
            None
        }
    }
}

/// One interval's records from the table (`last`: the final export, where
/// nothing waits for its owner), names resolved through the caches.
pub(crate) fn export_records(
    table: &mut ConversationTable,
    users: &mut UserNames,
    iface_names: &BTreeMap<u32, String>,
    containers: &ContainerCache,
    host: &str,
    last: bool,
) -> Vec<ConversationRecord> {
    users.name(0); // refresh /etc/passwd if it changed
    let lookups = Lookups {
        users,
        iface_names,
        containers,
    };
    let export = if last {
        ConversationTable::export_final
    } else {
        ConversationTable::export
    };
    export(
        table,
        clock::monotonic_ns(),
        clock::unix_ns(),
        host,
        &lookups,
    )
}

fn take_map<T>(bpf: &mut Ebpf, name: &'static str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map>,
    <T as TryFrom<aya::maps::Map>>::Error: std::fmt::Display,
{
    let map = bpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).map_err(|e| anyhow!("map {name}: {e}"))
}

struct Pipeline {
    cfg: Config,
    flow_bpf: Ebpf,
    attachments: FlowAttachments,
    reader: FlowMapReader,
    flow_counters: PerCpuArray<MapData, u64>,
    sock_counters: PerCpuArray<MapData, u64>,
    icmp_echo: HashMap<MapData, IcmpEchoKey, u64>,
    icmp_scratch: Vec<readers::IcmpEcho>,
    table: ConversationTable,
    rx: Receiver<PipelineEvent>,
    event_stats: Arc<EventStats>,
    barrier: Arc<EventBarrier>,
    users: UserNames,
    iface_names: BTreeMap<u32, String>,
    containers: ContainerCache,
    sinks: Vec<Box<dyn RecordSink>>,
    metrics: Arc<Mutex<SelfMetrics>>,
    influx: Option<Arc<InfluxStats>>,
    last_lost: u64,
    obs: Vec<FlowObservation>,
}

impl Pipeline {
    fn handle_event(&mut self, ev: PipelineEvent) {
        match ev {
            PipelineEvent::Owner(o) => self.table.observe_owner(o),
            PipelineEvent::TcpState(t) => self.table.observe_tcp_state(t),
            PipelineEvent::Exec { pid, exe } => self.table.observe_exec(pid, exe),
            PipelineEvent::Exit { pid } => self.table.observe_exit(pid, clock::monotonic_ns()),
            // The answer to an earlier barrier we stopped waiting for.
            PipelineEvent::Synced(_) => {}
        }
    }

    /// Applies every event the kernel committed before now (see
    /// [`EventBarrier`]); call it after reading the flow map. Gives up after
    /// [`SYNC_TIMEOUT`]: the export then goes on with what arrived.
    fn sync_events(&mut self) {
        let n = self.barrier.request();
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            match self.rx.recv_deadline(deadline) {
                Ok(PipelineEvent::Synced(m)) if m >= n => return,
                Ok(ev) => self.handle_event(ev),
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

    fn drain_events(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.handle_event(ev);
        }
    }

    /// Attaches to new interfaces and forgets vanished ones (auto mode).
    fn refresh_interfaces(&mut self) {
        let now = ifaces::list();
        for (idx, iface) in &now {
            self.iface_names.insert(*idx, iface.name.clone());
        }
        if !self.cfg.ifaces.is_empty() {
            return;
        }
        let gone: Vec<u32> = self
            .attachments
            .attached()
            .map(|(i, _)| i)
            .filter(|i| !now.contains_key(i))
            .collect();
        for i in gone {
            self.attachments.detach(&mut self.flow_bpf, i);
        }
        for iface in now.values().filter(|i| i.up && i.is_ethernet()) {
            if !self.attachments.contains(iface.index) {
                if let Err(e) = self.attachments.attach(&mut self.flow_bpf, iface) {
                    loader::warn_attach(iface, &e);
                }
            }
        }
    }

    /// One interval; `last`: the final one, where nothing waits for its owner.
    fn export(&mut self, last: bool) {
        // Kernel maps first, then every socket event committed before they were
        // read: an owner whose socket's packets were counted is known at export.
        self.icmp_scratch.clear();
        readers::drain_icmp_echo(&mut self.icmp_echo, &mut self.icmp_scratch);
        self.obs.clear();
        let entries = self.reader.drain(&mut self.obs);
        self.sync_events();
        // Echo requests of raw ICMP sockets: join their owners by cookie.
        let now = clock::monotonic_ns();
        for (cookie, local, remote) in self.icmp_scratch.drain(..) {
            self.table.observe_socket_tuple(cookie, local, remote, now);
        }
        for o in &self.obs {
            self.table.observe_flow(o);
        }
        let records = export_records(
            &mut self.table,
            &mut self.users,
            &self.iface_names,
            &self.containers,
            &self.cfg.host,
            last,
        );
        for (tuple, ifindex, hook) in self.table.take_evicted_flows() {
            self.reader.remove(&tuple, ifindex, hook);
        }
        let mut lost = 0u64;
        for sink in &mut self.sinks {
            if let Err(e) = sink.write_interval(&records) {
                lost += records.len() as u64;
                error!(error = %e, records = records.len(), "Writing records failed; this interval's records are lost.");
            }
        }
        self.update_metrics(entries as u64, records.len() as u64, lost);
    }

    fn update_metrics(&mut self, entries: u64, exported: u64, lost: u64) {
        let mut kernel = BTreeMap::new();
        read_counters(&self.flow_counters, &mut kernel);
        read_counters(&self.sock_counters, &mut kernel);
        let s = &self.event_stats;
        let snapshot = {
            let Ok(mut m) = self.metrics.lock() else {
                return;
            };
            m.intervals += 1;
            m.records_exported += exported;
            m.records_lost_sink += lost;
            m.kernel_flow_entries = entries;
            m.interfaces_monitored = self.attachments.attached().count() as u64;
            m.interface_attach_failures = self.attachments.attach_failures;
            m.events_received = s.received.load(Ordering::Relaxed);
            m.events_undecodable = s.decode_errors.load(Ordering::Relaxed);
            m.events_queue_overflow = s.queue_overflow.load(Ordering::Relaxed);
            m.events_sync_timeouts = s.sync_timeouts.load(Ordering::Relaxed);
            m.preexisting_sockets = s.preexisting_sockets.load(Ordering::Relaxed);
            m.flow_read_races = self.reader.read_races;
            m.flow_keys_tracked = self.reader.tracked_keys() as u64;
            m.flow_slot_reads_busy = self.reader.slots_busy;
            m.kernel = kernel;
            m.table = self.table.stats();
            m.influx = self.influx.as_ref().map(|s| s.snapshot());
            m.clone()
        };
        let lost_total = snapshot.lost_total();
        info!(
            records = exported,
            conversations = snapshot.table.conversations_active,
            kernel_flows = entries,
            sockets = snapshot.table.sockets_tracked,
            events = snapshot.events_received,
            packets_seen = snapshot.kernel.get("packets_seen").copied().unwrap_or(0),
            lost = lost_total,
            unattributed_local = snapshot.table.records_unattributed_local,
            awaiting_owner = snapshot.table.conversations_awaiting_owner,
            "Interval exported."
        );
        snapshot.log_new_losses(&mut self.last_lost, "raise the limits in the config file");
    }
}

/// How long an export waits for the event reader to catch up with the kernel.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);

/// Interfaces named with `--iface`, resolved before anything is loaded.
pub(crate) fn resolve_explicit(cfg: &Config) -> anyhow::Result<Vec<Iface>> {
    let mut explicit = Vec::new();
    for name in &cfg.ifaces {
        match ifaces::by_name(name) {
            Some(i) if !i.is_ethernet() => bail!(
                "interface '{name}' has link type {} (not Ethernet): flowlens parses Ethernet frames; \
                 monitor the Ethernet interface the traffic crosses instead",
                i.link_type
            ),
            Some(i) => explicit.push(i),
            None => {
                let have: Vec<String> = ifaces::list().into_values().map(|i| i.name).collect();
                bail!(
                    "unknown interface '{name}' (interfaces here: {})",
                    have.join(", ")
                );
            }
        }
    }
    Ok(explicit)
}

/// The InfluxDB output, started first: a refused credential or a missing
/// database is a config error, reported before anything is loaded or attached.
pub(crate) fn start_influx(cfg: &Config) -> anyhow::Result<Option<InfluxSink>> {
    match &cfg.influx {
        Some(s) => Ok(Some(
            InfluxSink::start(s.clone()).context("InfluxDB output")?,
        )),
        None => Ok(None),
    }
}

/// When the export loop polls interfaces (every second) and exports (every
/// interval, skipping missed ticks rather than bunching them).
pub(crate) struct Schedule {
    interval: Duration,
    next_export: Instant,
    next_iface_poll: Instant,
}

impl Schedule {
    pub(crate) fn new(interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            interval,
            next_export: now + interval,
            next_iface_poll: now + Duration::from_secs(1),
        }
    }

    /// The earliest of the two deadlines.
    pub(crate) fn next_wake(&self) -> Instant {
        self.next_export.min(self.next_iface_poll)
    }

    /// (poll interfaces now, export now), advancing the deadlines that fired.
    pub(crate) fn due(&mut self, now: Instant) -> (bool, bool) {
        let poll = now >= self.next_iface_poll;
        if poll {
            self.next_iface_poll = now + Duration::from_secs(1);
        }
        let export = now >= self.next_export;
        if export {
            self.next_export += self.interval;
            if self.next_export < now {
                self.next_export = now + self.interval;
            }
        }
        (poll, export)
    }
}

/// Closes every output at shutdown (the InfluxDB sink flushes or spools).
pub(crate) fn close_sinks(sinks: &mut Sinks) {
    for sink in sinks {
        if let Err(e) = sink.close() {
            error!(error = %e, "Closing an output failed.");
        }
    }
}

/// Every output records go to.
pub(crate) type Sinks = Vec<Box<dyn RecordSink>>;

/// The configured outputs (the on-screen summary when there is no other).
pub(crate) fn open_sinks(
    cfg: &Config,
    influx_sink: Option<InfluxSink>,
) -> anyhow::Result<(Sinks, Option<Arc<InfluxStats>>)> {
    let mut sinks: Sinks = Vec::new();
    match &cfg.jsonl {
        Some(JsonlTarget::Stdout) => sinks.push(Box::new(JsonlSink::stdout())),
        Some(JsonlTarget::File(p)) => sinks
            .push(Box::new(JsonlSink::file(p).with_context(|| {
                format!("opening JSON lines output {}", p.display())
            })?)),
        None if influx_sink.is_none() => sinks.push(Box::new(SummarySink::new(cfg.top))),
        None => {}
    }
    let influx = influx_sink.as_ref().map(InfluxSink::stats);
    if let Some(sink) = influx_sink {
        sinks.push(Box::new(sink));
    }
    Ok((sinks, influx))
}

/// SIGINT and SIGTERM set the returned flag.
pub(crate) fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Whether a load error lets flowlens capture with AF_PACKET instead: "this
/// kernel cannot run the programs" (no BTF, verifier refusal, unsupported
/// program or map type) always; "not allowed to" (a locked-down host refusing
/// bpf()) only when packet sockets are allowed.
pub fn falls_back_to_afpacket(e: &LoadError, afpacket_allowed: bool) -> bool {
    !matches!(e, LoadError::Permission) || afpacket_allowed
}

/// Both objects: flow programs loaded, socket programs attached.
fn load_objects(opts: LoadOptions) -> Result<(Ebpf, Ebpf), LoadError> {
    let flow = loader::load_flow_object(opts)?;
    let sock = loader::load_sock_object(opts, true)?;
    Ok((flow, sock))
}

/// Runs until SIGINT/SIGTERM; flushes the last interval and detaches.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    if cfg.capture == CaptureMode::Afpacket {
        privileges::require_for_afpacket()?;
        let explicit = resolve_explicit(&cfg)?;
        let influx_sink = start_influx(&cfg)?;
        return afpacket::run(cfg, explicit, influx_sink);
    }
    if let Err(e) = privileges::require_for_run() {
        // Locked-down hosts: no BPF, but packet sockets are allowed.
        if privileges::require_for_afpacket().is_err() {
            return Err(e);
        }
        warn!(missing = ?privileges::missing_for_run(), "Not allowed to load eBPF programs; falling back to AF_PACKET capture (userspace counting, owners from /proc scans; docs/afpacket.md lists what it cannot see).");
        let explicit = resolve_explicit(&cfg)?;
        let influx_sink = start_influx(&cfg)?;
        return afpacket::run(cfg, explicit, influx_sink);
    }
    let opts = LoadOptions {
        flow_map_entries: cfg.flow_map_entries,
        flow_slots_per_cpu: cfg.flow_slots_per_cpu,
        owner_refresh_ns: crate::loader::OWNER_REFRESH_NS,
        ringbuf_bytes: cfg.ringbuf_bytes,
    };
    let explicit = resolve_explicit(&cfg)?;
    let influx_sink = start_influx(&cfg)?;

    let (mut flow_bpf, mut sock_bpf) = match load_objects(opts) {
        Ok(objects) => objects,
        Err(e) if falls_back_to_afpacket(&e, privileges::require_for_afpacket().is_ok()) => {
            warn!(error = %e, "The kernel cannot run flowlens' eBPF programs; falling back to AF_PACKET capture (userspace counting, owners from /proc scans; docs/afpacket.md lists what it cannot see).");
            return afpacket::run(cfg, explicit, influx_sink);
        }
        Err(e) => return Err(e.into()),
    };
    let reader = FlowMapReader::from_object(&mut flow_bpf, cfg.flow_slots_per_cpu)
        .map_err(|e| anyhow!("flow maps: {e}"))?;
    let flow_counters: PerCpuArray<MapData, u64> = take_map(&mut flow_bpf, flow::MAP_COUNTERS)?;
    let sock_counters: PerCpuArray<MapData, u64> = take_map(&mut sock_bpf, sock::MAP_COUNTERS)?;
    let ring: RingBuf<MapData> = take_map(&mut sock_bpf, sock::MAP_EVENTS)?;
    let icmp_echo: HashMap<MapData, IcmpEchoKey, u64> =
        take_map(&mut sock_bpf, sock::MAP_ICMP_ECHO)?;

    let stop = stop_on_signals()?;

    let docker = DockerResolver::start(cfg.docker_socket.clone());
    let containers = docker.cache();
    let (tx, rx) = bounded(cfg.event_queue);
    let event_stats = Arc::new(EventStats::default());
    let events = EventReader::start(
        ring,
        tx,
        Arc::clone(&event_stats),
        Arc::clone(&stop),
        docker,
    )
    .context("starting the event reader thread")?;

    let (sinks, influx) = open_sinks(&cfg, influx_sink)?;

    let defaults = TableConfig::default();
    let table = ConversationTable::new(TableConfig {
        max_conversations: cfg.max_conversations,
        max_sockets: cfg.max_sockets,
        idle_timeout_ns: cfg.idle_timeout.as_nanos() as u64,
        // Two export intervals + the owner wait, at least 10 s.
        closed_owner_grace_ns: (2 * cfg.export_interval.as_nanos() as u64)
            .saturating_add(defaults.owner_wait_ns)
            .max(10_000_000_000),
        ..defaults
    });
    let mut p = Pipeline {
        cfg,
        flow_bpf,
        attachments: FlowAttachments::new(),
        reader,
        flow_counters,
        sock_counters,
        icmp_echo,
        icmp_scratch: Vec::new(),
        table,
        rx,
        event_stats,
        barrier: events.barrier(),
        users: UserNames::new(),
        iface_names: BTreeMap::new(),
        containers,
        sinks,
        metrics: Arc::new(Mutex::new(SelfMetrics::default())),
        influx,
        last_lost: 0,
        obs: Vec::with_capacity(4096),
    };

    if explicit.is_empty() {
        p.refresh_interfaces();
    } else {
        p.refresh_interfaces();
        for iface in &explicit {
            if let Err(e) = p.attachments.attach(&mut p.flow_bpf, iface) {
                p.attachments.detach_all(&mut p.flow_bpf);
                return Err(e).with_context(|| format!("attaching to interface {}", iface.name));
            }
        }
    }
    let monitored: BTreeSet<String> = p
        .attachments
        .attached()
        .map(|(_, n)| n.to_string())
        .collect();
    info!(
        interfaces = ?monitored,
        export_interval = ?p.cfg.export_interval,
        "flowlens running."
    );

    let mut schedule = Schedule::new(p.cfg.export_interval);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wake = schedule.next_wake().min(now + Duration::from_millis(200));
        match p.rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(ev) => {
                p.handle_event(ev);
                p.drain_events();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                warn!("The event reader stopped; socket attribution is no longer updated.");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let (poll, export) = schedule.due(Instant::now());
        if poll {
            p.refresh_interfaces();
        }
        if export {
            p.export(false);
        }
    }

    info!("Stopping: flushing the last interval and detaching.");
    events.join();
    p.export(true);
    p.attachments.detach_all(&mut p.flow_bpf);
    close_sinks(&mut p.sinks);
    drop(sock_bpf);
    info!("flowlens stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_fall_back_only_when_packet_sockets_are_allowed() {
        assert!(!falls_back_to_afpacket(&LoadError::Permission, false));
        assert!(falls_back_to_afpacket(&LoadError::Permission, true));
        assert!(falls_back_to_afpacket(
            &LoadError::NoBtf("absent".into()),
            false
        ));
        assert!(falls_back_to_afpacket(
            &LoadError::Program {
                program: "flowlens_xdp",
                message: "invalid argument\nverifier log:\n...".into(),
            },
            false
        ));
        assert!(falls_back_to_afpacket(
            &LoadError::Object {
                object: "flow programs",
                message: "map type not supported".into(),
            },
            false
        ));
    }
}
