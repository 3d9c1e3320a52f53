//! The two grains every question is answered from, as borrowed views that
//! both stores produce:
//! - [`Conv`]: one conversation record (one conversation, one export interval),
//!   with both ends' attribution — the `flow` measurement's grain;
//! - [`End`]: the traffic of one local end, sent and received — the
//!   `flow_rollup` measurement's grain (a rollup point is a sum of ends).
//!
//! Labels follow docs/schema.md (and are normalized as InfluxDB stores tag
//! values) so that the embedded store and InfluxDB give the same answers.

use std::{borrow::Cow, net::IpAddr};

use flowlens_correlator::record::{
    ConversationRecord, ConversationSignals, Endpoint, ProcessAttribution,
};
use serde::Serialize;

/// Length of a short container id (as `docker ps` shows it).
const SHORT_ID: usize = 12;

/// Which side of its conversation a local end is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Started the conversation.
    Client,
    /// Answered.
    Server,
}

impl Role {
    /// `client` / `server`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// Parses `client` / `server`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "client" => Some(Role::Client),
            "server" => Some(Role::Server),
            _ => None,
        }
    }
}

/// Bytes and packets of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// L3 bytes.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
}

/// A tag value as InfluxDB stores it: tabs and line breaks become spaces,
/// trailing backslashes are dropped (docs/schema.md, "Escaping"); empty means absent.
pub fn tag_label(s: &str) -> Cow<'_, str> {
    let t = s.trim_end_matches('\\');
    if t.bytes().any(|b| matches!(b, b'\n' | b'\r' | b'\t')) {
        Cow::Owned(t.replace(['\n', '\r', '\t'], " "))
    } else {
        Cow::Borrowed(t)
    }
}

/// A string field as InfluxDB stores it: line breaks become spaces.
pub fn field_text(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| matches!(b, b'\n' | b'\r')) {
        Cow::Owned(s.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(s)
    }
}

/// How a local end's container is shown: its name, else its short id, else `host`.
pub fn container_label(p: &ProcessAttribution) -> &str {
    match (&p.container_id, &p.container_name) {
        (None, _) => "host",
        (Some(_), Some(name)) if !name.is_empty() => name,
        (Some(id), _) => id.get(..SHORT_ID).unwrap_or(id),
    }
}

/// How a local end's user is shown: the name, else the uid.
pub fn user_label(p: &ProcessAttribution) -> Cow<'_, str> {
    match &p.user {
        Some(u) if !u.is_empty() => Cow::Borrowed(u),
        _ => Cow::Owned(p.uid.to_string()),
    }
}

/// Whether the protocol's port is an ICMP echo identifier.
pub fn is_icmp(proto: &str) -> bool {
    proto == "icmp" || proto == "icmpv6"
}

/// The owner of a local end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    /// Process id.
    pub pid: u32,
    /// Real uid.
    pub uid: u32,
    /// Command name (label).
    pub comm: &'a str,
    /// User label (name, else uid).
    pub user: &'a str,
    /// Container label (name, short id, or `host`).
    pub container: &'a str,
    /// Full container id, when in a container.
    pub container_id: Option<&'a str>,
    /// Executable path.
    pub exe: Option<&'a str>,
}

/// One end of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side<'a> {
    /// Address.
    pub addr: IpAddr,
    /// The address as text (the record's spelling).
    pub addr_text: &'a str,
    /// Port (ICMP: echo id).
    pub port: u16,
    /// The owner, for a local end.
    pub owner: Option<Owner<'a>>,
    /// The address the other end sees for this one when NAT translated it.
    pub nat_addr: Option<&'a str>,
    /// The port the other end sees for this one when NAT translated it.
    pub nat_port: Option<u16>,
    /// The end's DNS name, when this host's DNS traffic gave one (docs/schema.md, `name`).
    pub name: Option<&'a str>,
}

