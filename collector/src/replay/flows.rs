//! The userspace twin of `flowlens_account()` and the kernel flow map:
//! fragment ports, L3 bytes, cumulative per-(direction, interface) counters.

use std::collections::VecDeque;
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

/// Counters the kernel keeps in `flowlens_counters`, for the replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountStats {
    /// Packets counted with something cut after the addresses (CNT_PARSE_TRUNCATED).
    pub truncated: u64,
    /// Later fragments whose first fragment was not seen (CNT_FRAG_NO_FIRST).
    pub frag_no_first: u64,
    /// First fragments that pushed an older one out of the fragment map.
    pub frag_evicted: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

/// Flow entries and the fragment map.
#[derive(Debug, Default)]
pub struct FlowAccounts {
    flows: HashMap<(FlowTuple, u32), FlowCounters>,
    dirty: Vec<(FlowTuple, u32)>,
    frags: HashMap<FragKey, (u16, u16)>,
    frag_order: VecDeque<FragKey>,
    stats: AccountStats,
}

fn has_ports(p: u8) -> bool {
    matches!(p, proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6)
}

impl FlowAccounts {
    /// Empty tables.
    pub fn new() -> Self {
        Self::default()
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
        let tuple = FlowTuple::new(m.proto, (m.src, sport), (m.dst, dport));
        let key = (tuple, ifindex);
        let c = self.flows.entry(key).or_default();
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
            self.dirty.push(key);
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
        for key in self.dirty.drain(..) {
            let Some(c) = self.flows.get_mut(&key) else {
                continue;
            };
            c.dirty = false;
            out.push(FlowObservation {
                tuple: key.0,
                ifindex: key.1,
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
        self.flows.remove(&(*tuple, ifindex));
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&FlowTuple, u32, &FlowCounters)> {
        self.flows.iter().map(|((t, i), c)| (t, *i, c))
    }

    /// Entries tracked now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The kernel-style counters.
    pub fn stats(&self) -> AccountStats {
        self.stats
    }
}
