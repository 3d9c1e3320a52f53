//! `flowlens run` writing to a real InfluxDB (Debian's influxd 1.6 on a free
//! loopback port) while also writing JSON lines: every JSON record must be
//! in InfluxDB exactly once with the same values, also across an InfluxDB
//! crash (SIGKILL) and a collector restart with a non-empty spool; start-up
//! configuration errors fail clearly. Needs root.
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test influx_e2e -- --test-threads=1`

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use flowlens_tests::flowlens::read_jsonl;
use flowlens_tests::influx::{free_port, influx_args, wait_for, FlowlensRun, Influxd};
use flowlens_tests::{
    agent, scenario, sleep_ms, ArtifactDir, FakeContainer, Place, VethNetns, NOBODY,
};
use serde_json::Value;

const DB: &str = "flowlens";

/// Short conversations between the host and the fake container: TCP both
/// ways (one spanning two export intervals) and UDP. `base` offsets ports.
fn traffic(net: &VethNetns, ctr: &FakeContainer, base: u16) {
    let (host, peer) = (IpAddr::V4(net.host_v4), IpAddr::V4(net.peer_v4));
    let mut srv = agent::tcp_server(Place::In(ctr), None, peer, base, 10_000, 50_000);
    let (mut cli, _) = agent::tcp_client(
        Place::Host,
        Some(NOBODY),
        peer,
        base,
        10_000,
        50_000,
        0,
        false,
    );
    cli.wait_success();
    srv.wait_success();
    let mut srv = agent::tcp_server(Place::Host, None, host, base + 1, 20_000, 3_000);
    let (mut cli, _) = agent::tcp_client(
        Place::In(ctr),
        None,
        host,
        base + 1,
        20_000,
        3_000,
        5_000,
        false,
    );
    sleep_ms(1_300); // the first 5000 bytes and the rest fall into different intervals
    cli.send_line("go");
    cli.wait_success();
    srv.wait_success();
    let mut usrv = agent::udp_server(Place::In(ctr), None, peer, base + 2, 3, 100);
    agent::udp_client(
        Place::Host,
        Some(NOBODY),
        peer,
        base + 2,
        true,
        &[100, 200, 300],
    );
    usrv.wait_success();
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_u64().map(|u| u as i64))
}

/// The `flow` columns a JSON record must produce (docs/schema.md, "InfluxDB").
fn expected_columns(rec: &Value) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for k in [
        "bytes_c2s",
        "bytes_s2c",
        "packets_c2s",
        "packets_s2c",
        "duration_ms",
        "first_seen_unix_ns",
        "last_seen_unix_ns",
        "tcp_flags",
    ] {
        m.insert(k.to_owned(), rec[k].clone());
    }
    for k in ["client_evidence", "tcp_flags_text", "proto", "host"] {
        m.insert(k.to_owned(), rec[k].clone());
    }
    let ifaces: Vec<&str> = rec["ifaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    m.insert("ifaces".into(), Value::from(ifaces.join(",")));
    for side in ["client", "server"] {
        let e = &rec[side];
        m.insert(format!("{side}_addr"), e["addr"].clone());
        let port = e["port"].as_u64().unwrap_or(0);
        if side == "client" {
            m.insert("client_port".into(), e["port"].clone());
        } else if port != 0 && !rec["proto"].as_str().unwrap_or("").starts_with("icmp") {
            m.insert("server_port".into(), Value::from(port.to_string()));
        }
        let local = e["local"].as_bool().unwrap_or(false);
        m.insert(format!("{side}_local"), Value::from(local.to_string()));
        if !local {
            continue;
        }
        for k in ["pid", "uid", "gid"] {
            m.insert(format!("{side}_{k}"), e[k].clone());
        }
        m.insert(format!("{side}_comm"), e["comm"].clone());
        let user = match e["user"].as_str() {
            Some(u) if !u.is_empty() => u.to_owned(),
            _ => e["uid"].to_string(),
        };
        m.insert(format!("{side}_user"), Value::from(user));
        for k in [
            "exe",
            "cgroup",
            "container_id",
            "container_runtime",
            "container_image",
            "pod_uid",
        ] {
            m.insert(format!("{side}_{k}"), e[k].clone());
        }
        let label = match (e["container_id"].as_str(), e["container_name"].as_str()) {
            (None, _) => "host".to_owned(),
            (Some(_), Some(n)) if !n.is_empty() => n.to_owned(),
            (Some(id), _) => id.chars().take(12).collect(),
        };
        m.insert(format!("{side}_container_name"), Value::from(label));
    }
    m
}

fn same(want: &Value, got: Option<&Value>) -> bool {
    let empty = want.is_null() || want.as_str() == Some("");
    match got {
        None => empty,
        Some(g) => match (int(want), int(g)) {
            (Some(a), Some(b)) => a == b,
            _ => want == g || (empty && g.as_str() == Some("")),
        },
    }
}

fn diff(want: &BTreeMap<String, Value>, row: &BTreeMap<String, Value>) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| !same(v, row.get(*k)))
        .map(|(k, v)| format!("{k}: want {v}, got {:?}", row.get(k)))
        .collect()
}

/// Every record matches exactly one `flow` point, with equal values, and no
/// point is left over.
fn assert_points_match_records(influx: &Influxd, records: &[Value]) {
    let rows = influx.rows(DB, "SELECT * FROM flow");
    let mut used = vec![false; rows.len()];
    let mut problems = Vec::new();
    for rec in records {
        let want = expected_columns(rec);
        let ts = rec["ts_unix_ns"].as_i64().expect("ts_unix_ns");
        // The encoder keeps points of one series apart by subtracting a small sequence number.
        let near = |r: &BTreeMap<String, Value>| {
            r.get("time")
                .and_then(int)
                .is_some_and(|t| t <= ts && t > ts - 1_000)
        };
        let hit = rows
            .iter()
            .enumerate()
            .find(|(i, r)| !used[*i] && near(r) && diff(&want, r).is_empty());
        match hit {
            Some((i, _)) => used[i] = true,
            None => {
                let closest = rows
                    .iter()
                    .filter(|r| near(r))
                    .map(|r| diff(&want, r))
                    .min_by_key(Vec::len);
                problems.push(format!(
                    "record {rec}\n    no matching point; closest differs in {closest:?}"
                ));
            }
        }
    }
    let extra: Vec<_> = rows
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(r, _)| r)
        .collect();
    assert!(
        problems.is_empty() && extra.is_empty(),
        "{} records, {} points\n{}\nextra points: {extra:#?}",
        records.len(),
        rows.len(),
        problems.join("\n")
    );
}

fn flow_count(influx: &Influxd) -> i64 {
    let v = influx.query(DB, "SELECT count(bytes_c2s) FROM flow");
    v.pointer("/results/0/series/0/values/0/1")
        .and_then(int)
        .unwrap_or(0)
}

fn flow_sum(influx: &Influxd, field: &str) -> i64 {
    let v = influx.query(DB, &format!("SELECT sum({field}) FROM flow"));
    v.pointer("/results/0/series/0/values/0/1")
        .and_then(int)
        .unwrap_or(0)
}

fn json_sum(records: &[Value], field: &str) -> i64 {
    records.iter().filter_map(|r| int(&r[field])).sum()
}

#[test]
fn records_round_trip_exactly() {
    scenario(|u| {
        let influx = Influxd::start();
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let fl = FlowlensRun::start(
            art.path(),
            &net.host_if,
            &influx_args(&influx.url(), DB, &art.path().join("spool")),
            &[],
            "1",
        );
        traffic(&net, &ctr, 5100);
        sleep_ms(1_500);
        let jsonl = fl.jsonl.clone();
        let log = fl.stop();
        let records = read_jsonl(&jsonl);
        assert!(
            records.len() >= 4,
            "traffic produced records: {}\n{log}",
            records.len()
        );
        assert!(log.contains("Created the InfluxDB database"), "{log}");
        assert_eq!(flow_count(&influx), records.len() as i64, "{log}");
        assert_points_match_records(&influx, &records);
        assert!(!log.contains(" ERROR "), "nothing lost:\n{log}");
    });
}

#[test]
fn influxdb_crash_and_collector_restart_lose_nothing() {
    scenario(|u| {
        let mut influx = Influxd::start();
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let args = influx_args(&influx.url(), DB, &art.path().join("spool"));
        let fl = FlowlensRun::start(art.path(), &net.host_if, &args, &[], "1");
        traffic(&net, &ctr, 5200);
        sleep_ms(1_500);
        let written_before = flow_count(&influx);
        assert!(
            written_before > 0,
            "written while InfluxDB was up:\n{}",
            fl.log()
        );

        // InfluxDB dies; the collector keeps exporting into its spool.
        influx.kill9();
        traffic(&net, &ctr, 5300);
        sleep_ms(1_500);
        // The collector stops with a non-empty spool...
        let log1 = fl.stop();
        let spool = art.path().join("spool");
        let seg_bytes: u64 = std::fs::read_dir(&spool)
            .expect("spool dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(
            seg_bytes > 0,
            "the spool holds the records of the outage:\n{log1}"
        );

        // ...starts again while InfluxDB is still down (logged, not fatal)...
        let fl = FlowlensRun::start(art.path(), &net.host_if, &args, &[], "2");
        assert!(fl.log().contains("not reachable"), "{}", fl.log());
        traffic(&net, &ctr, 5400);
        sleep_ms(1_500);
        // ...and InfluxDB comes back: the spool replays, then live records follow.
        influx.restart();
        traffic(&net, &ctr, 5500);
        sleep_ms(1_500);
        let jsonl = fl.jsonl.clone();
        let records = read_jsonl(&jsonl);
        let drained = wait_for(Duration::from_secs(60), || {
            flow_count(&influx) >= records.len() as i64
        });
        let log2 = fl.stop();
        let records = read_jsonl(&jsonl);
        assert!(drained, "spool not replayed:\n{log2}");
        assert_eq!(
            flow_count(&influx),
            records.len() as i64,
            "exactly once:\n{log1}\n{log2}"
        );
        for f in ["bytes_c2s", "bytes_s2c", "packets_c2s", "packets_s2c"] {
            assert_eq!(flow_sum(&influx, f), json_sum(&records, f), "sum({f})");
        }
        assert_points_match_records(&influx, &records);
        assert!(log2.contains("accepts writes again"), "{log2}");
    });
}

#[test]
fn start_up_configuration_errors_fail_clearly() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let influx = Influxd::start_with_auth("admin", "s3cret-pw-91");
        let url = influx.url();
        let mut base: Vec<String> = ["--influx-url", &url, "--influx-db", "nosuchdb"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        base.extend([
            "--influx-spool-dir".into(),
            art.path().join("spool").to_string_lossy().into_owned(),
        ]);
        let run = |extra: &[String], env: &[(&str, &str)], tag: &str| {
            let mut fl = FlowlensRun::spawn(art.path(), &net.host_if, extra, env, tag);
            let st = fl.wait_exit(Duration::from_secs(20));
            (st, fl.log())
        };
        // Wrong password.
        let (st, log) = run(
            &base,
            &[
                ("INFLUX_USERNAME", "admin"),
                ("INFLUX_PASSWORD", "wrong-pw-77"),
                ("FLOWLENS_LOG", "trace"),
            ],
            "auth",
        );
        assert!(
            st.is_some_and(|s| !s.success()),
            "must exit non-zero: {st:?}\n{log}"
        );
        assert!(log.contains("refused the credentials"), "{log}");
        assert!(!log.contains("wrong-pw-77"), "password in the log:\n{log}");
        // No credentials at all.
        let (st, log) = run(&base, &[], "noauth");
        assert!(
            st.is_some_and(|s| !s.success()) && log.contains("no credentials are configured"),
            "{log}"
        );
        // Right password, missing database, no --influx-create-db.
        let good = [
            ("INFLUX_USERNAME", "admin"),
            ("INFLUX_PASSWORD", "s3cret-pw-91"),
            ("FLOWLENS_LOG", "trace"),
        ];
        let (st, log) = run(&base, &good, "nodb");
        assert!(st.is_some_and(|s| !s.success()), "{log}");
        assert!(
            log.contains("\"nosuchdb\"") && log.contains("--influx-create-db"),
            "{log}"
        );
        assert!(!log.contains("s3cret-pw-91"), "password in the log:\n{log}");
        // With --influx-create-db it runs (and the password is never logged, even at trace).
        let mut extra = base.clone();
        extra.push("--influx-create-db".into());
        let fl = FlowlensRun::start(art.path(), &net.host_if, &extra, &good, "create");
        sleep_ms(1_500);
        let log = fl.stop();
        assert!(log.contains("Created the InfluxDB database"), "{log}");
        assert!(!log.contains("s3cret-pw-91"), "password in the log:\n{log}");
        // A token on 1.x (no token auth there) is refused; the token is not logged.
        let (st, log) = run(
            &base,
            &[("INFLUX_TOKEN", "tok-abc-123"), ("FLOWLENS_LOG", "trace")],
            "token",
        );
        assert!(
            st.is_some_and(|s| !s.success()) && !log.contains("tok-abc-123"),
            "{log}"
        );
        // Unreachable: an ERROR, but it runs (records go to the spool).
        let down = format!("http://127.0.0.1:{}", free_port());
        let extra: Vec<String> = ["--influx-url", &down, "--influx-spool-dir"]
            .iter()
            .map(|s| s.to_string())
            .chain([art.path().join("spool2").to_string_lossy().into_owned()])
            .collect();
        let fl = FlowlensRun::start(art.path(), &net.host_if, &extra, &[], "down");
        let log = fl.stop();
        assert!(
            log.contains("ERROR") && log.contains("not reachable"),
            "{log}"
        );
        // A bad URL is a configuration error naming the setting.
        let (st, log) = run(&["--influx-url".into(), "ftp://x".into()], &[], "badurl");
        assert!(
            st.is_some_and(|s| !s.success()) && log.contains("url"),
            "{log}"
        );
    });
}