impl<'a> Side<'a> {
    /// The rollup's `peer` of the *other* end: this side's container label
    /// when it is a local container, else its address.
    pub fn as_peer(&self) -> &'a str {
        match &self.owner {
            Some(o) if o.container_id.is_some() => o.container,
            _ => self.addr_text,
        }
    }
}

/// One conversation record (one conversation, one export interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv<'a> {
    /// Time of the record (interval end), Unix ns.
    pub ts: i64,
    /// Host label.
    pub host: &'a str,
    /// Protocol label.
    pub proto: &'a str,
    /// Initiator.
    pub client: Side<'a>,
    /// Responder.
    pub server: Side<'a>,
    /// Client -> server.
    pub c2s: Counts,
    /// Server -> client.
    pub s2c: Counts,
    /// First packet, Unix ns.
    pub first_seen: i64,
    /// Last packet, Unix ns.
    pub last_seen: i64,
    /// OR of TCP flags.
    pub tcp_flags: u8,
    /// `snat`, `dnat`, `snat+dnat` or `unjoined` (docs/schema.md).
    pub nat: Option<&'a str>,
    /// The record's golden signals.
    pub signals: ConvSignals,
}

/// The kinds of failed connect the record knows (docs/schema.md, `connect_error`); anything else reads `other`.
pub const CONNECT_ERRORS: &[&str] = &["refused", "timeout", "unreachable", "reset"];

/// A record's `connect_error` as a static label.
pub fn connect_error_label(s: &str) -> &'static str {
    CONNECT_ERRORS
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or("other")
}

/// The golden signals of one conversation record (docs/schema.md), as the explorer reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvSignals {
    /// Smallest RTT sample, µs.
    pub rtt_min_us: Option<u64>,
    /// Mean RTT, µs.
    pub rtt_avg_us: Option<u64>,
    /// Largest RTT sample, µs.
    pub rtt_max_us: Option<u64>,
    /// RTT samples.
    pub rtt_samples: u64,
    /// SYN to established, µs.
    pub connect_us: Option<u64>,
    /// Failed connect: `refused`, `timeout`, `unreachable`, `reset` (or `other`).
    pub connect_error: Option<&'static str>,
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
    /// Mean DNS latency, µs.
    pub dns_latency_avg_us: Option<u64>,
    /// Largest DNS latency, µs.
    pub dns_latency_max_us: Option<u64>,
    /// Answered queries behind the DNS latencies.
    pub dns_latency_samples: u64,
    /// Error rcodes and unanswered queries.
    pub dns_errors: u64,
}

impl ConvSignals {
    /// The signals of a JSON record.
    pub fn from_record(s: &ConversationSignals) -> Self {
        ConvSignals {
            rtt_min_us: s.rtt_min_us,
            rtt_avg_us: s.rtt_avg_us,
            rtt_max_us: s.rtt_max_us,
            rtt_samples: s.rtt_samples,
            connect_us: s.connect_us,
            connect_error: s.connect_error.as_deref().map(connect_error_label),
            retransmits_c2s: s.retransmits_c2s,
            retransmits_s2c: s.retransmits_s2c,
            resets_c2s: s.resets_c2s,
            resets_s2c: s.resets_s2c,
            dns_queries: s.dns_queries,
            dns_responses: s.dns_responses,
            dns_latency_avg_us: s.dns_latency_avg_us,
            dns_latency_max_us: s.dns_latency_max_us,
            dns_latency_samples: s.dns_latency_samples,
            dns_errors: s.dns_errors(),
        }
    }

    /// Whether the record had no signal at all.
    pub fn is_empty(&self) -> bool {
        *self == ConvSignals::default()
    }
}

impl<'a> Conv<'a> {
    /// The server port as the schema shows it: absent for ICMP and for 0.
    pub fn server_port(&self) -> Option<u16> {
        (!is_icmp(self.proto) && self.server.port != 0).then_some(self.server.port)
    }

