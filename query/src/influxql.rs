//! InfluxQL for the three sources. Identifiers come only from the schema
//! (allow-listed tag and field keys, configured measurement names) and are
//! quoted; every literal is escaped; user text never reaches a statement
//! unquoted. The `WHERE` clause is a *superset* of the filter (what cannot be
//! said in InfluxQL — NOT, CIDR, numeric tag comparisons — is left out), and
//! every returned row is then checked by the one evaluator in [`crate::filter`].

use std::fmt::Write as _;

use crate::{
    field::{Dim, Field, FieldKind, FieldSet},
    filter::{Atom, Expr, Literal, Op},
    plan::{base_rollup_fields, flow_tag_fields, Capabilities},
    time::{Buckets, TimeRange},
};

/// A double-quoted identifier.
pub fn ident(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
    o
}

/// A single-quoted string literal.
pub fn string_lit(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '\\' => {
                o.push('\\');
                o.push(c);
            }
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('\'');
    o
}

/// A regex literal matching text that contains `needle`, ASCII
/// case-insensitively: letters become `[aA]`, every other ASCII character
/// but digits becomes `\x{HH}` (so no backslash or slash ever meets the
/// InfluxQL scanner's delimiter handling); other characters stay as they are.
pub fn contains_regex(needle: &str) -> String {
    let mut o = String::from("/");
    for c in needle.chars() {
        if c.is_ascii_alphabetic() {
            let _ = write!(o, "[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase());
        } else if c.is_ascii_digit() || (!c.is_ascii() && !c.is_control()) {
            o.push(c);
        } else {
            let _ = write!(o, "\\x{{{:x}}}", u32::from(c));
        }
    }
    o.push('/');
    o
}

/// Names in the InfluxDB schema (docs/schema.md) that can differ between
/// versions and configurations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfluxSchema {
    /// Conversation records measurement.
    pub flow: String,
    /// Rollup measurement.
    pub rollup: String,
    /// Retention policy to read (`None`: the database's default).
    pub rp: Option<String>,
    /// The rollup's user tag key.
    pub rollup_user_tag: &'static str,
    /// Whether the rollup has a `server_port` tag.
    pub rollup_server_port: bool,
    /// Whether the rollup has a `peer_local` tag.
    pub rollup_peer_local: bool,
}

impl Default for InfluxSchema {
    fn default() -> Self {
        InfluxSchema {
            flow: "flow".into(),
            rollup: "flow_rollup".into(),
            rp: None,
            rollup_user_tag: "user",
            rollup_server_port: false,
            rollup_peer_local: false,
        }
    }
}

/// A tag or field of one source, per filter field.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Column {
    /// Any of these tags.
    Tags(Vec<&'static str>),
    /// Any of these string fields holding addresses.
    AddrFields(Vec<&'static str>),
    /// A constant in this perspective (e.g. role of the client perspective).
    Const(&'static str),
    /// Not expressible: the atom is left out (true).
    Unknown,
}

/// One side's view of the `flow` tags (a local end that is the client or the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perspective {
    /// The client end is local.
    Client,
    /// The server end is local.
    Server,
}

impl Perspective {
    fn prefix(self) -> &'static str {
        match self {
            Perspective::Client => "client",
            Perspective::Server => "server",
        }
    }

    fn other(self) -> Perspective {
        match self {
            Perspective::Client => Perspective::Server,
            Perspective::Server => Perspective::Client,
        }
    }
}

fn end_tag(p: Perspective, f: Field) -> Option<&'static str> {
    Some(match (p, f) {
        (Perspective::Client, Field::Container) => "client_container_name",
        (Perspective::Client, Field::Process) => "client_comm",
        (Perspective::Client, Field::User) => "client_user",
        (Perspective::Server, Field::Container) => "server_container_name",
        (Perspective::Server, Field::Process) => "server_comm",
        (Perspective::Server, Field::User) => "server_user",
        _ => return None,
    })
}

fn local_tag(p: Perspective) -> &'static str {
    match p {
        Perspective::Client => "client_local",
        Perspective::Server => "server_local",
    }
}

