//! `flowlens run --capture afpacket` (and the fallback when the kernel cannot
//! run the eBPF programs): one AF_PACKET socket and reader thread per
//! monitored interface, counted in userspace with the replay's twin of the
//! kernel's rules ([`crate::replay::flows`]), owners from /proc scans
//! ([`crate::procscan`]), then the same correlator, sinks and export loop.
//!
//! What this mode cannot see that eBPF does: docs/afpacket.md.

pub mod socket;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;
use flowlens_correlator::{
    cgroup::parse_container,
    conversation::{ConversationTable, TableConfig},
    types::{FlowObservation, Hook},
};
use tracing::{debug, error, info, warn};

use crate::{
    clock,
    config::Config,
    docker::{ContainerCache, DockerResolver},
    enrich::{CgroupResolver, ExeCache, UserNames},
    ifaces::{self, Iface},
    influx::{sink::InfluxSink, stats::InfluxStats},
    metrics::SelfMetrics,
    pipeline::{close_sinks, export_records, open_sinks, stop_on_signals, Schedule},
    procscan,
    replay::{
        flows::FlowAccounts,
        parse::{linktype, parse_frame},
    },
    sinks::RecordSink,
};
use socket::PacketSocket;

/// How often a reader thread wakes without traffic (to see a stop request).
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// Bytes of each frame copied to userspace: every header the parser reads
/// (Ethernet, two VLAN tags, IPv6 with extension headers, TCP with options);
/// lengths come from the headers and the frame's wire length.
const SNAPLEN: usize = 2048;
/// Socket receive buffer: bursts wait here while the reader is busy.
const RCVBUF_BYTES: usize = 8 << 20;
/// /proc scans are at least this far apart.
const RESCAN_MIN_GAP: Duration = Duration::from_millis(500);

/// Cumulative counters of one interface, per hook (what the kernel flow map
/// holds in eBPF mode).
#[derive(Default)]
struct IfaceAccounts {
    ingress: FlowAccounts,
    egress: FlowAccounts,
}

impl IfaceAccounts {
    fn of(&mut self, hook: Hook) -> &mut FlowAccounts {
        match hook {
            Hook::Ingress => &mut self.ingress,
            Hook::Egress => &mut self.egress,
        }
    }
}

