//! The conversation table: turns cumulative per-interface kernel counters
//! into per-interval conversation records, attributed to socket owners.
//!
//! Counting: a kernel entry is one (tuple, ifindex, hook). Its cumulative
//! counters become deltas; a packet that crosses several monitored hooks
//! (veth, bridge, NIC, lo egress+ingress, both sides of a NAT) appears in
//! several entries at about the same time and counts once, while packets that
//! took another path at another time count on top (`paths.rs`). A record
//! carries what a direction's count grew by since the last export; summing
//! records gives the total.
//!
//! Lifecycle: a conversation is one connection. A new connection on the same
//! tuple (a socket that took the tuple over after the old one's connection:
//! a reused client port) starts a new conversation with its own owners. An
//! idle conversation is evicted after `idle_timeout`; when the table is full,
//! the least recently active ones are evicted early (already exported ones
//! first; others get their final record at the next export), so new traffic
//! is still reported.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::nat::{NatIndex, NatLink};
use crate::owners::OwnerIndex;
use crate::paths::{KernelEntry, ReadWindow, PATH_MARGIN_NS};
use crate::record::{format_rfc3339, ConversationRecord};

mod map;
mod render;
mod signals;
mod state;

use crate::types::{
    FlowObservation, FlowTuple, Hook, Lookup, NatEvent, Role, SocketOwnerEvent, TcpStateChange,
};
use map::ConvMap;
use render::{attribute, build_record, key_has_ports, ExportCtx};
use signals::SignalState;
pub use signals::SignalStats;
pub(crate) use state::ConvKey;
use state::Conversation;

const SEC: u64 = 1_000_000_000;

/// Limits and timeouts of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableConfig {
    /// Conversations tracked at most. At the cap the least recently active
    /// are evicted early; observations of new ones beyond what can be evicted
    /// are counted as dropped.
    pub max_conversations: usize,
    /// Socket owners (and parked state changes, and processes) tracked at most.
    pub max_sockets: usize,
    /// A conversation without packets for longer is evicted (ns).
    pub idle_timeout_ns: u64,
    /// An owner is kept this long after its socket was last referenced (ns).
    /// The kernel reports a socket in use again after 60 s, so this must be longer.
    pub owner_grace_ns: u64,
    /// A closed TCP socket's owner is kept this long after the close (ns): long
    /// enough for its conversation's next export to find it (two export
    /// intervals + `owner_wait_ns` or more).
    pub closed_owner_grace_ns: u64,
    /// A state change whose owner event has not arrived is kept this long (ns).
    pub pending_state_ns: u64,
    /// A TCP/UDP conversation younger than this (since its first packet) whose
    /// end has a local address but no owner yet is not exported: its owner
    /// event may legitimately follow its first packets (accept() after the
    /// handshake, a UDP server's first recv()). Its counters go into a later
    /// record (ns; 0 exports at once).
    pub owner_wait_ns: u64,
    /// Addresses in the DNS name cache at most (and DNS queries tracked in flight).
    pub max_dns_names: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_conversations: 100_000,
            max_sockets: 200_000,
            idle_timeout_ns: 60 * SEC,
            owner_grace_ns: 120 * SEC,
            closed_owner_grace_ns: 30 * SEC,
            pending_state_ns: 10 * SEC,
            owner_wait_ns: 2 * SEC,
            max_dns_names: 65_536,
        }
    }
}

