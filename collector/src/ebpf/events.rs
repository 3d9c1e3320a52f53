//! The event reader thread: ring buffer -> decoded, enriched events -> the
//! exporter over a bounded queue. Also replays sockets that existed before
//! start-up (from /proc) through the same queue.
//!
//! The ring buffer and the flow map are two paths out of the kernel that are
//! read at different moments. Before an export, the exporter reads the flow
//! map and then asks for an [`EventBarrier`]: the thread drains the ring
//! buffer and answers with [`ReaderEvent::Synced`] behind the events it
//! forwarded, so every owner event emitted before the last counted packet is
//! applied before the records are built.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use crossbeam_channel::{Sender, TrySendError};
use flowlens_correlator::{
    cgroup::parse_container,
    signals::ConnectEvent,
    types::{SocketOwnerEvent, TcpStateChange},
};
use tracing::{debug, warn};

use super::convert::{connect_start, decode_event, exec_path, socket_owner, RawEvent};
use crate::{
    docker::DockerResolver,
    enrich::{CgroupResolver, ExeCache},
    metrics::SelfMetrics,
    procscan,
};

/// What the event reader forwards to the exporter.
#[derive(Debug, Clone)]
pub enum ReaderEvent {
    /// A socket and its owner.
    Owner(SocketOwnerEvent),
    /// A TCP state change.
    TcpState(TcpStateChange),
    /// A step of a local client's TCP connect (start, established, failed).
    Connect(ConnectEvent),
    /// A process executed a file.
    Exec {
        /// tgid.
        pid: u32,
        /// Executable path.
        exe: String,
    },
    /// A process exited.
    Exit {
        /// tgid.
        pid: u32,
    },
    /// Answer to [`EventBarrier::request`] number `n`: every ring-buffer
    /// record committed before that request was forwarded ahead of this.
    Synced(u64),
}

/// How long the reader thread waits to queue a [`ReaderEvent::Synced`]
/// answer behind a full queue (the exporter drains it while it waits).
const SYNC_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A request from the exporter to the reader thread: drain the ring buffer
/// now and answer behind what it held.
#[derive(Debug)]
pub struct EventBarrier {
    /// Number of the latest request.
    requested: AtomicU64,
    /// CLOCK_MONOTONIC time of the latest request: a record stamped later was
    /// committed after it, so the answer need not wait behind it.
    requested_ns: AtomicU64,
    /// eventfd that wakes the thread from `poll`.
    wake: OwnedFd,
}

impl EventBarrier {
    fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            requested: AtomicU64::new(0),
            requested_ns: AtomicU64::new(0),
            // SAFETY: fd is a fresh descriptor owned by nobody else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Asks for a [`ReaderEvent::Synced`]; returns its number. Call it after
    /// reading the flow map.
    pub fn request(&self) -> u64 {
        self.requested_ns
            .store(crate::clock::monotonic_ns(), Ordering::Release);
        let n = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an eventfd we own. A
        // failure (counter saturated) still leaves the thread a 100 ms poll.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        n
    }

    /// The pending request (number, time) if it is newer than `answered`.
    fn pending(&self, answered: u64) -> Option<(u64, u64)> {
        let n = self.requested.load(Ordering::Acquire);
        (n > answered).then(|| (n, self.requested_ns.load(Ordering::Acquire)))
    }

