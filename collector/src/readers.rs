//! Kernel maps and ring buffer -> domain types. This is the one place where
//! kernel structs become correlator types.

use std::{
    collections::{hash_map::Entry, BTreeMap, HashMap as StdHashMap},
    mem::size_of,
    net::{IpAddr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{fence, AtomicU32, AtomicU64, Ordering},
};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use flowlens_correlator::types::{FlowObservation, FlowTuple, Hook, Role, TcpStateChange};
use flowlens_ebpf::abi::{
    self, FlowCtl, FlowKey, FlowSlot, FlowValue, IcmpEchoKey, ProcEvent, SockEvent, TcpStateEvent,
};

/// Converts a stored (IPv4-mapped or IPv6) address to the domain form.
pub fn mapped_to_ip(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Converts a domain address to the stored form.
pub fn ip_to_mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn hook_of(h: u8) -> Hook {
    if h == abi::FLOW_HOOK_TC_EGRESS {
        Hook::Egress
    } else {
        Hook::Ingress
    }
}

/// Sums the per-CPU values of one flow into an observation.
pub fn observation(key: &FlowKey, per_cpu: &[FlowValue]) -> FlowObservation {
    let sum = sum_per_cpu(per_cpu);
    let mut acc = FlowAcc::default();
    acc.add(sum.packets, sum.bytes, &sum);
    observation_of(key, &acc)
}

/// The kernel key of an observation, for deleting evicted entries.
pub fn flow_key(tuple: &FlowTuple, ifindex: u32, hook: Hook) -> FlowKey {
    FlowKey {
        src: ip_to_mapped(tuple.src),
        dst: ip_to_mapped(tuple.dst),
        sport: tuple.sport,
        dport: tuple.dport,
        proto: tuple.proto,
        hook: match hook {
            Hook::Ingress => abi::FLOW_HOOK_XDP_INGRESS,
            Hook::Egress => abi::FLOW_HOOK_TC_EGRESS,
        },
        pad: 0,
        ifindex,
    }
}

/// The slot table mapped into this process (`BPF_F_MMAPABLE`): read in place,
/// without a syscall per slot.
struct SlotView {
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
    ptr: *mut FlowSlot,
    len_bytes: usize,
    slots: usize,
    /// Slots of one CPU: slot `i` belongs to CPU `i / per_cpu`.
    per_cpu: usize,
}

// SAFETY: the mapping is process-wide memory; all access goes through
// volatile/atomic reads (and writes in `clear`), never through references
// that assume exclusivity.
unsafe impl Send for SlotView {}

impl SlotView {
    fn new(map: MapData, slots: usize) -> std::io::Result<Self> {
        let len_bytes = mapping_len(slots)?;
        // Read-only: the collector never writes the kernel's counters.
        let ptr = map_fd(&map, len_bytes, libc::PROT_READ)?;
        Ok(Self {
            _map: map,
            ptr: ptr.cast(),
            len_bytes,
            slots,
            per_cpu: slots / crate::loader::possible_cpus(),
        })
    }

    /// A consistent copy of slot `i`, or None while it is unused (seq 0) or
    /// changing hands (odd seq, or seq changed during the copy).
    fn read(&self, i: usize) -> Option<FlowSlot> {
        match self.read_slot(i) {
            SlotRead::Stable(s) => Some(s),
            SlotRead::Unused | SlotRead::Busy => None,
        }
    }

    fn read_slot(&self, i: usize) -> SlotRead {
        if i >= self.slots {
            return SlotRead::Unused;
        }
        // SAFETY: i < slots, so the slot lies inside the mapping; seq is the
        // slot's first field, 4-byte aligned (slots are 128-byte aligned).
        let slot = unsafe { self.ptr.add(i) };
        // SAFETY: as above; AtomicU32 has the layout of u32.
        let seq = unsafe { &*(slot.cast::<AtomicU32>()) };
        let before = seq.load(Ordering::Acquire);
        if before == 0 {
            return SlotRead::Unused;
        }
        if before & 1 == 1 {
            return SlotRead::Busy;
        }
        // SAFETY: in bounds; FlowSlot is plain old data, any bytes are valid.
        let mut copy = unsafe { std::ptr::read_volatile(slot) };
        // The counters again, each as one 8-byte load (the kernel adds to them
        // while we read; a byte-wise torn copy could run ahead of the truth).
        // SAFETY: in bounds; the fields are 8-byte aligned (slot offset 56 +
        // 8k in a 128-byte-aligned slot) and AtomicU64 has the layout of u64.
        unsafe {
            let val = std::ptr::addr_of!((*slot).val);
            let load = |p: *const u64| (*p.cast::<AtomicU64>()).load(Ordering::Relaxed);
            copy.val.packets = load(std::ptr::addr_of!((*val).packets));
            copy.val.bytes = load(std::ptr::addr_of!((*val).bytes));
            copy.val.first_seen_ns = load(std::ptr::addr_of!((*val).first_seen_ns));
            copy.val.last_seen_ns = load(std::ptr::addr_of!((*val).last_seen_ns));
        }
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) == before {
            SlotRead::Stable(copy)
        } else {
            SlotRead::Busy
        }
    }

    /// Zeroes every slot through a second, writable mapping (benchmarks and
    /// tests, with no program running); the reading mapping stays read-only.
    fn clear(&mut self) -> std::io::Result<()> {
        let w = map_fd(
            &self._map,
            self.len_bytes,
            libc::PROT_READ | libc::PROT_WRITE,
        )?;
        // SAFETY: w maps len_bytes >= slots * size_of::<FlowSlot>() bytes; zero
        // is a valid FlowSlot; w is unmapped right after.
        unsafe {
            std::ptr::write_bytes(w.cast::<u8>(), 0, self.slots * size_of::<FlowSlot>());
            libc::munmap(w, self.len_bytes);
        }
        Ok(())
    }
}

impl Drop for SlotView {
    fn drop(&mut self) {
        // SAFETY: ptr/len_bytes are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}

/// `flowlens_ctl` mapped writable: the reclaim horizon is published with
/// one aligned 8-byte store, which the kernel's 8-byte load cannot see torn
/// (an update through the bpf() syscall copies bytes).
struct CtlView {
    /// Keeps the map alive.
    _map: MapData,
    ptr: *mut FlowCtl,
    len_bytes: usize,
}

// SAFETY: as for SlotView.
unsafe impl Send for CtlView {}

impl CtlView {
    fn new(map: MapData) -> std::io::Result<Self> {
        let len_bytes = page_round(size_of::<FlowCtl>());
        let ptr = map_fd(&map, len_bytes, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(Self {
            _map: map,
            ptr: ptr.cast(),
            len_bytes,
        })
    }

    fn store_reclaim_before(&self, ns: u64) {
        // SAFETY: ptr maps at least one FlowCtl; its first field is an aligned
        // u64 (page-aligned mapping), and AtomicU64 has the layout of u64.
        let field =
            unsafe { &*std::ptr::addr_of!((*self.ptr).reclaim_before_ns).cast::<AtomicU64>() };
        field.store(ns, Ordering::Release);
    }
}

impl Drop for CtlView {
    fn drop(&mut self) {
        // SAFETY: ptr/len_bytes are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}

/// Page-rounded length of a mapping of `slots` slots.
fn mapping_len(slots: usize) -> std::io::Result<usize> {
    let size = slots
        .checked_mul(size_of::<FlowSlot>())
        .ok_or_else(|| std::io::Error::other("slot table size overflows"))?;
    Ok(page_round(size))
}

/// `bytes` rounded up to whole pages (the length the kernel maps).
fn page_round(bytes: usize) -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    bytes.div_ceil(page) * page
}

/// A shared mapping of a `BPF_F_MMAPABLE` map's values.
fn map_fd(map: &MapData, len: usize, prot: libc::c_int) -> std::io::Result<*mut libc::c_void> {
    // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the
    // length against the array and the fd against BPF_F_MMAPABLE.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ptr)
    }
}

enum SlotRead {
    Unused,
    /// Changing hands: its new occupant is read next time.
    Busy,
    Stable(FlowSlot),
}

/// What was last read from one slot occupancy.
#[derive(Clone, Copy, Default)]
struct SlotMirror {
    seq: u32,
    tcp_flags: u8,
    flags: u8,
    packets: u64,
    bytes: u64,
    last_seen_ns: u64,
}

/// Cumulative totals of one flow key over the slots and the hash.
#[derive(Clone, Copy, Default)]
struct FlowAcc {
    packets: u64,
    bytes: u64,
    first_seen_ns: u64,
    last_seen_ns: u64,
    tcp_flags: u8,
    flags: u8,
    /// Changed in the current read.
    touched: bool,
}

impl FlowAcc {
    fn add(&mut self, packets: u64, bytes: u64, v: &FlowValue) {
        self.packets = self.packets.saturating_add(packets);
        self.bytes = self.bytes.saturating_add(bytes);
        if v.first_seen_ns != 0 && (self.first_seen_ns == 0 || v.first_seen_ns < self.first_seen_ns)
        {
            self.first_seen_ns = v.first_seen_ns;
        }
        self.last_seen_ns = self.last_seen_ns.max(v.last_seen_ns);
        self.tcp_flags |= v.tcp_flags;
        self.flags |= v.flags;
        self.touched |= packets != 0 || bytes != 0;
    }
}

/// How long a slot must have been idle before a read (on top of the
/// kernel's tick-granular last_seen) for the kernel to reclaim it.
const RECLAIM_MARGIN_NS: u64 = 1_000_000_000;

/// Reads the kernel flow table: the per-CPU slots (mmapped) and the per-CPU
/// overflow hash. A key's packets may sit in several places (a slot on each
/// CPU, the hash) and slots change hands, so the reader tracks what it last
/// read from each slot occupancy and each hash entry and keeps per-key
/// totals that only grow: the correlator sees one cumulative observation per
/// key, as from a single map.
///
/// After each complete read it publishes `reclaim_before_ns` = read start − 1 s:
/// a slot idle since before then has been read with its final values, so the
/// kernel may give it to a new flow.
pub struct FlowMapReader {
    map: PerCpuHashMap<MapData, FlowKey, FlowValue>,
    slots: Option<SlotView>,
    ctl: Option<CtlView>,
    mirror: Vec<SlotMirror>,
    hash_last: StdHashMap<FlowKey, (u64, u64)>,
    acc: StdHashMap<FlowKey, FlowAcc>,
    /// Entries that vanished between listing and lookup (normal under churn).
    pub read_races: u64,
    /// Deletes that failed for another reason than "already gone".
    pub delete_errors: u64,
    /// Slots skipped because they were changing hands during the read.
    pub slots_busy: u64,
    /// How long a slot must have been idle before a read for the kernel to
    /// reclaim it (default 1 s; must exceed one kernel tick).
    pub reclaim_margin_ns: u64,
}

impl FlowMapReader {
    /// The hash only (no slot table).
    pub fn new(map: PerCpuHashMap<MapData, FlowKey, FlowValue>) -> Self {
        Self {
            map,
            slots: None,
            ctl: None,
            mirror: Vec::new(),
            hash_last: StdHashMap::new(),
            acc: StdHashMap::new(),
            read_races: 0,
            delete_errors: 0,
            slots_busy: 0,
            reclaim_margin_ns: RECLAIM_MARGIN_NS,
        }
    }

    /// The hash plus the slot table (`slots` entries: nr_cpus << slot_bits)
    /// and its control map.
    pub fn with_slots(
        map: PerCpuHashMap<MapData, FlowKey, FlowValue>,
        slots_map: MapData,
        slots: usize,
        ctl: MapData,
    ) -> std::io::Result<Self> {
        let mut r = Self::new(map);
        r.slots = Some(SlotView::new(slots_map, slots)?);
        r.mirror = vec![SlotMirror::default(); slots];
        r.ctl = Some(CtlView::new(ctl)?);
        Ok(r)
    }

    /// Takes the flow maps out of a loaded `flow.bpf.o`; `slots_per_cpu` as
    /// it was loaded with (0: hash only).
    pub fn from_object(bpf: &mut aya::Ebpf, slots_per_cpu: u32) -> Result<Self, String> {
        use flowlens_ebpf::flow;
        let take = |bpf: &mut aya::Ebpf, name: &str| {
            bpf.take_map(name)
                .ok_or_else(|| format!("map {name} missing from the object"))
        };
        let hash = PerCpuHashMap::try_from(take(bpf, flow::MAP_FLOWS)?)
            .map_err(|e| format!("map {}: {e}", flow::MAP_FLOWS))?;
        if slots_per_cpu == 0 {
            return Ok(Self::new(hash));
        }
        let slots = match take(bpf, flow::MAP_SLOTS)? {
            aya::maps::Map::Array(data) => data,
            _ => return Err(format!("map {} is not an array", flow::MAP_SLOTS)),
        };
        let ctl = match take(bpf, flow::MAP_CTL)? {
            aya::maps::Map::Array(data) => data,
            _ => return Err(format!("map {} is not an array", flow::MAP_CTL)),
        };
        let entries = crate::loader::slot_entries(slots_per_cpu);
        Self::with_slots(hash, slots, entries, ctl)
            .map_err(|e| format!("mapping {} ({entries} slots): {e}", flow::MAP_SLOTS))
    }

    /// Appends one observation (cumulative totals) per flow key that counted
    /// packets since the last call to `out`; returns how many.
    pub fn drain(&mut self, out: &mut Vec<FlowObservation>) -> usize {
        let started = crate::clock::monotonic_ns();
        if let Some(view) = &self.slots {
            for (i, m) in self.mirror.iter_mut().enumerate() {
                let slot = match view.read_slot(i) {
                    SlotRead::Stable(s) => s,
                    SlotRead::Unused => continue,
                    SlotRead::Busy => {
                        self.slots_busy += 1;
                        continue;
                    }
                };
                let same = slot.seq == m.seq;
                let (dp, db) = if same {
                    (
                        slot.val.packets.saturating_sub(m.packets),
                        slot.val.bytes.saturating_sub(m.bytes),
                    )
                } else {
                    (slot.val.packets, slot.val.bytes)
                };
                if dp != 0 || db != 0 {
                    let mut v = slot.val;
                    let acc = match self.acc.entry(slot.key) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(e) => {
                            if same && m.packets != 0 {
                                // The key's conversation was evicted (remove()) while this
                                // slot kept counting it: the new conversation starts after
                                // what was read, and carries no flags seen before (a flag
                                // set both then and now is lost, never a stale one reported).
                                v.first_seen_ns = v
                                    .first_seen_ns
                                    .max(m.last_seen_ns.saturating_add(1))
                                    .min(v.last_seen_ns);
                                v.tcp_flags &= !m.tcp_flags;
                                v.flags &= !m.flags;
                            }
                            e.insert(FlowAcc::default())
                        }
                    };
                    acc.add(dp, db, &v);
                }
                *m = SlotMirror {
                    seq: slot.seq,
                    tcp_flags: slot.val.tcp_flags,
                    flags: slot.val.flags,
                    packets: slot.val.packets,
                    bytes: slot.val.bytes,
                    last_seen_ns: slot.val.last_seen_ns,
                };
            }
        }
        for item in self.map.iter() {
            match item {
                Ok((key, values)) => {
                    let sum = sum_per_cpu(&values);
                    let last = self.hash_last.entry(key).or_default();
                    // A smaller total is a new entry (deleted and re-created).
                    let (dp, db) = if sum.packets < last.0 || sum.bytes < last.1 {
                        (sum.packets, sum.bytes)
                    } else {
                        (sum.packets - last.0, sum.bytes - last.1)
                    };
                    *last = (sum.packets, sum.bytes);
                    if dp != 0 || db != 0 {
                        self.acc.entry(key).or_default().add(dp, db, &sum);
                    }
                }
                Err(_) => self.read_races += 1,
            }
        }
        self.publish_reclaim(started);
        let before = out.len();
        for (key, a) in self.acc.iter_mut() {
            if !std::mem::take(&mut a.touched) {
                continue;
            }
            out.push(observation_of(key, a));
        }
        out.len() - before
    }

    fn publish_reclaim(&mut self, started: u64) {
        if let Some(ctl) = &self.ctl {
            ctl.store_reclaim_before(started.saturating_sub(self.reclaim_margin_ns));
        }
    }

    /// Deletes an entry whose conversation was evicted, and forgets its
    /// totals: packets it counts from now on start a new conversation.
    pub fn remove(&mut self, tuple: &FlowTuple, ifindex: u32, hook: Hook) {
        let key = flow_key(tuple, ifindex, hook);
        self.acc.remove(&key);
        let gone = match self.map.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => true,
            Err(MapError::SyscallError(e)) => e.io_error.raw_os_error() == Some(libc::ENOENT),
            Err(_) => false,
        };
        if gone {
            self.hash_last.remove(&key);
        } else {
            // The entry stays: keep what was read of it, so only packets
            // added from now on count (for a new conversation).
            self.delete_errors += 1;
        }
    }

    /// Slots per CPU (0 without a slot table): slot `i` belongs to CPU `i / slots_per_cpu`.
    pub fn slots_per_cpu(&self) -> usize {
        self.slots.as_ref().map_or(0, |v| v.per_cpu)
    }

    /// Keys the reader holds totals for (bounded by the correlator's table,
    /// which removes every key it evicts).
    pub fn tracked_keys(&self) -> usize {
        self.acc.len()
    }

    /// Every hash entry with its per-CPU values: for tests and tools.
    pub fn hash_snapshot(&self) -> Vec<(FlowKey, Vec<FlowValue>)> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.iter().copied().collect()))
            .collect()
    }

    /// Every stable slot in use, as (index, copy): for tests and tools.
    pub fn slot_snapshot(&self) -> Vec<(usize, FlowSlot)> {
        let Some(view) = &self.slots else {
            return Vec::new();
        };
        (0..view.slots)
            .filter_map(|i| view.read(i).map(|s| (i, s)))
            .collect()
    }

    /// Empties the slots, the hash and the reader's memory (benchmarks and
    /// tests; no program may be running on the maps).
    pub fn clear(&mut self) -> std::io::Result<()> {
        if let Some(view) = self.slots.as_mut() {
            view.clear()?;
        }
        self.mirror
            .iter_mut()
            .for_each(|m| *m = SlotMirror::default());
        let keys: Vec<FlowKey> = self.map.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = self.map.remove(k);
        }
        self.hash_last.clear();
        self.acc.clear();
        Ok(())
    }

    /// Forgets the per-key totals and what was read (not the kernel's
    /// counts): the next drain reports every key with everything it holds.
    pub fn clear_totals(&mut self) {
        self.mirror
            .iter_mut()
            .for_each(|m| *m = SlotMirror::default());
        self.hash_last.clear();
        self.acc.clear();
    }

    /// Sets the reclaim horizon directly (tests): slots idle since before
    /// `ns` (CLOCK_MONOTONIC) may be reclaimed by the kernel.
    pub fn set_reclaim_before(&mut self, ns: u64) {
        if let Some(ctl) = &self.ctl {
            ctl.store_reclaim_before(ns);
        }
    }
}

