//! `flowlens run --capture afpacket` (and the fallback when the kernel cannot
//! run the eBPF programs): one AF_PACKET socket and reader thread per
//! monitored interface, counted in userspace with the twin of the kernel's
//! rules ([`crate::capture`]), owners from /proc scans ([`crate::procscan`]).
//! [`AfPacketSource`] is the flow source the exporter runs.
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

use crossbeam_channel::{never, Receiver};
use flowlens_correlator::{
    cgroup::parse_container,
    conversation::ConversationTable,
    types::{FlowObservation, FlowTuple, Hook},
};
use tracing::{debug, info, warn};

use crate::{
    capture::{linktype, parse_frame, AccountStats, FlowAccounts},
    clock,
    docker::DockerResolver,
    enrich::{CgroupResolver, ExeCache},
    exporter::{AttachError, FlowSource, Now, Timeline, Waited},
    ifaces::Iface,
    metrics::SelfMetrics,
    procscan,
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
/// How often the exporter's wait looks for new flows to rescan for.
const WAIT_STEP: Duration = Duration::from_millis(100);

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

    /// Asks the reader to drain its socket and end (it sees the request
    /// within [`READ_TIMEOUT`]).
    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the reader has ended (its counters are final).
    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the reader to end.
    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads frames until `stop`, then what is still queued (an interface that
/// went away, or the shutdown, loses nothing the socket holds); each is
/// counted under its hook.
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
    let mut draining = false;
    // The queued frames of a socket whose interface is gone come after one
    // ENETDOWN: allow a few errors while draining.
    let mut drain_errors = 0u32;
    loop {
        if !draining && stop.load(Ordering::Relaxed) {
            draining = true;
        }
        let read = if draining {
            socket.recv_queued(&mut buf)
        } else {
            socket.recv(&mut buf)
        };
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) if draining => return,
            Ok(None) => continue,
            Err(_) if draining => {
                drain_errors += 1;
                if drain_errors > 3 {
                    return;
                }
                continue;
            }
            Err(e) => {
                // ENETDOWN once when the interface goes down or away (the
                // frames queued before stay readable); the exporter then
                // detaches it, which stops this thread after a drain.
                if e.raw_os_error() == Some(libc::ENETDOWN) {
                    debug!(iface = %name, "Interface went down or away.");
                    continue;
                }
                failures += 1;
                if failures <= 3 {
                    warn!(iface = %name, error = %e, "Reading the packet socket failed.");
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

/// The AF_PACKET flow source: one capture per interface, /proc scans for owners.
pub struct AfPacketSource {
    captures: BTreeMap<u32, IfaceCapture>,
    new_flows: Arc<AtomicBool>,
    rescan_until: Option<Instant>,
    last_scan: Option<Instant>,
    scans: u64,
    preexisting_sockets: u64,
    cgroups: CgroupResolver,
    exes: ExeCache,
    docker: DockerResolver,
    packets: u64,
    drops: u64,
    /// Parser counters of interfaces no longer captured on.
    closed_stats: AccountStats,
    /// The last counters of interfaces no longer captured on.
    pending: Vec<FlowObservation>,
    /// Detached interfaces whose readers are still draining their sockets
    /// (a detach never waits for them: a new interface is attached at once).
    closing: Vec<IfaceCapture>,
    /// Ends a wait early (an interface appeared).
    wake: Receiver<()>,
}

impl AfPacketSource {
    /// No interface yet; `docker` resolves container names of the owners found.
    pub fn new(docker: DockerResolver) -> Self {
        Self {
            captures: BTreeMap::new(),
            new_flows: Arc::new(AtomicBool::new(false)),
            rescan_until: None,
            last_scan: None,
            scans: 0,
            preexisting_sockets: 0,
            cgroups: CgroupResolver::new(),
            exes: ExeCache::new(Duration::from_secs(300)),
            docker,
            packets: 0,
            drops: 0,
            closed_stats: AccountStats::default(),
            pending: Vec::new(),
            closing: Vec::new(),
            wake: never(),
        }
    }

    /// Owners of every socket there is now.
    fn scan(&mut self, table: &mut ConversationTable) {
        let owners = procscan::scan(&mut self.cgroups, &mut self.exes, clock::monotonic_ns());
        debug!(sockets = owners.len(), "Scanned /proc for socket owners.");
        if self.scans == 0 {
            self.preexisting_sockets = owners.len() as u64;
        }
        for ev in owners {
            if let Some(c) = ev.process.cgroup_path.as_deref().and_then(parse_container) {
                if c.runtime == "docker" {
                    self.docker.want(&c.id);
                }
            }
            table.observe_owner(ev);
        }
        self.scans += 1;
        self.last_scan = Some(Instant::now());
        self.exes.expire();
    }

    /// New flows since the last scan: scan again (at most every
    /// [`RESCAN_MIN_GAP`]) and keep scanning for the correlator's owner wait,
    /// as sockets may get their owner after their first packets (accept()).
    fn maybe_rescan(&mut self, table: &mut ConversationTable) {
        let now = Instant::now();
        if self.new_flows.swap(false, Ordering::Relaxed) {
            let wait = Duration::from_nanos(table.config().owner_wait_ns);
            self.rescan_until = Some(now + wait.max(RESCAN_MIN_GAP));
        }
        let due = self.rescan_until.is_some_and(|t| now <= t)
            && self
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= RESCAN_MIN_GAP);
        if due {
            self.scan(table);
        }
    }

    fn take_socket_stats(&mut self, c: &IfaceCapture) {
        match c.socket.take_stats() {
            Ok(s) => {
                self.packets += s.packets;
                self.drops += s.drops;
            }
            Err(e) => {
                warn!(iface = %c.name, error = %e, "Cannot read PACKET_STATISTICS; drops on this interface are not known.")
            }
        }
    }

    /// The changed counters of one interface, as observations.
    fn take_changed(c: &IfaceCapture, out: &mut Vec<FlowObservation>) {
        let Ok(mut acc) = c.accounts.lock() else {
            return;
        };
        out.extend(acc.ingress.take_changed());
        out.extend(acc.egress.take_changed().into_iter().map(|mut o| {
            o.hook = Hook::Egress;
            o
        }));
    }

    /// Takes the last counters of detached interfaces whose readers ended
    /// (all of them, waiting, when `wait`).
    fn retire_closed(&mut self, wait: bool) {
        let closing = std::mem::take(&mut self.closing);
        for mut c in closing {
            if !wait && !c.is_finished() {
                self.closing.push(c);
                continue;
            }
            c.join();
            self.take_socket_stats(&c);
            if let Ok(acc) = c.accounts.lock() {
                self.closed_stats += acc.ingress.stats();
                self.closed_stats += acc.egress.stats();
            }
            Self::take_changed(&c, &mut self.pending);
        }
    }

    fn stats(&self) -> AccountStats {
        let mut s = self.closed_stats;
        for c in self.captures.values() {
            if let Ok(acc) = c.accounts.lock() {
                s += acc.ingress.stats();
                s += acc.egress.stats();
            }
        }
        s
    }
}

impl FlowSource for AfPacketSource {
    fn name(&self) -> &'static str {
        "afpacket"
    }

    fn timeline(&self) -> Timeline {
        Timeline::Live
    }

    fn now(&self) -> Option<Now> {
        Some(clock::now())
    }

    fn start(&mut self, table: &mut ConversationTable) {
        // Sockets that exist already (after the captures opened: nothing
        // opened between the two is missed by both).
        self.scan(table);
    }

    fn wait(&mut self, table: &mut ConversationTable, until: Option<u64>) -> Waited {
        let left = until.map_or(WAIT_STEP, |u| {
            Duration::from_nanos(u.saturating_sub(clock::monotonic_ns()))
        });
        // An interface appeared: return at once, so the exporter attaches it.
        if self.wake.recv_timeout(left.min(WAIT_STEP)).is_ok() {
            return Waited::Continue;
        }
        self.maybe_rescan(table);
        Waited::Continue
    }

    fn collect(&mut self, table: &mut ConversationTable) -> u64 {
        self.retire_closed(false);
        let mut obs = std::mem::take(&mut self.pending);
        let ifindexes: Vec<u32> = self.captures.keys().copied().collect();
        for i in &ifindexes {
            if let Some(c) = self.captures.remove(i) {
                self.take_socket_stats(&c);
                Self::take_changed(&c, &mut obs);
                self.captures.insert(*i, c);
            }
        }
        for o in &obs {
            table.observe_flow(o);
        }
        self.maybe_rescan(table);
        obs.len() as u64
    }

    fn forget(&mut self, evicted: &[(FlowTuple, u32, Hook)]) {
        for c in self.captures.values() {
            if let Ok(mut acc) = c.accounts.lock() {
                for (tuple, ifindex, hook) in evicted {
                    acc.of(*hook).forget(tuple, *ifindex);
                }
            }
        }
    }

    fn monitored(&self) -> BTreeMap<u32, String> {
        self.captures
            .iter()
            .map(|(i, c)| (*i, c.name.clone()))
            .collect()
    }

    fn attach(&mut self, iface: &Iface) -> Result<(), AttachError> {
        let capture = IfaceCapture::start(iface, Arc::clone(&self.new_flows))?;
        self.captures.insert(iface.index, capture);
        info!(iface = %iface.name, ifindex = iface.index, "Monitoring interface.");
        Ok(())
    }

    fn wake_on(&mut self, wake: Receiver<()>) {
        self.wake = wake;
    }

    fn detach(&mut self, ifindex: u32) {
        if let Some(c) = self.captures.remove(&ifindex) {
            info!(iface = %c.name, ifindex, "Stopped monitoring interface.");
            // Its reader drains what the socket still holds and ends; its
            // last counters go into the first export after that.
            c.request_stop();
            self.closing.push(c);
        }
    }

    fn report(&mut self, m: &mut SelfMetrics) {
        m.afpacket_packets = self.packets;
        m.afpacket_drops = self.drops;
        m.preexisting_sockets = self.preexisting_sockets;
        m.proc_scans = self.scans;
        m.docker_lookups_not_queued = self.docker.queue_full;
        m.userspace_parser = self.stats();
    }

    fn log_detail(&self, m: &SelfMetrics) -> String {
        format!(
            "proc_scans={} afpacket_packets={} afpacket_drops={}",
            m.proc_scans, m.afpacket_packets, m.afpacket_drops
        )
    }

    fn stop(&mut self) {
        // All readers drain at once, then the last counters are taken.
        for c in self.captures.values() {
            c.request_stop();
        }
        for c in self.captures.values_mut() {
            c.join();
        }
        self.retire_closed(true);
    }
}
