//! What the terminal's live view shows, without a terminal: one interval's
//! records grouped by process, container or user (each local end counts
//! once, with what it sent and received), rates over the interval, sorted
//! by a key, and the loss counters. Pure, so it is tested without a tty.

use std::collections::HashMap;

use flowlens_correlator::record::{ConversationRecord, Endpoint};

/// How rows are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// By command name, container and user (all pids of one program merge).
    Process,
    /// By container (`host` for processes outside containers).
    Container,
    /// By user.
    User,
}

impl Grouping {
    /// The next one (the `g` key).
    pub fn next(self) -> Self {
        match self {
            Grouping::Process => Grouping::Container,
            Grouping::Container => Grouping::User,
            Grouping::User => Grouping::Process,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Grouping::Process => "process",
            Grouping::Container => "container",
            Grouping::User => "user",
        }
    }
}

/// The order of the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Sent + received.
    Total,
    /// Sent.
    Sent,
    /// Received.
    Received,
    /// Conversations.
    Conversations,
}

impl SortBy {
    /// The next one (the `s` key).
    pub fn next(self) -> Self {
        match self {
            SortBy::Total => SortBy::Sent,
            SortBy::Sent => SortBy::Received,
            SortBy::Received => SortBy::Conversations,
            SortBy::Conversations => SortBy::Total,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            SortBy::Total => "total",
            SortBy::Sent => "sent",
            SortBy::Received => "received",
            SortBy::Conversations => "conversations",
        }
    }
}

/// One row: a group of local ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    /// Command name (process grouping), container or user.
    pub name: String,
    /// Container (process grouping only).
    pub container: String,
    /// User (process grouping only).
    pub user: String,
    /// Distinct pids.
    pub processes: usize,
    /// Conversations with traffic this interval.
    pub conversations: u64,
    /// Bytes sent this interval.
    pub sent: u64,
    /// Bytes received this interval.
    pub received: u64,
    /// Bytes per second sent.
    pub sent_rate: f64,
    /// Bytes per second received.
    pub received_rate: f64,
}

/// One interval, ready to group.
#[derive(Clone, Debug, Default)]
pub struct Interval {
    /// End of the interval (RFC 3339).
    pub ts: String,
    /// Its length, seconds.
    pub seconds: f64,
    /// Records in it.
    pub records: usize,
    /// Local ends: (comm, container, user, pid, sent, received).
    ends: Vec<(String, String, String, u32, u64, u64)>,
    /// Bytes of every record (both directions).
    pub bytes: u64,
}

fn container_of(e: &Endpoint) -> Option<String> {
    let p = e.process.as_ref()?;
    Some(match (&p.container_name, &p.container_id) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(id)) => id[..id.len().min(12)].to_owned(),
        _ => "host".to_owned(),
    })
}

impl Interval {
    /// Takes the local ends of `records`; rates over the interval the
    /// records say they cover (`interval_ms`), else `seconds`.
    pub fn new(records: &[ConversationRecord], seconds: f64) -> Self {
        let mut i = Self::begin(seconds);
        i.extend(records);
        i
    }

    /// An interval of `seconds` without records yet (see [`Interval::extend`]).
    pub fn begin(seconds: f64) -> Self {
        Interval {
            seconds: seconds.max(0.001),
            ..Interval::default()
        }
    }

    /// Takes the local ends of the interval's next records (the first
    /// record says when the interval ended and how long it was).
    pub fn extend(&mut self, records: &[ConversationRecord]) {
        if self.records == 0 {
            if let Some(r) = records.first() {
                self.ts = r.ts.clone();
                if r.interval_ms > 0 {
                    self.seconds = (r.interval_ms as f64 / 1000.0).max(0.001);
                }
            }
        }
        self.records += records.len();
        for r in records {
            self.bytes += r.bytes_c2s + r.bytes_s2c;
            for (e, sent, recv) in [
                (&r.client, r.bytes_c2s, r.bytes_s2c),
                (&r.server, r.bytes_s2c, r.bytes_c2s),
            ] {
                let Some(p) = &e.process else { continue };
                let user = p.user.clone().unwrap_or_else(|| p.uid.to_string());
                let container = container_of(e).unwrap_or_default();
                self.ends
                    .push((p.comm.clone(), container, user, p.pid, sent, recv));
            }
        }
    }

