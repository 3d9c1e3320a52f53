//! The Grafana dashboards (grafana/dashboards/*.json) as files: valid JSON, a current schemaVersion,
//! unique panel ids, the provisioned data source uid everywhere, raw InfluxQL with `$timeFilter` and
//! rates as sums per interval (no derivative), links to dashboards that exist, the JSON and
//! docs/queries.md exactly what grafana/build-dashboards.py writes, and provisioning that references paths
//! that exist. The queries themselves run in grafana_queries.rs. No root needed.
//! `cargo test -p flowlens-tests --test grafana_dashboards`

use std::collections::BTreeSet;

use flowlens_tests::grafana::dashboards;
use flowlens_tests::{repo_root, TempDir};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------------
// Static checks (no root, no InfluxDB)

/// Current Grafana (11.x) dashboards carry schemaVersion 39 or later.
const MIN_SCHEMA_VERSION: i64 = 39;

#[test]
fn dashboards_are_valid_and_use_the_provisioned_data_source() {
    let ds =
        std::fs::read_to_string(repo_root().join("grafana/provisioning/datasources/flowlens.yaml"))
            .expect("datasource provisioning");
    let uid = ds
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid: "))
        .expect("the data source has a fixed uid")
        .trim();
    let ds2 = std::fs::read_to_string(
        repo_root().join("grafana/provisioning/datasources-influxdb2/flowlens.yaml"),
    )
    .expect("2.x datasource");
    assert!(
        ds2.contains(&format!("uid: {uid}")),
        "both variants keep the uid"
    );
    let all = dashboards();
    let uids: BTreeSet<&str> = all.iter().map(|d| d.uid.as_str()).collect();
    let want = [
        "flowlens-container",
        "flowlens-conversations",
        "flowlens-host",
        "flowlens-overview",
        "flowlens-process",
        "flowlens-user",
    ];
    assert_eq!(uids, want.into_iter().collect());
    for d in &all {
        let j = &d.json;
        assert!(
            j["schemaVersion"].as_i64().unwrap_or(0) >= MIN_SCHEMA_VERSION,
            "{}: schemaVersion {}",
            d.uid,
            j["schemaVersion"]
        );
        assert!(
            j["id"].is_null(),
            "{}: no instance id in a provisioned file",
            d.uid
        );
        let panels = j["panels"].as_array().expect("panels");
        let ids: Vec<i64> = panels
            .iter()
            .map(|p| p["id"].as_i64().expect("id"))
            .collect();
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{}: duplicate panel ids {ids:?}",
            d.uid
        );
        let titles: BTreeSet<_> = panels.iter().map(|p| p["title"].as_str()).collect();
        assert_eq!(titles.len(), panels.len(), "{}: duplicate titles", d.uid);
        let mut datasources = Vec::new();
        collect_datasources(j, &mut datasources);
        assert!(!datasources.is_empty());
        for (ty, u) in &datasources {
            assert_eq!((ty.as_str(), u.as_str()), ("influxdb", uid), "{}", d.uid);
        }
        for p in panels {
            let targets = p["targets"].as_array().expect("targets");
            assert!(
                !targets.is_empty(),
                "{}: {} has no query",
                d.uid,
                p["title"]
            );
            for t in targets {
                assert_eq!(t["rawQuery"], true, "raw InfluxQL");
                let q = t["query"].as_str().expect("query");
                assert!(q.contains("$timeFilter"), "{}: {q}", d.uid);
                assert!(!q.contains("derivative"), "counters are deltas: {q}");
                if p["type"] == "timeseries" && p["fieldConfig"]["defaults"]["unit"] == "µs" {
                    // A latency: the mean recombined from the rollup's sum and count, never a mean of means.
                    assert!(
                        q.contains("GROUP BY time($__interval)")
                            && q.contains("sum(\"rtt_sum_us\") / sum(\"rtt_samples\")")
                            && !q.contains("mean("),
                        "a mean latency is sum over count per interval: {q}"
                    );
                } else if p["type"] == "timeseries" {
                    assert!(
                        q.contains("GROUP BY time($__interval)") && q.contains("/ $__interval_ms"),
                        "a rate is the sum per interval divided by it: {q}"
                    );
                }
            }
            // Links point at dashboards that exist.
            let text = p.to_string();
            for (i, _) in text.match_indices("/d/") {
                let target: String = text[i + 3..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                assert!(
                    uids.contains(target.as_str()),
                    "{}: link to {target}",
                    d.uid
                );
            }
        }
    }
}

