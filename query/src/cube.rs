//! The aggregation every traffic question goes through: ends (from
//! conversation records or pre-summed rollup rows) are checked against the
//! filter and summed per time bucket and group; the shapes (series, tables,
//! sankey, graph) are then computed from the cube alone.

use std::collections::HashMap;

use crate::{
    fact::{Conv, Counts, End},
    field::{Dim, Field, FieldSet},
    filter::{EndSubject, Expr, Subject},
    time::{Buckets, TimeRange},
};

/// Most dimensions a cube can group by (besides direction).
pub const MAX_CUBE_DIMS: usize = 5;
/// Most cells (bucket × group) one question may build.
pub const MAX_CELLS: usize = 2_000_000;

/// What a store is asked for: ends in a range, filtered, grouped by `dims`
/// per bucket. Direction is always kept apart inside the cells.
#[derive(Clone, Debug)]
pub struct TrafficQuery {
    /// Time range.
    pub range: TimeRange,
    /// Buckets over the range.
    pub buckets: Buckets,
    /// Group-by dimensions (never `Direction`).
    pub dims: Vec<Dim>,
    /// The filter.
    pub filter: Option<Expr>,
}

impl TrafficQuery {
    /// A query; `dims` loses `Direction` (cells keep directions apart).
    pub fn new(range: TimeRange, step: i64, dims: &[Dim], filter: Option<Expr>) -> Self {
        let mut d: Vec<Dim> = Vec::new();
        for x in dims {
            if *x != Dim::Direction && !d.contains(x) {
                d.push(*x);
            }
        }
        TrafficQuery {
            range,
            buckets: Buckets::new(range, step),
            dims: d,
            filter,
        }
    }

    /// The fields a source must provide: the dimensions and the filter's fields.
    pub fn needed(&self) -> FieldSet {
        let mut s: FieldSet = self.dims.iter().map(|d| d.field()).collect();
        if let Some(f) = &self.filter {
            s = s.union(f.fields());
        }
        s.minus(FieldSet::of(&[Field::Direction]))
    }
}

/// Sums of one group in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// Sent by the local ends (where `direction = out` matched).
    pub out: Counts,
    /// Received by the local ends (where `direction = in` matched).
    pub inn: Counts,
    /// Ends counted in `out`.
    pub conv_out: u64,
    /// Ends counted in `inn`.
    pub conv_in: u64,
    /// Ends counted in either.
    pub conv_any: u64,
}

/// Cell key: bucket and label ids of the dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Bucket index.
    pub bucket: u32,
    /// Label id per dimension (0 = absent).
    pub vals: [u32; MAX_CUBE_DIMS],
}

/// Interned labels: id 0 is the empty label (absent value).
#[derive(Debug)]
pub struct Labels {
    ids: HashMap<Box<str>, u32>,
    texts: Vec<Box<str>>,
}

impl Default for Labels {
    fn default() -> Self {
        let mut l = Labels {
            ids: HashMap::new(),
            texts: Vec::new(),
        };
        l.id("");
        l
    }
}

impl Labels {
    /// The id of `s`, adding it when new.
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(i) = self.ids.get(s) {
            return *i;
        }
        let i = self.texts.len() as u32;
        self.texts.push(s.into());
        self.ids.insert(s.into(), i);
        i
    }

    /// The text of an id.
    pub fn text(&self, id: u32) -> &str {
        self.texts.get(id as usize).map_or("", |s| s)
    }
}

/// Builds a [`Cube`] from ends.
pub struct CubeBuilder {
    q: TrafficQuery,
    dir_sensitive: bool,
    labels: Labels,
    cells: HashMap<Key, Cell>,
    too_many: bool,
    port_buf: String,
}

impl CubeBuilder {
    /// An empty cube for `q`.
    pub fn new(q: &TrafficQuery) -> Self {
        let dir_sensitive = q
            .filter
            .as_ref()
            .is_some_and(|f| f.fields().contains(Field::Direction));
        CubeBuilder {
            q: q.clone(),
            dir_sensitive,
            labels: Labels::default(),
            cells: HashMap::new(),
            too_many: false,
            port_buf: String::new(),
        }
    }