    /// Resets the eventfd after it woke `poll`.
    fn clear_wake(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from an eventfd we own
        // (non-blocking: EAGAIN when already clear).
        let _ = unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

/// Counters of the event path (exported in self-metrics).
#[derive(Debug, Default)]
pub struct EventStats {
    /// Ring-buffer records read.
    pub received: AtomicU64,
    /// Records that could not be decoded.
    pub decode_errors: AtomicU64,
    /// Events lost because the exporter stopped reading the queue (it ended
    /// while the reader still held events). A full queue is not a loss: the
    /// reader waits, and the kernel's ring buffer holds what comes meanwhile
    /// (its overflow is the kernel counter `ringbuf_full`).
    pub queue_overflow: AtomicU64,
    /// Times the reader waited for room in the queue (the exporter was busy
    /// exporting): back-pressure, not a loss.
    pub queue_waits: AtomicU64,
    /// Sockets found in /proc at start-up.
    pub preexisting_sockets: AtomicU64,
    /// Docker lookups not queued (lookup queue full).
    pub docker_queue_full: AtomicU64,
    /// Exports that stopped waiting for the reader to catch up (see [`EventBarrier`]).
    pub sync_timeouts: AtomicU64,
}

impl EventStats {
    /// Adds these counters to the metrics snapshot.
    pub fn report(&self, m: &mut SelfMetrics) {
        m.events_received = self.received.load(Ordering::Relaxed);
        m.events_undecodable = self.decode_errors.load(Ordering::Relaxed);
        m.events_queue_overflow = self.queue_overflow.load(Ordering::Relaxed);
        m.events_queue_waits = self.queue_waits.load(Ordering::Relaxed);
        m.events_sync_timeouts = self.sync_timeouts.load(Ordering::Relaxed);
        m.preexisting_sockets = self.preexisting_sockets.load(Ordering::Relaxed);
        m.docker_lookups_not_queued = self.docker_queue_full.load(Ordering::Relaxed);
    }
}

/// Runs until `stop` is set.
pub struct EventReader {
    handle: Option<JoinHandle<()>>,
    barrier: Arc<EventBarrier>,
}

struct Ctx {
    tx: Sender<ReaderEvent>,
    stats: Arc<EventStats>,
    cgroups: CgroupResolver,
    exes: ExeCache,
    docker: DockerResolver,
}

impl Ctx {
    /// Queues `ev` for the exporter. A full queue means the exporter is busy
    /// building an interval: wait for it (it drains the queue before and
    /// while it waits for a barrier, and when it stops), so a burst backs up
    /// into the kernel's ring buffer instead of being dropped here.
    fn send(&self, ev: ReaderEvent) {
        let ev = match self.tx.try_send(ev) {
            Ok(()) => return,
            Err(TrySendError::Full(ev)) => ev,
            Err(TrySendError::Disconnected(_)) => {
                self.stats.queue_overflow.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.stats.queue_waits.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(ev).is_err() {
            // The exporter is gone: nobody will apply it.
            self.stats.queue_overflow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn want_container(&mut self, cgroup_path: Option<&str>) {
        if let Some(c) = cgroup_path.and_then(parse_container) {
            if c.runtime == "docker" {
                self.docker.want(&c.id);
                self.stats
                    .docker_queue_full
                    .store(self.docker.queue_full, Ordering::Relaxed);
            }
        }
    }

    /// Decodes and forwards one record; returns its kernel timestamp.
    fn handle(&mut self, buf: &[u8]) -> Option<u64> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let ev = match decode_event(buf) {
            Ok(e) => e,
            Err(e) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                debug!(error = ?e, len = buf.len(), "Undecodable ring-buffer record.");
                return None;
            }
        };
        let ts_ns = ev.ts_ns();
        match ev {
            RawEvent::Sock(s) => {
                let cgroup_path = self.cgroups.path_of(s.cgroup_id);
                self.want_container(cgroup_path.as_deref());
                let exe = self.exes.exe(s.pid);
                self.send(ReaderEvent::Owner(socket_owner(&s, exe, cgroup_path)));
                if let Some(c) = connect_start(&s) {
                    self.send(ReaderEvent::Connect(c));
                }
            }
            RawEvent::TcpState(t, connect) => {
                self.send(ReaderEvent::TcpState(t));
                if let Some(c) = connect {
                    self.send(ReaderEvent::Connect(c));
                }
            }
            RawEvent::Exec(p) => {
                // The path given to execve() may be a symlink or /proc/self/exe
                // (busybox applets): prefer what the kernel resolved, while the
                // process still exists.
                let exe = crate::enrich::proc_exe(p.pid).unwrap_or_else(|| exec_path(&p));
                self.exes.exec(p.pid, exe.clone());
                // Remember the cgroup now: a short-lived container may be gone at export.
                let _ = self.cgroups.path_of(p.cgroup_id);
                self.send(ReaderEvent::Exec { pid: p.pid, exe });
            }
            RawEvent::Exit(p) => {
                self.exes.exit(p.pid);
                self.send(ReaderEvent::Exit { pid: p.pid });
            }
        }
        Some(ts_ns)
    }

    /// Answers barrier request `n` behind everything forwarded so far. It
    /// waits for room: the exporter drains the queue while it waits for this.
    fn answer(&self, n: u64) {
        if let Err(e) = self
            .tx
            .send_timeout(ReaderEvent::Synced(n), SYNC_SEND_TIMEOUT)
        {
            debug!(error = %e, "Barrier answer not queued (the exporter stopped waiting).");
        }
    }
}

impl EventReader {
    /// Starts the thread: first the /proc scan, then the ring buffer.
    /// Barrier requests ([`EventReader::barrier`]) are answered once the scan is done.
    pub fn start(
        mut ring: RingBuf<MapData>,
        tx: Sender<ReaderEvent>,
        stats: Arc<EventStats>,
        stop: Arc<AtomicBool>,
        docker: DockerResolver,
    ) -> std::io::Result<Self> {
        let barrier = Arc::new(EventBarrier::new()?);
        let thread_barrier = Arc::clone(&barrier);
        let handle = thread::Builder::new()
            .name("flowlens-events".into())
            .spawn(move || {
                let mut ctx = Ctx {
                    tx,
                    stats,
                    cgroups: CgroupResolver::new(),
                    exes: ExeCache::new(Duration::from_secs(300)),
                    docker,
                };
                let pre = procscan::scan(
                    &mut ctx.cgroups,
                    &mut ctx.exes,
                    crate::clock::monotonic_ns(),
                );
                ctx.stats
                    .preexisting_sockets
                    .store(pre.len() as u64, Ordering::Relaxed);
                for ev in pre {
                    ctx.want_container(ev.process.cgroup_path.as_deref());
                    ctx.send(ReaderEvent::Owner(ev));
                }
                let barrier = thread_barrier;
                let fd = ring.as_raw_fd();
                let mut answered = 0u64;
                let mut since_expire = 0u32;
                loop {
                    // Read the request before draining: what was committed before it is drained below.
                    let mut pending = barrier.pending(answered);
                    while let Some(item) = ring.next() {
                        let ts = ctx.handle(&item);
                        // Under a steady stream the ring may never run empty: a record
                        // stamped after the request ends what the request waits for.
                        if let (Some((n, at)), Some(ts)) = (pending, ts) {
                            if ts > at {
                                ctx.answer(n);
                                answered = n;
                                pending = barrier.pending(answered);
                            }
                        }
                    }
                    if let Some((n, _)) = pending {
                        ctx.answer(n);
                        answered = n;
                    }
                    if stop.load(Ordering::Relaxed) {
                        // Final drain happened above.
                        break;
                    }
                    let mut pfds = [
                        libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: barrier.wake.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: pfds is a valid array of 2 pollfds for the duration of the call.
                    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, 100) };
                    if pfds[1].revents != 0 {
                        barrier.clear_wake();
                    }
                    if rc < 0 {
                        let err = std::io::Error::last_os_error();
                        if err.kind() != std::io::ErrorKind::Interrupted {
                            warn!(error = %err, "poll on the ring buffer failed.");
                            thread::sleep(Duration::from_millis(100));
                        }
                    }
                    since_expire += 1;
                    if since_expire >= 100 {
                        since_expire = 0;
                        ctx.exes.expire();
                    }
                }
            })?;
        Ok(Self {
            handle: Some(handle),
            barrier,
        })
    }

    /// The barrier the exporter waits on before an export.
    pub fn barrier(&self) -> Arc<EventBarrier> {
        Arc::clone(&self.barrier)
    }

    /// Whether the thread has ended (after `stop`, its final drain is done).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the thread after `stop` was set.
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
