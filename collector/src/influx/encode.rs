//! Line-protocol encoding of one interval's conversation records into `flow`, `flow_rollup` and `flow_iface` points,
//! appended to a caller's reused buffer (nanosecond timestamps, `\n`-terminated lines).
//!
//! Escaping follows the InfluxDB 1.x parser, which treats any delimiter preceded by a backslash as escaped:
//! measurement, tag keys/values: `,` ` ` (and `=` outside measurements) get a backslash; `\n` `\r` `\t` become
//! an escaped space; trailing backslashes are dropped (they would escape the delimiter after them). String
//! fields: `"` and `\` get a backslash, `\n` `\r` become a space. Integers carry `i`, `u64` clamps to `i64::MAX`.
//!
//! Length: about 500 lines of code (three measurements); the rest of the file is its unit tests.

use std::array;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hasher};

use flowlens_correlator::record::{ConversationRecord, ConversationSignals, Endpoint};
use flowlens_correlator::rollup::EndSignals;
use tracing::warn;

use super::cardinality::{CardinalityStats, TagLimiter, OTHER};
use super::pending::{FlowPoint, IfacePoint, Pending, RollupPoint};
use super::schema::{
    capped_tag_keys, flow_tags, iface_tags, local_ends, rollup_tags, usable_measurement, EndFields,
    FlowTag, IfaceTag, RollupTag, SchemaConfig, TagValue, CLIENT_FIELDS, SERVER_FIELDS,
};

/// Encodes conversation records as InfluxDB line protocol, with per-interval cardinality caps.
#[derive(Debug)]
pub struct Encoder {
    flow_name: Vec<u8>,
    rollup_name: Vec<u8>,
    iface_name: Vec<u8>,
    limiter: TagLimiter,
    /// Limiter key of each flow tag (`None`: not capped).
    flow_keys: [Option<usize>; FlowTag::COUNT],
    /// Limiter key of each rollup tag.
    rollup_keys: [Option<usize>; RollupTag::COUNT],
    /// Rollup tags whose key is not also a flow tag (shared keys are observed once, from the flow).
    rollup_own: [bool; RollupTag::COUNT],
    /// Limiter key of each iface tag.
    iface_keys: [Option<usize>; IfaceTag::COUNT],
    /// Iface tags whose key is not also a flow tag.
    iface_own: [bool; IfaceTag::COUNT],
    /// Next sequence number per hash of (series, interval end).
    seq: HashMap<u64, u32, BuildHasherDefault<DefaultHasher>>,
    /// The interval's records so far, as their points need them.
    pending: Pending,
}

/// One group of an aggregate measurement: its key (interval end, `T` tags), `S` sums and what else merges.
struct Row<'a, const T: usize, const S: usize, E = ()> {
    ts: i64,
    tags: [Option<TagValue<'a>>; T],
    sums: [u64; S],
    extra: E,
}

/// What a group carries beside its sums, merged with the rows of equal keys.
trait Combine {
    fn combine(&mut self, other: &Self);
}

impl Combine for () {
    fn combine(&mut self, _: &Self) {}
}

/// A rollup group's signals and the name of its peer (the first known one: a peer is one address).
#[derive(Clone, Copy)]
struct RollupExtra<'a> {
    signals: EndSignals,
    peer_name: Option<&'a str>,
}

impl Combine for RollupExtra<'_> {
    fn combine(&mut self, other: &Self) {
        self.signals.combine(&other.signals);
        self.peer_name = self.peer_name.or(other.peer_name);
    }
}

/// A rollup group; sums: bytes out, packets out, bytes in, packets in, conversations.
type RollupRow<'a> = Row<'a, { RollupTag::COUNT }, 5, RollupExtra<'a>>;

/// An interface group; sums: bytes, packets (both directions), conversations.
type IfaceRow<'a> = Row<'a, { IfaceTag::COUNT }, 3>;

/// Sorts `rows` by key and merges the rows of each key into one (sums saturating).
fn merge<const T: usize, const S: usize, E: Combine>(rows: &mut Vec<Row<'_, T, S, E>>) {
    rows.sort_unstable_by(|a, b| (a.ts, &a.tags).cmp(&(b.ts, &b.tags)));
    rows.dedup_by(|next, kept| {
        let same = next.ts == kept.ts && next.tags == kept.tags;
        if same {
            for (s, v) in kept.sums.iter_mut().zip(next.sums) {
                *s = s.saturating_add(v);
            }
            kept.extra.combine(&next.extra);
        }
        same
    });
}

/// Measurement names: the configured ones, each unusable or duplicate one replaced by an unused default.
fn measurement_names(cfg: &SchemaConfig) -> [String; 3] {
    let defaults = SchemaConfig::default();
    let fallback = [
        defaults.flow_measurement,
        defaults.rollup_measurement,
        defaults.iface_measurement,
    ];
    let wanted = [
        &cfg.flow_measurement,
        &cfg.rollup_measurement,
        &cfg.iface_measurement,
    ];
    let mut names: [String; 3] = Default::default();
    for i in 0..3 {
        let taken = |n: &str| names[..i].iter().any(|t| t == n);
        names[i] = if usable_measurement(wanted[i]) && !taken(wanted[i]) {
            wanted[i].clone()
        } else {
            let free = std::iter::once(&fallback[i])
                .chain(&fallback)
                .find(|n| !taken(n) && !wanted[i + 1..].contains(n));
            free.unwrap_or(&fallback[i]).clone()
        };
    }
    names
}

