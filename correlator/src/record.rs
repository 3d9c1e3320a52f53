//! The JSON lines contract: one `ConversationRecord` per conversation and
//! export interval. Consumed by the JSON lines sink, the InfluxDB writer and
//! the web UI; `Option` fields serialize as `null`, never skipped.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cgroup::HOST;
use crate::owners::{Addr, OwnerIdentity};
use crate::types::{proto, Lookup};

/// One conversation during one export interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// End of the interval, RFC 3339 UTC.
    pub ts: String,
    /// End of the interval, Unix ns (above 2^53: exact as an integer, not as
    /// a double; `ts` carries the same instant as text).
    pub ts_unix_ns: i64,
    /// Length of the interval the counters cover, ms: from the previous
    /// export (or start-up) to `ts`; the shutdown flush covers a shorter one.
    #[serde(default)]
    pub interval_ms: u64,
    /// Host name of the collector.
    pub host: String,
    /// `"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"`, or the IP protocol number (e.g. `"47"`).
    pub proto: String,
    /// The side that started the conversation.
    pub client: Endpoint,
    /// The side that answered.
    pub server: Endpoint,
    /// Why `client` is the client: `"socket"` (socket hooks), `"handshake"` (TCP SYN / ICMP echo) or `"ports"`.
    pub client_evidence: String,
    /// L3 bytes client -> server in this interval.
    pub bytes_c2s: u64,
    /// L3 bytes server -> client in this interval.
    pub bytes_s2c: u64,
    /// Packets client -> server in this interval.
    pub packets_c2s: u64,
    /// Packets server -> client in this interval.
    pub packets_s2c: u64,
    /// First packet of the conversation, RFC 3339 UTC.
    pub first_seen: String,
    /// First packet of the conversation, Unix ns.
    pub first_seen_unix_ns: i64,
    /// Last packet so far, RFC 3339 UTC.
    pub last_seen: String,
    /// Last packet so far, Unix ns.
    pub last_seen_unix_ns: i64,
    /// `last_seen - first_seen` in milliseconds.
    pub duration_ms: u64,
    /// OR of the TCP flags seen in the conversation so far (both directions); 0 for other protocols.
    pub tcp_flags: u8,
    /// `tcp_flags` as text, e.g. `"SYN|ACK|FIN"`; empty when none.
    pub tcp_flags_text: String,
    /// Names of the interfaces that saw the conversation (`"if<N>"` when unknown), by ifindex.
    pub ifaces: Vec<String>,
    /// Address translation: `"snat"`, `"dnat"` or `"snat+dnat"` when connection
    /// tracking joined the two sides of a NAT into this conversation;
    /// `"unjoined"` when this may be one side of a translated conversation that
    /// could not be joined (connection tracking unavailable); else `null`.
    #[serde(default)]
    pub nat: Option<String>,
    /// Latency and errors of the interval (RTT, connect, retransmits, resets,
    /// DNS health), flattened into the record's top level.
    #[serde(flatten, default)]
    pub signals: ConversationSignals,
}

/// How well a conversation went in one interval: the golden signals. Keys sit
/// at the record's top level; counters are deltas of the interval like the
/// byte counters. A key is absent when it has nothing to say (no sample, a
/// zero count), so a record without signals reads as before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConversationSignals {
    /// Smallest TCP round-trip time (the kernel's smoothed estimate, µs) sampled in the interval, over every local end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_min_us: Option<u64>,
    /// Mean of the RTT samples of the interval (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_avg_us: Option<u64>,
    /// Largest RTT sample of the interval (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_max_us: Option<u64>,
    /// RTT samples behind the three values above.
    #[serde(skip_serializing_if = "is_zero")]
    pub rtt_samples: u64,
    /// SYN to established as seen by the local client (µs), in the interval the connect completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<u64>,
    /// The local client's connect failed: `refused`, `timeout`, `unreachable` or `reset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_error: Option<String>,
    /// TCP segments the client retransmitted in the interval.
    #[serde(skip_serializing_if = "is_zero")]
    pub retransmits_c2s: u64,
    /// TCP segments the server retransmitted in the interval.
    #[serde(skip_serializing_if = "is_zero")]
    pub retransmits_s2c: u64,
    /// TCP resets the client sent in the interval.
    #[serde(skip_serializing_if = "is_zero")]
    pub resets_c2s: u64,
    /// TCP resets the server sent in the interval.
    #[serde(skip_serializing_if = "is_zero")]
    pub resets_s2c: u64,
    /// DNS queries the client sent (each once, however many hooks saw it).
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_queries: u64,
    /// DNS responses the server sent.
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_responses: u64,
    /// Mean query-to-response latency of the interval's answered queries (µs), at the querier when local.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_latency_avg_us: Option<u64>,
    /// Largest query-to-response latency of the interval (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_latency_max_us: Option<u64>,
    /// Answered queries behind the two latencies above (so averages recombine: avg × samples is the sum).
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_latency_samples: u64,
    /// Responses with rcode NXDOMAIN.
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_nxdomain: u64,
    /// Responses with rcode SERVFAIL.
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_servfail: u64,
    /// Responses with rcode REFUSED.
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_refused: u64,
    /// Responses with another error rcode (FORMERR, NOTIMP, ...).
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_other_errors: u64,
    /// Queries without a response within the DNS timeout (5 s).
    #[serde(skip_serializing_if = "is_zero")]
    pub dns_unanswered: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ConversationSignals {
    /// TCP errors of the interval: retransmits and resets both ways, and a failed connect.
    pub fn tcp_errors(&self) -> u64 {
        self.retransmits_c2s
            + self.retransmits_s2c
            + self.resets_c2s
            + self.resets_s2c
            + u64::from(self.connect_error.is_some())
    }

    /// DNS failures of the interval: error rcodes and unanswered queries.
    pub fn dns_errors(&self) -> u64 {
        self.dns_nxdomain
            + self.dns_servfail
            + self.dns_refused
            + self.dns_other_errors
            + self.dns_unanswered
    }

    /// Whether DNS messages of this conversation were seen in the interval.
    pub fn has_dns(&self) -> bool {
        self.dns_queries + self.dns_responses + self.dns_unanswered > 0
    }
}

