//! The conversation list: records that match the filter, merged per
//! conversation over the range, sorted by any counter, paginated, with the
//! totals of the whole filtered set and a CSV rendering.

use std::{cmp::Ordering, collections::HashMap, fmt::Write as _, net::IpAddr};

use flowlens_correlator::record::tcp_flags_text;
use serde::Serialize;

use crate::{
    cube::Labels,
    fact::{Conv, ConvSignals, Side},
    filter::{ConvSubject, Expr, Subject},
    time::{rfc3339, TimeRange},
};

/// Most conversations one question may merge.
pub const MAX_CONVERSATIONS: usize = 2_000_000;

/// What the list is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Both directions' bytes.
    Bytes,
    /// Client to server bytes.
    BytesC2s,
    /// Server to client bytes.
    BytesS2c,
    /// Both directions' packets.
    Packets,
    /// Client to server packets.
    PacketsC2s,
    /// Server to client packets.
    PacketsS2c,
    /// Last packet minus first.
    Duration,
    /// First packet.
    FirstSeen,
    /// Latest packet.
    LastSeen,
    /// Records merged (intervals with traffic).
    Records,
    /// Mean RTT (conversations without a sample sort as the lowest).
    Rtt,
    /// Largest RTT sample.
    RttMax,
    /// Connection latency.
    Connect,
    /// Retransmits both ways.
    Retransmits,
    /// Resets both ways.
    Resets,
    /// Every error: retransmits, resets, a failed connect, DNS errors.
    Errors,
    /// Mean DNS latency.
    DnsLatency,
}

impl SortKey {
    /// Every key, as the API names it.
    pub const NAMES: &'static [&'static str] = &[
        "bytes",
        "bytes_c2s",
        "bytes_s2c",
        "packets",
        "packets_c2s",
        "packets_s2c",
        "duration",
        "first_seen",
        "last_seen",
        "records",
        "rtt",
        "rtt_max",
        "connect",
        "retransmits",
        "resets",
        "errors",
        "dns_latency",
    ];

    /// Parses a key name.
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "bytes" => SortKey::Bytes,
            "bytes_c2s" => SortKey::BytesC2s,
            "bytes_s2c" => SortKey::BytesS2c,
            "packets" => SortKey::Packets,
            "packets_c2s" => SortKey::PacketsC2s,
            "packets_s2c" => SortKey::PacketsS2c,
            "duration" => SortKey::Duration,
            "first_seen" => SortKey::FirstSeen,
            "last_seen" => SortKey::LastSeen,
            "records" => SortKey::Records,
            "rtt" => SortKey::Rtt,
            "rtt_max" => SortKey::RttMax,
            "connect" => SortKey::Connect,
            "retransmits" => SortKey::Retransmits,
            "resets" => SortKey::Resets,
            "errors" => SortKey::Errors,
            "dns_latency" => SortKey::DnsLatency,
            _ => return None,
        })
    }
}

/// One end of a listed conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointRow {
    /// Address.
    pub addr: String,
    /// Port (ICMP: echo id).
    pub port: u16,
    /// Owned by a local process.
    pub local: bool,
    /// Process id.
    pub pid: Option<u32>,
    /// Command name.
    pub process: Option<String>,
    /// Executable.
    pub exe: Option<String>,
    /// User label.
    pub user: Option<String>,
    /// Uid.
    pub uid: Option<u32>,
    /// Container label (`host` outside containers).
    pub container: Option<String>,
    /// Full container id.
    pub container_id: Option<String>,
    /// The address the other end sees for this one when NAT translated it.
    pub nat_addr: Option<String>,
    /// The port the other end sees for this one when NAT translated it.
    pub nat_port: Option<u16>,
    /// DNS name of the address, when this host's DNS traffic gave one (latest record).
    pub name: Option<String>,
}

