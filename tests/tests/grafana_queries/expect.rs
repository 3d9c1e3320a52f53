//! What the scenario implies, from the collector's JSON records of the run (an implementation of the
//! schema's rules independent of the encoder's), and the queries run and read back as Grafana would.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use flowlens_tests::influx::Series;

/// `$__interval` of every query: Grafana's min interval for flowlens (grafana/provisioning).
pub const INTERVAL_S: i64 = 10;
/// The database the tests write.
pub const DB: &str = "flowlens";

// ---------------------------------------------------------------------------------------------------
// What the scenario implies, from the collector's JSON records (an implementation of the schema's
// rules independent of the encoder's)

/// One local end of a record, as the rollup sees it.
#[derive(Clone, Debug)]
pub struct End {
    pub tags: BTreeMap<&'static str, String>,
    pub sent: i64,
    pub recv: i64,
    /// The record's interval end, Unix ns.
    pub ts: i64,
    pub sig: Sig,
}

/// The golden signals of one local end, summed as the rollup sums them (docs/schema.md, `flow_rollup`).
#[derive(Clone, Debug, Default)]
pub struct Sig {
    pub rtt_sum: i64,
    pub rtt_n: i64,
    pub rtt_max: Option<i64>,
    /// Both directions (the `out` and the `in` point together).
    pub retransmits: i64,
    pub resets: i64,
    pub connect_errors: i64,
    pub dns_queries: i64,
    pub dns_responses: i64,
    pub dns_lat_sum: i64,
    pub dns_lat_n: i64,
    pub dns_lat_max: Option<i64>,
    /// nxdomain, servfail, refused, unanswered.
    pub dns_errors: [i64; 4],
    pub peer_name: Option<String>,
}

impl Sig {
    fn of(r: &Value, other: &Value) -> Sig {
        let avg = |k: &str, n: &str| match (r[k].as_i64(), n_of(&r[n])) {
            (Some(a), n) if n > 0 => (a * n, n),
            _ => (0, 0),
        };
        let (rtt_sum, rtt_n) = avg("rtt_avg_us", "rtt_samples");
        let (dns_lat_sum, dns_lat_n) = avg("dns_latency_avg_us", "dns_latency_samples");
        Sig {
            rtt_sum,
            rtt_n,
            rtt_max: r["rtt_max_us"].as_i64(),
            retransmits: n_of(&r["retransmits_c2s"]) + n_of(&r["retransmits_s2c"]),
            resets: n_of(&r["resets_c2s"]) + n_of(&r["resets_s2c"]),
            connect_errors: i64::from(r["connect_error"].is_string()),
            dns_queries: n_of(&r["dns_queries"]),
            dns_responses: n_of(&r["dns_responses"]),
            dns_lat_sum,
            dns_lat_n,
            dns_lat_max: r["dns_latency_max_us"].as_i64(),
            dns_errors: [
                "dns_nxdomain",
                "dns_servfail",
                "dns_refused",
                "dns_unanswered",
            ]
            .map(|k| n_of(&r[k])),
            peer_name: other["name"].as_str().map(str::to_owned),
        }
    }
}

