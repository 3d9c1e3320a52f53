//! Counting one direction of a conversation from several kernel entries
//! (interface × hook × wire tuple), once per packet, across path changes.
//!
//! A packet that crosses several monitored hooks (veth and bridge, the two
//! sides of a NAT, `lo` egress then ingress) is in several entries at about
//! the same time; a conversation whose route moves to another interface puts
//! *different* packets into entries active at *different* times. So entries
//! are grouped into **path epochs**: entries whose new packets overlap in time
//! with the current epoch's carry the same packets (the epoch counts the
//! maximum over them, of running totals, so one entry's read landing a little
//! late counts nothing twice); an entry whose new packets all came after the
//! epoch's last packet starts a new epoch, counted on top of the closed ones.
//!
//! Times are the kernel's: `first_seen` is exact, `last_seen` lags the last
//! packet by less than one tick (1/HZ), hence [`PATH_MARGIN_NS`]. A resumed
//! entry's new packets are only known to be newer than its previous last
//! packet and than the start of the previous read (everything before that
//! was read then). A new path's first packets that arrive while the maps are
//! being read wait for the next read to be placed (the entries read earlier in
//! the same pass could not have seen them yet).
//!
//! Limits: two paths used by turns within one read interval (A, then B, then
//! A again before the next read) look like one overlapping epoch and count as
//! the maximum; packets of one conversation spread over two paths at the same
//! time (per-packet multipath) count as the maximum too.

use crate::types::Hook;

/// Slack for comparing packet times of different entries: more than one
/// kernel tick at HZ = 100 (`last_seen` resolution) plus the time a packet
/// takes from one monitored hook to the next.
pub(crate) const PATH_MARGIN_NS: u64 = 20_000_000;

/// The epoch of an entry whose packets were never placed (and of a
/// direction that counted nothing yet). Epochs are 24-bit numbers (they share
/// a word with an entry's flags) and wrap before this value: an entry still
/// held from 16,777,215 path moves ago would alias the current epoch.
pub(crate) const UNPLACED: u32 = (1 << 24) - 1;

/// Packets and L3 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

impl Counters {
    pub fn is_zero(&self) -> bool {
        self.packets == 0 && self.bytes == 0
    }

    pub fn plus(self, o: Counters) -> Counters {
        Counters {
            packets: self.packets.saturating_add(o.packets),
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }

    pub fn minus(self, o: Counters) -> Counters {
        Counters {
            packets: self.packets.saturating_sub(o.packets),
            bytes: self.bytes.saturating_sub(o.bytes),
        }
    }

    pub fn max(self, o: Counters) -> Counters {
        Counters {
            packets: self.packets.max(o.packets),
            bytes: self.bytes.max(o.bytes),
        }
    }
}

/// One kernel entry of a conversation (72 bytes: two of them sit inline in
/// every conversation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelEntry {
    /// Bit 0: the sender's index in the conversation's ends; bits 1–2: the
    /// wire tuple; bit 3: the sender's index in that wire tuple's key; bit 4:
    /// the hook (egress); bits 8–31: the path epoch it last counted in.
    tag: u32,
    pub ifindex: u32,
    /// Last cumulative value read.
    pub last: Counters,
    /// Its claim of its epoch's count.
    pub value: Counters,
    /// Read since the last resolution, not yet counted.
    pub pending: Counters,
    /// The pending packets are newer than this (CLOCK_MONOTONIC ns).
    pub pending_from_ns: u64,
    /// Latest packet.
    pub last_seen_ns: u64,
}