/// Counters and gauges of the table; counters are cumulative since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TableStats {
    /// Conversations tracked now.
    pub conversations_active: u64,
    /// Socket owners tracked now.
    pub sockets_tracked: u64,
    /// State changes waiting for their owner event now.
    pub state_changes_pending: u64,
    /// Flow observations refused because `max_conversations` was reached.
    pub conversations_dropped: u64,
    /// Owner events refused because `max_sockets` was reached.
    pub sockets_dropped: u64,
    /// Packets of refused flow observations.
    pub packets_dropped: u64,
    /// Bytes of refused flow observations.
    pub bytes_dropped: u64,
    /// State changes refused because `max_sockets` of them were parked.
    pub state_changes_dropped: u64,
    /// Parked state changes whose owner event never came.
    pub state_changes_expired: u64,
    /// Exec events refused because `max_sockets` processes were tracked.
    pub processes_dropped: u64,
    /// Owners forgotten after their grace period.
    pub owners_evicted: u64,
    /// Conversations evicted after their idle timeout.
    pub conversations_evicted: u64,
    /// Observations of unknown entries idle past the timeout (already evicted, deleted again).
    pub flows_stale: u64,
    /// Records returned by `export`.
    pub records_exported: u64,
    /// Records with no owner on either side (forwarded traffic, or owner events missing).
    pub records_unattributed: u64,
    /// Records with a TCP/UDP end whose address sockets of this host use but
    /// that has no owner (owner event lost or later than `owner_wait_ns`, or
    /// no socket at all: a closed port's RST).
    pub records_unattributed_local: u64,
    /// Conversations held back at the last export, waiting for an owner (gauge).
    pub conversations_awaiting_owner: u64,
    /// Conversations evicted before their idle timeout to make room at
    /// `max_conversations` (those with unexported counters got a final
    /// record first: nothing lost).
    pub conversations_evicted_early: u64,
    /// Times a conversation's traffic moved to interfaces that had not carried
    /// it (a route change): counted on top of what the old path carried.
    pub conversations_moved: u64,
    /// New connections on the tuple of an earlier one (a reused port) that
    /// started a conversation of their own.
    pub connections_reused: u64,
    /// Of those, the ones whose first read interval may also hold the earlier
    /// connection's last packets (both in one read: the packets of that
    /// interval went to the new connection).
    pub connections_unsplit: u64,
    /// Connections whose packets were merged into a later connection on the
    /// same tuple: both ran within one read interval, before either was
    /// exported (the kernel counts per tuple; the later owner is reported).
    pub connections_merged: u64,
    /// Translated connections (NAT) known from connection tracking now (gauge).
    pub nat_mappings: u64,
    /// Translated connections refused because `max_conversations` were held.
    pub nat_mappings_dropped: u64,
    /// Conversations that had been reported as two (each side of a NAT on
    /// its own) before their translation was known, then joined.
    pub nat_joined_late: u64,
    /// Records of translated conversations (joined across the NAT).
    pub records_nat: u64,
    /// Records flagged `nat: "unjoined"`: an end with a local address no
    /// socket owns while connection tracking is unavailable, possibly one
    /// side of a translated conversation reported twice.
    pub records_nat_unjoined: u64,
    /// The golden signals: failed connects, DNS matching and the name cache.
    pub signals: SignalStats,
}

/// Whether the NAT join runs, for flagging what it cannot join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NatJoin {
    /// Not applicable (a capture replayed elsewhere): nothing is flagged.
    #[default]
    NotApplicable,
    /// Connection tracking feeds translations.
    Available,
    /// This host's connection tracking cannot be read: records that may be
    /// one side of a translated conversation are flagged.
    Unavailable,
}

/// Conversations, their kernel entries and socket owners.
#[derive(Debug)]
pub struct ConversationTable {
    config: TableConfig,
    /// Boxed, by the key each holds: the map's buckets (up to twice the
    /// entries, at its power-of-two capacity) hold a pointer alone.
    conversations: ConvMap,
    /// Conversations that ended before their last record was built (a reused
    /// tuple, a late NAT join, evicted early with unexported counters).
    finished: Vec<(ConvKey, Conversation)>,
    owners: OwnerIndex,
    nat: NatIndex,
    nat_join: NatJoin,
    evicted_flows: Vec<(FlowTuple, u32, Hook)>,
    last_export_ns: Option<u64>,
    /// Start of the interval the next export covers (`set_interval_start`).
    interval_start_ns: Option<u64>,
    /// Start of the read being observed (`begin_read`), and of the one before.
    read_start_ns: Option<u64>,
    prev_read_ns: u64,
    /// No conversation could be evicted for room since the last export.
    room_exhausted: bool,
    stats: TableStats,
    scratch: Vec<ConvKey>,
    /// RTT, retransmits, resets, connects, DNS: waiting for their records.
    signals: SignalState,
}

