//! The explorer's pages in a real headless Chromium (WebDriver), against the
//! real `flowlens run` while two network-namespace "containers" on a bridge,
//! owned by distinct users, and the host talk (the scenario of web_e2e.rs):
//! the overview names the top container and process; the conversation table
//! filtered (typed with the keyboard) to a container shows only its rows
//! with the records' totals; the topology shows the edge between the two
//! containers with exact bytes and expands a container into its processes;
//! a conversation started after the page loaded appears without a reload; a
//! shared URL reproduces the view in another browser; the entity pages the
//! Grafana dashboards link to exist. Every request the pages made went to
//! the flowlens host; the console has no errors. Screenshots are kept in
//! target/tmp/browser-artifacts/<test>/. Then the same pages against
//! `flowlens web` reading the InfluxDB that `flowlens run` filled.
//! The golden signals too: a refused connect shows `refused` in the error column and the overview's
//! "Most errors" for the process that tried (its pid); a server found through a real dnsmasq shows the
//! resolved name (the address on hover and beside it).
//! Needs root: `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test web_browser -- --test-threads=1`

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use flowlens_tests::{
    agent,
    browser::{artifact_dir, get_json, Driver, Session},
    cmd,
    netns::{bridged, Bridged},
    scenario, ArtifactDir, FakeContainer, Flowlens, Place, Proc, NOBODY,
};
use serde_json::{json, Value};

// ---- the scenario (as web_e2e.rs: flowlens_tests::netns::bridged) -------

