//! The golden signals in the conversation table: where each signal belongs
//! (by tuple, through the NAT join), what waits for the next record, the
//! DNS matching and the name cache, and a failed connect that no packet
//! showed becoming a conversation of its own.
//!
//! Signals never carry an owner: they are joined by tuple, and a record's
//! owners come from the socket hooks as always.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{ConvKey, Conversation, Evidence};
use super::ConversationTable;
use crate::dns::names::{Asker, NameCache};
use crate::dns::tracker::{DnsEffect, DnsTracker, Side};
use crate::owners::{shrink, Addr};
use crate::record::ConversationRecord;
use crate::signals::{
    ConnectError, ConnectEvent, ConnectStep, DnsObservation, PendingSignals, TcpReset, TcpSignal,
};
use crate::types::{proto, FlowObservation, FlowTuple, Hook};

/// Signals for a conversation that never shows up are dropped after this (ns).
const PENDING_HOLD_NS: u64 = 10_000_000_000;
/// A connect still unresolved after this is forgotten (ns): Linux gives up
/// after its SYN retries (about two minutes).
const CONNECT_HOLD_NS: u64 = 300_000_000_000;

/// Counters of the signals (cumulative, in [`super::TableStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignalStats {
    /// Failed connects seen (`connect_error` set).
    pub connects_failed: u64,
    /// Connects whose start could not be remembered (`max_sockets` in flight): no `connect_us`.
    pub connects_untracked: u64,
    /// Signals of conversations no monitored interface ever showed, dropped
    /// after 10 s (a reset on an unmonitored interface, ...).
    pub signals_unmatched: u64,
    /// DNS queries not tracked (`limits.dns_names` in flight): counted,
    /// without latency or names.
    pub dns_queries_untracked: u64,
    /// DNS responses whose query was not seen (no latency, no names).
    pub dns_responses_unmatched: u64,
    /// Names dropped from the full name cache before their TTL.
    pub dns_names_evicted: u64,
    /// Names learned from responses (inserted or refreshed).
    pub dns_names_learned: u64,
    /// Addresses with names in the cache now (gauge).
    pub dns_names: u64,
    /// DNS queries waiting for their response now (gauge).
    pub dns_queries_in_flight: u64,
}

/// The signals' share of the table.
#[derive(Debug)]
pub(super) struct SignalState {
    /// Boxed: most conversations have none, and a bucket of the map (up to
    /// twice the entries) holds a key and a pointer, not the signals.
    pending: HashMap<ConvKey, Box<PendingSignals>>,
    /// Names a conversation was given (kept for its life), by end index.
    names: HashMap<ConvKey, [Option<Arc<str>>; 2]>,
    /// Connects in flight: socket cookie -> start.
    connects: HashMap<u64, u64>,
    dns: DnsTracker<ConvKey>,
    cache: NameCache,
    /// Names learned whose asker is looked up at the next export (its owner
    /// event may come after the response): (address, name, proto, querier, server).
    unresolved: Vec<(IpAddr, Arc<str>, u8, Addr, Addr)>,
    effects: Vec<(ConvKey, DnsEffect)>,
    max_connects: usize,
    stats: SignalStats,
}

impl SignalState {
    pub fn new(max_sockets: usize, max_names: usize) -> Self {
        Self {
            pending: HashMap::new(),
            names: HashMap::new(),
            connects: HashMap::new(),
            dns: DnsTracker::new(max_names),
            cache: NameCache::new(max_names),
            unresolved: Vec::new(),
            effects: Vec::new(),
            max_connects: max_sockets,
            stats: SignalStats::default(),
        }
    }

    pub fn stats(&self) -> SignalStats {
        SignalStats {
            dns_queries_untracked: self.dns.untracked,
            dns_responses_unmatched: self.dns.unmatched,
            dns_names_evicted: self.cache.evicted,
            dns_names_learned: self.cache.learned,
            dns_names: self.cache.len() as u64,
            dns_queries_in_flight: self.dns.len() as u64,
            ..self.stats
        }
    }

    pub fn has_pending(&self, key: &ConvKey) -> bool {
        self.pending.contains_key(key)
    }

