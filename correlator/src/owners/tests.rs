//! The owner table: shared identities and records, take-overs, expiry.

use super::*;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn event(cookie: u64, pid: u32, port: u16, ts_ns: u64) -> SocketOwnerEvent {
    SocketOwnerEvent {
        cookie,
        proto: 6,
        local: (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port),
        remote: Some((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443)),
        netns: 1,
        role: Role::Client,
        process: ProcessIdentity {
            pid,
            comm: "curl".to_owned(),
            exe: Some("/usr/bin/curl".to_owned()),
            uid: 1000,
            gid: 1000,
            cgroup_id: 7,
            cgroup_path: Some(format!("/system.slice/docker-{ID}.scope")),
        },
        ts_ns,
    }
}

fn find(ix: &OwnerIndex, port: u16) -> Arc<Owner> {
    let local = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port);
    let remote = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443);
    match ix.find(6, local, remote) {
        Some(f) => f.owner,
        None => panic!("no owner for port {port}"),
    }
}

fn change(cookie: u64, port: u16, old_state: u8, new_state: u8, ts_ns: u64) -> TcpStateChange {
    TcpStateChange {
        cookie,
        local: (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port),
        remote: (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443),
        old_state,
        new_state,
        ts_ns,
    }
}

#[test]
fn sockets_of_one_process_share_one_identity_until_nobody_holds_it() {
    let mut ix = OwnerIndex::new(16);
    ix.insert(event(1, 100, 40001, 10));
    ix.insert(event(2, 100, 40002, 20));
    ix.insert(event(3, 101, 40003, 30));
    assert_eq!(ix.identities_len(), 2);
    let (a, b, c) = (find(&ix, 40001), find(&ix, 40002), find(&ix, 40003));
    assert!(Arc::ptr_eq(a.identity(), b.identity()));
    assert!(!Arc::ptr_eq(a.identity(), c.identity()));
    // Each socket keeps its own owner event time.
    assert_eq!((a.since_ns(), b.since_ns(), c.since_ns()), (10, 20, 30));
    assert_eq!(
        a.identity()
            .container
            .as_ref()
            .map(|c| (c.runtime, c.id.as_str())),
        Some(("docker", ID))
    );
    assert_eq!(c.identity().process.pid, 101);
    drop((b, c));
    // Every owner forgotten; a conversation still holds pid 100's identity.
    ix.expire(10_000, 100, 100, 100);
    assert_eq!(ix.sockets_tracked(), 0);
    assert_eq!(ix.identities_len(), 1);
    // A new socket of the same process gets the identity still held.
    ix.insert(event(4, 100, 40004, 10_000));
    assert!(Arc::ptr_eq(find(&ix, 40004).identity(), a.identity()));
    drop(a);
    ix.expire(20_000, 100, 100, 100);
    assert_eq!(ix.identities_len(), 0);
}

#[test]
fn a_record_given_to_a_conversation_never_changes_after() {
    use crate::types::tcp_state::{ESTABLISHED, SYN_SENT};
    let mut ix = OwnerIndex::new(16);
    // A server socket's accept() (owner event) after another socket held the tuple.
    ix.insert(event(1, 100, 40001, 10));
    ix.insert(event(2, 100, 40001, 500));
    let given = find(&ix, 40001);
    assert_eq!((given.cookie(), given.took_over_ns()), (2, 500));
    // Its handshake ended earlier than the owner event: the take-over moves back
    // for the table, not for the record already given.
    ix.state_change(change(2, 40001, SYN_SENT, ESTABLISHED, 300));
    assert_eq!(find(&ix, 40001).took_over_ns(), 300);
    assert_eq!(given.took_over_ns(), 500);
    // The fd passed to another process: newest owner wins in the table only.
    ix.insert(event(2, 101, 40001, 600));
    let now = find(&ix, 40001);
    assert_eq!((now.identity().process.pid, now.since_ns()), (101, 600));
    assert_eq!((given.identity().process.pid, given.since_ns()), (100, 500));
    // Role and references are the table's (no copy made for them).
    assert_eq!(ix.role_of(2), Some(Role::Client));
    assert_eq!(ix.started_ns(2), Some(300));
    // Retupled to another port: the old record keeps its tuple, the new one is found.
    let mut moved = change(2, 40002, ESTABLISHED, ESTABLISHED, 700);
    moved.old_state = ESTABLISHED;
    ix.state_change(moved);
    assert!(ix
        .find(6, ev_local(40001), ev_remote())
        .is_none_or(|f| f.owner.cookie() != 2));
    let moved = find(&ix, 40002);
    assert_eq!(
        (moved.cookie(), moved.took_over_ns(), moved.exact()),
        (2, 0, true)
    );
    assert_eq!(given.local(), ev_local(40001));
    assert_eq!(moved.local(), ev_local(40002));
}

