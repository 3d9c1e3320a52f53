//! Decoding InfluxDB `/query` answers (JSON, `epoch=ns`, possibly chunked)
//! into the facts of [`crate::fact`]. Pure: the store does the HTTP.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{
    fact::{
        addr_of, connect_error_label, is_icmp, ConvSignals, Counts, End, OwnedConv, OwnedOwner,
        OwnedSide, Role,
    },
    field::Field,
    influxql::{InfluxSchema, Perspective},
};

/// One JSON document of a `/query` answer (a chunk when chunked).
#[derive(Debug, Deserialize)]
pub struct QueryResponse {
    /// One per statement.
    #[serde(default)]
    pub results: Vec<StatementResult>,
    /// A request-level error.
    pub error: Option<String>,
}

/// The answer to one statement.
#[derive(Debug, Deserialize)]
pub struct StatementResult {
    /// Statement index.
    #[serde(default)]
    pub statement_id: usize,
    /// Series (absent when empty).
    #[serde(default)]
    pub series: Vec<SeriesData>,
    /// A statement error.
    pub error: Option<String>,
}

/// One series.
#[derive(Debug, Deserialize)]
pub struct SeriesData {
    /// Measurement.
    #[serde(default)]
    pub name: String,
    /// Group-by tags.
    #[serde(default)]
    pub tags: HashMap<String, String>,
    /// Column names (`time` first).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Rows.
    #[serde(default)]
    pub values: Vec<Vec<Value>>,
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u.min(i64::MAX as u64) as i64))
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0),
        _ => 0,
    }
}

fn uint(v: Option<&Value>) -> u64 {
    int(v).max(0) as u64
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// An owned [`End`] (a row of a grouped statement).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedEnd {
    /// Bucket start, ns.
    pub ts: i64,
    /// Labels per field (only the grouped ones are set).
    pub host: String,
    /// Protocol.
    pub proto: String,
    /// Container.
    pub container: String,
    /// Process.
    pub process: String,
    /// User.
    pub user: String,
    /// Role (`client` when unknown).
    pub role: Option<Role>,
    /// Peer.
    pub peer: String,
    /// Peer is local.
    pub peer_local: Option<bool>,
    /// Server port.
    pub server_port: Option<u16>,
    /// Sent.
    pub sent: Counts,
    /// Received.
    pub received: Counts,
    /// Conversation records summed.
    pub conversations: u64,
}

impl OwnedEnd {
    /// The borrowed view.
    pub fn view(&self) -> End<'_> {
        End {
            ts: self.ts,
            host: &self.host,
            proto: &self.proto,
            container: &self.container,
            process: &self.process,
            user: &self.user,
            role: self.role.unwrap_or(Role::Client),
            peer: &self.peer,
            peer_local: self.peer_local,
            server_port: self.server_port,
            raw: None,
            sent: self.sent,
            received: self.received,
            conversations: self.conversations,
        }
    }

    fn set(&mut self, f: Field, v: &str) {
        match f {
            Field::Host => self.host = v.to_owned(),
            Field::Proto => self.proto = v.to_owned(),
            Field::Container => self.container = v.to_owned(),
            Field::Process => self.process = v.to_owned(),
            Field::User => self.user = v.to_owned(),
            Field::Role => self.role = Role::parse(v),
            Field::Peer => self.peer = v.to_owned(),
            Field::PeerLocal => self.peer_local = Some(v == "true"),
            Field::ServerPort => self.server_port = v.parse().ok(),
            _ => {}
        }
    }
}

fn col(s: &SeriesData, name: &str) -> Option<usize> {
    s.columns.iter().position(|c| c == name)
}

/// Merges the rollup statement's `out` and `in` rows into ends.
pub struct RollupRows {
    tags: Vec<(Field, &'static str)>,
    map: HashMap<(i64, Vec<String>), OwnedEnd>,
}

impl RollupRows {
    /// For a statement grouped by `group` in `schema`.
    pub fn new(schema: &InfluxSchema, group: &[Field]) -> Self {
        let tags = group
            .iter()
            .filter_map(|f| schema.rollup_group_tags(&[*f]).first().map(|t| (*f, *t)))
            .collect();
        RollupRows {
            tags,
            map: HashMap::new(),
        }
    }

