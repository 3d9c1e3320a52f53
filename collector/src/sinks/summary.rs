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

fn endpoint(e: &Endpoint) -> String {
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
    s
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

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