    /// Puts the signals and names of `key` on its record, built from `conv`.
    pub fn render(
        &mut self,
        key: &ConvKey,
        conv: &mut Conversation,
        r: &mut ConversationRecord,
        now_ns: u64,
    ) {
        let client = conv.decide_client(key).0;
        if let Some(p) = self.pending.remove(key) {
            p.render(client, &mut r.signals);
        }
        // The conversation's own processes (and their cgroups) prefer the names they asked for.
        let owners = [&r.client, &r.server].map(|e| {
            e.process
                .as_ref()
                .map(|p| (p.pid, cgroup_hash(p.cgroup.as_deref())))
        });
        let score = |a: &Asker| {
            let ours = owners.iter().flatten();
            if a.pid != 0 && ours.clone().any(|o| o.0 == a.pid) {
                2
            } else if a.cgroup_id != 0 && ours.clone().any(|o| o.1 == a.cgroup_id) {
                1
            } else {
                0
            }
        };
        let s = self;
        let known = s.names.get(key).cloned().unwrap_or_default();
        let mut names = known.clone();
        for (end, slot) in names.iter_mut().enumerate() {
            if slot.is_none() {
                let own = key.ends[end].0;
                let seen = conv.seen_as(key, end).0;
                *slot = s.cache.lookup(own, now_ns, score).or_else(|| {
                    (seen != own)
                        .then(|| s.cache.lookup(seen, now_ns, score))
                        .flatten()
                });
            }
        }
        if names != known {
            s.names.insert(*key, names.clone());
        }
        r.client.name = names[client].as_deref().map(str::to_owned);
        r.server.name = names[1 - client].as_deref().map(str::to_owned);
    }

    fn pending(&mut self, key: ConvKey, now_ns: u64) -> &mut PendingSignals {
        self.pending.entry(key).or_insert_with(|| {
            Box::new(PendingSignals {
                since_ns: now_ns,
                ..PendingSignals::default()
            })
        })
    }
}

fn cgroup_hash(path: Option<&str>) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

impl ConversationTable {
    /// The conversation of a socket's own view (`local` -> `remote`) and the
    /// index of `local` in its key, through the NAT join.
    fn signal_place(&self, proto: u8, local: Addr, remote: Addr) -> (ConvKey, usize) {
        let t = FlowTuple::new(proto, local, remote);
        let (wk, sender) = ConvKey::of(&t);
        match self.nat.link(&wk) {
            Some(l) => (l.real, l.place(&t).0),
            None => (wk, sender),
        }
    }

    /// Retransmits and RTT samples of one local TCP socket since the last read.
    pub fn observe_tcp_signal(&mut self, s: TcpSignal, now_ns: u64) {
        if s.retransmits == 0 && s.rtt.samples == 0 {
            return;
        }
        let (key, end) = self.signal_place(proto::TCP, s.local, s.remote);
        let p = self.signals.pending(key, now_ns);
        p.retransmits[end] += s.retransmits;
        p.rtt = p.rtt.merge(s.rtt);
    }

    /// A reset this host sent or received. Seen from both ends (two local
    /// processes), a reset counts once per direction.
    pub fn observe_tcp_reset(&mut self, r: TcpReset) {
        let (key, end) = self.signal_place(proto::TCP, r.local, r.remote);
        let p = self.signals.pending(key, r.ts_ns);
        if r.sent {
            p.resets_sent[end] += 1;
        } else {
            p.resets_received_from[1 - end] += 1;
        }
    }

    /// A step of a local client's connect: its latency when it completes, its
    /// error when it fails.
    pub fn observe_connect(&mut self, c: ConnectEvent) {
        let s = &mut self.signals;
        match c.step {
            ConnectStep::Started => {
                if s.connects.len() >= s.max_connects && !s.connects.contains_key(&c.cookie) {
                    s.stats.connects_untracked += 1;
                    return;
                }
                s.connects.insert(c.cookie, c.ts_ns);
            }
            ConnectStep::Established => {
                let Some(start) = s.connects.remove(&c.cookie) else {
                    return;
                };
                let (key, _) = self.signal_place(proto::TCP, c.local, c.remote);
                let p = self.signals.pending(key, c.ts_ns);
                p.connect_us = Some(c.ts_ns.saturating_sub(start) / 1000);
            }
            ConnectStep::Failed(errno) => {
                let start = s.connects.remove(&c.cookie);
                let waited = start.map(|t| c.ts_ns.saturating_sub(t));
                let Some(error) = ConnectError::classify(errno, waited) else {
                    return;
                };
                s.stats.connects_failed += 1;
                let (key, end) = self.signal_place(proto::TCP, c.local, c.remote);
                let p = self.signals.pending(key, c.ts_ns);
                p.connect_error = Some((error, end));
                p.failed_at = Some((start.unwrap_or(c.ts_ns), c.ts_ns));
            }
        }
    }

