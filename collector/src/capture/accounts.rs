//! The userspace twin of `flowlens_account()` and the kernel flow map:
//! fragment ports, L3 bytes, cumulative per-(direction, interface) counters.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use flowlens_correlator::types::{mapped_to_ip, proto, FlowObservation, FlowTuple, Hook};
// Every packet looks its flow up: SipHash was a fifth of a replay's time.
use foldhash::HashMap;

use super::parse::{Frag, ParsedPacket};

/// Fragment map entries, as the kernel's `flowlens_frags`.
pub const FRAG_MAP_ENTRIES: usize = 8192;

/// Cumulative counters of one direction on one interface (a kernel flow entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Packets.
    pub packets: u64,
    /// L3 bytes.
    pub bytes: u64,
    /// OR of TCP flags.
    pub tcp_flags: u8,
    /// Sent a TCP SYN without ACK or an ICMP echo request.
    pub initiator: bool,
    /// Sent a TCP SYN+ACK or an ICMP echo reply.
    pub responder: bool,
    /// Some packet was an IP fragment.
    pub fragment: bool,
    /// First packet, capture time ns.
    pub first_seen_ns: u64,
    /// Last packet, capture time ns.
    pub last_seen_ns: u64,
    dirty: bool,
}

/// Counters the kernel keeps in `flowlens_counters`, kept in userspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccountStats {
    /// Packets counted with something cut after the addresses (CNT_PARSE_TRUNCATED).
    pub truncated: u64,
    /// Later fragments whose first fragment was not seen (CNT_FRAG_NO_FIRST).
    pub frag_no_first: u64,
    /// First fragments that pushed an older one out of the fragment map.
    pub frag_evicted: u64,
}

impl std::ops::AddAssign for AccountStats {
    fn add_assign(&mut self, o: Self) {
        self.truncated += o.truncated;
        self.frag_no_first += o.frag_no_first;
        self.frag_evicted += o.frag_evicted;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

/// A flow entry's key as the parser hands it over: addresses as the kernel
/// keys them (IPv4-mapped IPv6, see `flowlens_correlator::types::ip_to_mapped`), so two raw
/// keys are equal exactly when their normalized tuples are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawKey {
    src: u128,
    dst: u128,
    /// sport << 24 | dport << 8 | proto.
    ports_proto: u64,
    ifindex: u32,
}

impl Hash for RawKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.src);
        state.write_u128(self.dst);
        state.write_u64(self.ports_proto ^ (u64::from(self.ifindex) << 40));
    }
}

/// `u128::from_be_bytes(ip_to_mapped(a))`, computed directly: this runs for
/// every packet, and the byte-array round trip cost a replay ~7 % more
/// instructions (a test checks both agree).
#[inline]
fn raw_addr(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => (0xffff_u128 << 32) | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl RawKey {
    fn new(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, ifindex: u32) -> Self {
        Self {
            src: raw_addr(src),
            dst: raw_addr(dst),
            ports_proto: (u64::from(sport) << 24) | (u64::from(dport) << 8) | u64::from(proto),
            ifindex,
        }
    }

    /// The normalized tuple (IPv4-mapped addresses as IPv4).
    fn tuple(&self) -> FlowTuple {
        let addr = |a: u128| mapped_to_ip(a.to_be_bytes());
        FlowTuple::new(
            self.ports_proto as u8,
            (addr(self.src), (self.ports_proto >> 24) as u16),
            (addr(self.dst), (self.ports_proto >> 8) as u16),
        )
    }

    /// Index into the lookup cache: a cheap mix of the 5-tuple's low bits.
    fn cache_index(&self) -> usize {
        let x = (self.src as u64)
            ^ (self.dst as u64).rotate_left(23)
            ^ self.ports_proto.rotate_left(41)
            ^ u64::from(self.ifindex);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - CACHE_BITS)) as usize
    }
}

/// Direct-mapped cache of raw key -> slot, checked before the index map.
const CACHE_BITS: u32 = 10;
const NO_SLOT: u32 = u32::MAX;

/// One flow entry: the normalized tuple is built once, when it is created.
#[derive(Debug)]
struct Slot {
    key: RawKey,
    tuple: FlowTuple,
    counters: FlowCounters,
    /// Bumped whenever the slot is freed, so stale dirty marks are ignored.
    generation: u32,
    live: bool,
}

/// What one packet adds to its flow entry: the parser's result with the
/// fragment ports resolved and the L3 bytes decided (the kernel's
/// `flowlens_account()` up to the map update). [`FragmentPorts::delta`]
/// makes it, [`FlowAccounts::add`] counts it; the two can run on different
/// threads (a replay parses on one and counts on another).
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowDelta {
    key: RawKey,
    ts_ns: u64,
    bytes: u32,
    tcp_flags: u8,
    bits: u8,
}

