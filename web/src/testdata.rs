//! Deterministic conversation records for tests and benchmarks: a small
//! host with containers, host processes, remote peers, ICMP, forwarded
//! traffic and names that need escaping; and a busy host of any size.

use flowlens_correlator::record::{
    format_rfc3339, tcp_flags_text, ConversationRecord, ConversationSignals, Endpoint,
    ProcessAttribution,
};

/// 64-hex container id from a short tag.
pub fn container_id(tag: &str) -> String {
    let mut s: String = tag.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    while s.len() < 64 {
        s.push('0');
    }
    s.truncate(64);
    s
}

/// A process: `container` is `(name, id tag)` or `None` on the host.
pub fn owner(
    pid: u32,
    comm: &str,
    uid: u32,
    user: Option<&str>,
    container: Option<(&str, &str)>,
) -> ProcessAttribution {
    ProcessAttribution {
        pid,
        comm: comm.into(),
        exe: Some(format!(
            "/usr/bin/{}",
            comm.split_whitespace().next().unwrap_or("x")
        )),
        uid,
        user: user.map(str::to_owned),
        gid: uid,
        cgroup: container.map(|(_, id)| format!("/docker/{}", container_id(id))),
        container_id: container.map(|(_, id)| container_id(id)),
        container_runtime: if container.is_some() {
            "docker"
        } else {
            "host"
        }
        .into(),
        container_name: container
            .map(|(n, _)| n.to_owned())
            .filter(|n| !n.is_empty()),
        container_image: None,
        pod_uid: None,
    }
}

/// One record.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ts: i64,
    proto: &str,
    client: (&str, u16, Option<ProcessAttribution>),
    server: (&str, u16, Option<ProcessAttribution>),
    c2s: (u64, u64),
    s2c: (u64, u64),
    first_seen: i64,
    flags: u8,
) -> ConversationRecord {
    let end = |(addr, port, p): (&str, u16, Option<ProcessAttribution>)| Endpoint {
        addr: addr.into(),
        port,
        local: p.is_some(),
        nat_addr: None,
        nat_port: None,
        name: None,
        process: p,
    };
    let last = ts - 1_000_000;
    ConversationRecord {
        ts: format_rfc3339(i128::from(ts)),
        ts_unix_ns: ts,
        interval_ms: 10_000,
        host: "node-1".into(),
        proto: proto.into(),
        client: end(client),
        server: end(server),
        client_evidence: "socket".into(),
        bytes_c2s: c2s.0,
        bytes_s2c: s2c.0,
        packets_c2s: c2s.1,
        packets_s2c: s2c.1,
        first_seen: format_rfc3339(i128::from(first_seen)),
        first_seen_unix_ns: first_seen,
        last_seen: format_rfc3339(i128::from(last)),
        last_seen_unix_ns: last,
        duration_ms: ((last - first_seen).max(0) / 1_000_000) as u64,
        tcp_flags: flags,
        tcp_flags_text: tcp_flags_text(flags),
        ifaces: vec!["eth0".into()],
        nat: None,
        signals: Default::default(),
    }
}

/// Seconds, in ns.
pub const S: i64 = 1_000_000_000;

