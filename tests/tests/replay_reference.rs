//! `flowlens replay` against an independent reference on real captures that
//! nobody here wrote: tcpdump's test captures (`apt-get source tcpdump` into
//! `target/captures/`, see `.ci/run`) and python3-dpkt's examples, compared
//! with what tshark's dissectors say (`tests/reference/tshark_conv.py`): the
//! same conversations with the same packets and IP bytes per direction.
//!
//! Counting rules of docs/replay.md that are conventions rather than
//! dissection are applied by the reference script (its RULE 1-5: echo ids as
//! ports, later fragments take their first fragment's ports, byte claims
//! beyond the frame count what is present, a third VLAN tag is not IP, an L4
//! header cut short has ports 0). The remaining differences are normalized
//! here:
//!
//! - Direction of a conversation whose two ends are the same address and port
//!   (malformed captures with `0.0.0.0`-like garbage, e.g. `48.48.48.48:0` to
//!   itself): which side is the client is a convention (flowlens: the
//!   correlator's; the reference: the first end), so both directions are
//!   summed before comparing.
//! - Captures left out on purpose (with the reason): `nflog.pcap` (link type
//!   NFLOG 239 is not supported, documented), `truncated_dns_2.pcap` (tshark
//!   refuses a file cut inside a record; flowlens counts up to the cut).
//!
//! Fails (does not skip) when tshark, python3 or the captures are missing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// tcpdump's captures: link types, VLAN/QinQ, fragments, IPv6 extension
/// headers, tunnels, malformed headers.
const TCPDUMP_FILES: &[&str] = &[
    "QinQpacket.pcap",              // Ethernet, 802.1ad + 802.1Q, DHCP
    "bgp-evpn.pcap",                // VLAN
    "dns_tcp.pcap",                 // Ethernet TCP
    "mptcp-v0.pcap",                // Ethernet, TCP options
    "mptcp-v1.pcap",                // Linux cooked (SLL)
    "resp_3_malicious.pcap",        // SLL, 18 conversations
    "dns-badcookie.pcap",           // BSD loopback NULL
    "icmpv6.pcap",                  // ICMPv6 (no echo: ports 0)
    "ipv6-routing-header.pcap",     // IPv6 routing header
    "ip6_frag_asan.pcap",           // IPv6 fragment header
    "ipv6-too-long-jumbo.pcap",     // IPv6 hop-by-hop jumbo option
    "afs.pcap",                     // IPv4 fragments (200 frames)
    "vrrp-vrrp_print-oobr-2.pcap",  // malformed IPv4 fragments, same src and dst
    "mpls-over-udp.pcap",           // tunnel: only the outer header counts
    "vxlan.pcap",                   // tunnel
    "ipv6hdr-heapoverflow.pcap",    // raw IPv6, malformed
    "tcp_header_heapoverflow.pcap", // TCP header cut, length claim > frame
    "icmpv6-length-zero.pcapng",    // pcapng
    "ikev2pI2-segfault.pcapng",     // pcapng, NULL
];

/// python3-dpkt's example captures.
const DPKT_FILES: &[&str] = &["dns_icmp.pcap", "http.pcap", "nb6-http.pcap"];
const DPKT_DIR: &str = "/usr/share/doc/python3-dpkt/examples/data";