const BIT_INITIATOR: u8 = 1;
const BIT_RESPONDER: u8 = 1 << 1;
const BIT_FRAGMENT: u8 = 1 << 2;
const BIT_TRUNCATED: u8 = 1 << 3;
const BIT_FRAG_NO_FIRST: u8 = 1 << 4;
const BIT_FRAG_EVICTED: u8 = 1 << 5;
/// A frame that counts nowhere but moves the capture clock.
const BIT_CLOCK_ONLY: u8 = 1 << 7;

impl FlowDelta {
    /// A frame without a flow (not parsed) seen at `ts_ns`: it only moves a
    /// capture's clock.
    pub fn clock_only(ts_ns: u64) -> Self {
        Self {
            ts_ns,
            bits: BIT_CLOCK_ONLY,
            ..Self::default()
        }
    }

    /// Made by [`FlowDelta::clock_only`].
    #[inline]
    pub fn is_clock_only(&self) -> bool {
        self.bits & BIT_CLOCK_ONLY != 0
    }

    /// Capture time, ns.
    #[inline]
    pub fn ts_ns(&self) -> u64 {
        self.ts_ns
    }

    /// L3 bytes counted.
    #[inline]
    pub fn bytes(&self) -> u64 {
        u64::from(self.bytes)
    }
}

/// The fragment map: later fragments take the ports of their first one, as
/// the kernel's `flowlens_frags` gives them.
#[derive(Debug, Default)]
pub struct FragmentPorts {
    frags: HashMap<FragKey, (u16, u16)>,
    frag_order: VecDeque<FragKey>,
}

impl FragmentPorts {
    /// What `m`, a frame of `frame_len` bytes on the wire (link layer
    /// included) seen on `ifindex` at `ts_ns`, adds to its flow entry.
    #[inline]
    pub fn delta(
        &mut self,
        m: &ParsedPacket,
        frame_len: u32,
        ifindex: u32,
        ts_ns: u64,
    ) -> FlowDelta {
        let (mut sport, mut dport) = (m.sport, m.dport);
        let mut bits = 0u8;
        if m.frag != Frag::None && has_ports(m.proto) {
            let fk = FragKey {
                src: m.src,
                dst: m.dst,
                id: m.frag_id,
                proto: m.proto,
            };
            if m.frag == Frag::Later {
                match self.frags.get(&fk) {
                    Some(&(s, d)) => (sport, dport) = (s, d),
                    None => bits |= BIT_FRAG_NO_FIRST,
                }
            } else if self.remember(fk, (sport, dport)) {
                bits |= BIT_FRAG_EVICTED;
            }
        }
        let avail = frame_len.saturating_sub(m.l2_len);
        let claimed = m.claimed;
        let mut truncated = m.truncated;
        let bytes = if claimed > avail {
            truncated = true;
            avail
        } else if claimed < 20 {
            // No usable claim (IPv6 jumbogram, zero tot_len): what is present.
            avail
        } else {
            claimed
        };
        if truncated {
            bits |= BIT_TRUNCATED;
        }
        if m.initiator {
            bits |= BIT_INITIATOR;
        }
        if m.responder {
            bits |= BIT_RESPONDER;
        }
        if m.frag != Frag::None {
            bits |= BIT_FRAGMENT;
        }
        FlowDelta {
            key: RawKey::new(m.proto, m.src, sport, m.dst, dport, ifindex),
            ts_ns,
            bytes,
            tcp_flags: m.tcp_flags,
            bits,
        }
    }

    /// Remembers a first fragment's ports; true when that pushed the oldest
    /// datagram out.
    fn remember(&mut self, fk: FragKey, ports: (u16, u16)) -> bool {
        if self.frags.insert(fk, ports).is_some() {
            return false;
        }
        self.frag_order.push_back(fk);
        if self.frag_order.len() > FRAG_MAP_ENTRIES {
            if let Some(old) = self.frag_order.pop_front() {
                self.frags.remove(&old);
                return true;
            }
        }
        false
    }
}

/// Flow entries and the fragment map.
#[derive(Debug)]
pub struct FlowAccounts {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<RawKey, u32>,
    cache: Box<[(RawKey, u32)]>,
    dirty: Vec<(u32, u32)>,
    frags: FragmentPorts,
    stats: AccountStats,
}

fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6)
}

impl Default for FlowAccounts {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            cache: vec![(RawKey::default(), NO_SLOT); 1 << CACHE_BITS].into_boxed_slice(),
            dirty: Vec::new(),
            frags: FragmentPorts::default(),
            stats: AccountStats::default(),
        }
    }
}

impl FlowAccounts {
    /// Empty tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot of `key`, created (with its normalized tuple) if new.
    #[inline]
    fn slot_of(&mut self, key: RawKey) -> u32 {
        let ci = key.cache_index();
        let (ck, cs) = self.cache[ci];
        if cs != NO_SLOT && ck == key {
            return cs;
        }
        let idx = match self.index.get(&key) {
            Some(&i) => i,
            None => self.create(key),
        };
        self.cache[ci] = (key, idx);
        idx
    }