/// One monitored interface: its socket, reader thread and counters.
struct IfaceCapture {
    name: String,
    socket: Arc<PacketSocket>,
    accounts: Arc<Mutex<IfaceAccounts>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IfaceCapture {
    fn start(iface: &Iface, new_flows: Arc<AtomicBool>) -> std::io::Result<Self> {
        let socket = Arc::new(PacketSocket::open(iface.index, READ_TIMEOUT, RCVBUF_BYTES)?);
        let accounts = Arc::new(Mutex::new(IfaceAccounts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, accounts, stop) = (
                Arc::clone(&socket),
                Arc::clone(&accounts),
                Arc::clone(&stop),
            );
            let (ifindex, name) = (iface.index, iface.name.clone());
            std::thread::Builder::new()
                .name(format!("afpacket-{}", iface.index))
                .spawn(move || read_loop(&socket, ifindex, &name, &accounts, &stop, &new_flows))?
        };
        Ok(Self {
            name: iface.name.clone(),
            socket,
            accounts,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads frames until `stop`; each is counted under its hook.
fn read_loop(
    socket: &PacketSocket,
    ifindex: u32,
    name: &str,
    accounts: &Mutex<IfaceAccounts>,
    stop: &AtomicBool,
    new_flows: &AtomicBool,
) {
    let mut buf = vec![0u8; SNAPLEN];
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let frame = match socket.recv(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                // ENETDOWN once when the interface goes away; the interface
                // poll then stops this thread.
                if e.raw_os_error() == Some(libc::ENETDOWN) {
                    debug!(iface = %name, "Interface went down or away.");
                } else {
                    failures += 1;
                    if failures <= 3 {
                        warn!(iface = %name, error = %e, "Reading the packet socket failed.");
                    }
                }
                std::thread::sleep(READ_TIMEOUT);
                continue;
            }
        };
        let ts = clock::monotonic_ns();
        let Some(data) = buf.get(..frame.captured) else {
            continue;
        };
        // Frames the kernel programs would skip (not IP, malformed) are
        // skipped alike; PACKET_STATISTICS still counts them as received.
        let Ok(m) = parse_frame(linktype::ETHERNET, data) else {
            continue;
        };
        let Ok(mut acc) = accounts.lock() else {
            return;
        };
        let acc = acc.of(frame.hook);
        let before = acc.len();
        acc.account(&m, frame.wire_len, ifindex, ts);
        if acc.len() > before {
            new_flows.store(true, Ordering::Relaxed);
        }
    }
}

/// The AF_PACKET pipeline's state between exports.
struct AfPacketPipeline {
    cfg: Config,
    captures: BTreeMap<u32, IfaceCapture>,
    attach_failures: u64,
    new_flows: Arc<AtomicBool>,
    rescan_until: Option<Instant>,
    last_scan: Option<Instant>,
    scans: u64,
    cgroups: CgroupResolver,
    exes: ExeCache,
    docker: DockerResolver,
    containers: ContainerCache,
    table: ConversationTable,
    users: UserNames,
    iface_names: BTreeMap<u32, String>,
    sinks: Vec<Box<dyn RecordSink>>,
    metrics: SelfMetrics,
    influx: Option<Arc<InfluxStats>>,
    last_lost: u64,
}

impl AfPacketPipeline {
    fn attach(&mut self, iface: &Iface) -> std::io::Result<()> {
        let capture = IfaceCapture::start(iface, Arc::clone(&self.new_flows))?;
        self.captures.insert(iface.index, capture);
        Ok(())
    }

    fn detach(&mut self, ifindex: u32) {
        if let Some(mut c) = self.captures.remove(&ifindex) {
            c.stop();
            self.take_socket_stats(&c);
            // Its last counters still go into the next export.
            self.flush_accounts(&c);
        }
    }

    /// Captures new interfaces that are up and stops vanished ones (auto mode).
    fn refresh_interfaces(&mut self) {
        let now = ifaces::list();
        for (idx, iface) in &now {
            self.iface_names.insert(*idx, iface.name.clone());
        }
        if !self.cfg.ifaces.is_empty() {
            return;
        }
        let gone: Vec<u32> = self
            .captures
            .keys()
            .copied()
            .filter(|i| !now.contains_key(i))
            .collect();
        for i in gone {
            self.detach(i);
        }
        for iface in now.values().filter(|i| i.up && i.is_ethernet()) {
            if !self.captures.contains_key(&iface.index) {
                if let Err(e) = self.attach(iface) {
                    self.attach_failures += 1;
                    warn!(iface = %iface.name, error = %e, "Cannot open a packet socket; this interface's traffic is not counted.");
                }
            }
        }
    }

    /// Owners of every socket there is now.
    fn scan(&mut self) {
        let owners = procscan::scan(&mut self.cgroups, &mut self.exes, clock::monotonic_ns());
        debug!(sockets = owners.len(), "Scanned /proc for socket owners.");
        if self.scans == 0 {
            self.metrics.preexisting_sockets = owners.len() as u64;
        }
        for ev in owners {
            if let Some(c) = ev.process.cgroup_path.as_deref().and_then(parse_container) {
                if c.runtime == "docker" {
                    self.docker.want(&c.id);
                }
            }
            self.table.observe_owner(ev);
        }
        self.scans += 1;
        self.last_scan = Some(Instant::now());
        self.exes.expire();
    }

    /// New flows since the last scan: scan again (at most every
    /// [`RESCAN_MIN_GAP`]) and keep scanning for the correlator's owner wait,
    /// as sockets may get their owner after their first packets (accept()).
    fn maybe_rescan(&mut self) {
        let now = Instant::now();
        if self.new_flows.swap(false, Ordering::Relaxed) {
            let wait = Duration::from_nanos(self.table.config().owner_wait_ns);
            self.rescan_until = Some(now + wait.max(RESCAN_MIN_GAP));
        }
        let due = self.rescan_until.is_some_and(|t| now <= t)
            && self
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= RESCAN_MIN_GAP);
        if due {
            self.scan();
        }
    }

    fn take_socket_stats(&mut self, c: &IfaceCapture) {
        match c.socket.take_stats() {
            Ok(s) => {
                self.metrics.afpacket_packets += s.packets;
                self.metrics.afpacket_drops += s.drops;
            }
            Err(e) => {
                warn!(iface = %c.name, error = %e, "Cannot read PACKET_STATISTICS; drops on this interface are not known.")
            }
        }
    }

    /// Feeds the changed counters of one interface to the correlator.
    fn flush_accounts(&mut self, c: &IfaceCapture) {
        let obs: Vec<FlowObservation> = {
            let Ok(mut acc) = c.accounts.lock() else {
                return;
            };
            let mut obs = acc.ingress.take_changed();
            obs.extend(acc.egress.take_changed().into_iter().map(|mut o| {
                o.hook = Hook::Egress;
                o
            }));
            obs
        };
        for o in &obs {
            self.table.observe_flow(o);
        }
    }

    /// One interval; `last`: the final one, where nothing waits for its owner.
    fn export(&mut self, last: bool) {
        let ifindexes: Vec<u32> = self.captures.keys().copied().collect();
        for i in &ifindexes {
            if let Some(c) = self.captures.remove(i) {
                self.take_socket_stats(&c);
                self.flush_accounts(&c);
                self.captures.insert(*i, c);
            }
        }
        self.maybe_rescan();
        let records = export_records(
            &mut self.table,
            &mut self.users,
            &self.iface_names,
            &self.containers,
            &self.cfg.host,
            last,
        );
        let mut entries = 0usize;
        let evicted = self.table.take_evicted_flows();
        for c in self.captures.values() {
            if let Ok(mut acc) = c.accounts.lock() {
                for (tuple, ifindex, hook) in &evicted {
                    acc.of(*hook).forget(tuple, *ifindex);
                }
                entries += acc.ingress.len() + acc.egress.len();
            }
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
        let m = &mut self.metrics;
        m.intervals += 1;
        m.records_exported += exported;
        m.records_lost_sink += lost;
        m.kernel_flow_entries = entries;
        m.interfaces_monitored = self.captures.len() as u64;
        m.interface_attach_failures = self.attach_failures;
        m.table = self.table.stats();
        m.influx = self.influx.as_ref().map(|s| s.snapshot());
        let lost_total = m.lost_total();
        info!(
            records = exported,
            conversations = m.table.conversations_active,
            flows = entries,
            sockets = m.table.sockets_tracked,
            proc_scans = self.scans,
            afpacket_packets = m.afpacket_packets,
            afpacket_drops = m.afpacket_drops,
            lost = lost_total,
            unattributed_local = m.table.records_unattributed_local,
            awaiting_owner = m.table.conversations_awaiting_owner,
            "Interval exported."
        );
        m.log_new_losses(
            &mut self.last_lost,
            "afpacket_drops: the packet sockets' queues overflowed",
        );
    }
}

/// Runs the AF_PACKET pipeline until SIGINT/SIGTERM; flushes the last
/// interval. `explicit`: the `--iface` interfaces (empty: every interface
/// that is up, and new ones).
pub fn run(
    cfg: Config,
    explicit: Vec<Iface>,
    influx_sink: Option<InfluxSink>,
) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let docker = DockerResolver::start(cfg.docker_socket.clone());
    let containers = docker.cache();
    let (sinks, influx) = open_sinks(&cfg, influx_sink)?;
    let table = ConversationTable::new(TableConfig {
        max_conversations: cfg.max_conversations,
        max_sockets: cfg.max_sockets,
        idle_timeout_ns: cfg.idle_timeout.as_nanos() as u64,
        ..TableConfig::default()
    });
    let mut p = AfPacketPipeline {
        cfg,
        captures: BTreeMap::new(),
        attach_failures: 0,
        new_flows: Arc::new(AtomicBool::new(false)),
        rescan_until: None,
        last_scan: None,
        scans: 0,
        cgroups: CgroupResolver::new(),
        exes: ExeCache::new(Duration::from_secs(300)),
        docker,
        containers,
        table,
        users: UserNames::new(),
        iface_names: BTreeMap::new(),
        sinks,
        metrics: SelfMetrics::default(),
        influx,
        last_lost: 0,
    };
    p.refresh_interfaces();
    for iface in &explicit {
        if let Err(e) = p.attach(iface) {
            for i in p.captures.keys().copied().collect::<Vec<_>>() {
                p.detach(i);
            }
            return Err(e).with_context(|| {
                format!("opening an AF_PACKET socket on interface {}", iface.name)
            });
        }
    }
    // Sockets that exist already (capture first: nothing opened between the
    // two is missed by both).
    p.scan();
    let monitored: Vec<&str> = p.captures.values().map(|c| c.name.as_str()).collect();
    info!(
        capture = "afpacket",
        interfaces = ?monitored,
        export_interval = ?p.cfg.export_interval,
        "flowlens running."
    );

    let mut schedule = Schedule::new(p.cfg.export_interval);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        p.maybe_rescan();
        let (poll, export) = schedule.due(Instant::now());
        if poll {
            p.refresh_interfaces();
        }
        if export {
            p.export(false);
        }
    }

    info!("Stopping: flushing the last interval and closing the packet sockets.");
    for c in p.captures.values_mut() {
        c.stop();
    }
    p.export(true);
    close_sinks(&mut p.sinks);
    info!("flowlens stopped.");
    Ok(())
}
