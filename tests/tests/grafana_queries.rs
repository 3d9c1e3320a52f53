//! The Grafana dashboards (grafana/dashboards/*.json) against a real InfluxDB filled by `flowlens run`
//! after real traffic: two netns "containers" (cgroups named like Docker's) and the host, processes with
//! their own command names run as root, daemon and nobody, and one remote endpoint (raw frames from an
//! address no socket of this host uses). EVERY panel query and EVERY variable query runs, with
//! `$timeFilter`, `$__interval`, `$__interval_ms` and the variables substituted as Grafana would, and must
//! return exactly the series the scenario implies: the right container, process and user on top, and byte
//! totals equal to the UDP datagrams sent (exact by construction) and to the collector's own JSON records
//! of the same run (the reference for TCP; the JSON ⇔ InfluxDB and tcpdump ⇔ JSON equalities are tested by
//! influx_e2e and e2e_*). Grafana itself cannot run here (no image, no package): what only Grafana shows
//! (rendering, links, transformations) is not tested; the queries are.
//! Needs root. `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test grafana_queries -- --test-threads=1`

//!
//! Length: one test (the scenario is expensive: two namespaces, eight processes, a collector and an
//! InfluxDB) whose expectations are one match arm per panel, so a panel without one fails; the scenario
//! and the schema's rules live in `grafana_queries/`.

#[path = "grafana_queries/expect.rs"]
mod expect;
#[path = "grafana_queries/scenario.rs"]
mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use expect::*;
use flowlens_tests::flowlens::{losses_in_log, read_jsonl};
use flowlens_tests::grafana::{dashboards, panel_queries, variables, Dashboard, Query};
use flowlens_tests::influx::{influx_args, wait_for, FlowlensRun, Influxd, Series};
use flowlens_tests::{repo_root, scenario, sleep_ms, ArtifactDir, FakeContainer, Uniq, VethNetns};
use scenario::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------------
// The test