fn sum_per_cpu(per_cpu: &[FlowValue]) -> FlowValue {
    let mut s = FlowValue::default();
    for v in per_cpu {
        if v.packets == 0 {
            continue;
        }
        s.packets = s.packets.saturating_add(v.packets);
        s.bytes = s.bytes.saturating_add(v.bytes);
        if s.first_seen_ns == 0 || (v.first_seen_ns != 0 && v.first_seen_ns < s.first_seen_ns) {
            s.first_seen_ns = v.first_seen_ns;
        }
        s.last_seen_ns = s.last_seen_ns.max(v.last_seen_ns);
        s.tcp_flags |= v.tcp_flags;
        s.flags |= v.flags;
    }
    s
}

fn observation_of(key: &FlowKey, a: &FlowAcc) -> FlowObservation {
    FlowObservation {
        tuple: FlowTuple {
            proto: key.proto,
            src: mapped_to_ip(key.src),
            dst: mapped_to_ip(key.dst),
            sport: key.sport,
            dport: key.dport,
        },
        ifindex: key.ifindex,
        hook: hook_of(key.hook),
        packets: a.packets,
        bytes: a.bytes,
        first_seen_ns: a.first_seen_ns,
        last_seen_ns: a.last_seen_ns,
        tcp_flags: a.tcp_flags,
        initiator: a.flags & abi::FLOW_F_INITIATOR != 0,
        responder: a.flags & abi::FLOW_F_RESPONDER != 0,
    }
}

