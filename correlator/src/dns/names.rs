//! The per-host cache of names behind addresses, filled from the DNS
//! responses local processes received: address -> the names asked for it,
//! each with its TTL and the process that asked.
//!
//! Bounded: at most `max_addrs` addresses and [`NAMES_PER_ADDR`] names per
//! address (a CDN address serves many names; the most recently seen stay).
//! A full cache drops its expired names first, then the least recently seen
//! sixteenth; names dropped before they expired are counted
//! (`names_evicted`). A name stays usable [`NAME_GRACE_NS`] past its TTL:
//! connections start right after a lookup, and many clients keep answers
//! longer than the TTL.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::owners::shrink;

/// Names kept per address at most.
pub(crate) const NAMES_PER_ADDR: usize = 4;
/// How long past its TTL a name is still given to new conversations (ns).
pub(crate) const NAME_GRACE_NS: u64 = 300_000_000_000;
/// TTLs above a day are taken as a day.
const MAX_TTL_S: u64 = 86_400;

/// Who asked: the querying socket's process and cgroup (0 = not known yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Asker {
    pub pid: u32,
    pub cgroup_id: u64,
}

#[derive(Clone, Debug)]
struct NameEntry {
    name: Arc<str>,
    asker: Asker,
    expires_ns: u64,
    seen_ns: u64,
}

/// address -> names.
#[derive(Debug, Default)]
pub(crate) struct NameCache {
    by_addr: HashMap<IpAddr, Vec<NameEntry>>,
    max_addrs: usize,
    /// Names dropped before they expired because the cache was full.
    pub evicted: u64,
    /// Names inserted or refreshed.
    pub learned: u64,
}

impl NameCache {
    /// A cache of at most `max_addrs` addresses.
    pub fn new(max_addrs: usize) -> Self {
        Self {
            max_addrs,
            ..Self::default()
        }
    }

    /// Addresses with names now.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Remembers that `addr` is `name` for `ttl_s` seconds from `now_ns`.
    pub fn insert(&mut self, addr: IpAddr, name: &Arc<str>, ttl_s: u32, now_ns: u64, asker: Asker) {
        if self.max_addrs == 0 {
            return;
        }
        let expires_ns = now_ns.saturating_add(
            u64::from(ttl_s)
                .min(MAX_TTL_S)
                .saturating_mul(1_000_000_000),
        );
        self.learned += 1;
        if !self.by_addr.contains_key(&addr) && self.by_addr.len() >= self.max_addrs {
            self.make_room(now_ns);
        }
        let names = self.by_addr.entry(addr).or_default();
        if let Some(e) = names.iter_mut().find(|e| *e.name == **name) {
            e.expires_ns = e.expires_ns.max(expires_ns);
            e.seen_ns = now_ns;
            if asker != Asker::default() {
                e.asker = asker;
            }
            return;
        }
        if names.len() >= NAMES_PER_ADDR {
            if let Some(oldest) = (0..names.len()).min_by_key(|&i| names[i].seen_ns) {
                names.swap_remove(oldest);
            }
        }
        names.push(NameEntry {
            name: Arc::clone(name),
            asker,
            expires_ns,
            seen_ns: now_ns,
        });
    }

    /// Sets who asked for `name` at `addr` (learned after the response).
    pub fn set_asker(&mut self, addr: IpAddr, name: &str, asker: Asker) {
        if let Some(e) = self
            .by_addr
            .get_mut(&addr)
            .and_then(|v| v.iter_mut().find(|e| &*e.name == name))
        {
            e.asker = asker;
        }
    }

    /// The name of `addr` for a conversation starting around `now_ns`: of the
    /// names still valid (TTL + grace), the one whose asker `score`s highest
    /// (the conversation's own process, then its cgroup), then the latest seen.
    pub fn lookup(
        &self,
        addr: IpAddr,
        now_ns: u64,
        score: impl Fn(&Asker) -> u8,
    ) -> Option<Arc<str>> {
        self.by_addr
            .get(&addr)?
            .iter()
            .filter(|e| now_ns <= e.expires_ns.saturating_add(NAME_GRACE_NS))
            .max_by_key(|e| (score(&e.asker), e.seen_ns))
            .map(|e| Arc::clone(&e.name))
    }

