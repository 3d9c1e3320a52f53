//! The conversation table: turns cumulative per-interface kernel counters
//! into per-interval conversation records, attributed to socket owners.
//!
//! Counting: a kernel entry is one (tuple, ifindex, hook). Its cumulative
//! counters become deltas summed into a running total per entry; a packet that
//! crosses several monitored hooks (veth, bridge, NIC, lo egress+ingress)
//! appears in several entries, so a direction's count is the MAX over its
//! entries' running totals, and a record carries what that max grew by since
//! the last export. Taking the max of running totals rather than of each
//! interval's deltas keeps one hook's map read landing an interval late from
//! counting the same packets twice; summing records still gives the total.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::owners::{Addr, Attribution, OwnerIndex};
use crate::record::{
    clamp_i64, format_rfc3339, proto_name, tcp_flags_text, ConversationRecord, Endpoint,
    ProcessAttribution,
};
use crate::types::{
    FlowObservation, FlowTuple, Hook, Lookup, Role, SocketOwnerEvent, TcpStateChange,
};

const SEC: u64 = 1_000_000_000;

/// Limits and timeouts of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableConfig {
    /// Conversations tracked at most; observations of new ones beyond are counted as dropped.
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
        }
    }
}

/// Counters and gauges of the table; counters are cumulative since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Why a side was chosen as the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Evidence {
    Socket,
    Handshake,
    Ports,
}

impl Evidence {
    fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Handshake => "handshake",
            Self::Ports => "ports",
        }
    }
}

/// A conversation: both directions of a tuple, endpoints in ascending order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ConvKey {
    proto: u8,
    ends: [Addr; 2],
}