    /// The local ends of the record (0, 1 or 2), client first.
    pub fn ends(&self) -> impl Iterator<Item = End<'a>> + '_ {
        let client = self.client.owner.map(|o| self.end(o, Role::Client));
        let server = self.server.owner.map(|o| self.end(o, Role::Server));
        client.into_iter().chain(server)
    }

    fn end(&self, o: Owner<'a>, role: Role) -> End<'a> {
        let (me, other, sent, received) = match role {
            Role::Client => (&self.client, &self.server, self.c2s, self.s2c),
            Role::Server => (&self.server, &self.client, self.s2c, self.c2s),
        };
        End {
            ts: self.ts,
            host: self.host,
            proto: self.proto,
            container: o.container,
            process: o.comm,
            user: o.user,
            role,
            peer: other.as_peer(),
            peer_local: Some(other.owner.is_some()),
            server_port: self.server_port(),
            raw: Some(EndRaw {
                local_addr: me.addr,
                local_port: me.port,
                peer_addr: other.addr,
                peer_port: other.port,
                pid: o.pid,
                exe: o.exe,
            }),
            sent,
            received,
            conversations: 1,
        }
    }
}

/// What only a conversation record knows about an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndRaw<'a> {
    /// This end's address.
    pub local_addr: IpAddr,
    /// This end's port.
    pub local_port: u16,
    /// The other end's address.
    pub peer_addr: IpAddr,
    /// The other end's port.
    pub peer_port: u16,
    /// Process id.
    pub pid: u32,
    /// Executable.
    pub exe: Option<&'a str>,
}

/// The traffic of one local end (or a sum of ends with equal labels).
/// A source that does not have a label leaves it empty; the planner only
/// sends it questions that do not need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End<'a> {
    /// Time (interval end, or bucket start for pre-aggregated rows), Unix ns.
    pub ts: i64,
    /// Host label.
    pub host: &'a str,
    /// Protocol label.
    pub proto: &'a str,
    /// Container label.
    pub container: &'a str,
    /// Command name.
    pub process: &'a str,
    /// User label.
    pub user: &'a str,
    /// Client or server.
    pub role: Role,
    /// The other end: container label when a local container, else its address.
    pub peer: &'a str,
    /// Whether a local process owns the other end (`None`: the source does not say).
    pub peer_local: Option<bool>,
    /// Server port (absent for ICMP and port 0).
    pub server_port: Option<u16>,
    /// Address-level detail (conversation records only).
    pub raw: Option<EndRaw<'a>>,
    /// Sent by this end.
    pub sent: Counts,
    /// Received by this end.
    pub received: Counts,
    /// Conversation records summed into this row.
    pub conversations: u64,
}

/// An owned conversation record with labels applied: what InfluxDB gives
/// back, and what tests and the embedded store build from records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedConv {
    /// Record time, Unix ns.
    pub ts: i64,
    /// Host label.
    pub host: String,
    /// Protocol label.
    pub proto: String,
    /// Initiator.
    pub client: OwnedSide,
    /// Responder.
    pub server: OwnedSide,
    /// Client -> server.
    pub c2s: Counts,
    /// Server -> client.
    pub s2c: Counts,
    /// First packet, Unix ns.
    pub first_seen: i64,
    /// Last packet, Unix ns.
    pub last_seen: i64,
    /// TCP flags.
    pub tcp_flags: u8,
    /// NAT kind.
    pub nat: Option<String>,
    /// Golden signals.
    pub signals: ConvSignals,
}

/// An owned [`Side`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSide {
    /// Address.
    pub addr: IpAddr,
    /// Address text.
    pub addr_text: String,
    /// Port.
    pub port: u16,
    /// Owner.
    pub owner: Option<OwnedOwner>,
    /// NAT address the other end sees.
    pub nat_addr: Option<String>,
    /// NAT port the other end sees.
    pub nat_port: Option<u16>,
    /// DNS name.
    pub name: Option<String>,
}