/// A (root) -> B (nobody) on 5001: 200,000 B up, 20,000 B down;
/// host (nobody) -> A (root) on 5002: 50,000 B up, 5,000 B down.
fn traffic(net: &Bridged, a: &FakeContainer, b: &FakeContainer) -> (u16, u16) {
    let (av4, bv4) = (IpAddr::V4(net.a.peer_v4), IpAddr::V4(net.b.peer_v4));
    let mut sb = agent::tcp_server(Place::In(b), Some(NOBODY), bv4, 5001, 200_000, 20_000);
    let mut sa = agent::tcp_server(Place::In(a), Some(0), av4, 5002, 50_000, 5_000);
    let (mut ca, ab) =
        agent::tcp_client(Place::In(a), Some(0), bv4, 5001, 200_000, 20_000, 0, false);
    let (mut ch, ha) = agent::tcp_client(
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
    (ab, ha)
}

// ---- the golden signals: a refused connect and a name resolved by dnsmasq --

const SIG_AGENT: &str = r#"
import signal, socket, struct, sys
signal.alarm(60)
def say(*a): print(*a, flush=True)
mode = sys.argv[1]
if mode == 'refused':
    s = socket.socket(); s.bind(('0.0.0.0', 0)); say('PORT', s.getsockname()[1])
    try:
        s.connect((sys.argv[2], int(sys.argv[3]))); sys.exit('connected to a closed port')
    except ConnectionRefusedError:
        say('REFUSED')
elif mode == 'srv':
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((sys.argv[2], int(sys.argv[3]))); ls.listen(1); say('READY')
    c, _ = ls.accept(); c.sendall(b's' * 3000); c.close(); say('DONE')
elif mode == 'resolve':
    server, name, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
    q = struct.pack('>HHHHHH', 0x4242, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\0' + struct.pack('>HH', 1, 1)
    u.sendto(q, (server, 53)); r, _ = u.recvfrom(4096)
    if r[3] & 0x0f or struct.unpack('>H', r[6:8])[0] == 0: sys.exit('no answer')
    s = socket.create_connection((socket.inet_ntoa(r[-4:]), port))
    say('CONNECTED', s.getsockname()[1])
    while s.recv(65536): pass
    s.close()
"#;

fn sig_agent(place: Place<'_>, uid: Option<u32>, args: &[&str]) -> Proc {
    let py = agent::python();
    let mut argv = vec![py.as_str(), "-c", SIG_AGENT];
    argv.extend_from_slice(args);
    Proc::spawn(place, uid, &argv)
}

/// The signal traffic's expectations.
#[derive(Debug)]
struct Signals {
    /// pid and client port of the refused connect (host, nobody) to B:5007.
    refused: (u32, u16),
    /// Its errors in the records: the failed connect and the RST that refused it.
    refused_errors: u64,
    /// Client port of the connection to `web.fltest` (B:5008) after resolving it at B's dnsmasq.
    named: u16,
    /// B's address.
    b_addr: String,
}

const NAME: &str = "web.fltest";

/// A refused connect to B's closed port 5007, then `web.fltest` resolved at a dnsmasq in B and
/// connected to on 5008; waits until flowlens's records show both.
fn signal_traffic(net: &Bridged, b: &FakeContainer, dir: &Path, jsonl: &Path) -> Signals {
    let b_addr = net.b.peer_v4.to_string();
    let mut refused = sig_agent(Place::Host, Some(NOBODY), &["refused", &b_addr, "5007"]);
    let rport: u16 = refused.expect_line("PORT")[0].parse().expect("port");
    refused.expect_line("REFUSED");
    refused.wait_success();
    let pidfile = format!("--pid-file={}", dir.join("dnsmasq.pid").display());
    let (listen, address) = (
        format!("--listen-address={b_addr}"),
        format!("--address=/{NAME}/{b_addr}"),
    );
    let _dnsmasq = Proc::spawn(
        Place::In(b),
        None,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            &listen,
            "--local=/fltest/",
            &address,
            &pidfile,
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut srv = sig_agent(Place::In(b), Some(NOBODY), &["srv", &b_addr, "5008"]);
    srv.expect_line("READY");
    let mut cli = sig_agent(
        Place::Host,
        Some(NOBODY),
        &["resolve", &b_addr, NAME, "5008"],
    );
    let named: u16 = cli.expect_line("CONNECTED")[0].parse().expect("port");
    cli.wait_success();
    srv.wait_success();
    let mut sig = Signals {
        refused: (refused.pid, rport),
        refused_errors: 0,
        named,
        b_addr,
    };
    let mut last = String::new();
    let seen = cmd::wait_until(Duration::from_secs(30), || {
        let recs = flowlens_tests::flowlens::read_jsonl(jsonl);
        let of = |port: u16, sport: u64| {
            recs.iter()
                .filter(|r| r["client"]["port"] == port && r["server"]["port"] == sport)
                .cloned()
                .collect::<Vec<_>>()
        };
        let (r, n) = (of(rport, 5007), of(named, 5008));
        last = format!("{r:?}\n{n:?}");
        r.iter()
            .any(|r| r["connect_error"] == "refused" && r["client"]["pid"] == sig.refused.0)
            && !n.is_empty()
            && n.iter().all(|r| r["server"]["name"] == NAME)
    });
    assert!(
        seen,
        "the records never showed the refused connect and the name:\n{last}"
    );
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    sig.refused_errors = flowlens_tests::flowlens::read_jsonl(jsonl)
        .iter()
        .filter(|r| r["client"]["port"] == rport && r["server"]["port"] == 5007)
        .map(|r| {
            [
                "retransmits_c2s",
                "retransmits_s2c",
                "resets_c2s",
                "resets_s2c",
            ]
            .iter()
            .map(|k| n(&r[*k]))
            .sum::<u64>()
                + u64::from(r["connect_error"].is_string())
        })
        .sum();
    assert!(sig.refused_errors >= 1, "the failed connect is an error");
    sig
}

/// The conversation list's error column and the overview's "Most errors" show the refused connect on the
/// process that tried; the named server shows its name with the address beside it and on hover.
fn check_signal_pages(drv: &Driver, base: &str, sig: &Signals, shots: &Path) {
    let mut s = drv.session();
    let f = enc(&format!("server_port = 5007 AND port = {}", sig.refused.1));
    s.goto(&format!(
        "{base}/conversations?from=now-15m&sort=errors&filter={f}"
    ));
    rendered(&s, 1);
    s.wait_for(
        "the refused connect",
        LONG,
        "return document.querySelectorAll('#conversations tbody tr .connect-error').length === 1",
        &[],
    );
    let got = s.exec(
        "const tr = document.querySelector('#conversations tbody tr'); return [tr.querySelector('.connect-error').innerText, tr.cells[1].innerText, document.querySelector('#total-connect-errors').innerText]",
        &[],
    );
    assert_eq!(got[0], "refused", "{got}");
    let client = got[1].as_str().unwrap_or("");
    assert!(
        client.contains(&format!("({})", sig.refused.0)) && client.contains("nobody"),
        "the refused connect is on the client process {} of nobody: {got}",
        sig.refused.0
    );
    assert_eq!(got[2], "1 failed", "{got}");
    s.screenshot(&shots.join("conversations-refused.png"));

    s.goto(&format!("{base}/?from=now-15m&filter={f}"));
    rendered(&s, 1);
    let rows = s.exec(ROWS, &[json!("#most-errors")]);
    let row = &rows[0];
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(
        row[2],
        format!("{} (refused)", sig.refused_errors),
        "{rows}"
    );
    assert!(
        row[0]
            .as_str()
            .unwrap_or("")
            .contains(&sig.refused.1.to_string()),
        "{rows}"
    );
    s.screenshot(&shots.join("overview-most-errors.png"));

    let f = enc(&format!("server_port = 5008 AND port = {}", sig.named));
    s.goto(&format!(
        "{base}/conversations?from=now-15m&sort=rtt&filter={f}"
    ));
    rendered(&s, 1);
    s.wait_for(
        "the named conversation",
        LONG,
        "return document.querySelectorAll('#conversations tbody tr').length === 1",
        &[],
    );
    let got = s.exec(
        "const c = document.querySelector('#conversations tbody tr').cells[2]; const n = c.querySelector('.named'); return n ? [n.firstChild.innerText, n.firstChild.getAttribute('title'), n.querySelector('small.addr').innerText, n.dataset.addr] : [c.innerText]",
        &[],
    );
    let at = format!("{}:5008", sig.b_addr);
    assert_eq!(
        got,
        json!([format!("{NAME}:5008"), at, sig.b_addr, sig.b_addr]),
        "the server shows its name, the address beside it and on hover"
    );
    s.screenshot(&shots.join("conversations-named.png"));
    assert_local(&mut s, base);
}

fn web_base(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("Web UI and API listening"))?;
    let i = line.find("url=http://")?;
    let rest = &line[i + 4..];
    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('/').to_owned())
}

fn label(p: &Value) -> String {
    match (p["container_id"].as_str(), p["container_name"].as_str()) {
        (None, _) => "host".into(),
        (Some(_), Some(n)) if !n.is_empty() => n.into(),
        (Some(id), _) => id[..12].into(),
    }
}

/// What the pages must show, from the records flowlens wrote.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    host: String,
    by_container: BTreeMap<String, u64>,
    by_process: BTreeMap<String, u64>,
    ab: (u64, u64),
    ha: (u64, u64),
    /// `10.200.n.0/24`.
    subnet: String,
}