impl Default for ConversationTable {
    fn default() -> Self {
        Self::new(TableConfig::default())
    }
}

impl ConversationTable {
    /// An empty table.
    pub fn new(config: TableConfig) -> Self {
        Self {
            config,
            conversations: ConvMap::default(),
            finished: Vec::new(),
            owners: OwnerIndex::new(config.max_sockets),
            nat: NatIndex::new(config.max_conversations),
            nat_join: NatJoin::default(),
            evicted_flows: Vec::new(),
            last_export_ns: None,
            interval_start_ns: None,
            read_start_ns: None,
            prev_read_ns: 0,
            room_exhausted: false,
            stats: TableStats::default(),
            scratch: Vec::new(),
            signals: SignalState::new(config.max_sockets, config.max_dns_names),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Says whether connection tracking feeds the NAT join (see [`NatJoin`]).
    pub fn set_nat_join(&mut self, join: NatJoin) {
        self.nat_join = join;
    }

    /// The kernel counters about to be observed were read starting at
    /// `now_mono_ns`: every packet before then is in them. Without this call
    /// the observations of an export are taken as a snapshot at export time.
    pub fn begin_read(&mut self, now_mono_ns: u64) {
        self.read_start_ns = Some(now_mono_ns);
    }

    /// Adds the cumulative counters of one kernel entry (read any number of times per interval).
    pub fn observe_flow(&mut self, obs: &FlowObservation) {
        let t = obs.tuple.normalized();
        let (wk, sender) = ConvKey::of(&t);
        let link = self.nat.link(&wk).cloned();
        let (key, place) = match &link {
            Some(l) => (l.real, l.place(&t)),
            None => (wk, (sender, 0, sender)),
        };
        if !self.conversations.contains_key(&key) {
            let stale = self
                .last_export_ns
                .is_some_and(|t| obs.last_seen_ns.saturating_add(self.config.idle_timeout_ns) < t);
            if stale {
                // An entry we already evicted (its delete still on the way) or one that
                // would be evicted at once: counting it would count it twice.
                self.stats.flows_stale += 1;
                self.evicted_flows.push((obs.tuple, obs.ifindex, obs.hook));
                return;
            }
            if self.conversations.len() >= self.config.max_conversations && !self.make_room() {
                // Delete the kernel entry too, so each dropped packet is counted once.
                self.stats.conversations_dropped += 1;
                self.stats.packets_dropped = self.stats.packets_dropped.saturating_add(obs.packets);
                self.stats.bytes_dropped = self.stats.bytes_dropped.saturating_add(obs.bytes);
                self.evicted_flows.push((obs.tuple, obs.ifindex, obs.hook));
                return;
            }
        }
        let prev = self.prev_read_ns;
        let conv = self
            .conversations
            .get_or_insert_with(&key, || Conversation::new(key, obs, link));
        conv.observe(obs, place, prev);
    }

    /// Evicts the least recently active conversations (a sixteenth of the
    /// cap): exported ones first, the others after a final record at the next
    /// export. False when nothing could be evicted.
    fn make_room(&mut self) -> bool {
        if self.room_exhausted {
            return false;
        }
        let cap = self.config.max_conversations;
        let mut order: Vec<(bool, u64, ConvKey)> = self
            .conversations
            .iter()
            .map(|c| (c.has_news() || c.pending(), c.last_seen_ns, c.key()))
            .collect();
        // Conversations with unexported counters wait in `finished` for their
        // record: at most as many as the table holds.
        let finish_room = cap.saturating_sub(self.finished.len());
        let news_free = order.iter().filter(|o| !o.0).count();
        let batch = (cap / 16).max(1).min(news_free + finish_room);
        if batch == 0 {
            self.room_exhausted = true;
            return false;
        }
        if batch < order.len() {
            order.select_nth_unstable(batch);
        }
        for (news, _, key) in order.into_iter().take(batch) {
            let Some(conv) = self.conversations.remove(&key) else {
                continue;
            };
            self.evicted_flows.extend(conv.kernel_keys(&key));
            self.stats.conversations_evicted_early += 1;
            if news {
                self.finished.push((key, *conv));
            }
        }
        true
    }

    /// Stores (or updates) the owner of a socket.
    pub fn observe_owner(&mut self, ev: SocketOwnerEvent) {
        self.owners.insert(ev);
    }

    /// Applies a TCP state change: tuple and role of the socket, never its process.
    pub fn observe_tcp_state(&mut self, ev: TcpStateChange) {
        self.owners.state_change(ev);
    }

    /// Applies a change of the kernel's connection tracking (at `now_ns`):
    /// a translated connection's two sides become one conversation.
    pub fn observe_nat(&mut self, ev: NatEvent, now_ns: u64) {
        match ev {
            NatEvent::New(m) => {
                let Some(link) = self.nat.insert(m) else {
                    return;
                };
                self.join_late(&link);
            }
            NatEvent::Destroy(m) => self.nat.end(m, now_ns),
        }
        self.stats.nat_mappings_dropped = self.nat.dropped;
    }

    /// A side of a translated connection already counted as a conversation of
    /// its own: that one ends, the joined one counts from here on.
    fn join_late(&mut self, link: &Arc<NatLink>) {
        for wire in link.wires {
            if wire == link.real {
                continue;
            }
            let Some(mut old) = self.conversations.remove(&wire) else {
                continue;
            };
            // Never reported yet (its translation came right after the read): it
            // joins whole, its counts included.
            let whole = !old.has_news_reported();
            if !whole {
                self.stats.nat_joined_late += 1;
            }
            let real = self.conversations.get_or_insert_with(&link.real, || {
                let mut c = old.successor(old.last_seen_ns, false);
                c.set_key(&link.real);
                c
            });
            real.set_nat(Some(Arc::clone(link)));
            real.entries.retain(|e| e.wire() == 0);
            for e in &old.entries {
                let t = wire.tuple(usize::from(e.wire_sender()));
                let (sender, w, ws) = link.place(&t);
                let mut n = KernelEntry::new(
                    u8::from(sender == 1),
                    w,
                    u8::from(ws == 1),
                    e.ifindex,
                    e.hook(),
                );
                n.last = e.last;
                n.last_seen_ns = e.last_seen_ns;
                if whole {
                    n.pending = e.value.plus(e.pending);
                    n.pending_from_ns = old.first_seen_ns;
                    if !n.pending.is_zero() {
                        real.set_pending(true);
                    }
                }
                real.entries.push(n);
            }
            if whole {
                real.first_seen_ns = real.first_seen_ns.min(old.first_seen_ns).max(1);
                real.set_since_ns(real.since_ns().min(old.since_ns()));
                real.tcp_flags |= old.tcp_flags;
                continue;
            }
            old.set_nat(None);
            self.finished.push((wire, *old));
        }
    }

    /// Gives the socket `cookie` a tuple seen on the packet path (e.g. the
    /// ICMP echo a raw socket sent): like a state change, it never touches the
    /// owner's process identity or role.
    pub fn observe_socket_tuple(
        &mut self,
        cookie: u64,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        ts_ns: u64,
    ) {
        self.owners.state_change(TcpStateChange {
            cookie,
            local,
            remote,
            old_state: 0,
            new_state: 0,
            ts_ns,
        });
    }

    /// Remembers the executable of a process (fills owners whose exe is unknown).
    pub fn observe_exec(&mut self, pid: u32, exe: String) {
        self.owners.exec(pid, exe);
    }

    /// Marks a process as exited at `ts_ns` (CLOCK_MONOTONIC); its exe stays for `owner_grace_ns`.
    pub fn observe_exit(&mut self, pid: u32, ts_ns: u64) {
        self.owners.exit(pid, ts_ns);
    }

    /// The next export's interval starts at `ns` (monotonic; the records'
    /// `interval_ms` is measured from it). Unset, an interval starts at the
    /// previous export (the first: 0 ms).
    pub fn set_interval_start(&mut self, ns: u64) {
        self.interval_start_ns = Some(ns);
    }

    /// Records of the conversations with packets since the last export, sorted by
    /// conversation; then evicts idle conversations and expired owners. A new
    /// conversation with a local end still unowned waits up to `owner_wait_ns`.
    /// All records at once: [`ConversationTable::export_with`] streams them.
    pub fn export(
        &mut self,
        now_mono_ns: u64,
        now_unix_ns: i128,
        host: &str,
        lookup: &dyn Lookup,
    ) -> Vec<ConversationRecord> {
        let mut all = Vec::new();
        let at = (now_mono_ns, now_unix_ns);
        self.export_inner(at, host, lookup, false, usize::MAX, &mut |v| {
            take_all(&mut all, v)
        });
        all
    }

    /// Like [`ConversationTable::export`], but nothing waits for its owner:
    /// the last export before the collector stops.
    pub fn export_final(
        &mut self,
        now_mono_ns: u64,
        now_unix_ns: i128,
        host: &str,
        lookup: &dyn Lookup,
    ) -> Vec<ConversationRecord> {
        let mut all = Vec::new();
        let at = (now_mono_ns, now_unix_ns);
        self.export_inner(at, host, lookup, true, usize::MAX, &mut |v| {
            take_all(&mut all, v)
        });
        all
    }

    /// Like [`ConversationTable::export`] (`last`: like
    /// [`ConversationTable::export_final`]), but hands the records to
    /// `consumer` in order, in chunks of at most `chunk` (at least 1), as
    /// they are built: an export holds at most `chunk` records at a time,
    /// however many conversations there are. Returns the number of records.
    #[allow(clippy::too_many_arguments)]
    pub fn export_with(
        &mut self,
        now_mono_ns: u64,
        now_unix_ns: i128,
        host: &str,
        lookup: &dyn Lookup,
        last: bool,
        chunk: usize,
        consumer: &mut dyn FnMut(&[ConversationRecord]),
    ) -> u64 {
        let at = (now_mono_ns, now_unix_ns);
        self.export_inner(at, host, lookup, last, chunk, &mut |v| consumer(v))
    }

    fn export_inner(
        &mut self,
        (now_mono_ns, now_unix_ns): (u64, i128),
        host: &str,
        lookup: &dyn Lookup,
        last: bool,
        chunk: usize,
        consumer: &mut dyn FnMut(&mut Vec<ConversationRecord>),
    ) -> u64 {
        let start = self
            .interval_start_ns
            .take()
            .or(self.last_export_ns)
            .unwrap_or(now_mono_ns);
        let ctx = ExportCtx {
            offset: now_unix_ns - i128::from(now_mono_ns),
            ts: format_rfc3339(now_unix_ns),
            host,
            lookup,
            now_ns: now_mono_ns,
            interval_ms: now_mono_ns.saturating_sub(start) / 1_000_000,
        };
        let window = ReadWindow {
            start_ns: self.read_start_ns,
            last,
        };
        self.signals_before_export(now_mono_ns);
        let mut keys = std::mem::take(&mut self.scratch);
        keys.clear();
        keys.extend(
            self.conversations
                .iter()
                .filter(|c| c.pending() || c.has_news() || self.signals.has_pending(&c.key()))
                .map(|c| c.key()),
        );
        keys.sort_unstable();
        let mut records = Chunks::new(chunk, keys.len() + self.finished.len(), consumer);
        let mut awaiting = 0u64;
        let owner_wait = self.config.owner_wait_ns;
        for key in &keys {
            let Some(conv) = self.conversations.get_mut(key) else {
                continue;
            };
            // A new connection on the tuple (it brought packets) ends the old one's conversation.
            if conv.pending() {
                if let Some(old) = reuse_of(&self.owners, &mut self.stats, key, conv) {
                    self.finished.push((*key, old));
                }
            }
            self.stats.conversations_moved += conv.resolve(window);
            let merged = attribute(key, conv, &mut self.owners, now_mono_ns, true);
            self.stats.connections_merged += merged;
            if conv.has_news() || self.signals.has_pending(key) {
                let unowned_local = unowned_local(&self.owners, key, conv);
                if unowned_local
                    && !last
                    && now_mono_ns.saturating_sub(conv.first_seen_ns) < owner_wait
                {
                    awaiting += 1;
                } else {
                    let (o, st, nj) = (&self.owners, &mut self.stats, self.nat_join);
                    let mut r = build(o, st, nj, key, conv, &ctx, unowned_local);
                    self.signals.render(key, conv, &mut r, now_mono_ns);
                    records.push(r);
                }
            }
        }
        // Conversations that ended: their last records.
        let mut finished = std::mem::take(&mut self.finished);
        for (key, conv) in &mut finished {
            self.stats.conversations_moved += conv.resolve(ReadWindow {
                last: true,
                ..window
            });
            attribute(key, conv, &mut self.owners, now_mono_ns, false);
            if conv.has_news() || self.signals.has_pending(key) {
                let (o, st, nj) = (&self.owners, &mut self.stats, self.nat_join);
                let mut r = build(o, st, nj, key, conv, &ctx, false);
                self.signals.render(key, conv, &mut r, now_mono_ns);
                records.push(r);
            }
        }
        finished.clear();
        self.finished = finished;
        self.stats.conversations_awaiting_owner = awaiting;
        self.scratch = keys;
        let exported = records.finish();
        self.stats.records_exported += exported;
        self.last_export_ns = Some(now_mono_ns);
        self.prev_read_ns = self.read_start_ns.unwrap_or(now_mono_ns);
        self.read_start_ns = None;
        self.room_exhausted = false;
        self.evict_idle(now_mono_ns);
        self.signals_after_export(now_mono_ns);
        let c = &self.config;
        self.owners.expire(
            now_mono_ns,
            c.owner_grace_ns,
            c.closed_owner_grace_ns,
            c.pending_state_ns,
        );
        self.nat.expire(now_mono_ns, c.closed_owner_grace_ns);
        exported
    }

    fn evict_idle(&mut self, now_ns: u64) {
        let idle = self.config.idle_timeout_ns;
        let evicted = &mut self.evicted_flows;
        let mut n = 0u64;
        self.conversations.retain(|c| {
            // Unexported counters (waiting for an owner) go out first.
            if now_ns.saturating_sub(c.last_seen_ns) <= idle || c.has_news() || c.pending() {
                return true;
            }
            let key = c.key();
            evicted.extend(c.kernel_keys(&key));
            n += 1;
            false
        });
        self.stats.conversations_evicted += n;
        self.conversations.shrink();
        if self.scratch.capacity() > 4 * self.scratch.len().max(1024) {
            self.scratch.shrink_to(2 * self.scratch.len());
        }
        if self.evicted_flows.capacity() > 4 * self.evicted_flows.len().max(1024) {
            self.evicted_flows.shrink_to(2 * self.evicted_flows.len());
        }
    }

    /// Kernel entries (tuple, ifindex, hook) of evicted or refused conversations, to delete
    /// from the kernel map before its next read.
    pub fn take_evicted_flows(&mut self) -> Vec<(FlowTuple, u32, Hook)> {
        std::mem::take(&mut self.evicted_flows)
    }

    /// Current statistics.
    pub fn stats(&self) -> TableStats {
        TableStats {
            conversations_active: self.conversations.len() as u64,
            sockets_tracked: self.owners.sockets_tracked() as u64,
            state_changes_pending: self.owners.pending_len() as u64,
            sockets_dropped: self.owners.counters.sockets_dropped,
            owners_evicted: self.owners.counters.owners_evicted,
            state_changes_dropped: self.owners.counters.state_changes_dropped,
            state_changes_expired: self.owners.counters.state_changes_expired,
            processes_dropped: self.owners.counters.processes_dropped,
            nat_mappings: self.nat.len() as u64,
            nat_mappings_dropped: self.nat.dropped,
            signals: self.signals.stats(),
            ..self.stats
        }
    }
}

/// An export's records on their way to its consumer: handed over (and
/// dropped) every `chunk` records, so an export holds at most that many.
struct Chunks<'c> {
    buf: Vec<ConversationRecord>,
    chunk: usize,
    consumer: &'c mut dyn FnMut(&mut Vec<ConversationRecord>),
    total: u64,
}

impl<'c> Chunks<'c> {
    fn new(
        chunk: usize,
        expected: usize,
        consumer: &'c mut dyn FnMut(&mut Vec<ConversationRecord>),
    ) -> Self {
        let chunk = chunk.max(1);
        Self {
            buf: Vec::with_capacity(chunk.min(expected)),
            chunk,
            consumer,
            total: 0,
        }
    }

