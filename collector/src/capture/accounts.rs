//! The userspace twin of `flowlens_account()` and the kernel flow map:
//! fragment ports, L3 bytes, cumulative per-(direction, interface) counters.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use flowlens_correlator::types::{proto, FlowObservation, FlowTuple, Hook};
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

/// Flow entries and the fragment map.
#[derive(Debug)]
pub struct FlowAccounts {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<RawKey, u32>,
    cache: Box<[(RawKey, u32)]>,
    dirty: Vec<(u32, u32)>,
    frags: HashMap<FragKey, (u16, u16)>,
    frag_order: VecDeque<FragKey>,
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
            frags: HashMap::default(),
            frag_order: VecDeque::new(),
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
    fn slot_of(&mut self, key: RawKey, m: &ParsedPacket, sport: u16, dport: u16) -> u32 {
        let ci = key.cache_index();
        let (ck, cs) = self.cache[ci];
        if cs != NO_SLOT && ck == key {
            return cs;
        }
        let idx = match self.index.get(&key) {
            Some(&i) => i,
            None => self.create(key, m, sport, dport),
        };
        self.cache[ci] = (key, idx);
        idx
    }

    #[cold]
    fn create(&mut self, key: RawKey, m: &ParsedPacket, sport: u16, dport: u16) -> u32 {
        let tuple = FlowTuple::new(m.proto, (m.src, sport), (m.dst, dport));
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
        let (mut sport, mut dport) = (m.sport, m.dport);
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
                    None => self.stats.frag_no_first += 1,
                }
            } else {
                self.remember_fragment(fk, (sport, dport));
            }
        }
        let avail = u64::from(frame_len.saturating_sub(m.l2_len));
        let claimed = u64::from(m.claimed);
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
            self.stats.truncated += 1;
        }
        let key = RawKey::new(m.proto, m.src, sport, m.dst, dport, ifindex);
        let idx = self.slot_of(key, m, sport, dport);
        let slot = &mut self.slots[idx as usize];
        let c = &mut slot.counters;
        c.packets += 1;
        c.bytes = c.bytes.saturating_add(bytes);
        c.tcp_flags |= m.tcp_flags;
        c.initiator |= m.initiator;
        c.responder |= m.responder;
        c.fragment |= m.frag != Frag::None;
        if c.first_seen_ns == 0 {
            c.first_seen_ns = ts_ns;
        }
        c.last_seen_ns = c.last_seen_ns.max(ts_ns);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push((idx, slot.generation));
        }
        bytes
    }

    fn remember_fragment(&mut self, fk: FragKey, ports: (u16, u16)) {
        if self.frags.insert(fk, ports).is_some() {
            return;
        }
        self.frag_order.push_back(fk);
        if self.frag_order.len() > FRAG_MAP_ENTRIES {
            if let Some(old) = self.frag_order.pop_front() {
                self.frags.remove(&old);
                self.stats.frag_evicted += 1;
            }
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
}