/// One end of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// IP address (IPv4-mapped IPv6 shown as IPv4).
    pub addr: String,
    /// Port; the echo identifier for ICMP echo; 0 for other protocols.
    pub port: u16,
    /// A socket on this host owns this end (then `process` is set).
    pub local: bool,
    /// The address the other end sees for this one when NAT translated it
    /// (masquerade: the client's public address; a published port: the
    /// server's); `null` when untranslated.
    #[serde(default)]
    pub nat_addr: Option<String>,
    /// The port the other end sees for this one when NAT translated it.
    #[serde(default)]
    pub nat_port: Option<u16>,
    /// The name this host's DNS traffic gave the address (the name a process
    /// asked for, through CNAME chains); absent when none is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The owning process, flattened into the endpoint object; absent for remote ends.
    #[serde(flatten)]
    pub process: Option<ProcessAttribution>,
}

/// The process (and container) owning a local end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessAttribution {
    /// Thread group id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Executable path, when known.
    pub exe: Option<String>,
    /// Real uid.
    pub uid: u32,
    /// User name of `uid`, when resolvable.
    pub user: Option<String>,
    /// Real gid.
    pub gid: u32,
    /// cgroup v2 path, when known.
    pub cgroup: Option<String>,
    /// Full container id; `null` on the host.
    pub container_id: Option<String>,
    /// `"host"`, `"docker"`, `"containerd"`, `"cri-o"` or `"podman"`.
    pub container_runtime: String,
    /// Container name from the runtime, when known.
    pub container_name: Option<String>,
    /// Container image from the runtime, when known.
    pub container_image: Option<String>,
    /// Kubernetes pod uid, when in a pod.
    pub pod_uid: Option<String>,
}

impl ProcessAttribution {
    /// Builds the attribution of an owner, resolving names through `lookup`.
    pub(crate) fn new(who: &OwnerIdentity, exe: Option<&str>, lookup: &dyn Lookup) -> Self {
        let p = &who.process;
        let c = who.container.as_ref();
        let meta = c
            .and_then(|c| lookup.container_meta(c.runtime, &c.id))
            .unwrap_or_default();
        Self {
            pid: p.pid,
            comm: p.comm.clone(),
            exe: p.exe.clone().or_else(|| exe.map(str::to_owned)),
            uid: p.uid,
            user: lookup.user_name(p.uid),
            gid: p.gid,
            cgroup: p.cgroup_path.clone(),
            container_id: c.map(|c| c.id.clone()),
            container_runtime: c.map_or(HOST, |c| c.runtime).to_owned(),
            container_name: meta.name,
            container_image: meta.image,
            pod_uid: c.and_then(|c| c.pod_uid.clone()),
        }
    }
}

impl Endpoint {
    /// An endpoint, local when it has an owner.
    pub(crate) fn new(addr: Addr, process: Option<ProcessAttribution>) -> Self {
        Self {
            addr: addr.0.to_string(),
            port: addr.1,
            local: process.is_some(),
            nat_addr: None,
            nat_port: None,
            name: None,
            process,
        }
    }
}

/// The record name of an IP protocol.
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".to_owned(),
        proto::UDP => "udp".to_owned(),
        proto::ICMP => "icmp".to_owned(),
        proto::ICMPV6 => "icmpv6".to_owned(),
        n => n.to_string(),
    }
}

/// TCP flag names in the order they appear in a conversation's life.
const TCP_FLAGS: [(u8, &str); 8] = [
    (0x02, "SYN"),
    (0x10, "ACK"),
    (0x08, "PSH"),
    (0x20, "URG"),
    (0x01, "FIN"),
    (0x04, "RST"),
    (0x40, "ECE"),
    (0x80, "CWR"),
];

/// TCP flags as text, e.g. `"SYN|ACK|FIN"`; empty for 0.
pub fn tcp_flags_text(flags: u8) -> String {
    let mut s = String::new();
    for (bit, name) in TCP_FLAGS {
        if flags & bit != 0 {
            if !s.is_empty() {
                s.push('|');
            }
            s.push_str(name);
        }
    }
    s
}

/// Unix ns as RFC 3339 UTC (fraction only as long as needed), clamped to years 1970..=9999.
pub fn format_rfc3339(unix_ns: i128) -> String {
    const MAX_NS: i128 = 253_402_300_799_999_999_999; // 9999-12-31T23:59:59.999999999Z
    OffsetDateTime::from_unix_timestamp_nanos(unix_ns.clamp(0, MAX_NS))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Unix ns clamped into `i64` (the range of the numeric record fields).
pub fn clamp_i64(ns: i128) -> i64 {
    ns.clamp(0, i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_text() {
        assert_eq!(tcp_flags_text(0), "");
        assert_eq!(tcp_flags_text(0x02 | 0x10 | 0x01), "SYN|ACK|FIN");
        assert_eq!(tcp_flags_text(0xff), "SYN|ACK|PSH|URG|FIN|RST|ECE|CWR");
    }

    #[test]
    fn proto_names() {
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(58), "icmpv6");
        assert_eq!(proto_name(47), "47");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_700_000_000_500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(format_rfc3339(-5), "1970-01-01T00:00:00Z");
        assert!(format_rfc3339(i128::MAX).starts_with("9999-12-31T23:59:59"));
    }
}