/// An echo request a local socket sent: (socket cookie, local end, remote end);
/// the ends' ports are the echo identifier.
pub type IcmpEcho = (u64, (IpAddr, u16), (IpAddr, u16));

/// Drains the ICMP echo map: (cookie, local end, remote end) of each echo
/// request a local socket sent since the last call.
pub fn drain_icmp_echo(map: &mut HashMap<MapData, IcmpEchoKey, u64>, out: &mut Vec<IcmpEcho>) {
    let keys: Vec<IcmpEchoKey> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        if let Ok(cookie) = map.get(&k, 0) {
            out.push((
                cookie,
                (mapped_to_ip(k.src), k.ident),
                (mapped_to_ip(k.dst), k.ident),
            ));
        }
        let _ = map.remove(&k);
    }
}

/// Reads a `flowlens_counters` per-CPU array into name -> sum.
pub fn read_counters(map: &PerCpuArray<MapData, u64>, into: &mut BTreeMap<&'static str, u64>) {
    for (idx, name) in abi::COUNTER_NAMES {
        if let Ok(values) = map.get(&idx, 0) {
            let sum: u64 = values.iter().fold(0u64, |a, v| a.saturating_add(*v));
            *into.entry(name).or_insert(0) += sum;
        }
    }
}

/// A decoded ring-buffer event, before enrichment.
#[derive(Debug, Clone)]
pub enum RawEvent {
    /// Socket ownership.
    Sock(SockEvent),
    /// TCP state change.
    TcpState(TcpStateChange),
    /// exec.
    Exec(ProcEvent),
    /// Thread-group exit.
    Exit(ProcEvent),
}