fn collect_datasources(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(ds) = m.get("datasource").filter(|d| d.is_object()) {
                out.push((
                    ds["type"].as_str().unwrap_or("?").to_owned(),
                    ds["uid"].as_str().unwrap_or("?").to_owned(),
                ));
            }
            m.values().for_each(|x| collect_datasources(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_datasources(x, out)),
        _ => {}
    }
}

#[test]
fn dashboards_are_what_the_generator_writes() {
    let tmp = TempDir::new("dashboards");
    let st = std::process::Command::new("python3")
        .arg(repo_root().join("grafana/build-dashboards.py"))
        .arg("--out")
        .arg(tmp.path())
        .arg("--docs")
        .arg(tmp.path().join("queries.md"))
        .status()
        .expect("python3");
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(repo_root().join("docs/queries.md")).ok(),
        std::fs::read_to_string(tmp.path().join("queries.md")).ok(),
        "docs/queries.md differs from what grafana/build-dashboards.py writes: run it"
    );
    for d in [
        "overview",
        "container",
        "process",
        "user",
        "host",
        "conversations",
    ] {
        let f = format!("{d}.json");
        let committed = std::fs::read_to_string(repo_root().join("grafana/dashboards").join(&f));
        let fresh = std::fs::read_to_string(tmp.path().join(&f));
        assert_eq!(
            committed.ok(),
            fresh.ok(),
            "grafana/dashboards/{f} differs from what grafana/build-dashboards.py writes: run it"
        );
    }
}

#[test]
fn provisioning_references_existing_paths() {
    let compose = std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("compose");
    // Every ./grafana bind mount exists, and the dashboards provider reads where the JSON is mounted.
    let mounts: Vec<(String, String)> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./grafana/"))
        .map(|m| {
            let mut parts = m.split(':');
            let host = format!("grafana/{}", parts.next().expect("host path"));
            (host, parts.next().expect("container path").to_owned())
        })
        .collect();
    assert_eq!(mounts.len(), 3, "{mounts:?}");
    for (host, _) in &mounts {
        assert!(repo_root().join(host).is_dir(), "{host} missing");
    }
    let provider =
        std::fs::read_to_string(repo_root().join("grafana/provisioning/dashboards/flowlens.yaml"))
            .expect("dashboard provider");
    let path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .expect("provider path");
    let (host, _) = mounts
        .iter()
        .find(|(_, c)| c == path)
        .unwrap_or_else(|| panic!("nothing is mounted at the provider's path {path}"));
    assert!(std::fs::read_dir(repo_root().join(host))
        .expect("dashboards dir")
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "json")));
    let home = compose
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: ")
        })
        .expect("home dashboard");
    let file = home
        .strip_prefix(&format!("{path}/"))
        .expect("home under the provider path");
    assert!(repo_root().join(host).join(file).is_file(), "{home}");
    // Every ${GF_*} the data source files read is set in the Grafana service (or the 2.x override).
    let override2 = std::fs::read_to_string(repo_root().join("deploy/compose/influxdb2.yml"))
        .expect("override");
    for f in [
        "datasources/flowlens.yaml",
        "datasources-influxdb2/flowlens.yaml",
    ] {
        let text =
            std::fs::read_to_string(repo_root().join("grafana/provisioning").join(f)).expect("ds");
        for (i, _) in text.match_indices("${") {
            let name: String = text[i + 2..].chars().take_while(|c| *c != '}').collect();
            let set = format!("{name}:");
            assert!(
                compose.contains(&set) || override2.contains(&set),
                "{f} reads ${{{name}}}, which no compose file sets"
            );
        }
    }
}
