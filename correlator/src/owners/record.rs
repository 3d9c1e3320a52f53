//! The owner record of one socket, shared (reference-counted) by the owner
//! table and every conversation attributed to the socket.
//!
//! What a conversation was given stays as it was: the fields a conversation
//! reads (cookie, identity, event time, take-over time, tuple) never change
//! in a shared record; a change makes the table a new record
//! (`Arc::make_mut`) and conversations keep the old one. The fields only the
//! table reads (role, references, close, establishment) change in place
//! through atomics: the table is used by one thread at a time (it is `Send`,
//! so the record must be `Sync`); `Relaxed` is enough.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use super::{Addr, OwnerIdentity};
use crate::types::Role;

/// The addresses of a socket's tuple: IPv4 inline (most sockets), any other
/// combination boxed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Addrs {
    /// Local IPv4, remote IPv4 (or none: 0.0.0.0).
    V4([u8; 4], [u8; 4]),
    /// Local and remote (the remote unused without one).
    Other(Box<[IpAddr; 2]>),
}

impl Addrs {
    fn new(local: IpAddr, remote: Option<IpAddr>) -> Self {
        match (local, remote) {
            (IpAddr::V4(l), None) => Self::V4(l.octets(), [0; 4]),
            (IpAddr::V4(l), Some(IpAddr::V4(r))) => Self::V4(l.octets(), r.octets()),
            (l, r) => Self::Other(Box::new([
                l,
                r.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            ])),
        }
    }

    fn get(&self) -> [IpAddr; 2] {
        match self {
            Self::V4(l, r) => [IpAddr::from(*l), IpAddr::from(*r)],
            Self::Other(b) => **b,
        }
    }
}

/// Flags of the table-only state.
const CLOSED: u8 = 1;
const ESTABLISHED: u8 = 2;

/// One socket's owner as the table knows it now (or knew it when a
/// conversation was attributed to it).
#[derive(Debug)]
pub(crate) struct Owner {
    cookie: u64,
    identity: Arc<OwnerIdentity>,
    /// When the owner event behind `identity` was seen.
    since_ns: u64,
    /// When this socket took its tuple (or half) over from another socket
    /// (0: it was the first).
    took_over_ns: u64,
    /// TCP: when its connection was established (flag `ESTABLISHED`), i.e. a
    /// connection that started while flowlens ran. Other protocols: its first
    /// owner event.
    started_ns: AtomicU64,
    /// When it was last referenced; once the TCP socket reached CLOSE (flag
    /// `CLOSED`), the close time (expiry then only looks at that).
    ref_ns: AtomicU64,
    addrs: Addrs,
    /// Local, remote.
    ports: [u16; 2],
    proto: u8,
    /// Connected (found by its full tuple), not only bound.
    has_remote: bool,
    /// The role last known for the socket (`Role` as u8).
    role: AtomicU8,
    flags: AtomicU8,
}

impl Clone for Owner {
    fn clone(&self) -> Self {
        Self {
            cookie: self.cookie,
            identity: Arc::clone(&self.identity),
            since_ns: self.since_ns,
            took_over_ns: self.took_over_ns,
            started_ns: AtomicU64::new(self.started_ns.load(Relaxed)),
            ref_ns: AtomicU64::new(self.ref_ns.load(Relaxed)),
            addrs: self.addrs.clone(),
            ports: self.ports,
            proto: self.proto,
            has_remote: self.has_remote,
            role: AtomicU8::new(self.role.load(Relaxed)),
            flags: AtomicU8::new(self.flags.load(Relaxed)),
        }
    }
}

fn role_to_u8(role: Role) -> u8 {
    match role {
        Role::Unknown => 0,
        Role::Client => 1,
        Role::Server => 2,
    }
}

fn role_from_u8(v: u8) -> Role {
    match v {
        1 => Role::Client,
        2 => Role::Server,
        _ => Role::Unknown,
    }
}

fn is_tcp(proto: u8) -> bool {
    proto == crate::types::proto::TCP
}

impl Owner {
    /// A new socket's owner, first seen at `ts_ns`.
    pub(super) fn new(
        cookie: u64,
        proto: u8,
        local: Addr,
        remote: Option<Addr>,
        role: Role,
        identity: Arc<OwnerIdentity>,
        ts_ns: u64,
    ) -> Self {
        Self {
            cookie,
            identity,
            since_ns: ts_ns,
            took_over_ns: 0,
            started_ns: AtomicU64::new(if is_tcp(proto) { 0 } else { ts_ns }),
            ref_ns: AtomicU64::new(ts_ns),
            addrs: Addrs::new(local.0, remote.map(|r| r.0)),
            ports: [local.1, remote.map_or(0, |r| r.1)],
            proto,
            has_remote: remote.is_some(),
            role: AtomicU8::new(role_to_u8(role)),
            flags: AtomicU8::new(0),
        }
    }

    /// The socket.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Who.
    pub fn identity(&self) -> &Arc<OwnerIdentity> {
        &self.identity
    }

    /// When the socket's owner event was seen (CLOCK_MONOTONIC ns).
    pub fn since_ns(&self) -> u64 {
        self.since_ns
    }