impl RawEvent {
    /// When the kernel emitted it (CLOCK_MONOTONIC ns).
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Sock(s) => s.hdr.ts_ns,
            Self::TcpState(t) => t.ts_ns,
            Self::Exec(p) | Self::Exit(p) => p.hdr.ts_ns,
        }
    }
}

/// Why an event could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header or its declared type.
    Short,
    /// Unknown type.
    UnknownType(u32),
}

/// Decodes one ring-buffer record (length-checked, unaligned reads).
pub fn decode_event(buf: &[u8]) -> Result<RawEvent, DecodeError> {
    let hdr: abi::EventHdr = abi::read_pod(buf).ok_or(DecodeError::Short)?;
    match hdr.kind {
        abi::EV_SOCK => abi::read_pod::<SockEvent>(buf)
            .map(RawEvent::Sock)
            .ok_or(DecodeError::Short),
        abi::EV_TCP_STATE => {
            let e: TcpStateEvent = abi::read_pod(buf).ok_or(DecodeError::Short)?;
            Ok(RawEvent::TcpState(TcpStateChange {
                cookie: e.cookie,
                local: (mapped_to_ip(e.laddr), e.lport),
                remote: (mapped_to_ip(e.raddr), e.rport),
                old_state: e.oldstate,
                new_state: e.newstate,
                ts_ns: e.hdr.ts_ns,
            }))
        }
        abi::EV_EXEC => abi::read_pod::<ProcEvent>(buf)
            .map(RawEvent::Exec)
            .ok_or(DecodeError::Short),
        abi::EV_EXIT => abi::read_pod::<ProcEvent>(buf)
            .map(RawEvent::Exit)
            .ok_or(DecodeError::Short),
        other => Err(DecodeError::UnknownType(other)),
    }
}

