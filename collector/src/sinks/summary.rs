//! The on-screen summary: the top conversations of each interval as a table
//! (the output when no other is configured).

use std::io::{self, Write};

use flowlens_correlator::record::{ConversationRecord, Endpoint};

use super::RecordSink;

/// Prints the top conversations of each interval as a table.
pub struct SummarySink {
    top: usize,
    note: Option<&'static str>,
    interval: SummaryAcc,
}

impl SummarySink {
    /// Shows `top` rows per interval.
    pub fn new(top: usize) -> Self {
        Self {
            top,
            note: None,
            interval: SummaryAcc::new(top),
        }
    }

    /// Shows `note` under every header (e.g. that the weaker AF_PACKET
    /// capture is in use).
    pub fn with_note(mut self, note: Option<&'static str>) -> Self {
        self.note = note;
        self
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "user/comm[pid]@container" for a local end, "-" for a remote one.
pub fn who(e: &Endpoint) -> String {
    let Some(p) = &e.process else {
        return "-".into();
    };
    let user = p.user.clone().unwrap_or_else(|| p.uid.to_string());
    let place = match (&p.container_name, &p.container_id) {
        (Some(n), _) => format!("@{n}"),
        (None, Some(id)) => format!("@{}:{}", p.container_runtime, &id[..id.len().min(12)]),
        (None, None) => String::new(),
    };
    format!("{user}/{}[{}]{place}", p.comm, p.pid)
}

/// "addr:port", with the end's DNS name instead of the address when known.
fn endpoint(e: &Endpoint) -> String {
    if let Some(name) = &e.name {
        return format!("{name}:{}", e.port);
    }
    if e.addr.contains(':') {
        format!("[{}]:{}", e.addr, e.port)
    } else {
        format!("{}:{}", e.addr, e.port)
    }
}

/// Renders the summary table of one interval.
pub fn render_summary(records: &[ConversationRecord], top: usize) -> String {
    let mut acc = SummaryAcc::new(top);
    acc.add(records);
    acc.render()
}

/// Rows of the "slowest" and "most errors" views.
const SIGNAL_ROWS: usize = 5;

/// The records with the highest keys so far, at most `cap`, ties to the
/// earliest: what a stable sort by descending key, then the first `cap`,
/// keeps of all of them (chunk by chunk, without holding every record).
struct Top<K: Ord + Copy> {
    cap: usize,
    /// Sorted by descending key (ties in arrival order) after `compact`.
    kept: Vec<(K, ConversationRecord)>,
    /// The lowest kept key once `cap` are kept: a record must beat it.
    floor: Option<K>,
}

impl<K: Ord + Copy> Top<K> {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            kept: Vec::new(),
            floor: None,
        }
    }

    fn offer(&mut self, key: K, r: &ConversationRecord) {
        if self.cap == 0 || self.floor.is_some_and(|f| key <= f) {
            return;
        }
        self.kept.push((key, r.clone()));
        if self.kept.len() >= 2 * self.cap {
            self.compact();
        }
    }

    fn compact(&mut self) {
        // Stable: equal keys keep their arrival order.
        self.kept.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
        self.kept.truncate(self.cap);
        self.floor =
            (self.cap > 0 && self.kept.len() == self.cap).then(|| self.kept[self.cap - 1].0);
    }

    fn sorted(&mut self) -> impl Iterator<Item = &ConversationRecord> {
        self.compact();
        self.kept.iter().map(|(_, r)| r)
    }
}

/// One interval's summary, built chunk by chunk: counts, the first
/// record's time, and only the records that can be shown.
struct SummaryAcc {
    top: usize,
    records: usize,
    total: u64,
    ts: Option<String>,
    busiest: Top<u64>,
    slowest: Top<u64>,
    failing: Top<u64>,
}

fn latency(r: &ConversationRecord) -> Option<u64> {
    r.signals.rtt_avg_us.max(r.signals.connect_us)
}

