//! The Grafana dashboards (`grafana/dashboards/*.json`) as data: their panels'
//! and variables' InfluxQL, for the static checks (`grafana_dashboards`) and
//! for running every query against a real InfluxDB (`grafana_queries`).

use serde_json::Value;

/// One panel query.
pub struct Query {
    /// The dashboard's uid.
    pub dashboard: String,
    /// The panel's title.
    pub panel: String,
    /// The panel's type (`timeseries`, `table`, ...).
    pub kind: String,
    /// The raw InfluxQL, variables not substituted.
    pub query: String,
}

/// One dashboard file.
pub struct Dashboard {
    /// Its uid (the `/d/<uid>` of links).
    pub uid: String,
    /// The whole file.
    pub json: Value,
}

/// Every dashboard of `grafana/dashboards`, by uid; a file that is not valid
/// JSON or has no uid fails.
pub fn dashboards() -> Vec<Dashboard> {
    let dir = crate::repo_root().join("grafana/dashboards");
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

/// Every query of every panel of `d`, in panel order.
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

/// The query variables of `d`: (name, InfluxQL).
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