impl Encoder {
    /// An encoder for `cfg` (unusable measurement names fall back to the defaults, with a warning).
    pub fn new(cfg: SchemaConfig) -> Self {
        if let Err(error) = cfg.validate() {
            warn!(%error, "InfluxDB schema settings partly ignored.");
        }
        let [flow, rollup, iface] = measurement_names(&cfg);
        let (mut flow_name, mut rollup_name, mut iface_name) = (Vec::new(), Vec::new(), Vec::new());
        push_name(&mut flow_name, &flow, false);
        push_name(&mut rollup_name, &rollup, false);
        push_name(&mut iface_name, &iface, false);
        let keys = capped_tag_keys();
        let limiter = TagLimiter::new(keys.iter().map(|k| (*k, cfg.cap_for(k))));
        let flow_keys = array::from_fn(|i| {
            let t = FlowTag::ALL[i];
            t.capped().then(|| limiter.index_of(t.key())).flatten()
        });
        let rollup_keys = array::from_fn(|i| {
            let t = RollupTag::ALL[i];
            t.capped().then(|| limiter.index_of(t.key())).flatten()
        });
        let is_flow_key = |key: &str| FlowTag::ALL.iter().any(|f| f.key() == key);
        let rollup_own = array::from_fn(|i| !is_flow_key(RollupTag::ALL[i].key()));
        let iface_keys = array::from_fn(|i| {
            let t = IfaceTag::ALL[i];
            t.capped().then(|| limiter.index_of(t.key())).flatten()
        });
        let iface_own = array::from_fn(|i| !is_flow_key(IfaceTag::ALL[i].key()));
        Self {
            flow_name,
            rollup_name,
            iface_name,
            limiter,
            flow_keys,
            rollup_keys,
            rollup_own,
            iface_keys,
            iface_own,
            seq: HashMap::default(),
            pending: Pending::default(),
        }
    }

    /// Appends one interval's points (flow, rollup, iface) as line protocol (ns precision, '\n'-terminated
    /// lines) to `buf`; returns the number of lines appended. Resets per-interval cardinality state at the start.
    pub fn encode_interval(&mut self, records: &[ConversationRecord], buf: &mut Vec<u8>) -> usize {
        self.begin_interval();
        self.add(records);
        self.finish_interval(buf)
    }

    /// Starts an interval whose records come in chunks ([`Encoder::add`], then
    /// [`Encoder::finish_interval`]); the points are the same as in one [`Encoder::encode_interval`].
    pub fn begin_interval(&mut self) {
        self.limiter.begin_interval();
        self.seq.clear();
        self.pending.clear();
    }

    /// Takes the interval's next records: counts their tag values for the caps and keeps what their points
    /// need (see `pending.rs`), not the records.
    pub fn add(&mut self, records: &[ConversationRecord]) {
        for r in records {
            self.observe(r);
        }
        let p = &mut self.pending;
        for r in records {
            let tags = p.strings.keep_all(flow_tags(r));
            write_flow_fields(r, &mut p.fields);
            p.flows.push(FlowPoint {
                tags,
                ts: r.ts_unix_ns,
                fields_end: p.fields.len(),
            });
            let (bytes, packets) = (
                r.bytes_c2s.saturating_add(r.bytes_s2c),
                r.packets_c2s.saturating_add(r.packets_s2c),
            );
            for iface in &r.ifaces {
                p.ifaces.push(IfacePoint {
                    ts: r.ts_unix_ns,
                    tags: p.strings.keep_all(iface_tags(r, iface)),
                    sums: [bytes, packets, 1],
                });
            }
            for end in local_ends(r) {
                let (sent, received) = (end.sent, end.received);
                p.rollups.push(RollupPoint {
                    ts: r.ts_unix_ns,
                    tags: p.strings.keep_all(rollup_tags(r, &end)),
                    sums: [sent.0, sent.1, received.0, received.1, 1],
                    signals: EndSignals::of_end(&r.signals, end.role == "client"),
                    peer_name: p
                        .strings
                        .keep_str(end.other.name.as_deref().filter(|n| !n.is_empty())),
                });
            }
        }
    }

    /// Decides the interval's caps and appends its points to `buf`; returns the number of lines appended.
    pub fn finish_interval(&mut self, buf: &mut Vec<u8>) -> usize {
        self.limiter.decide();
        let p = std::mem::take(&mut self.pending);
        let mut start = 0;
        for f in &p.flows {
            let tags = p.strings.values(&f.tags);
            self.write_flow(tags, f.ts, &p.fields[start..f.fields_end], buf);
            start = f.fields_end;
        }
        let mut rows = Vec::with_capacity(p.rollups.len());
        for row in &p.rollups {
            let mut tags = p.strings.values(&row.tags);
            self.fold(&mut tags, &self.rollup_keys, None);
            rows.push(RollupRow {
                ts: row.ts,
                tags,
                sums: row.sums,
                extra: RollupExtra {
                    signals: row.signals,
                    peer_name: row.peer_name.map(|id| p.strings.get(id)),
                },
            });
        }
        let mut iface_rows = Vec::with_capacity(p.ifaces.len());
        for row in &p.ifaces {
            let mut tags = p.strings.values(&row.tags);
            self.fold(&mut tags, &self.iface_keys, None);
            iface_rows.push(IfaceRow {
                ts: row.ts,
                tags,
                sums: row.sums,
                extra: (),
            });
        }
        let lines =
            p.flows.len() + self.write_rollup(rows, buf) + self.write_iface(iface_rows, buf);
        self.pending = p;
        self.pending.clear();
        lines
    }

    /// Cumulative cardinality counters (values folded into `other`, per tag key).
    pub fn stats(&self) -> CardinalityStats {
        self.limiter.stats()
    }

