//! End to end: `flowlens run` serving the web API while real traffic flows
//! between two network-namespace "containers" (Docker-style cgroups) on a
//! bridge, owned by distinct users, and from the host into one of them. The
//! API answers the scenario's questions (top container, top user, the edge
//! between the two containers, one container's conversations) with exactly
//! the bytes flowlens wrote as records. Then the same questions against
//! `flowlens web` reading a real InfluxDB that `flowlens run` filled.
//! Needs root: `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test web_e2e -- --test-threads=1`

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use flowlens_tests::{
    agent, cmd,
    netns::{bridged, Bridged},
    scenario, ArtifactDir, FakeContainer, Flowlens, Place, NOBODY,
};
use serde_json::Value;

/// What the scenario did.
struct Traffic {
    /// A's client port to B:5001.
    ab_port: u16,
    /// The host client's port to A:5002.
    ha_port: u16,
}

/// A (root) -> B (nobody) on 5001: 200,000 B up, 20,000 B down;
/// host (nobody) -> A (root) on 5002: 50,000 B up, 5,000 B down.
fn traffic(net: &Bridged, a: &FakeContainer, b: &FakeContainer) -> Traffic {
    let (av4, bv4) = (IpAddr::V4(net.a.peer_v4), IpAddr::V4(net.b.peer_v4));
    let mut sb = agent::tcp_server(Place::In(b), Some(NOBODY), bv4, 5001, 200_000, 20_000);
    let mut sa = agent::tcp_server(Place::In(a), Some(0), av4, 5002, 50_000, 5_000);
    let (mut ca, ab_port) =
        agent::tcp_client(Place::In(a), Some(0), bv4, 5001, 200_000, 20_000, 0, false);
    let (mut ch, ha_port) = agent::tcp_client(
        Place::Host,
        Some(NOBODY),
        av4,
        5002,
        50_000,
        5_000,
        0,
        false,
    );
    for p in [&mut ca, &mut ch, &mut sa, &mut sb] {
        p.wait_success();
    }
    Traffic { ab_port, ha_port }
}

