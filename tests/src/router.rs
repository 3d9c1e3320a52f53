//! The root namespace as a router between two namespaces, with NAT rules in
//! an nftables table of the scenario's own. Forwarding is switched on for the
//! two host-side veths only (`net.ipv4.conf.<if>.forwarding`), never globally,
//! so concurrent tests and the host are not affected; the table is deleted on
//! drop (the veths go with their guards).

use crate::cgroup::FakeContainer;
use crate::cmd;
use crate::names::Uniq;
use crate::netns::VethNetns;

/// Two namespaces ("a" for clients, "b" for servers), each a fake container,
/// routed through the root namespace.
pub struct Router {
    /// A container in `a`.
    pub ctr_a: FakeContainer,
    /// A container in `b`.
    pub ctr_b: FakeContainer,
    /// The client side.
    pub a: VethNetns,
    /// The server side.
    pub b: VethNetns,
    /// The second scenario prefix (names of `b`), checked for leftovers
    /// after everything above is dropped (fields drop in order).
    pub uniq_b: LeftoverCheck,
}

/// Reports what a second prefix left behind when dropped.
pub struct LeftoverCheck(pub Uniq);

impl Drop for LeftoverCheck {
    fn drop(&mut self) {
        let left = crate::leftovers::leftovers(&self.0);
        if !left.is_empty() {
            crate::defer_failure(format!("second namespace left behind {left:?}"));
        }
    }
}

impl Router {
    /// Both namespaces, default routes through the host, forwarding on their veths.
    pub fn new(u: &Uniq) -> Self {
        let uniq_b = Uniq::new();
        let a = VethNetns::new(u);
        let b = VethNetns::new(&uniq_b);
        for (net, gw) in [(&a, a.host_v4), (&b, b.host_v4)] {
            let gw = gw.to_string();
            cmd::run(
                "ip",
                &["-n", &net.ns, "route", "add", "default", "via", &gw],
            );
            forwarding(&net.host_if, true);
        }
        let ctr_a = FakeContainer::new(u, &a);
        let ctr_b = FakeContainer::new(&uniq_b, &b);
        Router {
            a,
            b,
            ctr_a,
            ctr_b,
            uniq_b: LeftoverCheck(uniq_b),
        }
    }
}

/// Per-interface IPv4 forwarding.
pub fn forwarding(iface: &str, on: bool) {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
    std::fs::write(&path, if on { "1" } else { "0" }).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// An nftables table `ip <name>` with NAT chains; deleted on drop.
pub struct NatRules {
    /// Table name.
    pub table: String,
}

impl NatRules {
    /// An empty table with prerouting (DNAT) and postrouting (SNAT) NAT chains.
    pub fn new(u: &Uniq) -> Self {
        let table = format!("{u}nat");
        let guard = NatRules { table };
        let t = guard.table.as_str();
        cmd::run("nft", &["add", "table", "ip", t]);
        cmd::run(
            "nft",
            &[
                "add",
                "chain",
                "ip",
                t,
                "pre",
                "{",
                "type",
                "nat",
                "hook",
                "prerouting",
                "priority",
                "-100",
                ";",
                "}",
            ],
        );
        cmd::run(
            "nft",
            &[
                "add",
                "chain",
                "ip",
                t,
                "post",
                "{",
                "type",
                "nat",
                "hook",
                "postrouting",
                "priority",
                "100",
                ";",
                "}",
            ],
        );
        guard
    }

    /// Masquerade what leaves through `oif`.
    pub fn masquerade(&self, oif: &str) {
        cmd::run(
            "nft",
            &[
                "add",
                "rule",
                "ip",
                &self.table,
                "post",
                "oifname",
                oif,
                "masquerade",
            ],
        );
    }

    /// A published port: `proto` to `addr:port` arriving on `iif` goes to `to`.
    pub fn publish(&self, iif: &str, proto: &str, addr: &str, port: u16, to: &str) {
        let port = port.to_string();
        cmd::run(
            "nft",
            &[
                "add",
                "rule",
                "ip",
                &self.table,
                "pre",
                "iifname",
                iif,
                "ip",
                "daddr",
                addr,
                proto,
                "dport",
                &port,
                "dnat",
                "to",
                to,
            ],
        );
    }
}

impl Drop for NatRules {
    fn drop(&mut self) {
        cmd::run_quiet("nft", &["delete", "table", "ip", &self.table]);
    }
}
