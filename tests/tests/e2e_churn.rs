//! Short-connection churn: thousands of TCP connections from several
//! processes in a "container" to a server on the host, with flowlens on the
//! host veth. Every connection must be accounted for: a conversation of its
//! own (a reused client port is a new conversation, with its own owner), or
//! counted as merged into the next connection on its port when both fell into
//! one export interval. Every conversation has BOTH ends attributed to the
//! exact processes, including connections that open and close between two
//! reads of the event stream around an export (the case that once left ~1 %
//! of the conversations of `conn-churn` unattributed and uncounted).
//! Run as root with the release binary (a debug build's correlator cannot
//! keep up with this rate on 2 cores: its ring buffer overflows and the test
//! says so): `cargo build --release -p flowlens-collector &&
//! FLOWLENS_BIN=target/release/flowlens cargo test -p flowlens-tests --test e2e_churn -- --test-threads=1`

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use flowlens_tests::{
    records, scenario, ArtifactDir, FakeContainer, Flowlens, Place, Proc, VethNetns,
};
use serde_json::Value;

/// Client processes.
const CLIENTS: usize = 4;
/// How long they connect: across three export intervals (1 s); ~8k connections/s
/// in all on 2 cores, i.e. 25-40k connections (~14k distinct ports, reused).
const CHURN_SECS: &str = "3.5";
const PORT: u16 = 5101;

/// `server ADDR PORT`: accepts connections one by one (reads one byte,
/// answers one byte, closes) until a line arrives on stdin. `client ADDR PORT
/// SECS`: after a line on stdin, for SECS seconds: connect, send one byte,
/// read the answer, close; then prints its pid and the local ports used.
const CHURN: &str = r#"
import os, select, signal, socket, sys, time
signal.alarm(60)
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == 'server':
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(1024)
    print('READY', os.getpid(), flush=True)
    served = 0
    while True:
        ready, _, _ = select.select([ls, sys.stdin], [], [])
        if sys.stdin in ready: break
        c, _ = ls.accept()
        if c.recv(1): c.sendall(b's')
        c.close()
        served += 1
    print('DONE', served, flush=True)
else:
    secs = float(sys.argv[4])
    print('STARTED', flush=True)
    sys.stdin.readline()
    ports, end = [], time.monotonic() + secs
    while time.monotonic() < end:
        s = socket.create_connection((addr, port))
        ports.append(s.getsockname()[1])
        s.sendall(b'c')
        if s.recv(1) != b's': sys.exit('no answer')
        s.close()
    print('DONE', os.getpid(), ','.join(map(str, ports)), flush=True)
"#;

fn python(place: Place<'_>, args: &[&str]) -> Proc {
    let python = flowlens_tests::agent::python();
    let mut cmd = vec![python.as_str(), "-c", CHURN];
    cmd.extend_from_slice(args);
    Proc::spawn(place, None, &cmd)
}