    /// Adds the local ends of a conversation record.
    pub fn add_conv(&mut self, c: &Conv<'_>) {
        for e in c.ends() {
            self.add_end(&e);
        }
    }

    /// Adds one end (or one pre-summed rollup row).
    pub fn add_end(&mut self, e: &End<'_>) {
        if e.ts < self.q.range.from.min(self.q.buckets.start) || e.ts >= self.q.range.to {
            return;
        }
        let Some(bucket) = self.q.buckets.index(e.ts) else {
            return;
        };
        let (m_out, m_in) = match &self.q.filter {
            None => (true, true),
            Some(f) if !self.dir_sensitive => {
                let m = EndSubject {
                    end: e,
                    direction: None,
                }
                .matches(f);
                (m, m)
            }
            Some(f) => (
                EndSubject {
                    end: e,
                    direction: Some("out"),
                }
                .matches(f),
                EndSubject {
                    end: e,
                    direction: Some("in"),
                }
                .matches(f),
            ),
        };
        if !m_out && !m_in {
            return;
        }
        let mut vals = [0u32; MAX_CUBE_DIMS];
        for (slot, d) in vals.iter_mut().zip(&self.q.dims) {
            *slot = match d {
                Dim::Host => self.labels.id(e.host),
                Dim::Container => self.labels.id(e.container),
                Dim::Process => self.labels.id(e.process),
                Dim::User => self.labels.id(e.user),
                Dim::Peer => self.labels.id(e.peer),
                Dim::Proto => self.labels.id(e.proto),
                Dim::Role => self.labels.id(e.role.name()),
                Dim::ServerPort => match e.server_port {
                    Some(p) => {
                        use std::fmt::Write;
                        self.port_buf.clear();
                        let _ = write!(self.port_buf, "{p}");
                        self.labels.id(&self.port_buf)
                    }
                    None => 0,
                },
                Dim::Direction => 0,
            };
        }
        let key = Key {
            bucket: bucket as u32,
            vals,
        };
        if self.cells.len() >= MAX_CELLS && !self.cells.contains_key(&key) {
            self.too_many = true;
            return;
        }
        let c = self.cells.entry(key).or_default();
        if m_out {
            c.out.bytes = c.out.bytes.saturating_add(e.sent.bytes);
            c.out.packets = c.out.packets.saturating_add(e.sent.packets);
            c.conv_out += e.conversations;
        }
        if m_in {
            c.inn.bytes = c.inn.bytes.saturating_add(e.received.bytes);
            c.inn.packets = c.inn.packets.saturating_add(e.received.packets);
            c.conv_in += e.conversations;
        }
        c.conv_any += e.conversations;
    }

    /// The cube, or an error when the question had more groups than [`MAX_CELLS`].
    pub fn finish(self) -> Result<Cube, TooManyGroups> {
        if self.too_many {
            return Err(TooManyGroups);
        }
        Ok(Cube {
            dims: self.q.dims,
            buckets: self.q.buckets,
            labels: self.labels,
            cells: self.cells,
        })
    }
}

/// A question grouped into more cells than [`MAX_CELLS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the question has more than {MAX_CELLS} time × group cells; add a filter, fewer dimensions or fewer points")]
pub struct TooManyGroups;

/// Sums per bucket and group.
#[derive(Debug)]
pub struct Cube {
    /// Group-by dimensions, in the order of the key's values.
    pub dims: Vec<Dim>,
    /// Buckets.
    pub buckets: Buckets,
    /// Label texts.
    pub labels: Labels,
    /// The cells.
    pub cells: HashMap<Key, Cell>,
}