fn n_of(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

pub fn label(e: &Value) -> String {
    match (e["container_id"].as_str(), e["container_name"].as_str()) {
        (None, _) => "host".into(),
        (Some(_), Some(n)) if !n.is_empty() => n.into(),
        (Some(id), _) => id.chars().take(12).collect(),
    }
}

pub fn user_label(e: &Value) -> String {
    match e["user"].as_str() {
        Some(u) if !u.is_empty() => u.into(),
        _ => e["uid"].to_string(),
    }
}

pub fn server_port(r: &Value) -> String {
    let p = r["server"]["port"].as_u64().unwrap_or(0);
    let icmp = r["proto"].as_str().unwrap_or("").starts_with("icmp");
    if p == 0 || icmp {
        String::new()
    } else {
        p.to_string()
    }
}

pub fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

pub fn ends(records: &[Value]) -> Vec<End> {
    let mut out = Vec::new();
    for r in records {
        for (me, other, sent, recv, role) in [
            ("client", "server", "bytes_c2s", "bytes_s2c", "client"),
            ("server", "client", "bytes_s2c", "bytes_c2s", "server"),
        ] {
            let (e, o) = (&r[me], &r[other]);
            if !e["local"].as_bool().unwrap_or(false) {
                continue;
            }
            let o_local = o["local"].as_bool().unwrap_or(false);
            let peer = if o_local && o["container_id"].is_string() {
                label(o)
            } else {
                o["addr"].as_str().unwrap_or("").to_owned()
            };
            let tags = BTreeMap::from([
                ("comm", e["comm"].as_str().unwrap_or("").to_owned()),
                ("username", user_label(e)),
                ("container", label(e)),
                ("peer", peer),
                ("peer_local", o_local.to_string()),
                ("role", role.to_owned()),
                ("server_port", server_port(r)),
                ("proto", r["proto"].as_str().unwrap_or("").to_owned()),
                ("host", r["host"].as_str().unwrap_or("").to_owned()),
            ]);
            out.push(End {
                tags,
                sent: n(&r[sent]),
                recv: n(&r[recv]),
                ts: n(&r["ts_unix_ns"]),
                sig: Sig::of(r, o),
            });
        }
    }
    out
}

/// Totals per group key.
pub type Totals = BTreeMap<Vec<String>, i64>;

pub fn group<T>(
    items: &[T],
    keep: impl Fn(&T) -> bool,
    key: impl Fn(&T) -> Vec<String>,
    val: impl Fn(&T) -> i64,
) -> Totals {
    let mut m = Totals::new();
    for i in items.iter().filter(|i| keep(i)) {
        *m.entry(key(i)).or_default() += val(i);
    }
    m
}

pub fn flow_tag(r: &Value, key: &str) -> String {
    let side = |s: &str| &r[s];
    match key {
        "host" | "proto" => r[key].as_str().unwrap_or("").into(),
        "server_port" => server_port(r),
        k => {
            let (s, field) = k.split_once('_').expect("side_field");
            let e = side(s);
            if !e["local"].as_bool().unwrap_or(false) {
                return String::new();
            }
            match field {
                "comm" => e["comm"].as_str().unwrap_or("").into(),
                "user" => user_label(e),
                "container_name" => label(e),
                _ => panic!("flow tag {k}"),
            }
        }
    }
}

pub fn bytes(r: &Value) -> i64 {
    n(&r["bytes_c2s"]) + n(&r["bytes_s2c"])
}

// ---------------------------------------------------------------------------------------------------
// Running the queries as Grafana would

/// Grafana's regex escaping of variable values in InfluxQL (`influxRegularEscape`).
pub fn regex_escape(v: &str) -> String {
    v.chars()
        .flat_map(|c| {
            let special = "\\^$*+?.()|[]{}/".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

pub struct Render {
    pub time_filter: String,
    /// name -> value as substituted (".*" for All).
    pub vars: Vec<(String, String)>,
}

impl Render {
    pub fn apply(&self, q: &str) -> String {
        let mut s = q
            .replace("$timeFilter", &self.time_filter)
            .replace("$__interval_ms", &(INTERVAL_S * 1000).to_string())
            .replace("$__interval", &format!("{INTERVAL_S}s"));
        let mut vars = self.vars.clone();
        vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (k, v) in &vars {
            s = s
                .replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v);
        }
        let b = s.as_bytes();
        let left = (0..b.len().saturating_sub(1))
            .any(|i| b[i] == b'$' && (b[i + 1].is_ascii_alphabetic() || b"_{".contains(&b[i + 1])));
        assert!(!left, "unsubstituted variable in {s}");
        s
    }
}

/// A rate time series back to totals per group (value × interval, summed over the buckets).
pub fn series_totals(res: &[Series], keys: &[&str]) -> Totals {
    let mut m = Totals::new();
    for s in res {
        let k: Vec<String> = keys
            .iter()
            .map(|k| s.tags.get(*k).cloned().unwrap_or_default())
            .collect();
        let mut total = 0.0;
        for r in &s.rows {
            let v = r
                .iter()
                .find(|(c, _)| *c != "time")
                .map(|(_, v)| v.as_f64().unwrap_or(0.0));
            total += v.unwrap_or(0.0) * INTERVAL_S as f64;
        }
        *m.entry(k).or_default() += total.round() as i64;
    }
    m.retain(|_, v| *v != 0);
    m
}

/// A `top()` table: rows in the order InfluxDB returned them.
pub fn table_rows(res: &[Series], keys: &[&str], value: &str) -> Vec<(Vec<String>, i64)> {
    res.iter()
        .flat_map(|s| &s.rows)
        .map(|r| {
            let k = keys
                .iter()
                .map(|k| match &r.get(*k) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect();
            (
                k,
                r.get(value).and_then(Value::as_f64).unwrap_or(-1.0).round() as i64,
            )
        })
        .collect()
}

/// The top `n` of `want`, heaviest first (ties: InfluxDB's order is not checked).
pub fn top_n(want: &Totals, n: usize) -> Vec<(Vec<String>, i64)> {
    let mut v: Vec<_> = want.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

pub fn check_table(what: &str, mut got: Vec<(Vec<String>, i64)>, want: &Totals, n: usize) {
    // A conversation can have a record without a byte (a failed connect, or an RTT sample of a socket on
    // an interface that is not watched, such as the collector's own InfluxDB connection): InfluxDB lists
    // its group with 0, the oracle (totals without zeros) does not. Zero rows rank nothing; every row
    // with traffic must still match exactly.
    got.retain(|(k, v)| *v != 0 || want.contains_key(k));
    let expect = top_n(want, n);
    let values: Vec<i64> = got.iter().map(|(_, v)| *v).collect();
    assert!(
        values.windows(2).all(|w| w[0] >= w[1]),
        "{what}: not heaviest first: {got:?}"
    );
    let as_set = |v: &[(Vec<String>, i64)]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(as_set(&got), as_set(&expect), "{what}");
    assert!(!got.is_empty(), "{what}: empty");
}

/// Rows of a grouped statement by group: the group's key from the series tags or the row's columns,
/// then the named columns as numbers (null: `None`), in InfluxDB's row order.
pub fn grouped_rows(
    res: &[Series],
    keys: &[&str],
    cols: &[&str],
) -> Vec<(Vec<String>, Vec<Option<f64>>)> {
    let mut out = Vec::new();
    for s in res {
        for r in &s.rows {
            let k = keys
                .iter()
                .map(|k| match (s.tags.get(*k), r.get(*k)) {
                    (Some(t), _) => t.clone(),
                    (None, Some(Value::String(v))) => v.clone(),
                    (None, Some(Value::Null) | None) => String::new(),
                    (None, Some(v)) => v.to_string(),
                })
                .collect();
            out.push((
                k,
                cols.iter()
                    .map(|c| r.get(*c).and_then(Value::as_f64))
                    .collect(),
            ));
        }
    }
    out
}

/// Whether two means agree (InfluxDB divides in floating point).
pub fn same_mean(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}
