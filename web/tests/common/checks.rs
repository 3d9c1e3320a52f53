//! API checks shared by the embedded-store tests (web/tests) and the
//! InfluxDB tests (tests/tests/web_influx.rs): every endpoint through the
//! router (`oneshot`), exact numbers computed here from the records
//! themselves (an oracle independent of flowlens-query), errors and
//! hostile inputs.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, Request, StatusCode},
    Router,
};
use flowlens_correlator::record::{ConversationRecord, Endpoint, ProcessAttribution};
use serde_json::Value;
use tower::ServiceExt;

/// GET `uri`; (status, headers, body text).
pub async fn get_raw(
    app: &Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = app
        .clone()
        .oneshot(b.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = r.status();
    let h = r.headers().clone();
    let body = to_bytes(r.into_body(), 256 << 20).await.expect("body");
    (status, h, String::from_utf8_lossy(&body).into_owned())
}

/// GET `uri` expecting JSON; (status, body).
pub async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, h, body) = get_raw(app, uri, &[]).await;
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{uri}: {s} {ct}: {body}"
    );
    (
        s,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{uri}: {e}: {body}")),
    )
}

/// POST a form to `uri`; (status, JSON body).
pub async fn post(app: &Router, uri: &str, form: &str) -> (StatusCode, Value) {
    let req = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .expect("request");
    let r = app.clone().oneshot(req).await.expect("infallible");
    let s = r.status();
    let body = to_bytes(r.into_body(), 256 << 20).await.expect("body");
    (
        s,
        serde_json::from_str(&String::from_utf8_lossy(&body)).unwrap_or(Value::Null),
    )
}

/// GET expecting 200 JSON.
pub async fn ok(app: &Router, uri: &str) -> Value {
    let (s, v) = get(app, uri).await;
    assert_eq!(s, StatusCode::OK, "{uri}: {v}");
    v
}

/// GET expecting an error JSON with `status` and `code`.
pub async fn err(app: &Router, uri: &str, status: u16, code: &str) -> Value {
    let (s, v) = get(app, uri).await;
    assert_eq!(s.as_u16(), status, "{uri}: {v}");
    assert_eq!(v["error"]["code"], code, "{uri}: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{uri}: {v}"
    );
    v
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- the oracle ------------------------------------------------------------

/// Label of a local end's container, as docs/schema.md defines it.
pub fn container_of(p: &ProcessAttribution) -> String {
    match (&p.container_id, &p.container_name) {
        (None, _) => "host".into(),
        (Some(_), Some(n)) if !n.is_empty() => n.clone(),
        (Some(id), _) => id[..12].to_owned(),
    }
}

/// User label.
pub fn user_of(p: &ProcessAttribution) -> String {
    p.user.clone().unwrap_or_else(|| p.uid.to_string())
}

/// One local end: (container, process, user, role, peer, server_port, sent, received).
#[derive(Clone, Debug)]
pub struct OEnd {
    pub container: String,
    pub process: String,
    pub user: String,
    pub role: &'static str,
    pub peer: String,
    pub server_port: Option<u16>,
    pub local_addr: String,
    pub peer_addr: String,
    pub sent: u64,
    pub received: u64,
}

fn peer_of(other: &Endpoint) -> String {
    match &other.process {
        Some(p) if p.container_id.is_some() => container_of(p),
        _ => other.addr.clone(),
    }
}

/// Every local end of every record.
pub fn ends(records: &[ConversationRecord]) -> Vec<OEnd> {
    let mut v = Vec::new();
    for r in records {
        let sp = (r.proto != "icmp" && r.proto != "icmpv6" && r.server.port != 0)
            .then_some(r.server.port);
        if let Some(p) = &r.client.process {
            v.push(OEnd {
                container: container_of(p),
                process: p.comm.clone(),
                user: user_of(p),
                role: "client",
                peer: peer_of(&r.server),
                server_port: sp,
                local_addr: r.client.addr.clone(),
                peer_addr: r.server.addr.clone(),
                sent: r.bytes_c2s,
                received: r.bytes_s2c,
            });
        }
        if let Some(p) = &r.server.process {
            v.push(OEnd {
                container: container_of(p),
                process: p.comm.clone(),
                user: user_of(p),
                role: "server",
                peer: peer_of(&r.client),
                server_port: sp,
                local_addr: r.server.addr.clone(),
                peer_addr: r.client.addr.clone(),
                sent: r.bytes_s2c,
                received: r.bytes_c2s,
            });
        }
    }
    v
}

/// Sum of sent + received per key.
pub fn totals_by(ends: &[OEnd], key: impl Fn(&OEnd) -> Option<String>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in ends {
        if let Some(k) = key(e) {
            *m.entry(k).or_default() += e.sent + e.received;
        }
    }
    m
}

fn series_totals(v: &Value, dim: &str) -> BTreeMap<String, u64> {
    v["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter(|s| s["other"] == false)
        .map(|s| {
            (
                s["dims"][dim].as_str().unwrap_or("(none)").to_owned(),
                s["stats"]["total"].as_u64().expect("total"),
            )
        })
        .collect()
}

fn rows_totals(v: &Value, dim: &str) -> BTreeMap<String, u64> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|s| s["other"] == false)
        .map(|s| {
            (
                s["dims"][dim].as_str().unwrap_or("(none)").to_owned(),
                s["total"].as_u64().expect("total"),
            )
        })
        .collect()
}