impl KernelEntry {
    /// An entry sent by end `sender` (0 or 1) of the conversation, counted by
    /// the kernel under tuple `wire` (0 the conversation's own, 1 NAT's
    /// original, 2 NAT's reply: see `nat.rs`) whose key has the sender at
    /// `wire_sender` (0 or 1).
    pub fn new(sender: u8, wire: u8, wire_sender: u8, ifindex: u32, hook: Hook) -> Self {
        let hook_bit = match hook {
            Hook::Ingress => 0,
            Hook::Egress => 1,
        };
        let flags = u32::from(sender & 1)
            | u32::from(wire & 3) << 1
            | u32::from(wire_sender & 1) << 3
            | hook_bit << 4;
        Self {
            tag: flags | UNPLACED << 8,
            ifindex,
            last: Counters::default(),
            value: Counters::default(),
            pending: Counters::default(),
            pending_from_ns: 0,
            last_seen_ns: 0,
        }
    }

    /// Index of the sender in the conversation's ends.
    pub fn sender(&self) -> u8 {
        (self.tag & 1) as u8
    }

    /// Which tuple the kernel counted it under (0, 1 or 2, see `new`).
    pub fn wire(&self) -> u8 {
        (self.tag >> 1 & 3) as u8
    }

    /// Index of the sender in the wire tuple's key.
    pub fn wire_sender(&self) -> u8 {
        (self.tag >> 3 & 1) as u8
    }

    pub fn hook(&self) -> Hook {
        if self.tag >> 4 & 1 == 0 {
            Hook::Ingress
        } else {
            Hook::Egress
        }
    }

    /// The path epoch it last counted in.
    pub fn epoch(&self) -> u32 {
        self.tag >> 8
    }

    fn set_epoch(&mut self, epoch: u32) {
        self.tag = (self.tag & 0xff) | (epoch & UNPLACED) << 8;
    }

    /// A fresh entry at the same place (kernel entry), with its last read.
    pub fn renewed(&self) -> Self {
        let mut n = Self::new(
            self.sender(),
            self.wire(),
            self.wire_sender(),
            self.ifindex,
            self.hook(),
        );
        n.last = self.last;
        n.last_seen_ns = self.last_seen_ns;
        n
    }

    /// Adds a read of the kernel's cumulative counters `cur` (last packet at
    /// `last_seen_ns`, first ever at `first_seen_ns`). `fresh`: the entry
    /// was created for this read; `prev_read_ns`: the start of the previous
    /// read (its packets are newer than that).
    pub fn read(
        &mut self,
        cur: Counters,
        first_seen_ns: u64,
        last_seen_ns: u64,
        fresh: bool,
        prev_read_ns: u64,
    ) {
        // Counters only grow while a kernel entry lives: a smaller value is a new one.
        let recreated = cur.packets < self.last.packets || cur.bytes < self.last.bytes;
        let delta = if recreated { cur } else { cur.minus(self.last) };
        self.last = cur;
        if !delta.is_zero() {
            if self.pending.is_zero() {
                self.pending_from_ns = if fresh || recreated {
                    first_seen_ns
                } else {
                    self.last_seen_ns.max(prev_read_ns).saturating_add(1)
                };
            }
            self.pending = self.pending.plus(delta);
        }
        self.last_seen_ns = self.last_seen_ns.max(last_seen_ns);
    }
}

/// The counts of both directions (indexed by sender): the current path
/// epoch's. The closed epochs' counts (only once traffic moved paths) are
/// kept by the caller.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PathCount {
    value: [Counters; 2],
    epoch_last_ns: [u64; 2],
    /// `UNPLACED`: nothing counted yet.
    epoch: [u32; 2],
}

impl Default for PathCount {
    fn default() -> Self {
        Self {
            value: [Counters::default(); 2],
            epoch_last_ns: [0; 2],
            epoch: [UNPLACED; 2],
        }
    }
}

/// When the counters being resolved were read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadWindow {
    /// Start of this read: packets newer than about this may be missing from
    /// entries read earlier in the same pass. `None`: a snapshot.
    pub start_ns: Option<u64>,
    /// The last resolution: place everything now.
    pub last: bool,
}

impl PathCount {
    /// Packets and bytes sent by `sender` counted so far, on top of `closed`
    /// (its closed epochs').
    pub fn counted(&self, sender: usize, closed: Counters) -> Counters {
        closed.plus(self.value[sender])
    }

