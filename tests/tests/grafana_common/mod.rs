//! Shared by the Grafana tests: the dashboards as data (mod.rs), the traffic scenario (scenario.rs), and
//! what the scenario implies plus running queries as Grafana would (expect.rs).

// Each test binary uses a different part.
#![allow(dead_code, unused_imports)]

pub mod expect;
pub mod scenario;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------------
// The dashboards as data

pub struct Query {
    pub dashboard: String,
    pub panel: String,
    pub kind: String,
    pub query: String,
}

pub struct Dashboard {
    pub uid: String,
    pub json: Value,
}

pub fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("grafana/dashboards");
    let mut out: Vec<Dashboard> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read dashboard");
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            let uid = json["uid"].as_str().expect("uid").to_owned();
            Dashboard { uid, json }
        })
        .collect();
    out.sort_by(|a, b| a.uid.cmp(&b.uid));
    out
}

pub fn panel_queries(d: &Dashboard) -> Vec<Query> {
    let mut out = Vec::new();
    for p in d.json["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                dashboard: d.uid.clone(),
                panel: p["title"].as_str().expect("title").to_owned(),
                kind: p["type"].as_str().expect("type").to_owned(),
                query: t["query"].as_str().expect("raw query").to_owned(),
            });
        }
    }
    out
}

pub fn variables(d: &Dashboard) -> Vec<(String, String)> {
    d.json["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            (
                v["name"].as_str().expect("name").to_owned(),
                v["query"].as_str().expect("query").to_owned(),
            )
        })
        .collect()
}
