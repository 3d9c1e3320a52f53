//! The encoder against the schema: every tag and field, escaping, caps.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use flowlens_correlator::record::{ConversationRecord, Endpoint};

use super::fixtures::{container_proc, end, host_proc, parse_all, record, Point};
use super::schema::{FlowTag, IfaceTag, RollupTag, FLOW_FIELDS, IFACE_FIELDS, ROLLUP_FIELDS};
use super::{Encoder, SchemaConfig};

fn encode(enc: &mut Encoder, records: &[ConversationRecord]) -> Vec<Point> {
    let mut buf = Vec::new();
    let n = enc.encode_interval(records, &mut buf);
    let points = parse_all(&buf);
    assert_eq!(n, points.len());
    points
}

/// A xorshift generator: the same records on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m
    }

    /// An end on the host, in a named or unnamed container, or remote.
    fn end(&mut self, net: u8, port: u16) -> Endpoint {
        let id = ["a1", "b2", "c3"][self.below(3) as usize].repeat(32);
        let p = match self.below(5) {
            0 => Some(host_proc(
                self.below(50) as u32,
                ["curl", "sshd", "java"][self.below(3) as usize],
                Some("alice"),
            )),
            1 => Some(container_proc(7, "nginx", &id, Some("web"))),
            2 => Some(container_proc(8, "worker", &id, None)),
            _ => None,
        };
        end(
            &format!("10.{net}.{}.{}", self.below(4), self.below(250)),
            port,
            p,
        )
    }
}

/// Conversations of every shape: host/container/remote ends, both directions, several protocols.
fn mixed(n: usize) -> Vec<ConversationRecord> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let (cport, sport) = (
                30000 + rng.below(30000) as u16,
                [80, 443, 53, 5432][rng.below(4) as usize],
            );
            let (client, server) = (rng.end(0, cport), rng.end(1, sport));
            let (bytes, packets) = (
                (rng.below(1 << 20), rng.below(1 << 20)),
                (rng.below(999), rng.below(999)),
            );
            let mut r = record(client, server, bytes, packets);
            r.proto = ["tcp", "udp", "icmp"][i % 3].to_owned();
            r
        })
        .collect()
}

#[test]
fn conversations_sharing_every_tag_never_overwrite_each_other() {
    let records: Vec<_> = (0..5000)
        .map(|i| {
            let client = end(
                "10.0.0.5",
                20000 + i as u16,
                Some(host_proc(42, "curl", Some("alice"))),
            );
            record(client, end("93.184.216.34", 443, None), (100, 200), (1, 1))
        })
        .collect();
    let mut enc = Encoder::new(SchemaConfig::default());
    let points = encode(&mut enc, &records);
    let flows: Vec<_> = points.iter().filter(|p| p.measurement == "flow").collect();
    let series: HashSet<_> = flows.iter().map(|p| p.series.as_str()).collect();
    let keys: HashSet<_> = flows.iter().map(|p| (p.series.as_str(), p.ts)).collect();
    assert_eq!((flows.len(), series.len(), keys.len()), (5000, 1, 5000));
    let all: HashSet<_> = points.iter().map(|p| (p.series.as_str(), p.ts)).collect();
    assert_eq!(
        all.len(),
        points.len(),
        "no (series, time) pair twice in the whole batch"
    );
    // Idempotent: the same interval encodes to the same bytes, by this encoder or a new one.
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    Encoder::new(SchemaConfig::default()).encode_interval(&records, &mut a);
    enc.encode_interval(&records, &mut b);
    enc.encode_interval(&records, &mut c);
    assert!(a == b && b == c);
}

/// Sums of the rollup per direction, and of the flow counters of the local ends.
/// Bytes, packets and conversations per direction.
type Sums<'a> = BTreeMap<&'a str, [i64; 3]>;

fn sums(points: &[Point]) -> (Sums<'_>, Sums<'_>) {
    let (mut rollup, mut flow) = (BTreeMap::new(), BTreeMap::new());
    for p in points {
        let f = |k: &str| p.int(k).unwrap();
        if p.measurement == "flow_iface" {
            continue;
        }
        if p.measurement == "flow_rollup" {
            let s: &mut [i64; 3] = rollup.entry(p.tag("direction").unwrap()).or_default();
            for (s, k) in s.iter_mut().zip(["bytes", "packets", "conversations"]) {
                *s += f(k);
            }
            continue;
        }
        for (side, sent, recv) in [("client", "c2s", "s2c"), ("server", "s2c", "c2s")] {
            if p.tag(&format!("{side}_local")) == Some("true") {
                for (dir, d) in [("out", sent), ("in", recv)] {
                    let s: &mut [i64; 3] = flow.entry(dir).or_default();
                    s[0] += f(&format!("bytes_{d}"));
                    s[1] += f(&format!("packets_{d}"));
                    s[2] += 1;
                }
            }
        }
    }
    (rollup, flow)
}