fn ev_local(port: u16) -> Addr {
    (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port)
}

fn ev_remote() -> Addr {
    (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 443)
}

#[test]
fn take_over_history_only_for_keys_taken_over_and_gone_with_them() {
    use crate::types::tcp_state::{CLOSE, ESTABLISHED, SYN_SENT};
    let mut ix = OwnerIndex::new(16);
    ix.insert(event(10, 100, 40001, 100));
    ix.insert(event(10, 100, 40001, 150));
    assert_eq!(ix.full.history_len(), 0);
    let f = ix.find(6, ev_local(40001), ev_remote()).expect("owner");
    assert_eq!((f.owner.took_over_ns(), f.takeovers.0), (0, [0; 4]));
    ix.insert(event(11, 100, 40001, 200));
    ix.insert(event(12, 100, 40001, 300));
    ix.state_change(change(12, 40001, SYN_SENT, ESTABLISHED, 250));
    let f = ix.find(6, ev_local(40001), ev_remote()).expect("owner");
    assert_eq!(
        (f.owner.cookie(), f.owner.took_over_ns(), f.takeovers.0),
        (12, 250, [250, 200, 0, 0])
    );
    assert_eq!(f.takeovers.after(199), 2);
    assert_eq!((ix.full.len(), ix.full.history_len()), (1, 1));
    // Socket 11 leaves the tuple (it closed and expires): the key stays 12's.
    ix.state_change(change(11, 40001, ESTABLISHED, CLOSE, 260));
    ix.expire(400, 1_000, 100, 1_000);
    assert_eq!(ix.sockets_tracked(), 2);
    assert_eq!(find(&ix, 40001).cookie(), 12);
    ix.expire(2_000, 1_000, 100, 1_000);
    assert!(ix.find(6, ev_local(40001), ev_remote()).is_none());
    assert_eq!((ix.full.len(), ix.full.history_len()), (0, 0));
}

#[test]
fn a_closed_socket_expires_by_its_close_whatever_touched_it_after() {
    use crate::types::tcp_state::{CLOSE, ESTABLISHED};
    let mut ix = OwnerIndex::new(16);
    ix.insert(event(1, 100, 40001, 10));
    ix.state_change(change(1, 40001, ESTABLISHED, CLOSE, 20));
    ix.state_change(change(1, 40001, CLOSE, CLOSE, 30));
    ix.touch(1, 900);
    assert_eq!(ix.closed_ns(1), Some(20));
    // Closed grace 100 from 20; the touch at 900 does not keep it.
    ix.expire(121, 10_000, 100, 10_000);
    assert_eq!(ix.sockets_tracked(), 0);
    // Not closed: the last reference counts.
    ix.insert(event(2, 100, 40002, 10));
    ix.touch(2, 900);
    ix.expire(1_000, 100, 1, 10_000);
    assert_eq!((ix.sockets_tracked(), ix.closed_ns(2)), (1, None));
}

#[test]
fn ipv6_and_mixed_tuples_are_kept_exactly() {
    let mut ix = OwnerIndex::new(16);
    let v6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last));
    let mut ev = event(1, 100, 40001, 10);
    ev.local = (v6(1), 40001);
    ev.remote = Some((v6(2), 443));
    ix.insert(ev.clone());
    let f = ix.find(6, (v6(1), 40001), (v6(2), 443)).expect("v6 owner");
    assert_eq!(
        (f.owner.local(), f.owner.remote()),
        ((v6(1), 40001), Some((v6(2), 443)))
    );
    // A dual-stack listener on `::` receives IPv4 too.
    ev.cookie = 2;
    ev.local = (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8080);
    ev.remote = None;
    ix.insert(ev);
    let f = ix
        .find(6, ev_local(8080), ev_remote())
        .expect("dual-stack listener");
    assert_eq!((f.owner.cookie(), f.owner.exact()), (2, false));
    assert!(ix.is_local(v6(1)) && !ix.is_local(v6(2)));
    assert!(!ix.is_local(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
}

#[test]
fn owner_records_stay_small() {
    use std::mem::size_of;
    // BENCHMARKS.md ("owner side"): a record (+16 B of reference counts) fits
    // glibc's 96-B chunk; a conversation keeps a pointer and a role per end.
    assert!(size_of::<Owner>() <= 72);
    assert!(size_of::<EndOwners>() <= 24);
}