    /// Whether `e` resolved into `sender`'s current epoch would overlap it.
    fn overlaps(&self, s: usize, e: &KernelEntry) -> bool {
        e.pending_from_ns <= self.epoch_last_ns[s].saturating_add(PATH_MARGIN_NS)
    }

    /// Counts the pending reads of the entries sent by `sender`; returns how
    /// many new path epochs began (the traffic moved to interfaces that had
    /// not carried it); what the epochs it closed counted goes to `closed`.
    pub fn resolve(
        &mut self,
        entries: &mut [KernelEntry],
        sender: u8,
        w: ReadWindow,
        closed: &mut Counters,
    ) -> u64 {
        let s = usize::from(sender);
        let mut moved = 0;
        let mut before = self.value[s];
        // Members of the current epoch first: their packets are the epoch's.
        for e in entries.iter_mut() {
            let started = self.epoch[s] != UNPLACED;
            if e.sender() != sender || e.pending.is_zero() || !started || e.epoch() != self.epoch[s]
            {
                continue;
            }
            e.value = e.value.plus(e.pending);
            e.pending = Counters::default();
            self.value[s] = self.value[s].max(e.value);
            self.epoch_last_ns[s] = self.epoch_last_ns[s].max(e.last_seen_ns);
        }
        // Then the others, oldest first (a handful per conversation).
        let mut deferred = 0u64;
        loop {
            let started = self.epoch[s] != UNPLACED;
            let next = entries
                .iter()
                .enumerate()
                .filter(|(i, e)| e.sender() == sender && !e.pending.is_zero() && !bit(deferred, *i))
                .filter(|(_, e)| !(started && e.epoch() == self.epoch[s]))
                .min_by_key(|(_, e)| e.pending_from_ns)
                .map(|(i, _)| i);
            let Some(i) = next else {
                break;
            };
            let e = &mut entries[i];
            if !started || !self.overlaps(s, e) {
                let mid_read = w
                    .start_ns
                    .is_some_and(|st| e.pending_from_ns.saturating_add(PATH_MARGIN_NS) >= st);
                if started && mid_read && !w.last && i < 64 {
                    // Arrived while the maps were read: place it next time.
                    deferred |= 1 << i;
                    continue;
                }
                if started {
                    *closed = closed.plus(self.value[s]);
                    self.epoch[s] = (self.epoch[s] + 1) % UNPLACED;
                    moved += 1;
                } else {
                    self.epoch[s] = 0;
                }
                self.value[s] = Counters::default();
                self.epoch_last_ns[s] = 0;
                before = Counters::default();
            }
            e.set_epoch(self.epoch[s]);
            e.value = before.plus(e.pending);
            e.pending = Counters::default();
            self.value[s] = self.value[s].max(e.value);
            self.epoch_last_ns[s] = self.epoch_last_ns[s].max(e.last_seen_ns);
        }
        moved
    }
}