    /// Adds the rows of one series.
    pub fn add(&mut self, s: &SeriesData) {
        let tag = |k: &str| s.tags.get(k).map_or("", String::as_str);
        let labels: Vec<String> = self.tags.iter().map(|(_, t)| tag(t).to_owned()).collect();
        let out = tag("direction") == "out";
        let (ti, bi, pi, ci) = (
            col(s, "time"),
            col(s, "bytes"),
            col(s, "packets"),
            col(s, "conversations"),
        );
        for row in &s.values {
            let at = |i: Option<usize>| i.and_then(|i| row.get(i));
            let ts = int(at(ti));
            let e = self.map.entry((ts, labels.clone())).or_insert_with(|| {
                let mut e = OwnedEnd {
                    ts,
                    ..OwnedEnd::default()
                };
                for ((f, _), v) in self.tags.iter().zip(&labels) {
                    e.set(*f, v);
                }
                e
            });
            let c = Counts {
                bytes: uint(at(bi)),
                packets: uint(at(pi)),
            };
            if out {
                e.sent = c;
            } else {
                e.received = c;
            }
            // Both points of a group carry the same count.
            e.conversations = e.conversations.max(uint(at(ci)));
        }
    }

    /// The ends.
    pub fn finish(self) -> Vec<OwnedEnd> {
        self.map.into_values().collect()
    }
}

/// Decodes one series of a flow-tags statement (one perspective).
pub fn flow_tag_rows(s: &SeriesData, p: Perspective, group: &[Field], out: &mut Vec<OwnedEnd>) {
    let tags = InfluxSchema::flow_group_tags(p, group);
    let mut base = OwnedEnd {
        role: Some(match p {
            Perspective::Client => Role::Client,
            Perspective::Server => Role::Server,
        }),
        ..OwnedEnd::default()
    };
    for (f, t) in &tags {
        let v = s.tags.get(*t).map_or("", String::as_str);
        base.set(*f, v);
        if *f == Field::PeerLocal {
            // `client_local`/`server_local` are always written: absent means not grouped.
            base.peer_local = Some(v == "true");
        }
    }
    let (ti, sb, sp, rb, rp, n) = (
        col(s, "time"),
        col(s, "sent_bytes"),
        col(s, "sent_packets"),
        col(s, "recv_bytes"),
        col(s, "recv_packets"),
        col(s, "records"),
    );
    for row in &s.values {
        let at = |i: Option<usize>| i.and_then(|i| row.get(i));
        let mut e = base.clone();
        e.ts = int(at(ti));
        e.sent = Counts {
            bytes: uint(at(sb)),
            packets: uint(at(sp)),
        };
        e.received = Counts {
            bytes: uint(at(rb)),
            packets: uint(at(rp)),
        };
        e.conversations = uint(at(n));
        out.push(e);
    }
}

/// Decodes the rows of a records statement into conversation records.
pub fn record_rows(s: &SeriesData, out: &mut Vec<OwnedConv>) {
    let idx: HashMap<&str, usize> = s
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    // Tags come once per series (GROUP BY *) or as columns.
    let tags: HashMap<&str, Value> = s
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), Value::String(v.clone())))
        .collect();
    for row in &s.values {
        let get = |name: &str| {
            idx.get(name)
                .and_then(|i| row.get(*i))
                .filter(|v| !v.is_null())
                .or_else(|| tags.get(name))
        };
        let t = |name: &str| text(get(name)).unwrap_or("").to_owned();
        let owner = |side: &str| -> Option<OwnedOwner> {
            if text(get(&format!("{side}_local"))) != Some("true") {
                return None;
            }
            Some(OwnedOwner {
                pid: uint(get(&format!("{side}_pid"))) as u32,
                uid: uint(get(&format!("{side}_uid"))) as u32,
                comm: t(&format!("{side}_comm")),
                user: t(&format!("{side}_user")),
                container: t(&format!("{side}_container_name")),
                container_id: text(get(&format!("{side}_container_id"))).map(str::to_owned),
                exe: text(get(&format!("{side}_exe"))).map(str::to_owned),
            })
        };
        let proto = t("proto");
        let client_port = uint(get("client_port")) as u16;
        let server_port = if is_icmp(&proto) {
            client_port
        } else {
            text(get("server_port"))
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        };
        let (ca, sa) = (t("client_addr"), t("server_addr"));
        out.push(OwnedConv {
            ts: int(get("time")),
            host: t("host"),
            proto,
            client: OwnedSide {
                addr: addr_of(&ca),
                addr_text: ca,
                port: client_port,
                owner: owner("client"),
                nat_addr: text(get("client_nat_addr")).map(str::to_owned),
                nat_port: get("client_nat_port").map(|v| uint(Some(v)) as u16),
                name: text(get("client_name")).map(str::to_owned),
            },
            server: OwnedSide {
                addr: addr_of(&sa),
                addr_text: sa,
                port: server_port,
                owner: owner("server"),
                nat_addr: text(get("server_nat_addr")).map(str::to_owned),
                nat_port: get("server_nat_port").map(|v| uint(Some(v)) as u16),
                name: text(get("server_name")).map(str::to_owned),
            },
            c2s: Counts {
                bytes: uint(get("bytes_c2s")),
                packets: uint(get("packets_c2s")),
            },
            s2c: Counts {
                bytes: uint(get("bytes_s2c")),
                packets: uint(get("packets_s2c")),
            },
            first_seen: int(get("first_seen_unix_ns")),
            last_seen: int(get("last_seen_unix_ns")),
            tcp_flags: uint(get("tcp_flags")).min(255) as u8,
            nat: text(get("nat")).map(str::to_owned),
            signals: signals(&|name| get(name)),
        });
    }
}

