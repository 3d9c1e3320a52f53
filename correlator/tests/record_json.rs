//! The JSON lines contract, byte for byte.

mod common;

use common::*;
use flowlens_correlator::types::{ContainerMeta, Role};
use flowlens_correlator::{ConversationRecord, ConversationTable};

const CTR: &str = "4a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef";

fn host_client_record() -> ConversationRecord {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(93, 184, 216, 34, 443));
    let mut t = ConversationTable::default();
    let p = process(
        42,
        "curl",
        1000,
        Some("/user.slice/user-1000.slice/session-2.scope"),
    );
    t.observe_owner(owner(9, 6, c, Some(s), Role::Client, p, 1));
    let mut up = tcp(c, s, 6, 520, (1, 2));
    up.first_seen_ns = 1_250_000_000;
    up.tcp_flags = 0x02 | 0x10 | 0x01;
    let mut down = tcp(s, c, 5, 4_800, (1, 2));
    down.first_seen_ns = 1_500_000_000;
    down.last_seen_ns = 2_500_000_000;
    down.tcp_flags = 0x12 | 0x01;
    t.observe_flow(&up);
    t.observe_flow(&down);
    t.set_interval_start(1_000_000_000);
    only(export_at(&mut t, 3, &FakeLookup::standard()))
}

#[test]
fn host_record_serializes_exactly() {
    let json = serde_json::to_string(&host_client_record()).expect("serialize");
    let expected = concat!(
        r#"{"ts":"2023-11-14T22:13:23Z","ts_unix_ns":1700000003000000000,"interval_ms":2000,"host":"host1","proto":"tcp","#,
        r#""client":{"addr":"10.0.0.1","port":40000,"local":true,"nat_addr":null,"nat_port":null,"pid":42,"comm":"curl","exe":"/usr/bin/curl","#,
        r#""uid":1000,"user":"alice","gid":1000,"cgroup":"/user.slice/user-1000.slice/session-2.scope","#,
        r#""container_id":null,"container_runtime":"host","container_name":null,"container_image":null,"pod_uid":null},"#,
        r#""server":{"addr":"93.184.216.34","port":443,"local":false,"nat_addr":null,"nat_port":null},"client_evidence":"socket","#,
        r#""bytes_c2s":520,"bytes_s2c":4800,"packets_c2s":6,"packets_s2c":5,"#,
        r#""first_seen":"2023-11-14T22:13:21.25Z","first_seen_unix_ns":1700000001250000000,"#,
        r#""last_seen":"2023-11-14T22:13:22.5Z","last_seen_unix_ns":1700000002500000000,"duration_ms":1250,"#,
        r#""tcp_flags":19,"tcp_flags_text":"SYN|ACK|FIN","ifaces":["eth0"],"nat":null}"#,
    );
    assert_eq!(json, expected);
}

#[test]
fn interval_ms_runs_from_the_previous_export() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 80));
    let mut t = ConversationTable::default();
    t.set_interval_start(0);
    t.observe_flow(&tcp(c, s, 1, 100, (0, 1)));
    assert_eq!(
        only(export_at(&mut t, 2, &FakeLookup::standard())).interval_ms,
        2000
    );
    // Unset: from the previous export (here a shorter, final one).
    let mut more = tcp(c, s, 2, 200, (0, 1));
    more.last_seen_ns = 2_300_000_000;
    t.observe_flow(&more);
    let r = only(t.export_final(
        2_500_000_000,
        UNIX0 + 2_500_000_000,
        "host1",
        &FakeLookup::standard(),
    ));
    assert_eq!(r.interval_ms, 500);
}

#[test]
fn records_round_trip() {
    let r = host_client_record();
    let back: ConversationRecord =
        serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
    assert_eq!(back, r);
    assert!(back.server.process.is_none());
}

#[test]
fn container_record_carries_container_fields() {
    let (c, s) = (v4(172, 17, 0, 2, 40000), v4(1, 1, 1, 1, 53));
    let mut l = FakeLookup::standard();
    let meta = ContainerMeta {
        name: Some("api".into()),
        image: Some("ghcr.io/acme/api:2".into()),
    };
    l.containers.insert(("docker".into(), CTR.into()), meta);
    let mut t = ConversationTable::default();
    let cgroup = format!("/docker/{CTR}");
    t.observe_owner(owner(
        3,
        17,
        c,
        None,
        Role::Unknown,
        process(7, "api", 0, Some(&cgroup)),
        1,
    ));
    t.observe_flow(&udp(c, s, 1, 70, (1, 1)));
    let r = only(export_at(&mut t, 2, &l));
    let v = serde_json::to_value(&r).expect("to value");
    let client = &v["client"];
    assert_eq!(client["container_id"], CTR);
    assert_eq!(client["container_runtime"], "docker");
    assert_eq!(client["container_name"], "api");
    assert_eq!(client["container_image"], "ghcr.io/acme/api:2");
    assert!(client["pod_uid"].is_null());
    assert_eq!(v["client_evidence"], "ports");
}
