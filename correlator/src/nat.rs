//! The NAT join: connections the kernel's connection tracking translated,
//! indexed by the tuples their packets carry on each side of the translation
//! ("wire" tuples), so both sides count into one conversation.
//!
//! A conntrack entry has an ORIGINAL tuple (client -> server as the client
//! addressed it) and a REPLY tuple (server -> client as the server sees it).
//! The conversation is keyed by the two ends' own addresses: the client's
//! (ORIGINAL source) and the server's (REPLY source). Its packets appear on
//! the client's side of the box under the ORIGINAL tuple and on the server's
//! side under the REPLY tuple: the same packets, so they count once, as the
//! hooks of one path do (`paths.rs`). Each end is also known by the address
//! the other end sees: the client's by the REPLY destination (SNAT,
//! masquerade), the server's by the ORIGINAL destination (DNAT, a published
//! port).

use std::collections::HashMap;
use std::sync::Arc;

use crate::conversation::ConvKey;
use crate::owners::{shrink, Addr};
use crate::types::{FlowTuple, NatMapping};

/// A translated connection, as the conversation table uses it.
#[derive(Debug)]
pub(crate) struct NatLink {
    /// The conversation: the client's and the server's own addresses.
    pub real: ConvKey,
    /// Index of the client in `real.ends`.
    pub client: usize,
    /// The wire keys: ORIGINAL's (client side) and REPLY's (server side).
    pub wires: [ConvKey; 2],
    /// How each end (indexed like `real.ends`) is seen by the other.
    pub seen_as: [Addr; 2],
    /// The mapping.
    pub mapping: NatMapping,
}

impl NatLink {
    fn new(m: NatMapping) -> Self {
        let (o, r) = (m.original, m.reply);
        let client = (o.src, o.sport);
        let server = (r.src, r.sport);
        let real_tuple = FlowTuple {
            proto: o.proto,
            src: client.0,
            dst: server.0,
            sport: client.1,
            dport: server.1,
        };
        let (real, client_idx) = ConvKey::of(&real_tuple);
        let mut seen_as = [(client.0, client.1); 2];
        seen_as[client_idx] = (r.dst, r.dport);
        seen_as[1 - client_idx] = (o.dst, o.dport);
        Self {
            real,
            client: client_idx,
            wires: [ConvKey::of(&o).0, ConvKey::of(&r).0],
            seen_as,
            mapping: m,
        }
    }

    /// Whether end `side` is seen under another address than its own.
    pub fn translated(&self, side: usize) -> bool {
        self.seen_as[side] != self.real.ends[side]
    }

    /// `snat`, `dnat` or `snat+dnat`: which ends were translated.
    pub fn kind(&self) -> &'static str {
        match (
            self.translated(self.client),
            self.translated(1 - self.client),
        ) {
            (true, true) => "snat+dnat",
            (true, false) => "snat",
            _ => "dnat",
        }
    }

    /// Where a packet of `t` (a wire tuple of this link) goes in the
    /// conversation: (sender index in `real`, wire 0/1/2, sender index in the
    /// wire key). A wire key equal to the conversation's own is wire 0.
    pub fn place(&self, t: &FlowTuple) -> (usize, u8, usize) {
        let (wk, wire_sender) = ConvKey::of(t);
        let (o, r) = (self.mapping.original, self.mapping.reply);
        let from = (t.src, t.sport);
        // The client sends ORIGINAL's source on its side, REPLY's destination on the server's.
        let from_client = if wk == self.wires[0] {
            from == (o.src, o.sport)
        } else {
            from != (r.src, r.sport)
        };
        let sender = if from_client {
            self.client
        } else {
            1 - self.client
        };
        let wire = if wk == self.real {
            0
        } else if wk == self.wires[0] {
            1
        } else {
            2
        };
        (sender, wire, wire_sender)
    }

    /// The key of wire `wire` (0: the conversation's own).
    pub fn wire_key(&self, wire: u8) -> &ConvKey {
        match wire {
            1 => &self.wires[0],
            2 => &self.wires[1],
            _ => &self.real,
        }
    }
}

/// Translated connections by wire key.
#[derive(Debug, Default)]
pub(crate) struct NatIndex {
    by_wire: HashMap<ConvKey, Arc<NatLink>>,
    /// Ended connections: when, by conversation key (kept for late reads).
    ended: HashMap<ConvKey, u64>,
    max: usize,
    /// Mappings refused because `max` were held.
    pub dropped: u64,
}

impl NatIndex {
    /// An index holding at most `max` translated connections.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Translated connections known now.
    pub fn len(&self) -> usize {
        self.by_wire
            .iter()
            .filter(|(k, l)| **k == l.wires[0])
            .count()
    }