fn bit(mask: u64, i: usize) -> bool {
    i < 64 && mask & (1 << i) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn entry(ifindex: u32) -> KernelEntry {
        KernelEntry::new(0, 0, 0, ifindex, Hook::Ingress)
    }

    fn c(packets: u64) -> Counters {
        Counters {
            packets,
            bytes: packets * 100,
        }
    }

    const SNAP: ReadWindow = ReadWindow {
        start_ns: None,
        last: false,
    };

    #[test]
    fn an_entry_keeps_its_place_and_epoch() {
        for (sender, wire, wire_sender, hook) in [(0, 0, 0, Hook::Ingress), (1, 2, 1, Hook::Egress)]
        {
            let mut e = KernelEntry::new(sender, wire, wire_sender, 0xffff_fffe, hook);
            assert_eq!(e.epoch(), UNPLACED);
            e.set_epoch(UNPLACED - 1);
            let got = (e.sender(), e.wire(), e.wire_sender(), e.hook(), e.ifindex);
            assert_eq!(got, (sender, wire, wire_sender, hook, 0xffff_fffe));
            assert_eq!(e.epoch(), UNPLACED - 1);
            e.set_epoch(1);
            assert_eq!((e.epoch(), e.renewed().epoch()), (1, UNPLACED));
            assert_eq!(e.renewed().wire(), wire);
        }
    }

    #[test]
    fn a_route_change_and_back_counts_every_path() {
        // Reads at 1 s, 2 s, 3 s; A carries 1000, then B 1000, then A 500.
        let mut d = (PathCount::default(), Counters::default());
        let mut es = vec![entry(1), entry(2)];
        es[0].read(c(1000), 100 * MS, 900 * MS, true, 0);
        d.0.resolve(&mut es, 0, SNAP, &mut d.1);
        assert_eq!(d.0.counted(0, d.1), c(1000));
        es[1].read(c(1000), 1100 * MS, 1900 * MS, true, 1000 * MS);
        assert_eq!(d.0.resolve(&mut es, 0, SNAP, &mut d.1), 1);
        assert_eq!(d.0.counted(0, d.1), c(2000));
        es[0].read(c(1500), 100 * MS, 2900 * MS, false, 2000 * MS);
        assert_eq!(d.0.resolve(&mut es, 0, SNAP, &mut d.1), 1);
        assert_eq!(d.0.counted(0, d.1), c(2500));
    }

    #[test]
    fn a_packet_on_two_hooks_counts_once_also_when_one_read_lags() {
        let mut d = (PathCount::default(), Counters::default());
        let mut es = vec![entry(1), entry(2)];
        es[0].read(c(10), 100 * MS, 900 * MS, true, 0);
        es[1].read(c(8), 100 * MS + 5, 880 * MS, true, 0);
        d.0.resolve(&mut es, 0, SNAP, &mut d.1);
        assert_eq!(d.0.counted(0, d.1), c(10));
        es[0].read(c(20), 100 * MS, 1900 * MS, false, 1000 * MS);
        es[1].read(c(20), 100 * MS + 5, 1900 * MS, false, 1000 * MS);
        d.0.resolve(&mut es, 0, SNAP, &mut d.1);
        assert_eq!(d.0.counted(0, d.1), c(20));
        // A third hook joins mid-stream: its packets are the others' too.
        es.push(entry(3));
        es[0].read(c(30), 100 * MS, 2900 * MS, false, 2000 * MS);
        es[2].read(c(5), 2500 * MS, 2900 * MS, true, 2000 * MS);
        d.0.resolve(&mut es, 0, SNAP, &mut d.1);
        es[1].read(c(30), 100 * MS + 5, 2900 * MS, false, 2000 * MS);
        d.0.resolve(&mut es, 0, SNAP, &mut d.1);
        assert_eq!(d.0.counted(0, d.1), c(30));
    }

    #[test]
    fn a_new_path_seen_during_the_read_waits_for_the_next_one() {
        let mut d = (PathCount::default(), Counters::default());
        let mut es = vec![entry(1), entry(2)];
        es[0].read(c(10), 100 * MS, 500 * MS, true, 0);
        d.0.resolve(&mut es, 0, SNAP, &mut d.1);
        // Read starting at 1 s: entry 2's first packet at 1.005 s, entry 1 read before it.
        es[1].read(c(1), 1005 * MS, 1005 * MS, true, 0);
        let w = ReadWindow {
            start_ns: Some(1000 * MS),
            last: false,
        };
        d.0.resolve(&mut es, 0, w, &mut d.1);
        assert_eq!(d.0.counted(0, d.1), c(10), "placed later");
        // Next read: entry 1 had it too (same path): counted once.
        es[0].read(c(11), 100 * MS, 1005 * MS, false, 1000 * MS);
        es[1].read(c(1), 1005 * MS, 1005 * MS, false, 1000 * MS);
        d.0.resolve(&mut es, 0, SNAP, &mut d.1);
        assert_eq!(d.0.counted(0, d.1), c(11));
    }
}
