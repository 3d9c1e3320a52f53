//! Assertions that collect every mismatch of a scenario before failing, so
//! one run tells everything flowlens got wrong in it.

use std::fmt::Debug;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::pcap::Capture;
use super::records::{Conversation, Side};
use super::spawn::ProcIdentity;

/// What an endpoint's attribution must be.
#[derive(Clone, Debug)]
pub struct ExpectedEndpoint {
    /// The process.
    pub process: ProcIdentity,
    /// User name of its uid.
    pub user: String,
    /// `None`: a host process (`container_id` null, runtime `host`,
    /// name/image null).
    pub container: Option<ExpectedContainer>,
}

/// What an endpoint's container fields must be.
#[derive(Clone, Debug)]
pub struct ExpectedContainer {
    /// `container_id`.
    pub id: String,
    /// `container_runtime`.
    pub runtime: String,
    /// `container_name`; `None`: not checked (nothing to resolve it from).
    pub name: Option<String>,
    /// `container_image`; `None`: not checked.
    pub image: Option<String>,
}

/// Collected mismatches of one scenario.
pub struct Checks {
    scenario: String,
    failures: Vec<String>,
}

impl Checks {
    /// Starts collecting for `scenario`.
    pub fn new(scenario: &str) -> Self {
        Checks {
            scenario: scenario.to_owned(),
            failures: Vec::new(),
        }
    }

    /// Records a mismatch unless `actual == expected`.
    pub fn eq<T: PartialEq + Debug>(&mut self, what: &str, actual: T, expected: T) {
        if actual != expected {
            self.failures
                .push(format!("{what}: expected {expected:?}, got {actual:?}"));
        }
    }

    /// Records a failure.
    pub fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    /// Packets and L3 bytes in both directions equal the capture's, and the
    /// OR of TCP flags equals the capture's (both directions) for TCP.
    pub fn counts_match_capture(
        &mut self,
        conv: &Conversation,
        cap: &Capture,
        proto: u8,
        client: SocketAddr,
        server: SocketAddr,
    ) {
        let c2s = cap.direction(proto, client, server);
        let s2c = cap.direction(proto, server, client);
        self.eq("packets_c2s (vs tcpdump)", conv.packets_c2s, c2s.packets);
        self.eq("bytes_c2s (vs tcpdump)", conv.bytes_c2s, c2s.bytes);
        self.eq("packets_s2c (vs tcpdump)", conv.packets_s2c, s2c.packets);
        self.eq("bytes_s2c (vs tcpdump)", conv.bytes_s2c, s2c.bytes);
        if proto == 6 {
            self.eq(
                "tcp_flags (OR over both directions, vs tcpdump)",
                conv.tcp_flags,
                c2s.tcp_flags | s2c.tcp_flags,
            );
        }
    }

    /// Every line says `<side>.<field>` = `expected`.
    pub fn field(&mut self, conv: &Conversation, side: Side, field: &str, expected: Value) {
        let got = conv.endpoint_values(side, field);
        let want = expected.to_string();
        if got.len() != 1 || !got.contains(&want) {
            self.failures.push(format!(
                "{}.{field}: expected {want} on every line, got {got:?}",
                side.key()
            ));
        }
    }