fn errors(r: &ConversationRecord) -> u64 {
    r.signals.tcp_errors() + r.signals.dns_errors()
}

impl SummaryAcc {
    fn new(top: usize) -> Self {
        let signal_rows = top.min(SIGNAL_ROWS);
        Self {
            top,
            records: 0,
            total: 0,
            ts: None,
            busiest: Top::new(top),
            slowest: Top::new(signal_rows),
            failing: Top::new(signal_rows),
        }
    }

    fn add(&mut self, records: &[ConversationRecord]) {
        if self.ts.is_none() {
            self.ts = records.first().map(|r| r.ts.clone());
        }
        self.records += records.len();
        for r in records {
            self.total += r.bytes_c2s + r.bytes_s2c;
            self.busiest.offer(r.bytes_c2s + r.bytes_s2c, r);
            if let Some(l) = latency(r) {
                self.slowest.offer(l, r);
            }
            let e = errors(r);
            if e > 0 {
                self.failing.offer(e, r);
            }
        }
    }

    fn render(&mut self) -> String {
        let ts = self.ts.as_deref().unwrap_or("");
        let mut s = format!(
            "── {ts}  {} conversations, {} ──\n{:<5} {:<24} {:<24} {:>10} {:>10}  {:<32} {}\n",
            self.records,
            human_bytes(self.total),
            "PROTO",
            "CLIENT",
            "SERVER",
            "C→S",
            "S→C",
            "CLIENT PROCESS",
            "SERVER PROCESS"
        );
        for r in self.busiest.sorted().take(self.top) {
            s.push_str(&format!(
                "{:<5} {:<24} {:<24} {:>10} {:>10}  {:<32} {}\n",
                r.proto,
                endpoint(&r.client),
                endpoint(&r.server),
                human_bytes(r.bytes_c2s),
                human_bytes(r.bytes_s2c),
                who(&r.client),
                who(&r.server)
            ));
        }
        self.push_signal_views(&mut s);
        s
    }

    /// The conversations with the highest RTT (or connect latency) and the
    /// most errors, each view only when some conversation has something to show.
    fn push_signal_views(&mut self, s: &mut String) {
        let mut slow = self.slowest.sorted().peekable();
        if slow.peek().is_some() {
            s.push_str(&format!(
                "   slowest: {:<5} {:<24} {:<24} {:>10} {:>10}  {}\n",
                "PROTO", "CLIENT", "SERVER", "RTT AVG", "CONNECT", "CLIENT PROCESS"
            ));
            for r in slow {
                let us = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} µs"));
                s.push_str(&format!(
                    "            {:<5} {:<24} {:<24} {:>10} {:>10}  {}\n",
                    r.proto,
                    endpoint(&r.client),
                    endpoint(&r.server),
                    us(r.signals.rtt_avg_us),
                    us(r.signals.connect_us),
                    who(&r.client)
                ));
            }
        }
        let mut failing = self.failing.sorted().peekable();
        if failing.peek().is_some() {
            s.push_str(&format!(
                "   most errors: {:<5} {:<24} {:<24} {:<36} {}\n",
                "PROTO", "CLIENT", "SERVER", "ERRORS", "CLIENT PROCESS"
            ));
            for r in failing {
                s.push_str(&format!(
                    "                {:<5} {:<24} {:<24} {:<36} {}\n",
                    r.proto,
                    endpoint(&r.client),
                    endpoint(&r.server),
                    error_text(r),
                    who(&r.client)
                ));
            }
        }
    }
}

