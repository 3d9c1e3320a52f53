//! Socket owners: who (process, container) is behind a socket, indexed by
//! cookie, by full tuple and by local half (unconnected UDP, listeners).
//!
//! Owner events come from process context and carry the identity; TCP state
//! changes may run in any context and only ever touch the tuple and the role.
//!
//! Every address a socket of this host was seen with (any network namespace)
//! is remembered as local for the owner grace period: a conversation end with
//! a local address but no owner is a socket whose owner event is missing or
//! not there yet, or an end without a socket (RST to a closed port).

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::cgroup::{parse_container, ContainerRef};
use crate::types::{normalize_ip, ProcessIdentity, Role, SocketOwnerEvent, TcpStateChange};

/// An address and a port.
pub(crate) type Addr = (IpAddr, u16);

/// The identity behind a socket, shared by the owner table and the
/// conversations attributed to it (which outlive the owner entry). Interned:
/// every socket of one process (same pid, comm, exe, uid, gid, cgroup) shares
/// one record, so a conversation costs a pointer, not a copy of the strings.
#[derive(Debug)]
pub(crate) struct OwnerIdentity {
    /// The process as captured in its own context.
    pub process: ProcessIdentity,
    /// The container parsed from the cgroup path.
    pub container: Option<ContainerRef>,
}

/// An interned identity, found by its process (the container follows from
/// the process's cgroup path).
#[derive(Debug)]
struct Interned(Arc<OwnerIdentity>);

impl PartialEq for Interned {
    fn eq(&self, other: &Self) -> bool {
        self.0.process == other.0.process
    }
}

impl Eq for Interned {}

impl Hash for Interned {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.process.hash(state);
    }
}

impl Borrow<ProcessIdentity> for Interned {
    fn borrow(&self) -> &ProcessIdentity {
        &self.0.process
    }
}

/// What a conversation side keeps of its owner.
#[derive(Clone, Debug)]
pub(crate) struct Attribution {
    /// The socket.
    pub cookie: u64,
    /// The role last known for the socket.
    pub role: Role,
    /// Who.
    pub identity: Arc<OwnerIdentity>,
    /// When the socket's owner event was seen (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
    /// Found by its full tuple (a connected socket), not by its local half.
    pub exact: bool,
    /// When this socket took the tuple (or half) over from another socket
    /// (CLOCK_MONOTONIC ns; 0: it was the first).
    pub took_over_ns: u64,
}

/// Take-overs of an index key remembered (to count connections that ran
/// within one read interval).
pub(crate) const TAKEOVERS: usize = 4;

/// The latest take-overs of a tuple (or half) by a new socket, newest first,
/// as `OwnerIndex::find` saw them (not kept in conversations: only the
/// lookup that attributes an end needs them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Takeovers(pub [u64; TAKEOVERS]);

impl Takeovers {
    /// Take-overs of the tuple after `t_ns`.
    pub fn after(&self, t_ns: u64) -> u64 {
        self.0.iter().filter(|&&t| t > t_ns).count() as u64
    }
}

#[derive(Debug)]
struct Owner {
    proto: u8,
    local: Addr,
    remote: Option<Addr>,
    role: Role,
    identity: Arc<OwnerIdentity>,
    /// When the owner event behind `identity` was seen.
    since_ns: u64,
    last_ref_ns: u64,
    /// When the TCP socket reached CLOSE: no new conversation can start on it.
    closed_ns: Option<u64>,
    /// When its TCP connection was established (a state change from
    /// SYN_SENT or SYN_RECV), i.e. it is a connection that started while
    /// flowlens ran.
    established_ns: Option<u64>,
    /// Its first owner event.
    first_ns: u64,
}

/// A state change that came before its owner event.
#[derive(Clone, Copy, Debug)]
struct PendingState {
    change: TcpStateChange,
    role: Role,
    /// A parked change was the socket's CLOSE (at this time).
    closed_ns: Option<u64>,
    /// A parked change established the connection (at this time).
    established_ns: Option<u64>,
}

fn closed_at(ev: &TcpStateChange) -> Option<u64> {
    (ev.new_state == crate::types::tcp_state::CLOSE).then_some(ev.ts_ns)
}

