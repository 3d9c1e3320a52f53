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

mod index;
mod local;
mod record;

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::cgroup::{parse_container, ContainerRef};
use crate::types::{normalize_ip, ProcessIdentity, Role, SocketOwnerEvent, TcpStateChange};
use index::{OwnerTable, TupleIndex};
use local::LocalAddrs;
pub(crate) use record::{EndOwners, Owner};

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

/// The owner `OwnerIndex::find` found for an end.
#[derive(Debug)]
pub(crate) struct Found {
    /// The socket's record as it is now.
    pub owner: Arc<Owner>,
    /// The role known for the socket now.
    pub role: Role,
    /// The take-overs of the tuple (or half) it was found by.
    pub takeovers: Takeovers,
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
    owners: OwnerTable,
    full: TupleIndex<FullKey>,
    half: TupleIndex<HalfKey>,
    pending: HashMap<u64, PendingState>,
    processes: HashMap<u32, ProcessExe>,
    local_addrs: LocalAddrs,
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
        self.local_addrs.contains(ip)
    }

    fn learn_local(&mut self, ip: IpAddr, ts_ns: u64) {
        if ip.is_unspecified() {
            return;
        }
        // Bounded like the owners: an address is only added by an owner event or a state change.
        self.local_addrs.learn(ip, ts_ns, self.max_sockets);
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
        if let Some(owner) = self.owners.make_mut(ev.cookie) {
            // Another event for the same socket (e.g. fd passed on): newest owner wins,
            // but never trade a more complete tuple for a less complete one.
            owner.set_identity(identity, ev.ts_ns);
            owner.touch(ev.ts_ns);
            owner.learn_role(ev.role);
            let bound = owner.remote().is_none();
            if ev.local.1 != 0 && (ev.remote.is_some() || bound) {
                self.retuple(ev.cookie, ev.local, ev.remote, ev.ts_ns);
            }
            return;
        }
        if self.owners.len() >= self.max_sockets {
            self.counters.sockets_dropped += 1;
            return;
        }
        let owner = Owner::new(
            ev.cookie, ev.proto, ev.local, ev.remote, ev.role, identity, ev.ts_ns,
        );
        // The tuple was taken over when the connection began (a server's
        // accept() may return long after its handshake).
        let began = self
            .pending
            .get(&ev.cookie)
            .and_then(|p| p.established_ns)
            .map_or(ev.ts_ns, |t| t.min(ev.ts_ns));
        self.owners.insert(owner);
        self.index(ev.cookie, began);
        if let Some(p) = self.pending.remove(&ev.cookie) {
            self.apply_state(p.change, p.role);
            if let Some(o) = self.owners.get(ev.cookie) {
                if let Some(t) = p.closed_ns {
                    o.close(t);
                }
                if let Some(t) = p.established_ns {
                    o.establish(t);
                }
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
        if self.owners.contains(ev.cookie) {
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
        let Some(owner) = self.owners.get(ev.cookie) else {
            return;
        };
        owner.touch(ev.ts_ns);
        owner.learn_role(role);
        if let Some(t) = closed_at(&ev) {
            owner.close(t);
        }
        if let (false, Some(t)) = (owner.established(), established_at(&ev)) {
            owner.establish(t);
            // The tuple was taken over when the connection began, not when the
            // owner event (a server's accept()) came.
            if let Some(key) = owner.full_key() {
                if let Some(t) = self.full.began_at(&self.owners, &key, ev.cookie, t) {
                    if let Some(o) = self.owners.make_mut(ev.cookie) {
                        o.set_took_over(t);
                    }
                }
            }
        }
        // A listener's change has no remote; anything without a local port is not bound yet.
        if ev.local.1 == 0 {
            return;
        }
        let remote = (ev.remote.1 != 0 || !ev.remote.0.is_unspecified()).then_some(ev.remote);
        let Some(owner) = self.owners.get(ev.cookie) else {
            return;
        };
        if (owner.local(), owner.remote()) != (ev.local, remote) && remote.is_some() {
            self.retuple(ev.cookie, ev.local, remote, ev.ts_ns);
        }
    }

    /// Moves an owner to a new tuple, keeping the indexes in step.
    fn retuple(&mut self, cookie: u64, local: Addr, remote: Option<Addr>, ts_ns: u64) {
        let Some(owner) = self.owners.get(cookie) else {
            return;
        };
        if (owner.local(), owner.remote()) == (local, remote) {
            return;
        }
        // Out of the indexes before the record's tuple changes (they hash by it).
        match owner.full_key() {
            Some(key) => self.full.remove_if(&self.owners, &key, cookie),
            None => self.half.remove_if(&self.owners, &owner.half_key(), cookie),
        }
        if let Some(owner) = self.owners.make_mut(cookie) {
            owner.set_tuple(local, remote);
        }
        self.index(cookie, ts_ns);
    }

    /// Indexes the owner of `cookie` by its tuple (or local half).
    fn index(&mut self, cookie: u64, ts_ns: u64) {
        let Some(o) = self.owners.get(cookie) else {
            return;
        };
        if o.local().1 == 0 {
            // connect() before bind: wait for the state change to tell the port.
            return;
        }
        let took_over = match o.full_key() {
            Some(key) => self.full.take_over(&self.owners, key, cookie, ts_ns),
            None => self
                .half
                .take_over(&self.owners, o.half_key(), cookie, ts_ns),
        };
        if let Some(t) = took_over.filter(|&t| t != o.took_over_ns()) {
            if let Some(o) = self.owners.make_mut(cookie) {
                o.set_took_over(t);
            }
        }
    }

    /// The owner of the local end `local` of a conversation with `remote`:
    /// exact tuple first, then the local half (unconnected UDP, listeners),
    /// wildcard addresses included.
    pub fn find(&self, proto: u8, local: Addr, remote: Addr) -> Option<Found> {
        let (addr, port) = local;
        let any_same = unspecified_like(addr);
        let any_v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let o = &self.owners;
        let (owner, takeovers) = self
            .full
            .get(o, &(proto, local, remote))
            .or_else(|| self.full.get(o, &(proto, (any_same, port), remote)))
            .or_else(|| self.half.get(o, &(proto, local)))
            .or_else(|| self.half.get(o, &(proto, (any_same, port))))
            // A dual-stack `::` socket also receives IPv4.
            .or_else(|| self.half.get(o, &(proto, (any_v6, port))))?;
        Some(Found {
            role: owner.role(),
            owner: Arc::clone(owner),
            takeovers,
        })
    }

    /// When the socket's connection began while flowlens watched: a TCP
    /// connection's establishment, a UDP socket's first event.
    pub fn started_ns(&self, cookie: u64) -> Option<u64> {
        self.owners.get(cookie)?.started_ns()
    }

    /// When the TCP socket closed, if it did.
    pub fn closed_ns(&self, cookie: u64) -> Option<u64> {
        self.owners.get(cookie)?.closed_ns()
    }

    /// The current role of a socket, if still tracked.
    pub fn role_of(&self, cookie: u64) -> Option<Role> {
        self.owners.get(cookie).map(|o| o.role())
    }

    /// Marks a socket (and its address) as referenced by a live conversation.
    pub fn touch(&mut self, cookie: u64, now_ns: u64) {
        if let Some(o) = self.owners.get(cookie) {
            o.touch(now_ns);
            let ip = o.local().0;
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
        let evicted = self
            .owners
            .retain(|o| !o.expired(now_ns, grace_ns, closed_grace_ns));
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
        self.local_addrs.expire(now_ns, grace_ns);
        // Identities no owner and no conversation holds any more.
        self.identities.retain(|i| Arc::strong_count(&i.0) > 1);
        self.owners.shrink();
        self.full.shrink(&self.owners);
        self.half.shrink(&self.owners);
        shrink(&mut self.pending);
        shrink(&mut self.processes);
        shrink_set(&mut self.identities);
    }
}

/// Gives memory back after a burst: a map holding less than a quarter of
/// its capacity (and more than a small floor) shrinks to twice its length.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if let Some(to) = shrink_target(map.len(), map.capacity()) {
        map.shrink_to(to);
    }
}

/// The capacity a table of `len` entries in `capacity` shrinks to, if it
/// should (`shrink`'s rule, for every table of the correlator).
pub(crate) fn shrink_target(len: usize, capacity: usize) -> Option<usize> {
    const FLOOR: usize = 1024;
    (capacity > FLOOR && capacity / 4 > len).then(|| (2 * len).max(FLOOR))
}

/// `shrink` for a set.
fn shrink_set<K: std::hash::Hash + Eq>(set: &mut HashSet<K>) {
    if let Some(to) = shrink_target(set.len(), set.capacity()) {
        set.shrink_to(to);
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
mod tests;