#[test]
fn rollup_sums_equal_the_local_ends_of_flow() {
    let records = mixed(4000);
    let tiny = SchemaConfig {
        tag_cap: 3,
        ..SchemaConfig::default()
    };
    for cfg in [SchemaConfig::default(), tiny] {
        let points = encode(&mut Encoder::new(cfg), &records);
        let (rollup, flow) = sums(&points);
        assert_eq!(rollup.len(), 2);
        assert_eq!(rollup, flow);
    }
}

#[test]
fn output_uses_only_schema_names_and_sorted_tags() {
    let cfg = SchemaConfig {
        tag_cap: 2,
        ..SchemaConfig::default()
    };
    let points = encode(&mut Encoder::new(cfg), &mixed(2000));
    let (mut tags, mut fields) = (BTreeSet::new(), BTreeSet::new());
    for p in &points {
        let keys: Vec<_> = p.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "tags sorted: {keys:?}"
        );
        let (schema_tags, schema_fields): (Vec<_>, _) = match p.measurement.as_str() {
            "flow" => (FlowTag::ALL.iter().map(|t| t.key()).collect(), FLOW_FIELDS),
            "flow_rollup" => (
                RollupTag::ALL.iter().map(|t| t.key()).collect(),
                ROLLUP_FIELDS,
            ),
            m => {
                assert_eq!(m, "flow_iface");
                (
                    IfaceTag::ALL.iter().map(|t| t.key()).collect(),
                    IFACE_FIELDS,
                )
            }
        };
        assert!(keys.iter().all(|k| schema_tags.contains(k)), "{keys:?}");
        assert!(p
            .fields
            .iter()
            .all(|(k, _)| schema_fields.contains(&k.as_str())));
        tags.extend(keys);
        fields.extend(p.fields.iter().map(|(k, _)| k.as_str()));
    }
    assert!(
        tags.is_disjoint(&fields),
        "{:?}",
        tags.intersection(&fields).collect::<Vec<_>>()
    );
    assert!(fields.contains("folded_tags"), "tiny caps folded something");
}

#[test]
fn cardinality_stays_under_the_caps_and_every_fold_is_counted() {
    let caps = [
        ("client_comm", 8),
        ("server_port", 4),
        ("peer", 6),
        ("comm", 4),
    ];
    let cfg = SchemaConfig {
        tag_caps: caps.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..SchemaConfig::default()
    };
    let mut enc = Encoder::new(cfg);
    let (intervals, per) = (4, 3000);
    let mut all_series = HashSet::new();
    for i in 0..intervals {
        let records: Vec<_> = (0..per)
            .map(|k| {
                let comm = format!("job-{i}-{k}");
                let p = match k % 4 {
                    0 => host_proc(k as u32, &comm, Some("alice")),
                    1 => host_proc(k as u32, &comm, Some("bob")),
                    n => container_proc(
                        k as u32,
                        &comm,
                        &format!("{n:0>64}"),
                        Some(&format!("ctr{n}")),
                    ),
                };
                let remote = end(
                    &format!("10.{i}.{}.{}", k / 250, k % 250),
                    1000 + (k % 50) as u16,
                    None,
                );
                record(
                    end("10.255.0.1", 40000, Some(p)),
                    remote,
                    (k as u64, 1),
                    (1, 1),
                )
            })
            .collect();
        let points = encode(&mut enc, &records);
        // Natural domains: users alice/bob/root (3), containers host/ctr2/ctr3 (3), one host, one proto.
        let flow_bound = (8 + 1) * (4 + 1) * 3 * 3;
        // Rollup: comm, peer, server_port capped; username, container natural; peers all remote; 2 directions.
        let rollup_bound = (4 + 1) * (6 + 1) * (4 + 1) * 3 * 3 * 2;
        let series = |m: &str| {
            points
                .iter()
                .filter(|p| p.measurement == m)
                .map(|p| p.series.clone())
                .collect::<HashSet<_>>()
        };
        let (flow, rollup) = (series("flow"), series("flow_rollup"));
        assert!(
            flow.len() <= flow_bound,
            "{} flow series > {flow_bound}",
            flow.len()
        );
        assert!(
            rollup.len() <= rollup_bound,
            "{} rollup series > {rollup_bound}",
            rollup.len()
        );
        assert!(
            flow_bound < per && rollup_bound < 2 * per,
            "the bound is tighter than no cap"
        );
        let comms: HashSet<_> = points.iter().filter_map(|p| p.tag("client_comm")).collect();
        assert_eq!(comms.len(), 9, "8 heaviest + other");
        assert!(comms.contains("other") && comms.contains(format!("job-{i}-{}", per - 1).as_str()));
        all_series.extend(flow);
        all_series.extend(rollup);
    }
    assert!(
        all_series.len() <= intervals * ((8 + 1) * (4 + 1) * 9 + (4 + 1) * (6 + 1) * (4 + 1) * 18)
    );
    let stats = enc.stats();
    let want = |distinct: u64, cap: u64| intervals as u64 * (distinct - cap);
    assert_eq!(stats.folded["client_comm"], want(per as u64, 8));
    assert_eq!(stats.folded["comm"], want(per as u64, 4));
    assert_eq!(stats.folded["server_port"], want(50, 4));
    assert_eq!(stats.folded["peer"], want(per as u64, 6));
    assert_eq!(stats.folded["client_user"], 0);
    assert_eq!(stats.folded["iface"], 0);
    assert_eq!(stats.distinct_last_interval["peer"], per as u64);
    assert_eq!(stats.distinct_last_interval["client_container_name"], 3);
    let folded: u64 = stats.folded.values().sum();
    assert_eq!(
        folded,
        want(per as u64, 8) + want(per as u64, 4) + want(50, 4) + want(per as u64, 6)
    );
}

