//! Time ranges and buckets. The clock is passed in (`now_ns`); buckets are
//! aligned to multiples of the step since the Unix epoch, as InfluxDB's
//! `GROUP BY time()` aligns them, so both stores bucket alike.

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

const NS: i64 = 1_000_000_000;

/// Latest time accepted (2100-01-01), Unix ns; keeps arithmetic far from overflow.
pub const MAX_TIME_NS: i64 = 4_102_444_800 * NS;

/// A half-open range `[from, to)` in Unix ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Start (included).
    pub from: i64,
    /// End (excluded).
    pub to: i64,
}

impl TimeRange {
    /// Length in ns.
    pub fn len_ns(&self) -> i64 {
        self.to - self.from
    }
}

/// Parses a duration such as `15m`, `1h`, `7d`, `30s`, `2w` into ns.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .ok()
        .filter(|n| *n <= 100_000_000)
        .ok_or_else(|| format!("'{s}' is not a duration (examples: 30s, 15m, 1h, 7d)"))?;
    let mult = match unit {
        "ms" => NS / 1000,
        "s" | "" => NS,
        "m" => 60 * NS,
        "h" => 3600 * NS,
        "d" => 86_400 * NS,
        "w" => 7 * 86_400 * NS,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (s, m, h, d or w)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v <= MAX_TIME_NS)
        .ok_or_else(|| format!("'{s}' is too long"))
}

/// Parses a point in time: `now`, `now-15m`, RFC 3339 (`2026-12-01T10:00:00Z`),
/// or Unix seconds (`1764583200`, fractions allowed).
pub fn parse_time(s: &str, now_ns: i64) -> Result<i64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ns);
    }
    if let Some(rest) = t.strip_prefix("now-").or_else(|| t.strip_prefix("NOW-")) {
        return Ok(now_ns.saturating_sub(parse_duration(rest)?).max(0));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let bad = || format!("'{}' is not a time", shorten(t));
        if int.is_empty() || frac.contains('.') || frac.len() > 9 {
            return Err(bad());
        }
        let secs: i64 = int.parse().map_err(|_| bad())?;
        let frac_ns: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse().map_err(|_| bad())?
        };
        return secs
            .checked_mul(NS)
            .and_then(|v| v.checked_add(frac_ns))
            .filter(|v| *v <= MAX_TIME_NS)
            .ok_or_else(|| format!("'{}' is out of range", shorten(t)));
    }
    let dt = OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
        format!(
            "'{}' is not a time (now, now-15m, 2026-12-01T10:00:00Z or Unix seconds)",
            shorten(t)
        )
    })?;
    let ns = dt.unix_timestamp_nanos();
    i64::try_from(ns)
        .ok()
        .filter(|v| (0..=MAX_TIME_NS).contains(v))
        .ok_or_else(|| format!("'{}' is out of range", shorten(t)))
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Resolves `from`/`to` (defaults: the last hour), checking order and the
/// longest allowed range.
pub fn resolve_range(
    from: Option<&str>,
    to: Option<&str>,
    now_ns: i64,
    max_range_ns: i64,
) -> Result<TimeRange, String> {
    let to = match to {
        Some(s) => parse_time(s, now_ns).map_err(|e| format!("to: {e}"))?,
        None => now_ns,
    };
    let from = match from {
        Some(s) => parse_time(s, now_ns).map_err(|e| format!("from: {e}"))?,
        None => to.saturating_sub(3600 * NS).max(0),
    };
    if from >= to {
        return Err("from must be before to".into());
    }
    if to - from > max_range_ns {
        return Err(format!(
            "the range is {}; at most {} is allowed",
            human(to - from),
            human(max_range_ns)
        ));
    }
    Ok(TimeRange { from, to })
}