    /// Drops names past their TTL and grace.
    pub fn expire(&mut self, now_ns: u64) {
        self.by_addr.retain(|_, names| {
            names.retain(|e| now_ns <= e.expires_ns.saturating_add(NAME_GRACE_NS));
            !names.is_empty()
        });
        shrink(&mut self.by_addr);
    }

    /// Expired names first; then the least recently seen sixteenth of the addresses.
    fn make_room(&mut self, now_ns: u64) {
        self.expire(now_ns);
        if self.by_addr.len() < self.max_addrs {
            return;
        }
        let mut order: Vec<(u64, IpAddr)> = self
            .by_addr
            .iter()
            .map(|(a, v)| (v.iter().map(|e| e.seen_ns).max().unwrap_or(0), *a))
            .collect();
        let batch = (self.max_addrs / 16).max(1).min(order.len());
        if batch < order.len() {
            order.select_nth_unstable(batch);
        }
        for (_, addr) in order.into_iter().take(batch) {
            if let Some(v) = self.by_addr.remove(&addr) {
                self.evicted += v.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_live_their_ttl_plus_grace() {
        let mut c = NameCache::new(10);
        let n: Arc<str> = "a.example".into();
        c.insert(ip("10.0.0.1"), &n, 30, 100 * S, Asker::default());
        assert_eq!(
            c.lookup(ip("10.0.0.1"), 100 * S, |_| 0).as_deref(),
            Some("a.example")
        );
        let last = 130 * S + NAME_GRACE_NS;
        assert!(c.lookup(ip("10.0.0.1"), last, |_| 0).is_some());
        assert!(c.lookup(ip("10.0.0.1"), last + 1, |_| 0).is_none());
        c.expire(last + 1);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_asking_process_wins_then_the_latest() {
        let mut c = NameCache::new(10);
        let a = ip("10.0.0.9");
        c.insert(
            a,
            &"one.test".into(),
            60,
            S,
            Asker {
                pid: 1,
                cgroup_id: 7,
            },
        );
        c.insert(
            a,
            &"two.test".into(),
            60,
            2 * S,
            Asker {
                pid: 2,
                cgroup_id: 8,
            },
        );
        assert_eq!(c.lookup(a, 3 * S, |_| 0).as_deref(), Some("two.test"));
        let by_pid = |x: &Asker| u8::from(x.pid == 1);
        assert_eq!(c.lookup(a, 3 * S, by_pid).as_deref(), Some("one.test"));
        // A fifth name displaces the least recently seen.
        for (i, n) in ["3.t", "4.t", "5.t"].iter().enumerate() {
            c.insert(a, &(*n).into(), 60, (3 + i as u64) * S, Asker::default());
        }
        assert!(c.lookup(a, 9 * S, by_pid).as_deref() != Some("one.test"));
        // Refreshing keeps one entry and the later expiry.
        c.insert(a, &"5.t".into(), 600, 10 * S, Asker::default());
        c.set_asker(
            a,
            "5.t",
            Asker {
                pid: 5,
                cgroup_id: 0,
            },
        );
        assert_eq!(
            c.lookup(a, 10 * S, |x| u8::from(x.pid == 5)).as_deref(),
            Some("5.t")
        );
    }

    #[test]
    fn a_full_cache_drops_expired_then_oldest_and_counts_it() {
        let mut c = NameCache::new(32);
        for i in 0..32u8 {
            c.insert(
                ip(&format!("10.1.0.{i}")),
                &"x.t".into(),
                1,
                u64::from(i),
                Asker::default(),
            );
        }
        assert_eq!(c.len(), 32);
        // Long after: every name expired, so room costs nothing.
        c.insert(
            ip("10.2.0.1"),
            &"y.t".into(),
            60,
            1000 * S,
            Asker::default(),
        );
        assert_eq!((c.len(), c.evicted), (1, 0));
        for i in 0..31u8 {
            c.insert(
                ip(&format!("10.3.0.{i}")),
                &"z.t".into(),
                600,
                1000 * S + u64::from(i),
                Asker::default(),
            );
        }
        assert_eq!(c.len(), 32);
        c.insert(
            ip("10.4.0.1"),
            &"w.t".into(),
            600,
            1001 * S,
            Asker::default(),
        );
        assert_eq!(c.len(), 31, "a sixteenth (2) made room for one");
        assert_eq!(c.evicted, 2);
        assert!(
            c.lookup(ip("10.2.0.1"), 1001 * S, |_| 0).is_none(),
            "the oldest went"
        );
    }
}
