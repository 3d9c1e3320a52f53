//! The InfluxDB schema: which record values are tags (low-cardinality dimensions), which are fields, and
//! the configuration of measurement names and cardinality caps. docs/schema.md ("InfluxDB") is the contract.
//!
//! Length: about 450 lines of code (three measurements' tags, each with its doc); the rest of the file is its
//! unit tests.

use std::collections::BTreeMap;

use flowlens_correlator::record::{ConversationRecord, Endpoint, ProcessAttribution};
use serde::{Deserialize, Serialize};

/// Default distinct values per tag key and interval before folding into `other` (every capped key, `peer`
/// included: at 200 the rollup's peers already folded on a small host; see docs/schema.md for the bound).
pub const DEFAULT_TAG_CAP: usize = 1000;

/// Measurement names and cardinality caps (`[influx.schema]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaConfig {
    /// Measurement of the per-conversation points.
    pub flow_measurement: String,
    /// Measurement of the per-process rollup points.
    pub rollup_measurement: String,
    /// Measurement of the per-interface points.
    pub iface_measurement: String,
    /// Distinct values per tag key per interval; the rest fold into `other`.
    pub tag_cap: usize,
    /// Per-tag overrides of `tag_cap`, by tag key (e.g. `peer = 200`).
    pub tag_caps: BTreeMap<String, usize>,
}

impl Default for SchemaConfig {
    fn default() -> Self {
        Self {
            flow_measurement: "flow".to_owned(),
            rollup_measurement: "flow_rollup".to_owned(),
            iface_measurement: "flow_iface".to_owned(),
            tag_cap: DEFAULT_TAG_CAP,
            tag_caps: BTreeMap::new(),
        }
    }
}

/// A schema configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchemaError {
    /// A measurement name is empty (or only characters line protocol cannot carry).
    #[error("measurement name {0:?} is empty or unusable")]
    BadMeasurement(String),
    /// Two measurements have the same name.
    #[error("the flow, rollup and iface measurements must differ (two are {0:?})")]
    SameMeasurement(String),
    /// `tag_caps` names a key that is not a capped tag.
    #[error("tag_caps: {0:?} is not a capped tag key (known: {known})", known = capped_tag_keys().join(", "))]
    UnknownTag(String),
}

impl SchemaConfig {
    /// Checks names and cap keys; call once when loading the config.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let names = [
            &self.flow_measurement,
            &self.rollup_measurement,
            &self.iface_measurement,
        ];
        for m in names {
            if !usable_measurement(m) {
                return Err(SchemaError::BadMeasurement(m.clone()));
            }
        }
        for (i, a) in names.iter().enumerate() {
            if names[i + 1..].contains(a) {
                return Err(SchemaError::SameMeasurement((*a).clone()));
            }
        }
        let known = capped_tag_keys();
        match self.tag_caps.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(SchemaError::UnknownTag(k.clone())),
            None => Ok(()),
        }
    }

    /// The cap of one tag key.
    pub fn cap_for(&self, tag: &str) -> usize {
        self.tag_caps.get(tag).copied().unwrap_or(self.tag_cap)
    }
}

/// A measurement name survives escaping (trailing backslashes are dropped) and is not a comment line.
pub(crate) fn usable_measurement(m: &str) -> bool {
    let m = m.trim_end_matches('\\');
    !m.is_empty() && !m.starts_with('#')
}

macro_rules! tag_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $var:ident = $key:literal, capped = $capped:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vdoc])* $var,)+ }

        impl $name {
            /// Every tag, in line-protocol order (sorted by key).
            pub const ALL: &'static [$name] = &[$($name::$var,)+];
            /// Number of tags.
            pub const COUNT: usize = Self::ALL.len();

            /// The tag key.
            pub const fn key(self) -> &'static str {
                match self { $($name::$var => $key,)+ }
            }

            /// Whether the tag is subject to the cardinality cap (the others have a fixed tiny domain).
            pub const fn capped(self) -> bool {
                match self { $($name::$var => $capped,)+ }
            }
        }
    };
}