/// `intervals` export intervals of 10 s of a small host, the first ending at
/// `start` (choose it off any bucket boundary). Per interval:
/// - `web` (nginx, www-data) serves 203.0.113.7 on 443 and asks `db` on 5432;
/// - `db` (postgres) answers `web`;
/// - `api` (python3, alice, a name with quotes) calls 198.51.100.20:443;
/// - host `curl` (alice) to 192.0.2.10:80, host `sshd` (root) serving
///   198.51.100.5:22 from interval 3 on, a uid without a name (4242) on udp/53;
/// - ICMP echo from `ping` (root), forwarded traffic with no local end,
///   and a container without a name (short id label).
///
/// Golden signals and names (docs/schema.md): `api`'s peer is named `api.partner.example`, its RTT
/// grows with the interval (mean `200·k` µs over `k` samples), it retransmits one segment per
/// interval and the server resets once (interval 2); `curl`'s peer is `files.example`, each connect
/// takes `1500 + 10·i` µs except interval 4's, refused; the resolver's queries take 300 µs (max 400)
/// and every even interval has an NXDOMAIN.
pub fn small_host(start: i64, intervals: u32) -> Vec<Vec<ConversationRecord>> {
    let web = || owner(100, "nginx", 33, Some("www-data"), Some(("web", "web")));
    let db = || owner(200, "postgres", 999, Some("postgres"), Some(("db", "db")));
    let api = || {
        owner(
            300,
            "py \"th'on\",=x",
            1000,
            Some("alice"),
            Some(("ünï-cødé api", "api")),
        )
    };
    let noname = || owner(400, "worker", 1001, Some("bob"), Some(("", "noname")));
    let curl = || owner(500, "curl", 1000, Some("alice"), None);
    let sshd = || owner(600, "sshd", 0, Some("root"), None);
    let dns = || owner(700, "resolver", 4242, None, None);
    let ping = || owner(800, "ping", 0, Some("root"), None);
    let mut out = Vec::new();
    for i in 0..intervals {
        let ts = start + i64::from(i) * 10 * S;
        let k = u64::from(i) + 1;
        let f0 = start - 5 * S;
        let mut v = vec![
            record(
                ts,
                "tcp",
                ("203.0.113.7", 51000, None),
                ("172.17.0.2", 443, Some(web())),
                (1000 * k, 10 * k),
                (50_000 * k, 40 * k),
                f0,
                0x1a,
            ),
            record(
                ts,
                "tcp",
                ("172.17.0.2", 40000, Some(web())),
                ("172.17.0.3", 5432, Some(db())),
                (300 * k, 3 * k),
                (9000 * k, 9 * k),
                f0,
                0x1a,
            ),
            record(
                ts,
                "tcp",
                ("172.17.0.4", 41000, Some(api())),
                ("198.51.100.20", 443, None),
                (700, 7),
                (7000, 8),
                f0,
                0x1b,
            ),
            record(
                ts,
                "tcp",
                ("10.0.0.5", 42000 + (i % 3) as u16, Some(curl())),
                ("192.0.2.10", 80, None),
                (120, 2),
                (4000 + u64::from(i), 4),
                ts - 3 * S,
                0x1b,
            ),
            record(
                ts,
                "udp",
                ("10.0.0.5", 53000, Some(dns())),
                ("192.0.2.53", 53, None),
                (60, 1),
                (120, 1),
                f0,
                0,
            ),
            record(
                ts,
                "icmp",
                ("10.0.0.5", 7, Some(ping())),
                ("192.0.2.1", 7, None),
                (84, 1),
                (84, 1),
                f0,
                0,
            ),
            record(
                ts,
                "tcp",
                ("192.168.1.10", 43000, None),
                ("192.168.2.20", 8080, None),
                (5000, 5),
                (5000, 5),
                f0,
                0x12,
            ),
            record(
                ts,
                "tcp",
                ("172.17.0.9", 44000, Some(noname())),
                ("172.17.0.2", 443, Some(web())),
                (10, 1),
                (20, 1),
                f0,
                0x12,
            ),
        ];
        // The api container reaches out through a masquerade.
        v[2].client.nat_addr = Some("198.51.100.77".into());
        v[2].client.nat_port = Some(61_000);
        v[2].nat = Some("snat".into());
        v[2].server.name = Some("api.partner.example".into());
        v[2].signals = ConversationSignals {
            rtt_min_us: Some(100 * k),
            rtt_avg_us: Some(200 * k),
            rtt_max_us: Some(300 * k),
            rtt_samples: k,
            retransmits_c2s: 1,
            resets_s2c: u64::from(i == 1),
            ..Default::default()
        };
        v[3].server.name = Some("files.example".into());
        if i == 4 {
            v[3].signals.connect_error = Some("refused".into());
        } else {
            v[3].signals.connect_us = Some(1500 + 10 * u64::from(i));
        }
        v[4].signals = ConversationSignals {
            dns_queries: 2,
            dns_responses: 2,
            dns_latency_avg_us: Some(300),
            dns_latency_max_us: Some(400),
            dns_latency_samples: 2,
            dns_nxdomain: u64::from(i % 2 == 0),
            ..Default::default()
        };
        if i >= 3 {
            v.push(record(
                ts,
                "tcp",
                ("198.51.100.5", 60000, None),
                ("10.0.0.5", 22, Some(sshd())),
                (2000, 20),
                (3000, 30),
                start + 25 * S,
                0x1a,
            ));
        }
        out.push(v);
    }
    out
}

/// A busy host: `per_interval` conversations per 10 s interval from
/// `processes` processes in `containers` containers to `peers` remote
/// addresses, deterministic.
pub fn busy_host(
    start: i64,
    intervals: u32,
    per_interval: u32,
    processes: u32,
    containers: u32,
    peers: u32,
) -> impl Iterator<Item = Vec<ConversationRecord>> {
    let owners: Vec<ProcessAttribution> = (0..processes)
        .map(|p| {
            let c = p % containers.max(1);
            let cname = format!("svc-{c}");
            let ctag = format!("c{c}");
            owner(
                10_000 + p,
                &format!("proc-{}", p % 40),
                1000 + p % 20,
                Some(&format!("user{}", p % 20)),
                if c == 0 {
                    None
                } else {
                    Some((cname.as_str(), ctag.as_str()))
                },
            )
        })
        .collect();
    (0..intervals).map(move |i| {
        let ts = start + i64::from(i) * 10 * S;
        (0..per_interval)
            .map(|j| {
                let n = i.wrapping_mul(7919).wrapping_add(j);
                let o = owners[(j % processes.max(1)) as usize].clone();
                let p = n % peers.max(1);
                let peer = format!("198.51.{}.{}", (p / 250) % 256, p % 250 + 1);
                let port = [443u16, 80, 5432, 6379, 8080, 53][(j % 6) as usize];
                let proto = if port == 53 { "udp" } else { "tcp" };
                record(
                    ts,
                    proto,
                    ("10.1.0.2", 30_000 + (j % 30_000) as u16, Some(o)),
                    (&peer, port, None),
                    (u64::from(n % 5000) + 100, u64::from(n % 50) + 1),
                    (u64::from(n % 20_000) + 100, u64::from(n % 60) + 1),
                    // Odd conversations last the whole run, even ones one interval.
                    if j % 2 == 1 {
                        start - 60 * S
                    } else {
                        ts - 5 * S
                    },
                    0x1a,
                )
            })
            .collect()
    })
}
