//! What the encoder keeps of an interval until its end, when records arrive in chunks: an interval's
//! cardinality caps keep the heaviest tag values of the whole interval, and its rollups sum over all of
//! it, so no point can be written before the last record. Kept instead of the records (~1.7 KB each):
//! each `flow` point's field set, already encoded (it does not depend on the caps), its tag values and
//! the unmerged rollup and interface rows, with every tag text interned once per interval.

use std::collections::HashMap;
use std::sync::Arc;

use flowlens_correlator::rollup::EndSignals;

use super::schema::{FlowTag, IfaceTag, RollupTag, TagValue};

/// A tag value kept until the interval's end: interned text or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    Str(u32),
    Num(u32),
}

/// Tag texts of one interval, each stored once.
#[derive(Debug, Default)]
pub(crate) struct Strings {
    ids: HashMap<Arc<str>, u32>,
    all: Vec<Arc<str>>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        let s: Arc<str> = Arc::from(s);
        self.all.push(Arc::clone(&s));
        self.ids.insert(s, id);
        id
    }

    /// Keeps a tag value.
    pub fn keep(&mut self, v: TagValue<'_>) -> Kept {
        match v {
            TagValue::Str(s) => Kept::Str(self.id(s)),
            TagValue::Num(n) => Kept::Num(n),
        }
    }

    /// Keeps every tag value of a point.
    pub fn keep_all<const N: usize>(
        &mut self,
        tags: [Option<TagValue<'_>>; N],
    ) -> [Option<Kept>; N] {
        tags.map(|t| t.map(|v| self.keep(v)))
    }

    /// Keeps an optional text.
    pub fn keep_str(&mut self, s: Option<&str>) -> Option<u32> {
        s.map(|s| self.id(s))
    }

    /// A kept text.
    pub fn get(&self, id: u32) -> &str {
        self.all.get(id as usize).map_or("", |s| s)
    }

    /// A kept tag value, as the encoder takes it.
    pub fn value(&self, k: Kept) -> TagValue<'_> {
        match k {
            Kept::Str(id) => TagValue::Str(self.get(id)),
            Kept::Num(n) => TagValue::Num(n),
        }
    }

    /// Every kept tag value of a point.
    pub fn values<const N: usize>(&self, tags: &[Option<Kept>; N]) -> [Option<TagValue<'_>>; N] {
        tags.map(|t| t.map(|k| self.value(k)))
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.all.clear();
    }
}

/// A `flow` point: its tags before capping, its time and where its field set ends in `Pending::fields`.
#[derive(Debug)]
pub(crate) struct FlowPoint {
    pub tags: [Option<Kept>; FlowTag::COUNT],
    pub ts: i64,
    pub fields_end: usize,
}

/// One local end's rollup row before capping and merging (sums: bytes out, packets out, bytes in, packets in,
/// conversations).
#[derive(Debug)]
pub(crate) struct RollupPoint {
    pub ts: i64,
    pub tags: [Option<Kept>; RollupTag::COUNT],
    pub sums: [u64; 5],
    pub signals: EndSignals,
    pub peer_name: Option<u32>,
}

/// One interface row of a record before capping and merging (sums: bytes, packets, conversations).
#[derive(Debug)]
pub(crate) struct IfacePoint {
    pub ts: i64,
    pub tags: [Option<Kept>; IfaceTag::COUNT],
    pub sums: [u64; 3],
}

/// The interval so far.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub strings: Strings,
    pub flows: Vec<FlowPoint>,
    /// The `flow` points' field sets, one after the other.
    pub fields: Vec<u8>,
    pub rollups: Vec<RollupPoint>,
    pub ifaces: Vec<IfacePoint>,
}

impl Pending {
    /// Forgets the interval, keeping the room of an ordinary one (a burst's is given back).
    pub fn clear(&mut self) {
        fn trim<T>(v: &mut Vec<T>) {
            v.clear();
            if v.capacity() > 16 * 1024 {
                v.shrink_to(16 * 1024);
            }
        }
        self.strings.clear();
        if self.strings.all.capacity() > 16 * 1024 {
            self.strings = Strings::default();
        }
        trim(&mut self.flows);
        trim(&mut self.rollups);
        trim(&mut self.ifaces);
        self.fields.clear();
        if self.fields.capacity() > 4 << 20 {
            self.fields.shrink_to(4 << 20);
        }
    }
}
