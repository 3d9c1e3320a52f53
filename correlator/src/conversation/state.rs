//! One conversation's state: its key, kernel entries, counts, owners.

use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::nat::NatLink;
use crate::owners::{Addr, EndOwners};
use crate::paths::{Counters, KernelEntry, PathCount, ReadWindow};
use crate::types::{FlowObservation, FlowTuple, Hook, Role};

/// Why a side was chosen as the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evidence {
    Socket,
    Handshake,
    Ports,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Handshake => "handshake",
            Self::Ports => "ports",
        }
    }
}

/// A conversation: both directions of a tuple, endpoints in ascending order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConvKey {
    pub proto: u8,
    pub ends: [Addr; 2],
}

impl ConvKey {
    /// The key of a (normalised) tuple and the index of its sender in `ends`.
    pub fn of(t: &FlowTuple) -> (Self, usize) {
        let (src, dst) = ((t.src, t.sport), (t.dst, t.dport));
        if src <= dst {
            (
                Self {
                    proto: t.proto,
                    ends: [src, dst],
                },
                0,
            )
        } else {
            (
                Self {
                    proto: t.proto,
                    ends: [dst, src],
                },
                1,
            )
        }
    }

    /// The tuple sent by `ends[sender]`.
    pub fn tuple(&self, sender: usize) -> FlowTuple {
        let (s, d) = (self.ends[sender], self.ends[1 - sender]);
        FlowTuple {
            proto: self.proto,
            src: s.0,
            dst: d.0,
            sport: s.1,
            dport: d.1,
        }
    }
}

/// A [`ConvKey`] in 38 bytes instead of 42, as the table stores one per
/// conversation: addresses in 16 bytes (IPv4 in the first 4), which end is
/// IPv6 in a flag byte, ports as bytes (no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PackedKey {
    proto: u8,
    /// Bit `i`: `ends[i]` is IPv6.
    v6: u8,
    addrs: [[u8; 16]; 2],
    ports: [[u8; 2]; 2],
}

impl From<&ConvKey> for PackedKey {
    fn from(k: &ConvKey) -> Self {
        let mut p = Self {
            proto: k.proto,
            v6: 0,
            addrs: [[0; 16]; 2],
            ports: [k.ends[0].1.to_ne_bytes(), k.ends[1].1.to_ne_bytes()],
        };
        for (i, (ip, _)) in k.ends.iter().enumerate() {
            match ip {
                IpAddr::V4(a) => p.addrs[i][..4].copy_from_slice(&a.octets()),
                IpAddr::V6(a) => {
                    p.addrs[i] = a.octets();
                    p.v6 |= 1 << i;
                }
            }
        }
        p
    }
}

impl PackedKey {
    pub fn unpack(&self) -> ConvKey {
        let end = |i: usize| {
            let a = self.addrs[i];
            let ip = if self.v6 & (1 << i) != 0 {
                IpAddr::from(a)
            } else {
                IpAddr::from([a[0], a[1], a[2], a[3]])
            };
            (ip, u16::from_ne_bytes(self.ports[i]))
        };
        ConvKey {
            proto: self.proto,
            ends: [end(0), end(1)],
        }
    }
}

/// Per end: sent a SYN (or echo request) / a SYN+ACK (or echo reply); reads
/// pending; the client once decided. One byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ConvFlags(u8);

impl ConvFlags {
    const PENDING: u8 = 1 << 4;
    const CLIENT_SHIFT: u8 = 5;

    fn initiator(self) -> [bool; 2] {
        [self.0 & 1 != 0, self.0 & 2 != 0]
    }

    fn responder(self) -> [bool; 2] {
        [self.0 & 4 != 0, self.0 & 8 != 0]
    }

    fn mark(&mut self, sender: usize, initiator: bool, responder: bool) {
        let s = u8::from(sender == 1);
        self.0 |= u8::from(initiator) << s | u8::from(responder) << (2 + s);
    }

    fn pending(self) -> bool {
        self.0 & Self::PENDING != 0
    }

    fn set_pending(&mut self, pending: bool) {
        self.0 = self.0 & !Self::PENDING | if pending { Self::PENDING } else { 0 };
    }

    /// 0: undecided; else 1 + 3 × side + evidence.
    fn client(self) -> Option<(u8, Evidence)> {
        let code = self.0 >> Self::CLIENT_SHIFT;
        let evidence = match code.checked_sub(1)? % 3 {
            0 => Evidence::Socket,
            1 => Evidence::Handshake,
            _ => Evidence::Ports,
        };
        Some((u8::from(code > 3), evidence))
    }