fn established_at(ev: &TcpStateChange) -> Option<u64> {
    (ev.new_state == crate::types::tcp_state::ESTABLISHED && ev.implied_role() != Role::Unknown)
        .then_some(ev.ts_ns)
}

#[derive(Debug)]
struct ProcessExe {
    exe: String,
    exited_ns: Option<u64>,
}

type FullKey = (u8, Addr, Addr);
type HalfKey = (u8, Addr);

/// The socket an index key points to, and when it took the key over from
/// another socket (0: it was the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    cookie: u64,
    took_over_ns: u64,
}

/// Index keys -> sockets. The take-over history lives beside the slots, only
/// for keys another socket took over (a reused port): most never are.
#[derive(Debug)]
struct SlotIndex<K> {
    slots: HashMap<K, Slot>,
    /// The latest take-overs of a key, newest first (0: none).
    history: HashMap<K, [u64; TAKEOVERS]>,
}

impl<K> Default for SlotIndex<K> {
    fn default() -> Self {
        Self {
            slots: HashMap::new(),
            history: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Copy> SlotIndex<K> {
    fn get(&self, key: &K) -> Option<(Slot, Takeovers)> {
        let slot = *self.slots.get(key)?;
        let history = self.history.get(key).copied().unwrap_or([0; TAKEOVERS]);
        Some((slot, Takeovers(history)))
    }

    /// Points `key` at `cookie`, remembering when it was taken from another socket.
    fn take_over(&mut self, key: K, cookie: u64, ts_ns: u64) {
        match self.slots.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Slot {
                    cookie,
                    took_over_ns: 0,
                });
            }
            Entry::Occupied(mut o) if o.get().cookie != cookie => {
                *o.get_mut() = Slot {
                    cookie,
                    took_over_ns: ts_ns,
                };
                let h = self.history.entry(key).or_insert([0; TAKEOVERS]);
                h.rotate_right(1);
                h[0] = ts_ns;
            }
            Entry::Occupied(_) => {}
        }
    }

    /// The connection of `cookie`, which holds `key`, began at `t_ns`: earlier
    /// than its take-over was recorded (a server's accept() came later).
    fn began_at(&mut self, key: &K, cookie: u64, t_ns: u64) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.cookie != cookie || slot.took_over_ns <= t_ns {
            return;
        }
        if let Some(h) = self.history.get_mut(key) {
            if h[0] == slot.took_over_ns {
                h[0] = t_ns;
            }
        }
        slot.took_over_ns = t_ns;
    }

    fn remove_if(&mut self, key: &K, cookie: u64) {
        if self.slots.get(key).is_some_and(|s| s.cookie == cookie) {
            self.slots.remove(key);
            self.history.remove(key);
        }
    }

    /// Keeps the keys of sockets still tracked.
    fn retain_owned<V>(&mut self, owners: &HashMap<u64, V>) {
        self.slots.retain(|_, s| owners.contains_key(&s.cookie));
        let slots = &self.slots;
        self.history.retain(|k, _| slots.contains_key(k));
    }

    fn shrink(&mut self) {
        shrink(&mut self.slots);
        shrink(&mut self.history);
    }
}

/// Counters of the owner table.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OwnerCounters {
    pub sockets_dropped: u64,
    pub owners_evicted: u64,
    pub state_changes_dropped: u64,
    pub state_changes_expired: u64,
    pub processes_dropped: u64,
}

/// Socket owners and the indexes to find them from a conversation endpoint.
#[derive(Debug, Default)]
pub(crate) struct OwnerIndex {
    /// Boxed: the map's buckets (up to twice the owners) hold a pointer, not the owner.
    owners: HashMap<u64, Box<Owner>>,
    full: SlotIndex<FullKey>,
    half: SlotIndex<HalfKey>,
    pending: HashMap<u64, PendingState>,
    processes: HashMap<u32, ProcessExe>,
    /// Local addresses -> when a socket last used them.
    local_addrs: HashMap<IpAddr, u64>,
    /// Identities in use by owners or conversations (swept in `expire`).
    identities: HashSet<Interned>,
    max_sockets: usize,
    pub counters: OwnerCounters,
}

impl OwnerIndex {
    /// An empty index holding at most `max_sockets` owners (and as many parked changes and processes).
    pub fn new(max_sockets: usize) -> Self {
        Self {
            max_sockets,
            ..Self::default()
        }
    }