/// The questions of the small-host scenario, with exact answers.
pub struct Scenario<'a> {
    /// Router under test.
    pub app: &'a Router,
    /// Every record written.
    pub records: Vec<ConversationRecord>,
    /// `from=...&to=...` covering all of them.
    pub range: String,
}

impl Scenario<'_> {
    fn u(&self, path: &str, q: &str) -> String {
        if q.is_empty() {
            format!("{path}?{}", self.range)
        } else {
            format!("{path}?{}&{q}", self.range)
        }
    }

    /// The golden signals of the conversation list, against an oracle computed here from the records:
    /// sorted by RTT, by connect latency and by errors; RTT recombined over the range by samples; the
    /// refused connect on its process; names on the ends; the totals; the CSV columns.
    async fn signals(&self) {
        #[derive(Default)]
        struct Oracle {
            rtt_sum: u64,
            rtt_n: u64,
            rtt_min: Option<u64>,
            rtt_max: Option<u64>,
            connect_us: Option<u64>,
            connect_error: Option<String>,
            errors: u64,
        }
        type Key = (String, u16, String, u16, i64);
        let mut by: BTreeMap<Key, Oracle> = BTreeMap::new();
        let (mut retransmits, mut resets, mut refused, mut dns_errors) = (0, 0, 0, 0);
        for r in &self.records {
            let s = &r.signals;
            let key = (
                r.client.addr.clone(),
                r.client.port,
                r.server.addr.clone(),
                r.server.port,
                r.first_seen_unix_ns,
            );
            let o = by.entry(key).or_default();
            if let Some(avg) = s.rtt_avg_us {
                o.rtt_sum += avg * s.rtt_samples;
                o.rtt_n += s.rtt_samples;
            }
            o.rtt_min = o.rtt_min.into_iter().chain(s.rtt_min_us).min();
            o.rtt_max = o.rtt_max.max(s.rtt_max_us);
            o.connect_us = o.connect_us.max(s.connect_us);
            if s.connect_error.is_some() {
                o.connect_error = s.connect_error.clone();
                refused += 1;
            }
            o.errors += s.tcp_errors() + s.dns_errors();
            retransmits += s.retransmits_c2s + s.retransmits_s2c;
            resets += s.resets_c2s + s.resets_s2c;
            dns_errors += s.dns_errors();
        }
        let key_of = |row: &Value| -> (String, u64, String) {
            (
                row["client"]["addr"].as_str().unwrap_or("").to_owned(),
                row["client"]["port"].as_u64().unwrap_or(0),
                row["server"]["addr"].as_str().unwrap_or("").to_owned(),
            )
        };
        let oracle_key = |k: &Key| (k.0.clone(), u64::from(k.1), k.2.clone());

        // Slowest: the largest mean RTT over the whole range, recombined by samples.
        let (slow_key, slow) = by
            .iter()
            .filter(|(_, o)| o.rtt_n > 0)
            .max_by_key(|(_, o)| o.rtt_sum / o.rtt_n)
            .expect("a conversation with RTT samples");
        let v = ok(self.app, &self.u("/api/conversations", "sort=rtt&limit=2")).await;
        let top = &v["rows"][0];
        assert_eq!(key_of(top), oracle_key(slow_key), "{v}");
        assert_eq!(top["rtt_avg_us"], slow.rtt_sum / slow.rtt_n, "{v}");
        assert_eq!(
            (top["rtt_min_us"].as_u64(), top["rtt_max_us"].as_u64()),
            (slow.rtt_min, slow.rtt_max)
        );
        assert_eq!(top["server"]["name"], "api.partner.example", "{v}");
        assert_eq!(top["server"]["addr"], "198.51.100.20");
        assert_eq!(top["client"]["name"], Value::Null);

        // Most errors: the three conversations with errors, in order (13, 6, 1 by construction).
        let mut want: Vec<_> = by
            .iter()
            .filter(|(_, o)| o.errors > 0)
            .map(|(k, o)| (o.errors, oracle_key(k)))
            .collect();
        want.sort_by_key(|w| std::cmp::Reverse(w.0));
        assert_eq!(want.len(), 3, "errors on api, the resolver and one curl");
        let v = ok(
            self.app,
            &self.u("/api/conversations", "sort=errors&limit=3"),
        )
        .await;
        let got: Vec<_> = v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| (r["errors"].as_u64().unwrap_or(0), key_of(r)))
            .collect();
        assert_eq!(got, want, "{v}");
        let failed = &v["rows"][2];
        assert_eq!(failed["connect_error"], "refused", "{v}");
        assert_eq!(failed["client"]["process"], "curl");
        assert_eq!(failed["server"]["name"], "files.example");
        assert_eq!(failed["connect_us"], Value::Null);
        assert_eq!(
            (
                v["totals"]["retransmits"].as_u64(),
                v["totals"]["resets"].as_u64()
            ),
            (Some(retransmits), Some(resets))
        );
        assert_eq!(
            (
                v["totals"]["connect_errors"].as_u64(),
                v["totals"]["dns_errors"].as_u64()
            ),
            (Some(refused), Some(dns_errors))
        );

        // Slowest connect.
        let (ck, co) = by
            .iter()
            .filter(|(_, o)| o.connect_us.is_some())
            .max_by_key(|(_, o)| o.connect_us)
            .expect("a connect");
        let v = ok(
            self.app,
            &self.u("/api/conversations", "sort=connect&limit=1"),
        )
        .await;
        assert_eq!(key_of(&v["rows"][0]), oracle_key(ck), "{v}");
        assert_eq!(v["rows"][0]["connect_us"].as_u64(), co.connect_us);

        // Ascending RTT: conversations without samples first, then increasing means.
        let v = ok(
            self.app,
            &self.u("/api/conversations", "sort=rtt&order=asc&limit=1000"),
        )
        .await;
        let means: Vec<i64> = v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["rtt_avg_us"].as_i64().unwrap_or(-1))
            .collect();
        assert!(means.windows(2).all(|w| w[0] <= w[1]), "{means:?}");

        let (_, _, csv) = get_raw(
            self.app,
            &self.u("/api/conversations", "format=csv&sort=rtt"),
            &[],
        )
        .await;
        let mut lines = csv.split("\r\n");
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        let first: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        // Counted from the end: the process name of this row has a quoted comma.
        let col = |name: &str| {
            header.iter().position(|h| *h == name).map(|i| {
                first
                    .len()
                    .checked_sub(header.len() - i)
                    .and_then(|j| first.get(j).copied())
            })
        };
        assert_eq!(
            col("server_name"),
            Some(Some("api.partner.example")),
            "{csv}"
        );
        let mean = (slow.rtt_sum / slow.rtt_n).to_string();
        assert_eq!(col("rtt_avg_us"), Some(Some(mean.as_str())), "{csv}");
    }

    /// Every endpoint answers the scenario's questions exactly.
    pub async fn every_endpoint(&self) {
        let ends = ends(&self.records);
        let by_container = totals_by(&ends, |e| Some(e.container.clone()));
        let all: u64 = ends.iter().map(|e| e.sent + e.received).sum();

        // Series by container: totals per container, Other, grand total.
        let v = ok(
            self.app,
            &self.u("/api/series", "dims=container&top=50&points=14"),
        )
        .await;
        assert_eq!(series_totals(&v, "container"), by_container, "{v}");
        assert_eq!(v["totals"]["total"], all);
        assert_eq!(v["unit"], "bytes/s");
        let times = v["times"].as_array().expect("times").len();
        assert!((13..=15).contains(&times), "{times}");
        let v = ok(self.app, &self.u("/api/series", "dims=container&top=2")).await;
        let s = v["series"].as_array().expect("series");
        assert_eq!(s.len(), 3, "top 2 and Other: {v}");
        assert_eq!(s[2]["name"], "Other");
        let mut sorted: Vec<(&String, &u64)> = by_container.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        assert_eq!(
            s[0]["dims"]["container"].as_str(),
            Some(sorted[0].0.as_str())
        );
        let rest: u64 = sorted[2..].iter().map(|x| *x.1).sum();
        assert_eq!(s[2]["stats"]["total"], rest);

        // Bidirectional: sent positive, received negative.
        let v = ok(
            self.app,
            &self.u(
                "/api/series",
                "dims=container&bidirectional=true&filter=container%20%3D%20web",
            ),
        )
        .await;
        let web: Vec<&OEnd> = ends.iter().filter(|e| e.container == "web").collect();
        let (sent, recv): (u64, u64) = (
            web.iter().map(|e| e.sent).sum(),
            web.iter().map(|e| e.received).sum(),
        );
        let s = v["series"].as_array().expect("series");
        assert_eq!(s.len(), 2, "{v}");
        assert_eq!(
            (s[0]["direction"].as_str(), s[0]["stats"]["total"].as_u64()),
            (Some("out"), Some(sent))
        );
        assert_eq!(
            (s[1]["direction"].as_str(), s[1]["stats"]["total"].as_u64()),
            (Some("in"), Some(recv))
        );
        assert!(s[1]["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|p| p[1].as_f64().unwrap_or(0.0) < 0.0));

        // Top processes, top server ports, users.
        let v = ok(self.app, &self.u("/api/top", "dims=process&top=50")).await;
        assert_eq!(
            rows_totals(&v, "process"),
            totals_by(&ends, |e| Some(e.process.clone()))
        );
        let r0 = &v["rows"][0];
        for k in ["min", "max", "avg", "p95", "percent"] {
            assert!(r0[k].is_number(), "{k}: {r0}");
        }
        let v = ok(self.app, &self.u("/api/top", "dims=server_port&top=50")).await;
        assert_eq!(
            rows_totals(&v, "server_port"),
            totals_by(&ends, |e| Some(
                e.server_port.map_or("(none)".into(), |p| p.to_string())
            ))
        );
        let v = ok(self.app, &self.u("/api/top", "dims=user,role&top=50")).await;
        let got: BTreeMap<String, u64> = v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    format!(
                        "{}/{}",
                        r["dims"]["user"].as_str().unwrap_or(""),
                        r["dims"]["role"].as_str().unwrap_or("")
                    ),
                    r["total"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            got,
            totals_by(&ends, |e| Some(format!("{}/{}", e.user, e.role)))
        );

        // Filters that need ports and addresses (records or record tags).
        let v = ok(
            self.app,
            &self.u(
                "/api/top",
                "dims=peer&top=50&filter=server_port%20%3D%20443",
            ),
        )
        .await;
        assert_eq!(
            rows_totals(&v, "peer"),
            totals_by(&ends, |e| (e.server_port == Some(443))
                .then(|| e.peer.clone()))
        );
        let f = enc("addr << 172.17.0.0/16 AND NOT container = db");
        let v = ok(
            self.app,
            &self.u("/api/top", &format!("dims=container&top=50&filter={f}")),
        )
        .await;
        assert_eq!(
            rows_totals(&v, "container"),
            totals_by(&ends, |e| {
                let in_net =
                    e.local_addr.starts_with("172.17.") || e.peer_addr.starts_with("172.17.");
                (in_net && e.container != "db").then(|| e.container.clone())
            })
        );
        let f = enc("local_addr << 172.17.0.0/16");
        let v = ok(
            self.app,
            &self.u("/api/top", &format!("dims=container&top=50&filter={f}")),
        )
        .await;
        assert_eq!(
            rows_totals(&v, "container"),
            totals_by(&ends, |e| e
                .local_addr
                .starts_with("172.17.")
                .then(|| e.container.clone()))
        );

        // Names that need escaping, exactly.
        let hostile = "py \"th'on\",=x";
        let f = enc(&format!(
            "process = {}",
            flowlens_query::filter::quote(hostile)
        ));
        let v = ok(
            self.app,
            &self.u("/api/top", &format!("dims=process&filter={f}")),
        )
        .await;
        let want = totals_by(&ends, |e| (e.process == hostile).then(|| e.process.clone()));
        assert_eq!(rows_totals(&v, "process"), want);
        assert!(want.values().all(|b| *b > 0));
        let f = enc("container = \"ünï-cødé api\" AND process ~ \"TH'ON\"");
        let v = ok(
            self.app,
            &self.u("/api/top", &format!("dims=container&filter={f}")),
        )
        .await;
        assert_eq!(
            rows_totals(&v, "container"),
            totals_by(&ends, |e| (e.container == "ünï-cødé api")
                .then(|| e.container.clone()))
        );
        let f =
            enc("process ~ \".*[(|\\\\\" OR container = \"x' OR 1=1; DROP DATABASE flowlens; --\"");
        let v = ok(
            self.app,
            &self.u("/api/top", &format!("dims=process&filter={f}")),
        )
        .await;
        assert_eq!(
            v["totals"]["total"], 0,
            "metacharacters are literal text: {v}"
        );

        // Sankey user -> container -> peer.
        let v = ok(
            self.app,
            &self.u("/api/sankey", "dims=user,container,peer&top=50"),
        )
        .await;
        assert_eq!(v["total"], all);
        let link = |s: &str, t: &str| {
            v["links"]
                .as_array()
                .expect("links")
                .iter()
                .find(|l| l["source"] == s && l["target"] == t)
                .and_then(|l| l["value"].as_u64())
        };
        let want: u64 = ends
            .iter()
            .filter(|e| e.user == "www-data" && e.container == "web")
            .map(|e| e.sent + e.received)
            .sum();
        assert_eq!(link("user: www-data", "container: web"), Some(want));
        let want: u64 = ends
            .iter()
            .filter(|e| e.container == "web" && e.peer == "db")
            .map(|e| e.sent + e.received)
            .sum();
        assert_eq!(link("container: web", "peer: db"), Some(want));

        // Conversations: totals of all records, the largest first, pages, CSV.
        let mut keys = BTreeSet::new();
        let (mut c2s, mut s2c) = (0u64, 0u64);
        for r in &self.records {
            keys.insert((
                r.proto.clone(),
                r.client.addr.clone(),
                r.client.port,
                r.server.addr.clone(),
                r.server.port,
                r.first_seen_unix_ns,
            ));
            c2s += r.bytes_c2s;
            s2c += r.bytes_s2c;
        }
        let v = ok(self.app, &self.u("/api/conversations", "limit=3")).await;
        assert_eq!(v["total_rows"], keys.len());
        assert_eq!(v["totals"]["bytes_c2s"], c2s);
        assert_eq!(v["totals"]["bytes_s2c"], s2c);
        assert_eq!(v["totals"]["records"], self.records.len());
        let rows = v["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["server"]["port"], 443);
        assert_eq!(rows[0]["server"]["container"], "web");
        assert_eq!(rows[0]["server"]["user"], "www-data");
        assert_eq!(rows[0]["client"]["addr"], "203.0.113.7");
        assert_eq!(rows[0]["client"]["local"], false);
        let big: u64 = self
            .records
            .iter()
            .filter(|r| r.client.addr == "203.0.113.7")
            .map(|r| r.bytes_c2s + r.bytes_s2c)
            .sum();
        assert_eq!(
            rows[0]["bytes_c2s"].as_u64().unwrap_or(0) + rows[0]["bytes_s2c"].as_u64().unwrap_or(0),
            big
        );
        let p2 = ok(self.app, &self.u("/api/conversations", "limit=2&offset=1")).await;
        assert_eq!(p2["rows"][0], rows[1]);
        let asc = ok(
            self.app,
            &self.u(
                "/api/conversations",
                "sort=packets_c2s&order=asc&limit=1000",
            ),
        )
        .await;
        let pk: Vec<u64> = asc["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["packets_c2s"].as_u64().unwrap_or(0))
            .collect();
        assert!(pk.windows(2).all(|w| w[0] <= w[1]), "{pk:?}");
        let f = enc("container = web");
        let v = ok(
            self.app,
            &self.u("/api/conversations", &format!("filter={f}")),
        )
        .await;
        assert_eq!(
            v["total_rows"], 3,
            "web serves 203.0.113.7 and the unnamed container, and calls db: {v}"
        );
        let f = enc("NOT container = web AND proto = tcp");
        let v = ok(
            self.app,
            &self.u("/api/conversations", &format!("filter={f}")),
        )
        .await;
        assert!(v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["client"]["container"] != "web" && r["server"]["container"] != "web"));
        let (s, h, csv) = get_raw(self.app, &self.u("/api/conversations", "format=csv"), &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv"));
        let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), keys.len() + 1, "{csv}");
        assert!(csv.contains("\"py \"\"th'on\"\",=x\""), "quoted CSV: {csv}");
        self.signals().await;

        // Topology: the edge between two containers, exact.
        let v = ok(self.app, &self.u("/api/topology", "expand=host:node-1")).await;
        let e = v["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .find(|e| e["source"] == "container:node-1/db" && e["target"] == "container:node-1/web")
            .unwrap_or_else(|| panic!("db-web edge: {v}"));
        let web_to_db: u64 = ends
            .iter()
            .filter(|x| x.container == "web" && x.peer == "db")
            .map(|x| x.sent)
            .sum();
        let db_to_web: u64 = ends
            .iter()
            .filter(|x| x.container == "db" && x.peer == "web")
            .map(|x| x.sent)
            .sum();
        assert_eq!(
            (e["forward"].as_u64(), e["backward"].as_u64()),
            (Some(db_to_web), Some(web_to_db))
        );
        let v = ok(self.app, &self.u("/api/topology", "")).await;
        assert!(v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["id"] == "host:node-1" && n["expandable"] == true));
        let v = ok(
            self.app,
            &self.u("/api/topology", "expand=host:node-1,container:node-1/web"),
        )
        .await;
        assert!(v["nodes"].as_array().expect("nodes").iter().any(|n| n["id"]
            == "process:node-1/web/nginx"
            && n["parent"] == "container:node-1/web"));

        // Entity: a container.
        let v = ok(self.app, &self.u("/api/entity", "kind=container&name=web")).await;
        assert_eq!(
            (
                v["totals"]["bytes_out"].as_u64(),
                v["totals"]["bytes_in"].as_u64()
            ),
            (Some(sent), Some(recv))
        );
        let peers = rows_totals(&v["tables"]["peers"], "peer");
        assert_eq!(
            peers,
            totals_by(&ends, |e| (e.container == "web").then(|| e.peer.clone()))
        );
        assert_eq!(v["conversations"]["totals"]["conversations"], 3);
        let v = ok(
            self.app,
            &self.u("/api/entity", "kind=remote&name=203.0.113.7"),
        )
        .await;
        assert_eq!(
            rows_totals(&v["tables"]["containers"], "container"),
            totals_by(&ends, |e| (e.peer == "203.0.113.7")
                .then(|| e.container.clone()))
        );

        // Completion from the store's values.
        let v = ok(
            self.app,
            &format!(
                "/api/complete?{}&filter={}",
                self.range,
                enc("container = w")
            ),
        )
        .await;
        assert_eq!(v["expect"], "value");
        assert_eq!(v["items"][0]["text"], "web");
        let v = ok(
            self.app,
            &format!(
                "/api/complete?{}&filter={}",
                self.range,
                enc("process = \"py")
            ),
        )
        .await;
        assert_eq!(
            v["items"][0]["text"],
            flowlens_query::filter::quote(hostile)
        );
        let v = ok(
            self.app,
            &format!("/api/complete?{}&filter={}", self.range, enc("proto = u")),
        )
        .await;
        assert_eq!(v["items"][0]["text"], "udp");

        // Health and the index answer.
        let v = ok(self.app, &self.u("/api/health", "")).await;
        assert!(v["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .any(|m| m["name"] == "flowlens_build_info"));
        let v = ok(self.app, "/api").await;
        assert!(v["fields"].as_array().expect("fields").len() >= 10);
    }

    /// Errors and hostile inputs: 400 JSON naming the parameter, never a 500.
    pub async fn errors_and_hostile_inputs(&self) {
        let v = err(
            self.app,
            &self.u(
                "/api/series",
                &format!("filter={}", enc("container = web AND bogus = 1")),
            ),
            400,
            "bad_filter",
        )
        .await;
        assert_eq!(
            (v["error"]["start"].as_u64(), v["error"]["end"].as_u64()),
            (Some(20), Some(25))
        );
        err(
            self.app,
            &self.u(
                "/api/series",
                &format!("filter={}", enc("container = web; DROP DATABASE x")),
            ),
            400,
            "bad_filter",
        )
        .await;
        err(
            self.app,
            &self.u(
                "/api/top",
                &format!("filter={}", enc("server_port = 99999999999999999999999999")),
            ),
            400,
            "bad_filter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "points=99999999999999999999999999"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "points=-1"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "top=0"),
            400,
            "bad_parameter",
        )
        .await;
        let long = "a".repeat(40_000);
        let v = err(
            self.app,
            &self.u("/api/series", &format!("filter={long}")),
            400,
            "bad_parameter",
        )
        .await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("query string"),
            "{v}"
        );
        // A 1 MB filter can only come in a body (URLs stop at 64 KiB): 400 JSON too.
        let (s, v) = post(
            self.app,
            "/api/series",
            &format!("filter={}", "a".repeat(1 << 20)),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["code"], "bad_parameter");
        let (s, v) = post(
            self.app,
            "/api/top",
            &format!(
                "{}&dims=container&filter={}",
                self.range,
                enc("container = web")
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "POST takes the same parameters: {v}");
        let (s, v) = post(
            self.app,
            "/api/top",
            &format!("{}&filter={}", self.range, "b".repeat(5000)),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_filter"))
        );
        let v = err(
            self.app,
            &self.u("/api/series", &format!("filter={}", "b".repeat(5000))),
            400,
            "bad_filter",
        )
        .await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("4096"),
            "{v}"
        );
        err(
            self.app,
            &self.u("/api/series", "dims=container,bogus"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "dims=a,b,c,d"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "dims=container,container"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "dims=direction&bidirectional=true"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "unit=furlongs"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/series", "bogus=1"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            "/api/series?from=now-1h&from=now-2h",
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            "/api/series?from=now&to=now-1h",
            400,
            "bad_parameter",
        )
        .await;
        err(self.app, "/api/series?from=now-400d", 400, "bad_parameter").await;
        err(self.app, "/api/series?from=yesterday", 400, "bad_parameter").await;
        err(
            self.app,
            "/api/series?from=99999999999999999999999",
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/sankey", "dims=container"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/conversations", "sort=bogus"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/conversations", "limit=100000"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/conversations", "format=xml"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u(
                "/api/conversations",
                &format!("filter={}", enc("direction = out")),
            ),
            400,
            "bad_filter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/topology", "expand=process:x/y/z"),
            400,
            "bad_parameter",
        )
        .await;
        let v = ok(
            self.app,
            &self.u(
                "/api/topology",
                &format!("expand={}", enc("host:a\"b;DROP")),
            ),
        )
        .await;
        assert!(
            v["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .all(|n| n["expanded"] == false),
            "an unknown host expands nothing: {v}"
        );
        err(
            self.app,
            &self.u("/api/entity", "kind=planet&name=x"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/entity", "kind=container"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/entity", "kind=remote&name=not-an-ip"),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/health", &format!("metrics={}", enc("x;y"))),
            400,
            "bad_parameter",
        )
        .await;
        err(
            self.app,
            &self.u("/api/complete", "cursor=999999"),
            400,
            "bad_parameter",
        )
        .await;
        err(self.app, "/api/nope", 404, "not_found").await;
        err(self.app, "/nope", 404, "not_found").await;
        // Hostile but valid values are data: they just match nothing.
        let f = enc(
            r#"container = "'; DROP MEASUREMENT flow; --" OR process ~ "/.*/" OR exe = "\\\\""#,
        );
        let v = ok(
            self.app,
            &self.u("/api/conversations", &format!("filter={f}")),
        )
        .await;
        assert_eq!(v["total_rows"], 0);
        let v = ok(
            self.app,
            &self.u(
                "/api/entity",
                &format!("kind=container&name={}", enc("x\" OR \"1\"=\"1")),
            ),
        )
        .await;
        assert_eq!(v["totals"]["bytes"], 0);
    }
}

/// Security headers on every answer, and no CORS.
pub async fn security_headers(app: &Router) {
    for uri in ["/", "/api", "/api/nope", "/metrics"] {
        let (_, h, _) = get_raw(app, uri, &[("origin", "https://evil.example")]).await;
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{uri}: {csp}"
        );
        assert_eq!(
            h.get(header::X_CONTENT_TYPE_OPTIONS).map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{uri}"
        );
        assert!(
            h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{uri}: no CORS"
        );
    }
    let (_, h, _) = get_raw(app, "/api", &[]).await;
    assert_eq!(
        h.get(header::CACHE_CONTROL).map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
}

/// Strips what may differ between two stores answering the same question.
pub fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["source", "notices", "store"] {
            o.remove(k);
        }
        if let Some(t) = o.get_mut("tables").and_then(Value::as_object_mut) {
            for (_, t) in t.iter_mut() {
                if let Some(o) = t.as_object_mut() {
                    o.remove("source");
                }
            }
        }
    }
    v
}
