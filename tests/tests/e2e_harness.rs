//! Self-tests of the end-to-end harness (tests/src), independent of the
//! flowlens binary: if these fail, the e2e results mean nothing.

use std::net::{IpAddr, SocketAddr};

use flowlens_tests::pcap::Capture;
use flowlens_tests::{
    agent, cmd, docker, ipproto, records, scenario, ArtifactDir, FakeContainer, Place, Tcpdump,
    VethNetns, NOBODY,
};
use serde_json::json;

/// Namespace + veth + fake container + agents + tcpdump: the capture must
/// show exactly the traffic the agents were told to produce.
#[test]
fn harness_selftest() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);

        for (ns, dev) in [(None, &net.host_if), (Some(&net.ns), &net.peer_if)] {
            let k = match ns {
                None => cmd::run("ethtool", &["-k", dev]),
                Some(ns) => cmd::run("ip", &["netns", "exec", ns, "ethtool", "-k", dev]),
            };
            for f in [
                "tcp-segmentation-offload: off",
                "generic-segmentation-offload: off",
                "generic-receive-offload: off",
            ] {
                assert!(k.contains(f), "{dev}: expected {f:?} in ethtool -k:\n{k}");
            }
        }
        assert_eq!(
            cmd::run("getent", &["passwd", "65534"]).split(':').next(),
            Some("nobody")
        );

        let dump = Tcpdump::start(&net.host_if, art.path());
        let (v4, v6) = (IpAddr::V4(net.peer_v4), IpAddr::V6(net.peer_v6));

        // TCP/IPv4, host client as nobody (paused, to read its identity),
        // server in the fake container as root.
        let mut srv = agent::tcp_server(Place::In(&ctr), None, v4, 5001, 10_000, 50_000);
        let sid = srv.identity();
        assert_eq!(sid, agent::expected(Place::In(&ctr), None, srv.pid));
        assert!(
            sid.cgroup.ends_with(&format!("/docker-{}.scope", ctr.id)),
            "{sid:?}"
        );
        assert_eq!(ctr.pids(), vec![srv.pid]);
        let ns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns link");
        assert_ne!(
            ns_of(srv.pid),
            ns_of(std::process::id()),
            "server must run in the test namespace"
        );
        let (mut cli, cport) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            v4,
            5001,
            10_000,
            50_000,
            1000,
            false,
        );
        let cid = cli.identity();
        assert_eq!(cid, agent::expected(Place::Host, Some(NOBODY), cli.pid));
        assert_eq!((cid.uid, cid.gid), (NOBODY, NOBODY));
        cli.send_line("go");
        cli.wait_success();
        srv.wait_success();

        // TCP/IPv6, the other way round.
        let mut srv6 = agent::tcp_server(
            Place::Host,
            Some(NOBODY),
            IpAddr::V6(net.host_v6),
            5003,
            1000,
            2000,
        );
        let (mut cli6, cport6) = agent::tcp_client(
            Place::In(&ctr),
            None,
            IpAddr::V6(net.host_v6),
            5003,
            1000,
            2000,
            0,
            false,
        );
        cli6.wait_success();
        srv6.wait_success();

        // Unconnected UDP.
        let mut us = agent::udp_server(Place::In(&ctr), None, v4, 5002, 3, 700);
        let (_uc, uport) =
            agent::udp_client(Place::Host, Some(NOBODY), v4, 5002, false, &[100, 200, 300]);
        us.wait_success();

        // ICMP echo.
        let ping = cmd::run(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", &net.peer_v4.to_string()],
        );
        assert!(ping.contains("3 received"), "{ping}");
        let ping6 = cmd::run(
            "ping",
            &["-6", "-c", "3", "-i", "0.2", "-W", "2", &v6.to_string()],
        );
        assert!(ping6.contains("3 received"), "{ping6}");

        flowlens_tests::sleep_ms(200);
        let cap = dump.stop();
        let all = cap.summary();

        let host = IpAddr::V4(net.host_v4);
        let (c, s) = (SocketAddr::new(host, cport), SocketAddr::new(v4, 5001));
        let (c2s, s2c) = (
            cap.direction(ipproto::TCP, c, s),
            cap.direction(ipproto::TCP, s, c),
        );
        // The first 1000 bytes were sent before the pause: all of it captured.
        assert_eq!(
            (c2s.payload, s2c.payload),
            (10_000, 50_000),
            "TCP payload per direction\n{all}"
        );
        assert_eq!(
            c2s.tcp_flags | s2c.tcp_flags,
            0x1b,
            "SYN|FIN|PSH|ACK and nothing else\n{all}"
        );
        // Offloads off: no packet above the MTU.
        let biggest = cap.packets.iter().map(|p| p.l3_len).max().unwrap_or(0);
        assert!(
            biggest <= 1500,
            "a {biggest}-byte packet: GSO/TSO still on?"
        );
        // The per-packet sums hold: bytes = payload + headers (20 IP + 32 TCP
        // with timestamps) + 8 more option bytes on the SYN / SYN-ACK.
        assert_eq!(c2s.bytes, c2s.payload + 52 * c2s.packets + 8, "{all}");
        assert_eq!(s2c.bytes, s2c.payload + 52 * s2c.packets + 8, "{all}");

        let (c6, s6) = (
            SocketAddr::new(v6, cport6),
            SocketAddr::new(IpAddr::V6(net.host_v6), 5003),
        );
        let (a, b) = (
            cap.direction(ipproto::TCP, c6, s6),
            cap.direction(ipproto::TCP, s6, c6),
        );
        assert_eq!(
            (a.payload, b.payload),
            (1000, 2000),
            "TCP/IPv6 payload per direction\n{all}"
        );
        assert_eq!(
            a.bytes,
            a.payload + 72 * a.packets + 8,
            "IPv6: 40 + 32 header bytes per packet\n{all}"
        );

        let (uc, usrv) = (SocketAddr::new(host, uport), SocketAddr::new(v4, 5002));
        let (a, b) = (
            cap.direction(ipproto::UDP, uc, usrv),
            cap.direction(ipproto::UDP, usrv, uc),
        );
        assert_eq!(
            (a.packets, a.bytes, a.payload),
            (3, 600 + 3 * 28, 600),
            "{all}"
        );
        assert_eq!((b.packets, b.bytes, b.payload), (3, 3 * 728, 2100), "{all}");

        let echo: Vec<_> = cap
            .packets
            .iter()
            .filter(|p| p.proto == ipproto::ICMP)
            .collect();
        assert_eq!(echo.len(), 6, "3 requests + 3 replies\n{all}");
        let id = echo[0].src.port();
        let (req, rep) = (SocketAddr::new(host, id), SocketAddr::new(v4, id));
        let (a, b) = (
            cap.direction(ipproto::ICMP, req, rep),
            cap.direction(ipproto::ICMP, rep, req),
        );
        assert_eq!(
            (a.packets, a.bytes, b.packets, b.bytes),
            (3, 252, 3, 252),
            "{all}"
        );
        let echo6: Vec<_> = cap
            .packets
            .iter()
            .filter(|p| p.proto == ipproto::ICMPV6 && p.src.port() != 0)
            .collect();
        assert_eq!(echo6.len(), 6, "3 ICMPv6 echo requests + 3 replies\n{all}");
        assert!(
            echo6.iter().all(|p| p.l3_len == 104),
            "40 + 8 + 56 bytes each\n{all}"
        );
    });
}