/// The golden signals of a `flow` row (each field absent when the record had none).
fn signals<'v>(get: &dyn Fn(&str) -> Option<&'v Value>) -> ConvSignals {
    let opt = |k: &str| get(k).map(|v| uint(Some(v)));
    let n = |k: &str| uint(get(k));
    ConvSignals {
        rtt_min_us: opt("rtt_min_us"),
        rtt_avg_us: opt("rtt_avg_us"),
        rtt_max_us: opt("rtt_max_us"),
        rtt_samples: n("rtt_samples"),
        connect_us: opt("connect_us"),
        connect_error: text(get("connect_error")).map(connect_error_label),
        retransmits_c2s: n("retransmits_c2s"),
        retransmits_s2c: n("retransmits_s2c"),
        resets_c2s: n("resets_c2s"),
        resets_s2c: n("resets_s2c"),
        dns_queries: n("dns_queries"),
        dns_responses: n("dns_responses"),
        dns_latency_avg_us: opt("dns_latency_avg_us"),
        dns_latency_max_us: opt("dns_latency_max_us"),
        dns_latency_samples: n("dns_latency_samples"),
        dns_errors: [
            "dns_nxdomain",
            "dns_servfail",
            "dns_refused",
            "dns_other_errors",
            "dns_unanswered",
        ]
        .iter()
        .fold(0u64, |a, k| a.saturating_add(n(k))),
    }
}

/// Decodes the values statement: (value, bytes) per group.
pub fn value_rows(s: &SeriesData, tag: &str, out: &mut Vec<(String, u64)>) {
    let v = s.tags.get(tag).cloned().unwrap_or_default();
    let bi = col(s, "bytes");
    let bytes = s
        .values
        .iter()
        .map(|r| uint(bi.and_then(|i| r.get(i))))
        .sum();
    out.push((v, bytes));
}
