//! The kernel flow table as one map: the per-CPU flow slots (mapped, see
//! [`super::mmap`]) and the per-CPU overflow hash, read into cumulative
//! per-key totals for the correlator.

use std::collections::{hash_map::Entry, HashMap as StdHashMap};

use aya::maps::{MapData, MapError, PerCpuHashMap};
use flowlens_correlator::types::{FlowObservation, FlowTuple, Hook};
#[cfg(feature = "test-support")]
use flowlens_ebpf::abi::FlowSlot;
use flowlens_ebpf::{
    abi::{FlowKey, FlowValue},
    flow,
};

use super::convert;
use super::mmap::{CtlView, SlotRead, SlotView};

/// Sums the per-CPU values of one flow into an observation.
pub fn observation(key: &FlowKey, per_cpu: &[FlowValue]) -> FlowObservation {
    let sum = sum_per_cpu(per_cpu);
    let mut acc = FlowAcc::default();
    acc.add(sum.packets, sum.bytes, &sum);
    convert::observation(key, &acc.totals)
}

/// Why the flow maps could not be taken out of the loaded object.
#[derive(Debug, thiserror::Error)]
pub enum FlowMapError {
    /// The object lacks a map (build problem).
    #[error("map {0} missing from the object")]
    Missing(&'static str),
    /// A map has another type than expected.
    #[error("map {name}: {message}")]
    Type {
        /// Map name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The slot table could not be mapped into this process.
    #[error("mapping {name} ({entries} slots): {source}")]
    Mmap {
        /// Map name.
        name: &'static str,
        /// Slots.
        entries: usize,
        /// Cause.
        source: std::io::Error,
    },
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
    /// Summed values (padding unused).
    totals: FlowValue,
    /// Changed in the current read.
    touched: bool,
}

impl FlowAcc {
    fn add(&mut self, packets: u64, bytes: u64, v: &FlowValue) {
        let t = &mut self.totals;
        t.packets = t.packets.saturating_add(packets);
        t.bytes = t.bytes.saturating_add(bytes);
        if v.first_seen_ns != 0 && (t.first_seen_ns == 0 || v.first_seen_ns < t.first_seen_ns) {
            t.first_seen_ns = v.first_seen_ns;
        }
        t.last_seen_ns = t.last_seen_ns.max(v.last_seen_ns);
        t.tcp_flags |= v.tcp_flags;
        t.flags |= v.flags;
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
    pub fn from_object(bpf: &mut aya::Ebpf, slots_per_cpu: u32) -> Result<Self, FlowMapError> {
        fn take(bpf: &mut aya::Ebpf, name: &'static str) -> Result<aya::maps::Map, FlowMapError> {
            bpf.take_map(name).ok_or(FlowMapError::Missing(name))
        }
        fn array(map: aya::maps::Map, name: &'static str) -> Result<MapData, FlowMapError> {
            match map {
                aya::maps::Map::Array(data) => Ok(data),
                _ => Err(FlowMapError::Type {
                    name,
                    message: "not an array".into(),
                }),
            }
        }
        let hash = PerCpuHashMap::try_from(take(bpf, flow::MAP_FLOWS)?).map_err(|e| {
            FlowMapError::Type {
                name: flow::MAP_FLOWS,
                message: e.to_string(),
            }
        })?;
        if slots_per_cpu == 0 {
            return Ok(Self::new(hash));
        }
        let slots = array(take(bpf, flow::MAP_SLOTS)?, flow::MAP_SLOTS)?;
        let ctl = array(take(bpf, flow::MAP_CTL)?, flow::MAP_CTL)?;
        let entries = crate::loader::slot_entries(slots_per_cpu);
        Self::with_slots(hash, slots, entries, ctl).map_err(|source| FlowMapError::Mmap {
            name: flow::MAP_SLOTS,
            entries,
            source,
        })
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
            out.push(convert::observation(key, &a.totals));
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
        let key = convert::flow_key(tuple, ifindex, hook);
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

    /// Gives memory back after many keys were removed (a burst evicted):
    /// returns whether a table shrank.
    pub fn shrink(&mut self) -> bool {
        fn shrink<K: std::hash::Hash + Eq, V>(m: &mut StdHashMap<K, V>) -> bool {
            const FLOOR: usize = 1024;
            let big = m.capacity() > FLOOR && m.capacity() / 4 > m.len();
            if big {
                m.shrink_to((2 * m.len()).max(FLOOR));
            }
            big
        }
        let a = shrink(&mut self.acc);
        let h = shrink(&mut self.hash_last);
        a || h
    }

    /// Keys the reader holds totals for (bounded by the correlator's table,
    /// which removes every key it evicts).
    pub fn tracked_keys(&self) -> usize {
        self.acc.len()
    }

    #[cfg(feature = "test-support")]
    /// Every hash entry with its per-CPU values: for tests and tools.
    pub fn hash_snapshot(&self) -> Vec<(FlowKey, Vec<FlowValue>)> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.iter().copied().collect()))
            .collect()
    }

    #[cfg(feature = "test-support")]
    /// Every stable slot in use, as (index, copy): for tests and tools.
    pub fn slot_snapshot(&self) -> Vec<(usize, FlowSlot)> {
        let Some(view) = &self.slots else {
            return Vec::new();
        };
        (0..view.slots)
            .filter_map(|i| view.read(i).map(|s| (i, s)))
            .collect()
    }

    #[cfg(feature = "test-support")]
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

    #[cfg(feature = "test-support")]
    /// Forgets the per-key totals and what was read (not the kernel's
    /// counts): the next drain reports every key with everything it holds.
    pub fn clear_totals(&mut self) {
        self.mirror
            .iter_mut()
            .for_each(|m| *m = SlotMirror::default());
        self.hash_last.clear();
        self.acc.clear();
    }

    #[cfg(feature = "test-support")]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