impl ConvKey {
    /// The key of a (normalised) tuple and the index of its sender in `ends`.
    fn of(t: &FlowTuple) -> (Self, usize) {
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
    fn tuple(&self, sender: usize) -> FlowTuple {
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    packets: u64,
    bytes: u64,
}

/// One kernel entry of a conversation.
#[derive(Clone, Copy, Debug)]
struct KernelEntry {
    sender: u8,
    ifindex: u32,
    hook: Hook,
    /// Last cumulative value read.
    last: Counters,
    /// Sum of the deltas since the conversation was created.
    total: Counters,
}

#[derive(Debug)]
struct Conversation {
    entries: Vec<KernelEntry>,
    first_seen_ns: u64,
    last_seen_ns: u64,
    /// Per sender: max over entries of `total`.
    counted: [Counters; 2],
    /// Per sender: `counted` at the last export.
    exported: [Counters; 2],
    tcp_flags: u8,
    initiator: [bool; 2],
    responder: [bool; 2],
    owners: [Option<Attribution>; 2],
    /// Client index, once proven by sockets or handshake.
    client: Option<(usize, Evidence)>,
}

impl Conversation {
    fn new(obs: &FlowObservation) -> Self {
        Self {
            entries: Vec::with_capacity(2),
            first_seen_ns: obs.first_seen_ns,
            last_seen_ns: obs.last_seen_ns,
            counted: [Counters::default(); 2],
            exported: [Counters::default(); 2],
            tcp_flags: 0,
            initiator: [false; 2],
            responder: [false; 2],
            owners: [None, None],
            client: None,
        }
    }

    fn observe(&mut self, obs: &FlowObservation, sender: usize) {
        let cur = Counters {
            packets: obs.packets,
            bytes: obs.bytes,
        };
        let pos = self.entries.iter().position(|e| {
            usize::from(e.sender) == sender && e.ifindex == obs.ifindex && e.hook == obs.hook
        });
        let idx = pos.unwrap_or_else(|| {
            self.entries.push(KernelEntry {
                sender: u8::from(sender == 1),
                ifindex: obs.ifindex,
                hook: obs.hook,
                last: Counters::default(),
                total: Counters::default(),
            });
            self.entries.len() - 1
        });
        let Some(e) = self.entries.get_mut(idx) else {
            return;
        };
        // Counters only grow while an entry lives: a smaller value is a new entry.
        let recreated = cur.packets < e.last.packets || cur.bytes < e.last.bytes;
        let (dp, db) = if recreated {
            (cur.packets, cur.bytes)
        } else {
            (cur.packets - e.last.packets, cur.bytes - e.last.bytes)
        };
        e.last = cur;
        e.total.packets = e.total.packets.saturating_add(dp);
        e.total.bytes = e.total.bytes.saturating_add(db);
        let counted = &mut self.counted[sender];
        counted.packets = counted.packets.max(e.total.packets);
        counted.bytes = counted.bytes.max(e.total.bytes);
        if obs.first_seen_ns != 0
            && (self.first_seen_ns == 0 || obs.first_seen_ns < self.first_seen_ns)
        {
            self.first_seen_ns = obs.first_seen_ns;
        }
        self.last_seen_ns = self.last_seen_ns.max(obs.last_seen_ns);
        self.tcp_flags |= obs.tcp_flags;
        self.initiator[sender] |= obs.initiator;
        self.responder[sender] |= obs.responder;
    }

    fn has_news(&self) -> bool {
        self.counted != self.exported
    }

    /// The client index: sockets, then handshake (both kept once found), then ports.
    fn decide_client(&mut self, key: &ConvKey) -> (usize, Evidence) {
        if let Some(decided) = self.client {
            return decided;
        }
        let by_socket = (0..2).find_map(|side| match self.owners[side].as_ref()?.role {
            Role::Client => Some(side),
            Role::Server => Some(1 - side),
            Role::Unknown => None,
        });
        if let Some(side) = by_socket {
            self.client = Some((side, Evidence::Socket));
        } else if let Some(side) = self.by_handshake() {
            self.client = Some((side, Evidence::Handshake));
        }
        self.client
            .unwrap_or_else(|| (client_by_ports(key), Evidence::Ports))
    }

    fn by_handshake(&self) -> Option<usize> {
        let one = |flags: [bool; 2]| match flags {
            [true, false] => Some(0),
            [false, true] => Some(1),
            _ => None,
        };
        one(self.initiator).or_else(|| one(self.responder).map(|server| 1 - server))
    }
}

/// Lower port is the server; equal ports: lower address is the server.
fn client_by_ports(key: &ConvKey) -> usize {
    let [a, b] = key.ends;
    let server = if a.1 != b.1 {
        usize::from(b.1 < a.1)
    } else {
        usize::from(b.0 < a.0)
    };
    1 - server
}

/// Conversations, their kernel entries and socket owners.
#[derive(Debug)]
pub struct ConversationTable {
    config: TableConfig,
    conversations: HashMap<ConvKey, Conversation>,
    owners: OwnerIndex,
    evicted_flows: Vec<(FlowTuple, u32, Hook)>,
    last_export_ns: Option<u64>,
    stats: TableStats,
    scratch: Vec<ConvKey>,
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
            conversations: HashMap::new(),
            owners: OwnerIndex::new(config.max_sockets),
            evicted_flows: Vec::new(),
            last_export_ns: None,
            stats: TableStats::default(),
            scratch: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Adds the cumulative counters of one kernel entry (read any number of times per interval).
    pub fn observe_flow(&mut self, obs: &FlowObservation) {
        let (key, sender) = ConvKey::of(&obs.tuple.normalized());
        let len = self.conversations.len();
        let conv = match self.conversations.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let stale = self.last_export_ns.is_some_and(|t| {
                    obs.last_seen_ns.saturating_add(self.config.idle_timeout_ns) < t
                });
                if stale {
                    // An entry we already evicted (its delete still on the way) or one that
                    // would be evicted at once: counting it would count it twice.
                    self.stats.flows_stale += 1;
                    self.evicted_flows.push((obs.tuple, obs.ifindex, obs.hook));
                    return;
                }
                if len >= self.config.max_conversations {
                    // Delete the kernel entry too, so each dropped packet is counted once.
                    self.stats.conversations_dropped += 1;
                    self.stats.packets_dropped =
                        self.stats.packets_dropped.saturating_add(obs.packets);
                    self.stats.bytes_dropped = self.stats.bytes_dropped.saturating_add(obs.bytes);
                    self.evicted_flows.push((obs.tuple, obs.ifindex, obs.hook));
                    return;
                }
                v.insert(Conversation::new(obs))
            }
        };
        conv.observe(obs, sender);
    }

