//! Record builders and a line-protocol reader shared by the tests of this crate.

use flowlens_correlator::record::{ConversationRecord, Endpoint, ProcessAttribution};

/// Interval end of the fixtures.
pub const TS: i64 = 1_700_000_010_000_000_000;

/// A process on the host.
pub fn host_proc(pid: u32, comm: &str, user: Option<&str>) -> ProcessAttribution {
    ProcessAttribution {
        pid,
        comm: comm.to_owned(),
        exe: Some(format!("/usr/bin/{comm}")),
        uid: 1000,
        user: user.map(str::to_owned),
        gid: 1000,
        cgroup: Some("/user.slice/user-1000.slice/session-2.scope".to_owned()),
        container_id: None,
        container_runtime: "host".to_owned(),
        container_name: None,
        container_image: None,
        pod_uid: None,
    }
}

/// A process in a Docker container (`name` from the runtime, when known).
pub fn container_proc(pid: u32, comm: &str, id: &str, name: Option<&str>) -> ProcessAttribution {
    ProcessAttribution {
        pid,
        comm: comm.to_owned(),
        exe: Some(format!("/usr/sbin/{comm}")),
        uid: 0,
        user: Some("root".to_owned()),
        gid: 0,
        cgroup: Some(format!("/docker/{id}")),
        container_id: Some(id.to_owned()),
        container_runtime: "docker".to_owned(),
        container_name: name.map(str::to_owned),
        container_image: Some("nginx:1.27".to_owned()),
        pod_uid: None,
    }
}

/// An endpoint, local when it has a process.
pub fn end(addr: &str, port: u16, process: Option<ProcessAttribution>) -> Endpoint {
    Endpoint {
        addr: addr.to_owned(),
        port,
        local: process.is_some(),
        nat_addr: None,
        nat_port: None,
        name: None,
        process,
    }
}

/// A TCP conversation record of the fixture interval.
pub fn record(
    client: Endpoint,
    server: Endpoint,
    bytes: (u64, u64),
    packets: (u64, u64),
) -> ConversationRecord {
    ConversationRecord {
        ts: "2023-11-14T22:13:30Z".to_owned(),
        ts_unix_ns: TS,
        interval_ms: 10_000,
        host: "node1".to_owned(),
        proto: "tcp".to_owned(),
        client,
        server,
        client_evidence: "socket".to_owned(),
        bytes_c2s: bytes.0,
        bytes_s2c: bytes.1,
        packets_c2s: packets.0,
        packets_s2c: packets.1,
        first_seen: "2023-11-14T22:13:21Z".to_owned(),
        first_seen_unix_ns: TS - 9_000_000_000,
        last_seen: "2023-11-14T22:13:29.5Z".to_owned(),
        last_seen_unix_ns: TS - 500_000_000,
        duration_ms: 8500,
        tcp_flags: 0x1b,
        tcp_flags_text: "SYN|ACK|PSH|FIN".to_owned(),
        ifaces: vec!["eth0".to_owned()],
        nat: None,
        signals: Default::default(),
    }
}

/// One parsed point, read with the InfluxDB 1.x rules (a delimiter after a backslash is escaped).
#[derive(Debug)]
pub struct Point {
    pub measurement: String,
    /// The raw `measurement,tags` text: the series identity.
    pub series: String,
    pub tags: Vec<(String, String)>,
    /// Raw field values (`12i`, `"text"` unescaped to `text`).
    pub fields: Vec<(String, String)>,
    pub ts: i64,
}

impl Point {
    /// A tag value.
    pub fn tag(&self, k: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// A field value (strings unquoted and unescaped).
    pub fn field(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// An integer field.
    pub fn int(&self, k: &str) -> Option<i64> {
        self.field(k)?.strip_suffix('i')?.parse().ok()
    }
}

/// Splits at `sep` where not escaped (previous byte a backslash) and, with `quotes`, not inside a
/// string field value (a `"` right after `=` opens one; `\\` skips the next byte inside it).
fn split(s: &str, sep: u8, quotes: bool) -> Vec<&str> {
    let b = s.as_bytes();
    let (mut out, mut start, mut quoted, mut i) = (Vec::new(), 0, false, 0);
    while i < b.len() {
        let prev = if i > 0 { b[i - 1] } else { 0 };
        if quoted {
            if b[i] == b'\\' {
                i += 1;
            } else if b[i] == b'"' {
                quoted = false;
            }
        } else if quotes && b[i] == b'"' && prev == b'=' {
            quoted = true;
        } else if b[i] == sep && prev != b'\\' {
            out.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

fn unescape_string(s: &str) -> String {
    let (mut out, mut chars) = (String::new(), s.chars());
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(n @ ('"' | '\\'))) => {
                out.push(n);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn unescape_tag(s: &str) -> String {
    s.replace("\\,", ",")
        .replace("\\ ", " ")
        .replace("\\=", "=")
}

/// Parses one line (without its `\n`) as InfluxDB 1.x would.
pub fn parse(line: &str) -> Point {
    assert!(!line.contains('\n'), "newline inside a line: {line:?}");
    let (key, rest) = line.split_at(split(line, b' ', false)[0].len());
    let (fields, ts) = rest[1..].rsplit_once(' ').expect("fields and timestamp");
    let parts = [key, fields, ts];
    let series = split(parts[0], b',', false);
    let kv = |s: &str| {
        let kv = split(s, b'=', false);
        assert_eq!(kv.len(), 2, "one unescaped '=' in {s:?} of {line:?}");
        (unescape_tag(kv[0]), kv[1].to_owned())
    };
    let tags: Vec<_> = series[1..]
        .iter()
        .map(|t| kv(t))
        .map(|(k, v)| (k, unescape_tag(&v)))
        .collect();
    let fields = split(parts[1], b',', true)
        .into_iter()
        .map(|f| {
            let (k, v) = f.split_once('=').expect("field key=value");
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(s) => unescape_string(s),
                None => v.to_owned(),
            };
            (k.to_owned(), v)
        })
        .collect();
    Point {
        measurement: series[0].replace("\\,", ",").replace("\\ ", " "),
        series: parts[0].to_owned(),
        tags,
        fields,
        ts: parts[2].parse().expect("timestamp"),
    }
}

/// Parses a whole buffer.
pub fn parse_all(buf: &[u8]) -> Vec<Point> {
    let text = std::str::from_utf8(buf).expect("UTF-8");
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines().map(parse).collect()
}