impl InfluxSchema {
    /// What the schema can answer.
    pub fn capabilities(&self) -> Capabilities {
        let mut rollup = base_rollup_fields();
        if self.rollup_server_port {
            rollup.insert(Field::ServerPort);
        }
        if self.rollup_peer_local {
            rollup.insert(Field::PeerLocal);
        }
        Capabilities {
            rollup: Some(rollup),
            flow_tags: Some(flow_tag_fields()),
        }
    }

    fn from(&self, m: &str) -> String {
        match &self.rp {
            Some(rp) => format!("{}.{}", ident(rp), ident(m)),
            None => ident(m),
        }
    }

    fn rollup_tag(&self, f: Field) -> Option<&'static str> {
        Some(match f {
            Field::Host => "host",
            Field::Proto => "proto",
            Field::Container => "container",
            Field::Process => "comm",
            Field::User => self.rollup_user_tag,
            Field::Role => "role",
            Field::Direction => "direction",
            Field::Peer => "peer",
            Field::ServerPort if self.rollup_server_port => "server_port",
            Field::PeerLocal if self.rollup_peer_local => "peer_local",
            _ => return None,
        })
    }

    fn rollup_column(&self, f: Field) -> Column {
        self.rollup_tag(f)
            .map_or(Column::Unknown, |t| Column::Tags(vec![t]))
    }

    /// Tag keys the rollup statement groups by, in the order of `fields`.
    pub fn rollup_group_tags(&self, fields: &[Field]) -> Vec<&'static str> {
        fields.iter().filter_map(|f| self.rollup_tag(*f)).collect()
    }

    /// `SELECT sum(...) FROM flow_rollup ... GROUP BY time(step), direction, <tags> fill(none)`.
    pub fn rollup_statement(
        &self,
        range: TimeRange,
        buckets: &Buckets,
        group: &[Field],
        filter: Option<&Expr>,
    ) -> Option<String> {
        let pred = match filter {
            Some(e) => translate(&e.nnf(), &|f| self.rollup_column(f)),
            None => Pred::True,
        };
        let mut q = format!(
            "SELECT sum(\"bytes\") AS \"bytes\", sum(\"packets\") AS \"packets\", sum(\"conversations\") AS \"conversations\" FROM {} WHERE {}",
            self.from(&self.rollup),
            time_clause(range)
        );
        if !pred.and_to(&mut q)? {
            return None;
        }
        let _ = write!(
            q,
            " GROUP BY time({}s), \"direction\"",
            buckets.step / 1_000_000_000
        );
        for t in self.rollup_group_tags(group) {
            if t != "direction" {
                let _ = write!(q, ", {}", ident(t));
            }
        }
        q.push_str(" fill(none)");
        Some(q)
    }

    fn flow_tag_column(p: Perspective, f: Field) -> Column {
        match f {
            Field::Host => Column::Tags(vec!["host"]),
            Field::Proto => Column::Tags(vec!["proto"]),
            Field::ServerPort => Column::Tags(vec!["server_port"]),
            Field::Role => Column::Const(p.prefix()),
            Field::PeerLocal => Column::Tags(vec![local_tag(p.other())]),
            f => end_tag(p, f).map_or(Column::Unknown, |t| Column::Tags(vec![t])),
        }
    }

    /// Tags a perspective groups by for `fields` (paired with the field they hold).
    pub fn flow_group_tags(p: Perspective, fields: &[Field]) -> Vec<(Field, &'static str)> {
        fields
            .iter()
            .filter_map(|f| match Self::flow_tag_column(p, *f) {
                Column::Tags(t) => t.first().map(|t| (*f, *t)),
                _ => None,
            })
            .collect()
    }

    /// The two statements (client-side ends, server-side ends) that sum
    /// `flow` by its tags; `None` for a perspective the filter excludes.
    pub fn flow_tag_statements(
        &self,
        range: TimeRange,
        buckets: &Buckets,
        group: &[Field],
        filter: Option<&Expr>,
    ) -> [Option<String>; 2] {
        [Perspective::Client, Perspective::Server].map(|p| {
            let pred = match filter {
                Some(e) => translate(&e.nnf(), &|f| Self::flow_tag_column(p, f)),
                None => Pred::True,
            };
            let (sent, recv) = match p {
                Perspective::Client => ("c2s", "s2c"),
                Perspective::Server => ("s2c", "c2s"),
            };
            let mut q = format!(
                "SELECT sum(\"bytes_{sent}\") AS \"sent_bytes\", sum(\"packets_{sent}\") AS \"sent_packets\", \
                 sum(\"bytes_{recv}\") AS \"recv_bytes\", sum(\"packets_{recv}\") AS \"recv_packets\", \
                 count(\"bytes_c2s\") AS \"records\" FROM {} WHERE {} AND {} = 'true'",
                self.from(&self.flow),
                time_clause(range),
                ident(local_tag(p)),
            );
            if !pred.and_to(&mut q)? {
                return None;
            }
            let _ = write!(q, " GROUP BY time({}s)", buckets.step / 1_000_000_000);
            for (_, t) in Self::flow_group_tags(p, group) {
                let _ = write!(q, ", {}", ident(t));
            }
            q.push_str(" fill(none)");
            Some(q)
        })
    }

    fn record_column(f: Field) -> Column {
        match f {
            Field::Host => Column::Tags(vec!["host"]),
            Field::Proto => Column::Tags(vec!["proto"]),
            Field::ServerPort => Column::Tags(vec!["server_port"]),
            Field::Container | Field::Process | Field::User => Column::Tags(vec![
                end_tag(Perspective::Client, f).unwrap_or("client_comm"),
                end_tag(Perspective::Server, f).unwrap_or("server_comm"),
            ]),
            Field::Addr | Field::LocalAddr | Field::PeerAddr => {
                Column::AddrFields(vec!["client_addr", "server_addr"])
            }
            _ => Column::Unknown,
        }
    }

    /// `SELECT <fields> FROM flow WHERE ... GROUP BY *`: every record that may
    /// match (end fields are looked for at either end), its tags once per
    /// series. `needed`: the fields a traffic question uses (only those
    /// fields are read); `None` reads all (the conversation list).
    pub fn records_statement(
        &self,
        range: TimeRange,
        filter: Option<&Expr>,
        needed: Option<FieldSet>,
    ) -> Option<String> {
        let pred = match filter {
            Some(e) => translate_superset_any_end(&e.nnf()),
            None => Pred::True,
        };
        let cols: Vec<String> = record_fields(needed).iter().map(|c| ident(c)).collect();
        let mut q = format!(
            "SELECT {} FROM {} WHERE {}",
            cols.join(", "),
            self.from(&self.flow),
            time_clause(range)
        );
        if !pred.and_to(&mut q)? {
            return None;
        }
        q.push_str(" GROUP BY *");
        Some(q)
    }

    /// `SELECT sum(bytes) FROM flow_rollup WHERE ... GROUP BY <tag>`: the values of
    /// a field seen in the range, with their traffic (for completion).
    pub fn values_statement(
        &self,
        range: TimeRange,
        field: Field,
    ) -> Option<(String, &'static str)> {
        let (m, tag) = match self.rollup_tag(field) {
            Some(t) => (&self.rollup, t),
            None => match field {
                Field::ServerPort => (&self.flow, "server_port"),
                _ => return None,
            },
        };
        let (sum, local) = if m == &self.rollup {
            ("bytes", "")
        } else {
            // Only traffic with a local end, as the rollup has.
            (
                "bytes_c2s",
                " AND (\"client_local\" = 'true' OR \"server_local\" = 'true')",
            )
        };
        Some((
            format!(
                "SELECT sum({}) AS \"bytes\" FROM {} WHERE {}{local} GROUP BY {}",
                ident(sum),
                self.from(m),
                time_clause(range),
                ident(tag)
            ),
            tag,
        ))
    }
}

