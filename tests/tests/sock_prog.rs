//! Exact tests of the socket-ownership and process programs (`sock.bpf.c`)
//! with real traffic from this process and from child processes of known
//! pid/uid.
//!
//! Needs root. The programs are attached system-wide, so every test loads its
//! own copy (own ring buffer, dedup map and counters) and picks its events by
//! pid, port and socket cookie; tests run in parallel threads.
//!
//! Dedup as designed: a cookie is reported once per tuple. connect() reports
//! a TCP socket (lport still 0); its SYN_SENT -> ESTABLISHED change completes
//! the stored tuple, so the client's later sends report nothing. accept()
//! reports the accepted socket with its full tuple, so the server's reads
//! report nothing either.

#[path = "sock_prog/probe.rs"]
mod probe;

use std::{
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    process::Command,
};

use flowlens_ebpf::abi::*;
use probe::*;

const NOBODY: u32 = 65534;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_SYN_RECV: u8 = 3;
const TCP_FIN_WAIT1: u8 = 4;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;

/// An address as the events carry it: IPv4 mapped, IPv6 as is.
fn abi_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn our_pid() -> u32 {
    std::process::id()
}

/// A process that connects to `server` as uid/gid 65534 and writes "hello".
fn spawn_nobody_client(server: SocketAddr) -> std::process::Child {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf hello >&3",
        server.ip(),
        server.port()
    );
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["bash", "-c", &script])
        .spawn()
        .expect("spawn setpriv bash")
}

fn closed(events: &[Event], cookie: u64) -> bool {
    tcp_states(events, cookie)
        .iter()
        .any(|s| s.newstate == TCP_CLOSE)
}

/// Asserts the (old, new) transitions; `None` for an old state that depends on timing.
fn assert_transitions(states: &[TcpStateEvent], expected: &[(Option<u8>, u8)], who: &str) {
    let got: Vec<(u8, u8)> = states.iter().map(|s| (s.oldstate, s.newstate)).collect();
    assert_eq!(got.len(), expected.len(), "{who} transitions {got:?}");
    for (&(old, new), &(exp_old, exp_new)) in got.iter().zip(expected) {
        assert_eq!(new, exp_new, "{who} transitions {got:?}");
        if let Some(exp_old) = exp_old {
            assert_eq!(old, exp_old, "{who} transitions {got:?}");
        }
    }
}