    fn push(&mut self, r: ConversationRecord) {
        self.buf.push(r);
        if self.buf.len() >= self.chunk {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        if !self.buf.is_empty() {
            self.total += self.buf.len() as u64;
            (self.consumer)(&mut self.buf);
            self.buf.clear();
        }
    }

    /// Hands over the rest; the number of records.
    fn finish(mut self) -> u64 {
        self.hand_over();
        self.total
    }
}

/// Collects an export's records into `all` (moved, not copied).
fn take_all(all: &mut Vec<ConversationRecord>, chunk: &mut Vec<ConversationRecord>) {
    if all.is_empty() {
        std::mem::swap(all, chunk);
    } else {
        all.append(chunk);
    }
}

/// Whether a TCP/UDP end with an address sockets of this host use has no owner.
fn unowned_local(owners: &OwnerIndex, key: &ConvKey, conv: &Conversation) -> bool {
    key_has_ports(key.proto)
        && (0..2).any(|s| {
            conv.owners.get(s).is_none()
                && (owners.is_local(key.ends[s].0) || owners.is_local(conv.seen_as(key, s).0))
        })
}

/// A new connection on `key`'s tuple since its conversation began: the
/// conversation is replaced by the new connection's (returned: the old
/// one, for its last record).
fn reuse_of(
    owners: &OwnerIndex,
    stats: &mut TableStats,
    key: &ConvKey,
    conv: &mut Conversation,
) -> Option<Conversation> {
    let at = (0..2).find_map(|side| {
        let old = conv.owners.get(side)?;
        let now = owners.find(key.proto, key.ends[side], conv.seen_as(key, 1 - side))?;
        let (takeovers, now) = (now.takeovers, now.owner);
        if now.cookie() == old.cookie() {
            return None;
        }
        // TCP: a connection established while we watched (not the same socket
        // found twice, from /proc and from the kernel). UDP: a client's new socket.
        let started = owners.started_ns(now.cookie())?;
        let tcp = key.proto == crate::types::proto::TCP;
        let fresh = if tcp {
            old.exact()
        } else {
            old.exact() || conv.owners.role(side) == Some(Role::Client)
        };
        let after = started.max(now.took_over_ns()) > conv.first_seen_ns.max(conv.since_ns());
        let between = takeovers.after(old.took_over_ns());
        (fresh && after).then_some((
            started.min(now.since_ns()).max(now.took_over_ns()),
            old.cookie(),
            between,
        ))
    });
    let (at, old_cookie, between) = at?;
    // Which of this read's packets are the new connection's: all of them when
    // they are newer than the start, or than the old socket's close.
    let from = conv
        .entries
        .iter()
        .filter(|e| !e.pending.is_zero())
        .map(|e| e.pending_from_ns)
        .min();
    let closed = owners.closed_ns(old_cookie);
    let clean = from
        .is_none_or(|f| f >= at || closed.is_some_and(|c| f > c.saturating_add(PATH_MARGIN_NS)));
    stats.connections_reused += 1;
    if !clean {
        stats.connections_unsplit += 1;
    }
    // Connections between the old one and the one found now ran within
    // this interval: merged into the new one.
    stats.connections_merged += between.saturating_sub(1);
    let next = conv.successor(at, true);
    Some(std::mem::replace(conv, next))
}

fn build(
    owners: &OwnerIndex,
    stats: &mut TableStats,
    nat_join: NatJoin,
    key: &ConvKey,
    conv: &mut Conversation,
    ctx: &ExportCtx<'_>,
    unowned_local: bool,
) -> ConversationRecord {
    let mut r = build_record(key, conv, owners, ctx);
    if conv.nat().is_some() {
        stats.records_nat += 1;
    } else if unowned_local && nat_join == NatJoin::Unavailable {
        r.nat = Some("unjoined".to_owned());
        stats.records_nat_unjoined += 1;
    }
    if !r.client.local && !r.server.local {
        stats.records_unattributed += 1;
    }
    if unowned_local {
        stats.records_unattributed_local += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owners::Addr;
    use state::client_by_ports;
    use std::net::{IpAddr, Ipv4Addr};

    fn ep(last: u8, port: u16) -> Addr {
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    #[test]
    fn key_orders_endpoints_and_names_sender() {
        let t = FlowTuple::new(6, ep(2, 80), ep(1, 40000));
        let (k, s) = ConvKey::of(&t);
        assert_eq!((k.ends, s), ([ep(1, 40000), ep(2, 80)], 1));
        assert_eq!(k.tuple(s), t);
        assert_eq!(ConvKey::of(&t.reversed()), (k, 0));
    }

    #[test]
    fn a_packed_key_unpacks_to_the_same_key() {
        use std::net::Ipv6Addr;
        let v6 = |s: &str| (s.parse::<IpAddr>().unwrap(), 443);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        for (a, b) in [
            (ep(1, 40000), ep(2, 80)),
            (ep(255, 65535), (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            (v6("fd00::1"), v6("2001:db8::ffff:1")),
            (ep(1, 5), v6("::1")),
            ((mapped, 7), ep(1, 7)),
            ((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 1), ep(0, 1)),
        ] {
            for proto in [1, 6, 17, 58, 255] {
                let k = ConvKey::of(&FlowTuple::new(proto, a, b)).0;
                let p = state::PackedKey::from(&k);
                assert_eq!(p.unpack(), k);
                let other = ConvKey::of(&FlowTuple::new(proto, a, (b.0, b.1 ^ 1))).0;
                assert_ne!(state::PackedKey::from(&other), p);
            }
        }
        // An IPv4 address and the IPv6 one it maps to stay apart (tuples
        // normalise them; a key built otherwise keeps what it was given).
        let k4 = ConvKey {
            proto: 6,
            ends: [ep(1, 7), ep(2, 7)],
        };
        let k6 = ConvKey {
            proto: 6,
            ends: [(mapped, 7), ep(2, 7)],
        };
        let (p4, p6) = (state::PackedKey::from(&k4), state::PackedKey::from(&k6));
        assert_ne!(p4, p6);
        assert_eq!((p4.unpack(), p6.unpack()), (k4, k6));
    }

    #[test]
    fn ports_rule() {
        let k = |a, b| ConvKey::of(&FlowTuple::new(17, a, b)).0;
        // 10.0.0.1:40000 <-> 10.0.0.2:53: the :53 side (index 1) is the server.
        assert_eq!(client_by_ports(&k(ep(1, 40000), ep(2, 53))), 0);
        assert_eq!(client_by_ports(&k(ep(1, 53), ep(2, 40000))), 1);
        // Equal ports: the lower address serves.
        assert_eq!(client_by_ports(&k(ep(1, 7), ep(2, 7))), 1);
    }

    #[test]
    fn per_conversation_sizes_stay_within_the_memory_budget() {
        use std::mem::size_of;
        // BENCHMARKS.md ("Memory per conversation") rests on these: a map
        // bucket is a pointer (the key lives in the conversation), a
        // conversation keeps two kernel entries inline, signals, take-over
        // histories and rare state (moved paths, a reused tuple) beside it.
        // Conversation's owner references (`owners.rs`) are counted apart.
        let owners = size_of::<crate::owners::EndOwners>();
        assert_eq!(size_of::<Box<Conversation>>(), 8, "a map bucket");
        assert!(size_of::<Conversation>() - owners <= 272);
        // Its owners: a shared record and a role per end (24 B, was 2 × 40).
        // At most 296 B: with glibc's 8-B header a 304-B chunk (304 B would
        // take a 320-B one); the NAT link lives in the rare state.
        assert!(size_of::<Conversation>() <= 296);
        assert!(size_of::<KernelEntry>() <= 72);
    }

    #[test]
    fn table_is_send() {
        fn send<T: Send>() {}
        send::<ConversationTable>();
    }
}
