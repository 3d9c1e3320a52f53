//! Sockets that existed before flowlens started: owners from /proc (socket
//! inodes of each process's fds, joined with /proc/<pid>/net/{tcp,udp}{,6} of
//! each network namespace).
//!
//! Listening TCP sockets and unconnected UDP sockets are owners too: a
//! server that already closed a connection's socket (or a UDP server) is
//! still known by the address it listens on. A wildcard address (`0.0.0.0`,
//! `::`) is expanded into the addresses of the socket's own network
//! namespace (`/proc/<pid>/net/fib_trie`, `if_inet6`), so containers that
//! all listen on `:80` are told apart by their addresses.

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use flowlens_correlator::types::{ProcessIdentity, Role, SocketOwnerEvent};

use crate::enrich::{CgroupResolver, ExeCache};

/// Synthetic cookies for /proc-found sockets: the top bit keeps them apart
/// from kernel socket cookies (which count up from 1).
pub const PROC_COOKIE_BIT: u64 = 1 << 63;
/// With [`PROC_COOKIE_BIT`]: a listening (or unconnected UDP) socket at one
/// of its addresses (one cookie per address of a wildcard socket).
pub const PROC_LISTENER_BIT: u64 = 1 << 62;

/// The cookie of a listening socket `inode` at `addr`.
fn listener_cookie(inode: u64, addr: IpAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (inode, addr).hash(&mut h);
    PROC_COOKIE_BIT | PROC_LISTENER_BIT | (h.finish() & (PROC_LISTENER_BIT - 1))
}

/// The local IPv4 addresses of `/proc/<pid>/net/fib_trie` (its `/32 host
/// LOCAL` entries).
pub fn parse_fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = last {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// The addresses of `/proc/<pid>/net/if_inet6`.
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(hex) = line.split_whitespace().next().filter(|h| h.len() == 32) else {
            continue;
        };
        let Ok(v) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let a = Ipv6Addr::from(v);
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The addresses a socket of the network namespace of `pid` can be reached
/// at (loopback only for `own_ns`: other namespaces' loopback traffic never
/// crosses a monitored interface, and would mix with this one's).
fn netns_addrs(pid: u32, own_ns: bool) -> Vec<IpAddr> {
    let read = |f: &str| fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
    parse_fib_trie_locals(&read("fib_trie"))
        .into_iter()
        .map(IpAddr::V4)
        .chain(
            parse_if_inet6(&read("if_inet6"))
                .into_iter()
                .map(IpAddr::V6),
        )
        .filter(|a| own_ns || !a.is_loopback())
        .collect()
}

/// The addresses a socket bound to `local` accepts on: itself, or for a
/// wildcard the namespace's addresses (`::` also takes IPv4: dual stack).
fn bound_addrs(local: IpAddr, ns_addrs: &[IpAddr]) -> Vec<IpAddr> {
    let v4 = |a: &&IpAddr| a.is_ipv4();
    match local {
        IpAddr::V4(a) if a.is_unspecified() => ns_addrs.iter().filter(v4).copied().collect(),
        IpAddr::V6(a) if a.is_unspecified() => ns_addrs.to_vec(),
        other => vec![other],
    }
}

/// One socket line of /proc/net/{tcp,udp}{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSocket {
    /// IP protocol.
    pub proto: u8,
    /// Local address and port.
    pub local: (IpAddr, u16),
    /// Remote address and port.
    pub remote: (IpAddr, u16),
    /// Kernel state (TCP: 1 established, 10 listen; UDP: 7 unconnected, 1 connected).
    pub state: u8,
    /// Socket inode.
    pub inode: u64,
}

