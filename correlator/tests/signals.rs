//! The golden signals in the conversation table: joined by tuple, by
//! direction, onto the right conversation; a failed connect no packet showed
//! becomes a conversation of its own; DNS names reach later conversations.

mod common;

use common::*;
use flowlens_correlator::dns::parse_message;
use flowlens_correlator::signals::{
    ConnectEvent, ConnectStep, DnsObservation, RttStats, TcpReset, TcpSignal,
};
use flowlens_correlator::types::Role;
use flowlens_correlator::ConversationTable;

#[test]
fn retransmits_resets_and_rtt_land_by_direction() {
    let (c, s) = (v4(10, 0, 0, 1, 40000), v4(10, 0, 0, 2, 443));
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        1,
        6,
        c,
        Some(s),
        Role::Client,
        process(42, "curl", 1000, None),
        1,
    ));
    t.observe_flow(&tcp(c, s, 10, 1000, (1, 2)));
    t.observe_flow(&tcp(s, c, 10, 9000, (1, 2)));
    // the server's end retransmitted 3 segments and sent a reset; the client saw it arrive
    t.observe_tcp_signal(
        TcpSignal {
            local: s,
            remote: c,
            retransmits: 3,
            rtt: RttStats {
                samples: 2,
                sum_us: 300,
                min_us: 100,
                max_us: 200,
            },
        },
        2 * S,
    );
    t.observe_tcp_reset(TcpReset {
        local: s,
        remote: c,
        sent: true,
        ts_ns: 2 * S,
    });
    t.observe_tcp_reset(TcpReset {
        local: c,
        remote: s,
        sent: false,
        ts_ns: 2 * S,
    });
    let r = only(export_at(&mut t, 3, &FakeLookup::standard()));
    let g = &r.signals;
    assert_eq!((g.retransmits_c2s, g.retransmits_s2c), (0, 3));
    assert_eq!(
        (g.resets_c2s, g.resets_s2c),
        (0, 1),
        "seen by both ends, counted once"
    );
    assert_eq!(
        (g.rtt_min_us, g.rtt_avg_us, g.rtt_max_us),
        (Some(100), Some(150), Some(200))
    );
    // the next interval has nothing new: no signals on it
    t.observe_flow(&tcp(c, s, 11, 1100, (1, 4)));
    let r = only(export_at(&mut t, 5, &FakeLookup::standard()));
    assert_eq!(r.signals, Default::default());
}

#[test]
fn a_refused_connect_without_packets_is_a_conversation_of_its_client() {
    let (c, s) = (v4(10, 0, 0, 1, 40001), v4(10, 0, 0, 2, 5432));
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        7,
        6,
        c,
        Some(s),
        Role::Client,
        process(77, "psql", 1000, None),
        1,
    ));
    let ev = |step, ts| ConnectEvent {
        cookie: 7,
        local: c,
        remote: s,
        step,
        ts_ns: ts,
    };
    t.observe_connect(ev(ConnectStep::Started, S));
    t.observe_connect(ev(ConnectStep::Failed(111), S + 300_000));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(r.signals.connect_error.as_deref(), Some("refused"));
    assert_eq!((r.client.port, r.server.port), (40001, 5432));
    assert_eq!(r.client.process.as_ref().map(|p| p.pid), Some(77));
    assert_eq!(r.signals.connect_us, None);
    assert_eq!(t.stats().signals.connects_failed, 1);
}

#[test]
fn connect_latency_and_an_early_abandon_that_is_no_failure() {
    let (c, s) = (v4(10, 0, 0, 1, 40002), v4(10, 0, 0, 2, 80));
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        8,
        6,
        c,
        Some(s),
        Role::Client,
        process(8, "wget", 1000, None),
        1,
    ));
    let ev = |cookie, local, step, ts| ConnectEvent {
        cookie,
        local,
        remote: s,
        step,
        ts_ns: ts,
    };
    t.observe_connect(ev(8, c, ConnectStep::Started, S));
    t.observe_connect(ev(8, c, ConnectStep::Established, S + 250_000));
    t.observe_flow(&tcp(c, s, 3, 180, (1, 1)));
    // a second socket gave up after 200 ms without an error (happy eyeballs)
    let c2 = v4(10, 0, 0, 1, 40003);
    t.observe_connect(ev(9, c2, ConnectStep::Started, S));
    t.observe_connect(ev(9, c2, ConnectStep::Failed(0), S + 200_000_000));
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    assert_eq!(r.signals.connect_us, Some(250));
    assert_eq!(r.signals.connect_error, None);
}

/// A DNS message as a resolver writes it: one question, A answers for it.
fn dns(id: u16, response: bool, rcode: u8, name: &str, answers: &[[u8; 4]]) -> Vec<u8> {
    let flags: u16 = if response {
        0x8180 | u16::from(rcode)
    } else {
        0x0100
    };
    let mut m = Vec::new();
    for v in [id, flags, 1, answers.len() as u16, 0, 0] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    for a in answers {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        m.extend_from_slice(a);
    }
    m
}

#[test]
fn dns_health_on_the_dns_conversation_and_names_on_the_next() {
    let (c, ns) = (v4(10, 0, 0, 1, 50000), v4(10, 0, 0, 53, 53));
    let web = v4(10, 0, 0, 80, 443);
    let mut t = ConversationTable::default();
    t.observe_owner(owner(
        5,
        17,
        c,
        None,
        Role::Client,
        process(5, "app", 1000, None),
        1,
    ));
    t.observe_flow(&udp(c, ns, 2, 140, (1, 1)));
    t.observe_flow(&udp(ns, c, 2, 180, (1, 1)));
    let obs = |src, dst, bytes: Vec<u8>, egress, ts| DnsObservation {
        proto: 17,
        src,
        dst,
        egress,
        message: parse_message(&bytes).expect("valid message"),
        ts_ns: ts,
    };
    for (id, name, rcode, answers) in [
        (1, "web.example", 0u8, vec![[10, 0, 0, 80]]),
        (2, "nope.example", 3, vec![]),
    ] {
        let q0 = S + u64::from(id) * 10_000_000;
        t.observe_dns(&obs(c, ns, dns(id, false, 0, name, &[]), true, q0));
        t.observe_dns(&obs(
            ns,
            c,
            dns(id, true, rcode, name, &answers),
            false,
            q0 + 2_000_000,
        ));
    }
    let r = only(export_at(&mut t, 2, &FakeLookup::standard()));
    let g = &r.signals;
    assert_eq!((g.dns_queries, g.dns_responses, g.dns_nxdomain), (2, 2, 1));
    assert_eq!(
        (g.dns_latency_avg_us, g.dns_latency_max_us),
        (Some(2000), Some(2000))
    );
    assert_eq!(r.client.process.as_ref().map(|p| p.pid), Some(5));

    let cw = v4(10, 0, 0, 1, 40100);
    t.observe_owner(owner(
        6,
        6,
        cw,
        Some(web),
        Role::Client,
        process(5, "app", 1000, None),
        2,
    ));
    t.observe_flow(&tcp(cw, web, 3, 200, (3, 3)));
    let r = only(export_at(&mut t, 4, &FakeLookup::standard()));
    assert_eq!(r.server.name.as_deref(), Some("web.example"));
    assert_eq!(r.client.name, None);
}
