//! The owner table (records by cookie) and its tuple indexes.
//!
//! Both are intrusive: a bucket holds only a pointer (the table) or a cookie
//! (an index), hashed by what the record already holds (its cookie, its
//! tuple), so an owner costs its record and ~20 bytes of buckets instead of a
//! copy of its keys in every map.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::record::Owner;
use super::{shrink, shrink_target, Takeovers, TAKEOVERS};

/// Owner records by cookie. Hashed with foldhash, not SipHash: the kernel
/// assigns cookies from a counter, nobody can choose them to collide (the
/// tuple indexes, whose keys a remote peer picks, keep SipHash).
#[derive(Debug, Default)]
pub(super) struct OwnerTable {
    owners: HashTable<Arc<Owner>>,
    hasher: DefaultHashBuilder,
}

impl OwnerTable {
    fn hash(&self, cookie: u64) -> u64 {
        self.hasher.hash_one(cookie)
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn get(&self, cookie: u64) -> Option<&Arc<Owner>> {
        self.owners
            .find(self.hash(cookie), |o| o.cookie() == cookie)
    }

    pub fn contains(&self, cookie: u64) -> bool {
        self.get(cookie).is_some()
    }

    /// The record of `cookie` to change: the table's own (a copy when
    /// conversations hold it, which keep theirs as it was).
    pub fn make_mut(&mut self, cookie: u64) -> Option<&mut Owner> {
        let hash = self.hash(cookie);
        let o = self.owners.find_mut(hash, |o| o.cookie() == cookie)?;
        Some(Arc::make_mut(o))
    }

    /// Adds the record of a cookie not in the table.
    pub fn insert(&mut self, owner: Owner) {
        let hash = self.hash(owner.cookie());
        let hasher = &self.hasher;
        self.owners
            .insert_unique(hash, Arc::new(owner), |o| hasher.hash_one(o.cookie()));
    }

    /// Keeps the owners `keep` says to; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&Owner) -> bool) -> usize {
        let before = self.owners.len();
        self.owners.retain(|o| keep(o));
        before - self.owners.len()
    }

    pub fn shrink(&mut self) {
        if let Some(to) = shrink_target(self.owners.len(), self.owners.capacity()) {
            let hasher = &self.hasher;
            self.owners.shrink_to(to, |o| hasher.hash_one(o.cookie()));
        }
    }
}

/// An index key: the full tuple of a connected socket, or the local half.
pub(super) trait TupleKey: Hash + Eq + Copy {
    /// The key `owner` is indexed under in this index, if any.
    fn of(owner: &Owner) -> Option<Self>;
}

impl TupleKey for super::FullKey {
    fn of(owner: &Owner) -> Option<Self> {
        owner.full_key()
    }
}

impl TupleKey for super::HalfKey {
    fn of(owner: &Owner) -> Option<Self> {
        Some(owner.half_key())
    }
}

/// Index keys -> sockets: the cookie of the socket holding each key, hashed by
/// the key its record holds. A socket is in an index under its current key
/// only (it leaves before its tuple changes), at most once, and a key has one
/// socket (another socket taking it over replaces it). The take-over history
/// lives beside, only for keys another socket took over (a reused port): most
/// never are.
#[derive(Debug)]
pub(super) struct TupleIndex<K> {
    cookies: HashTable<u64>,
    hasher: RandomState,
    /// The latest take-overs of a key, newest first (0: none).
    history: HashMap<K, [u64; TAKEOVERS]>,
}

impl<K> Default for TupleIndex<K> {
    fn default() -> Self {
        Self {
            cookies: HashTable::new(),
            hasher: RandomState::new(),
            history: HashMap::new(),
        }
    }
}

/// Whether `cookie`'s record holds `key`.
fn holds<K: TupleKey>(owners: &OwnerTable, cookie: u64, key: &K) -> bool {
    owners
        .get(cookie)
        .is_some_and(|o| K::of(o).as_ref() == Some(key))
}

impl<K: TupleKey> TupleIndex<K> {
    /// The record of the socket holding `key`, and the key's take-overs.
    pub fn get<'o>(&self, owners: &'o OwnerTable, key: &K) -> Option<(&'o Arc<Owner>, Takeovers)> {
        let mut holder = None;
        self.cookies.find(self.hasher.hash_one(key), |&c| {
            holder = owners.get(c).filter(|o| K::of(o).as_ref() == Some(key));
            holder.is_some()
        })?;
        let history = self.history.get(key).copied().unwrap_or([0; TAKEOVERS]);
        Some((holder?, Takeovers(history)))
    }

    /// Points `key` at `cookie` (whose record holds `key`, in `owners`),
    /// remembering when it was taken from another socket. Returns the
    /// socket's new take-over time when it changed (0: the key was free).
    pub fn take_over(
        &mut self,
        owners: &OwnerTable,
        key: K,
        cookie: u64,
        ts_ns: u64,
    ) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        match self.cookies.find_mut(hash, |&c| holds(owners, c, &key)) {
            None => {
                let hasher = &self.hasher;
                self.cookies.insert_unique(hash, cookie, |&c| {
                    owners
                        .get(c)
                        .and_then(|o| K::of(o))
                        .map_or(0, |k| hasher.hash_one(k))
                });
                Some(0)
            }
            Some(c) if *c != cookie => {
                *c = cookie;
                let h = self.history.entry(key).or_insert([0; TAKEOVERS]);
                h.rotate_right(1);
                h[0] = ts_ns;
                Some(ts_ns)
            }
            Some(_) => None,
        }
    }

    /// The connection of `cookie`, which holds `key`, began at `t_ns`: earlier
    /// than its take-over was recorded (a server's accept() came later).
    /// Returns the socket's new take-over time when it changed.
    pub fn began_at(
        &mut self,
        owners: &OwnerTable,
        key: &K,
        cookie: u64,
        t_ns: u64,
    ) -> Option<u64> {
        let (holder, _) = self.get(owners, key)?;
        let took_over = holder.took_over_ns();
        if holder.cookie() != cookie || took_over <= t_ns {
            return None;
        }
        if let Some(h) = self.history.get_mut(key) {
            if h[0] == took_over {
                h[0] = t_ns;
            }
        }
        Some(t_ns)
    }

    /// Removes `key` if `cookie` holds it (call before the record's tuple changes).
    pub fn remove_if(&mut self, owners: &OwnerTable, key: &K, cookie: u64) {
        let hash = self.hasher.hash_one(key);
        if let Ok(e) = self
            .cookies
            .find_entry(hash, |&c| c == cookie && holds(owners, c, key))
        {
            e.remove();
            self.history.remove(key);
        }
    }

    /// Keeps the keys of sockets still tracked.
    pub fn retain_owned(&mut self, owners: &OwnerTable) {
        self.cookies.retain(|c| owners.contains(*c));
        let (cookies, hasher) = (&self.cookies, &self.hasher);
        self.history.retain(|k, _| {
            cookies
                .find(hasher.hash_one(k), |&c| holds(owners, c, k))
                .is_some()
        });
    }

    pub fn shrink(&mut self, owners: &OwnerTable) {
        if let Some(to) = shrink_target(self.cookies.len(), self.cookies.capacity()) {
            let hasher = &self.hasher;
            self.cookies.shrink_to(to, |&c| {
                owners
                    .get(c)
                    .and_then(|o| K::of(o))
                    .map_or(0, |k| hasher.hash_one(k))
            });
        }
        shrink(&mut self.history);
    }

    /// Keys held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// Keys with a take-over history.
    #[cfg(test)]
    pub fn history_len(&self) -> usize {
        self.history.len()
    }
}