    /// The attribution of one end, field by field.
    pub fn endpoint(&mut self, conv: &Conversation, side: Side, exp: &ExpectedEndpoint) {
        let p = &exp.process;
        let pids = conv.endpoint_values(side, "pid");
        if pids.iter().all(|v| v == "<missing>" || v == "null") {
            // One line instead of a dozen missing fields.
            self.fail(format!(
                "{}: not attributed at all (local {:?}, no pid) — expected pid {} comm {:?} uid {} cgroup {:?}{}",
                side.key(),
                conv.endpoint_values(side, "local"),
                p.pid,
                p.comm,
                p.uid,
                p.cgroup,
                exp.container.as_ref().map_or(String::new(), |c| format!(" container {}", c.id)),
            ));
            return;
        }
        self.field(conv, side, "local", json!(true));
        self.field(conv, side, "pid", json!(p.pid));
        self.field(conv, side, "comm", json!(p.comm));
        self.field(conv, side, "exe", json!(p.exe));
        self.field(conv, side, "uid", json!(p.uid));
        self.field(conv, side, "gid", json!(p.gid));
        self.field(conv, side, "user", json!(exp.user));
        self.field(conv, side, "cgroup", json!(p.cgroup));
        self.field(conv, side, "pod_uid", Value::Null);
        match &exp.container {
            None => {
                self.field(conv, side, "container_id", Value::Null);
                self.field(conv, side, "container_runtime", json!("host"));
                self.field(conv, side, "container_name", Value::Null);
                self.field(conv, side, "container_image", Value::Null);
            }
            Some(c) => {
                self.field(conv, side, "container_id", json!(c.id));
                self.field(conv, side, "container_runtime", json!(c.runtime));
                if let Some(name) = &c.name {
                    self.field(conv, side, "container_name", json!(name));
                }
                if let Some(image) = &c.image {
                    self.field(conv, side, "container_image", json!(image));
                }
            }
        }
    }

    /// The union of `ifaces` over the lines is exactly `expected`.
    pub fn ifaces(&mut self, conv: &Conversation, expected: &[&str]) {
        let want: std::collections::BTreeSet<String> =
            expected.iter().map(|s| s.to_string()).collect();
        self.eq("ifaces (union over lines)", &conv.ifaces, &want);
    }

    /// Line-level fields: `host` is this machine's hostname, `first_seen` <=
    /// `last_seen`, and both are inside the line's interval (<= `ts`).
    pub fn line_basics(&mut self, conv: &Conversation) {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        for (i, l) in conv.lines.iter().enumerate() {
            let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
            if s("host") != hostname.trim() {
                self.fail(format!(
                    "line {i}: host {:?}, expected {:?}",
                    s("host"),
                    hostname.trim()
                ));
            }
            let (first, last, ts) = (s("first_seen"), s("last_seen"), s("ts"));
            let (f, la, t) = (
                rfc3339_nanos(&first),
                rfc3339_nanos(&last),
                rfc3339_nanos(&ts),
            );
            match (f, la, t) {
                (Some(f), Some(la), Some(t)) if f <= la && la <= t => {}
                (Some(_), Some(_), Some(_)) => self.fail(format!(
                    "line {i}: expected first_seen <= last_seen <= ts, got {first} / {last} / {ts}"
                )),
                _ => self.fail(format!(
                    "line {i}: not RFC 3339: ts {ts:?} first_seen {first:?} last_seen {last:?}"
                )),
            }
            // The `*_unix_ns` twins must say the same instants.
            for (key, parsed) in [
                ("ts_unix_ns", t),
                ("first_seen_unix_ns", f),
                ("last_seen_unix_ns", la),
            ] {
                let got = l.get(key).and_then(Value::as_u64).map(i128::from);
                if got.is_none() || (parsed.is_some() && got != parsed) {
                    self.fail(format!(
                        "line {i}: {key} {:?} does not match its RFC 3339 twin {parsed:?}",
                        l.get(key)
                    ));
                }
            }
        }
    }

    /// Panics with every recorded mismatch, if any.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{}: {} mismatch(es):\n  - {}",
                self.scenario,
                self.failures.len(),
                self.failures.join("\n  - ")
            );
        }
    }
}

/// Nanoseconds since the Unix epoch of an RFC 3339 timestamp
/// (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`), `None` if it is not one.
pub fn rfc3339_nanos(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac_ns: i128 = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        frac_ns = digits.parse::<i128>().ok()? * 10i128.pow(9 - digits.len() as u32);
    }
    let offset_s: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(i128::from(secs) * 1_000_000_000 + frac_ns)
}

