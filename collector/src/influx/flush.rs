//! `flowlens influx-flush`, and what a replay says when InfluxDB did not
//! take everything before it ended.

use super::{settings::InfluxSettings, sink::InfluxSink, stats::InfluxMetrics};

/// Why points are still spooled and how to send them, when some are.
pub fn still_spooled(s: &InfluxSettings, m: &InfluxMetrics) -> Option<String> {
    if m.spool_pending_points == 0 {
        return None;
    }
    let dir = s.spool_dir.display();
    Some(format!(
        "InfluxDB: {} points are still in the spool {dir} ({} bytes on disk; InfluxDB did not take them within {}{}). \
         Send them with: flowlens influx-flush --influx-url {} --influx-db {} --influx-spool-dir {dir} \
         (credentials from the same environment variables); the next flowlens run or replay with this spool \
         directory also sends them first.",
        m.spool_pending_points,
        m.spool_bytes,
        humantime::format_duration(s.close_timeout),
        m.last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default(),
        s.target.url,
        s.target.db,
    ))
}

/// Sends the spool of `s` for at most its close timeout; returns the exit
/// code (1 when points are still spooled).
pub fn run(s: InfluxSettings) -> anyhow::Result<i32> {
    let mut sink = InfluxSink::start(s.clone())?;
    sink.close();
    let m = sink.stats().snapshot();
    match still_spooled(&s, &m) {
        Some(msg) => {
            eprintln!("{msg}");
            Ok(1)
        }
        None => {
            eprintln!(
                "InfluxDB: the spool {} is empty ({} points written, {} dead-lettered).",
                s.spool_dir.display(),
                m.points_written,
                m.points_dead_lettered
            );
            Ok(0)
        }
    }
}
