//! The event reader thread: ring buffer -> decoded, enriched events -> the
//! pipeline over a bounded queue. Also replays sockets that existed before
//! start-up (from /proc) through the same queue.

use std::{
    os::fd::AsRawFd,
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
    types::{ProcessIdentity, SocketOwnerEvent, TcpStateChange},
};
use tracing::{debug, warn};

use crate::{
    docker::DockerResolver,
    enrich::{CgroupResolver, ExeCache},
    procscan,
    readers::{c_str, decode_event, mapped_to_ip, role_of, RawEvent},
};

/// What the pipeline receives.
#[derive(Debug, Clone)]
pub enum PipelineEvent {
    /// A socket and its owner.
    Owner(SocketOwnerEvent),
    /// A TCP state change.
    TcpState(TcpStateChange),
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
}

/// Counters of the event path (exported in self-metrics).
#[derive(Debug, Default)]
pub struct EventStats {
    /// Ring-buffer records read.
    pub received: AtomicU64,
    /// Records that could not be decoded.
    pub decode_errors: AtomicU64,
    /// Events lost because the pipeline queue was full.
    pub queue_overflow: AtomicU64,
    /// Sockets found in /proc at start-up.
    pub preexisting_sockets: AtomicU64,
    /// Docker lookups not queued (lookup queue full).
    pub docker_queue_full: AtomicU64,
}

/// Runs until `stop` is set.
pub struct EventReader {
    handle: Option<JoinHandle<()>>,
}

struct Ctx {
    tx: Sender<PipelineEvent>,
    stats: Arc<EventStats>,
    cgroups: CgroupResolver,
    exes: ExeCache,
    docker: DockerResolver,
}

impl Ctx {
    fn send(&self, ev: PipelineEvent) {
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.queue_overflow.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
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

    fn handle(&mut self, buf: &[u8]) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let ev = match decode_event(buf) {
            Ok(e) => e,
            Err(e) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                debug!(error = ?e, len = buf.len(), "Undecodable ring-buffer record.");
                return;
            }
        };
        match ev {
            RawEvent::Sock(s) => {
                let cgroup_path = self.cgroups.path_of(s.cgroup_id);
                self.want_container(cgroup_path.as_deref());
                let raddr = mapped_to_ip(s.raddr);
                let remote = if s.rport == 0 && raddr.is_unspecified() {
                    None
                } else {
                    Some((raddr, s.rport))
                };
                let process = ProcessIdentity {
                    pid: s.pid,
                    comm: c_str(&s.comm),
                    exe: self.exes.exe(s.pid),
                    uid: s.uid,
                    gid: s.gid,
                    cgroup_id: s.cgroup_id,
                    cgroup_path,
                };
                self.send(PipelineEvent::Owner(SocketOwnerEvent {
                    cookie: s.cookie,
                    proto: s.proto,
                    local: (mapped_to_ip(s.laddr), s.lport),
                    remote,
                    netns: s.netns,
                    role: role_of(s.role),
                    process,
                    ts_ns: s.hdr.ts_ns,
                }));
            }
            RawEvent::TcpState(t) => self.send(PipelineEvent::TcpState(t)),
            RawEvent::Exec(p) => {
                // The path given to execve() may be a symlink or /proc/self/exe
                // (busybox applets): prefer what the kernel resolved, while the
                // process still exists.
                let exe = crate::enrich::proc_exe(p.pid).unwrap_or_else(|| c_str(&p.exe));
                self.exes.exec(p.pid, exe.clone());
                // Remember the cgroup now: a short-lived container may be gone at export.
                let _ = self.cgroups.path_of(p.cgroup_id);
                self.send(PipelineEvent::Exec { pid: p.pid, exe });
            }
            RawEvent::Exit(p) => {
                self.exes.exit(p.pid);
                self.send(PipelineEvent::Exit { pid: p.pid });
            }
        }
    }
}

impl EventReader {
    /// Starts the thread: first the /proc scan, then the ring buffer.
    pub fn start(
        mut ring: RingBuf<MapData>,
        tx: Sender<PipelineEvent>,
        stats: Arc<EventStats>,
        stop: Arc<AtomicBool>,
        docker: DockerResolver,
    ) -> std::io::Result<Self> {
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
                    ctx.send(PipelineEvent::Owner(ev));
                }
                let fd = ring.as_raw_fd();
                let mut since_expire = 0u32;
                loop {
                    while let Some(item) = ring.next() {
                        ctx.handle(&item);
                    }
                    if stop.load(Ordering::Relaxed) {
                        // Final drain happened above.
                        break;
                    }
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: pfd is a valid pollfd for the duration of the call.
                    let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
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
        })
    }

    /// Waits for the thread after `stop` was set.
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