/// A conversation merged over the range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConversationRow {
    /// Host.
    pub host: String,
    /// Protocol.
    pub proto: String,
    /// Initiator, attributed as in its latest record.
    pub client: EndpointRow,
    /// Responder.
    pub server: EndpointRow,
    /// Client to server bytes in the range.
    pub bytes_c2s: u64,
    /// Server to client bytes.
    pub bytes_s2c: u64,
    /// Client to server packets.
    pub packets_c2s: u64,
    /// Server to client packets.
    pub packets_s2c: u64,
    /// First packet of the conversation (RFC 3339).
    pub first_seen: String,
    /// Latest packet in the range (RFC 3339).
    pub last_seen: String,
    /// `last_seen - first_seen`, ms.
    pub duration_ms: u64,
    /// TCP flags seen (latest record).
    pub tcp_flags: String,
    /// Records merged.
    pub records: u64,
    /// `snat`, `dnat`, `snat+dnat` or `unjoined` (latest record; docs/schema.md).
    pub nat: Option<String>,
    /// Smallest RTT sample in the range, µs.
    pub rtt_min_us: Option<u64>,
    /// Mean RTT over every sample of the range (recombined from each record's mean × samples), µs.
    pub rtt_avg_us: Option<u64>,
    /// Largest RTT sample, µs.
    pub rtt_max_us: Option<u64>,
    /// SYN to established, µs (the connect completes once: the largest seen).
    pub connect_us: Option<u64>,
    /// The connect failed: `refused`, `timeout`, `unreachable` or `reset`.
    pub connect_error: Option<String>,
    /// Segments the client retransmitted.
    pub retransmits_c2s: u64,
    /// Segments the server retransmitted.
    pub retransmits_s2c: u64,
    /// Resets the client sent.
    pub resets_c2s: u64,
    /// Resets the server sent.
    pub resets_s2c: u64,
    /// DNS queries.
    pub dns_queries: u64,
    /// DNS responses.
    pub dns_responses: u64,
    /// Mean DNS latency over the answered queries of the range, µs.
    pub dns_latency_avg_us: Option<u64>,
    /// Largest DNS latency, µs.
    pub dns_latency_max_us: Option<u64>,
    /// DNS error rcodes and unanswered queries.
    pub dns_errors: u64,
    /// Every error: retransmits and resets both ways, a failed connect, DNS errors.
    pub errors: u64,
}

/// Totals of the filtered set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConversationTotals {
    /// Conversations.
    pub conversations: u64,
    /// Records.
    pub records: u64,
    /// Client to server bytes.
    pub bytes_c2s: u64,
    /// Server to client bytes.
    pub bytes_s2c: u64,
    /// Client to server packets.
    pub packets_c2s: u64,
    /// Server to client packets.
    pub packets_s2c: u64,
    /// Retransmits both ways.
    pub retransmits: u64,
    /// Resets both ways.
    pub resets: u64,
    /// Failed connects.
    pub connect_errors: u64,
    /// DNS error rcodes and unanswered queries.
    pub dns_errors: u64,
}