tag_enum! {
    /// Tags of the `flow` measurement.
    FlowTag {
        /// `comm` of a local client.
        ClientComm = "client_comm", capped = true;
        /// Container name (short id without a name; `host` on the host) of a local client.
        ClientContainerName = "client_container_name", capped = true;
        /// `true`/`false`: a socket on this host owns the client end.
        ClientLocal = "client_local", capped = false;
        /// User name (uid when unresolvable) of a local client.
        ClientUser = "client_user", capped = true;
        /// Collector host name.
        Host = "host", capped = true;
        /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
        Proto = "proto", capped = true;
        /// `comm` of a local server.
        ServerComm = "server_comm", capped = true;
        /// Container name of a local server.
        ServerContainerName = "server_container_name", capped = true;
        /// `true`/`false`: a socket on this host owns the server end.
        ServerLocal = "server_local", capped = false;
        /// Server port (absent for ICMP, whose "port" is the echo id, and for port 0).
        ServerPort = "server_port", capped = true;
        /// User name of a local server.
        ServerUser = "server_user", capped = true;
    }
}

tag_enum! {
    /// Tags of the `flow_rollup` measurement.
    RollupTag {
        /// `comm` of the local end.
        Comm = "comm", capped = true;
        /// Container name of the local end (short id without a name; `host` on the host).
        Container = "container", capped = true;
        /// `out`: sent by the local end; `in`: received by it.
        Direction = "direction", capped = false;
        /// Collector host name.
        Host = "host", capped = true;
        /// The other end: its container name when it is a local container, else its address.
        Peer = "peer", capped = true;
        /// `true` when a local process owns the other end, `false` for a remote end (`WHERE "peer_local" =
        /// 'false'` selects the remote endpoints).
        PeerLocal = "peer_local", capped = false;
        /// Protocol, as in `flow`.
        Proto = "proto", capped = true;
        /// `client` when the local end started the conversation, else `server`.
        Role = "role", capped = false;
        /// The conversation's server port, as in `flow` (the local service port when `role` is `server`, the
        /// remote service's when `client`); shares `flow`'s cap.
        ServerPort = "server_port", capped = true;
        /// User name (uid when unresolvable) of the local end. Not `user`: USER is an InfluxQL keyword, so
        /// `GROUP BY user` would not parse.
        Username = "username", capped = true;
    }
}

tag_enum! {
    /// Tags of the `flow_iface` measurement.
    IfaceTag {
        /// Collector host name.
        Host = "host", capped = true;
        /// An interface that saw the conversation (`if<N>` when the name is unknown).
        Iface = "iface", capped = true;
        /// Protocol, as in `flow`.
        Proto = "proto", capped = true;
    }
}

/// Field keys of `flow` (integers end in `i` on the wire; the rest are strings).
pub const FLOW_FIELDS: &[&str] = &[
    "bytes_c2s",
    "bytes_s2c",
    "packets_c2s",
    "packets_s2c",
    "client_addr",
    "client_port",
    "client_pid",
    "client_uid",
    "client_gid",
    "client_exe",
    "client_cgroup",
    "client_container_id",
    "client_container_runtime",
    "client_container_image",
    "client_pod_uid",
    "server_addr",
    "server_pid",
    "server_uid",
    "server_gid",
    "server_exe",
    "server_cgroup",
    "server_container_id",
    "server_container_runtime",
    "server_container_image",
    "server_pod_uid",
    "client_nat_addr",
    "client_nat_port",
    "server_nat_addr",
    "server_nat_port",
    "client_name",
    "server_name",
    "nat",
    "client_evidence",
    "duration_ms",
    "first_seen_unix_ns",
    "last_seen_unix_ns",
    "tcp_flags",
    "tcp_flags_text",
    "ifaces",
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
    "folded_tags",
];

/// Field keys of `flow_rollup`.
pub const ROLLUP_FIELDS: &[&str] = &[
    "bytes",
    "packets",
    "conversations",
    "retransmits",
    "resets",
    "rtt_min_us",
    "rtt_max_us",
    "rtt_sum_us",
    "rtt_samples",
    "connects",
    "connect_sum_us",
    "connect_max_us",
    "connect_errors",
    "dns_queries",
    "dns_responses",
    "dns_latency_sum_us",
    "dns_latency_samples",
    "dns_latency_max_us",
    "dns_nxdomain",
    "dns_servfail",
    "dns_refused",
    "dns_other_errors",
    "dns_unanswered",
    "peer_name",
];

/// Field keys of `flow_iface`.
pub const IFACE_FIELDS: &[&str] = &["bytes", "packets", "conversations"];

