//! A loaded and attached copy of `sock.bpf.o`, its ring-buffer reader and
//! counters, and the identities (netns, cgroup, comm) the events are checked
//! against.

use std::{
    os::unix::fs::MetadataExt,
    path::PathBuf,
    thread::sleep,
    time::{Duration, Instant},
};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use flowlens_collector::loader::{load_sock_hooks, LoadOptions};
use flowlens_ebpf::{abi::*, sock};

/// How long a test waits for the events it expects.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// One decoded ring-buffer record.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Sock(SockEvent),
    TcpState(TcpStateEvent),
    Exec(ProcEvent),
    Exit(ProcEvent),
}

fn decode_as<T: aya::Pod>(buf: &[u8], hdr: &EventHdr) -> T {
    assert_eq!(
        hdr.size as usize,
        size_of::<T>(),
        "size of event type {}",
        hdr.kind
    );
    assert!(
        buf.len() >= size_of::<T>(),
        "record of {} bytes for type {}",
        buf.len(),
        hdr.kind
    );
    read_pod::<T>(buf).expect("length checked")
}

/// Decodes a record after checking its header (type and size).
pub fn decode(buf: &[u8]) -> Event {
    let hdr: EventHdr = read_pod(buf).expect("record shorter than its header");
    assert_ne!(hdr.ts_ns, 0, "event without a timestamp");
    match hdr.kind {
        EV_SOCK => Event::Sock(decode_as(buf, &hdr)),
        EV_TCP_STATE => Event::TcpState(decode_as(buf, &hdr)),
        EV_EXEC => Event::Exec(decode_as(buf, &hdr)),
        EV_EXIT => Event::Exit(decode_as(buf, &hdr)),
        other => panic!("unknown event type {other}"),
    }
}

/// `sock.bpf.o` attached to every hook, with its maps taken out so they
/// outlive the programs (see [`SockProbe::detach`]).
pub struct SockProbe {
    ebpf: Option<Ebpf>,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
}

impl SockProbe {
    /// Loads and attaches the object; `ring_bytes` overrides the ring size.
    pub fn attach(ring_bytes: Option<u32>) -> Self {
        Self::attach_with(ring_bytes, None)
    }

    /// As `attach`; `refresh_ns` overrides how long after its report a socket
    /// in use is reported again (`fl_refresh_ns`, 60 s by default).
    pub fn attach_with(ring_bytes: Option<u32>, refresh_ns: Option<u64>) -> Self {
        // The collector's loader: the build and hooks this kernel gets
        // (tracepoints or fexit for send/recv, the exit tracepoint's form).
        let opts = LoadOptions {
            flow_map_entries: 1024,
            flow_slots_per_cpu: 0,
            owner_refresh_ns: refresh_ns.unwrap_or(60_000_000_000),
            ringbuf_bytes: ring_bytes.unwrap_or(1 << 20),
        };
        let (mut ebpf, hooks) =
            load_sock_hooks(opts, true).unwrap_or_else(|e| panic!("load sock.bpf.o: {e}"));
        eprintln!(
            "socket hooks: {} build, send/recv {:?}",
            hooks.build.name(),
            hooks.send_recv
        );
        let ring = RingBuf::try_from(ebpf.take_map(sock::MAP_EVENTS).expect("events map"))
            .expect("ring buffer");
        let counters =
            PerCpuArray::try_from(ebpf.take_map(sock::MAP_COUNTERS).expect("counters map"))
                .expect("per-CPU array");
        Self {
            ebpf: Some(ebpf),
            ring,
            counters,
        }
    }

    /// Appends every record available now.
    pub fn drain(&mut self, events: &mut Vec<Event>) {
        while let Some(item) = self.ring.next() {
            events.push(decode(&item));
        }
    }

    /// Reads events until `done` holds for everything read so far.
    pub fn collect_until(
        &mut self,
        events: &mut Vec<Event>,
        what: &str,
        done: impl Fn(&[Event]) -> bool,
    ) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            self.drain(events);
            if done(events) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {events:#?}"
            );
            sleep(Duration::from_millis(5));
        }
    }

    /// A counter summed over the CPUs.
    pub fn counter(&self, idx: u32) -> u64 {
        self.counters.get(&idx, 0).expect("counter").iter().sum()
    }

    /// Detaches and unloads the programs; the maps stay readable. Waits out
    /// programs still running on other CPUs so the counters are final.
    pub fn detach(&mut self) {
        drop(self.ebpf.take());
        sleep(Duration::from_millis(200));
    }

    /// No event was lost and the dedup map never refused an entry.
    pub fn assert_no_loss(&self) {
        assert_eq!(self.counter(CNT_RINGBUF_FULL), 0, "ring buffer full");
        assert_eq!(self.counter(CNT_SOCK_MAP_FULL), 0, "sock_seen map full");
    }
}

/// The socket events of one socket cookie.
pub fn sock_events(events: &[Event], cookie: u64) -> Vec<SockEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Sock(s) if s.cookie == cookie => Some(*s),
            _ => None,
        })
        .collect()
}

/// The (old, new) state changes of one socket cookie, in order.
pub fn tcp_states(events: &[Event], cookie: u64) -> Vec<TcpStateEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TcpState(s) if s.cookie == cookie => Some(*s),
            _ => None,
        })
        .collect()
}

/// A fixed-size NUL-padded kernel string as text.
pub fn cstr(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).expect("utf-8")
}

/// Inode of this process's network namespace (what `skc_net->ns.inum` is).
pub fn own_netns() -> u32 {
    let ino = std::fs::metadata("/proc/self/ns/net").expect("netns").ino();
    u32::try_from(ino).expect("netns inode fits u32")
}

/// `bpf_get_current_cgroup_id()` of a process: the inode of its cgroup v2 directory.
pub fn cgroup_id(pid: u32) -> u64 {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
        })
        .expect("a cgroup2 mount");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    let dir = PathBuf::from(mount).join(path.trim_start_matches('/'));
    std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}

/// The comm of the calling thread (what `bpf_get_current_comm` returns).
pub fn thread_comm() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .expect("comm")
        .trim_end()
        .to_string()
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    u32::try_from(unsafe { libc::gettid() }).expect("tid")
}
