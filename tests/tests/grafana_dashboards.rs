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
//! Needs root. `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test grafana_dashboards -- --test-threads=1`

mod common;
mod influx_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::flowlens::read_jsonl;
use common::{scenario, sleep_ms, ArtifactDir, FakeContainer, Place, Proc, VethNetns, NOBODY};
use influx_common::{wait_for, FlowlensRun, Influxd};
use serde_json::Value;

const DB: &str = "flowlens";
/// uid of `daemon` on Debian.
const DAEMON: u32 = 1;
/// `$__interval` of every query: Grafana's min interval for flowlens (grafana/provisioning).
const INTERVAL_S: i64 = 10;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------------
// The dashboards as data

struct Query {
    dashboard: String,
    panel: String,
    kind: String,
    query: String,
}

struct Dashboard {
    uid: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
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

fn panel_queries(d: &Dashboard) -> Vec<Query> {
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

fn variables(d: &Dashboard) -> Vec<(String, String)> {
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

// ---------------------------------------------------------------------------------------------------
// Static checks (no root, no InfluxDB)

/// Current Grafana (11.x) dashboards carry schemaVersion 39 or later.
const MIN_SCHEMA_VERSION: i64 = 39;

#[test]
fn dashboards_are_valid_and_use_the_provisioned_data_source() {
    let ds = std::fs::read_to_string(repo().join("grafana/provisioning/datasources/flowlens.yaml"))
        .expect("datasource provisioning");
    let uid = ds
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid: "))
        .expect("the data source has a fixed uid")
        .trim();
    let ds2 = std::fs::read_to_string(
        repo().join("grafana/provisioning/datasources-influxdb2/flowlens.yaml"),
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
                if p["type"] == "timeseries" {
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
    let tmp = influx_common::TempDir::new("dashboards");
    let st = std::process::Command::new("python3")
        .arg(repo().join("grafana/build-dashboards.py"))
        .arg("--out")
        .arg(tmp.path())
        .arg("--docs")
        .arg(tmp.path().join("queries.md"))
        .status()
        .expect("python3");
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(repo().join("docs/queries.md")).ok(),
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
        let committed = std::fs::read_to_string(repo().join("grafana/dashboards").join(&f));
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
    let compose = std::fs::read_to_string(repo().join("docker-compose.yml")).expect("compose");
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
        assert!(repo().join(host).is_dir(), "{host} missing");
    }
    let provider =
        std::fs::read_to_string(repo().join("grafana/provisioning/dashboards/flowlens.yaml"))
            .expect("dashboard provider");
    let path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .expect("provider path");
    let (host, _) = mounts
        .iter()
        .find(|(_, c)| c == path)
        .unwrap_or_else(|| panic!("nothing is mounted at the provider's path {path}"));
    assert!(std::fs::read_dir(repo().join(host))
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
    assert!(repo().join(host).join(file).is_file(), "{home}");
    // Every ${GF_*} the data source files read is set in the Grafana service (or the 2.x override).
    let override2 =
        std::fs::read_to_string(repo().join("deploy/compose/influxdb2.yml")).expect("override");
    for f in [
        "datasources/flowlens.yaml",
        "datasources-influxdb2/flowlens.yaml",
    ] {
        let text =
            std::fs::read_to_string(repo().join("grafana/provisioning").join(f)).expect("ds");
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

// ---------------------------------------------------------------------------------------------------
// The traffic scenario

const SCRIPT: &str = r#"
import os, signal, socket, struct, sys
signal.alarm(60)
def say(*a): print(*a, flush=True)
mode = sys.argv[1]
if mode == 'tcp-server':
    addr, port, recv_n, send_n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(1); say('READY')
    c, _ = ls.accept(); got = 0
    while got < recv_n:
        b = c.recv(65536)
        if not b: sys.exit('EOF')
        got += len(b)
    c.sendall(b's' * send_n); c.shutdown(socket.SHUT_WR)
    while c.recv(65536): pass
    say('DONE')
elif mode == 'tcp-client':
    addr, port, send_n, recv_n = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    s = socket.create_connection((addr, port)); s.sendall(b'c' * send_n); got = 0
    while True:
        b = s.recv(65536)
        if not b: break
        got += len(b)
    s.close()
    if got != recv_n: sys.exit('got %d' % got)
    say('DONE')
elif mode == 'udp-server':
    addr, port, count, reply = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, port)); say('READY')
    for _ in range(count):
        d, peer = s.recvfrom(65536)
        if reply: s.sendto(b's' * reply, peer)
    say('DONE')
elif mode == 'udp-client':
    addr, port, sizes = sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4].split(',')]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10); s.connect((addr, port))
    for n in sizes:
        s.send(b'c' * n); s.recv(65536)
    say('DONE')
elif mode == 'raw-udp':
    # IPv4/UDP frames written on an AF_PACKET socket: no UDP socket owns their source.
    ifname, dmac, smac, src, dst, sport, dport = sys.argv[2:9]
    sizes = [int(x) for x in sys.argv[9].split(',')]
    mac = lambda m: bytes(int(x, 16) for x in m.split(':'))
    def csum(b):
        s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
        while s >> 16: s = (s & 0xffff) + (s >> 16)
        return ~s & 0xffff
    k = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); k.bind((ifname, 0))
    for i, n in enumerate(sizes):
        udp = struct.pack('!HHHH', int(sport), int(dport), 8 + n, 0) + b'r' * n
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28 + n, 4242 + i, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
        k.send(mac(dmac) + mac(smac) + b'\x08\x00' + ip + udp)
    say('DONE')
"#;

/// Symlinks to the Python interpreter named like services, so each process has its own `comm`
/// (the kernel names a process after the path it was executed by). Removed on drop.
struct Commands(PathBuf);

impl Commands {
    fn new(u: &common::Uniq) -> Self {
        let dir = PathBuf::from(format!("/tmp/fl13-{u}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let python = common::agent::python();
        for name in [
            "websrv", "loadgen", "sink", "uploader", "dnsd", "resolver", "udpsink", "rawsend",
        ] {
            std::os::unix::fs::symlink(&python, dir.join(name)).expect("symlink");
        }
        Commands(dir)
    }

    fn spawn(&self, comm: &str, place: Place<'_>, uid: Option<u32>, args: &[&str]) -> Proc {
        let exe = self.0.join(comm).to_string_lossy().into_owned();
        let mut argv = vec![exe.as_str(), "-c", SCRIPT];
        argv.extend_from_slice(args);
        Proc::spawn(place, uid, &argv)
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mac_of(ns: Option<&str>, dev: &str) -> String {
    let mut args = vec![];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-o", "link", "show", dev]);
    let out = common::cmd::run("ip", &args);
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .expect("MAC address")
        .to_owned()
}

/// UDP datagrams of `payload` bytes over IPv4: L3 bytes.
fn udp_l3(payloads: &[usize]) -> i64 {
    payloads.iter().map(|p| (p + 28) as i64).sum()
}

const DNS_QUERIES: [usize; 3] = [100, 200, 300];
const DNS_REPLY: usize = 50;
const REMOTE_DATAGRAMS: [usize; 2] = [1000, 1200];

/// Names and addresses of the scenario.
struct World {
    host: String,
    a: String,
    b: String,
    a_if: String,
    b_if: String,
    /// Address of the host process `loadgen` as its peer `websrv` sees it.
    a_gw: String,
    remote: String,
}

fn run_traffic(
    cmds: &Commands,
    na: &VethNetns,
    ca: &FakeContainer,
    nb: &VethNetns,
    cb: &FakeContainer,
) {
    let (a_peer, b_peer) = (na.peer_v4.to_string(), nb.peer_v4.to_string());
    let (a_host, b_host) = (na.host_v4.to_string(), nb.host_v4.to_string());
    // T1: host loadgen (nobody) -> container A websrv (daemon), the heaviest conversation.
    let mut web = cmds.spawn(
        "websrv",
        Place::In(ca),
        Some(DAEMON),
        &["tcp-server", &a_peer, "8080", "20000", "200000"],
    );
    web.expect_line("READY");
    let mut load = cmds.spawn(
        "loadgen",
        Place::Host,
        Some(NOBODY),
        &["tcp-client", &a_peer, "8080", "20000", "200000"],
    );
    load.expect_line("DONE");
    web.expect_line("DONE");
    // T2: container B uploader (daemon) -> host sink (root).
    let mut sink = cmds.spawn(
        "sink",
        Place::Host,
        None,
        &["tcp-server", &b_host, "9090", "30000", "100"],
    );
    sink.expect_line("READY");
    let mut up = cmds.spawn(
        "uploader",
        Place::In(cb),
        Some(DAEMON),
        &["tcp-client", &b_host, "9090", "30000", "100"],
    );
    up.expect_line("DONE");
    sink.expect_line("DONE");
    // U1: host resolver (root) -> container B dnsd (nobody), UDP.
    let mut dns = cmds.spawn(
        "dnsd",
        Place::In(cb),
        Some(NOBODY),
        &["udp-server", &b_peer, "5353", "3", &DNS_REPLY.to_string()],
    );
    dns.expect_line("READY");
    let sizes = DNS_QUERIES.map(|s| s.to_string()).join(",");
    let mut res = cmds.spawn(
        "resolver",
        Place::Host,
        None,
        &["udp-client", &b_peer, "5353", &sizes],
    );
    res.expect_line("DONE");
    dns.expect_line("DONE");
    // R1: a remote endpoint (an address of A's subnet no socket uses) -> host udpsink (nobody).
    let mut us = cmds.spawn(
        "udpsink",
        Place::Host,
        Some(NOBODY),
        &["udp-server", &a_host, "7070", "2", "0"],
    );
    us.expect_line("READY");
    let (dmac, smac) = (mac_of(None, &na.host_if), mac_of(Some(&na.ns), &na.peer_if));
    let remote = remote_addr(na);
    let sizes = REMOTE_DATAGRAMS.map(|s| s.to_string()).join(",");
    let mut raw = cmds.spawn(
        "rawsend",
        Place::In(ca),
        None,
        &[
            "raw-udp",
            &na.peer_if,
            &dmac,
            &smac,
            &remote,
            &a_host,
            "40000",
            "7070",
            &sizes,
        ],
    );
    raw.expect_line("DONE");
    us.expect_line("DONE");
    for p in [
        &mut web, &mut load, &mut sink, &mut up, &mut dns, &mut res, &mut us, &mut raw,
    ] {
        p.wait_success();
    }
}

fn remote_addr(na: &VethNetns) -> String {
    let o = na.peer_v4.octets();
    format!("{}.{}.{}.77", o[0], o[1], o[2])
}

// ---------------------------------------------------------------------------------------------------
// What the scenario implies, from the collector's JSON records (an implementation of the schema's
// rules independent of the encoder's)

/// One local end of a record, as the rollup sees it.
#[derive(Clone, Debug)]
struct End {
    tags: BTreeMap<&'static str, String>,
    sent: i64,
    recv: i64,
}

fn label(e: &Value) -> String {
    match (e["container_id"].as_str(), e["container_name"].as_str()) {
        (None, _) => "host".into(),
        (Some(_), Some(n)) if !n.is_empty() => n.into(),
        (Some(id), _) => id.chars().take(12).collect(),
    }
}

fn user_label(e: &Value) -> String {
    match e["user"].as_str() {
        Some(u) if !u.is_empty() => u.into(),
        _ => e["uid"].to_string(),
    }
}

fn server_port(r: &Value) -> String {
    let p = r["server"]["port"].as_u64().unwrap_or(0);
    let icmp = r["proto"].as_str().unwrap_or("").starts_with("icmp");
    if p == 0 || icmp {
        String::new()
    } else {
        p.to_string()
    }
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn ends(records: &[Value]) -> Vec<End> {
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
type Totals = BTreeMap<Vec<String>, i64>;

fn group<T>(
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

fn flow_tag(r: &Value, key: &str) -> String {
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

fn bytes(r: &Value) -> i64 {
    n(&r["bytes_c2s"]) + n(&r["bytes_s2c"])
}

// ---------------------------------------------------------------------------------------------------
// Running the queries as Grafana would

/// Grafana's regex escaping of variable values in InfluxQL (`influxRegularEscape`).
fn regex_escape(v: &str) -> String {
    v.chars()
        .flat_map(|c| {
            let special = "\\^$*+?.()|[]{}/".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

struct Render {
    time_filter: String,
    /// name -> value as substituted (".*" for All).
    vars: Vec<(String, String)>,
}

impl Render {
    fn apply(&self, q: &str) -> String {
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

/// One result series: its tags and rows as column -> value.
struct Series {
    tags: BTreeMap<String, String>,
    rows: Vec<BTreeMap<String, Value>>,
}

fn run_query(influx: &Influxd, q: &str) -> Vec<Series> {
    let v = influx.query(DB, q);
    v.pointer("/results/0/series")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| {
            let tags = s["tags"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect();
            let cols: Vec<String> = s["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| c.as_str().unwrap_or("").to_owned())
                .collect();
            let rows = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    cols.iter()
                        .cloned()
                        .zip(r.as_array().expect("row").iter().cloned())
                        .collect()
                })
                .collect();
            Series { tags, rows }
        })
        .collect()
}

/// A rate time series back to totals per group (value × interval, summed over the buckets).
fn series_totals(res: &[Series], keys: &[&str]) -> Totals {
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
fn table_rows(res: &[Series], keys: &[&str], value: &str) -> Vec<(Vec<String>, i64)> {
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
fn top_n(want: &Totals, n: usize) -> Vec<(Vec<String>, i64)> {
    let mut v: Vec<_> = want.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn check_table(what: &str, got: Vec<(Vec<String>, i64)>, want: &Totals, n: usize) {
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

// ---------------------------------------------------------------------------------------------------
// The test

#[test]
fn every_panel_and_variable_query_returns_what_the_traffic_implies() {
    scenario(|u| {
        let influx = Influxd::start();
        let art = ArtifactDir::new(u);
        let (ua, ub) = (common::Uniq::new(), common::Uniq::new());
        let na = VethNetns::new(&ua);
        let ca = FakeContainer::new(&ua, &na);
        let nb = VethNetns::new(&ub);
        let cb = FakeContainer::new(&ub, &nb);
        let cmds = Commands::new(u);
        let t0 = now_ms() - 60_000;
        let spool = art.path().join("spool").to_string_lossy().into_owned();
        let extra: Vec<String> = [
            "--iface",
            &nb.host_if,
            "--influx-url",
            &influx.url(),
            "--influx-db",
            DB,
            "--influx-create-db",
            "--influx-spool-dir",
            &spool,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
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
        };
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
                    let res = run_query(&influx, &r.apply(&q));
                    check_variable(&d.uid, &name, &res, &w);
                    checked += 1;
                }
                for q in panel_queries(&d) {
                    let text = r.apply(&q.query);
                    let res = run_query(&influx, &text);
                    let ctx = format!("{} / {} with {sel:?}\n  {text}", q.dashboard, q.panel);
                    check_panel(&q, &ctx, &res, &records, &sel, &w);
                    checked += 1;
                }
            }
        }
        eprintln!("{checked} queries checked");
        assert!(checked > 60, "{checked}");
    });
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
            check_table(ctx, table_rows(res, &["peer"], "bytes"), &want, 10)
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
                Totals::new(),
                "{ctx}: nothing was lost"
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