/// Keys of every capped tag, sorted and deduplicated (`host`, `proto` and `server_port` are shared by the
/// measurements that have them).
pub fn capped_tag_keys() -> Vec<&'static str> {
    let flow = FlowTag::ALL.iter().filter(|t| t.capped()).map(|t| t.key());
    let rollup = RollupTag::ALL
        .iter()
        .filter(|t| t.capped())
        .map(|t| t.key());
    let iface = IfaceTag::ALL.iter().filter(|t| t.capped()).map(|t| t.key());
    let mut keys: Vec<&'static str> = flow.chain(rollup).chain(iface).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Field keys of one end of a `flow` point.
pub(crate) struct EndFields {
    pub addr: &'static str,
    /// `None` for the server: its port is a tag.
    pub port: Option<&'static str>,
    /// The address the other end sees (NAT), when translated.
    pub nat_addr: &'static str,
    /// The port the other end sees (NAT), when translated.
    pub nat_port: &'static str,
    /// The name DNS gave the address, when known.
    pub name: &'static str,
    pub pid: &'static str,
    pub uid: &'static str,
    pub gid: &'static str,
    pub exe: &'static str,
    pub cgroup: &'static str,
    pub container_id: &'static str,
    pub container_runtime: &'static str,
    pub container_image: &'static str,
    pub pod_uid: &'static str,
}

/// Field keys of the client end.
pub(crate) const CLIENT_FIELDS: EndFields = EndFields {
    addr: "client_addr",
    port: Some("client_port"),
    nat_addr: "client_nat_addr",
    nat_port: "client_nat_port",
    name: "client_name",
    pid: "client_pid",
    uid: "client_uid",
    gid: "client_gid",
    exe: "client_exe",
    cgroup: "client_cgroup",
    container_id: "client_container_id",
    container_runtime: "client_container_runtime",
    container_image: "client_container_image",
    pod_uid: "client_pod_uid",
};

/// Field keys of the server end.
pub(crate) const SERVER_FIELDS: EndFields = EndFields {
    addr: "server_addr",
    port: None,
    nat_addr: "server_nat_addr",
    nat_port: "server_nat_port",
    name: "server_name",
    pid: "server_pid",
    uid: "server_uid",
    gid: "server_gid",
    exe: "server_exe",
    cgroup: "server_cgroup",
    container_id: "server_container_id",
    container_runtime: "server_container_runtime",
    container_image: "server_container_image",
    pod_uid: "server_pod_uid",
};

/// A tag value before escaping: borrowed text, or a number written without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TagValue<'a> {
    /// Text (omitted from the line when empty).
    Str(&'a str),
    /// A port or uid.
    Num(u32),
}

impl TagValue<'_> {
    /// Calls `f` with the value as text (numbers are formatted on the stack).
    pub fn with_str<R>(self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            TagValue::Str(s) => f(s),
            TagValue::Num(n) => f(itoa::Buffer::new().format(n)),
        }
    }
}

/// Length of a short container id (as `docker ps` shows it).
const SHORT_ID: usize = 12;

/// How a local end's container is shown in tags: its name, else its short id, else `host`.
pub(crate) fn container_label(p: &ProcessAttribution) -> &str {
    match (&p.container_id, &p.container_name) {
        (None, _) => "host",
        (Some(_), Some(name)) if !name.is_empty() => name,
        (Some(id), _) => id.get(..SHORT_ID).unwrap_or(id),
    }
}

/// How a local end's user is shown in tags: the name, else the uid.
pub(crate) fn user_label(p: &ProcessAttribution) -> TagValue<'_> {
    match &p.user {
        Some(u) if !u.is_empty() => TagValue::Str(u),
        _ => TagValue::Num(p.uid),
    }
}

/// Whether the protocol's `port` is an ICMP echo identifier rather than a service port.
fn is_icmp(proto: &str) -> bool {
    proto == "icmp" || proto == "icmpv6"
}

/// The `server_port` tag: absent for ICMP (the "port" is the echo id) and for port 0.
fn server_port(r: &ConversationRecord) -> Option<TagValue<'static>> {
    (!is_icmp(&r.proto) && r.server.port != 0).then_some(TagValue::Num(r.server.port.into()))
}

fn bool_label(b: bool) -> TagValue<'static> {
    TagValue::Str(if b { "true" } else { "false" })
}

