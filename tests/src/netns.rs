//! A network namespace joined to the root namespace by a veth pair.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::cmd;
use super::names::{free_subnet, Uniq};

/// `ip netns add <uniq>` plus a veth pair: `<uniq>h` in the root namespace with
/// `10.200.<n>.1/24` + `fd00:200:<n>::1/64`, `<uniq>p` inside with `.2`/`::2`.
/// Dropping it kills whatever still runs in the namespace and deletes both.
#[derive(Debug)]
pub struct VethNetns {
    /// Namespace name (as in `ip netns list`).
    pub ns: String,
    /// Root-namespace end of the veth pair.
    pub host_if: String,
    /// Namespace end of the veth pair.
    pub peer_if: String,
    /// Address of `host_if`.
    pub host_v4: Ipv4Addr,
    /// Address of `peer_if`.
    pub peer_v4: Ipv4Addr,
    /// IPv6 address of `host_if`.
    pub host_v6: Ipv6Addr,
    /// IPv6 address of `peer_if`.
    pub peer_v6: Ipv6Addr,
}

impl VethNetns {
    /// Creates namespace and veth pair, addresses them, brings everything up
    /// and turns offloads off on both ends.
    pub fn new(uniq: &Uniq) -> Self {
        let guard = Self::plan(uniq);
        // From here on a panic drops `guard`, which removes what exists so far.
        cmd::run("sh", &["-e", "-c", &guard.setup_script()]);
        // Offloads off on both ends, for exact packet counts: with TSO/GSO the
        // stack hands the veth 64 KB "super-packets" that tcpdump records as
        // ONE packet (with the full IP length), while flowlens counts the
        // segments they stand for (gso_segs), as they would be on a real wire.
        // With everything segmented by TCP itself both see the same packets.
        // `tx off` (checksum offload) too: TSO depends on it, so no later
        // feature change (XDP attach toggles veth features) can bring TSO back.
        disable_offloads(None, &guard.host_if);
        disable_offloads(Some(&guard.ns), &guard.peer_if);
        guard
    }

    /// The names and addresses of a namespace + veth pair, nothing created
    /// yet: [`VethNetns::setup_script`] creates them (e.g. in one shell with
    /// the first traffic right behind, for an interface that carries packets
    /// within milliseconds of being created). Dropping it removes whatever
    /// exists by then.
    pub fn plan(uniq: &Uniq) -> Self {
        let n = free_subnet("10.200");
        VethNetns {
            ns: uniq.as_str().to_owned(),
            host_if: uniq.ifname("h"),
            peer_if: uniq.ifname("p"),
            host_v4: Ipv4Addr::new(10, 200, n, 1),
            peer_v4: Ipv4Addr::new(10, 200, n, 2),
            host_v6: Ipv6Addr::new(0xfd00, 0x200, n.into(), 0, 0, 0, 0, 1),
            peer_v6: Ipv6Addr::new(0xfd00, 0x200, n.into(), 0, 0, 0, 0, 2),
        }
    }

    /// Shell commands (one per line, for `sh -e -c`) that create the
    /// namespace and the veth pair, address both ends (IPv6 without DAD:
    /// usable at once instead of "tentative" for a second or two) and bring
    /// them up. Offloads stay on.
    pub fn setup_script(&self) -> String {
        let (ns, h, p) = (&self.ns, &self.host_if, &self.peer_if);
        let (h4, p4, h6, p6) = (self.host_v4, self.peer_v4, self.host_v6, self.peer_v6);
        [
            format!("ip netns add {ns}"),
            format!("ip link add {h} type veth peer name {p} netns {ns}"),
            format!("ip addr add {h4}/24 dev {h}"),
            format!("ip -6 addr add {h6}/64 dev {h} nodad"),
            format!("ip link set {h} up"),
            format!("ip -n {ns} addr add {p4}/24 dev {p}"),
            format!("ip -n {ns} -6 addr add {p6}/64 dev {p} nodad"),
            format!("ip -n {ns} link set {p} up"),
            format!("ip -n {ns} link set lo up"),
        ]
        .join("\n")
    }

    /// `ip netns exec <ns>` as an argv prefix.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns.clone()]
    }

    /// ifindex of `host_if`.
    pub fn host_ifindex(&self) -> u32 {
        ifindex(&self.host_if).unwrap_or_else(|| panic!("{} has no ifindex", self.host_if))
    }
}

/// `ethtool -K <dev> tso off gso off gro off tx off`, in the network namespace
/// of `nsenter_args` (e.g. `["--net=/run/netns/x"]`, `["-t", "<pid>", "-n"]`)
/// or the root one (empty). See [`VethNetns::new`] for why.
pub fn disable_offloads_in(nsenter_args: &[&str], dev: &str) {
    let mut argv: Vec<&str> = nsenter_args.to_vec();
    if !argv.is_empty() {
        argv.push("--");
    }
    argv.extend([
        "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
    ]);
    if nsenter_args.is_empty() {
        cmd::run(argv[0], &argv[1..]);
    } else {
        cmd::run("nsenter", &argv);
    }
}