#[test]
fn icmp_has_no_server_port_and_integers_clamp() {
    let client = end("10.0.0.5", 777, Some(host_proc(9, "ping", Some("alice"))));
    let mut r = record(client, end("1.1.1.1", 777, None), (u64::MAX, 84), (1, 1));
    r.proto = "icmp".to_owned();
    let points = encode(&mut Encoder::new(SchemaConfig::default()), &[r]);
    let flow = &points[0];
    assert_eq!(
        flow.tag("server_port"),
        None,
        "the ICMP \"port\" is the echo id"
    );
    assert_eq!(flow.int("client_port"), Some(777));
    assert_eq!(flow.int("bytes_c2s"), Some(i64::MAX));
    let numbers = points
        .iter()
        .flat_map(|p| &p.fields)
        .filter(|(_, v)| v.parse::<f64>().is_ok());
    assert_eq!(numbers.count(), 0, "every number carries the i suffix");
}

#[test]
fn measurement_names_are_escaped_and_fall_back_when_unusable() {
    let cfg = SchemaConfig {
        flow_measurement: "net flow,v2\\".to_owned(),
        rollup_measurement: "\\".to_owned(),
        ..SchemaConfig::default()
    };
    let r = record(
        end("10.0.0.5", 1, Some(host_proc(1, "a", None))),
        end("1.1.1.1", 80, None),
        (1, 1),
        (1, 1),
    );
    let mut buf = Vec::new();
    Encoder::new(cfg).encode_interval(&[r], &mut buf);
    assert!(buf.starts_with(b"net\\ flow\\,v2,client_comm=a,"));
    let points = parse_all(&buf);
    assert_eq!(points[0].measurement, "net flow,v2");
    assert_eq!(points[1].measurement, "flow_rollup");
}