/// An owned [`Owner`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedOwner {
    /// Process id.
    pub pid: u32,
    /// Uid.
    pub uid: u32,
    /// Command name label.
    pub comm: String,
    /// User label.
    pub user: String,
    /// Container label.
    pub container: String,
    /// Container id.
    pub container_id: Option<String>,
    /// Executable.
    pub exe: Option<String>,
}

impl OwnedOwner {
    /// The owner of a record's local end, labelled.
    pub fn from_attribution(p: &ProcessAttribution) -> Self {
        OwnedOwner {
            pid: p.pid,
            uid: p.uid,
            comm: tag_label(&p.comm).into_owned(),
            user: tag_label(&user_label(p)).into_owned(),
            container: tag_label(container_label(p)).into_owned(),
            container_id: p
                .container_id
                .as_deref()
                .map(|s| field_text(s).into_owned()),
            exe: p.exe.as_deref().map(|s| field_text(s).into_owned()),
        }
    }

    fn view(&self) -> Owner<'_> {
        Owner {
            pid: self.pid,
            uid: self.uid,
            comm: &self.comm,
            user: &self.user,
            container: &self.container,
            container_id: self.container_id.as_deref(),
            exe: self.exe.as_deref(),
        }
    }
}

fn parse_addr(s: &str) -> IpAddr {
    s.parse::<IpAddr>()
        .map(|a| a.to_canonical())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

impl OwnedSide {
    fn from_endpoint(e: &Endpoint) -> Self {
        OwnedSide {
            addr: parse_addr(&e.addr),
            addr_text: field_text(&e.addr).into_owned(),
            port: e.port,
            owner: e.process.as_ref().map(OwnedOwner::from_attribution),
            nat_addr: e.nat_addr.as_deref().map(|s| field_text(s).into_owned()),
            nat_port: e.nat_port,
            name: e
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|s| field_text(s).into_owned()),
        }
    }

    fn view(&self) -> Side<'_> {
        Side {
            addr: self.addr,
            addr_text: &self.addr_text,
            port: self.port,
            owner: self.owner.as_ref().map(OwnedOwner::view),
            nat_addr: self.nat_addr.as_deref(),
            nat_port: self.nat_port,
            name: self.name.as_deref(),
        }
    }
}

impl OwnedConv {
    /// A record with the schema's labels applied.
    pub fn from_record(r: &ConversationRecord) -> Self {
        OwnedConv {
            ts: r.ts_unix_ns,
            host: tag_label(&r.host).into_owned(),
            proto: tag_label(&r.proto).into_owned(),
            client: OwnedSide::from_endpoint(&r.client),
            server: OwnedSide::from_endpoint(&r.server),
            c2s: Counts {
                bytes: r.bytes_c2s,
                packets: r.packets_c2s,
            },
            s2c: Counts {
                bytes: r.bytes_s2c,
                packets: r.packets_s2c,
            },
            first_seen: r.first_seen_unix_ns,
            last_seen: r.last_seen_unix_ns,
            tcp_flags: r.tcp_flags,
            nat: r.nat.as_deref().map(|s| field_text(s).into_owned()),
            signals: ConvSignals::from_record(&r.signals),
        }
    }

    /// The borrowed view.
    pub fn view(&self) -> Conv<'_> {
        Conv {
            ts: self.ts,
            host: &self.host,
            proto: &self.proto,
            client: self.client.view(),
            server: self.server.view(),
            c2s: self.c2s,
            s2c: self.s2c,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            tcp_flags: self.tcp_flags,
            nat: self.nat.as_deref(),
            signals: self.signals,
        }
    }
}