/// The last `Interval exported.` line's `name=<n>` value.
fn logged_counter(log: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    log.lines()
        .rfind(|l| l.contains("Interval exported."))
        .and_then(|l| l.split(&key).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn churn_every_conversation_attributed_to_both_processes() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        let host = IpAddr::V4(net.host_v4);
        let fl = Flowlens::start(art.path(), &[&net.host_if], &[]);
        let (h, p) = (host.to_string(), PORT.to_string());
        let mut server = python(Place::Host, &["server", &h, &p]);
        let server_pid: u64 = server.expect_line("READY")[0].parse().expect("READY <pid>");
        let mut clients: Vec<Proc> = (0..CLIENTS)
            .map(|_| python(Place::In(&ctr), &["client", &h, &p, CHURN_SECS]))
            .collect();
        for c in &mut clients {
            c.expect_line("STARTED");
        }
        let started = Instant::now();
        for c in &mut clients {
            c.send_line("go");
        }
        // Which processes used each client port.
        let mut users: BTreeMap<u16, BTreeSet<u64>> = BTreeMap::new();
        for c in &mut clients {
            let words = c.expect_line("DONE");
            let pid: u64 = words[0].parse().expect("DONE <pid> <ports>");
            assert_eq!(pid, u64::from(c.pid), "the client's pid changed");
            for port in words[1].split(',') {
                let port: u16 = port.parse().expect("a port");
                users.entry(port).or_default().insert(pid);
            }
            c.wait_success();
        }
        server.send_line("stop");
        let served: usize = server.expect_line("DONE")[0].parse().expect("DONE <n>");
        server.wait_success();
        eprintln!(
            "{served} connections in {:?}, {} distinct client ports",
            started.elapsed(),
            users.len()
        );
        std::thread::sleep(Duration::from_millis(300));
        let recs = fl.stop();
        let log = std::fs::read_to_string(art.path().join("flowlens.stderr")).unwrap_or_default();

        let server_addr = SocketAddr::new(host, PORT);
        let convs = records::conversations(&recs);
        let mine: BTreeMap<u16, &records::Conversation> = convs
            .iter()
            .filter(|((proto, _, server), _)| proto == "tcp" && *server == server_addr)
            .map(|((_, client, _), conv)| (client.port(), conv))
            .collect();
        // One conversation per connection: its lines share `first_seen`.
        let connections: BTreeSet<(u16, u64)> = mine
            .iter()
            .flat_map(|(port, conv)| {
                conv.lines
                    .iter()
                    .map(move |l| (*port, l["first_seen_unix_ns"].as_u64().unwrap_or(0)))
            })
            .collect();
        // Exact accounting needs every socket event: an overloaded machine
        // (ring buffer full) says so here rather than as a wrong count below.
        assert_eq!(
            logged_counter(&log, "lost"),
            Some(0),
            "flowlens lost data (rerun on a quieter machine); log tail:\n{}",
            flowlens_tests::flowlens::tail(&log, 5)
        );
        let merged = logged_counter(&log, "merged").unwrap_or(0);
        eprintln!(
            "{} conversations + {merged} merged (both in one interval) for {served} connections",
            connections.len()
        );
        // Exact in a unit test (correlator/tests/hard_hosts.rs); here a read
        // racing a connection's handshake (its first packets read an interval
        // before its socket's events) still splits or merges a few: measured
        // 0.3-1.1 % of 20-40k connections at 6-10k/s on 2 loaded cores
        // (release build; a debug build under load loses events first).
        let accounted = connections.len() as u64 + merged;
        assert!(
            accounted.abs_diff(served as u64) * 50 <= served as u64,
            "conversations ({}) + connections merged into a later one on their port ({merged}) = {accounted}, \
             more than 2 % off the {served} connections served",
            connections.len()
        );
        let want: BTreeSet<u16> = users.keys().copied().collect();
        let got: BTreeSet<u16> = mine.keys().copied().collect();
        assert_eq!(
            got.symmetric_difference(&want).collect::<Vec<_>>(),
            Vec::<&u16>::new(),
            "client ports recorded vs used (either side only)"
        );

        let pid_of = |line: &Value, side: &str| line[side].get("pid").and_then(Value::as_u64);
        let mut problems = Vec::new();
        for (port, conv) in &mine {
            let expect_client = &users[port];
            // Every line, not only one: an export must not run ahead of the events.
            for line in &conv.lines {
                let (c, s) = (pid_of(line, "client"), pid_of(line, "server"));
                if !c.is_some_and(|c| expect_client.contains(&c)) || s != Some(server_pid) {
                    problems.push(format!(
                        "port {port}: client pid {c:?} (want one of {expect_client:?}), server pid {s:?} (want {server_pid}) in {line}"
                    ));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{} of {} lines lack the right owners, e.g.:\n  {}",
            problems.len(),
            mine.values().map(|c| c.lines.len()).sum::<usize>(),
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
        assert_eq!(
            logged_counter(&log, "unattributed_local"),
            Some(0),
            "records with an unowned local end, as logged by flowlens; log tail:\n{}",
            flowlens_tests::flowlens::tail(&log, 5)
        );
    });
}
