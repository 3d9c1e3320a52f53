//! Metrics as samples (name, labels, value) that `/metrics` renders in the
//! Prometheus text format and `/api/health` shows and keeps over time. The
//! collector provides its self-metrics through [`MetricsSource`]; the web
//! server adds its own (requests, cache, store).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use serde::Serialize;

/// Counter (only grows, resets at restart) or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Cumulative.
    Counter,
    /// A current value.
    Gauge,
}

/// One metric value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Metric name (`flowlens_...`).
    pub name: String,
    /// One line of help.
    pub help: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A counter.
    pub fn counter(name: &str, help: &str, value: u64) -> Self {
        Sample {
            name: name.to_owned(),
            help: help.to_owned(),
            kind: Kind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    /// A gauge.
    pub fn gauge(name: &str, help: &str, value: f64) -> Self {
        Sample {
            name: name.to_owned(),
            help: help.to_owned(),
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    /// Adds a label.
    pub fn label(mut self, k: &str, v: impl Into<String>) -> Self {
        self.labels.push((k.to_owned(), v.into()));
        self
    }

    /// `name{k="v",...}`: the series identity.
    pub fn key(&self) -> String {
        let mut s = sanitize(&self.name);
        if !self.labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{}=\"{}\"", sanitize(k), escape_label(v));
            }
            s.push('}');
        }
        s
    }
}

/// Where the collector's self-metrics come from.
pub trait MetricsSource: Send + Sync {
    /// Appends the current samples.
    fn samples(&self, out: &mut Vec<Sample>);
}

/// No collector (e.g. `flowlens web`): no samples.
pub struct NoMetrics;

impl MetricsSource for NoMetrics {
    fn samples(&self, _out: &mut Vec<Sample>) {}
}

fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn escape_label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(samples: &[Sample]) -> String {
    let mut groups: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups.entry(sanitize(&s.name)).or_default().push(s);
    }
    let mut out = String::new();
    for (name, v) in groups {
        let first = v[0];
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&first.help));
        let kind = match first.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in v {
            let _ = writeln!(out, "{} {}", s.key(), number(s.value));
        }
    }
    out
}

/// The web server's own counters.
#[derive(Debug, Default)]
pub struct WebCounters {
    /// Requests answered, by route and status class.
    pub requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Sum of handler time, ns, by route.
    pub time_ns: Mutex<BTreeMap<String, u64>>,
    /// Answers served from the cache.
    pub cache_hits: AtomicU64,
    /// Answers computed.
    pub cache_misses: AtomicU64,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// Requests refused for a foreign Host header.
    pub bad_host: AtomicU64,
}

impl WebCounters {
    /// Counts a request.
    pub fn observe(&self, route: &str, status: u16, ns: u64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_owned(), status)).or_default() += 1;
        }
        if let Ok(mut m) = self.time_ns.lock() {
            *m.entry(route.to_owned()).or_default() += ns;
        }
    }

    /// As samples.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                out.push(
                    Sample::counter(
                        "flowlens_web_requests_total",
                        "HTTP requests answered by the web server",
                        *n,
                    )
                    .label("route", route.clone())
                    .label("status", status.to_string()),
                );
            }
        }
        if let Ok(m) = self.time_ns.lock() {
            for (route, ns) in m.iter() {
                let mut s = Sample::counter(
                    "flowlens_web_request_seconds_total",
                    "Time spent answering requests, seconds",
                    0,
                )
                .label("route", route.clone());
                s.value = *ns as f64 / 1e9;
                out.push(s);
            }
        }
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push(Sample::counter(
            "flowlens_web_cache_hits_total",
            "API answers served from the short response cache",
            g(&self.cache_hits),
        ));
        out.push(Sample::counter(
            "flowlens_web_cache_misses_total",
            "API answers computed",
            g(&self.cache_misses),
        ));
        out.push(Sample::counter(
            "flowlens_web_unauthorized_total",
            "Requests refused for a missing or wrong bearer token",
            g(&self.unauthorized),
        ));
        out.push(Sample::counter(
            "flowlens_web_bad_host_total",
            "Requests refused for a Host header that is not this server (DNS rebinding guard)",
            g(&self.bad_host),
        ));
    }
}

/// `flowlens_build_info{version=...} 1`.
pub fn build_info(out: &mut Vec<Sample>) {
    out.push(
        Sample::gauge(
            "flowlens_build_info",
            "Build information (value is always 1)",
            1.0,
        )
        .label("version", env!("CARGO_PKG_VERSION"))
        .label("rustc_min", env!("CARGO_PKG_RUST_VERSION")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let s = vec![
            Sample::counter("flowlens_lost_total", "Data lost, by reason", 3)
                .label("reason", "ring\"buf\\\n"),
            Sample::counter("flowlens_lost_total", "Data lost, by reason", 0).label("reason", "x"),
            Sample::gauge("weird-name", "a\nb", 1.5),
        ];
        let t = render_prometheus(&s);
        assert_eq!(
            t,
            "# HELP flowlens_lost_total Data lost, by reason\n\
             # TYPE flowlens_lost_total counter\n\
             flowlens_lost_total{reason=\"ring\\\"buf\\\\\\n\"} 3\n\
             flowlens_lost_total{reason=\"x\"} 0\n\
             # HELP weird_name a\\nb\n\
             # TYPE weird_name gauge\n\
             weird_name 1.5\n"
        );
    }
}
