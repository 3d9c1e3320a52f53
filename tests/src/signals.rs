//! Helpers of the golden-signal tests: the records of one conversation,
//! sums and values of their signal fields, the kernel's own retransmit count
//! of a namespace, and iptables rules removed on drop.

use std::net::IpAddr;
use std::process::Command;

use serde_json::Value;

/// Records of one conversation (protocol, client port, server address and port).
pub fn records_of<'a>(
    recs: &'a [Value],
    proto: &str,
    cport: u16,
    server: (IpAddr, u16),
) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| {
            r["proto"] == proto
                && r["client"]["port"] == cport
                && r["server"]["port"] == server.1
                && r["server"]["addr"] == server.0.to_string()
        })
        .collect()
}

/// The sum of a counter over records (absent = 0).
pub fn sum(rs: &[&Value], key: &str) -> u64 {
    rs.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum()
}

/// The values a key takes over the records (absent ones skipped).
pub fn values<'a>(rs: &[&'a Value], key: &str) -> Vec<&'a Value> {
    rs.iter()
        .map(|r| &r[key])
        .filter(|v| !v.is_null())
        .collect()
}

/// The values of an integer key over the records (absent ones skipped).
pub fn u64s(rs: &[&Value], key: &str) -> Vec<u64> {
    values(rs, key).iter().filter_map(|v| v.as_u64()).collect()
}

/// The records, one JSON line each (for assertion messages).
pub fn dump(rs: &[&Value]) -> String {
    rs.iter().map(|r| format!("{r}\n")).collect()
}

/// The mean of `avg_key` over records, weighted by `weight_key` (a record's
/// mean over its samples): the mean over all samples. `None` without samples.
/// (For DNS latency the weight is `dns_responses`: a response counted at an
/// interval's end may give its latency in the next record, so this is close,
/// not exact, when a conversation spans records.)
pub fn weighted_mean(rs: &[&Value], avg_key: &str, weight_key: &str) -> Option<u64> {
    let (mut total, mut n) = (0u64, 0u64);
    for r in rs {
        if let (Some(avg), Some(w)) = (r[avg_key].as_u64(), r[weight_key].as_u64()) {
            total += avg * w;
            n += w;
        }
    }
    (n > 0).then(|| total / n)
}

/// The kernel's TcpRetransSegs in namespace `ns`.
pub fn retrans_segs(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nstat", "-az", "TcpRetransSegs"])
        .output()
        .expect("nstat (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("TcpRetransSegs"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpRetransSegs in nstat output:\n{text}"))
}

/// An iptables rule (in a namespace, or the root one), removed on drop.
pub struct Rule {
    ns: Option<String>,
    spec: Vec<String>,
}

impl Rule {
    /// `iptables -A <spec>` in `ns` (the root namespace when `None`).
    pub fn add(ns: Option<&str>, spec: &[&str]) -> Rule {
        let r = Rule {
            ns: ns.map(str::to_owned),
            spec: spec.iter().map(|s| (*s).to_owned()).collect(),
        };
        r.run("-A");
        r
    }

    fn run(&self, op: &str) -> bool {
        let mut c = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "iptables"]);
                c
            }
            None => Command::new("iptables"),
        };
        c.arg(op).args(&self.spec);
        let ok = c.status().is_ok_and(|s| s.success());
        assert!(ok || op == "-D", "iptables {op} {:?} failed", self.spec);
        ok
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        self.run("-D");
    }
}