    /// When this socket took the tuple (or half) over from another socket
    /// (CLOCK_MONOTONIC ns; 0: it was the first).
    pub fn took_over_ns(&self) -> u64 {
        self.took_over_ns
    }

    /// Found by its full tuple (a connected socket), not by its local half.
    pub fn exact(&self) -> bool {
        self.has_remote
    }

    pub(super) fn local(&self) -> Addr {
        (self.addrs.get()[0], self.ports[0])
    }

    pub(super) fn remote(&self) -> Option<Addr> {
        self.has_remote
            .then(|| (self.addrs.get()[1], self.ports[1]))
    }

    /// Its full-tuple index key, when connected.
    pub(super) fn full_key(&self) -> Option<super::FullKey> {
        let [l, r] = self.addrs.get();
        self.has_remote
            .then_some((self.proto, (l, self.ports[0]), (r, self.ports[1])))
    }

    /// Its local-half index key.
    pub(super) fn half_key(&self) -> super::HalfKey {
        (self.proto, self.local())
    }

    pub(super) fn set_identity(&mut self, identity: Arc<OwnerIdentity>, since_ns: u64) {
        self.identity = identity;
        self.since_ns = since_ns;
    }

    pub(super) fn set_took_over(&mut self, ts_ns: u64) {
        self.took_over_ns = ts_ns;
    }

    pub(super) fn set_tuple(&mut self, local: Addr, remote: Option<Addr>) {
        self.addrs = Addrs::new(local.0, remote.map(|r| r.0));
        self.ports = [local.1, remote.map_or(0, |r| r.1)];
        self.has_remote = remote.is_some();
    }

    /// The role last known (table side; a conversation keeps its own copy).
    pub(super) fn role(&self) -> Role {
        role_from_u8(self.role.load(Relaxed))
    }

    /// Takes a known role; `Unknown` changes nothing.
    pub(super) fn learn_role(&self, role: Role) {
        if role != Role::Unknown {
            self.role.store(role_to_u8(role), Relaxed);
        }
    }

    /// Referenced at `ts_ns` (no effect once closed: expiry follows the close).
    pub(super) fn touch(&self, ts_ns: u64) {
        if self.flags.load(Relaxed) & CLOSED == 0 {
            self.ref_ns.fetch_max(ts_ns, Relaxed);
        }
    }

    /// The TCP socket reached CLOSE at `ts_ns` (the first close counts).
    pub(super) fn close(&self, ts_ns: u64) {
        if self.flags.load(Relaxed) & CLOSED == 0 {
            self.flags.fetch_or(CLOSED, Relaxed);
            self.ref_ns.store(ts_ns, Relaxed);
        }
    }

    /// When the TCP socket closed, if it did.
    pub(super) fn closed_ns(&self) -> Option<u64> {
        (self.flags.load(Relaxed) & CLOSED != 0).then(|| self.ref_ns.load(Relaxed))
    }

    /// Whether its connection's establishment is known.
    pub(super) fn established(&self) -> bool {
        self.flags.load(Relaxed) & ESTABLISHED != 0
    }

    /// Its connection was established at `ts_ns` (the first one counts).
    pub(super) fn establish(&self, ts_ns: u64) {
        if self.established() {
            return;
        }
        self.flags.fetch_or(ESTABLISHED, Relaxed);
        if is_tcp(self.proto) {
            self.started_ns.store(ts_ns, Relaxed);
        }
    }

    /// When the socket's connection began while flowlens watched: a TCP
    /// connection's establishment, another socket's first event.
    pub(super) fn started_ns(&self) -> Option<u64> {
        (!is_tcp(self.proto) || self.established()).then(|| self.started_ns.load(Relaxed))
    }

    /// Unreferenced for longer than `grace_ns`, or closed longer than
    /// `closed_grace_ns` (at most `grace_ns`) ago.
    pub(super) fn expired(&self, now_ns: u64, grace_ns: u64, closed_grace_ns: u64) -> bool {
        let t = self.ref_ns.load(Relaxed);
        if self.flags.load(Relaxed) & CLOSED != 0 {
            now_ns.saturating_sub(t) > closed_grace_ns.min(grace_ns)
        } else {
            now_ns.saturating_sub(t) > grace_ns
        }
    }
}

/// What a conversation keeps of the owners of its two ends: each owner's
/// record as it was when the end was attributed (shared with the table) and
/// the role last known for it (refreshed while the socket is tracked).
#[derive(Debug, Default)]
pub(crate) struct EndOwners {
    owners: [Option<Arc<Owner>>; 2],
    roles: [Role; 2],
}

impl EndOwners {
    /// The owner of end `side`, if attributed.
    pub fn get(&self, side: usize) -> Option<&Owner> {
        self.owners[side].as_deref()
    }

    /// The role last known for end `side`'s socket, if attributed.
    pub fn role(&self, side: usize) -> Option<Role> {
        self.owners[side].as_ref().map(|_| self.roles[side])
    }

    /// Attributes end `side`.
    pub fn set(&mut self, side: usize, owner: Arc<Owner>, role: Role) {
        self.owners[side] = Some(owner);
        self.roles[side] = role;
    }

    /// The socket of end `side` has now `role`.
    pub fn set_role(&mut self, side: usize, role: Role) {
        self.roles[side] = role;
    }
}
