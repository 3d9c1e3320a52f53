//! Parsers of single values (durations, sizes) with bounds.

use std::time::Duration;

use super::error::ConfigError;
pub use crate::user_input::quote;

/// The range a duration setting accepts.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl Bounds {
    /// From `min` to `max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

/// `export_interval`: 100 ms to a day.
pub const EXPORT_INTERVAL: Bounds = Bounds::new(Duration::from_millis(100), DAY);
/// `idle_timeout`: up to a week.
pub const IDLE_TIMEOUT: Bounds =
    Bounds::new(Duration::from_millis(1), Duration::from_secs(7 * 86_400));
/// A replay's export interval and idle timeout (capture time: a capture may
/// span years, and one interval over all of it is a common use).
pub const CAPTURE_TIME: Bounds = Bounds::new(
    Duration::from_nanos(1),
    Duration::from_secs(100 * 365 * 86_400),
);
/// InfluxDB `timeout` and `close_timeout`: up to an hour.
pub const INFLUX_TIMEOUT: Bounds = Bounds::new(Duration::from_millis(1), Duration::from_secs(3600));

/// A duration as the user wrote it: `1m30s`, `500ms`, `2h` (humantime's
/// units), or a bare number of seconds (`10`, `1.5`); within `bounds`.
pub fn parse_duration(
    what: &'static str,
    raw: &str,
    bounds: Bounds,
) -> Result<Duration, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { what, message };
    let s = raw.trim();
    let bare = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let d = if bare {
        let secs: f64 = s
            .parse()
            .map_err(|_| invalid(format!("{} is not a number of seconds", quote(raw))))?;
        Duration::try_from_secs_f64(secs).map_err(|_| {
            invalid(format!(
                "{} is too long (at most {})",
                quote(raw),
                humantime::format_duration(bounds.max)
            ))
        })?
    } else {
        humantime::parse_duration(s).map_err(|e| {
            invalid(format!(
                "{} is not a duration (examples: 10s, 500ms, 1m30s, or seconds): {e}",
                quote(raw)
            ))
        })?
    };
    if d.is_zero() {
        return Err(invalid(format!("{} must be positive", quote(raw))));
    }
    if d < bounds.min {
        return Err(invalid(format!(
            "{} is too short (at least {})",
            quote(raw),
            humantime::format_duration(bounds.min)
        )));
    }
    if d > bounds.max {
        return Err(invalid(format!(
            "{} is too long (at most {})",
            quote(raw),
            humantime::format_duration(bounds.max)
        )));
    }
    Ok(d)
}

/// A size: `1048576`, `100k`, `512MiB`, `1G`. K, M, G and T are powers of
/// 1024 with or without `B`/`iB` (as documented; the `bytesize` crate reads
/// `KB` as 1000, which would change what existing config files mean).
pub fn parse_size(what: &'static str, raw: &str) -> Result<u64, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { what, message };
    let t = raw.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        invalid(format!(
            "{} is not a size (examples: 1048576, 512MiB, 1G)",
            quote(raw)
        ))
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(invalid(format!(
                "{}: unknown unit {} (use K, M, G)",
                quote(raw),
                quote(unit.trim())
            )))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid(format!("{} is too large", quote(raw))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: Bounds = Bounds::new(Duration::from_nanos(1), Duration::MAX);

    fn d(s: &str) -> Result<Duration, String> {
        parse_duration("test", s, ANY).map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(d("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("3"), Ok(Duration::from_secs(3)));
        assert_eq!(d("1.5"), Ok(Duration::from_millis(1500)));
        assert!(d("10x").is_err());
        assert!(d("").is_err());
        assert!(d("0s").is_err());
        assert!(d("-1s").is_err());
        assert!(d("1.2.3").is_err());
    }

    #[test]
    fn oversized_durations_are_errors_not_panics() {
        for raw in [
            "18446744073709551616",
            "99999999999999999999999",
            "99999999999999999999999h",
            "18446744073709551615s",
            "18446744073.8",
        ] {
            let e = parse_duration("idle timeout", raw, IDLE_TIMEOUT).expect_err(raw);
            let msg = e.to_string();
            assert!(msg.starts_with("invalid idle timeout: '"), "{raw}: {msg}");
            assert!(msg.contains(raw), "{raw}: {msg}");
        }
        // ~584 years was read as ~90 ms before.
        let e = parse_duration("idle timeout", "18446744073.8", IDLE_TIMEOUT).expect_err("long");
        assert!(e.to_string().contains("too long (at most 7days)"), "{e}");
    }

    #[test]
    fn bounds_are_named() {
        let e = parse_duration("export interval", "50ms", EXPORT_INTERVAL).expect_err("short");
        assert!(e.to_string().contains("at least 100ms"), "{e}");
        assert!(parse_duration("export interval", "100ms", EXPORT_INTERVAL).is_ok());
        assert!(parse_duration("export interval", "1day", EXPORT_INTERVAL).is_ok());
        assert!(parse_duration("export interval", "25h", EXPORT_INTERVAL).is_err());
    }

    #[test]
    fn sizes() {
        let s = |v: &str| parse_size("size", v).map_err(|e| e.to_string());
        assert_eq!(s("1048576"), Ok(1 << 20));
        assert_eq!(s("512MiB"), Ok(512 << 20));
        assert_eq!(s("1G"), Ok(1 << 30));
        assert_eq!(s("100k"), Ok(100 << 10));
        assert!(s("1Q").is_err());
        assert!(s("").is_err());
        assert!(s("99999999999T").is_err());
    }

    #[test]
    fn long_input_is_quoted_truncated() {
        let long = "x".repeat(100_000);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.contains("100000 characters"), "{q}");
        let e = parse_duration("export interval", &long, EXPORT_INTERVAL).expect_err("long");
        assert!(e.to_string().len() < 400, "{e}");
        assert_eq!(quote("eth0"), "'eth0'");
    }
}