fn disable_offloads(ns: Option<&str>, dev: &str) {
    match ns {
        Some(ns) => disable_offloads_in(&[&format!("--net=/run/netns/{ns}")], dev),
        None => disable_offloads_in(&[], dev),
    }
}

/// The MAC address of `dev` (in namespace `ns`, else the host's).
pub fn mac_of(ns: Option<&str>, dev: &str) -> String {
    let mut args = vec![];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-o", "link", "show", dev]);
    let out = cmd::run("ip", &args);
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no MAC address of {dev}: {out}"))
        .to_owned()
}

/// ifindex of a root-namespace interface.
pub fn ifindex(dev: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Name of a root-namespace interface by ifindex.
pub fn ifname_of(index: u32) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (ifindex(&name) == Some(index)).then_some(name)
        })
}

/// Kills every process whose network namespace is `ns` (SIGKILL).
pub fn kill_netns_processes(ns: &str) {
    let pids = cmd::output("ip", &["netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse() {
            cmd::kill(pid, libc::SIGKILL);
        }
    }
}

impl Drop for VethNetns {
    fn drop(&mut self) {
        kill_netns_processes(&self.ns);
        // Delete the pair explicitly: `ip netns del` only unmounts, and the
        // namespace (with the peer, and so the host end) goes away later, in
        // a kernel work queue.
        cmd::run_quiet("ip", &["link", "del", &self.host_if]);
        cmd::run_quiet("ip", &["netns", "del", &self.ns]);
        let gone = cmd::wait_until(Duration::from_secs(5), || ifindex(&self.host_if).is_none());
        if !gone {
            eprintln!("warning: {} still exists after cleanup", self.host_if);
        }
    }
}

/// A bridge in the root namespace with two namespaces on it (as docker0 with
/// two containers): `<u>br` 10.200.n.1/24, namespace A .2, namespace B .3.
/// Bridged traffic needs no ip_forward. Dropped in reverse order.
pub struct Bridged {
    /// Namespace A, .2.
    pub a: VethNetns,
    /// Namespace B, .3.
    pub b: VethNetns,
    /// The bridge.
    pub br: String,
}

impl Drop for Bridged {
    fn drop(&mut self) {
        cmd::run_quiet("ip", &["link", "del", &self.br]);
    }
}

fn veth_on_bridge(u: &Uniq, tag: &str, br: &str, n: u8, host: u8) -> VethNetns {
    let ns = format!("{u}{tag}");
    let (h, p) = (u.ifname(&format!("h{tag}")), u.ifname(&format!("p{tag}")));
    cmd::run("ip", &["netns", "add", &ns]);
    let guard = VethNetns {
        ns: ns.clone(),
        host_if: h.clone(),
        peer_if: p.clone(),
        host_v4: Ipv4Addr::new(10, 200, n, 1),
        peer_v4: Ipv4Addr::new(10, 200, n, host),
        host_v6: Ipv6Addr::UNSPECIFIED,
        peer_v6: Ipv6Addr::UNSPECIFIED,
    };
    cmd::run(
        "ip",
        &[
            "link", "add", &h, "type", "veth", "peer", "name", &p, "netns", &ns,
        ],
    );
    cmd::run("ip", &["link", "set", &h, "master", br]);
    cmd::run("ip", &["link", "set", &h, "up"]);
    let addr = format!("10.200.{n}.{host}/24");
    cmd::run("ip", &["-n", &ns, "addr", "add", &addr, "dev", &p]);
    cmd::run("ip", &["-n", &ns, "link", "set", &p, "up"]);
    cmd::run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
    disable_offloads_in(&[], &h);
    disable_offloads_in(&[&format!("--net=/run/netns/{ns}")], &p);
    guard
}

pub fn bridged(u: &Uniq) -> Bridged {
    let n = free_subnet("10.200");
    let br = u.ifname("br");
    cmd::run("ip", &["link", "add", &br, "type", "bridge"]);
    let mut g = Bridged {
        a: VethNetns {
            ns: String::new(),
            host_if: String::new(),
            peer_if: String::new(),
            host_v4: Ipv4Addr::UNSPECIFIED,
            peer_v4: Ipv4Addr::UNSPECIFIED,
            host_v6: Ipv6Addr::UNSPECIFIED,
            peer_v6: Ipv6Addr::UNSPECIFIED,
        },
        b: VethNetns {
            ns: String::new(),
            host_if: String::new(),
            peer_if: String::new(),
            host_v4: Ipv4Addr::UNSPECIFIED,
            peer_v4: Ipv4Addr::UNSPECIFIED,
            host_v6: Ipv6Addr::UNSPECIFIED,
            peer_v6: Ipv6Addr::UNSPECIFIED,
        },
        br: br.clone(),
    };
    cmd::run(
        "ip",
        &["addr", "add", &format!("10.200.{n}.1/24"), "dev", &br],
    );
    cmd::run("ip", &["link", "set", &br, "up"]);
    g.a = veth_on_bridge(u, "a", &br, n, 2);
    g.b = veth_on_bridge(u, "b", &br, n, 3);
    g
}
