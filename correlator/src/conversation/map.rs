//! The conversation map: boxed conversations found by the key they hold.
//!
//! A `HashMap<ConvKey, Box<Conversation>>` bucket holds the 42-byte key and a
//! pointer (56 B), and hashbrown keeps up to twice the entries' buckets (its
//! power-of-two capacity, ≤ 7/8 full): ~73 B per conversation at 100k, ~119 B
//! just past a power of two. Here a bucket is the pointer alone (8 B); the
//! key lives once, in the conversation (packed: 38 B).

use std::hash::BuildHasher;
use std::hash::RandomState;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use super::state::{ConvKey, Conversation, PackedKey};
use crate::owners::shrink_target;

/// Conversations by key; the key is the conversation's own.
#[derive(Debug, Default)]
pub(crate) struct ConvMap {
    table: HashTable<Box<Conversation>>,
    hasher: RandomState,
}

impl ConvMap {
    /// The key as stored, and its hash.
    fn hash(&self, key: &ConvKey) -> (PackedKey, u64) {
        let k = PackedKey::from(key);
        (k, self.hasher.hash_one(k))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn contains_key(&self, key: &ConvKey) -> bool {
        let (k, hash) = self.hash(key);
        self.table.find(hash, |c| *c.packed_key() == k).is_some()
    }

    pub fn get_mut(&mut self, key: &ConvKey) -> Option<&mut Conversation> {
        let (k, hash) = self.hash(key);
        self.table
            .find_mut(hash, |c| *c.packed_key() == k)
            .map(|c| &mut **c)
    }

    pub fn remove(&mut self, key: &ConvKey) -> Option<Box<Conversation>> {
        let (k, hash) = self.hash(key);
        let found = self.table.find_entry(hash, |c| *c.packed_key() == k).ok()?;
        Some(found.remove().0)
    }

    /// The conversation of `key`, made by `make` (whose key must be `key`)
    /// when there is none.
    pub fn get_or_insert_with(
        &mut self,
        key: &ConvKey,
        make: impl FnOnce() -> Conversation,
    ) -> &mut Conversation {
        let (k, hash) = self.hash(key);
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hash,
            |c| *c.packed_key() == k,
            |c| hasher.hash_one(c.packed_key()),
        );
        match entry {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let conv = Box::new(make());
                debug_assert_eq!(*conv.packed_key(), k);
                v.insert(conv).into_mut()
            }
        }
    }

    /// Adds a conversation whose key is not in the map.
    pub fn insert_new(&mut self, conv: Box<Conversation>) {
        debug_assert!(!self.contains_key(&conv.key()));
        let hasher = &self.hasher;
        let hash = hasher.hash_one(conv.packed_key());
        self.table
            .insert_unique(hash, conv, |c| hasher.hash_one(c.packed_key()));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conversation> {
        self.table.iter().map(|c| &**c)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&mut Conversation) -> bool) {
        self.table.retain(|c| keep(c));
    }

    /// Gives memory back once under a quarter full (like `owners::shrink`).
    pub fn shrink(&mut self) {
        if let Some(to) = shrink_target(self.table.len(), self.table.capacity()) {
            let hasher = &self.hasher;
            self.table
                .shrink_to(to, |c| hasher.hash_one(c.packed_key()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FlowObservation, FlowTuple, Hook};
    use std::net::{IpAddr, Ipv4Addr};

    fn conv(port: u16) -> Conversation {
        let ip = |last| IpAddr::V4(Ipv4Addr::new(10, 0, 0, last));
        let tuple = FlowTuple::new(6, (ip(1), port), (ip(2), 80));
        let obs = FlowObservation {
            tuple,
            ifindex: 1,
            hook: Hook::Ingress,
            packets: 1,
            bytes: 60,
            first_seen_ns: 1,
            last_seen_ns: 1,
            tcp_flags: 0,
            initiator: false,
            responder: false,
        };
        Conversation::new(ConvKey::of(&tuple).0, &obs, None)
    }

    #[test]
    fn finds_inserts_removes_and_shrinks_by_the_conversations_key() {
        let mut m = ConvMap::default();
        for port in 1000..5000 {
            let c = conv(port);
            let key = c.key();
            assert!(!m.contains_key(&key));
            let got = m.get_or_insert_with(&key, || c);
            got.tcp_flags = 2;
        }
        assert_eq!(m.len(), 4000);
        let k = conv(1234).key();
        assert_eq!(m.get_mut(&k).map(|c| c.tcp_flags), Some(2));
        // Present: `make` is not called.
        m.get_or_insert_with(&k, || unreachable!()).tcp_flags = 3;
        assert_eq!(m.remove(&k).map(|c| (c.key(), c.tcp_flags)), Some((k, 3)));
        assert!(m.remove(&k).is_none() && m.get_mut(&k).is_none());
        m.insert_new(Box::new(conv(1234)));
        assert!(m.contains_key(&k));
        m.retain(|c| c.key().ends[0].1 < 1100);
        assert_eq!(m.len(), 100);
        let before = m.table.capacity();
        m.shrink();
        assert!(m.table.capacity() < before);
        assert!((1000..1100).all(|p| m.contains_key(&conv(p).key())));
        assert_eq!(m.iter().count(), 100);
    }
}