fn expected(recs: &[Value], ports: (u16, u16)) -> Expected {
    let mut e = Expected::default();
    for r in recs {
        let sport = r["server"]["port"].as_u64();
        let cport = r["client"]["port"].as_u64().unwrap_or(0) as u16;
        let which = match sport {
            Some(5001) if cport == ports.0 => &mut e.ab,
            Some(5002) if cport == ports.1 => &mut e.ha,
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
                let comm = p["comm"].as_str().unwrap_or("").to_owned();
                *e.by_process.entry(comm).or_default() += c2s + s2c;
            }
        }
    }
    e
}

fn top_of(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .max_by_key(|(_, v)| **v)
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Our traffic only (other tests may run beside this one): our subnet and ports.
fn ours(subnet: &str) -> String {
    format!("addr << {subnet} AND server_port IN (5001, 5002)")
}
const LONG: Duration = Duration::from_secs(40);

/// Waits until the API's top containers agree with the records.
fn settle(base: &str, jsonl: &Path, ports: (u16, u16), subnet: &str) -> Expected {
    let mut last = String::new();
    let ok = cmd::wait_until(Duration::from_secs(30), || {
        let e = expected(&flowlens_tests::flowlens::read_jsonl(jsonl), ports);
        if e.ab.0 < 200_000 || e.ha.0 < 50_000 {
            last = format!("records incomplete: {e:?}");
            return false;
        }
        let v = get_json(&format!(
            "{base}/api/top?from=now-15m&dims=container&filter={}",
            enc(&ours(subnet))
        ));
        let got: BTreeMap<String, u64> = v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["dims"]["container"].as_str().unwrap_or("").to_owned(),
                    r["total"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        last = format!("{v}\n{e:?}");
        got == e.by_container
    });
    assert!(ok, "the API never matched the records:\n{last}");
    let mut e = expected(&flowlens_tests::flowlens::read_jsonl(jsonl), ports);
    e.subnet = subnet.to_owned();
    e
}

// ---- the pages --------------------------------------------------------------

/// Rows of a table as arrays of cell texts.
const ROWS: &str = "return [...document.querySelectorAll(arguments[0] + ' tbody tr')].map(tr => [...tr.cells].map(td => td.innerText.trim()))";

/// Waits until the page rendered at least `n` times (`body[data-rendered]`).
fn rendered(s: &Session, n: u64) {
    s.wait_for(
        "the page to render",
        LONG,
        "return Number(document.body.dataset.rendered || 0) >= arguments[0]",
        &[json!(n)],
    );
}

/// What the pages must show for one server (`run` or `web`); `live` adds
/// traffic after the conversation page loaded (only with a collector).
fn check_pages(
    drv: &Driver,
    base: &str,
    e: &Expected,
    a: &str,
    b: &str,
    shots: &Path,
    live: Option<&dyn Fn()>,
) {
    let mut s = drv.session();
    let our = ours(&e.subnet);
    let f = enc(&our);
    // Overview: the top container and process, the top tables.
    s.goto(&format!("{base}/?from=now-15m&filter={f}"));
    rendered(&s, 1);
    let top = s.exec(
        "return [document.querySelector('#top-container').innerText, document.querySelector('#top-process').innerText]",
        &[],
    );
    let (tc, tp) = (top_of(&e.by_container), top_of(&e.by_process));
    assert!(
        top[0].as_str().is_some_and(|t| t.starts_with(&tc))
            && top[1].as_str().is_some_and(|t| t.starts_with(&tp)),
        "overview shows {top}, expected top container {tc} and process {tp}"
    );
    let names: Vec<String> = s
        .exec(ROWS, &[json!("#top-containers")])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r[0].as_str().map(str::to_owned))
        .collect();
    let want: Vec<String> = {
        let mut v: Vec<(&String, &u64)> = e.by_container.iter().collect();
        v.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
        v.into_iter().map(|(k, _)| k.clone()).collect()
    };
    assert_eq!(names, want, "top containers in order");
    s.screenshot(&shots.join("overview.png"));

    // Conversations: typed into the filter box with the keyboard.
    s.goto(&format!("{base}/conversations?from=now-15m"));
    rendered(&s, 1);
    let filter = format!("container = \"{a}\" AND {our}");
    s.type_into("#filter", &format!("{filter}\u{E007}"));
    let want_rows = 2; // A -> B and host -> A
    s.wait_for(
        "A's conversations",
        LONG,
        "return new URLSearchParams(location.search).get('filter') === arguments[0] && document.querySelectorAll('#conversations tbody tr').length === arguments[1] && document.querySelector('#total-c2s') !== null",
        &[json!(filter), json!(want_rows)],
    );
    let rows = s.exec(ROWS, &[json!("#conversations")]);
    for r in rows.as_array().into_iter().flatten() {
        let text = r.to_string();
        assert!(text.contains(a), "a row without container {a}: {r}");
    }
    let totals = s.exec(
        "return [Number(document.querySelector('#total-c2s').dataset.v), Number(document.querySelector('#total-s2c').dataset.v)]",
        &[],
    );
    assert_eq!(
        totals,
        json!([e.ab.0 + e.ha.0, e.ab.1 + e.ha.1]),
        "totals of A's conversations"
    );
    s.screenshot(&shots.join("conversations.png"));
    let csv = s.exec("return document.querySelector('#csv').href", &[]);
    let csv = ureq::get(csv.as_str().unwrap_or(""))
        .call()
        .expect("csv")
        .into_string()
        .expect("csv text");
    assert_eq!(
        csv.lines().count(),
        1 + want_rows,
        "CSV of the view:\n{csv}"
    );

    // Topology: the edge between the containers; expand A into processes.
    let expand = enc(&format!("host:{}", e.host));
    s.goto(&format!(
        "{base}/topology?from=now-15m&filter={}&expand={expand}",
        enc(&format!("addr << {} AND server_port = 5001", e.subnet))
    ));
    rendered(&s, 1);
    let (x, y) = (
        format!("container:{}/{a}", e.host),
        format!("container:{}/{b}", e.host),
    );
    let (src, dst, fwd, back) = if x < y {
        (x.clone(), y, e.ab.0, e.ab.1)
    } else {
        (y, x.clone(), e.ab.1, e.ab.0)
    };
    let edge = s.wait_for(
        "the edge A-B",
        LONG,
        "const e = [...document.querySelectorAll('.edge')].find(e => e.dataset.source === arguments[0] && e.dataset.target === arguments[1]); return e ? [Number(e.dataset.forward), Number(e.dataset.backward)] : null",
        &[json!(src), json!(dst)],
    );
    assert_eq!(edge, json!([fwd, back]), "edge {src} - {dst}");
    s.click(&format!("button.expand[data-id=\"{x}\"]"));
    let procs = s.wait_for(
        "A's processes",
        LONG,
        "return [...document.querySelectorAll('#nodes tr[data-id]')].map(t => t.dataset.id).filter(id => id.startsWith(arguments[0]))",
        &[json!(format!("process:{}/{a}/", e.host))],
    );
    assert_eq!(
        procs,
        json!([format!("process:{}/{a}/{}", e.host, agent::python_comm())]),
        "A expanded into its processes"
    );
    assert!(s.url().contains(&enc(&x)), "the expansion is in the URL");
    s.screenshot(&shots.join("topology.png"));

    // Entity pages, as linked from the Grafana dashboards.
    for (kind, name) in [
        ("container", a.to_owned()),
        ("process", agent::python_comm()),
        ("user", "nobody".to_owned()),
        ("remote", "192.0.2.1".to_owned()),
    ] {
        s.goto(&format!("{base}/{kind}/{}?from=now-15m", enc(&name)));
        rendered(&s, 1);
        let h = s.exec(
            "return document.querySelector('#entity-name').innerText",
            &[],
        );
        assert_eq!(h, json!(name), "{kind} page");
    }
    s.goto(&format!("{base}/container/{a}?from=now-15m&filter={f}"));
    rendered(&s, 1);
    let peers = s.exec(ROWS, &[json!("#entity-peers")]);
    assert!(peers.to_string().contains(b), "A's peers name B: {peers}");
    s.screenshot(&shots.join("entity.png"));

    // A shared URL reproduces the view: configure visualize by keyboard and
    // pickers, open its URL in another browser.
    s.goto(&format!("{base}/visualize?from=now-15m&filter={f}"));
    rendered(&s, 1);
    // Keyboard: from a fresh page, Tab reaches the skip link, the brand, then the nav.
    s.keys(&["\u{E004}", "\u{E004}", "\u{E004}"]);
    let focused = s.exec("return document.activeElement.textContent", &[]);
    assert_eq!(
        focused,
        json!("Overview"),
        "Tab order: skip link, brand, nav"
    );
    s.exec(
        "const d = document.querySelector('#dim1'); d.value = 'process'; d.dispatchEvent(new Event('change'))",
        &[],
    );
    s.wait_for(
        "the second dimension",
        LONG,
        "return location.search.includes('dims=container%2Cprocess') && document.querySelectorAll('#top-table thead th').length === 8",
        &[],
    );
    rendered(&s, 2);
    let shared = s.url();
    let table = s.exec(ROWS, &[json!("#top-table")]);
    s.screenshot(&shots.join("visualize.png"));
    {
        let mut s2 = drv.session();
        s2.goto(&shared);
        rendered(&s2, 1);
        let dims = s2.exec(
            "return [document.querySelector('#dim0').value, document.querySelector('#dim1').value, document.querySelector('#filter').value]",
            &[],
        );
        assert_eq!(dims, json!(["container", "process", our]));
        let names = |t: &Value| -> Vec<Value> {
            t.as_array()
                .into_iter()
                .flatten()
                .map(|r| json!([r[0], r[1], r[3]]))
                .collect()
        };
        assert_eq!(
            names(&s2.exec(ROWS, &[json!("#top-table")])),
            names(&table),
            "the shared URL's table"
        );
        assert_local(&mut s2, base);
    }

    // Live: a conversation started after the page loaded appears without a reload.
    if let Some(more) = live {
        s.goto(&format!(
            "{base}/conversations?from=now-15m&filter={}",
            enc(&format!("addr << {} AND server_port = 5003", e.subnet))
        ));
        rendered(&s, 1);
        s.exec("window.__loaded_once = true", &[]);
        let n = s.exec(
            "return document.querySelectorAll('#conversations tbody tr td.num').length",
            &[],
        );
        assert_eq!(n, json!(0), "no conversation on 5003 yet");
        more();
        s.wait_for(
            "the new conversation",
            Duration::from_secs(60),
            "return window.__loaded_once === true && document.querySelectorAll('#conversations tbody tr td.num').length > 0",
            &[],
        );
        s.screenshot(&shots.join("conversations-live.png"));
    }
    assert_local(&mut s, base);
}

/// Every request went to `base`; no console errors.
fn assert_local(s: &mut Session, base: &str) {
    s.logs();
    assert!(
        s.requests.iter().any(|u| u.contains("/api/")),
        "the performance log saw no API request: {:?}",
        s.requests
    );
    let foreign: Vec<&String> = s
        .requests
        .iter()
        .filter(|u| {
            !u.starts_with(&format!("{base}/"))
                && u.as_str() != base
                && !u.starts_with("data:")
                && !u.starts_with("blob:")
                // Chromium's own new-tab page before the first navigation: no network.
                && !u.starts_with("chrome://")
                && !u.starts_with("about:")
        })
        .collect();
    assert!(foreign.is_empty(), "requests off the host: {foreign:?}");
    let errors: Vec<&String> = s
        .console
        .iter()
        .filter(|c| c.starts_with("SEVERE"))
        .collect();
    for w in s.console.iter().filter(|c| !c.starts_with("SEVERE")) {
        eprintln!("console: {w}");
    }
    assert!(errors.is_empty(), "console: {errors:?}");
}

#[test]
fn explorer_pages_in_chromium_against_flowlens_run() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let shots = artifact_dir("explorer_pages_in_chromium_against_flowlens_run");
        let net = bridged(u);
        let (a, b) = (FakeContainer::new(u, &net.a), FakeContainer::new(u, &net.b));
        let fl = Flowlens::start_with_args(
            art.path(),
            &[&net.a.host_if, &net.b.host_if],
            &[("FLOWLENS_NO_WEB", "false")],
            &["--listen", "127.0.0.1:0"],
        );
        let base = web_base(&fl.log()).unwrap_or_else(|| panic!("no web URL:\n{}", fl.log()));
        let ports = traffic(&net, &a, &b);
        let subnet = format!("{}/24", Ipv4Addr::from(u32::from(net.a.peer_v4) & !0xff));
        let e = settle(&base, &fl.jsonl, ports, &subnet);
        let sig = signal_traffic(&net, &b, art.path(), &fl.jsonl);
        let drv = Driver::start();
        let bv4 = IpAddr::V4(net.b.peer_v4);
        let more = || {
            let mut srv = agent::tcp_server(Place::In(&b), Some(NOBODY), bv4, 5003, 7_000, 700);
            let (mut c, _) =
                agent::tcp_client(Place::Host, Some(0), bv4, 5003, 7_000, 700, 0, false);
            c.wait_success();
            srv.wait_success();
        };
        check_pages(
            &drv,
            &base,
            &e,
            &a.id[..12],
            &b.id[..12],
            &shots,
            Some(&more),
        );
        check_signal_pages(&drv, &base, &sig, &shots);
        let (_, log) = fl.stop_with_log();
        assert!(!log.contains("ERROR"), "{log}");
    });
}