    /// Stores (or updates) the owner of a socket.
    pub fn observe_owner(&mut self, ev: SocketOwnerEvent) {
        self.owners.insert(ev);
    }

    /// Applies a TCP state change: tuple and role of the socket, never its process.
    pub fn observe_tcp_state(&mut self, ev: TcpStateChange) {
        self.owners.state_change(ev);
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

    /// Records of the conversations with packets since the last export, sorted by
    /// conversation; then evicts idle conversations and expired owners. A new
    /// conversation with a local end still unowned waits up to `owner_wait_ns`.
    pub fn export(
        &mut self,
        now_mono_ns: u64,
        now_unix_ns: i128,
        host: &str,
        lookup: &dyn Lookup,
    ) -> Vec<ConversationRecord> {
        self.export_inner(now_mono_ns, now_unix_ns, host, lookup, false)
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
        self.export_inner(now_mono_ns, now_unix_ns, host, lookup, true)
    }

    fn export_inner(
        &mut self,
        now_mono_ns: u64,
        now_unix_ns: i128,
        host: &str,
        lookup: &dyn Lookup,
        last: bool,
    ) -> Vec<ConversationRecord> {
        let offset = now_unix_ns - i128::from(now_mono_ns);
        let ts = format_rfc3339(now_unix_ns);
        let mut keys = std::mem::take(&mut self.scratch);
        keys.clear();
        keys.extend(
            self.conversations
                .iter()
                .filter(|(_, c)| c.has_news())
                .map(|(k, _)| *k),
        );
        keys.sort_unstable();
        let mut records = Vec::with_capacity(keys.len());
        let mut awaiting = 0u64;
        for key in &keys {
            let Some(conv) = self.conversations.get_mut(key) else {
                continue;
            };
            attribute(key, conv, &mut self.owners, now_mono_ns);
            let unowned_local = key_has_ports(key.proto)
                && (0..2).any(|s| conv.owners[s].is_none() && self.owners.is_local(key.ends[s].0));
            if unowned_local
                && !last
                && now_mono_ns.saturating_sub(conv.first_seen_ns) < self.config.owner_wait_ns
            {
                awaiting += 1;
                continue;
            }
            let record = build_record(
                key,
                conv,
                &self.owners,
                now_mono_ns,
                offset,
                &ts,
                host,
                lookup,
            );
            if !record.client.local && !record.server.local {
                self.stats.records_unattributed += 1;
            }
            if unowned_local {
                self.stats.records_unattributed_local += 1;
            }
            records.push(record);
        }
        self.stats.conversations_awaiting_owner = awaiting;
        self.scratch = keys;
        self.stats.records_exported += records.len() as u64;
        self.last_export_ns = Some(now_mono_ns);
        self.evict_idle(now_mono_ns);
        let c = &self.config;
        self.owners.expire(
            now_mono_ns,
            c.owner_grace_ns,
            c.closed_owner_grace_ns,
            c.pending_state_ns,
        );
        records
    }

    fn evict_idle(&mut self, now_ns: u64) {
        let idle = self.config.idle_timeout_ns;
        let evicted = &mut self.evicted_flows;
        let mut n = 0u64;
        self.conversations.retain(|key, c| {
            // Unexported counters (waiting for an owner) go out first.
            if now_ns.saturating_sub(c.last_seen_ns) <= idle || c.has_news() {
                return true;
            }
            let flows = c
                .entries
                .iter()
                .map(|e| (key.tuple(usize::from(e.sender)), e.ifindex, e.hook));
            evicted.extend(flows);
            n += 1;
            false
        });
        self.stats.conversations_evicted += n;
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
            ..self.stats
        }
    }
}