    fn set_client(&mut self, side: u8, evidence: Evidence) {
        let e = match evidence {
            Evidence::Socket => 0,
            Evidence::Handshake => 1,
            Evidence::Ports => 2,
        };
        let code = 1 + 3 * (side & 1) + e;
        self.0 = self.0 & ((1 << Self::CLIENT_SHIFT) - 1) | code << Self::CLIENT_SHIFT;
    }
}

/// A conversation's kernel entries: inline up to two (one per direction on
/// one interface, the common case), on the heap beyond.
pub(crate) type KernelEntries = SmallVec<[KernelEntry; 2]>;

/// A conversation: one connection. Kept compact (the table holds one per
/// conversation, boxed): what only some conversations need (counts of closed
/// path epochs, a reused tuple's start, counts not yet carried by a record)
/// lives in `rare`, allocated when used.
#[derive(Debug)]
pub(crate) struct Conversation {
    /// Its key in the table.
    key: PackedKey,
    pub entries: KernelEntries,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Per sender: the current path epoch's count.
    paths: PathCount,
    pub tcp_flags: u8,
    /// Handshake flags per end, whether entries hold reads not yet counted,
    /// the client index (0 or 1) once proven by sockets or handshake.
    flags: ConvFlags,
    pub owners: EndOwners,
    rare: Option<Box<RareState>>,
}

/// What few conversations need: allocated on first use.
#[derive(Clone, Debug, Default)]
struct RareState {
    /// Per sender: the counts of closed path epochs (the traffic moved paths).
    closed: [Counters; 2],
    /// Per sender: counted since the last record (from a resolution to the
    /// record that carries it; longer only while the record waits for an
    /// owner). What records carried so far is the count minus this.
    news: [Counters; 2],
    /// Started on a tuple an earlier connection used: kernel times before
    /// this are that connection's.
    since_ns: u64,
    /// The translation, when connection tracking reported one (translated
    /// conversations are few among a host's: the link lives here, not in
    /// every conversation).
    nat: Option<Arc<NatLink>>,
}

impl RareState {
    fn is_empty(&self) -> bool {
        self.closed == [Counters::default(); 2]
            && self.news == [Counters::default(); 2]
            && self.since_ns == 0
            && self.nat.is_none()
    }
}

impl Conversation {
    pub fn new(key: ConvKey, obs: &FlowObservation, nat: Option<Arc<NatLink>>) -> Self {
        Self::blank(key, (obs.first_seen_ns, obs.last_seen_ns), nat)
    }

    fn blank(
        key: ConvKey,
        (first_seen_ns, last_seen_ns): (u64, u64),
        nat: Option<Arc<NatLink>>,
    ) -> Self {
        Self {
            key: PackedKey::from(&key),
            entries: KernelEntries::new(),
            first_seen_ns,
            last_seen_ns,
            paths: PathCount::default(),
            tcp_flags: 0,
            flags: ConvFlags::default(),
            owners: EndOwners::default(),
            rare: nat.map(|nat| {
                Box::new(RareState {
                    nat: Some(nat),
                    ..RareState::default()
                })
            }),
        }
    }

    /// The translation, when connection tracking reported one.
    pub fn nat(&self) -> Option<&Arc<NatLink>> {
        self.rare.as_ref().and_then(|r| r.nat.as_ref())
    }

    pub fn set_nat(&mut self, nat: Option<Arc<NatLink>>) {
        match nat {
            Some(n) => self.rare.get_or_insert_default().nat = Some(n),
            None => {
                if let Some(r) = self.rare.as_mut() {
                    r.nat = None;
                    if r.is_empty() {
                        self.rare = None;
                    }
                }
            }
        }
    }

    /// Its key in the table.
    pub fn key(&self) -> ConvKey {
        self.key.unpack()
    }

    pub fn packed_key(&self) -> &PackedKey {
        &self.key
    }

    pub fn set_key(&mut self, key: &ConvKey) {
        self.key = PackedKey::from(key);
    }

    /// Entries hold reads not yet counted.
    pub fn pending(&self) -> bool {
        self.flags.pending()
    }

    pub fn set_pending(&mut self, pending: bool) {
        self.flags.set_pending(pending);
    }