#[test]
fn every_panel_and_variable_query_returns_what_the_traffic_implies() {
    scenario(|u| {
        let influx = Influxd::start();
        let art = ArtifactDir::new(u);
        let (ua, ub) = (Uniq::new(), Uniq::new());
        let na = VethNetns::new(&ua);
        let ca = FakeContainer::new(&ua, &na);
        let nb = VethNetns::new(&ub);
        let cb = FakeContainer::new(&ub, &nb);
        let cmds = Commands::new(u);
        let t0 = now_ms() - 60_000;
        let mut extra = vec!["--iface".to_owned(), nb.host_if.clone()];
        extra.extend(influx_args(&influx.url(), DB, &art.path().join("spool")));
        let fl = FlowlensRun::start(art.path(), &na.host_if, &extra, &[], "dash");
        run_traffic(&cmds, &na, &ca, &nb, &cb);
        sleep_ms(2_500);
        let jsonl = fl.jsonl.clone();
        let log = fl.stop();
        let records = read_jsonl(&jsonl);
        let count = |q: &str| {
            influx
                .query(DB, q)
                .pointer("/results/0/series/0/values/0/1")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let written = wait_for(Duration::from_secs(20), || {
            count("SELECT count(\"bytes_c2s\") FROM \"flow\"") == records.len() as i64
        });
        assert!(
            written,
            "every record in InfluxDB ({} records)\n{log}",
            records.len()
        );
        let w = World {
            host: records[0]["host"].as_str().expect("host").to_owned(),
            a: ca.id[..12].to_owned(),
            b: cb.id[..12].to_owned(),
            a_if: na.host_if.clone(),
            b_if: nb.host_if.clone(),
            a_gw: na.host_v4.to_string(),
            remote: remote_addr(&na),
            losses: losses_in_log(&log)
                .into_iter()
                .map(|(reason, n)| (vec![reason], n))
                .collect(),
        };
        if !w.losses.is_empty() {
            eprintln!(
                "note: the collector lost data under this machine's load: {:?}",
                w.losses
            );
        }
        let t1 = now_ms() + 60_000;
        check_scenario_shape(&records, &w, &na);
        let time_filter = format!("time >= {t0}ms and time <= {t1}ms");
        let mut checked = 0;
        for d in dashboards() {
            for sel in selections(&d, &w) {
                let r = Render {
                    time_filter: time_filter.clone(),
                    vars: sel.clone(),
                };
                for (name, q) in variables(&d) {
                    let res = influx.series(DB, &r.apply(&q));
                    check_variable(&d.uid, &name, &res, &w);
                    checked += 1;
                }
                for q in panel_queries(&d) {
                    let text = r.apply(&q.query);
                    let res = influx.series(DB, &text);
                    let ctx = format!("{} / {} with {sel:?}\n  {text}", q.dashboard, q.panel);
                    check_panel(&q, &ctx, &res, &records, &sel, &w);
                    checked += 1;
                }
            }
        }
        eprintln!("{checked} queries checked");
        assert!(checked > 60, "{checked}");
        check_doc_examples(&influx, &time_filter, &w, &records);
    });
}

/// Every example query of docs/queries.md and docs/schema.md parses and runs on the scenario's data (a
/// keyword used as a name, like the rollup's old `user`, fails to parse); the ones about the scenario's
/// kind of traffic return rows.
fn check_doc_examples(influx: &Influxd, time_filter: &str, w: &World, records: &[Value]) {
    // The scenario's clean TCP has no errors and its UDP on 5353 is not DNS: an example about them may be
    // empty, but only if the records agree.
    let all = ends(records);
    let errors: i64 = all
        .iter()
        .map(|e| e.sig.retransmits + e.sig.resets + e.sig.connect_errors)
        .sum();
    let dns: i64 = all
        .iter()
        .map(|e| e.sig.dns_queries + e.sig.dns_responses)
        .sum();
    let mut n = 0;
    for doc in ["docs/queries.md", "docs/schema.md"] {
        let text = std::fs::read_to_string(repo_root().join(doc)).expect("doc");
        let mut in_sql = false;
        for line in text.lines() {
            match line.trim() {
                "```sql" => in_sql = true,
                "```" => in_sql = false,
                l if in_sql && l.starts_with("SELECT") => {
                    let q = Render {
                        time_filter: time_filter.to_owned(),
                        vars: vec![
                            ("host".into(), ".*".into()),
                            ("container".into(), ".*".into()),
                            ("comm".into(), ".*".into()),
                            ("username".into(), ".*".into()),
                        ],
                    }
                    .apply(l);
                    let rows = influx.series(DB, &q);
                    // Examples that name things of another host (nginx, curl, 10.0.0.7) may be empty.
                    let foreign = ["nginx", "curl", "10.0.0.7", "'other'"]
                        .iter()
                        .any(|x| l.contains(x))
                        || (errors == 0 && l.contains("\"connect_errors\""))
                        || (dns == 0 && l.contains("\"dns_queries\""));
                    assert!(
                        foreign || !rows.is_empty(),
                        "{doc}: no rows for an example that should have some:\n  {q}"
                    );
                    n += 1;
                }
                _ => {}
            }
        }
    }
    eprintln!("{n} documented example queries ran ({})", w.host);
    assert!(n >= 50, "{n} examples found: the sql blocks moved?");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// The variable selections each dashboard is checked with: everything ("All"), and for the entity
/// dashboards a single entity of the scenario.
fn selections(d: &Dashboard, w: &World) -> Vec<Vec<(String, String)>> {
    let all = |extra: &[(&str, &str)]| {
        let mut v = vec![("host".to_owned(), ".*".to_owned())];
        v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.to_string())));
        v
    };
    let host = regex_escape(&w.host);
    match d.uid.as_str() {
        "flowlens-container" => vec![
            all(&[("container", ".*")]),
            vec![
                ("host".into(), host.clone()),
                ("container".into(), regex_escape(&w.a)),
            ],
        ],
        "flowlens-process" => vec![
            all(&[("comm", ".*")]),
            vec![
                ("host".into(), host.clone()),
                ("comm".into(), "websrv".into()),
            ],
        ],
        "flowlens-user" => vec![
            all(&[("username", ".*")]),
            vec![
                ("host".into(), host.clone()),
                ("username".into(), "nobody".into()),
            ],
        ],
        "flowlens-conversations" => vec![
            all(&[("container", ".*")]),
            vec![
                ("host".into(), host.clone()),
                ("container".into(), regex_escape(&w.a)),
            ],
        ],
        _ => vec![all(&[]), vec![("host".into(), host)]],
    }
}