    /// Owners tracked now.
    pub fn sockets_tracked(&self) -> usize {
        self.owners.len()
    }

    /// State changes waiting for their owner event.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether sockets of this host use `ip` (normalised).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.local_addrs.contains_key(&ip)
    }

    fn learn_local(&mut self, ip: IpAddr, ts_ns: u64) {
        if ip.is_unspecified() {
            return;
        }
        // Bounded like the owners: an address is only added by an owner event or a state change.
        let full = self.local_addrs.len() >= self.max_sockets;
        match self.local_addrs.get_mut(&ip) {
            Some(t) => *t = (*t).max(ts_ns),
            None if full => {}
            None => {
                self.local_addrs.insert(ip, ts_ns);
            }
        }
    }

    /// Stores or updates the owner of `ev.cookie`.
    pub fn insert(&mut self, ev: SocketOwnerEvent) {
        let ev = ev.normalized();
        self.learn_local(ev.local.0, ev.ts_ns);
        let mut process = ev.process;
        if process.exe.is_none() {
            process.exe = self.exe_of(process.pid, ev.ts_ns).map(str::to_owned);
        }
        let identity = self.intern(process);
        if let Some(owner) = self.owners.get_mut(&ev.cookie) {
            // Another event for the same socket (e.g. fd passed on): newest owner wins,
            // but never trade a more complete tuple for a less complete one.
            owner.identity = identity;
            owner.since_ns = ev.ts_ns;
            owner.last_ref_ns = owner.last_ref_ns.max(ev.ts_ns);
            if ev.role != Role::Unknown {
                owner.role = ev.role;
            }
            if ev.local.1 != 0 && (ev.remote.is_some() || owner.remote.is_none()) {
                self.retuple(ev.cookie, ev.local, ev.remote, ev.ts_ns);
            }
            return;
        }
        if self.owners.len() >= self.max_sockets {
            self.counters.sockets_dropped += 1;
            return;
        }
        let owner = Owner {
            proto: ev.proto,
            local: ev.local,
            remote: ev.remote,
            role: ev.role,
            identity,
            since_ns: ev.ts_ns,
            last_ref_ns: ev.ts_ns,
            closed_ns: None,
            established_ns: None,
            first_ns: ev.ts_ns,
        };
        // The tuple was taken over when the connection began (a server's
        // accept() may return long after its handshake).
        let began = self
            .pending
            .get(&ev.cookie)
            .and_then(|p| p.established_ns)
            .map_or(ev.ts_ns, |t| t.min(ev.ts_ns));
        self.index(ev.cookie, &owner, began);
        self.owners.insert(ev.cookie, Box::new(owner));
        if let Some(p) = self.pending.remove(&ev.cookie) {
            self.apply_state(p.change, p.role);
            if let Some(o) = self.owners.get_mut(&ev.cookie) {
                o.closed_ns = o.closed_ns.or(p.closed_ns);
                o.established_ns = o.established_ns.or(p.established_ns);
            }
        }
    }

    /// The shared identity of `process` (its container parsed once).
    fn intern(&mut self, process: ProcessIdentity) -> Arc<OwnerIdentity> {
        if let Some(i) = self.identities.get(&process) {
            return Arc::clone(&i.0);
        }
        let container = process.cgroup_path.as_deref().and_then(parse_container);
        let identity = Arc::new(OwnerIdentity { process, container });
        self.identities.insert(Interned(Arc::clone(&identity)));
        identity
    }

    /// Distinct identities held (owners' and conversations').
    #[cfg(test)]
    pub fn identities_len(&self) -> usize {
        self.identities.len()
    }

    /// Applies a TCP state change (tuple and role only), or parks it until the owner event arrives.
    pub fn state_change(&mut self, ev: TcpStateChange) {
        let ev = ev.normalized();
        self.learn_local(ev.local.0, ev.ts_ns);
        let role = ev.implied_role();
        if self.owners.contains_key(&ev.cookie) {
            self.apply_state(ev, role);
            return;
        }
        let full = self.pending.len() >= self.max_sockets;
        match self.pending.get_mut(&ev.cookie) {
            Some(p) => {
                // Keep the newest known role and the newest bound tuple.
                if role != Role::Unknown {
                    p.role = role;
                }
                p.closed_ns = p.closed_ns.or(closed_at(&ev));
                p.established_ns = p.established_ns.or(established_at(&ev));
                if ev.local.1 != 0 || p.change.local.1 == 0 {
                    p.change = ev;
                } else {
                    p.change.ts_ns = p.change.ts_ns.max(ev.ts_ns);
                }
            }
            None if full => {
                self.counters.state_changes_dropped += 1;
            }
            None => {
                self.pending.insert(
                    ev.cookie,
                    PendingState {
                        change: ev,
                        role,
                        closed_ns: closed_at(&ev),
                        established_ns: established_at(&ev),
                    },
                );
            }
        }
    }

    fn apply_state(&mut self, ev: TcpStateChange, role: Role) {
        let Some(owner) = self.owners.get_mut(&ev.cookie) else {
            return;
        };
        owner.last_ref_ns = owner.last_ref_ns.max(ev.ts_ns);
        if role != Role::Unknown {
            owner.role = role;
        }
        owner.closed_ns = owner.closed_ns.or(closed_at(&ev));
        if let (None, Some(t)) = (owner.established_ns, established_at(&ev)) {
            owner.established_ns = Some(t);
            // The tuple was taken over when the connection began, not when the
            // owner event (a server's accept()) came.
            if let Some(r) = owner.remote {
                self.full
                    .began_at(&(owner.proto, owner.local, r), ev.cookie, t);
            }
        }
        // A listener's change has no remote; anything without a local port is not bound yet.
        if ev.local.1 == 0 {
            return;
        }
        let remote = (ev.remote.1 != 0 || !ev.remote.0.is_unspecified()).then_some(ev.remote);
        if (owner.local, owner.remote) != (ev.local, remote) && remote.is_some() {
            self.retuple(ev.cookie, ev.local, remote, ev.ts_ns);
        }
    }

    /// Moves an owner to a new tuple, keeping the indexes in step.
    fn retuple(&mut self, cookie: u64, local: Addr, remote: Option<Addr>, ts_ns: u64) {
        let Some(owner) = self.owners.get_mut(&cookie) else {
            return;
        };
        if (owner.local, owner.remote) == (local, remote) {
            return;
        }
        let (proto, old_local, old_remote) = (owner.proto, owner.local, owner.remote);
        owner.local = local;
        owner.remote = remote;
        match old_remote {
            Some(r) => self.full.remove_if(&(proto, old_local, r), cookie),
            None => self.half.remove_if(&(proto, old_local), cookie),
        }
        if let Some(owner) = self.owners.get(&cookie) {
            index_into(&mut self.full, &mut self.half, cookie, owner, ts_ns);
        }
    }

    fn index(&mut self, cookie: u64, owner: &Owner, ts_ns: u64) {
        index_into(&mut self.full, &mut self.half, cookie, owner, ts_ns);
    }

    /// The owner of the local end `local` of a conversation with `remote`:
    /// exact tuple first, then the local half (unconnected UDP, listeners),
    /// wildcard addresses included.
    pub fn find(&self, proto: u8, local: Addr, remote: Addr) -> Option<(Attribution, Takeovers)> {
        let (addr, port) = local;
        let any_same = unspecified_like(addr);
        let any_v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let exact = self
            .full
            .get(&(proto, local, remote))
            .or_else(|| self.full.get(&(proto, (any_same, port), remote)));
        let ((slot, takeovers), exact) = match exact {
            Some(s) => (s, true),
            None => (
                self.half
                    .get(&(proto, local))
                    .or_else(|| self.half.get(&(proto, (any_same, port))))
                    // A dual-stack `::` socket also receives IPv4.
                    .or_else(|| self.half.get(&(proto, (any_v6, port))))?,
                false,
            ),
        };
        let owner = self.owners.get(&slot.cookie)?;
        Some((
            Attribution {
                cookie: slot.cookie,
                role: owner.role,
                identity: Arc::clone(&owner.identity),
                since_ns: owner.since_ns,
                exact,
                took_over_ns: slot.took_over_ns,
            },
            takeovers,
        ))
    }

    /// When the socket's connection began while flowlens watched: a TCP
    /// connection's establishment, a UDP socket's first event.
    pub fn started_ns(&self, cookie: u64) -> Option<u64> {
        let o = self.owners.get(&cookie)?;
        if o.proto == crate::types::proto::TCP {
            o.established_ns
        } else {
            Some(o.first_ns)
        }
    }

    /// When the TCP socket closed, if it did.
    pub fn closed_ns(&self, cookie: u64) -> Option<u64> {
        self.owners.get(&cookie)?.closed_ns
    }

    /// The current role of a socket, if still tracked.
    pub fn role_of(&self, cookie: u64) -> Option<Role> {
        self.owners.get(&cookie).map(|o| o.role)
    }

    /// Marks a socket (and its address) as referenced by a live conversation.
    pub fn touch(&mut self, cookie: u64, now_ns: u64) {
        if let Some(o) = self.owners.get_mut(&cookie) {
            o.last_ref_ns = o.last_ref_ns.max(now_ns);
            let ip = o.local.0;
            self.learn_local(ip, now_ns);
        }
    }

    /// Remembers the executable of a process.
    pub fn exec(&mut self, pid: u32, exe: String) {
        if self.processes.len() >= self.max_sockets && !self.processes.contains_key(&pid) {
            self.counters.processes_dropped += 1;
            return;
        }
        self.processes.insert(
            pid,
            ProcessExe {
                exe,
                exited_ns: None,
            },
        );
    }

    /// Marks a process as exited; its exe is kept for the owner grace period.
    pub fn exit(&mut self, pid: u32, ts_ns: u64) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.exited_ns = Some(ts_ns);
        }
    }

    /// The exe of `pid` as it was at `at_ns` (not of an earlier process with a reused pid).
    pub fn exe_of(&self, pid: u32, at_ns: u64) -> Option<&str> {
        let p = self.processes.get(&pid)?;
        match p.exited_ns {
            Some(exit) if exit < at_ns => None,
            _ => Some(p.exe.as_str()),
        }
    }

    /// Forgets owners unreferenced for `grace_ns` and closed TCP sockets
    /// `closed_grace_ns` after their close (conversations keep the identity
    /// they were given; a closed socket starts no new one), state changes
    /// parked for `pending_ns`, exited processes and local addresses unused for
    /// longer than `grace_ns`.
    pub fn expire(&mut self, now_ns: u64, grace_ns: u64, closed_grace_ns: u64, pending_ns: u64) {
        let before = self.owners.len();
        self.owners.retain(|_, o| match o.closed_ns {
            Some(closed) => now_ns.saturating_sub(closed) <= closed_grace_ns.min(grace_ns),
            None => now_ns.saturating_sub(o.last_ref_ns) <= grace_ns,
        });
        let evicted = before - self.owners.len();
        if evicted > 0 {
            self.counters.owners_evicted += evicted as u64;
            self.full.retain_owned(&self.owners);
            self.half.retain_owned(&self.owners);
        }
        let before = self.pending.len();
        self.pending
            .retain(|_, p| now_ns.saturating_sub(p.change.ts_ns) <= pending_ns);
        self.counters.state_changes_expired += (before - self.pending.len()) as u64;
        self.processes.retain(|_, p| {
            p.exited_ns
                .is_none_or(|t| now_ns.saturating_sub(t) <= grace_ns)
        });
        self.local_addrs
            .retain(|_, t| now_ns.saturating_sub(*t) <= grace_ns);
        // Identities no owner and no conversation holds any more.
        self.identities.retain(|i| Arc::strong_count(&i.0) > 1);
        shrink(&mut self.owners);
        self.full.shrink();
        self.half.shrink();
        shrink(&mut self.pending);
        shrink(&mut self.processes);
        shrink(&mut self.local_addrs);
        shrink_set(&mut self.identities);
    }
}