    /// Started on a tuple an earlier connection used: kernel times before
    /// this are that connection's (0: the tuple's first connection).
    pub fn since_ns(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.since_ns)
    }

    pub fn set_since_ns(&mut self, ns: u64) {
        if ns != self.since_ns() {
            self.rare.get_or_insert_default().since_ns = ns;
        }
    }

    fn closed(&self) -> [Counters; 2] {
        self.rare
            .as_ref()
            .map_or([Counters::default(); 2], |r| r.closed)
    }

    /// The conversation of the next connection on the same tuple, from `at_ns`:
    /// the kernel entries' counters so far (and, when `take_pending`, what
    /// this read added) stay with `self`.
    pub fn successor(&mut self, at_ns: u64, take_pending: bool) -> Self {
        let entries = self
            .entries
            .iter_mut()
            .map(|e| {
                let mut n = e.renewed();
                if take_pending && !e.pending.is_zero() {
                    n.pending = e.pending;
                    n.pending_from_ns = e.pending_from_ns.max(at_ns);
                    e.pending = Counters::default();
                }
                n
            })
            .collect::<KernelEntries>();
        let pending = entries.iter().any(|e| !e.pending.is_zero());
        let seen = (at_ns.max(self.first_seen_ns), self.last_seen_ns.max(at_ns));
        let mut next = Self {
            entries,
            ..Self::blank(self.key(), seen, self.nat().cloned())
        };
        next.set_pending(pending);
        next.set_since_ns(at_ns);
        next
    }

    pub fn observe(&mut self, obs: &FlowObservation, place: (usize, u8, usize), prev_read_ns: u64) {
        let (sender, wire, wire_sender) = place;
        let (s8, ws8) = (u8::from(sender == 1), u8::from(wire_sender == 1));
        let pos = self.entries.iter().position(|e| {
            e.wire() == wire
                && e.wire_sender() == ws8
                && e.ifindex == obs.ifindex
                && e.hook() == obs.hook
        });
        let fresh = pos.is_none();
        let since_ns = self.since_ns();
        let idx = pos.unwrap_or_else(|| {
            self.entries
                .push(KernelEntry::new(s8, wire, ws8, obs.ifindex, obs.hook));
            self.entries.len() - 1
        });
        let Some(e) = self.entries.get_mut(idx) else {
            return;
        };
        let cur = Counters {
            packets: obs.packets,
            bytes: obs.bytes,
        };
        let first = obs.first_seen_ns.max(since_ns);
        e.read(cur, first, obs.last_seen_ns, fresh, prev_read_ns);
        if !e.pending.is_zero() {
            self.set_pending(true);
        }
        // Once a record carried it, first_seen stays: it names the conversation
        // (a reused tuple's conversations differ by it).
        let reported = self.has_news_reported();
        if obs.first_seen_ns != 0
            && !reported
            && obs.first_seen_ns >= since_ns
            && (self.first_seen_ns == 0 || obs.first_seen_ns < self.first_seen_ns)
        {
            self.first_seen_ns = obs.first_seen_ns;
        }
        self.last_seen_ns = self.last_seen_ns.max(obs.last_seen_ns);
        if since_ns == 0 {
            // Flags accumulate per kernel entry: a successor cannot tell its own.
            self.tcp_flags |= obs.tcp_flags;
            self.flags.mark(sender, obs.initiator, obs.responder);
        }
    }

    /// Counts pending reads; returns how many times the traffic moved paths.
    pub fn resolve(&mut self, w: ReadWindow) -> u64 {
        if !self.pending() {
            return 0;
        }
        let counted_before = [self.counted(0), self.counted(1)];
        let mut closed = self.closed();
        let moved = (0..2u8)
            .map(|s| {
                let c = &mut closed[usize::from(s)];
                self.paths.resolve(&mut self.entries, s, w, c)
            })
            .sum();
        if closed != self.closed() {
            self.rare.get_or_insert_default().closed = closed;
        }
        let counted = [self.counted(0), self.counted(1)];
        if counted != counted_before {
            // Counts only grow: what they grew by is news for the next record.
            let r = self.rare.get_or_insert_default();
            for s in 0..2 {
                r.news[s] = r.news[s].plus(counted[s].minus(counted_before[s]));
            }
        }
        let pending = self.entries.iter().any(|e| !e.pending.is_zero());
        self.set_pending(pending);
        moved
    }

    pub fn counted(&self, sender: usize) -> Counters {
        let closed = self
            .rare
            .as_ref()
            .map_or_else(Counters::default, |r| r.closed[sender]);
        self.paths.counted(sender, closed)
    }

    /// Whether a record carried any of its counts already.
    pub fn has_news_reported(&self) -> bool {
        let news = self.news();
        (0..2).any(|s| self.counted(s) != news[s])
    }

    /// Whether it counted anything no record carried yet.
    pub fn has_news(&self) -> bool {
        self.news().iter().any(|c| !c.is_zero())
    }

    /// Per sender: counted since the last record.
    fn news(&self) -> [Counters; 2] {
        self.rare
            .as_ref()
            .map_or([Counters::default(); 2], |r| r.news)
    }

    /// Per sender: counted since the last record, now carried by one.
    pub fn take_news(&mut self) -> [Counters; 2] {
        let Some(r) = self.rare.as_mut() else {
            return [Counters::default(); 2];
        };
        let news = std::mem::take(&mut r.news);
        if r.is_empty() {
            self.rare = None;
        }
        news
    }

    /// How end `side` is seen by the other end (its own address without NAT).
    pub fn seen_as(&self, key: &ConvKey, side: usize) -> Addr {
        self.nat().map_or(key.ends[side], |n| n.seen_as[side])
    }

    /// The kernel entries as (tuple, ifindex, hook), for deletion.
    pub fn kernel_keys<'a>(
        &'a self,
        key: &'a ConvKey,
    ) -> impl Iterator<Item = (FlowTuple, u32, Hook)> + 'a {
        self.entries.iter().map(move |e| {
            let wk = self.nat().map_or(key, |n| n.wire_key(e.wire()));
            (wk.tuple(usize::from(e.wire_sender())), e.ifindex, e.hook())
        })
    }

    /// The client index: sockets, then handshake (both kept once found), then ports.
    pub fn decide_client(&mut self, key: &ConvKey) -> (usize, Evidence) {
        if let Some((side, evidence)) = self.flags.client() {
            return (usize::from(side), evidence);
        }
        let by_socket = (0..2).find_map(|side| match self.owners.role(side)? {
            Role::Client => Some(side),
            Role::Server => Some(1 - side),
            Role::Unknown => None,
        });
        let decided = if let Some(side) = by_socket {
            (side, Evidence::Socket)
        } else if let Some(side) = self.by_handshake() {
            (side, Evidence::Handshake)
        } else if let Some(n) = self.nat() {
            // Connection tracking knows who sent the first packet.
            return (n.client, Evidence::Handshake);
        } else {
            return (client_by_ports(key), Evidence::Ports);
        };
        self.set_client(decided.0, decided.1);
        decided
    }

    /// Keeps `side` (0 or 1) as the client for good.
    pub fn set_client(&mut self, side: usize, evidence: Evidence) {
        self.flags.set_client(u8::from(side == 1), evidence);
    }

    fn by_handshake(&self) -> Option<usize> {
        let one = |flags: [bool; 2]| match flags {
            [true, false] => Some(0),
            [false, true] => Some(1),
            _ => None,
        };
        let f = self.flags;
        one(f.initiator()).or_else(|| one(f.responder()).map(|server| 1 - server))
    }
}

/// Lower port is the server; equal ports: lower address is the server.
pub(crate) fn client_by_ports(key: &ConvKey) -> usize {
    let [a, b] = key.ends;
    let server = if a.1 != b.1 {
        usize::from(b.1 < a.1)
    } else {
        usize::from(b.0 < a.0)
    };
    1 - server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_keep_each_part() {
        let evidences = [Evidence::Socket, Evidence::Handshake, Evidence::Ports];
        for side in 0..2u8 {
            for evidence in evidences {
                let mut f = ConvFlags::default();
                assert_eq!(f.client(), None);
                f.mark(1, true, false);
                f.mark(0, false, true);
                f.set_pending(true);
                f.set_client(1 - side, Evidence::Ports);
                f.set_client(side, evidence);
                assert_eq!(f.client(), Some((side, evidence)));
                assert_eq!(
                    (f.initiator(), f.responder()),
                    ([false, true], [true, false])
                );
                assert!(f.pending());
                f.set_pending(false);
                assert!(!f.pending());
                assert_eq!(f.client(), Some((side, evidence)));
                assert_eq!(
                    (f.initiator(), f.responder()),
                    ([false, true], [true, false])
                );
            }
        }
    }
}