    /// First pass: counts every capped tag value, weighted by the record's bytes.
    fn observe(&mut self, r: &ConversationRecord) {
        let weight = r.bytes_c2s.saturating_add(r.bytes_s2c);
        let limiter = &mut self.limiter;
        let mut count = |key: Option<usize>, v: Option<TagValue<'_>>| {
            if let (Some(k), Some(v)) = (key, v) {
                v.with_str(|s| {
                    if !s.is_empty() {
                        limiter.observe(k, s, weight);
                    }
                });
            }
        };
        for (key, v) in self.flow_keys.iter().zip(flow_tags(r)) {
            count(*key, v);
        }
        for end in local_ends(r) {
            let tags = rollup_tags(r, &end);
            for ((key, own), v) in self.rollup_keys.iter().zip(&self.rollup_own).zip(tags) {
                count(key.filter(|_| *own), v);
            }
        }
        for iface in &r.ifaces {
            let tags = iface_tags(r, iface);
            for ((key, own), v) in self.iface_keys.iter().zip(&self.iface_own).zip(tags) {
                count(key.filter(|_| *own), v);
            }
        }
    }

    /// Replaces values past their cap with `other`; keeps the originals in `folded` when given.
    fn fold<'a, const N: usize>(
        &self,
        tags: &mut [Option<TagValue<'a>>; N],
        keys: &[Option<usize>; N],
        mut folded: Option<&mut [Option<TagValue<'a>>; N]>,
    ) {
        for i in 0..N {
            let (Some(k), Some(v)) = (keys[i], tags[i]) else {
                continue;
            };
            if v.with_str(|s| s.is_empty() || self.limiter.admit(k, s)) {
                continue;
            }
            tags[i] = Some(TagValue::Str(OTHER));
            if let Some(f) = folded.as_deref_mut() {
                f[i] = Some(v);
            }
        }
    }

    /// The point's timestamp: the interval end minus the number of earlier points of the same series in
    /// this interval, so no two points of a series collide (InfluxDB would keep only the last).
    fn timestamp(&mut self, series: &[u8], ts: i64) -> i64 {
        let mut h = DefaultHasher::new();
        h.write(series);
        h.write_i64(ts);
        let n = self.seq.entry(h.finish()).or_insert(0);
        let seq = *n;
        *n = n.saturating_add(1);
        ts.saturating_sub(i64::from(seq))
    }

    /// Writes the `flow` point of one record: its tags (capped), `fields` (its field set, from
    /// [`write_flow_fields`]) and the original values of the capped tags.
    fn write_flow(
        &mut self,
        mut tags: [Option<TagValue<'_>>; FlowTag::COUNT],
        ts: i64,
        fields: &[u8],
        buf: &mut Vec<u8>,
    ) {
        let mut folded = [None; FlowTag::COUNT];
        self.fold(&mut tags, &self.flow_keys, Some(&mut folded));
        let start = buf.len();
        buf.extend_from_slice(&self.flow_name);
        push_tags(buf, FlowTag::ALL.iter().map(|t| t.key()), &tags);
        let ts = self.timestamp(&buf[start..], ts);
        buf.push(b' ');
        buf.extend_from_slice(fields);
        let mut f = Fields {
            buf,
            first: fields.is_empty(),
        };
        if folded.iter().any(Option::is_some) {
            // The original values of the folded tags, e.g. `client_comm=job-17,server_port=31337`.
            f.quoted("folded_tags", |buf| {
                let originals = FlowTag::ALL
                    .iter()
                    .zip(folded)
                    .filter_map(|(t, v)| Some((t, v?)));
                for (i, (tag, v)) in originals.enumerate() {
                    buf.extend_from_slice(if i > 0 { b"," } else { b"" });
                    buf.extend_from_slice(tag.key().as_bytes());
                    buf.push(b'=');
                    v.with_str(|s| push_str_content(buf, s));
                }
            });
        }
        finish_line(buf, ts);
    }

    /// Merges rollup rows with equal keys and writes two points per group (`out`, `in`); returns the lines.
    fn write_rollup(&mut self, mut rows: Vec<RollupRow<'_>>, buf: &mut Vec<u8>) -> usize {
        merge(&mut rows);
        for row in &rows {
            let (mut tags, sums) = (row.tags, row.sums);
            for (direction, bytes, packets) in [("out", sums[0], sums[1]), ("in", sums[2], sums[3])]
            {
                tags[RollupTag::Direction as usize] = Some(TagValue::Str(direction));
                let start = buf.len();
                buf.extend_from_slice(&self.rollup_name);
                push_tags(buf, RollupTag::ALL.iter().map(|t| t.key()), &tags);
                let ts = self.timestamp(&buf[start..], row.ts);
                buf.push(b' ');
                let mut f = Fields { buf, first: true };
                f.uint("bytes", bytes);
                f.uint("packets", packets);
                f.uint("conversations", sums[4]);
                f.end_signals(&row.extra.signals, direction == "out");
                if direction == "out" {
                    f.str("peer_name", row.extra.peer_name.unwrap_or(""));
                }
                finish_line(buf, ts);
            }
        }
        2 * rows.len()
    }

    /// Merges interface rows with equal keys and writes one point per group; returns the lines.
    fn write_iface(&mut self, mut rows: Vec<IfaceRow<'_>>, buf: &mut Vec<u8>) -> usize {
        merge(&mut rows);
        for row in &rows {
            let start = buf.len();
            buf.extend_from_slice(&self.iface_name);
            push_tags(buf, IfaceTag::ALL.iter().map(|t| t.key()), &row.tags);
            let ts = self.timestamp(&buf[start..], row.ts);
            buf.push(b' ');
            let mut f = Fields { buf, first: true };
            f.uint("bytes", row.sums[0]);
            f.uint("packets", row.sums[1]);
            f.uint("conversations", row.sums[2]);
            finish_line(buf, ts);
        }
        rows.len()
    }
}

/// Appends the field set of a record's `flow` point (all but `folded_tags`, which depends on the caps).
fn write_flow_fields(r: &ConversationRecord, buf: &mut Vec<u8>) {
    let mut f = Fields { buf, first: true };
    f.uint("bytes_c2s", r.bytes_c2s);
    f.uint("bytes_s2c", r.bytes_s2c);
    f.uint("packets_c2s", r.packets_c2s);
    f.uint("packets_s2c", r.packets_s2c);
    f.end(&r.client, &CLIENT_FIELDS);
    f.end(&r.server, &SERVER_FIELDS);
    f.str("client_evidence", &r.client_evidence);
    f.uint("duration_ms", r.duration_ms);
    f.int("first_seen_unix_ns", r.first_seen_unix_ns);
    f.int("last_seen_unix_ns", r.last_seen_unix_ns);
    f.uint("tcp_flags", r.tcp_flags.into());
    f.str("tcp_flags_text", &r.tcp_flags_text);
    if !r.ifaces.is_empty() {
        f.quoted("ifaces", |buf| {
            for (i, name) in r.ifaces.iter().enumerate() {
                buf.extend_from_slice(if i > 0 { b"," } else { b"" });
                push_str_content(buf, name);
            }
        });
    }
    f.opt_str("nat", r.nat.as_ref());
    f.signals(&r.signals);
}

/// Appends ` <ts>\n`.
fn finish_line(buf: &mut Vec<u8>, ts: i64) {
    buf.push(b' ');
    buf.extend_from_slice(itoa::Buffer::new().format(ts).as_bytes());
    buf.push(b'\n');
}

/// Appends `,key=value` for every present, non-empty tag (keys are static identifiers, already sorted).
fn push_tags<'k>(
    buf: &mut Vec<u8>,
    keys: impl Iterator<Item = &'k str>,
    values: &[Option<TagValue<'_>>],
) {
    for (key, v) in keys.zip(values) {
        match v {
            Some(TagValue::Str(s)) if !s.trim_end_matches('\\').is_empty() => {
                buf.push(b',');
                buf.extend_from_slice(key.as_bytes());
                buf.push(b'=');
                push_name(buf, s, true);
            }
            Some(TagValue::Num(n)) => {
                buf.push(b',');
                buf.extend_from_slice(key.as_bytes());
                buf.push(b'=');
                buf.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
            }
            _ => {}
        }
    }
}

/// Appends a measurement name, escaped.
pub(crate) fn push_measurement(buf: &mut Vec<u8>, s: &str) {
    push_name(buf, s, false);
}

/// Appends a tag value, escaped.
pub(crate) fn push_escaped_tag(buf: &mut Vec<u8>, s: &str) {
    push_name(buf, s, true);
}

/// Appends a measurement (`equals == false`) or a tag key/value, escaped.
fn push_name(buf: &mut Vec<u8>, s: &str, equals: bool) {
    let s = s.trim_end_matches('\\');
    let special = |b: u8| matches!(b, b',' | b' ' | b'\n' | b'\r' | b'\t') || (equals && b == b'=');
    if !s.bytes().any(special) {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\n' | b'\r' | b'\t' => buf.extend_from_slice(b"\\ "),
            b',' | b' ' | b'=' if special(b) => buf.extend_from_slice(&[b'\\', b]),
            _ => buf.push(b),
        }
    }
}