fn parse_addr(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(a, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(a.get(i * 8..i * 8 + 8)?, 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Parses one /proc/net/{tcp,udp}{,6} table.
pub fn parse_net_table(text: &str, proto: u8) -> Vec<ProcSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            Some(ProcSocket {
                proto,
                local: parse_addr(f[1])?,
                remote: parse_addr(f[2])?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

fn netns_of(pid: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_string_lossy();
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn status_ids(pid: u32) -> Option<(u32, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u32> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// The v2 cgroup path of a process ("0::/path" line).
pub fn cgroup_v2_path(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// Identity of a running process from /proc.
pub fn process_identity(
    pid: u32,
    cgroups: &mut CgroupResolver,
    exes: &mut ExeCache,
) -> Option<ProcessIdentity> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()?
        .trim_end()
        .to_string();
    let (uid, gid) = status_ids(pid)?;
    let cgroup_path = cgroup_v2_path(pid);
    let cgroup_id = cgroup_path
        .as_deref()
        .and_then(|p| cgroups.remember(p))
        .unwrap_or(0);
    Some(ProcessIdentity {
        pid,
        comm,
        exe: exes.exe(pid),
        uid,
        gid,
        cgroup_id,
        cgroup_path,
    })
}

/// Owner events for every TCP/UDP socket that exists now.
pub fn scan(
    cgroups: &mut CgroupResolver,
    exes: &mut ExeCache,
    now_ns: u64,
) -> Vec<SocketOwnerEvent> {
    let mut inode_owner: HashMap<u64, u32> = HashMap::new();
    let mut netns_pid: HashMap<u64, u32> = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut any = false;
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                if let Ok(inode) = inode.parse::<u64>() {
                    inode_owner.entry(inode).or_insert(pid);
                    any = true;
                }
            }
        }
        if any {
            if let Some(ns) = netns_of(pid) {
                netns_pid.entry(ns).or_insert(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut identities: HashMap<u32, Option<ProcessIdentity>> = HashMap::new();
    let own_ns = netns_of(std::process::id());
    for (ns, pid) in netns_pid {
        let ns_addrs = netns_addrs(pid, own_ns == Some(ns));
        let mut sockets = Vec::new();
        for (file, proto) in [("tcp", 6u8), ("tcp6", 6), ("udp", 17), ("udp6", 17)] {
            if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
                sockets.extend(parse_net_table(&text, proto));
            }
        }
        let listening: HashSet<(IpAddr, u16)> = sockets
            .iter()
            .filter(|s| s.proto == 6 && s.state == 10)
            .map(|s| s.local)
            .collect();
        let listening_ports: HashSet<u16> = listening.iter().map(|l| l.1).collect();
        for s in sockets {
            let Some(owner) = inode_owner.get(&s.inode).copied() else {
                continue;
            };
            let identity = identities
                .entry(owner)
                .or_insert_with(|| process_identity(owner, cgroups, exes))
                .clone();
            let Some(process) = identity else {
                continue;
            };
            let connected = s.remote.1 != 0;
            let listening = s.proto == 6 && s.state == 10;
            if listening || (s.proto == 17 && !connected) {
                // Known by every address it accepts on, one owner each.
                let addrs = bound_addrs(s.local.0, &ns_addrs);
                let addrs = if addrs.is_empty() {
                    vec![s.local.0]
                } else {
                    addrs
                };
                for a in addrs {
                    out.push(SocketOwnerEvent {
                        cookie: listener_cookie(s.inode, a),
                        proto: s.proto,
                        local: (a, s.local.1),
                        remote: None,
                        netns: ns as u32,
                        role: if listening {
                            Role::Server
                        } else {
                            Role::Unknown
                        },
                        process: process.clone(),
                        ts_ns: now_ns,
                    });
                }
                continue;
            }
            let role = if s.proto == 6 {
                if listening_ports.contains(&s.local.1) {
                    Role::Server
                } else {
                    Role::Client
                }
            } else {
                Role::Unknown
            };
            out.push(SocketOwnerEvent {
                cookie: PROC_COOKIE_BIT | s.inode,
                proto: s.proto,
                local: s.local,
                remote: connected.then_some(s.remote),
                netns: ns as u32,
                role,
                process,
                ts_ns: now_ns,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_addresses_and_wildcards() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.200.7.0/24 2 0 2\n        +-- 10.200.7.0/30 2 0 2\n           |-- 10.200.7.0\n              /24 link UNICAST\n           |-- 10.200.7.2\n              /32 host LOCAL\n        |-- 10.200.7.255\n           /32 link BROADCAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n           |-- 10.200.7.2\n              /32 host LOCAL\n";
        let v4 = parse_fib_trie_locals(trie);
        assert_eq!(v4, vec![Ipv4Addr::new(10, 200, 7, 2), Ipv4Addr::LOCALHOST]);
        let inet6 = "fd000200000700000000000000000002 03 40 00 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\nbad line\n";
        let v6 = parse_if_inet6(inet6);
        assert_eq!(
            v6,
            vec![
                "fd00:200:7::2".parse::<Ipv6Addr>().expect("v6"),
                Ipv6Addr::LOCALHOST
            ]
        );
        let ns: Vec<IpAddr> = vec![
            IpAddr::V4(Ipv4Addr::new(10, 200, 7, 2)),
            "fd00:200:7::2".parse().expect("v6"),
        ];
        assert_eq!(
            bound_addrs(IpAddr::V4(Ipv4Addr::UNSPECIFIED), &ns),
            vec![ns[0]]
        );
        assert_eq!(bound_addrs(IpAddr::V6(Ipv6Addr::UNSPECIFIED), &ns), ns);
        let one = IpAddr::V4(Ipv4Addr::new(10, 200, 7, 2));
        assert_eq!(bound_addrs(one, &ns), vec![one]);
        // One cookie per address, all /proc listener cookies.
        let (a, b) = (listener_cookie(7, ns[0]), listener_cookie(7, ns[1]));
        assert_ne!(a, b);
        assert_eq!(
            a & (PROC_COOKIE_BIT | PROC_LISTENER_BIT),
            PROC_COOKIE_BIT | PROC_LISTENER_BIT
        );
    }

    #[test]
    fn parses_proc_net_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 23456 1 0000000000000000 20 4 30 10 -1\n";
        let s = parse_net_table(v4, 6);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080));
        assert_eq!(s[0].state, 10);
        assert_eq!(s[1].remote, (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080));
        assert_eq!(s[1].local.1, 0xC350);
        assert_eq!(s[1].inode, 23456);
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n\
   1: 0000000000000000FFFF00000100007F:0050 0000000000000000FFFF00000200007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1000 1 0000000000000000 100 0 0 10 0\n";
        let s = parse_net_table(v6, 6);
        assert_eq!(s[0].local, (IpAddr::V6(Ipv6Addr::LOCALHOST), 22));
        assert_eq!(s[1].local, (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 80));
        assert_eq!(
            s[1].remote,
            (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0xD431)
        );
        assert!(parse_net_table("header\ngarbage line\n", 6).is_empty());
    }
}