/// Per conversation (proto, end a, end b; a <= b): packets and bytes a→b, b→a.
type Table = BTreeMap<(String, (IpAddr, u16), (IpAddr, u16)), [u64; 4]>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/captures/tcpdump-*/tests`, or `$FLOWLENS_TCPDUMP_CAPTURES`.
fn tcpdump_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FLOWLENS_TCPDUMP_CAPTURES") {
        return PathBuf::from(d);
    }
    let cache = workspace().join("target/captures");
    let found = std::fs::read_dir(&cache).ok().and_then(|rd| {
        rd.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tcpdump-"))
                    && p.join("tests").is_dir()
            })
            .max()
    });
    match found {
        Some(d) => d.join("tests"),
        None => panic!(
            "tcpdump's test captures are missing: no {}/tcpdump-*/tests. Get them with deb-src enabled: \
             mkdir -p target/captures && cd target/captures && apt-get source tcpdump (see .ci/run)",
            cache.display()
        ),
    }
}

fn endpoint(v: &Value) -> (IpAddr, u16) {
    let addr = v["addr"].as_str().expect("addr").parse().expect("address");
    let port = u16::try_from(v["port"].as_u64().expect("port")).expect("port range");
    (addr, port)
}

/// IPv4 sorts as its IPv4-mapped IPv6 key, as in the reference script.
fn sort_key(e: &(IpAddr, u16)) -> ([u8; 16], u16) {
    let bytes = match e.0 {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    (bytes, e.1)
}

fn add(table: &mut Table, proto: String, a: (IpAddr, u16), b: (IpAddr, u16), c: [u64; 4]) {
    let (a, b, mut c) = if sort_key(&a) <= sort_key(&b) {
        (a, b, c)
    } else {
        (b, a, [c[2], c[3], c[0], c[1]])
    };
    if a == b {
        // Same end on both sides: direction is a convention (see the module doc).
        c = [c[0] + c[2], c[1] + c[3], 0, 0];
    }
    let e = table.entry((proto, a, b)).or_default();
    for (x, y) in e.iter_mut().zip(c) {
        *x += y;
    }
}

fn flowlens_table(file: &Path) -> Table {
    let bin = flowlens_tests::flowlens::binary();
    assert!(
        bin.is_file(),
        "flowlens binary {} not found: cargo build -p flowlens-collector (or set FLOWLENS_BIN)",
        bin.display()
    );
    let out = Command::new(&bin)
        .arg("replay")
        .arg(file)
        .args(["--jsonl", "-", "--export-interval", "1000000s"])
        .args(["--idle-timeout", "1000000s"])
        .output()
        .expect("run flowlens replay");
    assert!(
        out.status.success(),
        "flowlens replay {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut table = Table::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: Value = serde_json::from_str(line).expect("JSON line");
        let n = |k: &str| r[k].as_u64().expect(k);
        add(
            &mut table,
            r["proto"].as_str().expect("proto").to_owned(),
            endpoint(&r["client"]),
            endpoint(&r["server"]),
            [
                n("packets_c2s"),
                n("bytes_c2s"),
                n("packets_s2c"),
                n("bytes_s2c"),
            ],
        );
    }
    table
}

fn reference_table(file: &Path) -> Table {
    let script = workspace().join("tests/reference/tshark_conv.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 {}: {e} (apt-get install python3)",
                script.display()
            )
        });
    assert!(
        out.status.success(),
        "{} {} failed (is tshark installed? apt-get install tshark): {}",
        script.display(),
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut table = Table::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let c: Value = serde_json::from_str(line).expect("JSON line");
        let n = |k: &str| c[k].as_u64().expect(k);
        let end = |a: &str, p: &str| {
            let addr = c[a].as_str().expect(a).parse().expect("address");
            (addr, u16::try_from(n(p)).expect("port range"))
        };
        add(
            &mut table,
            c["proto"].as_str().expect("proto").to_owned(),
            end("a", "a_port"),
            end("b", "b_port"),
            [
                n("packets_ab"),
                n("bytes_ab"),
                n("packets_ba"),
                n("bytes_ba"),
            ],
        );
    }
    table
}

/// Differences of one file, as readable lines.
fn compare(file: &Path) -> Vec<String> {
    let ours = flowlens_table(file);
    let theirs = reference_table(file);
    let mut diffs = Vec::new();
    for k in ours.keys().chain(theirs.keys()) {
        let (a, b) = (ours.get(k), theirs.get(k));
        if a != b && !diffs.iter().any(|d: &String| d.contains(&format!("{k:?}"))) {
            diffs.push(format!(
                "{}: {k:?}: flowlens {a:?}, tshark {b:?} ([packets, bytes] a->b, b->a)",
                file.display()
            ));
        }
    }
    diffs
}

#[test]
fn replay_matches_tshark_on_real_captures() {
    let tcpdump = tcpdump_dir();
    let mut files: Vec<PathBuf> = TCPDUMP_FILES.iter().map(|f| tcpdump.join(f)).collect();
    files.extend(DPKT_FILES.iter().map(|f| Path::new(DPKT_DIR).join(f)));
    let missing: Vec<_> = files.iter().filter(|f| !f.is_file()).collect();
    assert!(
        missing.is_empty(),
        "reference captures missing: {missing:?} (apt-get source tcpdump into target/captures; \
         apt-get install python3-dpkt)"
    );
    let mut diffs = Vec::new();
    let mut conversations = 0;
    for f in &files {
        conversations += reference_table(f).len();
        diffs.extend(compare(f));
    }
    assert!(
        conversations >= 80,
        "only {conversations} conversations: wrong captures?"
    );
    assert!(
        diffs.is_empty(),
        "flowlens replay differs from tshark:\n{}",
        diffs.join("\n")
    );
}