/// What the scenario must have produced before the dashboards are worth asking (harness checks).
fn check_scenario_shape(records: &[Value], w: &World, na: &VethNetns) {
    let find = |port: u64| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["server"]["port"].as_u64() == Some(port))
            .collect()
    };
    let sum = |rs: &[&Value], k: &str| rs.iter().map(|r| n(&r[k])).sum::<i64>();
    let dns = find(5353);
    assert_eq!(
        (sum(&dns, "bytes_c2s"), sum(&dns, "bytes_s2c")),
        (udp_l3(&DNS_QUERIES), udp_l3(&[DNS_REPLY; 3])),
        "UDP resolver -> dnsd: exact L3 bytes"
    );
    let remote = find(7070);
    assert_eq!(
        (sum(&remote, "bytes_c2s"), sum(&remote, "bytes_s2c")),
        (udp_l3(&REMOTE_DATAGRAMS), 0),
        "raw frames -> udpsink: exact L3 bytes"
    );
    for r in &remote {
        assert_eq!(r["client"]["addr"], w.remote.as_str());
        assert_eq!(
            r["client"]["local"], false,
            "the raw sender is a remote endpoint: {r}"
        );
        assert_eq!(r["server"]["comm"], "udpsink");
    }
    let web = find(8080);
    assert!(sum(&web, "bytes_s2c") > 200_000 && sum(&web, "bytes_c2s") > 20_000);
    assert!(web.iter().all(|r| r["server"]["container_id"]
        .as_str()
        .is_some_and(|id| id.starts_with(&w.a))));
    assert!(web
        .iter()
        .all(|r| r["client"]["addr"] == na.host_v4.to_string().as_str()));
}