/// Case 1 and 3: a TCP connection from a child process of another uid to a
/// listener of this thread, over loopback.
fn tcp_owner_case(loopback: IpAddr) {
    let mut probe = SockProbe::attach(None);
    let netns = own_netns();
    let cgroup = cgroup_id(our_pid());
    let listener = TcpListener::bind(SocketAddr::new(loopback, 0)).expect("listen");
    let server = listener.local_addr().expect("local addr");

    let mut child = spawn_nobody_client(server);
    let child_pid = child.id();
    let (mut stream, peer) = listener.accept().expect("accept");
    let accepted_local = stream.local_addr().expect("accepted local addr");
    let mut payload = Vec::new();
    stream.read_to_end(&mut payload).expect("read");
    assert_eq!(payload, b"hello");
    assert!(child.wait().expect("wait").success());
    drop(stream);
    let (tid, comm) = (gettid(), thread_comm());

    let mut events = Vec::new();
    let connect_of = |events: &[Event]| {
        events.iter().find_map(|e| match e {
            Event::Sock(s) if s.hook == SOCK_HOOK_CONNECT && s.pid == child_pid => Some(*s),
            _ => None,
        })
    };
    let accept_of = |events: &[Event]| {
        events.iter().find_map(|e| match e {
            Event::Sock(s)
                if s.hook == SOCK_HOOK_ACCEPT && s.pid == our_pid() && s.lport == server.port() =>
            {
                Some(*s)
            }
            _ => None,
        })
    };
    probe.collect_until(&mut events, "both sides closed", |ev| {
        matches!((connect_of(ev), accept_of(ev)), (Some(c), Some(a))
            if closed(ev, c.cookie) && closed(ev, a.cookie))
    });
    let connect = connect_of(&events).expect("connect event");
    let accept = accept_of(&events).expect("accept event");
    let (local, remote) = (abi_addr(loopback), abi_addr(loopback));

    // connect(): the child as owner, the local port not chosen yet
    assert_eq!(connect.hdr.size as usize, size_of::<SockEvent>());
    assert_ne!(connect.cookie, 0);
    assert_eq!((connect.pid, connect.tid), (child_pid, child_pid));
    assert_eq!((connect.uid, connect.gid), (NOBODY, NOBODY));
    assert_eq!(cstr(&connect.comm), "bash");
    assert_eq!(connect.cgroup_id, cgroup);
    assert_eq!(connect.netns, netns);
    assert_eq!((connect.proto, connect.role), (IPPROTO_TCP, ROLE_CLIENT));
    assert_eq!((connect.lport, connect.rport), (0, server.port()));
    assert_eq!((connect.laddr, connect.raddr), (local, remote));
    assert_eq!((connect.pad, connect.pad2), (0, 0));

    // the state changes give the client cookie its full tuple
    let client_states = tcp_states(&events, connect.cookie);
    assert_transitions(
        &client_states,
        &[
            (Some(TCP_SYN_SENT), TCP_ESTABLISHED),
            (Some(TCP_ESTABLISHED), TCP_FIN_WAIT1),
            (None, TCP_CLOSE),
        ],
        "client",
    );
    for s in &client_states {
        assert_eq!((s.lport, s.rport), (peer.port(), server.port()), "{s:?}");
        assert_eq!(
            (s.laddr, s.raddr),
            (abi_addr(peer.ip()), abi_addr(server.ip()))
        );
        assert_eq!(s.netns, netns);
        // a clean close: no socket error
        assert_eq!((s.pad, s.sk_err), ([0, 0], 0));
    }

    // accept(): this thread as owner, the accepted socket's own tuple
    assert_ne!(
        accept.cookie, 0,
        "accept read the cookie the state hook generated"
    );
    assert_ne!(accept.cookie, connect.cookie);
    assert_eq!((accept.pid, accept.tid), (our_pid(), tid));
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!((accept.uid, accept.gid), (uid, gid));
    assert_eq!(cstr(&accept.comm), comm);
    assert_eq!(accept.cgroup_id, cgroup);
    assert_eq!(accept.netns, netns);
    assert_eq!((accept.proto, accept.role), (IPPROTO_TCP, ROLE_SERVER));
    assert_eq!(
        (accept.lport, accept.rport),
        (accepted_local.port(), peer.port())
    );
    assert_eq!(
        (accept.laddr, accept.raddr),
        (abi_addr(accepted_local.ip()), abi_addr(peer.ip()))
    );
    let server_states = tcp_states(&events, accept.cookie);
    assert_transitions(
        &server_states,
        &[
            (Some(TCP_SYN_RECV), TCP_ESTABLISHED),
            (Some(TCP_ESTABLISHED), TCP_CLOSE_WAIT),
            (None, TCP_CLOSE),
        ],
        "server",
    );
    for s in &server_states {
        assert_eq!((s.lport, s.rport), (server.port(), peer.port()), "{s:?}");
        assert_eq!((s.laddr, s.raddr), (accept.laddr, accept.raddr));
    }

    // the child's send and this thread's reads were deduplicated
    assert_eq!(
        sock_events(&events, connect.cookie).len(),
        1,
        "client cookie"
    );
    assert_eq!(
        sock_events(&events, accept.cookie).len(),
        1,
        "server cookie"
    );
    let child_socks = events
        .iter()
        .filter(|e| matches!(e, Event::Sock(s) if s.pid == child_pid))
        .count();
    assert_eq!(child_socks, 1, "only CONNECT from the child");
    probe.assert_no_loss();
}