/// TCP and UDP: an end is a socket. (ICMP echo replies come from the kernel.)
fn key_has_ports(proto: u8) -> bool {
    proto == crate::types::proto::TCP || proto == crate::types::proto::UDP
}

/// Finds the owners of still unattributed ends; refreshes roles and owner references.
fn attribute(key: &ConvKey, conv: &mut Conversation, owners: &mut OwnerIndex, now_ns: u64) {
    for side in 0..2 {
        match &mut conv.owners[side] {
            Some(a) => {
                // Keep the identity for good; refresh the role while the socket is tracked.
                if let Some(role) = owners.role_of(a.cookie) {
                    a.role = role;
                }
            }
            slot @ None => *slot = owners.find(key.proto, key.ends[side], key.ends[1 - side]),
        }
        if let Some(a) = &conv.owners[side] {
            owners.touch(a.cookie, now_ns);
        }
    }
}

/// Decides and renders one conversation; advances its exported counters.
#[allow(clippy::too_many_arguments)]
fn build_record(
    key: &ConvKey,
    conv: &mut Conversation,
    owners: &OwnerIndex,
    now_ns: u64,
    offset: i128,
    ts: &str,
    host: &str,
    lookup: &dyn Lookup,
) -> ConversationRecord {
    let (client, evidence) = conv.decide_client(key);
    let server = 1 - client;
    let delta = |s: usize| Counters {
        packets: conv.counted[s]
            .packets
            .saturating_sub(conv.exported[s].packets),
        bytes: conv.counted[s].bytes.saturating_sub(conv.exported[s].bytes),
    };
    let (c2s, s2c) = (delta(client), delta(server));
    conv.exported = conv.counted;
    let endpoint = |side: usize| {
        let process = conv.owners[side].as_ref().map(|a| {
            let p = &a.identity.process;
            let exe = owners.exe_of(p.pid, a.identity.since_ns);
            ProcessAttribution::new(&a.identity, exe, lookup)
        });
        Endpoint::new(key.ends[side], process)
    };
    let mut ifindexes: Vec<u32> = conv.entries.iter().map(|e| e.ifindex).collect();
    ifindexes.sort_unstable();
    ifindexes.dedup();
    let wall = |mono: u64| i128::from(mono) + offset;
    ConversationRecord {
        ts: ts.to_owned(),
        ts_unix_ns: clamp_i64(wall(now_ns)),
        host: host.to_owned(),
        proto: proto_name(key.proto),
        client: endpoint(client),
        server: endpoint(server),
        client_evidence: evidence.as_str().to_owned(),
        bytes_c2s: c2s.bytes,
        bytes_s2c: s2c.bytes,
        packets_c2s: c2s.packets,
        packets_s2c: s2c.packets,
        first_seen: format_rfc3339(wall(conv.first_seen_ns)),
        first_seen_unix_ns: clamp_i64(wall(conv.first_seen_ns)),
        last_seen: format_rfc3339(wall(conv.last_seen_ns)),
        last_seen_unix_ns: clamp_i64(wall(conv.last_seen_ns)),
        duration_ms: conv.last_seen_ns.saturating_sub(conv.first_seen_ns) / 1_000_000,
        tcp_flags: conv.tcp_flags,
        tcp_flags_text: tcp_flags_text(conv.tcp_flags),
        ifaces: ifindexes
            .into_iter()
            .map(|i| lookup.iface_name(i).unwrap_or_else(|| format!("if{i}")))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn ports_rule() {
        let k = |a, b| ConvKey::of(&FlowTuple::new(17, a, b)).0;
        // 10.0.0.1:40000 <-> 10.0.0.2:53: the :53 side (index 1) is the server.
        assert_eq!(client_by_ports(&k(ep(1, 40000), ep(2, 53))), 0);
        assert_eq!(client_by_ports(&k(ep(1, 53), ep(2, 40000))), 1);
        // Equal ports: the lower address serves.
        assert_eq!(client_by_ports(&k(ep(1, 7), ep(2, 7))), 1);
    }

    #[test]
    fn table_is_send() {
        fn send<T: Send>() {}
        send::<ConversationTable>();
    }
}