fn check_variable(uid: &str, name: &str, res: &[Series], w: &World) {
    let values: BTreeSet<String> = res
        .iter()
        .flat_map(|s| &s.rows)
        .filter_map(|r| r.get("value").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let want = match name {
        "host" => set(&[&w.host]),
        "container" => set(&["host", &w.a, &w.b]),
        "comm" => set(&[
            "websrv", "loadgen", "sink", "uploader", "dnsd", "resolver", "udpsink",
        ]),
        "username" => set(&["root", "daemon", "nobody"]),
        other => panic!("{uid}: no expectation for variable {other}"),
    };
    assert_eq!(values, want, "{uid}: variable {name}");
}

/// The expectations of every panel, by dashboard and title.
fn check_panel(
    q: &Query,
    ctx: &str,
    res: &[Series],
    records: &[Value],
    sel: &[(String, String)],
    w: &World,
) {
    let all_ends = ends(records);
    let pick = |k: &str| {
        sel.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or(".*".into())
    };
    let host_ok = |h: &str| pick("host") == ".*" || h == w.host;
    // The entity filter of the dashboard (".*" = every value).
    let entity = |e: &End| {
        ["container", "comm", "username"].iter().all(|k| {
            let v = pick(k);
            v == ".*"
                || (q.dashboard != "flowlens-conversations" && e.tags[*k] == v.replace('\\', ""))
        }) && host_ok(&e.tags["host"])
    };
    let ends: Vec<End> = all_ends.iter().filter(|e| entity(e)).cloned().collect();
    let key = |ks: &[&str]| {
        let ks: Vec<&'static str> = ks
            .iter()
            .map(|k| {
                *[
                    "container",
                    "comm",
                    "username",
                    "peer",
                    "server_port",
                    "role",
                    "direction",
                    "peer_local",
                ]
                .iter()
                .find(|x| *x == k)
                .expect("key")
            })
            .collect();
        move |e: &End| ks.iter().map(|k| e.tags[k].clone()).collect::<Vec<_>>()
    };
    let both = |e: &End| e.sent + e.recv;
    let by_dir = || {
        let mut m = Totals::new();
        for e in &ends {
            *m.entry(vec!["out".into()]).or_default() += e.sent;
            *m.entry(vec!["in".into()]).or_default() += e.recv;
        }
        m.retain(|_, v| *v != 0);
        m
    };
    let conv_filter = |r: &Value| {
        let c = pick("container").replace('\\', "");
        host_ok(r["host"].as_str().unwrap_or(""))
            && (c == ".*"
                || flow_tag(r, "client_container_name") == c
                || flow_tag(r, "server_container_name") == c)
    };
    let recs: Vec<&Value> = records.iter().filter(|r| conv_filter(r)).collect();
    let flow_by = |ks: &[&str], val: &dyn Fn(&Value) -> i64| {
        let mut m = Totals::new();
        for r in &recs {
            *m.entry(ks.iter().map(|k| flow_tag(r, k)).collect())
                .or_default() += val(r);
        }
        m.retain(|_, v| *v != 0);
        m
    };
    let iface_by = |val: &dyn Fn(&Value) -> i64| {
        let mut m = Totals::new();
        for r in &recs {
            for i in r["ifaces"].as_array().into_iter().flatten() {
                *m.entry(vec![i.as_str().unwrap_or("").to_owned()])
                    .or_default() += val(r);
            }
        }
        m
    };
    let nonzero = |mut m: Totals| {
        m.retain(|_, v| *v != 0);
        m
    };
    let series = |keys: &[&str], want: Totals| {
        assert_eq!(series_totals(res, keys), nonzero(want), "{ctx}");
    };
    let entity_sel = pick("container") != ".*" || pick("comm") != ".*" || pick("username") != ".*";
    match (q.dashboard.as_str(), q.panel.as_str()) {
        ("flowlens-overview" | "flowlens-host", "Traffic by host") => {
            series(&["host"], flow_by(&["host"], &bytes))
        }
        (_, "Traffic by container (sent + received)") => {
            let want = group(&ends, |_| true, key(&["container"]), both);
            assert_eq!(
                top_n(&want, 1)[0].0,
                vec!["host".to_owned()],
                "{ctx}: the host's processes carry the most"
            );
            assert_eq!(
                top_n(&want, 2)[1].0,
                vec![w.a.clone()],
                "{ctx}: container A is the top container"
            );
            series(&["container"], want)
        }
        (_, "Traffic by process (sent + received)") => {
            let want = group(&ends, |_| true, key(&["comm"]), both);
            let top: BTreeSet<_> = top_n(&want, 2).into_iter().flat_map(|(k, _)| k).collect();
            assert_eq!(top, ["loadgen", "websrv"].map(String::from).into(), "{ctx}");
            series(&["comm"], want)
        }
        (_, "Traffic by user (sent + received)") => {
            let want = group(&ends, |_| true, key(&["username"]), both);
            assert_eq!(top_n(&want, 1)[0].0, vec!["daemon".to_owned()], "{ctx}");
            series(&["username"], want)
        }
        (_, "Top talkers (container, process, user)") => {
            let want = group(
                &ends,
                |_| true,
                key(&["container", "comm", "username"]),
                both,
            );
            check_table(
                ctx,
                table_rows(res, &["container", "comm", "username"], "bytes"),
                &want,
                10,
            )
        }
        (_, "Protocol mix") => {
            let got = res
                .iter()
                .map(|s| {
                    (
                        vec![s.tags["proto"].clone()],
                        s.rows[0]["bytes"].as_i64().unwrap_or(-1),
                    )
                })
                .collect::<Totals>();
            let want = flow_by(&["proto"], &bytes);
            assert_eq!(
                want[&vec!["udp".to_owned()]],
                udp_l3(&DNS_QUERIES)
                    + udp_l3(&[DNS_REPLY; 3])
                    + udp_l3(&REMOTE_DATAGRAMS)
                    + extra_udp(records),
                "{ctx}"
            );
            assert_eq!(got, want, "{ctx}")
        }
        (_, "Top remote endpoints") => {
            let want = group(
                &ends,
                |e| e.tags["peer_local"] == "false",
                key(&["peer"]),
                both,
            );
            assert_eq!(
                want,
                Totals::from([(vec![w.remote.clone()], udp_l3(&REMOTE_DATAGRAMS))]),
                "{ctx}: the one remote endpoint, exact bytes"
            );
            check_table(ctx, table_rows(res, &["peer"], "bytes"), &want, 10);
            // The peer's DNS name beside it (the scenario's remote endpoint was never resolved).
            let names: BTreeMap<String, Option<String>> = ends
                .iter()
                .map(|e| (e.tags["peer"].clone(), e.sig.peer_name.clone()))
                .collect();
            for s in res {
                for r in &s.rows {
                    let peer = r["peer"].as_str().unwrap_or("");
                    assert_eq!(
                        r.get("name").and_then(Value::as_str).map(str::to_owned),
                        names[peer],
                        "{ctx}"
                    );
                }
            }
        }
        (_, t) if t.starts_with("Round-trip time") => {
            // The mean RTT of each group and bucket, recombined from sums.
            let k = if t.contains("peers") { "peer" } else { "comm" };
            let mut want: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
            for e in ends.iter().filter(|e| e.sig.rtt_n > 0) {
                let bucket =
                    e.ts.div_euclid(INTERVAL_S * 1_000_000_000) * INTERVAL_S * 1_000_000_000;
                let m = want.entry((e.tags[k].clone(), bucket)).or_default();
                m.0 += e.sig.rtt_sum;
                m.1 += e.sig.rtt_n;
            }
            let mut got: BTreeMap<(String, i64), f64> = BTreeMap::new();
            for s in res {
                for r in &s.rows {
                    if let Some(v) = r
                        .iter()
                        .find(|(c, _)| *c != "time")
                        .and_then(|(_, v)| v.as_f64())
                    {
                        got.insert(
                            (s.tags.get(k).cloned().unwrap_or_default(), n(&r["time"])),
                            v,
                        );
                    }
                }
            }
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{ctx}"
            );
            for (key, (sum, cnt)) in &want {
                assert!(
                    same_mean(got[key], *sum as f64 / *cnt as f64),
                    "{ctx}: {key:?} {} vs {sum}/{cnt}",
                    got[key]
                );
            }
        }
        (_, "Slowest processes (mean RTT)") => {
            let mut want: BTreeMap<Vec<String>, (i64, i64, i64)> = BTreeMap::new();
            for e in ends.iter().filter(|e| e.sig.rtt_n > 0) {
                let m = want.entry(key(&["comm", "container"])(e)).or_default();
                m.0 += e.sig.rtt_sum;
                m.1 += e.sig.rtt_n;
                m.2 = m.2.max(e.sig.rtt_max.unwrap_or(0));
            }
            let got = grouped_rows(
                res,
                &["comm", "container"],
                &["rtt_mean_us", "rtt_max_us", "samples"],
            );
            assert_eq!(got.len(), want.len().min(10), "{ctx}: {got:?}");
            let means: Vec<f64> = got.iter().map(|(_, v)| v[0].unwrap_or(-1.0)).collect();
            assert!(
                means.windows(2).all(|w| w[0] >= w[1]),
                "{ctx}: slowest first: {means:?}"
            );
            for (k, v) in &got {
                let (sum, cnt, max) = want[k];
                assert!(
                    same_mean(v[0].unwrap_or(-1.0), sum as f64 / cnt as f64),
                    "{ctx}: {k:?}"
                );
                assert_eq!(
                    (v[1], v[2]),
                    (Some(max as f64), Some(cnt as f64)),
                    "{ctx}: {k:?}"
                );
            }
        }
        (_, t) if t.contains("errors by") || t.starts_with("Errors by") => {
            let keys: &[&str] = if t.starts_with("Errors by peer") {
                &["peer", "server_port"]
            } else {
                &["comm", "container"]
            };
            let mut want: BTreeMap<Vec<String>, [i64; 3]> = BTreeMap::new();
            for e in &ends {
                let m = want.entry(key(keys)(e)).or_default();
                m[0] += e.sig.retransmits;
                m[1] += e.sig.resets;
                m[2] += e.sig.connect_errors;
            }
            want.retain(|_, v| v.iter().any(|x| *x != 0));
            let got: BTreeMap<Vec<String>, [i64; 3]> =
                grouped_rows(res, keys, &["retransmits", "resets", "connect_errors"])
                    .into_iter()
                    .map(|(k, v)| (k, [0, 1, 2].map(|i| v[i].unwrap_or(0.0) as i64)))
                    .filter(|(_, v)| v.iter().any(|x| *x != 0))
                    .collect();
            assert_eq!(got, want, "{ctx}");
        }
        (_, "DNS health by process") => {
            let mut want: BTreeMap<Vec<String>, (Sig, i64)> = BTreeMap::new();
            for e in &ends {
                let (m, max) = want.entry(key(&["comm", "container"])(e)).or_default();
                m.dns_queries += e.sig.dns_queries;
                m.dns_responses += e.sig.dns_responses;
                m.dns_lat_sum += e.sig.dns_lat_sum;
                m.dns_lat_n += e.sig.dns_lat_n;
                *max = (*max).max(e.sig.dns_lat_max.unwrap_or(0));
                for i in 0..4 {
                    m.dns_errors[i] += e.sig.dns_errors[i];
                }
            }
            want.retain(|_, (m, _)| {
                m.dns_queries + m.dns_responses + m.dns_errors.iter().sum::<i64>() > 0
            });
            let cols = [
                "queries",
                "responses",
                "latency_mean_us",
                "latency_max_us",
                "nxdomain",
                "servfail",
                "refused",
                "unanswered",
            ];
            let got: Vec<_> = grouped_rows(res, &["comm", "container"], &cols)
                .into_iter()
                .filter(|(_, v)| v.iter().any(|x| x.is_some_and(|x| x != 0.0)))
                .collect();
            assert_eq!(
                got.iter().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>(),
                want.keys().cloned().collect::<BTreeSet<_>>(),
                "{ctx}"
            );
            for (k, v) in &got {
                let (m, max) = &want[k];
                let z = |x: Option<f64>| x.unwrap_or(0.0) as i64;
                assert_eq!(
                    [z(v[0]), z(v[1]), z(v[4]), z(v[5]), z(v[6]), z(v[7])],
                    [
                        m.dns_queries,
                        m.dns_responses,
                        m.dns_errors[0],
                        m.dns_errors[1],
                        m.dns_errors[2],
                        m.dns_errors[3]
                    ],
                    "{ctx}: {k:?}"
                );
                if m.dns_lat_n > 0 {
                    assert!(
                        same_mean(
                            v[2].unwrap_or(-1.0),
                            m.dns_lat_sum as f64 / m.dns_lat_n as f64
                        ),
                        "{ctx}: {k:?}"
                    );
                    assert_eq!(z(v[3]), *max, "{ctx}: {k:?}");
                }
            }
        }
        (_, "Traffic per server port") => {
            let want = flow_by(&["server_port"], &bytes);
            let mut want = want;
            want.remove(&vec![String::new()]);
            assert_eq!(top_n(&want, 1)[0].0, vec!["8080".to_owned()], "{ctx}");
            assert_eq!(
                want[&vec!["5353".to_owned()]],
                udp_l3(&DNS_QUERIES) + udp_l3(&[DNS_REPLY; 3]),
                "{ctx}"
            );
            check_table(ctx, table_rows(res, &["server_port"], "bytes"), &want, 10)
        }
        (_, "Traffic per interface") => {
            let want = iface_by(&bytes);
            assert!(
                want[&vec![w.a_if.clone()]] > want[&vec![w.b_if.clone()]],
                "{ctx}"
            );
            series(&["iface"], want)
        }
        (_, "Packets per interface") => series(
            &["iface"],
            iface_by(&|r| n(&r["packets_c2s"]) + n(&r["packets_s2c"])),
        ),
        (_, "Collector: data lost, by reason (per second)") => {
            let reasons: BTreeSet<&str> = res.iter().map(|s| s.tags["reason"].as_str()).collect();
            assert!(
                reasons.len() >= 10
                    && reasons.contains("kernel_ringbuf_full")
                    && reasons.contains("influx_spool_full_points"),
                "{ctx}: every reason, zeros included: {reasons:?}"
            );
            assert_eq!(
                series_totals(res, &["reason"]),
                w.losses,
                "{ctx}: the losses the collector logged"
            )
        }
        (_, t) if t.starts_with("Sent by the") => series(
            &[entity_key(&q.dashboard)],
            group(
                &ends,
                |_| true,
                key(&[entity_key(&q.dashboard)]),
                |e| e.sent,
            ),
        ),
        (_, t) if t.starts_with("Received by the") => series(
            &[entity_key(&q.dashboard)],
            group(
                &ends,
                |_| true,
                key(&[entity_key(&q.dashboard)]),
                |e| e.recv,
            ),
        ),
        (_, "Peers") => {
            let want = group(&ends, |_| true, key(&["peer"]), both);
            if q.dashboard == "flowlens-container" && entity_sel {
                assert_eq!(
                    want.keys().cloned().collect::<Vec<_>>(),
                    vec![vec![w.a_gw.clone()]],
                    "{ctx}: container A talks to the host's loadgen only"
                );
            }
            check_table(ctx, table_rows(res, &["peer"], "bytes"), &want, 20)
        }
        (_, "Server ports") => check_table(
            ctx,
            table_rows(res, &["server_port", "role"], "bytes"),
            &group(&ends, |_| true, key(&["server_port", "role"]), both),
            20,
        ),
        (_, "Processes of the container") => {
            let want = group(&ends, |_| true, key(&["comm"]), both);
            if entity_sel {
                assert_eq!(want.len(), 1, "{ctx}: only websrv runs in A");
            }
            series(&["comm"], want)
        }
        (_, "Users in the container") => check_table(
            ctx,
            table_rows(res, &["username"], "bytes"),
            &group(&ends, |_| true, key(&["username"]), both),
            20,
        ),
        (_, "Containers running the process") => check_table(
            ctx,
            table_rows(res, &["container", "username"], "bytes"),
            &group(&ends, |_| true, key(&["container", "username"]), both),
            20,
        ),
        (_, "Connections (conversations per second, by role)") => {
            series(&["role"], group(&ends, |_| true, key(&["role"]), |_| 1))
        }
        (_, "Processes of the user") => {
            let want = group(&ends, |_| true, key(&["comm", "container"]), both);
            if entity_sel {
                let comms: BTreeSet<_> = want.keys().map(|k| k[0].as_str()).collect();
                assert_eq!(comms, ["dnsd", "loadgen", "udpsink"].into(), "{ctx}");
            }
            check_table(
                ctx,
                table_rows(res, &["comm", "container"], "bytes"),
                &want,
                20,
            )
        }
        (_, "Remote endpoints of the user") => series(
            &["peer"],
            group(
                &ends,
                |e| e.tags["peer_local"] == "false",
                key(&["peer"]),
                both,
            ),
        ),
        (_, "Sent and received by the host's processes") => series(&["direction"], by_dir()),
        (_, "Traffic with remote endpoints") => {
            let mut m = Totals::new();
            for e in ends.iter().filter(|e| e.tags["peer_local"] == "false") {
                *m.entry(vec!["out".into()]).or_default() += e.sent;
                *m.entry(vec!["in".into()]).or_default() += e.recv;
            }
            assert_eq!(
                nonzero(m.clone()),
                Totals::from([(vec!["in".to_owned()], udp_l3(&REMOTE_DATAGRAMS))]),
                "{ctx}"
            );
            series(&["direction"], m)
        }
        (_, "Containers") => check_table(
            ctx,
            table_rows(res, &["container"], "bytes"),
            &group(&ends, |_| true, key(&["container"]), both),
            20,
        ),
        (_, "Services (server ports of local processes)") => {
            let want = group(
                &ends,
                |e| e.tags["role"] == "server",
                key(&["server_port", "comm"]),
                both,
            );
            let services: BTreeSet<_> = want.keys().cloned().collect();
            let expect: BTreeSet<Vec<String>> = [
                ("8080", "websrv"),
                ("9090", "sink"),
                ("5353", "dnsd"),
                ("7070", "udpsink"),
            ]
            .iter()
            .map(|(p, c)| vec![p.to_string(), c.to_string()])
            .collect();
            assert_eq!(services, expect, "{ctx}");
            check_table(
                ctx,
                table_rows(res, &["server_port", "comm"], "bytes"),
                &want,
                20,
            )
        }
        (_, "Conversations per second") => series(&["proto"], flow_by(&["proto"], &|_| 1)),
        (_, t) if t.starts_with("Conversations (latest") => {
            let rows: Vec<&BTreeMap<String, Value>> = res.iter().flat_map(|s| &s.rows).collect();
            assert_eq!(
                rows.len(),
                recs.len().min(1000),
                "{ctx}: one row per record"
            );
            let got: i64 = rows
                .iter()
                .map(|r| n(&r["bytes_c2s"]) + n(&r["bytes_s2c"]))
                .sum();
            assert_eq!(got, recs.iter().map(|r| bytes(r)).sum::<i64>(), "{ctx}");
            let times: Vec<i64> = rows.iter().map(|r| n(&r["time"])).collect();
            assert!(
                times.windows(2).all(|w| w[0] >= w[1]),
                "{ctx}: newest first"
            );
            if pick("container") != ".*" {
                assert!(
                    rows.iter()
                        .all(|r| r["server_comm"] == "websrv" && r["client_comm"] == "loadgen"),
                    "{ctx}"
                );
            }
        }
        (_, "Top conversations by bytes (client, server, port)") => {
            let want = flow_by(&["client_comm", "server_comm", "server_port"], &bytes);
            assert_eq!(
                top_n(&want, 1)[0].0,
                ["loadgen", "websrv", "8080"].map(String::from).to_vec(),
                "{ctx}"
            );
            check_table(
                ctx,
                table_rows(res, &["client_comm", "server_comm", "server_port"], "bytes"),
                &want,
                20,
            )
        }
        (d, t) => panic!("no expectation for panel {d} / {t} ({}): add one", q.kind),
    }
}

fn entity_key(uid: &str) -> &'static str {
    match uid {
        "flowlens-container" => "container",
        "flowlens-process" => "comm",
        "flowlens-user" => "username",
        other => panic!("{other} has no entity"),
    }
}

/// UDP bytes of records the scenario did not make on purpose (none expected; kept visible in the sum).
fn extra_udp(records: &[Value]) -> i64 {
    records
        .iter()
        .filter(|r| {
            r["proto"] == "udp"
                && ![5353, 7070].contains(&r["server"]["port"].as_u64().unwrap_or(0))
        })
        .map(bytes)
        .sum()
}