    /// The link of a tuple's conversation key, if it is a wire of a translated connection.
    pub fn link(&self, wire: &ConvKey) -> Option<&Arc<NatLink>> {
        self.by_wire.get(wire)
    }

    /// Adds a translated connection (replacing an older one on the same
    /// wires); returns its link. `None`: refused at the cap, or not a
    /// translation.
    pub fn insert(&mut self, m: NatMapping) -> Option<Arc<NatLink>> {
        let m = m.normalized();
        if !m.is_translated() {
            return None;
        }
        let link = Arc::new(NatLink::new(m));
        let fresh = !self.by_wire.contains_key(&link.wires[0]);
        if fresh && self.by_wire.len() / 2 >= self.max {
            self.dropped += 1;
            return None;
        }
        self.ended.remove(&link.real);
        for w in link.wires {
            if let Some(old) = self.by_wire.insert(w, Arc::clone(&link)) {
                // conntrack gave the translated port to another connection.
                for ow in old.wires {
                    if self.by_wire.get(&ow).is_some_and(|l| Arc::ptr_eq(l, &old)) {
                        self.by_wire.remove(&ow);
                    }
                }
            }
        }
        Some(link)
    }

    /// Marks a translated connection as ended at `now_ns`.
    pub fn end(&mut self, m: NatMapping, now_ns: u64) {
        let m = m.normalized();
        if let Some(l) = self.by_wire.get(&ConvKey::of(&m.original).0) {
            if l.mapping == m {
                self.ended.insert(l.real, now_ns);
            }
        }
    }

    /// Forgets connections that ended more than `grace_ns` ago.
    pub fn expire(&mut self, now_ns: u64, grace_ns: u64) {
        let gone: Vec<ConvKey> = self
            .ended
            .iter()
            .filter(|(_, t)| now_ns.saturating_sub(**t) > grace_ns)
            .map(|(k, _)| *k)
            .collect();
        for real in gone {
            self.ended.remove(&real);
            self.by_wire.retain(|_, l| l.real != real);
        }
        shrink(&mut self.by_wire);
        shrink(&mut self.ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn a(last: u8, port: u16) -> Addr {
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    fn t(src: Addr, dst: Addr) -> FlowTuple {
        FlowTuple::new(6, src, dst)
    }

    #[test]
    fn masquerade_and_published_port() {
        // SNAT: container .2:5555 -> .9:80 leaves as host .1:6000.
        let snat = NatLink::new(NatMapping {
            original: t(a(2, 5555), a(9, 80)),
            reply: t(a(9, 80), a(1, 6000)),
        });
        assert_eq!(snat.kind(), "snat");
        assert_eq!(snat.real, ConvKey::of(&t(a(2, 5555), a(9, 80))).0);
        assert_eq!(snat.seen_as[snat.client], a(1, 6000));
        assert_eq!(snat.seen_as[1 - snat.client], a(9, 80));
        // Request on the far side: from the server's view of the client.
        assert_eq!(snat.place(&t(a(1, 6000), a(9, 80))), (snat.client, 2, 0));
        assert_eq!(snat.place(&t(a(9, 80), a(1, 6000))).0, 1 - snat.client);
        assert_eq!(snat.place(&t(a(2, 5555), a(9, 80))).1, 0);
        // DNAT: client .9:4000 -> host .1:8080, served by container .2:80.
        let dnat = NatLink::new(NatMapping {
            original: t(a(9, 4000), a(1, 8080)),
            reply: t(a(2, 80), a(9, 4000)),
        });
        assert_eq!(dnat.kind(), "dnat");
        assert_eq!(dnat.seen_as[1 - dnat.client], a(1, 8080));
        assert_eq!(dnat.place(&t(a(9, 4000), a(1, 8080))), (dnat.client, 1, 1));
        assert_eq!(
            dnat.place(&t(a(2, 80), a(9, 4000))),
            (1 - dnat.client, 0, 0)
        );
    }

    #[test]
    fn untranslated_entries_are_ignored_and_the_cap_counts() {
        let mut ix = NatIndex::new(1);
        let plain = NatMapping {
            original: t(a(2, 1), a(3, 2)),
            reply: t(a(3, 2), a(2, 1)),
        };
        assert!(ix.insert(plain).is_none());
        let m = |p| NatMapping {
            original: t(a(2, p), a(9, 80)),
            reply: t(a(9, 80), a(1, p)),
        };
        assert!(ix.insert(m(1000)).is_some());
        assert!(ix.insert(m(1001)).is_none());
        assert_eq!(ix.dropped, 1);
        assert_eq!(ix.len(), 1);
        ix.end(m(1000), 5);
        ix.expire(10, 10);
        assert_eq!(ix.len(), 1, "kept for the grace period");
        ix.expire(16, 10);
        assert_eq!(ix.len(), 0);
    }
}