/// "connect refused, 3 retrans, 1 rst, 2 nxdomain" and the like.
fn error_text(r: &ConversationRecord) -> String {
    let g = &r.signals;
    let mut parts = Vec::new();
    if let Some(e) = &g.connect_error {
        parts.push(format!("connect {e}"));
    }
    for (n, what) in [
        (g.retransmits_c2s + g.retransmits_s2c, "retrans"),
        (g.resets_c2s + g.resets_s2c, "rst"),
        (g.dns_nxdomain, "nxdomain"),
        (g.dns_servfail, "servfail"),
        (g.dns_refused, "dns refused"),
        (g.dns_other_errors, "dns errors"),
        (g.dns_unanswered, "dns unanswered"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

impl RecordSink for SummarySink {
    fn begin_interval(&mut self) {
        self.interval = SummaryAcc::new(self.top);
    }

    fn write_chunk(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        self.interval.add(records);
        Ok(())
    }

    fn end_interval(&mut self) -> io::Result<()> {
        let mut interval = std::mem::replace(&mut self.interval, SummaryAcc::new(self.top));
        if interval.records == 0 {
            return Ok(());
        }
        let mut text = interval.render();
        if let Some(note) = self.note {
            // Under the header line.
            let at = text.find('\n').map_or(text.len(), |i| i + 1);
            text.insert_str(at, &format!("   ({note})\n"));
        }
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    fn describe(&self) -> String {
        "summary on standard output".into()
    }

    fn is_stdout(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cport: u16, sport: u16) -> ConversationRecord {
        let end = |addr: &str, port| Endpoint {
            addr: addr.to_owned(),
            port,
            local: false,
            nat_addr: None,
            nat_port: None,
            name: None,
            process: None,
        };
        ConversationRecord {
            ts: "t".into(),
            ts_unix_ns: 0,
            interval_ms: 1000,
            host: "h".into(),
            proto: "tcp".into(),
            client: end("10.0.0.1", cport),
            server: end("10.0.0.2", sport),
            client_evidence: "socket".into(),
            bytes_c2s: 1,
            bytes_s2c: 1,
            packets_c2s: 1,
            packets_s2c: 1,
            first_seen: "t".into(),
            first_seen_unix_ns: 0,
            last_seen: "t".into(),
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
    fn slowest_and_most_errors_views() {
        let plain = rec(40000, 80);
        assert!(!render_summary(std::slice::from_ref(&plain), 10).contains("slowest"));
        assert!(!render_summary(std::slice::from_ref(&plain), 10).contains("most errors"));
        let mut fast = rec(40001, 443);
        fast.signals.rtt_avg_us = Some(90);
        let mut slow = rec(40002, 443);
        slow.signals.rtt_avg_us = Some(40_000);
        slow.server.name = Some("api.example.com".into());
        let mut failed = rec(40003, 5432);
        failed.signals.connect_error = Some("refused".into());
        failed.signals.resets_s2c = 1;
        let out = render_summary(&[plain, fast, slow, failed], 10);
        let view = &out[out.find("slowest").expect("slowest view")..];
        let slow_at = view.find("api.example.com:443").expect("name shown");
        let fast_at = view.find("10.0.0.1:40001").expect("fast row");
        assert!(slow_at < fast_at, "slowest first:\n{out}");
        assert!(out.contains("40000 µs"), "{out}");
        assert!(out.contains("connect refused, 1 rst"), "{out}");
    }

    #[test]
    fn an_interval_in_chunks_renders_as_in_one_go() {
        // More records than rows, equal keys (ties go to the earliest), slow and failing ones.
        let records: Vec<ConversationRecord> = (0..40u16)
            .map(|i| {
                let mut r = rec(40000 + i, 443);
                r.bytes_c2s = u64::from(i % 6) * 1000;
                if i % 3 == 0 {
                    r.signals.rtt_avg_us = Some(u64::from(i % 4) * 10);
                }
                if i % 4 == 0 {
                    r.signals.resets_s2c = u64::from(i % 3);
                }
                r
            })
            .collect();
        for top in [0, 1, 3, 10, 50] {
            let whole = render_summary(&records, top);
            for chunk in [1, 2, 7, 40] {
                let mut acc = SummaryAcc::new(top);
                for c in records.chunks(chunk) {
                    acc.add(c);
                }
                assert_eq!(acc.render(), whole, "top {top}, chunks of {chunk}");
            }
        }
        assert!(render_summary(&records, 10).contains("40 conversations"));
    }

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