/// Appends the inside of a string field value, escaped.
fn push_str_content(buf: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| matches!(b, b'"' | b'\\' | b'\n' | b'\r')) {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => buf.extend_from_slice(&[b'\\', b]),
            b'\n' | b'\r' => buf.push(b' '),
            _ => buf.push(b),
        }
    }
}

/// The field set of one point being written.
struct Fields<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl Fields<'_> {
    /// Appends the separator and `key=`.
    fn key(&mut self, key: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(b'=');
    }

    fn int(&mut self, key: &str, v: i64) {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.buf.push(b'i');
    }

    /// InfluxDB 1.x rejects unsigned (`u`) fields: values past `i64::MAX` are clamped.
    fn uint(&mut self, key: &str, v: u64) {
        self.int(key, i64::try_from(v).unwrap_or(i64::MAX));
    }

    /// A string field whose (escaped) content `write` appends.
    fn quoted(&mut self, key: &str, write: impl FnOnce(&mut Vec<u8>)) {
        self.key(key);
        self.buf.push(b'"');
        write(self.buf);
        self.buf.push(b'"');
    }

    /// A string field; omitted when empty.
    fn str(&mut self, key: &str, v: &str) {
        if !v.is_empty() {
            self.quoted(key, |buf| push_str_content(buf, v));
        }
    }

    fn opt_str(&mut self, key: &str, v: Option<&String>) {
        if let Some(v) = v {
            self.str(key, v);
        }
    }

    fn opt_uint(&mut self, key: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.uint(key, v);
        }
    }

    fn nonzero(&mut self, key: &str, v: u64) {
        if v != 0 {
            self.uint(key, v);
        }
    }

    /// The golden signals: each only when it has something to say, as in JSON.
    fn signals(&mut self, s: &ConversationSignals) {
        self.opt_uint("rtt_min_us", s.rtt_min_us);
        self.opt_uint("rtt_avg_us", s.rtt_avg_us);
        self.opt_uint("rtt_max_us", s.rtt_max_us);
        self.nonzero("rtt_samples", s.rtt_samples);
        self.opt_uint("connect_us", s.connect_us);
        self.opt_str("connect_error", s.connect_error.as_ref());
        self.nonzero("retransmits_c2s", s.retransmits_c2s);
        self.nonzero("retransmits_s2c", s.retransmits_s2c);
        self.nonzero("resets_c2s", s.resets_c2s);
        self.nonzero("resets_s2c", s.resets_s2c);
        self.nonzero("dns_queries", s.dns_queries);
        self.nonzero("dns_responses", s.dns_responses);
        self.opt_uint("dns_latency_avg_us", s.dns_latency_avg_us);
        self.opt_uint("dns_latency_max_us", s.dns_latency_max_us);
        self.nonzero("dns_latency_samples", s.dns_latency_samples);
        self.nonzero("dns_nxdomain", s.dns_nxdomain);
        self.nonzero("dns_servfail", s.dns_servfail);
        self.nonzero("dns_refused", s.dns_refused);
        self.nonzero("dns_other_errors", s.dns_other_errors);
        self.nonzero("dns_unanswered", s.dns_unanswered);
    }

    /// A rollup point's signals: retransmits and resets in the point's direction; the rest (which has no
    /// direction) only on the `out` point, so a sum over both directions counts each once.
    fn end_signals(&mut self, s: &EndSignals, out: bool) {
        let (retransmits, resets) = if out {
            (s.retransmits_out, s.resets_out)
        } else {
            (s.retransmits_in, s.resets_in)
        };
        self.nonzero("retransmits", retransmits);
        self.nonzero("resets", resets);
        if !out {
            return;
        }
        self.opt_uint("rtt_min_us", s.rtt_min_us);
        self.opt_uint("rtt_max_us", s.rtt_max_us);
        self.nonzero("rtt_sum_us", s.rtt_sum_us);
        self.nonzero("rtt_samples", s.rtt_samples);
        self.nonzero("connects", s.connects);
        self.nonzero("connect_sum_us", s.connect_sum_us);
        self.opt_uint("connect_max_us", s.connect_max_us);
        self.nonzero("connect_errors", s.connect_errors);
        self.nonzero("dns_queries", s.dns_queries);
        self.nonzero("dns_responses", s.dns_responses);
        self.nonzero("dns_latency_sum_us", s.dns_latency_sum_us);
        self.nonzero("dns_latency_samples", s.dns_latency_samples);
        self.opt_uint("dns_latency_max_us", s.dns_latency_max_us);
        self.nonzero("dns_nxdomain", s.dns_nxdomain);
        self.nonzero("dns_servfail", s.dns_servfail);
        self.nonzero("dns_refused", s.dns_refused);
        self.nonzero("dns_other_errors", s.dns_other_errors);
        self.nonzero("dns_unanswered", s.dns_unanswered);
    }

    /// The fields of one end: address, client port, and the owner's identity when local.
    fn end(&mut self, e: &Endpoint, k: &EndFields) {
        self.str(k.addr, &e.addr);
        if let Some(port) = k.port {
            self.uint(port, e.port.into());
        }
        self.opt_str(k.nat_addr, e.nat_addr.as_ref());
        if let Some(port) = e.nat_port {
            self.uint(k.nat_port, port.into());
        }
        self.opt_str(k.name, e.name.as_ref());
        let Some(p) = &e.process else {
            return;
        };
        self.uint(k.pid, p.pid.into());
        self.uint(k.uid, p.uid.into());
        self.uint(k.gid, p.gid.into());
        self.opt_str(k.exe, p.exe.as_ref());
        self.opt_str(k.cgroup, p.cgroup.as_ref());
        self.opt_str(k.container_id, p.container_id.as_ref());
        self.str(k.container_runtime, &p.container_runtime);
        self.opt_str(k.container_image, p.container_image.as_ref());
        self.opt_str(k.pod_uid, p.pod_uid.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{container_proc, end, host_proc, parse_all, record, Point};
    use super::*;

    fn encode(records: &[ConversationRecord]) -> String {
        let mut buf = Vec::new();
        let n = Encoder::new(SchemaConfig::default()).encode_interval(records, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(n, text.lines().count());
        assert!(text.ends_with('\n'));
        text
    }

    const ID_WEB: &str = "4f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7";
    const ID_API: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const TIMES: &str = "duration_ms=8500i,first_seen_unix_ns=1700000001000000000i,\
                         last_seen_unix_ns=1700000009500000000i";
    const TCP: &str = "tcp_flags=27i,tcp_flags_text=\"SYN|ACK|PSH|FIN\"";

    #[test]
    fn golden_host_process_to_remote() {
        let r = record(
            end(
                "10.0.0.5",
                51234,
                Some(host_proc(4242, "curl", Some("alice"))),
            ),
            end("93.184.216.34", 443, None),
            (1200, 5400),
            (10, 12),
        );
        let want = format!(
            "flow,client_comm=curl,client_container_name=host,client_local=true,client_user=alice,host=node1,\
             proto=tcp,server_local=false,server_port=443 \
             bytes_c2s=1200i,bytes_s2c=5400i,packets_c2s=10i,packets_s2c=12i,client_addr=\"10.0.0.5\",\
             client_port=51234i,client_pid=4242i,client_uid=1000i,client_gid=1000i,client_exe=\"/usr/bin/curl\",\
             client_cgroup=\"/user.slice/user-1000.slice/session-2.scope\",client_container_runtime=\"host\",\
             server_addr=\"93.184.216.34\",client_evidence=\"socket\",{TIMES},{TCP},ifaces=\"eth0\" 1700000010000000000\n\
             flow_rollup,comm=curl,container=host,direction=out,host=node1,peer=93.184.216.34,peer_local=false,proto=tcp,\
             role=client,server_port=443,username=alice bytes=1200i,packets=10i,conversations=1i 1700000010000000000\n\
             flow_rollup,comm=curl,container=host,direction=in,host=node1,peer=93.184.216.34,peer_local=false,proto=tcp,\
             role=client,server_port=443,username=alice bytes=5400i,packets=12i,conversations=1i 1700000010000000000\n\
             flow_iface,host=node1,iface=eth0,proto=tcp bytes=6600i,packets=22i,conversations=1i 1700000010000000000\n"
        );
        assert_eq!(encode(&[r]), want);
    }

    #[test]
    fn golden_container_to_container() {
        let r = record(
            end(
                "172.17.0.3",
                40100,
                Some(container_proc(311, "python3", ID_API, None)),
            ),
            end(
                "172.17.0.2",
                80,
                Some(container_proc(52, "nginx", ID_WEB, Some("web"))),
            ),
            (700, 90_000),
            (7, 65),
        );
        let want = format!(
            "flow,client_comm=python3,client_container_name=0123456789ab,client_local=true,client_user=root,\
             host=node1,proto=tcp,server_comm=nginx,server_container_name=web,server_local=true,server_port=80,\
             server_user=root bytes_c2s=700i,bytes_s2c=90000i,packets_c2s=7i,packets_s2c=65i,\
             client_addr=\"172.17.0.3\",client_port=40100i,client_pid=311i,client_uid=0i,client_gid=0i,\
             client_exe=\"/usr/sbin/python3\",client_cgroup=\"/docker/{ID_API}\",client_container_id=\"{ID_API}\",\
             client_container_runtime=\"docker\",client_container_image=\"nginx:1.27\",server_addr=\"172.17.0.2\",\
             server_pid=52i,server_uid=0i,server_gid=0i,server_exe=\"/usr/sbin/nginx\",\
             server_cgroup=\"/docker/{ID_WEB}\",server_container_id=\"{ID_WEB}\",server_container_runtime=\"docker\",\
             server_container_image=\"nginx:1.27\",client_evidence=\"socket\",{TIMES},{TCP},ifaces=\"eth0\" \
             1700000010000000000\n\
             flow_rollup,comm=nginx,container=web,direction=out,host=node1,peer=0123456789ab,peer_local=true,proto=tcp,\
             role=server,server_port=80,username=root bytes=90000i,packets=65i,conversations=1i 1700000010000000000\n\
             flow_rollup,comm=nginx,container=web,direction=in,host=node1,peer=0123456789ab,peer_local=true,proto=tcp,\
             role=server,server_port=80,username=root bytes=700i,packets=7i,conversations=1i 1700000010000000000\n\
             flow_rollup,comm=python3,container=0123456789ab,direction=out,host=node1,peer=web,peer_local=true,proto=tcp,\
             role=client,server_port=80,username=root bytes=700i,packets=7i,conversations=1i 1700000010000000000\n\
             flow_rollup,comm=python3,container=0123456789ab,direction=in,host=node1,peer=web,peer_local=true,proto=tcp,\
             role=client,server_port=80,username=root bytes=90000i,packets=65i,conversations=1i 1700000010000000000\n\
             flow_iface,host=node1,iface=eth0,proto=tcp bytes=90700i,packets=72i,conversations=1i 1700000010000000000\n"
        );
        assert_eq!(encode(&[r]), want);
    }

    #[test]
    fn golden_nat_fields() {
        let mut client = end("172.17.0.2", 40000, None);
        client.nat_addr = Some("192.168.1.10".to_owned());
        client.nat_port = Some(61000);
        let mut r = record(client, end("10.9.0.2", 80, None), (80, 160), (1, 1));
        r.nat = Some("snat".to_owned());
        r.tcp_flags = 0;
        r.tcp_flags_text.clear();
        let want = format!(
            "flow,client_local=false,host=node1,proto=tcp,server_local=false,server_port=80 \
             bytes_c2s=80i,bytes_s2c=160i,packets_c2s=1i,packets_s2c=1i,client_addr=\"172.17.0.2\",\
             client_port=40000i,client_nat_addr=\"192.168.1.10\",client_nat_port=61000i,\
             server_addr=\"10.9.0.2\",client_evidence=\"socket\",{TIMES},tcp_flags=0i,\
             ifaces=\"eth0\",nat=\"snat\" 1700000010000000000\n\
             flow_iface,host=node1,iface=eth0,proto=tcp bytes=240i,packets=2i,conversations=1i 1700000010000000000\n"
        );
        assert_eq!(encode(&[r]), want);
    }

    #[test]
    fn golden_signal_fields() {
        let mut server = end("10.9.0.2", 443, None);
        server.name = Some("api.example.com".to_owned());
        let mut r = record(end("10.9.0.1", 40000, None), server, (80, 160), (1, 1));
        r.tcp_flags = 0;
        r.tcp_flags_text.clear();
        r.signals.rtt_min_us = Some(90);
        r.signals.rtt_avg_us = Some(110);
        r.signals.rtt_max_us = Some(150);
        r.signals.rtt_samples = 4;
        r.signals.connect_error = Some("refused".to_owned());
        r.signals.resets_s2c = 1;
        r.signals.dns_nxdomain = 2;
        let want = format!(
            "flow,client_local=false,host=node1,proto=tcp,server_local=false,server_port=443 \
             bytes_c2s=80i,bytes_s2c=160i,packets_c2s=1i,packets_s2c=1i,client_addr=\"10.9.0.1\",\
             client_port=40000i,server_addr=\"10.9.0.2\",server_name=\"api.example.com\",\
             client_evidence=\"socket\",{TIMES},tcp_flags=0i,ifaces=\"eth0\",rtt_min_us=90i,\
             rtt_avg_us=110i,rtt_max_us=150i,rtt_samples=4i,connect_error=\"refused\",resets_s2c=1i,\
             dns_nxdomain=2i 1700000010000000000\n\
             flow_iface,host=node1,iface=eth0,proto=tcp bytes=240i,packets=2i,conversations=1i 1700000010000000000\n"
        );
        assert_eq!(encode(&[r]), want);
    }

    #[test]
    fn golden_remote_ends_only() {
        let mut r = record(
            end("10.1.1.1", 5353, None),
            end("10.1.1.2", 53, None),
            (80, 160),
            (1, 1),
        );
        r.proto = "udp".to_owned();
        r.client_evidence = "ports".to_owned();
        r.tcp_flags = 0;
        r.tcp_flags_text.clear();
        r.ifaces = vec!["eth0".to_owned(), "if7".to_owned()];
        let want = format!(
            "flow,client_local=false,host=node1,proto=udp,server_local=false,server_port=53 \
             bytes_c2s=80i,bytes_s2c=160i,packets_c2s=1i,packets_s2c=1i,client_addr=\"10.1.1.1\",\
             client_port=5353i,server_addr=\"10.1.1.2\",client_evidence=\"ports\",{TIMES},tcp_flags=0i,\
             ifaces=\"eth0,if7\" 1700000010000000000\n\
             flow_iface,host=node1,iface=eth0,proto=udp bytes=240i,packets=2i,conversations=1i 1700000010000000000\n\
             flow_iface,host=node1,iface=if7,proto=udp bytes=240i,packets=2i,conversations=1i 1700000010000000000\n"
        );
        assert_eq!(
            encode(&[r]),
            want,
            "no rollup rows without a local end; the conversation on each of its interfaces"
        );
    }

    #[test]
    fn golden_escaping_nasties() {
        let mut client = host_proc(4242, "my,proc=1 x", Some("ü ser"));
        client.exe = Some("/opt/we\"ird\\dir/new\nline".to_owned());
        client.cgroup = Some("/a\rb".to_owned());
        let mut server = container_proc(52, "ngïnx\\", ID_WEB, Some("dév,ctr=1\nx"));
        server.user = Some("r\\,t".to_owned());
        server.exe = Some("C:\\tools\\\"x\"".to_owned());
        let mut r = record(
            end("10.0.0.5", 51234, Some(client)),
            end("172.17.0.2", 8080, Some(server)),
            (1, 2),
            (1, 1),
        );
        r.host = "node 1".to_owned();
        r.ifaces = vec!["eth 0".to_owned(), "br,1".to_owned()];
        let text = encode(&[r]);
        let want = format!(
            r#"flow,client_comm=my\,proc\=1\ x,client_container_name=host,client_local=true,client_user=ü\ ser,host=node\ 1,proto=tcp,server_comm=ngïnx,server_container_name=dév\,ctr\=1\ x,server_local=true,server_port=8080,server_user=r\\,t bytes_c2s=1i,bytes_s2c=2i,packets_c2s=1i,packets_s2c=1i,client_addr="10.0.0.5",client_port=51234i,client_pid=4242i,client_uid=1000i,client_gid=1000i,client_exe="/opt/we\"ird\\dir/new line",client_cgroup="/a b",client_container_runtime="host",server_addr="172.17.0.2",server_pid=52i,server_uid=0i,server_gid=0i,server_exe="C:\\tools\\\"x\"",server_cgroup="/docker/{ID_WEB}",server_container_id="{ID_WEB}",server_container_runtime="docker",server_container_image="nginx:1.27",client_evidence="socket",{TIMES},{TCP},ifaces="eth 0,br,1" 1700000010000000000"#
        );
        assert_eq!(text.lines().next(), Some(want.as_str()));
        // What InfluxDB 1.x stores: the values, with newlines as spaces and the trailing backslash dropped.
        let points = parse_all(text.as_bytes());
        let flow = &points[0];
        assert_eq!(flow.tag("client_comm"), Some("my,proc=1 x"));
        assert_eq!(flow.tag("server_container_name"), Some("dév,ctr=1 x"));
        assert_eq!(flow.tag("server_user"), Some("r\\,t"));
        assert_eq!(flow.tag("server_comm"), Some("ngïnx"));
        assert_eq!(flow.tag("host"), Some("node 1"));
        assert_eq!(flow.field("server_exe"), Some("C:\\tools\\\"x\""));
        fn who(p: &Point) -> (Option<&str>, Option<&str>, Option<&str>) {
            (p.tag("comm"), p.tag("peer"), p.tag("username"))
        }
        let client = (Some("my,proc=1 x"), Some("dév,ctr=1 x"), Some("ü ser"));
        assert_eq!((who(&points[1]), who(&points[2])), (client, client));
        let server = (Some("ngïnx"), Some("10.0.0.5"), Some("r\\,t"));
        assert_eq!((who(&points[3]), who(&points[4])), (server, server));
    }

    #[test]
    fn golden_empty_values_are_omitted() {
        let mut client = host_proc(1, "", Some(""));
        client.exe = None;
        client.cgroup = Some(String::new());
        let mut server = container_proc(52, "nginx", ID_WEB, Some(""));
        server.exe = None;
        let mut r = record(
            end("10.0.0.5", 1, Some(client)),
            end("172.17.0.2", 443, Some(server)),
            (5, 0),
            (1, 0),
        );
        r.host.clear();
        r.proto = "\\\\".to_owned();
        r.client_evidence.clear();
        r.tcp_flags = 0;
        r.tcp_flags_text.clear();
        r.ifaces.clear();
        let want = format!(
            "flow,client_container_name=host,client_local=true,client_user=1000,server_comm=nginx,\
             server_container_name=4f1c2a9e8b7d,server_local=true,server_port=443,server_user=root \
             bytes_c2s=5i,bytes_s2c=0i,packets_c2s=1i,packets_s2c=0i,client_addr=\"10.0.0.5\",client_port=1i,\
             client_pid=1i,client_uid=1000i,client_gid=1000i,client_container_runtime=\"host\",\
             server_addr=\"172.17.0.2\",server_pid=52i,server_uid=0i,server_gid=0i,\
             server_cgroup=\"/docker/{ID_WEB}\",server_container_id=\"{ID_WEB}\",server_container_runtime=\"docker\",\
             server_container_image=\"nginx:1.27\",{TIMES},tcp_flags=0i 1700000010000000000\n\
             flow_rollup,container=host,direction=out,peer=4f1c2a9e8b7d,peer_local=true,role=client,\
             server_port=443,username=1000 \
             bytes=5i,packets=1i,conversations=1i 1700000010000000000\n\
             flow_rollup,container=host,direction=in,peer=4f1c2a9e8b7d,peer_local=true,role=client,\
             server_port=443,username=1000 \
             bytes=0i,packets=0i,conversations=1i 1700000010000000000\n\
             flow_rollup,comm=nginx,container=4f1c2a9e8b7d,direction=out,peer=10.0.0.5,peer_local=true,\
             role=server,server_port=443,username=root \
             bytes=0i,packets=0i,conversations=1i 1700000010000000000\n\
             flow_rollup,comm=nginx,container=4f1c2a9e8b7d,direction=in,peer=10.0.0.5,peer_local=true,\
             role=server,server_port=443,username=root \
             bytes=5i,packets=1i,conversations=1i 1700000010000000000\n"
        );
        assert_eq!(encode(&[r]), want);
    }

    /// Two conversations of one `curl` to one named peer merge into one rollup group: counts add, RTT and
    /// connect latency travel as sum + count (the mean is 775 µs, not the 550 of an average of averages),
    /// minima and maxima combine, retransmits and resets follow the point's direction, the rest rides
    /// only on `out`, and the peer's DNS name is kept.
    #[test]
    fn rollup_signals_recombine_and_carry_the_peer_name() {
        let conv = |cport, rtt: Option<(u64, u64, u64, u64)>, connect, error: Option<&str>| {
            let mut r = record(
                end(
                    "10.0.0.5",
                    cport,
                    Some(host_proc(4242, "curl", Some("alice"))),
                ),
                end("93.184.216.34", 443, None),
                (100, 200),
                (1, 2),
            );
            r.server.name = Some("example.com".into());
            r.signals = ConversationSignals {
                rtt_min_us: rtt.map(|r| r.0),
                rtt_avg_us: rtt.map(|r| r.1),
                rtt_max_us: rtt.map(|r| r.2),
                rtt_samples: rtt.map_or(0, |r| r.3),
                connect_us: connect,
                connect_error: error.map(str::to_owned),
                retransmits_c2s: 2,
                retransmits_s2c: 1,
                resets_s2c: 1,
                ..Default::default()
            };
            r
        };
        let records = [
            conv(40001, Some((100, 100, 100, 1)), Some(30), None),
            conv(40002, Some((900, 1000, 1100, 3)), Some(50), None),
            conv(40003, None, None, Some("refused")),
        ];
        let text = encode(&records);
        let points = parse_all(text.as_bytes());
        let rollup: Vec<_> = points
            .iter()
            .filter(|p| p.series.starts_with("flow_rollup,"))
            .collect();
        assert_eq!(rollup.len(), 2, "{text}");
        let out = rollup
            .iter()
            .find(|p| p.tag("direction") == Some("out"))
            .unwrap();
        let inn = rollup
            .iter()
            .find(|p| p.tag("direction") == Some("in"))
            .unwrap();
        let ints = |p: &Point, keys: &[&str]| -> Vec<Option<i64>> {
            keys.iter().map(|k| p.int(k)).collect()
        };
        assert_eq!(
            ints(
                out,
                &[
                    "conversations",
                    "retransmits",
                    "resets",
                    "rtt_min_us",
                    "rtt_max_us"
                ]
            ),
            [Some(3), Some(6), None, Some(100), Some(1100)]
        );
        assert_eq!(
            ints(
                out,
                &[
                    "rtt_sum_us",
                    "rtt_samples",
                    "connects",
                    "connect_sum_us",
                    "connect_max_us"
                ]
            ),
            [Some(3100), Some(4), Some(2), Some(80), Some(50)]
        );
        assert_eq!(
            ints(out, &["connect_errors", "dns_queries"]),
            [Some(1), None]
        );
        assert_eq!(out.field("peer_name"), Some("example.com"));
        assert_eq!(
            ints(
                inn,
                &["retransmits", "resets", "rtt_sum_us", "connect_errors"]
            ),
            [Some(3), Some(3), None, None]
        );
        assert_eq!(inn.field("peer_name"), None);
    }
}