/// The `flow` tag values of a record, indexed like `FlowTag::ALL`; `None` = tag absent (before capping).
pub(crate) fn flow_tags(r: &ConversationRecord) -> [Option<TagValue<'_>>; FlowTag::COUNT] {
    let (c, s) = (r.client.process.as_ref(), r.server.process.as_ref());
    fn comm(p: Option<&ProcessAttribution>) -> Option<TagValue<'_>> {
        p.map(|p| TagValue::Str(&p.comm))
    }
    fn container(p: Option<&ProcessAttribution>) -> Option<TagValue<'_>> {
        p.map(|p| TagValue::Str(container_label(p)))
    }
    let port = server_port(r);
    let mut tags = [None; FlowTag::COUNT];
    for (slot, tag) in tags.iter_mut().zip(FlowTag::ALL) {
        *slot = match tag {
            FlowTag::ClientComm => comm(c),
            FlowTag::ClientContainerName => container(c),
            FlowTag::ClientLocal => Some(bool_label(c.is_some())),
            FlowTag::ClientUser => c.map(user_label),
            FlowTag::Host => Some(TagValue::Str(&r.host)),
            FlowTag::Proto => Some(TagValue::Str(&r.proto)),
            FlowTag::ServerComm => comm(s),
            FlowTag::ServerContainerName => container(s),
            FlowTag::ServerLocal => Some(bool_label(s.is_some())),
            FlowTag::ServerPort => port,
            FlowTag::ServerUser => s.map(user_label),
        };
    }
    tags
}

/// The rollup `peer` of a local end: the other end's container label when it is a local container, else its address.
pub(crate) fn peer_label(other: &Endpoint) -> &str {
    match &other.process {
        Some(p) if p.container_id.is_some() => container_label(p),
        _ => &other.addr,
    }
}

/// One local end of a conversation, as the rollup sees it.
pub(crate) struct LocalEnd<'a> {
    /// The owning process.
    pub process: &'a ProcessAttribution,
    /// The other end.
    pub other: &'a Endpoint,
    /// `client` or `server`.
    pub role: &'static str,
    /// Bytes and packets sent by this end.
    pub sent: (u64, u64),
    /// Bytes and packets received by this end.
    pub received: (u64, u64),
}

/// The attributed ends of a record (0, 1 or 2), client first.
pub(crate) fn local_ends(r: &ConversationRecord) -> impl Iterator<Item = LocalEnd<'_>> {
    let c2s = (r.bytes_c2s, r.packets_c2s);
    let s2c = (r.bytes_s2c, r.packets_s2c);
    let client = r.client.process.as_ref().map(|process| LocalEnd {
        process,
        other: &r.server,
        role: "client",
        sent: c2s,
        received: s2c,
    });
    let server = r.server.process.as_ref().map(|process| LocalEnd {
        process,
        other: &r.client,
        role: "server",
        sent: s2c,
        received: c2s,
    });
    client.into_iter().chain(server)
}

/// The `flow_rollup` tag values of a local end, indexed like `RollupTag::ALL`; `direction` is left `None`.
pub(crate) fn rollup_tags<'a>(
    r: &'a ConversationRecord,
    end: &LocalEnd<'a>,
) -> [Option<TagValue<'a>>; RollupTag::COUNT] {
    let p = end.process;
    let mut tags = [None; RollupTag::COUNT];
    for (slot, tag) in tags.iter_mut().zip(RollupTag::ALL) {
        *slot = match tag {
            RollupTag::Comm => Some(TagValue::Str(&p.comm)),
            RollupTag::Container => Some(TagValue::Str(container_label(p))),
            RollupTag::Direction => None,
            RollupTag::Host => Some(TagValue::Str(&r.host)),
            RollupTag::Peer => Some(TagValue::Str(peer_label(end.other))),
            RollupTag::PeerLocal => Some(bool_label(end.other.process.is_some())),
            RollupTag::Proto => Some(TagValue::Str(&r.proto)),
            RollupTag::Role => Some(TagValue::Str(end.role)),
            RollupTag::ServerPort => server_port(r),
            RollupTag::Username => Some(user_label(p)),
        };
    }
    tags
}