/// The signals of one conversation being merged: sums, and averages as sum + count.
#[derive(Clone, Copy, Default)]
struct SigAcc {
    rtt_min: Option<u64>,
    rtt_max: Option<u64>,
    rtt_sum: u64,
    rtt_n: u64,
    connect_us: Option<u64>,
    connect_error: Option<&'static str>,
    retransmits: (u64, u64),
    resets: (u64, u64),
    dns_queries: u64,
    dns_responses: u64,
    dns_sum: u64,
    dns_n: u64,
    dns_max: Option<u64>,
    dns_errors: u64,
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.max(b)
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl SigAcc {
    /// Adds a record's signals; the result does not depend on the order records come in.
    fn add(&mut self, s: &ConvSignals) {
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        self.rtt_min = min_opt(self.rtt_min, s.rtt_min_us);
        self.rtt_max = max_opt(self.rtt_max, s.rtt_max_us);
        if let Some(avg) = s.rtt_avg_us.filter(|_| s.rtt_samples > 0) {
            add(&mut self.rtt_sum, avg.saturating_mul(s.rtt_samples));
            add(&mut self.rtt_n, s.rtt_samples);
        }
        self.connect_us = max_opt(self.connect_us, s.connect_us);
        self.connect_error = self.connect_error.max(s.connect_error);
        add(&mut self.retransmits.0, s.retransmits_c2s);
        add(&mut self.retransmits.1, s.retransmits_s2c);
        add(&mut self.resets.0, s.resets_c2s);
        add(&mut self.resets.1, s.resets_s2c);
        add(&mut self.dns_queries, s.dns_queries);
        add(&mut self.dns_responses, s.dns_responses);
        if let Some(avg) = s.dns_latency_avg_us.filter(|_| s.dns_latency_samples > 0) {
            add(&mut self.dns_sum, avg.saturating_mul(s.dns_latency_samples));
            add(&mut self.dns_n, s.dns_latency_samples);
        }
        self.dns_max = max_opt(self.dns_max, s.dns_latency_max_us);
        add(&mut self.dns_errors, s.dns_errors);
    }

    fn rtt_avg(&self) -> Option<u64> {
        self.rtt_sum.checked_div(self.rtt_n)
    }

    fn retransmits(&self) -> u64 {
        self.retransmits.0.saturating_add(self.retransmits.1)
    }

    fn resets(&self) -> u64 {
        self.resets.0.saturating_add(self.resets.1)
    }

    fn errors(&self) -> u64 {
        self.retransmits()
            .saturating_add(self.resets())
            .saturating_add(u64::from(self.connect_error.is_some()))
            .saturating_add(self.dns_errors)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ConvKey {
    host: u32,
    proto: u32,
    client: IpAddr,
    cport: u16,
    server: IpAddr,
    sport: u16,
    first_seen: i64,
}

/// One end's attribution as label ids (0: none), so merging allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
struct EndIds {
    addr: u32,
    port: u16,
    local: bool,
    pid: u32,
    uid: u32,
    comm: u32,
    user: u32,
    container: u32,
    container_id: u32,
    exe: u32,
    nat_addr: u32,
    nat_port: Option<u16>,
    name: u32,
}

/// One conversation being merged.
struct Acc {
    key: ConvKey,
    client: EndIds,
    server: EndIds,
    c2s: (u64, u64),
    s2c: (u64, u64),
    records: u64,
    first_ns: i64,
    last_ns: i64,
    latest_ts: i64,
    tcp_flags: u8,
    nat: u32,
    sig: SigAcc,
}

fn ids(l: &mut Labels, s: &Side<'_>) -> EndIds {
    let o = s.owner.as_ref();
    let mut id = |t: Option<&str>| t.map_or(0, |t| l.id(t));
    EndIds {
        addr: id(Some(s.addr_text)),
        port: s.port,
        local: o.is_some(),
        pid: o.map_or(0, |o| o.pid),
        uid: o.map_or(0, |o| o.uid),
        comm: id(o.map(|o| o.comm)),
        user: id(o.map(|o| o.user)),
        container: id(o.map(|o| o.container)),
        container_id: id(o.and_then(|o| o.container_id)),
        exe: id(o.and_then(|o| o.exe)),
        nat_addr: id(s.nat_addr),
        nat_port: s.nat_port,
        name: id(s.name),
    }
}

fn row(l: &Labels, e: &EndIds) -> EndpointRow {
    let text = |id: u32| l.text(id).to_owned();
    let opt = |id: u32| (id != 0).then(|| l.text(id).to_owned());
    EndpointRow {
        addr: text(e.addr),
        port: e.port,
        local: e.local,
        pid: e.local.then_some(e.pid),
        process: e.local.then(|| text(e.comm)),
        exe: opt(e.exe).filter(|_| e.local),
        user: e.local.then(|| text(e.user)),
        uid: e.local.then_some(e.uid),
        container: e.local.then(|| text(e.container)),
        container_id: opt(e.container_id).filter(|_| e.local),
        nat_addr: opt(e.nat_addr),
        nat_port: e.nat_port,
        name: opt(e.name),
    }
}

/// Merges matching records into conversations.
pub struct ConversationBuilder {
    range: TimeRange,
    filter: Option<Expr>,
    labels: Labels,
    index: HashMap<ConvKey, usize>,
    accs: Vec<Acc>,
    too_many: bool,
}

impl ConversationBuilder {
    /// An empty list for records in `range` matching `filter`.
    pub fn new(range: TimeRange, filter: Option<Expr>) -> Self {
        ConversationBuilder {
            range,
            filter,
            labels: Labels::default(),
            index: HashMap::new(),
            accs: Vec::new(),
            too_many: false,
        }
    }

    /// Adds a record (ignored when outside the range or not matching).
    pub fn add(&mut self, c: &Conv<'_>) {
        if c.ts < self.range.from || c.ts >= self.range.to {
            return;
        }
        if let Some(f) = &self.filter {
            if !(ConvSubject { conv: c }).matches(f) {
                return;
            }
        }
        let key = ConvKey {
            host: self.labels.id(c.host),
            proto: self.labels.id(c.proto),
            client: c.client.addr,
            cport: c.client.port,
            server: c.server.addr,
            sport: c.server.port,
            first_seen: c.first_seen,
        };
        if let Some(&i) = self.index.get(&key) {
            let a = &mut self.accs[i];
            a.c2s.0 = a.c2s.0.saturating_add(c.c2s.bytes);
            a.c2s.1 = a.c2s.1.saturating_add(c.c2s.packets);
            a.s2c.0 = a.s2c.0.saturating_add(c.s2c.bytes);
            a.s2c.1 = a.s2c.1.saturating_add(c.s2c.packets);
            a.records += 1;
            a.sig.add(&c.signals);
            a.first_ns = a.first_ns.min(c.first_seen);
            a.last_ns = a.last_ns.max(c.last_seen);
            if c.ts > a.latest_ts {
                a.latest_ts = c.ts;
                a.tcp_flags = c.tcp_flags;
                let nat = c.nat.map_or(0, |n| self.labels.id(n));
                let (cl, sv) = (
                    ids(&mut self.labels, &c.client),
                    ids(&mut self.labels, &c.server),
                );
                let a = &mut self.accs[i];
                a.client = cl;
                a.server = sv;
                a.nat = nat;
            }
            return;
        }
        if self.accs.len() >= MAX_CONVERSATIONS {
            self.too_many = true;
            return;
        }
        self.index.insert(key, self.accs.len());
        let (client, server) = (
            ids(&mut self.labels, &c.client),
            ids(&mut self.labels, &c.server),
        );
        let nat = c.nat.map_or(0, |n| self.labels.id(n));
        self.accs.push(Acc {
            key,
            client,
            server,
            c2s: (c.c2s.bytes, c.c2s.packets),
            s2c: (c.s2c.bytes, c.s2c.packets),
            records: 1,
            first_ns: c.first_seen,
            last_ns: c.last_seen,
            latest_ts: c.ts,
            tcp_flags: c.tcp_flags,
            nat,
            sig: {
                let mut sig = SigAcc::default();
                sig.add(&c.signals);
                sig
            },
        });
    }

    /// The range of records it takes.
    pub fn range(&self) -> TimeRange {
        self.range
    }

    /// The filter records must match.
    pub fn filter(&self) -> Option<&Expr> {
        self.filter.as_ref()
    }

    /// Whether more conversations than [`MAX_CONVERSATIONS`] were seen.
    pub fn overflowed(&self) -> bool {
        self.too_many
    }

    /// The rows `offset..offset + limit` in `sort` order, the totals of all
    /// of them, and how many there are. Only the page is sorted in full and
    /// materialized.
    pub fn finish(
        self,
        sort: SortKey,
        descending: bool,
        offset: usize,
        limit: usize,
    ) -> (Vec<ConversationRow>, ConversationTotals, usize) {
        let mut t = ConversationTotals::default();
        for a in &self.accs {
            t.conversations += 1;
            t.records += a.records;
            t.bytes_c2s = t.bytes_c2s.saturating_add(a.c2s.0);
            t.bytes_s2c = t.bytes_s2c.saturating_add(a.s2c.0);
            t.packets_c2s = t.packets_c2s.saturating_add(a.c2s.1);
            t.packets_s2c = t.packets_s2c.saturating_add(a.s2c.1);
            t.retransmits = t.retransmits.saturating_add(a.sig.retransmits());
            t.resets = t.resets.saturating_add(a.sig.resets());
            t.connect_errors += u64::from(a.sig.connect_error.is_some());
            t.dns_errors = t.dns_errors.saturating_add(a.sig.dns_errors);
        }
        let total = self.accs.len();
        let labels = &self.labels;
        let value = |a: &Acc| -> i128 {
            match sort {
                SortKey::Bytes => i128::from(a.c2s.0) + i128::from(a.s2c.0),
                SortKey::BytesC2s => a.c2s.0.into(),
                SortKey::BytesS2c => a.s2c.0.into(),
                SortKey::Packets => i128::from(a.c2s.1) + i128::from(a.s2c.1),
                SortKey::PacketsC2s => a.c2s.1.into(),
                SortKey::PacketsS2c => a.s2c.1.into(),
                SortKey::Duration => {
                    i128::from(a.last_ns.saturating_sub(a.first_ns).max(0) / 1_000_000)
                }
                SortKey::FirstSeen => a.first_ns.into(),
                SortKey::LastSeen => a.last_ns.into(),
                SortKey::Records => a.records.into(),
                SortKey::Rtt => a.sig.rtt_avg().map_or(-1, i128::from),
                SortKey::RttMax => a.sig.rtt_max.map_or(-1, i128::from),
                SortKey::Connect => a.sig.connect_us.map_or(-1, i128::from),
                SortKey::Retransmits => a.sig.retransmits().into(),
                SortKey::Resets => a.sig.resets().into(),
                SortKey::Errors => a.sig.errors().into(),
                SortKey::DnsLatency => a
                    .sig
                    .dns_sum
                    .checked_div(a.sig.dns_n)
                    .map_or(-1, i128::from),
            }
        };
        // Ties break on the conversation's identity, by text, so every store agrees.
        let tie = |a: &Acc, b: &Acc| {
            (
                labels.text(a.key.host),
                labels.text(a.key.proto),
                a.key.client,
                a.key.cport,
                a.key.server,
                a.key.sport,
                a.key.first_seen,
            )
                .cmp(&(
                    labels.text(b.key.host),
                    labels.text(b.key.proto),
                    b.key.client,
                    b.key.cport,
                    b.key.server,
                    b.key.sport,
                    b.key.first_seen,
                ))
        };
        let cmp = |a: &Acc, b: &Acc| {
            let o = value(a).cmp(&value(b));
            let o = if descending { o.reverse() } else { o };
            if o == Ordering::Equal {
                tie(a, b)
            } else {
                o
            }
        };
        let mut accs = self.accs;
        let end = offset.saturating_add(limit).min(total);
        if offset >= total {
            return (Vec::new(), t, total);
        }
        if end < total {
            accs.select_nth_unstable_by(end, cmp);
            accs.truncate(end);
        }
        accs.sort_by(cmp);
        let rows = accs
            .into_iter()
            .skip(offset)
            .map(|a| ConversationRow {
                host: labels.text(a.key.host).to_owned(),
                proto: labels.text(a.key.proto).to_owned(),
                client: row(labels, &a.client),
                server: row(labels, &a.server),
                bytes_c2s: a.c2s.0,
                bytes_s2c: a.s2c.0,
                packets_c2s: a.c2s.1,
                packets_s2c: a.s2c.1,
                first_seen: rfc3339(a.first_ns),
                last_seen: rfc3339(a.last_ns),
                duration_ms: (a.last_ns.saturating_sub(a.first_ns).max(0) / 1_000_000) as u64,
                tcp_flags: tcp_flags_text(a.tcp_flags),
                records: a.records,
                nat: (a.nat != 0).then(|| labels.text(a.nat).to_owned()),
                rtt_min_us: a.sig.rtt_min,
                rtt_avg_us: a.sig.rtt_avg(),
                rtt_max_us: a.sig.rtt_max,
                connect_us: a.sig.connect_us,
                connect_error: a.sig.connect_error.map(str::to_owned),
                retransmits_c2s: a.sig.retransmits.0,
                retransmits_s2c: a.sig.retransmits.1,
                resets_c2s: a.sig.resets.0,
                resets_s2c: a.sig.resets.1,
                dns_queries: a.sig.dns_queries,
                dns_responses: a.sig.dns_responses,
                dns_latency_avg_us: a.sig.dns_sum.checked_div(a.sig.dns_n),
                dns_latency_max_us: a.sig.dns_max,
                dns_errors: a.sig.dns_errors,
                errors: a.sig.errors(),
            })
            .collect();
        (rows, t, total)
    }
}

/// CSV columns of the export.
pub const CSV_HEADER: &str = "first_seen,last_seen,host,proto,client_addr,client_port,client_user,client_uid,client_process,client_pid,client_container,client_exe,server_addr,server_port,server_user,server_uid,server_process,server_pid,server_container,server_exe,bytes_c2s,bytes_s2c,packets_c2s,packets_s2c,duration_ms,records,tcp_flags,nat,client_nat_addr,client_nat_port,server_nat_addr,server_nat_port,client_name,server_name,rtt_min_us,rtt_avg_us,rtt_max_us,connect_us,connect_error,retransmits_c2s,retransmits_s2c,resets_c2s,resets_s2c,dns_queries,dns_responses,dns_latency_avg_us,dns_latency_max_us,dns_errors";

/// A CSV cell: quoted when needed; text that a spreadsheet would run as a
/// formula (`= + - @`, tab, CR) is prefixed with `'`.
fn csv_cell(out: &mut String, s: &str) {
    let guarded = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = guarded || s.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if guarded {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// Renders rows as CSV (header first, `\r\n` line ends as RFC 4180 asks).
pub fn to_csv(rows: &[ConversationRow]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 200);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
    let big = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    for r in rows {
        let cells: Vec<String> = vec![
            r.first_seen.clone(),
            r.last_seen.clone(),
            r.host.clone(),
            r.proto.clone(),
            r.client.addr.clone(),
            r.client.port.to_string(),
            opt(&r.client.user),
            num(r.client.uid),
            opt(&r.client.process),
            num(r.client.pid),
            opt(&r.client.container),
            opt(&r.client.exe),
            r.server.addr.clone(),
            r.server.port.to_string(),
            opt(&r.server.user),
            num(r.server.uid),
            opt(&r.server.process),
            num(r.server.pid),
            opt(&r.server.container),
            opt(&r.server.exe),
            r.bytes_c2s.to_string(),
            r.bytes_s2c.to_string(),
            r.packets_c2s.to_string(),
            r.packets_s2c.to_string(),
            r.duration_ms.to_string(),
            r.records.to_string(),
            r.tcp_flags.clone(),
            opt(&r.nat),
            opt(&r.client.nat_addr),
            r.client.nat_port.map(|p| p.to_string()).unwrap_or_default(),
            opt(&r.server.nat_addr),
            r.server.nat_port.map(|p| p.to_string()).unwrap_or_default(),
            opt(&r.client.name),
            opt(&r.server.name),
            big(r.rtt_min_us),
            big(r.rtt_avg_us),
            big(r.rtt_max_us),
            big(r.connect_us),
            opt(&r.connect_error),
            r.retransmits_c2s.to_string(),
            r.retransmits_s2c.to_string(),
            r.resets_c2s.to_string(),
            r.resets_s2c.to_string(),
            r.dns_queries.to_string(),
            r.dns_responses.to_string(),
            big(r.dns_latency_avg_us),
            big(r.dns_latency_max_us),
            r.dns_errors.to_string(),
        ];
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_cell(&mut out, c);
        }
        let _ = write!(out, "\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::{Counts, OwnedConv, OwnedOwner, OwnedSide};

    fn rec(ts: i64, cport: u16, comm: &str, c2s: u64) -> OwnedConv {
        OwnedConv {
            ts,
            host: "h".into(),
            proto: "tcp".into(),
            client: OwnedSide {
                addr: "10.0.0.1".parse().unwrap(),
                addr_text: "10.0.0.1".into(),
                port: cport,
                owner: Some(OwnedOwner {
                    pid: 5,
                    uid: 1000,
                    comm: comm.into(),
                    user: "alice".into(),
                    container: "host".into(),
                    container_id: None,
                    exe: Some("=cmd|' /C calc'!A0".into()),
                }),
                nat_addr: None,
                nat_port: None,
                name: None,
            },
            server: OwnedSide {
                addr: "192.0.2.1".parse().unwrap(),
                addr_text: "192.0.2.1".into(),
                port: 443,
                owner: None,
                nat_addr: Some("198.51.100.1".into()),
                nat_port: Some(4443),
                name: Some("api.example".into()),
            },
            c2s: Counts {
                bytes: c2s,
                packets: 1,
            },
            s2c: Counts {
                bytes: 10,
                packets: 1,
            },
            first_seen: 1_000_000_000,
            last_seen: ts - 1,
            tcp_flags: 0x12,
            nat: Some("dnat".into()),
            signals: ConvSignals::default(),
        }
    }

    #[test]
    fn merges_sorts_paginates_and_totals() {
        let range = TimeRange {
            from: 0,
            to: 100_000_000_000,
        };
        let f = crate::filter::parse("process = curl OR process = wget").ok();
        let mut b = ConversationBuilder::new(range, f);
        for c in [
            rec(10_000_000_000, 1, "curl", 100),
            rec(20_000_000_000, 1, "curl", 50), // same conversation, later
            rec(10_000_000_000, 2, "wget", 120),
            rec(10_000_000_000, 3, "ssh", 999), // filtered out
            rec(200_000_000_000, 1, "curl", 1), // outside the range
        ] {
            b.add(&c.view());
        }
        let (rows, t, n) = b.finish(SortKey::BytesC2s, true, 0, 10);
        assert_eq!((rows.len(), n), (2, 2));
        assert_eq!(
            (rows[0].client.port, rows[0].bytes_c2s, rows[0].records),
            (1, 150, 2)
        );
        assert_eq!(rows[0].last_seen, rfc3339(20_000_000_000 - 1));
        assert_eq!(rows[0].duration_ms, 18_999);
        assert_eq!(rows[1].client.port, 2);
        assert_eq!(t.conversations, 2);
        assert_eq!((t.bytes_c2s, t.bytes_s2c, t.records), (270, 30, 3));
        let csv = to_csv(&rows);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert!(
            lines[1].contains(",\"'=cmd|' /C calc'!A0\","),
            "{}",
            lines[1]
        );
        assert_eq!(lines.len(), 4);
        assert!(
            lines[1].contains(",dnat,,,198.51.100.1,4443,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with(",4443,,api.example,,,,,,0,0,0,0,0,0,,,0"),
            "{}",
            lines[1]
        );
        assert_eq!(rows[0].server.nat_port, Some(4443));
        assert_eq!(rows[0].server.name.as_deref(), Some("api.example"));
    }

    /// RTT recombines over records by samples (not an average of averages), connect latency and the
    /// error are kept whichever record has them, and the list sorts by RTT and by errors.
    #[test]
    fn signals_merge_by_weight_and_sort() {
        let range = TimeRange {
            from: 0,
            to: 100_000_000_000,
        };
        let sig = |rtt: Option<(u64, u64)>, connect, error, retrans| ConvSignals {
            rtt_min_us: rtt.map(|r| r.0),
            rtt_avg_us: rtt.map(|r| r.0),
            rtt_max_us: rtt.map(|r| r.0),
            rtt_samples: rtt.map_or(0, |r| r.1),
            connect_us: connect,
            connect_error: error,
            retransmits_c2s: retrans,
            ..Default::default()
        };
        let mut recs = [
            rec(10_000_000_000, 1, "curl", 100),
            rec(20_000_000_000, 1, "curl", 50),
            rec(10_000_000_000, 2, "curl", 120),
            rec(10_000_000_000, 3, "curl", 120),
        ];
        recs[0].signals = sig(Some((100, 1)), Some(250), None, 1);
        recs[1].signals = sig(Some((1000, 3)), None, None, 2);
        recs[2].signals = sig(Some((500, 1)), None, None, 0);
        recs[3].signals = sig(None, None, Some("refused"), 0);
        let mut b = ConversationBuilder::new(range, None);
        // Reversed: the merge must not depend on the order records come in.
        for c in recs.iter().rev() {
            b.add(&c.view());
        }
        let (rows, t, _) = b.finish(SortKey::Rtt, true, 0, 10);
        let ports: Vec<u16> = rows.iter().map(|r| r.client.port).collect();
        assert_eq!(ports, [1, 2, 3]);
        let r = &rows[0];
        assert_eq!(
            (r.rtt_min_us, r.rtt_avg_us, r.rtt_max_us, r.connect_us),
            (Some(100), Some(775), Some(1000), Some(250))
        );
        assert_eq!(
            (r.retransmits_c2s, r.errors, r.connect_error.as_deref()),
            (3, 3, None)
        );
        assert_eq!(rows[2].connect_error.as_deref(), Some("refused"));
        assert_eq!((rows[2].rtt_avg_us, rows[2].errors), (None, 1));
        assert_eq!((t.retransmits, t.connect_errors), (3, 1));
        let mut b = ConversationBuilder::new(range, None);
        for c in &recs {
            b.add(&c.view());
        }
        let (rows, _, _) = b.finish(SortKey::Errors, true, 0, 2);
        let top: Vec<(u16, u64)> = rows.iter().map(|r| (r.client.port, r.errors)).collect();
        assert_eq!(top, [(1, 3), (3, 1)]);
    }
}