/// The questions of docs/queries.md, answered from the encoded points as InfluxDB would: per interface,
/// remote endpoints (`peer_local = 'false'`) and server ports each match the conversations they stand for.
#[test]
fn iface_remote_and_port_rollups_match_the_conversations() {
    let mut records = mixed(3000);
    for (i, r) in records.iter_mut().enumerate() {
        r.ifaces = match i % 3 {
            0 => vec!["eth0".into()],
            1 => vec!["veth1".into(), "br0".into()],
            _ => vec![],
        };
    }
    // Caps above the fixture's distinct values: folding is tested elsewhere.
    let cfg = SchemaConfig {
        tag_cap: 100_000,
        ..SchemaConfig::default()
    };
    let points = encode(&mut Encoder::new(cfg), &records);
    let total = |r: &ConversationRecord| (r.bytes_c2s + r.bytes_s2c) as i64;
    // Per interface: every conversation's bytes on each interface that saw it.
    let mut want: BTreeMap<&str, [i64; 2]> = BTreeMap::new();
    for r in &records {
        for i in &r.ifaces {
            let w = want.entry(i.as_str()).or_default();
            w[0] += total(r);
            w[1] += 1;
        }
    }
    let mut got: BTreeMap<&str, [i64; 2]> = BTreeMap::new();
    for p in points.iter().filter(|p| p.measurement == "flow_iface") {
        let g = got.entry(p.tag("iface").unwrap()).or_default();
        g[0] += p.int("bytes").unwrap();
        g[1] += p.int("conversations").unwrap();
    }
    assert_eq!(got, want);
    // Remote endpoints: rollup points whose peer is not local, by peer and direction.
    let mut want: BTreeMap<(String, &str), i64> = BTreeMap::new();
    let mut want_ports: BTreeMap<Option<String>, i64> = BTreeMap::new();
    for r in &records {
        let port = (r.proto != "icmp").then(|| r.server.port.to_string());
        for (local, other, sent, recv) in [
            (&r.client, &r.server, r.bytes_c2s, r.bytes_s2c),
            (&r.server, &r.client, r.bytes_s2c, r.bytes_c2s),
        ] {
            if local.process.is_some() && other.process.is_none() {
                *want.entry((other.addr.clone(), "out")).or_default() += sent as i64;
                *want.entry((other.addr.clone(), "in")).or_default() += recv as i64;
            }
            if local.process.is_some() {
                *want_ports.entry(port.clone()).or_default() += sent as i64;
            }
        }
    }
    let mut got: BTreeMap<(String, &str), i64> = BTreeMap::new();
    let mut got_ports: BTreeMap<Option<String>, i64> = BTreeMap::new();
    for p in points.iter().filter(|p| p.measurement == "flow_rollup") {
        let (dir, bytes) = (p.tag("direction").unwrap(), p.int("bytes").unwrap());
        if p.tag("peer_local") == Some("false") {
            *got.entry((p.tag("peer").unwrap().to_owned(), dir))
                .or_default() += bytes;
        }
        if dir == "out" {
            *got_ports
                .entry(p.tag("server_port").map(str::to_owned))
                .or_default() += bytes;
        }
    }
    assert!(want.len() > 100, "the fixture has many remote peers");
    let differ = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).count();
    assert!(
        got.len() == want.len() && differ == 0,
        "{differ} remote peers differ"
    );
    assert_eq!(got_ports, want_ports);
}

#[test]
fn measurement_names_never_collide() {
    let r = record(
        end("10.0.0.5", 1, Some(host_proc(1, "a", None))),
        end("1.1.1.1", 80, None),
        (1, 1),
        (1, 1),
    );
    let names = |flow: &str, rollup: &str, iface: &str| {
        let cfg = SchemaConfig {
            flow_measurement: flow.into(),
            rollup_measurement: rollup.into(),
            iface_measurement: iface.into(),
            ..SchemaConfig::default()
        };
        let mut buf = Vec::new();
        Encoder::new(cfg).encode_interval(std::slice::from_ref(&r), &mut buf);
        let mut m: Vec<String> = parse_all(&buf).into_iter().map(|p| p.measurement).collect();
        m.dedup();
        m
    };
    assert_eq!(names("a", "b", "c"), ["a", "b", "c"]);
    assert_eq!(
        names("flow_iface", "flow_iface", "flow_iface"),
        ["flow_iface", "flow_rollup", "flow"]
    );
    assert_eq!(names("x", "x", ""), ["x", "flow_rollup", "flow_iface"]);
    assert_eq!(names("flow_rollup", "", "y"), ["flow_rollup", "flow", "y"]);
}

/// `mixed` with what else a point can carry: peer names, signals, several interfaces, NAT.
fn mixed_rich(n: usize, seed: usize) -> Vec<ConversationRecord> {
    let mut records = mixed(n + seed);
    records.drain(..seed);
    for (i, r) in records.iter_mut().enumerate() {
        if i % 3 == 0 {
            r.server.name = Some(format!("svc{}.example.com", i % 7));
        }
        if i % 5 == 0 {
            r.signals.rtt_avg_us = Some(100 + i as u64);
            r.signals.rtt_samples = 2;
            r.signals.retransmits_c2s = i as u64 % 4;
        }
        if i % 11 == 0 {
            r.ifaces.push(format!("veth{}", i % 4));
            r.nat = Some("dnat".to_owned());
        }
    }
    records
}

#[test]
fn an_interval_in_chunks_encodes_as_in_one_go() {
    let tiny = SchemaConfig {
        tag_cap: 3,
        ..SchemaConfig::default()
    };
    for cfg in [SchemaConfig::default(), tiny] {
        let (mut whole, mut chunked) = (Encoder::new(cfg.clone()), Encoder::new(cfg));
        // Several intervals: what the caps remember of the last one must not differ either.
        for (interval, chunk) in [(0, 1), (1, 7), (2, 1000), (3, 4096)] {
            let records = mixed_rich(2500, interval * 100);
            let mut want = Vec::new();
            let n = whole.encode_interval(&records, &mut want);
            let mut got = Vec::new();
            chunked.begin_interval();
            for c in records.chunks(chunk) {
                chunked.add(c);
            }
            assert_eq!(chunked.finish_interval(&mut got), n);
            assert!(got == want, "interval {interval}, chunks of {chunk}");
            assert_eq!(chunked.stats(), whole.stats());
        }
    }
}