/// The pcap reader on hand-made captures of every supported link type.
#[test]
fn harness_selftest_pcap_synthetic() {
    let v4 = |src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8], payload: usize| {
        let total = (20 + l4.len() + payload) as u16;
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            proto,
            0,
            0,
        ];
        p.extend(src);
        p.extend(dst);
        p.extend(l4);
        p.extend(std::iter::repeat_n(0xaa, payload));
        p
    };
    let tcp = |sport: u16, dport: u16, flags: u8| {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    };
    let eth = |ethertype: u16, vlan: bool, l3: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if vlan {
            f.extend([0x81, 0x00, 0x00, 0x07]);
        }
        f.extend(ethertype.to_be_bytes());
        f.extend(l3);
        f
    };
    let pcap = |linktype: u32, frames: &[(Vec<u8>, usize)]| {
        let mut out = Vec::new();
        out.extend(0xa1b2_c3d4u32.to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(4u16.to_le_bytes());
        out.extend([0u8; 8]);
        out.extend(256u32.to_le_bytes());
        out.extend(linktype.to_le_bytes());
        for (f, snap) in frames {
            let incl = f.len().min(*snap);
            out.extend([1u8, 0, 0, 0, 0, 0, 0, 0]);
            out.extend((incl as u32).to_le_bytes());
            out.extend((f.len() as u32).to_le_bytes());
            out.extend(&f[..incl]);
        }
        out
    };
    let a = |s: &str| s.parse::<SocketAddr>().expect("addr");

    // Ethernet: a truncated 1000-byte-payload TCP packet (snaplen 64) counts
    // its full IP length; a VLAN-tagged one; an ARP frame is skipped.
    let big = eth(
        0x0800,
        false,
        &v4([10, 0, 0, 1], [10, 0, 0, 2], 6, &tcp(40000, 80, 0x18), 1000),
    );
    let tagged = eth(
        0x0800,
        true,
        &v4([10, 0, 0, 2], [10, 0, 0, 1], 6, &tcp(80, 40000, 0x11), 0),
    );
    let arp = eth(0x0806, false, &[0u8; 28]);
    let cap = Capture::parse(&pcap(1, &[(big, 64), (tagged, 256), (arp, 256)])).expect("parse");
    assert_eq!(cap.packets.len(), 2);
    let c2s = cap.direction(6, a("10.0.0.1:40000"), a("10.0.0.2:80"));
    assert_eq!(
        (c2s.packets, c2s.bytes, c2s.payload, c2s.tcp_flags),
        (1, 1040, 1000, 0x18)
    );
    let s2c = cap.direction(6, a("10.0.0.2:80"), a("10.0.0.1:40000"));
    assert_eq!((s2c.packets, s2c.bytes, s2c.tcp_flags), (1, 40, 0x11));

    // Linux SLL: ICMP echo request, id 0x1234 as both ports, 84 bytes.
    let icmp = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    let mut sll = vec![0u8; 14];
    sll.extend(0x0800u16.to_be_bytes());
    sll.extend(v4([10, 0, 0, 1], [10, 0, 0, 2], 1, &icmp, 56));
    let cap = Capture::parse(&pcap(113, &[(sll, 256)])).expect("parse");
    assert_eq!(
        cap.direction(1, a("10.0.0.1:4660"), a("10.0.0.2:4660"))
            .bytes,
        84
    );

    // Linux SLL2: IPv6 UDP behind a hop-by-hop header.
    let mut ip6 = vec![0x60, 0, 0, 0, 0, 8 + 8 + 100, 0, 64];
    ip6.extend(
        "fd00::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets(),
    );
    ip6.extend(
        "fd00::2"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets(),
    );
    ip6.extend([17, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, next = UDP
    ip6.extend([0x13, 0x88, 0x00, 0x35, 0, 108, 0, 0]); // 5000 -> 53
    ip6.extend([0u8; 100]);
    let mut sll2 = 0x86ddu16.to_be_bytes().to_vec();
    sll2.extend([0u8; 18]);
    sll2.extend(ip6);
    let cap = Capture::parse(&pcap(276, &[(sll2, 256)])).expect("parse");
    let d = cap.direction(17, a("[fd00::1]:5000"), a("[fd00::2]:53"));
    assert_eq!((d.packets, d.bytes, d.payload), (1, 156, 100));

    assert!(Capture::parse(b"not a pcap file at all!!").is_err());
    assert!(
        Capture::parse(&pcap(1, &[(vec![0u8; 60], 256)])[..30]).is_err(),
        "truncated record"
    );
}

/// Summing per-interval deltas into conversations, and contract validation.
#[test]
fn harness_selftest_records() {
    let ep = |addr: &str, port: u16| json!({"addr": addr, "port": port, "local": true});
    let line = |ts: &str, c2s: u64, s2c: u64, flags: u8, iface: &str| {
        json!({"ts": ts, "host": "h", "proto": "tcp", "client": ep("10.0.0.1", 40000), "server": ep("10.0.0.2", 80),
               "bytes_c2s": c2s, "bytes_s2c": s2c, "packets_c2s": c2s / 100, "packets_s2c": s2c / 100,
               "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-01T00:00:00.5Z", "tcp_flags": flags, "ifaces": [iface],
               "interval_ms": 1000})
    };
    let lines = vec![
        line("2026-01-01T00:00:01Z", 300, 1000, 0x02, "a"),
        line("2026-01-01T00:00:02Z", 200, 0, 0x11, "b"),
    ];
    let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
    let conv = records::find(&lines, "tcp", a("10.0.0.1:40000"), a("10.0.0.2:80")).expect("found");
    assert_eq!(
        (
            conv.bytes_c2s,
            conv.bytes_s2c,
            conv.packets_c2s,
            conv.packets_s2c
        ),
        (500, 1000, 5, 10)
    );
    assert_eq!(conv.tcp_flags, 0x13);
    assert_eq!(
        conv.ifaces.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let err =
        records::find(&lines, "tcp", a("10.0.0.2:80"), a("10.0.0.1:40000")).expect_err("swapped");
    assert!(err.contains("SWAPPED"), "{err}");
    assert!(records::find(&lines, "udp", a("10.0.0.1:40000"), a("10.0.0.2:80")).is_err());

    let mut bad = lines[0].clone();
    bad["client"]["port"] = json!(70000);
    assert!(records::validate_line(&bad).is_err());
    let mut bad = lines[0].clone();
    bad["ifaces"] = json!("a");
    assert!(records::validate_line(&bad).is_err());

    use flowlens_tests::checks::rfc3339_nanos;
    let n = |s: &str| rfc3339_nanos(s).unwrap_or_else(|| panic!("{s} should parse"));
    assert_eq!(n("1970-01-01T00:00:00Z"), 0);
    assert_eq!(
        n("2026-03-01T12:00:00.5Z"),
        n("2026-03-01T13:00:00.500+01:00")
    );
    assert!(n("2026-03-01T12:00:00Z") < n("2026-03-01T12:00:00.1Z"));
    assert_eq!(n("2000-03-01T00:00:00Z"), 951_868_800 * 1_000_000_000);
    for bad in [
        "2026-03-01 12:00:00",
        "2026-03-01T12:00:00",
        "2026-13-01T12:00:00Z",
        "x",
    ] {
        assert!(rfc3339_nanos(bad).is_none(), "{bad}");
    }
}

/// A private dockerd, the busybox image, two containers talking over the
/// bridge, and a clean slate afterwards.
#[test]
fn harness_selftest_docker() {
    let ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward");
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let d = docker::Dockerd::start(u);
        d.import_busybox(&[
            ("data/s2c", vec![b's'; 3000]),
            ("data/c2s", vec![b'c'; 2000]),
        ]);
        let srv = d.run(
            &format!("{u}-srv"),
            &docker::nc_script("-l -p 5000", "s2c", false),
        );
        let cli = d.run(
            &format!("{u}-cli"),
            &docker::nc_script(&format!("{} 5000", srv.ip), "c2s", true),
        );
        assert_eq!(srv.id.len(), 64);
        assert_eq!(srv.image, docker::IMAGE);
        let sid = flowlens_tests::spawn::identity_once_comm(srv.pid, "nc");
        assert_eq!(sid.cgroup, format!("/docker/{}", srv.id));
        assert_eq!((sid.exe.as_str(), sid.uid), ("/bin/busybox", 0));
        let before = flowlens_tests::spawn::ProcIdentity::read(cli.pid);
        assert_eq!(
            (before.comm.as_str(), before.cgroup),
            ("sh", format!("/docker/{}", cli.id))
        );

        let dump = Tcpdump::start(&cli.host_veth, art.path());
        d.cli(&["exec", &cli.name, "touch", "/tmp/go"]);
        d.wait_received(&srv.name, 2000);
        d.wait_received(&cli.name, 3000);
        let cid = flowlens_tests::spawn::identity_once_comm(cli.pid, "nc");
        assert_eq!(cid.cgroup, format!("/docker/{}", cli.id));
        flowlens_tests::sleep_ms(300);
        let cap = dump.stop();
        let server = SocketAddr::new(IpAddr::V4(srv.ip), 5000);
        let peers = cap.peers_of(ipproto::TCP, server);
        assert_eq!(peers.len(), 1, "one client\n{}", cap.summary());
        assert_eq!(peers[0].ip(), IpAddr::V4(cli.ip));
        let (c2s, s2c) = (
            cap.direction(ipproto::TCP, peers[0], server),
            cap.direction(ipproto::TCP, server, peers[0]),
        );
        assert_eq!(
            (c2s.payload, s2c.payload),
            (2000, 3000),
            "{}",
            cap.summary()
        );
        assert_eq!(
            c2s.tcp_flags | s2c.tcp_flags,
            0x1a,
            "SYN|PSH|ACK: nobody closed\n{}",
            cap.summary()
        );
    });
    let after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward");
    assert_eq!(after, ip_forward, "net.ipv4.ip_forward changed");
}

/// A scenario that panics with a namespace, a fake container and processes
/// in both places still alive leaves nothing behind.
#[test]
fn harness_selftest_cleanup_on_panic() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenario(|u| {
            *seen.lock().expect("lock") = Some(u.clone());
            let net = VethNetns::new(u);
            let ctr = FakeContainer::new(u, &net);
            let _srv =
                agent::tcp_server(Place::In(&ctr), None, IpAddr::V4(net.peer_v4), 5099, 1, 1);
            let _sleeper =
                flowlens_tests::Proc::spawn(Place::Host, Some(NOBODY), &["/bin/sleep", "60"]);
            panic!("deliberate panic with everything running");
        })
    }));
    let msg = result.expect_err("the scenario must fail");
    assert_eq!(
        msg.downcast_ref::<&str>(),
        Some(&"deliberate panic with everything running")
    );
    let u = seen.lock().expect("lock").clone().expect("scenario ran");
    assert_eq!(
        flowlens_tests::leftovers::leftovers(&u),
        Vec::<String>::new()
    );
}