/// Fields read from `flow` to rebuild a record.
pub const RECORD_FIELDS: &[&str] = &[
    "bytes_c2s",
    "bytes_s2c",
    "packets_c2s",
    "packets_s2c",
    "client_addr",
    "client_port",
    "client_pid",
    "client_uid",
    "client_exe",
    "client_container_id",
    "server_addr",
    "server_pid",
    "server_uid",
    "server_exe",
    "server_container_id",
    "first_seen_unix_ns",
    "last_seen_unix_ns",
    "tcp_flags",
    "client_nat_addr",
    "client_nat_port",
    "server_nat_addr",
    "server_nat_port",
    "nat",
    "client_name",
    "server_name",
    "rtt_min_us",
    "rtt_avg_us",
    "rtt_max_us",
    "rtt_samples",
    "connect_us",
    "connect_error",
    "retransmits_c2s",
    "retransmits_s2c",
    "resets_c2s",
    "resets_s2c",
    "dns_queries",
    "dns_responses",
    "dns_latency_avg_us",
    "dns_latency_max_us",
    "dns_latency_samples",
    "dns_nxdomain",
    "dns_servfail",
    "dns_refused",
    "dns_other_errors",
    "dns_unanswered",
];

/// The fields a records statement reads: all of them, or for a traffic
/// question the counters, addresses and ports and what `needed` names.
pub fn record_fields(needed: Option<FieldSet>) -> Vec<&'static str> {
    let Some(n) = needed else {
        return RECORD_FIELDS.to_vec();
    };
    let mut v = vec![
        "bytes_c2s",
        "bytes_s2c",
        "packets_c2s",
        "packets_s2c",
        "client_addr",
        "server_addr",
        "client_port",
    ];
    if n.contains(Field::Peer) {
        v.extend(["client_container_id", "server_container_id"]);
    }
    if n.contains(Field::Pid) {
        v.extend(["client_pid", "server_pid"]);
    }
    if n.contains(Field::Exe) {
        v.extend(["client_exe", "server_exe"]);
    }
    v
}