/// Parses an address as records spell it (IPv4-mapped shown as IPv4); the
/// unspecified address when it is not one.
pub fn addr_of(s: &str) -> IpAddr {
    parse_addr(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlens_correlator::record::format_rfc3339;

    fn owner(comm: &str, container: Option<(&str, Option<&str>)>) -> ProcessAttribution {
        ProcessAttribution {
            pid: 7,
            comm: comm.into(),
            exe: Some("/bin/x".into()),
            uid: 1001,
            user: None,
            gid: 1001,
            cgroup: None,
            container_id: container.map(|(id, _)| id.to_owned()),
            container_runtime: "docker".into(),
            container_name: container.and_then(|(_, n)| n.map(str::to_owned)),
            container_image: None,
            pod_uid: None,
        }
    }

    fn record(
        client: Option<ProcessAttribution>,
        server: Option<ProcessAttribution>,
    ) -> ConversationRecord {
        ConversationRecord {
            ts: format_rfc3339(10),
            ts_unix_ns: 10,
            interval_ms: 10_000,
            host: "h\tx\\".into(),
            proto: "tcp".into(),
            client: Endpoint {
                addr: "10.0.0.1".into(),
                port: 40000,
                local: client.is_some(),
                nat_addr: None,
                nat_port: None,
                name: None,
                process: client,
            },
            server: Endpoint {
                addr: "::ffff:10.0.0.2".into(),
                port: 80,
                local: server.is_some(),
                nat_addr: Some("203.0.113.1".into()),
                nat_port: Some(8080),
                name: None,
                process: server,
            },
            client_evidence: "socket".into(),
            bytes_c2s: 100,
            bytes_s2c: 2000,
            packets_c2s: 2,
            packets_s2c: 3,
            first_seen: format_rfc3339(1),
            first_seen_unix_ns: 1,
            last_seen: format_rfc3339(9),
            last_seen_unix_ns: 9,
            duration_ms: 0,
            tcp_flags: 0x12,
            tcp_flags_text: "SYN|ACK".into(),
            ifaces: vec![],
            nat: Some("dnat".into()),
            signals: Default::default(),
        }
    }

    #[test]
    fn labels_follow_the_schema() {
        let id = "0123456789abcdef0123";
        assert_eq!(container_label(&owner("a", None)), "host");
        assert_eq!(container_label(&owner("a", Some((id, Some("web"))))), "web");
        assert_eq!(
            container_label(&owner("a", Some((id, Some(""))))),
            "0123456789ab"
        );
        assert_eq!(user_label(&owner("a", None)), "1001");
        assert_eq!(tag_label("a\tb\nc\\\\"), "a b c");
        assert_eq!(field_text("a\nb"), "a b");
    }

    #[test]
    fn ends_send_and_receive_from_their_side() {
        let id = "0123456789abcdef0123";
        let r = record(
            Some(owner("curl", None)),
            Some(owner("nginx", Some((id, Some("web"))))),
        );
        let c = OwnedConv::from_record(&r);
        assert_eq!(c.host, "h x");
        assert_eq!(c.server.addr_text, "::ffff:10.0.0.2");
        assert_eq!(c.server.addr, "10.0.0.2".parse::<IpAddr>().unwrap());
        let v = c.view();
        let ends: Vec<End<'_>> = v.ends().collect();
        assert_eq!(ends.len(), 2);
        let (cl, sv) = (&ends[0], &ends[1]);
        assert_eq!(
            (cl.role, cl.process, cl.container),
            (Role::Client, "curl", "host")
        );
        assert_eq!(cl.peer, "web", "the server is a local container");
        assert_eq!((cl.sent.bytes, cl.received.bytes), (100, 2000));
        assert_eq!(
            sv.peer, "10.0.0.1",
            "a host process is named by its address"
        );
        assert_eq!((sv.sent.bytes, sv.received.bytes), (2000, 100));
        assert_eq!(sv.server_port, Some(80));
        let remote = OwnedConv::from_record(&record(None, None));
        assert_eq!(remote.view().ends().count(), 0);
    }
}