#[test]
fn tcp_v4_connect_and_accept_owners() {
    tcp_owner_case(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn tcp_v6_connect_and_accept_owners() {
    tcp_owner_case(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

/// This process's EV_SOCK events for local port `port`, in order.
fn sock_events_of(events: &[Event], port: u16) -> Vec<SockEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Sock(s) if s.pid == our_pid() && s.lport == port => Some(*s),
            _ => None,
        })
        .collect()
}

/// Sends one datagram from a fresh socket to itself and waits for its event:
/// everything this thread did before is in the ring buffer by then.
fn wait_for_marker(probe: &mut SockProbe, events: &mut Vec<Event>) {
    let marker = UdpSocket::bind("127.0.0.1:0").expect("marker bind");
    let addr = marker.local_addr().expect("marker addr");
    marker.send_to(b"m", addr).expect("marker send");
    probe.collect_until(events, "the marker datagram", |ev| {
        ev.iter()
            .any(|e| matches!(e, Event::Sock(s) if s.pid == our_pid() && s.lport == addr.port()))
    });
}

#[test]
fn udp_unconnected_then_connected() {
    let mut probe = SockProbe::attach(None);
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind rx");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
    let (rx_addr, tx_addr) = (rx.local_addr().expect("rx"), tx.local_addr().expect("tx"));
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        tx.send_to(b"ping", rx_addr).expect("send_to");
        rx.recv_from(&mut buf).expect("recv_from");
    }
    tx.connect(rx_addr).expect("connect");
    for _ in 0..2 {
        tx.send(b"ping").expect("send");
        rx.recv_from(&mut buf).expect("recv_from");
    }
    let mut events = Vec::new();
    wait_for_marker(&mut probe, &mut events);

    let of_port = |port: u16| sock_events_of(&events, port);
    let loopback = abi_addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let sent = of_port(tx_addr.port());
    assert_eq!(sent.len(), 2, "one per tuple: {sent:#?}");
    let (before, after) = (sent[0], sent[1]);
    assert_eq!(before.cookie, after.cookie);
    for s in [before, after] {
        assert_eq!(
            (s.proto, s.role, s.hook),
            (IPPROTO_UDP, ROLE_CLIENT, SOCK_HOOK_SEND)
        );
        assert_eq!(s.laddr, loopback);
        assert_eq!(s.tid, gettid());
    }
    assert_eq!(
        (before.rport, before.raddr),
        (0, [0; 16]),
        "unconnected: no peer"
    );
    assert_eq!(
        (after.rport, after.raddr),
        (rx_addr.port(), loopback),
        "connected"
    );

    let received = of_port(rx_addr.port());
    assert_eq!(received.len(), 1, "{received:#?}");
    let r = received[0];
    assert_eq!(
        (r.proto, r.role, r.hook),
        (IPPROTO_UDP, ROLE_SERVER, SOCK_HOOK_RECV)
    );
    assert_eq!((r.laddr, r.rport, r.raddr), (loopback, 0, [0; 16]));
    assert_ne!(r.cookie, before.cookie);
    assert!(tcp_states(&events, r.cookie).is_empty());
    probe.assert_no_loss();
}