/// Tags read from `flow` to rebuild a record.
pub const RECORD_TAGS: &[&str] = &[
    "host",
    "proto",
    "client_comm",
    "client_container_name",
    "client_local",
    "client_user",
    "server_comm",
    "server_container_name",
    "server_local",
    "server_port",
    "server_user",
];

fn time_clause(r: TimeRange) -> String {
    format!("time >= {} AND time < {}", r.from, r.to)
}

/// A translated predicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pred {
    /// Always true (nothing to add).
    True,
    /// Never true (skip the statement).
    False,
    /// InfluxQL text.
    Text(String),
}

impl Pred {
    /// Appends ` AND (<pred>)`; false when the predicate is never true.
    fn and_to(&self, q: &mut String) -> Option<bool> {
        match self {
            Pred::True => Some(true),
            Pred::False => None,
            Pred::Text(t) => {
                let _ = write!(q, " AND ({t})");
                Some(true)
            }
        }
    }
}

fn and(parts: Vec<Pred>) -> Pred {
    let mut texts = Vec::new();
    for p in parts {
        match p {
            Pred::False => return Pred::False,
            Pred::True => {}
            Pred::Text(t) => texts.push(t),
        }
    }
    match texts.len() {
        0 => Pred::True,
        1 => Pred::Text(texts.swap_remove(0)),
        _ => Pred::Text(
            texts
                .iter()
                .map(|t| format!("({t})"))
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

fn or(parts: Vec<Pred>) -> Pred {
    let mut texts = Vec::new();
    for p in parts {
        match p {
            Pred::True => return Pred::True,
            Pred::False => {}
            Pred::Text(t) => texts.push(t),
        }
    }
    match texts.len() {
        0 => Pred::False,
        1 => Pred::Text(texts.swap_remove(0)),
        _ => Pred::Text(
            texts
                .iter()
                .map(|t| format!("({t})"))
                .collect::<Vec<_>>()
                .join(" OR "),
        ),
    }
}

/// The text of a value compared with a tag (numbers as their decimal text).
fn tag_text(l: &Literal) -> Option<String> {
    match l {
        Literal::Text(s) => Some(s.clone()),
        Literal::Num(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Translates an NNF expression; atoms that cannot be said become true.
fn translate(e: &Expr, col: &dyn Fn(Field) -> Column) -> Pred {
    match e {
        Expr::And(v) => and(v.iter().map(|e| translate(e, col)).collect()),
        Expr::Or(v) => or(v.iter().map(|e| translate(e, col)).collect()),
        Expr::Not(_) => Pred::True, // not in NNF: be safe
        Expr::Atom(a) => atom(a, &col(a.field)),
    }
}

fn atom(a: &Atom, c: &Column) -> Pred {
    match c {
        Column::Unknown => Pred::True,
        Column::Const(v) => {
            let hit = a.op == Op::Eq
                && a.values
                    .iter()
                    .any(|l| matches!(l, Literal::Text(t) if t == v));
            if a.op == Op::Eq && hit == a.negated {
                Pred::False
            } else {
                Pred::True
            }
        }
        Column::Tags(tags) => {
            let one = |tag: &str, l: &Literal| -> Option<String> {
                match a.op {
                    Op::Eq => {
                        let v = tag_text(l)?;
                        Some(format!(
                            "{} {} {}",
                            ident(tag),
                            if a.negated { "!=" } else { "=" },
                            string_lit(&v)
                        ))
                    }
                    Op::Contains => {
                        let Literal::Text(t) = l else { return None };
                        Some(format!(
                            "{} {} {}",
                            ident(tag),
                            if a.negated { "!~" } else { "=~" },
                            contains_regex(t)
                        ))
                    }
                    _ => None,
                }
            };
            let mut parts = Vec::new();
            for tag in tags {
                for l in &a.values {
                    match one(tag, l) {
                        Some(t) => parts.push(Pred::Text(t)),
                        None => return Pred::True,
                    }
                }
            }
            // Positive: any column equals any value. Negated: none does.
            if a.negated {
                and(parts)
            } else {
                or(parts)
            }
        }
        Column::AddrFields(fields) => {
            if a.negated || a.op != Op::Eq {
                return Pred::True;
            }
            let mut parts = Vec::new();
            for f in fields {
                for l in &a.values {
                    // Only IPv4 has one spelling; an IPv6 text could differ.
                    match l {
                        Literal::Addr(ip @ std::net::IpAddr::V4(_)) => parts.push(Pred::Text(
                            format!("{} = {}", ident(f), string_lit(&ip.to_string())),
                        )),
                        _ => return Pred::True,
                    }
                }
            }
            or(parts)
        }
    }
}

/// Translation for the records statement: end fields are looked for at either
/// end; negated end atoms are left out (some end may still differ).
fn translate_superset_any_end(e: &Expr) -> Pred {
    match e {
        Expr::And(v) => and(v.iter().map(translate_superset_any_end).collect()),
        Expr::Or(v) => or(v.iter().map(translate_superset_any_end).collect()),
        Expr::Not(_) => Pred::True,
        Expr::Atom(a) => {
            let end_field = matches!(
                a.field.scope(),
                crate::field::Scope::End | crate::field::Scope::Direction
            );
            if a.negated && end_field {
                return Pred::True;
            }
            if a.field.kind() == FieldKind::Address && a.field != Field::Addr && a.negated {
                return Pred::True;
            }
            atom(a, &InfluxSchema::record_column(a.field))
        }
    }
}

/// The fields a source must group by for a question: its dimensions plus
/// every field the filter names (so the filter can be checked on each row).
pub fn group_fields(dims: &[Dim], filter: Option<&Expr>) -> Vec<Field> {
    let mut out: Vec<Field> = dims.iter().map(|d| d.field()).collect();
    if let Some(f) = filter {
        for x in f.fields().iter() {
            if !out.contains(&x) {
                out.push(x);
            }
        }
    }
    out.retain(|f| *f != Field::Direction);
    out
}

#[cfg(test)]
mod tests;