impl Cube {
    /// The label of a key value (empty = absent).
    pub fn label(&self, id: u32) -> &str {
        self.labels.text(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::{OwnedConv, Role};
    use crate::filter::parse;

    const S: i64 = 1_000_000_000;

    fn end(ts: i64, container: &'static str, sent: u64, recv: u64) -> End<'static> {
        End {
            ts,
            host: "h",
            proto: "tcp",
            container,
            process: "p",
            user: "u",
            role: Role::Client,
            peer: "1.2.3.4",
            peer_local: None,
            server_port: Some(80),
            raw: None,
            sent: Counts {
                bytes: sent,
                packets: 1,
            },
            received: Counts {
                bytes: recv,
                packets: 2,
            },
            conversations: 1,
        }
    }

    fn query(dims: &[Dim], filter: Option<&str>) -> TrafficQuery {
        TrafficQuery::new(
            TimeRange {
                from: 100 * S,
                to: 200 * S,
            },
            50 * S,
            dims,
            filter.map(|f| parse(f).unwrap()),
        )
    }

    #[test]
    fn sums_per_bucket_and_group_and_keeps_directions_apart() {
        let q = query(&[Dim::Container, Dim::Direction], None);
        assert_eq!(q.dims, vec![Dim::Container]);
        let mut b = CubeBuilder::new(&q);
        b.add_end(&end(110 * S, "a", 10, 100));
        b.add_end(&end(120 * S, "a", 1, 1));
        b.add_end(&end(160 * S, "b", 5, 0));
        b.add_end(&end(99 * S, "a", 1000, 0)); // before the range
        b.add_end(&end(200 * S, "a", 1000, 0)); // at its end (excluded)
        let c = b.finish().unwrap();
        assert_eq!(c.cells.len(), 2);
        let a = c.labels.ids.get("a").copied().unwrap();
        let cell = c.cells[&Key {
            bucket: 0,
            vals: [a, 0, 0, 0, 0],
        }];
        assert_eq!((cell.out.bytes, cell.inn.bytes), (11, 101));
        assert_eq!((cell.conv_out, cell.conv_in, cell.conv_any), (2, 2, 2));
    }

    #[test]
    fn direction_filters_select_one_side() {
        let q = query(&[], Some("direction = in OR container = b"));
        let mut b = CubeBuilder::new(&q);
        b.add_end(&end(110 * S, "a", 10, 100));
        b.add_end(&end(110 * S, "b", 7, 70));
        let c = b.finish().unwrap();
        let cell = c.cells.values().next().copied().unwrap();
        assert_eq!((cell.out.bytes, cell.inn.bytes), (7, 170));
        assert_eq!((cell.conv_out, cell.conv_in, cell.conv_any), (1, 2, 2));
    }

    #[test]
    fn conversation_records_feed_their_local_ends() {
        let r = flowlens_correlator::record::ConversationRecord {
            ts: String::new(),
            ts_unix_ns: 150 * S,
            interval_ms: 10_000,
            host: "h".into(),
            proto: "udp".into(),
            client: flowlens_correlator::record::Endpoint {
                addr: "10.0.0.1".into(),
                port: 5000,
                local: false,
                nat_addr: None,
                nat_port: None,
                name: None,
                process: None,
            },
            server: flowlens_correlator::record::Endpoint {
                addr: "10.0.0.2".into(),
                port: 53,
                local: false,
                nat_addr: None,
                nat_port: None,
                name: None,
                process: None,
            },
            client_evidence: "ports".into(),
            bytes_c2s: 1,
            bytes_s2c: 2,
            packets_c2s: 1,
            packets_s2c: 1,
            first_seen: String::new(),
            first_seen_unix_ns: 0,
            last_seen: String::new(),
            last_seen_unix_ns: 0,
            duration_ms: 0,
            tcp_flags: 0,
            tcp_flags_text: String::new(),
            ifaces: vec![],
            nat: None,
            signals: Default::default(),
        };
        let q = query(&[Dim::ServerPort], None);
        let mut b = CubeBuilder::new(&q);
        b.add_conv(&OwnedConv::from_record(&r).view());
        assert!(
            b.finish().unwrap().cells.is_empty(),
            "no local end, no traffic row"
        );
    }
}