fn get(base: &str, path: &str) -> Value {
    let r = ureq::get(&format!("{base}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&r.into_string().expect("body")).expect("json")
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `http://127.0.0.1:<port>` from the log line "Web UI and API listening. url=…".
fn web_base(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("Web UI and API listening"))?;
    let i = line.find("url=http://")?;
    let rest = &line[i + 4..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('/').to_owned())
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The expected answers, from the records flowlens wrote.
#[derive(Debug, PartialEq)]
struct Expected {
    host: String,
    /// container label -> bytes of its local ends (sent + received).
    by_container: BTreeMap<String, u64>,
    /// user -> bytes.
    by_user: BTreeMap<String, u64>,
    /// (c2s, s2c) of A -> B and host -> A.
    ab: (u64, u64),
    ha: (u64, u64),
    a: String,
    b: String,
}

fn label(p: &Value) -> String {
    match (p["container_id"].as_str(), p["container_name"].as_str()) {
        (None, _) => "host".into(),
        (Some(_), Some(n)) if !n.is_empty() => n.into(),
        (Some(id), _) => id[..12].into(),
    }
}

fn expected(recs: &[Value], t: &Traffic, a: &FakeContainer, b: &FakeContainer) -> Expected {
    let mut e = Expected {
        host: String::new(),
        by_container: BTreeMap::new(),
        by_user: BTreeMap::new(),
        ab: (0, 0),
        ha: (0, 0),
        a: a.id[..12].to_owned(),
        b: b.id[..12].to_owned(),
    };
    for r in recs {
        let sport = r["server"]["port"].as_u64();
        let cport = r["client"]["port"].as_u64().unwrap_or(0) as u16;
        let which = match sport {
            Some(5001) if cport == t.ab_port => &mut e.ab,
            Some(5002) if cport == t.ha_port => &mut e.ha,
            _ => continue,
        };
        let (c2s, s2c) = (
            r["bytes_c2s"].as_u64().unwrap_or(0),
            r["bytes_s2c"].as_u64().unwrap_or(0),
        );
        which.0 += c2s;
        which.1 += s2c;
        e.host = r["host"].as_str().unwrap_or("").to_owned();
        for side in ["client", "server"] {
            let p = &r[side];
            if p["local"] == true {
                *e.by_container.entry(label(p)).or_default() += c2s + s2c;
                let user = p["user"]
                    .as_str()
                    .map_or_else(|| p["uid"].to_string(), str::to_owned);
                *e.by_user.entry(user).or_default() += c2s + s2c;
            }
        }
    }
    e
}

fn rows(v: &Value, dim: &str) -> BTreeMap<String, u64> {
    v["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["dims"][dim].as_str().unwrap_or("").to_owned(),
                        r["total"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

const OURS: &str = "server_port IN (5001, 5002)";

/// Asks the scenario's questions at `base` and checks them against `e`;
/// returns the answers (for comparing two servers).
fn questions(base: &str, e: &Expected) -> Vec<Value> {
    let r = "from=now-15m&to=now";
    let f = enc(OURS);
    let top = get(base, &format!("/api/top?{r}&dims=container&filter={f}"));
    assert_eq!(rows(&top, "container"), e.by_container, "{top}");
    let first = top["rows"][0]["dims"]["container"].as_str().unwrap_or("");
    let max = e
        .by_container
        .iter()
        .max_by_key(|(_, v)| **v)
        .map(|(k, _)| k.as_str());
    assert_eq!(Some(first), max, "the top container: {top}");
    let users = get(base, &format!("/api/top?{r}&dims=user&filter={f}"));
    assert_eq!(rows(&users, "user"), e.by_user, "{users}");
    let procs = get(
        base,
        &format!("/api/top?{r}&dims=container,process&filter={f}"),
    );
    assert_eq!(procs["totals"]["total"], top["totals"]["total"]);
    let graph = get(
        base,
        &format!(
            "/api/topology?{r}&filter={}&expand={}",
            enc("server_port = 5001"),
            enc(&format!("host:{}", e.host))
        ),
    );
    let (x, y) = (
        format!("container:{}/{}", e.host, e.a),
        format!("container:{}/{}", e.host, e.b),
    );
    let (src, dst, fwd, back) = if x < y {
        (x, y, e.ab.0, e.ab.1)
    } else {
        (y, x, e.ab.1, e.ab.0)
    };
    let edge = graph["edges"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|g| g["source"] == src.as_str() && g["target"] == dst.as_str())
        })
        .unwrap_or_else(|| panic!("no edge {src} - {dst}: {graph}"));
    assert_eq!(
        (edge["forward"].as_u64(), edge["backward"].as_u64()),
        (Some(fwd), Some(back)),
        "{graph}"
    );
    let conv = get(
        base,
        &format!(
            "/api/conversations?{r}&filter={}",
            enc(&format!("container = \"{}\" AND {OURS}", e.b))
        ),
    );
    assert_eq!(conv["total_rows"], 1, "{conv}");
    let row = &conv["rows"][0];
    assert_eq!(
        (row["bytes_c2s"].as_u64(), row["bytes_s2c"].as_u64()),
        (Some(e.ab.0), Some(e.ab.1)),
        "{conv}"
    );
    assert_eq!(row["client"]["container"], e.a.as_str());
    assert_eq!(row["server"]["container"], e.b.as_str());
    assert_eq!(row["server"]["user"], "nobody");
    assert_eq!(row["client"]["user"], "root");
    let series = get(base, &format!("/api/series?{r}&dims=container&filter={f}"));
    let totals: BTreeMap<String, u64> = series["series"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["dims"]["container"].as_str().unwrap_or("").to_owned(),
                        s["stats"]["total"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(totals, e.by_container, "{series}");
    vec![top, users, procs, graph, conv]
}

/// Polls until the API agrees with the records (the store lags an interval;
/// answers are cached 5 s), then asks every question once more.
fn settle(
    base: &str,
    jsonl: &Path,
    t: &Traffic,
    a: &FakeContainer,
    b: &FakeContainer,
) -> (Expected, Vec<Value>) {
    let mut last = String::new();
    let ok = cmd::wait_until(Duration::from_secs(30), || {
        let e = expected(&read_jsonl(jsonl), t, a, b);
        if e.ab.0 < 200_000 || e.ha.0 < 50_000 {
            last = format!("records incomplete: {e:?}");
            return false;
        }
        let v = get(
            base,
            &format!(
                "/api/top?from=now-15m&to=now&dims=container&filter={}",
                enc(OURS)
            ),
        );
        last = format!("{v}\n{e:?}");
        rows(&v, "container") == e.by_container
    });
    assert!(ok, "the API never matched the records:\n{last}");
    let e = expected(&read_jsonl(jsonl), t, a, b);
    let answers = questions(base, &e);
    (e, answers)
}

#[test]
fn flowlens_run_answers_the_scenario_from_its_embedded_store() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = bridged(u);
        let (a, b) = (FakeContainer::new(u, &net.a), FakeContainer::new(u, &net.b));
        let history = art.path().join("history.sqlite");
        let h = history.to_string_lossy().into_owned();
        let fl = Flowlens::start_with_args(
            art.path(),
            &[&net.a.host_if, &net.b.host_if],
            &[("FLOWLENS_NO_WEB", "false")],
            &["--listen", "127.0.0.1:0", "--web-history", &h],
        );
        let base =
            web_base(&fl.log()).unwrap_or_else(|| panic!("no web URL in the log:\n{}", fl.log()));
        let t = traffic(&net, &a, &b);
        let (e, _) = settle(&base, &fl.jsonl, &t, &a, &b);
        assert!(
            e.ab.0 > 200_000 && e.ab.1 > 20_000,
            "L3 bytes include headers: {e:?}"
        );
        // Health and metrics of the running collector.
        let health = get(&base, "/api/health?from=now-5m");
        assert!(
            health["metrics"].as_array().is_some_and(|m| m
                .iter()
                .any(|s| s["name"] == "flowlens_records_exported"
                    && s["value"].as_f64().unwrap_or(0.0) > 0.0)),
            "{health}"
        );
        let m = ureq::get(&format!("{base}/metrics"))
            .call()
            .expect("metrics")
            .into_string()
            .expect("text");
        assert!(
            m.contains("flowlens_build_info{")
                && m.contains("# TYPE flowlens_records_exported counter"),
            "{m}"
        );
        assert!(
            m.contains("flowlens_web_store_dropped_records_total 0"),
            "{m}"
        );
        let (_, log) = fl.stop_with_log();
        assert!(!log.contains("ERROR"), "{log}");
        assert!(history.exists());
    });
}

/// `flowlens web --influx-url …` until it says it serves.
struct WebOnly(Child, std::path::PathBuf);

impl WebOnly {
    fn start(dir: &Path, url: &str) -> (Self, String) {
        let err = dir.join("flowlens-web.stderr");
        let child = Command::new(flowlens_tests::flowlens::binary())
            .args([
                "web",
                "--influx-url",
                url,
                "--influx-db",
                "flowlens",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("stderr"))
            .spawn()
            .expect("flowlens web");
        let w = WebOnly(child, err.clone());
        let mut base = None;
        cmd::wait_until(Duration::from_secs(15), || {
            base = web_base(&std::fs::read_to_string(&err).unwrap_or_default());
            base.is_some()
        });
        let base = base.unwrap_or_else(|| {
            panic!(
                "flowlens web did not start:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            )
        });
        (w, base)
    }
}

impl Drop for WebOnly {
    fn drop(&mut self) {
        cmd::kill(self.0.id(), libc::SIGTERM);
        let ok = cmd::wait_until(Duration::from_secs(10), || {
            self.0.try_wait().ok().flatten().is_some()
        });
        if !ok {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
        let _ = &self.1;
    }
}

#[test]
fn flowlens_web_answers_the_same_from_influxdb() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let influx = flowlens_tests::influx::Influxd::start();
        let net = bridged(u);
        let (a, b) = (FakeContainer::new(u, &net.a), FakeContainer::new(u, &net.b));
        let cfg = art.path().join("flowlens.toml");
        std::fs::write(
            &cfg,
            format!(
                "[influx]\nurl = \"{}\"\ncreate_db = true\nspool_dir = \"{}\"\n[web]\nstore = \"embedded\"\nhistory_file = \"{}\"\n",
                influx.url(),
                art.path().join("spool").display(),
                art.path().join("history.sqlite").display()
            ),
        )
        .expect("config");
        let c = cfg.to_string_lossy().into_owned();
        let fl = Flowlens::start_with_args(
            art.path(),
            &[&net.a.host_if, &net.b.host_if],
            &[("FLOWLENS_NO_WEB", "false")],
            &["--config", &c, "--listen", "127.0.0.1:0"],
        );
        let base = web_base(&fl.log()).unwrap_or_else(|| panic!("no web URL:\n{}", fl.log()));
        let t = traffic(&net, &a, &b);
        let (e, embedded) = settle(&base, &fl.jsonl, &t, &a, &b);
        let jsonl = fl.jsonl.clone();
        let (_, log) = fl.stop_with_log();
        assert!(!log.contains("ERROR"), "{log}");
        // Everything flowlens wrote is in InfluxDB once it stopped.
        let all = expected(&read_jsonl(&jsonl), &t, &a, &b);
        assert_eq!(all, e, "no traffic of ours after the API matched");
        let (_web, wbase) = WebOnly::start(art.path(), &influx.url());
        let from_influx = questions(&wbase, &e);
        for (x, y) in embedded.iter().zip(&from_influx) {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    for k in ["source", "notices", "query"] {
                        o.remove(k);
                    }
                }
                v
            };
            assert_eq!(strip(x)["rows"], strip(y)["rows"]);
            assert_eq!(strip(x)["edges"], strip(y)["edges"]);
            assert_eq!(strip(x)["totals"], strip(y)["totals"]);
        }
    });
}