/// The collector forgets owners nothing referenced for a while (a connection
/// idle for minutes); so a socket still in use `fl_refresh_ns` after its
/// report is reported again, and not before.
#[test]
fn socket_in_use_is_reported_again_after_the_refresh_period() {
    let mut probe = SockProbe::attach_with(None, Some(300_000_000));
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind rx");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
    let (rx_addr, tx_addr) = (rx.local_addr().expect("rx"), tx.local_addr().expect("tx"));
    tx.connect(rx_addr).expect("connect");
    let mut buf = [0u8; 16];
    let ping = |n: usize, buf: &mut [u8]| {
        for _ in 0..n {
            tx.send(b"ping").expect("send");
            rx.recv_from(buf).expect("recv_from");
        }
    };
    ping(5, &mut buf); // reported once, at the first send / recv
    std::thread::sleep(std::time::Duration::from_millis(700));
    ping(5, &mut buf); // reported again at the first, then quiet
    let mut events = Vec::new();
    wait_for_marker(&mut probe, &mut events);
    let of_port = |port: u16| sock_events_of(&events, port);
    let sent = of_port(tx_addr.port());
    let received = of_port(rx_addr.port());
    assert_eq!(sent.len(), 2, "report + one refresh: {sent:#?}");
    assert_eq!(received.len(), 2, "report + one refresh: {received:#?}");
    for (evs, role, hook) in [
        (&sent, ROLE_CLIENT, SOCK_HOOK_SEND),
        (&received, ROLE_SERVER, SOCK_HOOK_RECV),
    ] {
        assert_eq!(evs[0].cookie, evs[1].cookie, "the same socket");
        for e in evs.iter() {
            assert_eq!(
                (e.role, e.hook, e.proto),
                (role, hook, IPPROTO_UDP),
                "{e:#?}"
            );
        }
        let gap = evs[1].hdr.ts_ns - evs[0].hdr.ts_ns;
        assert!(
            gap >= 600_000_000,
            "the refresh came after the pause: {gap} ns"
        );
    }
    probe.assert_no_loss();
}

#[test]
fn exec_and_exit_of_a_child() {
    let mut probe = SockProbe::attach(None);
    let mut child = Command::new("/bin/true").spawn().expect("spawn /bin/true");
    let pid = child.id();
    assert!(child.wait().expect("wait").success());

    let mut events = Vec::new();
    probe.collect_until(&mut events, "the child's exit", |ev| {
        ev.iter()
            .any(|e| matches!(e, Event::Exit(p) if p.pid == pid))
    });
    let execs: Vec<ProcEvent> = events
        .iter()
        .filter_map(|e| match e {
            Event::Exec(p) if p.pid == pid => Some(*p),
            _ => None,
        })
        .collect();
    let exits: Vec<ProcEvent> = events
        .iter()
        .filter_map(|e| match e {
            Event::Exit(p) if p.pid == pid => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!((execs.len(), exits.len()), (1, 1), "{events:#?}");
    let (exec, exit) = (execs[0], exits[0]);
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let cgroup = cgroup_id(our_pid());
    for p in [exec, exit] {
        assert_eq!(p.ppid, our_pid());
        assert_eq!((p.uid, p.gid), (uid, gid));
        assert_eq!(p.cgroup_id, cgroup);
        assert_eq!(cstr(&p.comm), "true");
    }
    assert_eq!(cstr(&exec.exe), "/bin/true");
    assert_eq!(exit.exe, [0; EXE_LEN], "no file name on exit");
    assert!(exec.hdr.ts_ns < exit.hdr.ts_ns);
    probe.assert_no_loss();
}

/// A 4 KiB ring buffer that nobody reads overflows; every attempt is either
/// delivered or counted as lost.
#[test]
fn full_ring_buffer_is_counted_exactly() {
    let mut probe = SockProbe::attach(Some(4096));
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
    let sink_addr = sink.local_addr().expect("sink addr");
    // 150 new cookies, each reported once: 150 x 112 bytes >> 4 KiB
    for _ in 0..150 {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.send_to(b"x", sink_addr).expect("send_to");
    }
    let mut child = Command::new("/bin/true").spawn().expect("spawn");
    assert!(child.wait().expect("wait").success());
    probe.detach();

    let mut events = Vec::new();
    probe.drain(&mut events);
    let lost = probe.counter(CNT_RINGBUF_FULL);
    let attempts = probe.counter(CNT_SOCK_EVENTS) + probe.counter(CNT_PROC_EVENTS);
    assert!(lost > 0, "4 KiB cannot hold 150 socket events");
    assert!(attempts >= 150, "attempts {attempts}");
    assert!(!events.is_empty());
    let delivered = u64::try_from(events.len()).expect("count");
    assert_eq!(
        delivered + lost,
        attempts,
        "delivered {delivered} + lost {lost}"
    );
    assert_eq!(probe.counter(CNT_SOCK_MAP_FULL), 0);
}
