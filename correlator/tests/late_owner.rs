//! Owner events that come after a conversation's first packets (accept()
//! after the handshake, a UDP server's first recv()): the conversation waits
//! up to `owner_wait_ns` for them, and a local end still without an owner
//! after that is counted, never silently left unknown.

mod common;

use common::*;
use flowlens_correlator::types::{FlowObservation, Hook, Role};
use flowlens_correlator::{ConversationTable, TableConfig};

/// Host 10.0.0.1 serves :80 to 10.0.0.2 (another local namespace).
const SERVER_PID: u32 = 7;
const CLIENT_PID: u32 = 8;

fn server() -> Addr {
    v4(10, 0, 0, 1, 80)
}

fn client(port: u16) -> Addr {
    v4(10, 0, 0, 2, port)
}

/// A table that already saw one accepted connection on the server address
/// (so it knows 10.0.0.1 is local) and the client's connect() of port 40001.
fn table(cfg: TableConfig) -> ConversationTable {
    let mut t = ConversationTable::new(cfg);
    t.observe_owner(owner(
        1,
        6,
        server(),
        Some(client(40000)),
        Role::Server,
        process(SERVER_PID, "srv", 0, None),
        0,
    ));
    t.observe_owner(owner(
        2,
        6,
        client(40001),
        Some(server()),
        Role::Client,
        process(CLIENT_PID, "cli", 0, None),
        1,
    ));
    t
}

/// Handshake and request c2s, answer s2c, both seen at `at` seconds.
fn packets(t: &mut ConversationTable, at: u64, c2s: u64, s2c: u64) {
    let veth = |src, dst, n| FlowObservation {
        tcp_flags: 0x12,
        ..obs(6, src, dst, 5, Hook::Ingress, n, 60 * n, (at, at))
    };
    t.observe_flow(&veth(client(40001), server(), c2s));
    if s2c > 0 {
        t.observe_flow(&veth(server(), client(40001), s2c));
    }
}

fn accept(t: &mut ConversationTable, ts: u64) {
    t.observe_owner(owner(
        3,
        6,
        server(),
        Some(client(40001)),
        Role::Server,
        process(SERVER_PID, "srv", 0, None),
        ts,
    ));
}

#[test]
fn accept_after_the_first_packets_is_waited_for() {
    let l = FakeLookup::standard();
    let mut t = table(TableConfig::default());
    // Exported 1 s after the first packet, before the server accepted.
    packets(&mut t, 1, 3, 0);
    assert!(export_at(&mut t, 2, &l).is_empty());
    assert_eq!(t.stats().conversations_awaiting_owner, 1);
    accept(&mut t, 2);
    packets(&mut t, 1, 5, 4);
    let r = only(export_at(&mut t, 3, &l));
    let pid = |e: &flowlens_correlator::Endpoint| e.process.as_ref().map(|p| p.pid);
    assert_eq!(
        (pid(&r.client), pid(&r.server)),
        (Some(CLIENT_PID), Some(SERVER_PID))
    );
    // Nothing lost by waiting: the record carries everything since the first packet.
    assert_eq!((r.packets_c2s, r.packets_s2c), (5, 4));
    let s = t.stats();
    assert_eq!(
        (
            s.records_unattributed_local,
            s.conversations_awaiting_owner,
            s.records_exported
        ),
        (0, 0, 1)
    );
}

#[test]
fn owner_that_never_comes_is_counted_after_the_wait() {
    let l = FakeLookup::standard();
    let mut t = table(TableConfig::default());
    packets(&mut t, 1, 3, 0);
    assert!(export_at(&mut t, 2, &l).is_empty());
    let r = only(export_at(&mut t, 4, &l));
    assert!(r.client.local && !r.server.local);
    assert_eq!((r.packets_c2s, r.packets_s2c), (3, 0));
    assert_eq!(t.stats().records_unattributed_local, 1);
    // Every later record without the owner counts again.
    packets(&mut t, 4, 4, 0);
    only(export_at(&mut t, 5, &l));
    assert_eq!(t.stats().records_unattributed_local, 2);
}

#[test]
fn remote_and_icmp_ends_do_not_wait() {
    let l = FakeLookup::standard();
    let mut t = table(TableConfig::default());
    // 93.184.216.34 is no address of this host's sockets.
    let remote = v4(93, 184, 216, 34, 443);
    t.observe_owner(owner(
        4,
        6,
        client(40002),
        Some(remote),
        Role::Client,
        process(CLIENT_PID, "cli", 0, None),
        1,
    ));
    t.observe_flow(&tcp(client(40002), remote, 3, 180, (1, 1)));
    // A ping the local kernel answers has no owner on the server side.
    t.observe_flow(&obs(
        1,
        v4(10, 0, 0, 2, 9),
        v4(10, 0, 0, 1, 9),
        5,
        Hook::Ingress,
        1,
        84,
        (1, 1),
    ));
    assert_eq!(export_at(&mut t, 2, &l).len(), 2);
    let s = t.stats();
    assert_eq!(
        (s.records_unattributed_local, s.conversations_awaiting_owner),
        (0, 0)
    );
}

#[test]
fn final_export_does_not_wait() {
    let mut t = table(TableConfig::default());
    packets(&mut t, 1, 3, 0);
    let records = t.export_final(
        2 * S,
        UNIX0 + i128::from(2 * S),
        "host1",
        &FakeLookup::standard(),
    );
    assert_eq!(only(records).packets_c2s, 3);
    assert_eq!(t.stats().records_unattributed_local, 1);
}

#[test]
fn waiting_conversation_is_not_evicted_with_unexported_counters() {
    let l = FakeLookup::standard();
    let mut t = table(TableConfig {
        idle_timeout_ns: S,
        owner_wait_ns: 5 * S,
        ..TableConfig::default()
    });
    packets(&mut t, 1, 3, 0);
    // Idle for longer than the timeout but still waiting: kept.
    assert!(export_at(&mut t, 3, &l).is_empty());
    assert_eq!(t.stats().conversations_evicted, 0);
    let r = only(export_at(&mut t, 7, &l));
    assert_eq!(r.packets_c2s, 3);
    assert_eq!(t.stats().conversations_evicted, 1);
}

#[test]
fn zero_wait_exports_at_once_and_counts() {
    let mut t = table(TableConfig {
        owner_wait_ns: 0,
        ..TableConfig::default()
    });
    packets(&mut t, 1, 3, 0);
    only(export_at(&mut t, 1, &FakeLookup::standard()));
    assert_eq!(t.stats().records_unattributed_local, 1);
}