/// `flowlens web --influx-url …` until it says it serves.
struct WebOnly(Child);

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
        let w = WebOnly(child);
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
    }
}

#[test]
fn explorer_pages_in_chromium_against_flowlens_web_over_influxdb() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let shots = artifact_dir("explorer_pages_in_chromium_against_flowlens_web_over_influxdb");
        let influx = flowlens_tests::influx::Influxd::start();
        let net = bridged(u);
        let (a, b) = (FakeContainer::new(u, &net.a), FakeContainer::new(u, &net.b));
        let cfg = art.path().join("flowlens.toml");
        std::fs::write(
            &cfg,
            format!(
                "[influx]\nurl = \"{}\"\ncreate_db = true\nspool_dir = \"{}\"\n",
                influx.url(),
                art.path().join("spool").display(),
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
        let ports = traffic(&net, &a, &b);
        let subnet = format!("{}/24", Ipv4Addr::from(u32::from(net.a.peer_v4) & !0xff));
        let e = settle(&base, &fl.jsonl, ports, &subnet);
        let sig = signal_traffic(&net, &b, art.path(), &fl.jsonl);
        let jsonl = fl.jsonl.clone();
        let (_, log) = fl.stop_with_log();
        assert!(!log.contains("ERROR"), "{log}");
        let mut all = expected(&flowlens_tests::flowlens::read_jsonl(&jsonl), ports);
        all.subnet = e.subnet.clone();
        assert_eq!(all, e, "no traffic of ours after the API matched");
        let (_web, wbase) = WebOnly::start(art.path(), &influx.url());
        let drv = Driver::start();
        check_pages(&drv, &wbase, &e, &a.id[..12], &b.id[..12], &shots, None);
        check_signal_pages(&drv, &wbase, &sig, &shots);
    });
}
