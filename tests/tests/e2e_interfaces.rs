//! Interfaces that come and go, through the real binary: a new veth that
//! carries a stream within milliseconds of its creation, veths that live a
//! fraction of a second, an interface named with `--iface` that is deleted
//! and created again, include/exclude patterns, traffic that crossed an
//! interface before flowlens could attach to it, and a down interface named
//! explicitly. The reference is `tcpdump -i any`, started before the
//! interfaces exist (a packet socket on `any` sees every interface at once).
//! Run as root, one at a time:
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_interfaces -- --test-threads=1`

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use flowlens_tests::pcap::Capture;
use flowlens_tests::{
    agent, cmd, ipproto, records, scenario, sleep_ms, ArtifactDir, Flowlens, Tcpdump, Uniq,
    VethNetns,
};
use serde_json::Value;

/// How flowlens captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ebpf,
    Afpacket,
}

impl Mode {
    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Ebpf => &[],
            Mode::Afpacket => &["--capture", "afpacket"],
        }
    }
}

/// A UDP sender: `count` datagrams of `size` bytes to `dst:port`, as fast as
/// the socket takes them (no listener needed: the datagrams are counted on
/// the wire). Written into `dir` so one shell can create an interface and
/// start sending right behind it.
fn sender_script(dir: &Path) -> String {
    let path = dir.join("burst.py");
    std::fs::write(
        &path,
        "import socket, sys\n\
         dst, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for _ in range(count):\n    s.sendto(b'x' * size, (dst, port))\n",
    )
    .expect("write burst.py");
    format!("{} {}", agent::python(), path.display())
}

/// The shell line that sends `count` datagrams from the namespace of `net`
/// to its host end, port `port`.
fn burst(net: &VethNetns, sender: &str, port: u16, count: u32) -> String {
    format!(
        "ip netns exec {} {sender} {} {port} {count} 100",
        net.ns, net.host_v4
    )
}

/// Runs `script` with `sh -e`.
fn sh(script: &str) {
    cmd::run("sh", &["-e", "-c", script]);
}

/// UDP packets flowlens counted between `peer` (any port) and `host:port`,
/// both directions, over all lines.
fn udp_packets(recs: &[Value], peer: IpAddr, host: SocketAddr) -> u64 {
    records::conversations(recs)
        .values()
        .filter(|c| c.proto == "udp")
        .filter(|c| {
            let (Some(a), Some(b)) = (c.client, c.server) else {
                return false;
            };
            (a.ip() == peer && b == host) || (b.ip() == peer && a == host)
        })
        .map(|c| c.packets_c2s + c.packets_s2c)
        .sum()
}

/// UDP packets tcpdump saw from `peer` to `host`.
fn captured(cap: &Capture, peer: IpAddr, host: SocketAddr) -> u64 {
    cap.packets
        .iter()
        .filter(|p| p.proto == ipproto::UDP && p.src.ip() == peer && p.dst == host)
        .count() as u64
}

/// A port of this test process's own (tests of several processes may run).
fn port(base: u16) -> u16 {
    base + (std::process::id() % 500) as u16
}

/// Waits for a log line that contains all of `words`.
fn wait_log(fl: &Flowlens, words: &[&str]) -> bool {
    cmd::wait_until(Duration::from_secs(5), || {
        fl.log()
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)))
    })
}

macro_rules! in_both_modes {
    ($($scenario:ident => $ebpf:ident, $afpacket:ident;)+) => {
        $(
            #[test]
            fn $ebpf() {
                $scenario(Mode::Ebpf);
            }

            #[test]
            fn $afpacket() {
                $scenario(Mode::Afpacket);
            }
        )+
    };
}

in_both_modes! {
    new_veth_with_an_immediate_stream
        => ebpf_new_veth_with_an_immediate_stream, afpacket_new_veth_with_an_immediate_stream;
    short_lived_veths
        => ebpf_short_lived_veths, afpacket_short_lived_veths;
    named_interface_deleted_and_created_again
        => ebpf_named_interface_deleted_and_created_again, afpacket_named_interface_deleted_and_created_again;
}

/// A veth created after start-up that carries 3,000 datagrams within
/// milliseconds of its creation: every one is counted (attached on the
/// kernel's link notification, not at the next poll).
fn new_veth_with_an_immediate_stream(mode: Mode) {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let port = port(41_000);
        let filter = format!("udp and port {port}");
        let dump = Tcpdump::start_filtered(
            "any",
            art.path(),
            &["udp", "and", "port", &port.to_string()],
        );
        let include = format!("{u}*");
        let mut args = vec!["--iface-include", include.as_str()];
        args.extend(mode.args());
        let fl = Flowlens::start_with_args(art.path(), &[], &[], &args);
        let sender = sender_script(art.path());
        let net = VethNetns::plan(u);
        sh(&format!(
            "{}\n{}",
            net.setup_script(),
            burst(&net, &sender, port, 3000)
        ));
        sleep_ms(1500);
        let (recs, log) = fl.stop_with_log();
        sleep_ms(200);
        let cap = dump.stop();
        let (peer, host) = (
            IpAddr::V4(net.peer_v4),
            SocketAddr::new(IpAddr::V4(net.host_v4), port),
        );
        assert_eq!(
            captured(&cap, peer, host),
            3000,
            "HARNESS: tcpdump -i any ({filter}) did not see the 3000 datagrams\n{}",
            cap.summary()
        );
        assert_eq!(
            udp_packets(&recs, peer, host),
            3000,
            "{mode:?}: datagrams of a new veth counted (tcpdump: 3000); log:\n{log}"
        );
    });
}

/// Five veths that each live a fraction of a second (created, 300
/// datagrams, deleted): all 1,500 counted.
fn short_lived_veths(mode: Mode) {
    scenario(|outer| {
        let art = ArtifactDir::new(outer);
        let port = port(41_600);
        let dump = Tcpdump::start_filtered(
            "any",
            art.path(),
            &["udp", "and", "port", &port.to_string()],
        );
        let uniqs: Vec<Uniq> = (0..5).map(|_| Uniq::new()).collect();
        let include: Vec<String> = uniqs.iter().map(|u| format!("{u}*")).collect();
        let include = include.join(",");
        let mut args = vec!["--iface-include", include.as_str()];
        args.extend(mode.args());
        let fl = Flowlens::start_with_args(art.path(), &[], &[], &args);
        let sender = sender_script(art.path());
        let mut ends = Vec::new();
        for u in &uniqs {
            let net = VethNetns::plan(u);
            sh(&format!(
                "{}\n{}\nip link del {}\nip netns del {}",
                net.setup_script(),
                burst(&net, &sender, port, 300),
                net.host_if,
                net.ns
            ));
            ends.push((
                IpAddr::V4(net.peer_v4),
                SocketAddr::new(IpAddr::V4(net.host_v4), port),
            ));
            // `net` drops here: nothing left to remove.
        }
        sleep_ms(1500);
        let (recs, log) = fl.stop_with_log();
        sleep_ms(200);
        let cap = dump.stop();
        let mut seen = Vec::new();
        for (peer, host) in &ends {
            assert_eq!(
                captured(&cap, *peer, *host),
                300,
                "HARNESS: tcpdump -i any missed datagrams of {peer}\n{}",
                cap.summary()
            );
            seen.push(udp_packets(&recs, *peer, *host));
        }
        assert_eq!(
            seen,
            vec![300; 5],
            "{mode:?}: datagrams counted per short-lived veth (tcpdump: 300 each); log:\n{log}"
        );
    });
}

/// `--iface X`, X deleted and created again (a new ifindex), then 500
/// datagrams: counted, and both events logged.
fn named_interface_deleted_and_created_again(mode: Mode) {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let port = port(42_200);
        let net = VethNetns::new(u);
        let host_if = net.host_if.clone();
        let fl = Flowlens::start_with_args(art.path(), &[&host_if], &[], mode.args());
        drop(net);
        assert!(
            wait_log(&fl, &["was deleted", &host_if]),
            "{mode:?}: flowlens did not log that {host_if} was deleted:\n{}",
            fl.log()
        );
        let dump = Tcpdump::start_filtered(
            "any",
            art.path(),
            &["udp", "and", "port", &port.to_string()],
        );
        let sender = sender_script(art.path());
        let net = VethNetns::plan(u);
        sh(&net.setup_script());
        assert!(
            wait_log(&fl, &["is back", &host_if]),
            "{mode:?}: flowlens did not log that {host_if} is back:\n{}",
            fl.log()
        );
        sh(&burst(&net, &sender, port, 500));
        sleep_ms(1500);
        let (recs, log) = fl.stop_with_log();
        sleep_ms(200);
        let cap = dump.stop();
        let (peer, host) = (
            IpAddr::V4(net.peer_v4),
            SocketAddr::new(IpAddr::V4(net.host_v4), port),
        );
        assert_eq!(
            captured(&cap, peer, host),
            500,
            "HARNESS\n{}",
            cap.summary()
        );
        assert_eq!(
            udp_packets(&recs, peer, host),
            500,
            "{mode:?}: datagrams on the recreated {host_if} (tcpdump: 500); log:\n{log}"
        );
    });
}

// eBPF mode only below: which interfaces are attached, and what is reported
// about them, is the exporter's policy, the same code for both sources (the
// AF_PACKET attach itself is covered above).

/// `--iface-include` and `--iface-exclude` (and their config file keys)
/// choose the interfaces: only the selected one is attached and counted.
#[test]
fn include_and_exclude_patterns_choose_interfaces() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let port = port(42_800);
        let (ua, ub) = (Uniq::new(), Uniq::new());
        let sender = sender_script(art.path());
        for via_file in [false, true] {
            let (a, b) = (VethNetns::new(&ua), VethNetns::new(&ub));
            let dump = Tcpdump::start_filtered(
                "any",
                art.path(),
                &["udp", "and", "port", &port.to_string()],
            );
            let (include, exclude) = (format!("{ua}*,{ub}*"), format!("{ub}*"));
            let config = art.path().join("patterns.toml");
            std::fs::write(
                &config,
                format!("iface_include = [\"{ua}*\", \"{ub}*\"]\niface_exclude = [\"{ub}*\"]\n"),
            )
            .expect("write config");
            let config = config.to_string_lossy().into_owned();
            let args: Vec<&str> = if via_file {
                vec!["--config", &config]
            } else {
                vec!["--iface-include", &include, "--iface-exclude", &exclude]
            };
            let fl = Flowlens::start_with_args(art.path(), &[], &[], &args);
            sh(&format!(
                "{}\n{}",
                burst(&a, &sender, port, 200),
                burst(&b, &sender, port, 200)
            ));
            sleep_ms(1500);
            let (recs, log) = fl.stop_with_log();
            sleep_ms(200);
            let cap = dump.stop();
            let end = |n: &VethNetns| {
                (
                    IpAddr::V4(n.peer_v4),
                    SocketAddr::new(IpAddr::V4(n.host_v4), port),
                )
            };
            let ((pa, ha), (pb, hb)) = (end(&a), end(&b));
            assert_eq!(
                (captured(&cap, pa, ha), captured(&cap, pb, hb)),
                (200, 200),
                "HARNESS\n{}",
                cap.summary()
            );
            let how = if via_file { "config file" } else { "flags" };
            assert_eq!(
                (udp_packets(&recs, pa, ha), udp_packets(&recs, pb, hb)),
                (200, 0),
                "{how}: included {} counted, excluded {} not; log:\n{log}",
                a.host_if,
                b.host_if
            );
            let monitoring = |i: &str| {
                log.lines().any(|l| {
                    l.contains("Monitoring interface") && l.contains(&format!("iface={i} "))
                })
            };
            assert!(
                monitoring(&a.host_if) && !monitoring(&b.host_if),
                "{how}: only {} may be attached:\n{log}",
                a.host_if
            );
        }
    });
}

/// An interface that carried traffic before it was selected (renamed into
/// the include pattern): what its driver counted before the attach is
/// reported (a WARN with the frames, and the loss counter), and what comes
/// after is counted exactly.
#[test]
fn traffic_before_attach_is_reported() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let port = port(43_400);
        let net = VethNetns::new(u);
        // Only ARP and these datagrams cross it: no IPv6 chatter on either end.
        let no_v6 = |ns: &str, dev: &str| {
            let key = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
            let mut argv: Vec<&str> = Vec::new();
            if !ns.is_empty() {
                argv.extend(["ip", "netns", "exec", ns]);
            }
            argv.extend(["sysctl", "-q", "-w", &key]);
            cmd::run(argv[0], &argv[1..]);
        };
        no_v6("", &net.host_if);
        no_v6(&net.ns, &net.peer_if);
        let later = u.ifname("x");
        let include = format!("{later}*");
        let fl = Flowlens::start_with_args(art.path(), &[], &[], &["--iface-include", &include]);
        // What crossed it before tcpdump started (its link-up chatter).
        let driver_frames = |dev: &str| -> u64 {
            ["rx_packets", "tx_packets"]
                .iter()
                .map(|f| {
                    std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/{f}"))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or_else(|| panic!("HARNESS: no {f} for {dev}"))
                })
                .sum()
        };
        let early = driver_frames(&net.host_if);
        let dump = Tcpdump::start(&net.host_if, art.path());
        let sender = sender_script(art.path());
        sh(&burst(&net, &sender, port, 500));
        sleep_ms(300);
        let before = dump.stop();
        let frames_before = early + before.frames;
        assert!(
            captured(
                &before,
                IpAddr::V4(net.peer_v4),
                SocketAddr::new(IpAddr::V4(net.host_v4), port)
            ) == 500,
            "HARNESS\n{}",
            before.summary()
        );
        sh(&format!(
            "ip link set {h} down\nip link set {h} name {later}\nip link set {later} up",
            h = net.host_if
        ));
        assert!(
            wait_log(
                &fl,
                &["before flowlens could attach", &format!("iface={later} ")]
            ),
            "the frames before the attach were not reported:\n{}",
            fl.log()
        );
        let dump = Tcpdump::start_filtered(
            "any",
            art.path(),
            &["udp", "and", "port", &port.to_string()],
        );
        sh(&burst(&net, &sender, port, 300));
        sleep_ms(1500);
        let (recs, log) = fl.stop_with_log();
        sleep_ms(200);
        let after = dump.stop();
        let line = log
            .lines()
            .find(|l| l.contains("before flowlens could attach"))
            .unwrap_or_default();
        let frames: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("frames="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert_eq!(
            frames, frames_before,
            "frames reported before the attach vs the driver's count before tcpdump started ({early}) + tcpdump's frames ({}): {line}",
            before.frames
        );
        assert!(
            log.contains("interface_frames_before_attach") && log.contains("Data was lost"),
            "the loss counter must say it:\n{log}"
        );
        let (peer, host) = (
            IpAddr::V4(net.peer_v4),
            SocketAddr::new(IpAddr::V4(net.host_v4), port),
        );
        assert_eq!(
            captured(&after, peer, host),
            300,
            "HARNESS\n{}",
            after.summary()
        );
        assert_eq!(
            udp_packets(&recs, peer, host),
            300,
            "after the attach every datagram counts; log:\n{log}"
        );
        // The guard deletes by the old name: rename it back first.
        sh(&format!(
            "ip link set {later} down\nip link set {later} name {}",
            net.host_if
        ));
    });
}

/// A down interface named with `--iface`: monitored, with a WARN that says it
/// is down; once up, its traffic is counted.
#[test]
fn down_interface_named_explicitly_is_monitored_and_said_so() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let port = port(44_000);
        let net = VethNetns::new(u);
        cmd::run("ip", &["link", "set", &net.host_if, "down"]);
        let fl = Flowlens::start(art.path(), &[&net.host_if], &[]);
        assert!(
            wait_log(
                &fl,
                &["Interface is down", &format!("iface={}", net.host_if)]
            ),
            "no WARN about the down interface:\n{}",
            fl.log()
        );
        cmd::run("ip", &["link", "set", &net.host_if, "up"]);
        let dump = Tcpdump::start_filtered(
            "any",
            art.path(),
            &["udp", "and", "port", &port.to_string()],
        );
        let sender = sender_script(art.path());
        sh(&burst(&net, &sender, port, 100));
        sleep_ms(1500);
        let (recs, log) = fl.stop_with_log();
        sleep_ms(200);
        let cap = dump.stop();
        let (peer, host) = (
            IpAddr::V4(net.peer_v4),
            SocketAddr::new(IpAddr::V4(net.host_v4), port),
        );
        assert_eq!(
            captured(&cap, peer, host),
            100,
            "HARNESS\n{}",
            cap.summary()
        );
        assert_eq!(udp_packets(&recs, peer, host), 100, "log:\n{log}");
    });
}
