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

pub fn check_table(what: &str, got: Vec<(Vec<String>, i64)>, want: &Totals, n: usize) {
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
