//! The on-screen summary: the top conversations of each interval as a table
//! (the output when no other is configured).

use std::io::{self, Write};

use flowlens_correlator::record::{ConversationRecord, Endpoint};

use super::RecordSink;

/// Prints the top conversations of each interval as a table.
pub struct SummarySink {
    top: usize,
    note: Option<&'static str>,
}

impl SummarySink {
    /// Shows `top` rows per interval.
    pub fn new(top: usize) -> Self {
        Self { top, note: None }
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
    let mut sorted: Vec<&ConversationRecord> = records.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.bytes_c2s + r.bytes_s2c));
    let total: u64 = records.iter().map(|r| r.bytes_c2s + r.bytes_s2c).sum();
    let ts = records.first().map(|r| r.ts.as_str()).unwrap_or("");
    let mut s = format!(
        "── {ts}  {} conversations, {} ──\n{:<5} {:<24} {:<24} {:>10} {:>10}  {:<32} {}\n",
        records.len(),
        human_bytes(total),
        "PROTO",
        "CLIENT",
        "SERVER",
        "C→S",
        "S→C",
        "CLIENT PROCESS",
        "SERVER PROCESS"
    );
    for r in sorted.into_iter().take(top) {
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
    push_signal_views(&mut s, records, top.min(SIGNAL_ROWS));
    s
}

/// Rows of the "slowest" and "most errors" views.
const SIGNAL_ROWS: usize = 5;

/// The conversations with the highest RTT (or connect latency) and the most
/// errors, each view only when some conversation has something to show.
fn push_signal_views(s: &mut String, records: &[ConversationRecord], top: usize) {
    let latency = |r: &ConversationRecord| r.signals.rtt_avg_us.max(r.signals.connect_us);
    let mut slow: Vec<&ConversationRecord> =
        records.iter().filter(|r| latency(r).is_some()).collect();
    slow.sort_by_key(|r| std::cmp::Reverse(latency(r)));
    if !slow.is_empty() {
        s.push_str(&format!(
            "   slowest: {:<5} {:<24} {:<24} {:>10} {:>10}  {}\n",
            "PROTO", "CLIENT", "SERVER", "RTT AVG", "CONNECT", "CLIENT PROCESS"
        ));
        for r in slow.into_iter().take(top) {
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
    let errors = |r: &ConversationRecord| r.signals.tcp_errors() + r.signals.dns_errors();
    let mut failing: Vec<&ConversationRecord> = records.iter().filter(|r| errors(r) > 0).collect();
    failing.sort_by_key(|r| std::cmp::Reverse(errors(r)));
    if !failing.is_empty() {
        s.push_str(&format!(
            "   most errors: {:<5} {:<24} {:<24} {:<36} {}\n",
            "PROTO", "CLIENT", "SERVER", "ERRORS", "CLIENT PROCESS"
        ));
        for r in failing.into_iter().take(top) {
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
    fn write_interval(&mut self, records: &[ConversationRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = render_summary(records, self.top);
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
    fn bytes_are_humane() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