/// A duration for messages (`7d`, `1h30m`, `45s`).
pub fn human(ns: i64) -> String {
    let mut s = ns / NS;
    if s == 0 {
        return format!("{}ms", ns / 1_000_000);
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

/// Steps a question can have, in seconds (nice to read on an axis).
const STEPS_S: &[i64] = &[
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];

/// The smallest nice step giving at most `points` buckets over the range (at least `min_step_ns`).
pub fn choose_step(range: TimeRange, points: u32, min_step_ns: i64) -> i64 {
    let points = i64::from(points.max(1));
    let want = (range.len_ns() + points - 1) / points;
    let want = want.max(min_step_ns).max(NS);
    STEPS_S
        .iter()
        .map(|s| s * NS)
        .find(|s| *s >= want)
        .unwrap_or_else(|| (want + 86_400 * NS - 1) / (86_400 * NS) * 86_400 * NS)
}

/// The buckets of a range: aligned start, step, count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    /// Start of the first bucket (a multiple of `step`, at or before `from`).
    pub start: i64,
    /// Bucket length, ns.
    pub step: i64,
    /// Number of buckets.
    pub count: usize,
}

impl Buckets {
    /// The buckets covering `range`.
    pub fn new(range: TimeRange, step: i64) -> Self {
        let start = range.from.div_euclid(step) * step;
        let count = ((range.to - start + step - 1) / step) as usize;
        Buckets { start, step, count }
    }

    /// The bucket of `ts`, when inside.
    pub fn index(&self, ts: i64) -> Option<usize> {
        if ts < self.start {
            return None;
        }
        let i = ((ts - self.start) / self.step) as usize;
        (i < self.count).then_some(i)
    }

    /// Start of bucket `i`.
    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// Step in seconds (rates divide by it).
    pub fn step_secs(&self) -> f64 {
        self.step as f64 / NS as f64
    }
}

/// Unix ns as RFC 3339 UTC.
pub fn rfc3339(ns: i64) -> String {
    flowlens_correlator::record::format_rfc3339(i128::from(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_583_200 * NS; // 2025-12-01T10:00:00Z

    #[test]
    fn times() {
        assert_eq!(parse_time("now", NOW), Ok(NOW));
        assert_eq!(parse_time("now-15m", NOW), Ok(NOW - 900 * NS));
        assert_eq!(parse_time("1764583200", NOW), Ok(NOW));
        assert_eq!(parse_time("1764583200.5", NOW), Ok(NOW + NS / 2));
        assert_eq!(parse_time("2025-12-01T10:00:00Z", NOW), Ok(NOW));
        assert_eq!(parse_time("2025-12-01T11:00:00+01:00", NOW), Ok(NOW));
        for bad in [
            "yesterday",
            "now-5x",
            "99999999999999999999999",
            "1e9",
            "-5",
            "now-",
        ] {
            assert!(parse_time(bad, NOW).is_err(), "{bad}");
        }
        assert!(parse_time("now-999999999999w", NOW).is_err());
    }

    #[test]
    fn ranges() {
        let r = resolve_range(None, None, NOW, 7 * 86_400 * NS).unwrap();
        assert_eq!(
            r,
            TimeRange {
                from: NOW - 3600 * NS,
                to: NOW
            }
        );
        let e = resolve_range(Some("now"), Some("now-1h"), NOW, i64::MAX).unwrap_err();
        assert!(e.contains("before"), "{e}");
        let e = resolve_range(Some("now-30d"), None, NOW, 7 * 86_400 * NS).unwrap_err();
        assert!(e.contains("30d") && e.contains("7d"), "{e}");
        assert_eq!(human(5400 * NS), "1h30m");
    }

    #[test]
    fn steps_and_buckets() {
        let r = TimeRange {
            from: NOW - 3600 * NS,
            to: NOW,
        };
        assert_eq!(choose_step(r, 120, 0), 30 * NS);
        assert_eq!(choose_step(r, 100, 0), 60 * NS);
        assert_eq!(choose_step(r, 100_000, 0), NS, "at least a second");
        assert_eq!(choose_step(r, 120, 45 * NS), 60 * NS);
        let week = TimeRange {
            from: NOW - 30 * 86_400 * NS,
            to: NOW,
        };
        assert_eq!(choose_step(week, 1, 0), 30 * 86_400 * NS);
        let r = TimeRange {
            from: 95 * NS,
            to: 305 * NS,
        };
        let b = Buckets::new(r, 100 * NS);
        assert_eq!((b.start, b.count), (0, 4));
        assert_eq!(b.index(94 * NS), Some(0));
        assert_eq!(b.index(300 * NS), Some(3));
        assert_eq!(b.index(400 * NS), None);
        assert_eq!(b.index(-1), None);
        assert_eq!(b.time(2), 200 * NS);
    }
}