fn index_into(
    full: &mut SlotIndex<FullKey>,
    half: &mut SlotIndex<HalfKey>,
    cookie: u64,
    o: &Owner,
    ts_ns: u64,
) {
    if o.local.1 == 0 {
        // connect() before bind: wait for the state change to tell the port.
        return;
    }
    match o.remote {
        Some(r) => full.take_over((o.proto, o.local, r), cookie, ts_ns),
        None => half.take_over((o.proto, o.local), cookie, ts_ns),
    }
}

/// Gives memory back after a burst: a map holding less than a quarter of
/// its capacity (and more than a small floor) shrinks to twice its length.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    const FLOOR: usize = 1024;
    if map.capacity() > FLOOR && map.capacity() / 4 > map.len() {
        map.shrink_to((2 * map.len()).max(FLOOR));
    }
}

/// `shrink` for a set.
fn shrink_set<K: std::hash::Hash + Eq>(set: &mut HashSet<K>) {
    const FLOOR: usize = 1024;
    if set.capacity() > FLOOR && set.capacity() / 4 > set.len() {
        set.shrink_to((2 * set.len()).max(FLOOR));
    }
}

/// The wildcard address of the same family.
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match normalize_ip(ip) {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn event(cookie: u64, pid: u32, port: u16, ts_ns: u64) -> SocketOwnerEvent {
        SocketOwnerEvent {
            cookie,
            proto: 6,
            local: (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port),
            remote: Some((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443)),
            netns: 1,
            role: Role::Client,
            process: ProcessIdentity {
                pid,
                comm: "curl".to_owned(),
                exe: Some("/usr/bin/curl".to_owned()),
                uid: 1000,
                gid: 1000,
                cgroup_id: 7,
                cgroup_path: Some(format!("/system.slice/docker-{ID}.scope")),
            },
            ts_ns,
        }
    }

    fn find(ix: &OwnerIndex, port: u16) -> Attribution {
        let local = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port);
        let remote = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443);
        match ix.find(6, local, remote) {
            Some((a, _)) => a,
            None => panic!("no owner for port {port}"),
        }
    }

    #[test]
    fn sockets_of_one_process_share_one_identity_until_nobody_holds_it() {
        let mut ix = OwnerIndex::new(16);
        ix.insert(event(1, 100, 40001, 10));
        ix.insert(event(2, 100, 40002, 20));
        ix.insert(event(3, 101, 40003, 30));
        assert_eq!(ix.identities_len(), 2);
        let (a, b, c) = (find(&ix, 40001), find(&ix, 40002), find(&ix, 40003));
        assert!(Arc::ptr_eq(&a.identity, &b.identity));
        assert!(!Arc::ptr_eq(&a.identity, &c.identity));
        // Each socket keeps its own owner event time.
        assert_eq!((a.since_ns, b.since_ns, c.since_ns), (10, 20, 30));
        assert_eq!(
            a.identity
                .container
                .as_ref()
                .map(|c| (c.runtime, c.id.as_str())),
            Some(("docker", ID))
        );
        assert_eq!(c.identity.process.pid, 101);
        drop((b, c));
        // Every owner forgotten; a conversation still holds pid 100's identity.
        ix.expire(10_000, 100, 100, 100);
        assert_eq!(ix.sockets_tracked(), 0);
        assert_eq!(ix.identities_len(), 1);
        // A new socket of the same process gets the identity still held.
        ix.insert(event(4, 100, 40004, 10_000));
        assert!(Arc::ptr_eq(&find(&ix, 40004).identity, &a.identity));
        drop(a);
        ix.expire(20_000, 100, 100, 100);
        assert_eq!(ix.identities_len(), 0);
    }

    #[test]
    fn take_over_history_only_for_keys_taken_over_and_gone_with_them() {
        let mut ix: SlotIndex<u32> = SlotIndex::default();
        ix.take_over(1, 10, 100);
        ix.take_over(1, 10, 150);
        assert!(ix.history.is_empty());
        assert_eq!(
            ix.get(&1).map(|(s, t)| (s.took_over_ns, t.0)),
            Some((0, [0; 4]))
        );
        ix.take_over(1, 11, 200);
        ix.take_over(1, 12, 300);
        ix.began_at(&1, 12, 250);
        let (slot, t) = ix.get(&1).expect("slot");
        assert_eq!(
            (slot.cookie, slot.took_over_ns, t.0),
            (12, 250, [250, 200, 0, 0])
        );
        assert_eq!(t.after(199), 2);
        ix.remove_if(&1, 11);
        assert!(ix.get(&1).is_some(), "held by another socket");
        ix.remove_if(&1, 12);
        assert!(ix.get(&1).is_none() && ix.history.is_empty());
    }
}