/// Role from the kernel constant.
pub fn role_of(r: u8) -> Role {
    match r {
        abi::ROLE_CLIENT => Role::Client,
        abi::ROLE_SERVER => Role::Server,
        _ => Role::Unknown,
    }
}

/// A NUL-terminated kernel string as UTF-8 (lossy).
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(mapped_to_ip(ip_to_mapped(v4)), v4);
        let v6: IpAddr = "fd00::1".parse().expect("v6");
        assert_eq!(mapped_to_ip(ip_to_mapped(v6)), v6);
    }

    #[test]
    fn per_cpu_values_are_summed() {
        let key = FlowKey {
            proto: 6,
            sport: 1,
            dport: 2,
            ifindex: 3,
            hook: 1,
            ..Default::default()
        };
        let a = FlowValue {
            packets: 2,
            bytes: 100,
            first_seen_ns: 50,
            last_seen_ns: 60,
            tcp_flags: 0x02,
            flags: 1,
            ..Default::default()
        };
        let b = FlowValue {
            packets: 1,
            bytes: 40,
            first_seen_ns: 40,
            last_seen_ns: 70,
            tcp_flags: 0x10,
            ..Default::default()
        };
        let idle = FlowValue::default();
        let o = observation(&key, &[a, idle, b]);
        assert_eq!(
            (o.packets, o.bytes, o.first_seen_ns, o.last_seen_ns),
            (3, 140, 40, 70)
        );
        assert_eq!(o.tcp_flags, 0x12);
        assert!(o.initiator && !o.responder);
        assert_eq!(o.hook, Hook::Egress);
    }

    #[test]
    fn short_and_unknown_events_are_rejected() {
        assert_eq!(decode_event(&[1, 0, 0]).err(), Some(DecodeError::Short));
        let mut buf = vec![0u8; 16];
        buf[0] = 99;
        assert_eq!(decode_event(&buf).err(), Some(DecodeError::UnknownType(99)));
        let mut buf = vec![0u8; 20];
        buf[0] = abi::EV_SOCK as u8;
        assert_eq!(decode_event(&buf).err(), Some(DecodeError::Short));
    }

    #[test]
    fn c_strings() {
        assert_eq!(c_str(b"curl\0\0junk"), "curl");
        assert_eq!(c_str(b"full"), "full");
    }
}