    /// One DNS message a local socket sent or received.
    pub fn observe_dns(&mut self, d: &DnsObservation) {
        let m = &d.message;
        let (key, _) = self.signal_place(d.proto, d.src, d.dst);
        let query = !m.response;
        let side = if query == d.egress {
            Side::Querier
        } else {
            Side::Server
        };
        let fx = self.signals.dns.observe(key, m, side, d.ts_ns);
        if fx == DnsEffect::default() {
            return;
        }
        self.signals.pending(key, d.ts_ns).dns.add(&fx);
        if !fx.names {
            return;
        }
        let Some(q) = &m.question else {
            return;
        };
        let name: Arc<str> = Arc::from(q.name.as_str());
        let (querier, server) = if query {
            (d.src, d.dst)
        } else {
            (d.dst, d.src)
        };
        for (addr, ttl) in m.resolved_addresses() {
            self.signals
                .cache
                .insert(addr, &name, ttl, d.ts_ns, Asker::default());
            self.signals
                .unresolved
                .push((addr, Arc::clone(&name), d.proto, querier, server));
        }
    }

    /// Before an export: DNS queries that timed out, askers of new names, and
    /// failed connects no packet showed (they become conversations).
    pub(super) fn signals_before_export(&mut self, now_ns: u64) {
        let mut effects = std::mem::take(&mut self.signals.effects);
        self.signals.dns.expire(now_ns, &mut effects);
        for (key, fx) in effects.drain(..) {
            self.signals.pending(key, now_ns).dns.add(&fx);
        }
        self.signals.effects = effects;
        for (addr, name, proto, querier, server) in std::mem::take(&mut self.signals.unresolved) {
            if let Some(f) = self.owners.find(proto, querier, server) {
                let p = &f.owner.identity().process;
                let asker = Asker {
                    pid: p.pid,
                    cgroup_id: cgroup_hash(p.cgroup_path.as_deref()),
                };
                self.signals.cache.set_asker(addr, &name, asker);
            }
        }
        let failed: Vec<(ConvKey, usize, (u64, u64))> = self
            .signals
            .pending
            .iter()
            .filter(|(k, _)| !self.conversations.contains_key(k))
            .filter_map(|(k, p)| Some((*k, p.connect_error?.1, p.failed_at?)))
            .collect();
        for (key, end, (start, at)) in failed {
            if self.conversations.len() >= self.config.max_conversations && !self.make_room() {
                continue; // dropped with the pending signals after the hold, counted there
            }
            let link = self.nat.link(&key).cloned();
            let obs = FlowObservation {
                tuple: key.tuple(end),
                ifindex: 0,
                hook: Hook::Egress,
                packets: 0,
                bytes: 0,
                first_seen_ns: start.max(1),
                last_seen_ns: at.max(start).max(1),
                tcp_flags: 0,
                initiator: false,
                responder: false,
            };
            let mut conv = Conversation::new(key, &obs, link);
            // The connecting socket is the client, whatever its owner event says.
            conv.set_client(end, Evidence::Socket);
            self.conversations.insert_new(Box::new(conv));
        }
    }

    /// After an export: forget what belongs to no conversation any more.
    pub(super) fn signals_after_export(&mut self, now_ns: u64) {
        let convs = &self.conversations;
        let s = &mut self.signals;
        let before = s.pending.len();
        s.pending.retain(|k, p| {
            convs.contains_key(k) || now_ns.saturating_sub(p.since_ns) <= PENDING_HOLD_NS
        });
        s.stats.signals_unmatched += (before - s.pending.len()) as u64;
        s.names.retain(|k, _| convs.contains_key(k));
        s.connects
            .retain(|_, t| now_ns.saturating_sub(*t) <= CONNECT_HOLD_NS);
        s.cache.expire(now_ns);
        shrink(&mut s.pending);
        shrink(&mut s.names);
        shrink(&mut s.connects);
    }
}