/// What one scenario's conversation must look like.
pub struct ExpectedConversation<'a> {
    /// Scenario name for the failure message.
    pub scenario: &'a str,
    /// `proto` as flowlens writes it: `tcp`, `udp`, `icmp`, `icmpv6`.
    pub proto: &'a str,
    /// Client address and port.
    pub client: SocketAddr,
    /// Server address and port.
    pub server: SocketAddr,
    /// Exactly the interfaces it must be reported on (union over lines).
    pub ifaces: &'a [&'a str],
    /// Client attribution; `None`: no process (kernel), pid must be absent.
    pub client_end: Option<ExpectedEndpoint>,
    /// Server attribution; `None`: no process (e.g. the kernel answering ICMP).
    pub server_end: Option<ExpectedEndpoint>,
    /// `client_evidence` on every line (`socket`, `handshake`, `ports`);
    /// `None`: not checked.
    pub evidence: Option<&'a str>,
}

/// IP protocol number of a flowlens `proto` name.
pub fn proto_number(name: &str) -> u8 {
    match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("unknown proto {other}")),
    }
}

/// Finds the conversation in `records` (panics with a listing if it is not
/// there) and checks counts against `cap`, ifaces, line basics and both
/// ends' attribution. Returns the conversation and the open [`Checks`] for
/// scenario-specific additions; call [`Checks::finish`].
pub fn check_conversation(
    records: &[Value],
    cap: &Capture,
    exp: &ExpectedConversation<'_>,
) -> (Conversation, Checks) {
    let conv = super::records::find(records, exp.proto, exp.client, exp.server)
        .unwrap_or_else(|e| panic!("{}: {e}\ntcpdump saw:\n{}", exp.scenario, cap.summary()));
    let mut ck = Checks::new(exp.scenario);
    ck.counts_match_capture(&conv, cap, proto_number(exp.proto), exp.client, exp.server);
    ck.ifaces(&conv, exp.ifaces);
    ck.line_basics(&conv);
    if let Some(evidence) = exp.evidence {
        let got: std::collections::BTreeSet<String> = conv
            .lines
            .iter()
            .map(|l| {
                l.get("client_evidence")
                    .map_or("<missing>".into(), Value::to_string)
            })
            .collect();
        ck.eq(
            "client_evidence (every line)",
            got,
            [json!(evidence).to_string()].into(),
        );
    }
    for (side, end) in [
        (Side::Client, &exp.client_end),
        (Side::Server, &exp.server_end),
    ] {
        match end {
            Some(e) => ck.endpoint(&conv, side, e),
            None => ck.no_process(&conv, side),
        }
    }
    (conv, ck)
}

impl Checks {
    /// No socket on this host owns `<side>`: `local` false and `pid` absent
    /// or null on every line.
    pub fn no_process(&mut self, conv: &Conversation, side: Side) {
        self.field(conv, side, "local", json!(false));
        let got = conv.endpoint_values(side, "pid");
        if got.iter().any(|v| v != "<missing>" && v != "null") {
            self.fail(format!(
                "{}.pid: expected none (no process owns this end), got {got:?}",
                side.key()
            ));
        }
    }
}

impl ExpectedEndpoint {
    /// A host process (no container).
    pub fn host(process: ProcIdentity) -> Self {
        ExpectedEndpoint {
            user: super::spawn::user_name(process.uid),
            container: None,
            process,
        }
    }

    /// A process in a container; `name`/`image` `None` = not checked.
    pub fn in_container(
        process: ProcIdentity,
        id: &str,
        runtime: &str,
        name: Option<&str>,
        image: Option<&str>,
    ) -> Self {
        ExpectedEndpoint {
            user: super::spawn::user_name(process.uid),
            container: Some(ExpectedContainer {
                id: id.to_owned(),
                runtime: runtime.to_owned(),
                name: name.map(str::to_owned),
                image: image.map(str::to_owned),
            }),
            process,
        }
    }
}