    /// All rows of a grouping, sorted (ties by name).
    pub fn rows(&self, by: Grouping, sort: SortBy) -> Vec<Row> {
        let mut groups: HashMap<(String, String, String), (Row, Vec<u32>)> = HashMap::new();
        for (comm, container, user, pid, sent, recv) in &self.ends {
            let key = match by {
                Grouping::Process => (comm.clone(), container.clone(), user.clone()),
                Grouping::Container => (container.clone(), String::new(), String::new()),
                Grouping::User => (user.clone(), String::new(), String::new()),
            };
            let (row, pids) = groups.entry(key.clone()).or_insert_with(|| {
                (
                    Row {
                        name: key.0,
                        container: key.1,
                        user: key.2,
                        ..Row::default()
                    },
                    Vec::new(),
                )
            });
            row.conversations += 1;
            row.sent += sent;
            row.received += recv;
            if !pids.contains(pid) {
                pids.push(*pid);
            }
        }
        let mut rows: Vec<Row> = groups
            .into_values()
            .map(|(mut r, pids)| {
                r.processes = pids.len();
                r.sent_rate = r.sent as f64 / self.seconds;
                r.received_rate = r.received as f64 / self.seconds;
                r
            })
            .collect();
        let key = |r: &Row| match sort {
            SortBy::Total => r.sent + r.received,
            SortBy::Sent => r.sent,
            SortBy::Received => r.received,
            SortBy::Conversations => r.conversations,
        };
        rows.sort_by(|a, b| {
            key(b)
                .cmp(&key(a))
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.container.cmp(&b.container))
                .then_with(|| a.user.cmp(&b.user))
        });
        rows
    }
}

/// `12.3 kB/s` (decimal units, as network tools count).
pub fn rate(bytes_per_s: f64) -> String {
    format!("{}/s", bytes(bytes_per_s))
}

/// `12.3 kB`.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlens_correlator::record::ProcessAttribution;

    fn remote_end(addr: &str, port: u16) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            port,
            local: false,
            nat_addr: None,
            nat_port: None,
            name: None,
            process: None,
        }
    }

    fn end(comm: &str, pid: u32, user: &str, container: Option<&str>) -> Endpoint {
        Endpoint {
            local: true,
            process: Some(ProcessAttribution {
                pid,
                comm: comm.into(),
                exe: None,
                uid: 1000,
                user: Some(user.into()),
                gid: 1000,
                cgroup: None,
                container_id: container.map(|c| format!("{c:0<64}")),
                container_runtime: String::new(),
                container_name: container.map(str::to_owned),
                container_image: None,
                pod_uid: None,
            }),
            ..remote_end("10.0.0.1", 1)
        }
    }

    fn rec(client: Endpoint, server: Endpoint, c2s: u64, s2c: u64) -> ConversationRecord {
        ConversationRecord {
            ts: "2026-12-02T10:00:00Z".into(),
            ts_unix_ns: 0,
            interval_ms: 2000,
            host: "h".into(),
            proto: "tcp".into(),
            client,
            server,
            client_evidence: "socket".into(),
            bytes_c2s: c2s,
            bytes_s2c: s2c,
            packets_c2s: 1,
            packets_s2c: 1,
            first_seen: String::new(),
            first_seen_unix_ns: 0,
            last_seen: String::new(),
            last_seen_unix_ns: 0,
            duration_ms: 0,
            tcp_flags: 0,
            tcp_flags_text: String::new(),
            ifaces: Vec::new(),
            nat: None,
            signals: Default::default(),
        }
    }

    #[test]
    fn ends_group_by_program_container_and_user_with_rates() {
        let remote = remote_end("203.0.113.9", 443);
        let recs = vec![
            rec(
                end("python3", 10, "alice", Some("web")),
                remote.clone(),
                1000,
                9000,
            ),
            rec(
                end("python3", 11, "alice", Some("web")),
                remote.clone(),
                1000,
                1000,
            ),
            rec(
                end("curl", 12, "bob", None),
                end("nginx", 13, "www", Some("web")),
                500,
                4500,
            ),
        ];
        // interval_ms (2 s) wins over the configured interval.
        let i = Interval::new(&recs, 10.0);
        let p = i.rows(Grouping::Process, SortBy::Total);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (
                p[0].name.as_str(),
                p[0].processes,
                p[0].conversations,
                p[0].sent,
                p[0].received
            ),
            ("python3", 2, 2, 2000, 10000)
        );
        assert_eq!(p[0].received_rate, 5000.0);
        assert_eq!(
            (p[1].name.as_str(), p[1].container.as_str()),
            ("curl", "host")
        );
        let c = i.rows(Grouping::Container, SortBy::Total);
        let names: Vec<(&str, u64)> = c
            .iter()
            .map(|r| (r.name.as_str(), r.sent + r.received))
            .collect();
        assert_eq!(names, vec![("web", 17000), ("host", 5000)]);
        let s = i.rows(Grouping::User, SortBy::Sent);
        assert_eq!(s[0].name, "www");
        assert_eq!(i.bytes, 17000);
    }

    #[test]
    fn units_are_decimal() {
        assert_eq!(rate(512.0), "512 B/s");
        assert_eq!(rate(12_345.0), "12.3 kB/s");
        assert_eq!(bytes(5e6), "5.0 MB");
    }
}
