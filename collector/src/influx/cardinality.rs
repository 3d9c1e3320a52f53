//! Per-interval cardinality caps: each capped tag key keeps at most `cap` distinct values per interval —
//! the heaviest by bytes, ties to the first seen — and the rest fold into [`OTHER`], counted per key.
//!
//! Two passes per interval: [`TagLimiter::observe`] every value with its weight, [`TagLimiter::decide`], then
//! [`TagLimiter::admit`] while encoding. Keys that stay under their cap never pay for the second lookup.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracing::{debug, warn};

/// The value that replaces tag values past their key's cap.
pub const OTHER: &str = "other";

/// Cardinality counters, per tag key (all capped keys are listed, zeros included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CardinalityStats {
    /// Distinct values folded into `other`, summed over all intervals so far.
    pub folded: BTreeMap<String, u64>,
    /// Distinct values seen in the last interval (before folding).
    pub distinct_last_interval: BTreeMap<String, u64>,
}

/// One value's standing in the current interval.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Bytes of the records carrying the value.
    weight: u64,
    /// Order of first appearance in the interval (tie-break, unique per key and interval).
    first: u32,
    /// Interval in which `weight`/`first` were set.
    epoch: u64,
    /// Keeps its own name this interval.
    admitted: bool,
}

/// The state of one tag key.
#[derive(Debug)]
struct KeyLimit {
    name: &'static str,
    cap: usize,
    /// Values of this and the previous interval (kept so recurring values don't allocate).
    slots: HashMap<Box<str>, Slot>,
    distinct: u32,
    over: bool,
    folded: u64,
    warned: bool,
}

/// Caps the distinct values of a set of tag keys per interval.
#[derive(Debug)]
pub struct TagLimiter {
    keys: Vec<KeyLimit>,
    epoch: u64,
    ranks: Vec<(u64, u32)>,
}

impl TagLimiter {
    /// A limiter over `(key, cap)` pairs; keys are addressed by their position.
    pub fn new(keys: impl IntoIterator<Item = (&'static str, usize)>) -> Self {
        let keys = keys
            .into_iter()
            .map(|(name, cap)| KeyLimit {
                name,
                cap,
                slots: HashMap::new(),
                distinct: 0,
                over: false,
                folded: 0,
                warned: false,
            })
            .collect();
        Self {
            keys,
            epoch: 0,
            ranks: Vec::new(),
        }
    }

    /// Position of a key.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.name == name)
    }

    /// Starts an interval: forgets the previous interval's decisions.
    pub fn begin_interval(&mut self) {
        let prev = self.epoch;
        self.epoch += 1;
        for k in &mut self.keys {
            k.slots.retain(|_, s| s.epoch == prev);
            if k.slots.capacity() > 4 * k.slots.len().max(1024) {
                k.slots.shrink_to_fit();
            }
            k.distinct = 0;
            k.over = false;
        }
    }

    /// Counts one occurrence of `value` for key `key` with `weight` bytes.
    pub fn observe(&mut self, key: usize, value: &str, weight: u64) {
        let epoch = self.epoch;
        let Some(k) = self.keys.get_mut(key) else {
            return;
        };
        let fresh = Slot {
            weight,
            first: k.distinct,
            epoch,
            admitted: true,
        };
        match k.slots.get_mut(value) {
            Some(s) if s.epoch == epoch => s.weight = s.weight.saturating_add(weight),
            Some(s) => {
                *s = fresh;
                k.distinct += 1;
            }
            None => {
                k.slots.insert(value.into(), fresh);
                k.distinct += 1;
            }
        }
    }