    #[cold]
    fn create(&mut self, key: RawKey) -> u32 {
        let tuple = key.tuple();
        let idx = match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.key = key;
                s.tuple = tuple;
                s.counters = FlowCounters::default();
                s.live = true;
                i
            }
            None => {
                let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 flows");
                self.slots.push(Slot {
                    key,
                    tuple,
                    counters: FlowCounters::default(),
                    generation: 0,
                    live: true,
                });
                i
            }
        };
        self.index.insert(key, idx);
        idx
    }

    /// Counts one parsed packet of `frame_len` bytes (the frame as it was on
    /// the wire, link layer included) seen on `ifindex` at `ts_ns`; returns
    /// the L3 bytes counted.
    pub fn account(&mut self, m: &ParsedPacket, frame_len: u32, ifindex: u32, ts_ns: u64) -> u64 {
        let d = self.frags.delta(m, frame_len, ifindex, ts_ns);
        self.add(&d);
        d.bytes()
    }

    /// Counts what one packet adds to its flow entry (made by a
    /// [`FragmentPorts`], here or on another thread). A clock-only delta
    /// counts nothing.
    #[inline]
    pub fn add(&mut self, d: &FlowDelta) {
        if d.bits & (BIT_TRUNCATED | BIT_FRAG_NO_FIRST | BIT_FRAG_EVICTED | BIT_CLOCK_ONLY) != 0 {
            if d.is_clock_only() {
                return;
            }
            self.stats.truncated += u64::from(d.bits & BIT_TRUNCATED != 0);
            self.stats.frag_no_first += u64::from(d.bits & BIT_FRAG_NO_FIRST != 0);
            self.stats.frag_evicted += u64::from(d.bits & BIT_FRAG_EVICTED != 0);
        }
        let idx = self.slot_of(d.key);
        let slot = &mut self.slots[idx as usize];
        let c = &mut slot.counters;
        c.packets += 1;
        c.bytes = c.bytes.saturating_add(u64::from(d.bytes));
        c.tcp_flags |= d.tcp_flags;
        c.initiator |= d.bits & BIT_INITIATOR != 0;
        c.responder |= d.bits & BIT_RESPONDER != 0;
        c.fragment |= d.bits & BIT_FRAGMENT != 0;
        if c.first_seen_ns == 0 {
            c.first_seen_ns = d.ts_ns;
        }
        c.last_seen_ns = c.last_seen_ns.max(d.ts_ns);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push((idx, slot.generation));
        }
    }

    /// Cumulative observations of the entries that changed since the last call.
    pub fn take_changed(&mut self) -> Vec<FlowObservation> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for (idx, generation) in self.dirty.drain(..) {
            let slot = &mut self.slots[idx as usize];
            if !slot.live || slot.generation != generation {
                continue;
            }
            let c = &mut slot.counters;
            c.dirty = false;
            out.push(FlowObservation {
                tuple: slot.tuple,
                ifindex: slot.key.ifindex,
                hook: Hook::Ingress,
                packets: c.packets,
                bytes: c.bytes,
                first_seen_ns: c.first_seen_ns,
                last_seen_ns: c.last_seen_ns,
                tcp_flags: c.tcp_flags,
                initiator: c.initiator,
                responder: c.responder,
            });
        }
        out
    }

    /// Deletes an entry the correlator evicted (as the collector deletes kernel entries).
    pub fn forget(&mut self, tuple: &FlowTuple, ifindex: u32) {
        let key = RawKey::new(
            tuple.proto,
            tuple.src,
            tuple.sport,
            tuple.dst,
            tuple.dport,
            ifindex,
        );
        let Some(idx) = self.index.remove(&key) else {
            return;
        };
        let ci = key.cache_index();
        if self.cache[ci].1 == idx {
            self.cache[ci].1 = NO_SLOT;
        }
        let slot = &mut self.slots[idx as usize];
        slot.live = false;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(idx);
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&FlowTuple, u32, &FlowCounters)> {
        self.slots
            .iter()
            .filter(|s| s.live)
            .map(|s| (&s.tuple, s.key.ifindex, &s.counters))
    }

    /// Entries tracked now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The kernel-style counters.
    pub fn stats(&self) -> AccountStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlens_correlator::types::ip_to_mapped;

    #[test]
    fn raw_addresses_are_the_kernel_keys() {
        for a in [
            "10.1.2.3",
            "255.255.255.255",
            "0.0.0.0",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = a.parse().expect("address");
            assert_eq!(raw_addr(ip), u128::from_be_bytes(ip_to_mapped(ip)), "{a}");
        }
    }

    #[test]
    fn a_raw_key_gives_back_the_normalized_tuple() {
        for (src, dst) in [
            ("10.1.2.3", "10.9.9.9"),
            ("fd00::1", "fd00::2"),
            ("::ffff:10.0.0.1", "10.0.0.2"),
        ] {
            let (s, d): (IpAddr, IpAddr) = (src.parse().expect("src"), dst.parse().expect("dst"));
            let key = RawKey::new(proto::UDP, s, 40000, d, 53, 7);
            assert_eq!(
                key.tuple(),
                FlowTuple::new(proto::UDP, (s, 40000), (d, 53)),
                "{src} -> {dst}"
            );
        }
    }
}