/// The `flow_iface` tag values of a record on one of its interfaces, indexed like `IfaceTag::ALL`.
pub(crate) fn iface_tags<'a>(
    r: &'a ConversationRecord,
    iface: &'a str,
) -> [Option<TagValue<'a>>; IfaceTag::COUNT] {
    let mut tags = [None; IfaceTag::COUNT];
    for (slot, tag) in tags.iter_mut().zip(IfaceTag::ALL) {
        *slot = match tag {
            IfaceTag::Host => Some(TagValue::Str(&r.host)),
            IfaceTag::Iface => Some(TagValue::Str(iface)),
            IfaceTag::Proto => Some(TagValue::Str(&r.proto)),
        };
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_sorted_by_key() {
        let flow: Vec<_> = FlowTag::ALL.iter().map(|t| t.key()).collect();
        let rollup: Vec<_> = RollupTag::ALL.iter().map(|t| t.key()).collect();
        let iface: Vec<_> = IfaceTag::ALL.iter().map(|t| t.key()).collect();
        for keys in [flow, rollup, iface] {
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        }
    }

    #[test]
    fn no_name_is_both_tag_and_field_anywhere() {
        let tags: Vec<&str> = FlowTag::ALL
            .iter()
            .map(|t| t.key())
            .chain(RollupTag::ALL.iter().map(|t| t.key()))
            .chain(IfaceTag::ALL.iter().map(|t| t.key()))
            .collect();
        for fields in [FLOW_FIELDS, ROLLUP_FIELDS, IFACE_FIELDS] {
            for t in &tags {
                assert!(!fields.contains(t), "{t} is both a tag and a field");
            }
            let mut unique = fields.to_vec();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), fields.len(), "duplicate field key");
        }
    }

    /// Every key a user types unquoted must parse: none may be an InfluxQL keyword (the rollup's `user`
    /// was; `GROUP BY user` failed with "found USER, expected identifier").
    #[test]
    fn no_key_is_an_influxql_keyword() {
        // InfluxQL 1.x keywords (influxql/scanner token list).
        const KEYWORDS: &[&str] = &[
            "all",
            "alter",
            "analyze",
            "any",
            "as",
            "asc",
            "begin",
            "by",
            "cardinality",
            "create",
            "continuous",
            "database",
            "databases",
            "default",
            "delete",
            "desc",
            "destinations",
            "diagnostics",
            "distinct",
            "drop",
            "duration",
            "end",
            "every",
            "exact",
            "explain",
            "field",
            "for",
            "from",
            "grant",
            "grants",
            "group",
            "groups",
            "in",
            "inf",
            "insert",
            "into",
            "key",
            "keys",
            "kill",
            "limit",
            "measurement",
            "measurements",
            "name",
            "offset",
            "on",
            "order",
            "password",
            "policy",
            "policies",
            "privileges",
            "queries",
            "query",
            "read",
            "replication",
            "resample",
            "retention",
            "revoke",
            "select",
            "series",
            "set",
            "shard",
            "shards",
            "slimit",
            "soffset",
            "stats",
            "subscription",
            "subscriptions",
            "tag",
            "to",
            "user",
            "users",
            "values",
            "where",
            "with",
            "write",
            "time",
        ];
        let keys = FlowTag::ALL
            .iter()
            .map(|t| t.key())
            .chain(RollupTag::ALL.iter().map(|t| t.key()))
            .chain(IfaceTag::ALL.iter().map(|t| t.key()))
            .chain(FLOW_FIELDS.iter().copied())
            .chain(ROLLUP_FIELDS.iter().copied());
        for k in keys {
            assert!(!KEYWORDS.contains(&k), "{k} is an InfluxQL keyword");
        }
    }

    #[test]
    fn config_defaults_and_toml() {
        let c = SchemaConfig::default();
        assert_eq!((c.cap_for("peer"), c.cap_for("client_comm")), (1000, 1000));
        assert_eq!(c.validate(), Ok(()));
        let t: SchemaConfig =
            toml::from_str("tag_cap = 50\n[tag_caps]\nserver_port = 20\n").unwrap();
        assert_eq!(
            (t.flow_measurement.as_str(), t.cap_for("server_port")),
            ("flow", 20)
        );
        assert_eq!(t.iface_measurement, "flow_iface");
        assert_eq!(t.cap_for("peer"), 50, "keys without an entry use tag_cap");
        assert!(toml::from_str::<SchemaConfig>("tag_cpa = 1").is_err());
        let bad = |f: fn(&mut SchemaConfig)| {
            let mut c = SchemaConfig::default();
            f(&mut c);
            c.validate()
        };
        assert!(matches!(
            bad(|c| c.flow_measurement = "\\".into()),
            Err(SchemaError::BadMeasurement(_))
        ));
        assert!(matches!(
            bad(|c| c.rollup_measurement = "flow".into()),
            Err(SchemaError::SameMeasurement(_))
        ));
        assert!(matches!(
            bad(|c| c.iface_measurement = "flow_rollup".into()),
            Err(SchemaError::SameMeasurement(_))
        ));
        let unknown = bad(|c| _ = c.tag_caps.insert("client_pid".into(), 5));
        assert!(matches!(unknown, Err(SchemaError::UnknownTag(_))));
    }
}
