//! Local addresses: every address a socket of this host was seen with, and
//! when a socket last used it. IPv4 addresses are kept as 4 bytes (a host
//! with many sockets has few addresses, but a node with one per pod has
//! many).

use std::collections::HashMap;
use std::net::IpAddr;

use super::shrink;

/// Addresses -> when a socket last used them (CLOCK_MONOTONIC ns).
#[derive(Debug, Default)]
pub(super) struct LocalAddrs {
    v4: HashMap<u32, u64>,
    other: HashMap<IpAddr, u64>,
}

impl LocalAddrs {
    pub fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.contains_key(&u32::from(a)),
            ip => self.other.contains_key(&ip),
        }
    }

    /// `ip` used at `ts_ns`; a new address only while fewer than `max` are held.
    pub fn learn(&mut self, ip: IpAddr, ts_ns: u64, max: usize) {
        let full = self.len() >= max;
        let t = match ip {
            IpAddr::V4(a) => match self.v4.get_mut(&u32::from(a)) {
                Some(t) => t,
                None if full => return,
                None => self.v4.entry(u32::from(a)).or_insert(ts_ns),
            },
            ip => match self.other.get_mut(&ip) {
                Some(t) => t,
                None if full => return,
                None => self.other.entry(ip).or_insert(ts_ns),
            },
        };
        *t = (*t).max(ts_ns);
    }

    /// Forgets addresses unused for longer than `grace_ns`.
    pub fn expire(&mut self, now_ns: u64, grace_ns: u64) {
        self.v4.retain(|_, t| now_ns.saturating_sub(*t) <= grace_ns);
        self.other
            .retain(|_, t| now_ns.saturating_sub(*t) <= grace_ns);
        shrink(&mut self.v4);
        shrink(&mut self.other);
    }
}