    /// Decides which values keep their names this interval and counts the folded ones.
    pub fn decide(&mut self) {
        let epoch = self.epoch;
        for k in &mut self.keys {
            let distinct = k.distinct as usize;
            k.over = distinct > k.cap;
            if !k.over {
                continue;
            }
            let excess = (distinct - k.cap) as u64;
            k.folded += excess;
            if k.warned {
                debug!(
                    tag = k.name,
                    cap = k.cap,
                    distinct,
                    excess,
                    "Tag values folded into \"other\"."
                );
            } else {
                k.warned = true;
                warn!(
                    tag = k.name,
                    cap = k.cap,
                    distinct,
                    excess,
                    "Tag over its cardinality cap; its lightest values are folded into \"other\" (see cardinality stats)."
                );
            }
            // The cap-th best (heaviest, then earliest) value is the admission threshold.
            let threshold = if k.cap == 0 {
                None
            } else {
                self.ranks.clear();
                let current = k.slots.values().filter(|s| s.epoch == epoch);
                self.ranks.extend(current.map(|s| (s.weight, s.first)));
                let better = |a: &(u64, u32), b: &(u64, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
                let (_, nth, _) = self.ranks.select_nth_unstable_by(k.cap - 1, better);
                Some(*nth)
            };
            for s in k.slots.values_mut().filter(|s| s.epoch == epoch) {
                s.admitted =
                    threshold.is_some_and(|(w, f)| s.weight > w || (s.weight == w && s.first <= f));
            }
        }
    }

    /// Whether `value` keeps its name this interval (else it is written as [`OTHER`]).
    pub fn admit(&self, key: usize, value: &str) -> bool {
        match self.keys.get(key) {
            Some(k) if k.over => k
                .slots
                .get(value)
                .is_some_and(|s| s.epoch == self.epoch && s.admitted),
            _ => true,
        }
    }

    /// Cumulative folds and the last interval's distinct values, per key.
    pub fn stats(&self) -> CardinalityStats {
        let mut stats = CardinalityStats::default();
        for k in &self.keys {
            stats.folded.insert(k.name.to_owned(), k.folded);
            stats
                .distinct_last_interval
                .insert(k.name.to_owned(), u64::from(k.distinct));
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(l: &mut TagLimiter, values: &[(&str, u64)]) {
        l.begin_interval();
        for (v, w) in values {
            l.observe(0, v, *w);
        }
        l.decide();
    }

    #[test]
    fn heaviest_values_keep_their_names() {
        let mut l = TagLimiter::new([("peer", 2)]);
        run(
            &mut l,
            &[("a", 10), ("b", 500), ("c", 10), ("d", 300), ("a", 1)],
        );
        let kept: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .filter(|v| l.admit(0, v))
            .collect();
        assert_eq!(kept, ["b", "d"]);
        assert!(!l.admit(0, "never-seen"));
        let s = l.stats();
        assert_eq!((s.folded["peer"], s.distinct_last_interval["peer"]), (2, 4));
    }

    #[test]
    fn ties_go_to_the_first_seen() {
        let mut l = TagLimiter::new([("comm", 2)]);
        run(&mut l, &[("x", 5), ("y", 5), ("z", 5)]);
        assert!(l.admit(0, "x") && l.admit(0, "y") && !l.admit(0, "z"));
    }

    #[test]
    fn each_interval_starts_over_and_folds_accumulate() {
        let mut l = TagLimiter::new([("comm", 1), ("user", 0)]);
        run(&mut l, &[("x", 1), ("y", 2)]);
        assert!(!l.admit(0, "x") && l.admit(0, "y"));
        run(&mut l, &[("x", 3), ("y", 2)]);
        assert!(l.admit(0, "x") && !l.admit(0, "y"));
        run(&mut l, &[("x", 3)]);
        assert!(
            l.admit(0, "x") && l.admit(0, "y"),
            "under the cap everything passes"
        );
        let s = l.stats();
        assert_eq!((s.folded["comm"], s.distinct_last_interval["comm"]), (2, 1));
        assert_eq!(s.folded["user"], 0);
        l.begin_interval();
        l.observe(1, "root", 1);
        l.decide();
        assert!(!l.admit(1, "root"), "cap 0 folds everything");
        assert_eq!(l.stats().folded["user"], 1);
    }

    #[test]
    fn stale_values_are_forgotten() {
        let mut l = TagLimiter::new([("peer", 10)]);
        run(&mut l, &[("a", 1)]);
        run(&mut l, &[("b", 1)]);
        run(&mut l, &[("c", 1)]);
        assert_eq!(
            l.keys[0].slots.len(),
            2,
            "only this and the previous interval are kept"
        );
        assert_eq!(l.index_of("peer"), Some(0));
        assert_eq!(l.index_of("nope"), None);
    }
}
