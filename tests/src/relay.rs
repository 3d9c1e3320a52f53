//! Delay and loss without netem (this kernel has no netem, tbf or fq qdisc):
//! a userspace relay between two TUN devices, and a routed path through it.
//!
//! [`Relay`] opens two TUN devices (`/dev/net/tun`, `IFF_TUN | IFF_NO_PI`)
//! in the root namespace; the caller moves one into another namespace with
//! `ip link set … netns …` (the open descriptor stays attached). A thread
//! reads the IP packets the stack sends into either device, holds each for
//! the configured one-way delay, drops a chosen share of them, and writes the
//! rest into the other device, where the stack receives them. Dropping the
//! relay stops the thread and closes both descriptors, which removes both
//! devices (they are not persistent), wherever they are.
//!
//! [`RelayedPath`] is the topology of the golden-signal tests: a client
//! namespace joined to the root namespace by a veth pair (flowlens attaches
//! to the host end), the root namespace routing to a server namespace through
//! the relay: the server is two hops from the client, behind the delay.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cgroup::FakeContainer;
use crate::cmd;
use crate::names::{free_subnet, Uniq};
use crate::netns::{kill_netns_processes, VethNetns};
use crate::router::{forwarding, LeftoverCheck};

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// The longest the relay thread sleeps without looking at its stop flag.
const IDLE: Duration = Duration::from_millis(20);

/// Packets of at least `min_len` bytes (IP header included) dropped with
/// probability `share` (0.0 to 1.0), from a fixed-seed generator: the same
/// run of decisions every time, but no pattern TCP could lock onto.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    /// The share of eligible packets dropped.
    pub share: f64,
    /// Shorter packets (handshakes, pure ACKs, pings) always pass.
    pub min_len: usize,
}

impl Loss {
    /// Nothing dropped.
    pub const NONE: Loss = Loss {
        share: 0.0,
        min_len: 0,
    };
}

/// What the relay does to each direction.
#[derive(Clone, Copy, Debug)]
pub struct RelayConfig {
    /// How long every packet is held, each way (the round trip gains twice this).
    pub one_way: Duration,
    /// Loss on the way from the near device (root namespace) to the far one.
    pub loss_to_far: Loss,
    /// Loss on the way back.
    pub loss_to_near: Loss,
}

/// Packets relayed and dropped, by direction (0: to far, 1: to near).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Written into the other device.
    pub relayed: [AtomicU64; 2],
    /// Dropped by the configured loss.
    pub dropped: [AtomicU64; 2],
    /// Writes the other device refused (down, or gone).
    pub write_errors: [AtomicU64; 2],
}

impl RelayStats {
    fn get(a: &[AtomicU64; 2], to_near: bool) -> u64 {
        a[usize::from(to_near)].load(Ordering::Relaxed)
    }

    /// Packets dropped on purpose toward the near (`true`) or far end.
    pub fn dropped(&self, to_near: bool) -> u64 {
        Self::get(&self.dropped, to_near)
    }

    /// Packets relayed toward the near (`true`) or far end.
    pub fn relayed(&self, to_near: bool) -> u64 {
        Self::get(&self.relayed, to_near)
    }

    /// Writes refused toward the near (`true`) or far end.
    pub fn write_errors(&self, to_near: bool) -> u64 {
        Self::get(&self.write_errors, to_near)
    }
}

/// Two TUN devices with a delaying, dropping relay between them.
pub struct Relay {
    /// The device that stays where it was created (the root namespace).
    pub near_if: String,
    /// The device meant to be moved into another namespace.
    pub far_if: String,
    /// Counters of the relay thread.
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const TUN_DEV: &str = "/dev/net/tun";

fn open_tun_dev() -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_DEV)
}

/// `/dev/net/tun`, loading the module and making the node where neither is
/// there yet (the kernel-matrix guests boot with tun as a module and no udev
/// rule run for it).
fn tun_dev() -> std::io::Result<File> {
    match open_tun_dev() {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => return other,
    }
    cmd::run_quiet("modprobe", &["tun"]);
    if !std::path::Path::new(TUN_DEV).exists() {
        // misc device 10:200; opening it loads the module through its alias
        cmd::run_quiet("mkdir", &["-p", "/dev/net"]);
        cmd::run_quiet("mknod", &[TUN_DEV, "c", "10", "200"]);
    }
    open_tun_dev()
}

/// Opens a TUN device named `name` (non-blocking).
fn open_tun(name: &str) -> std::io::Result<File> {
    assert!(name.len() < 16, "interface name {name} too long");
    let file = tun_dev()?;
    // struct ifreq: the name (16 bytes), then ifr_flags in the union.
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes) at the pointer.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

impl Relay {
    /// Creates TUN devices `near_if` and `far_if` (down, no addresses) and
    /// starts relaying between them.
    pub fn start(near_if: &str, far_if: &str, config: RelayConfig) -> Relay {
        let near = open_tun(near_if).unwrap_or_else(|e| panic!("TUN device {near_if}: {e}"));
        let far = open_tun(far_if).unwrap_or_else(|e| panic!("TUN device {far_if}: {e}"));
        let stats = Arc::new(RelayStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&stats), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(format!("relay-{near_if}"))
            .spawn(move || relay_loop([near, far], config, &st, &sp))
            .expect("relay thread");
        Relay {
            near_if: near_if.to_owned(),
            far_if: far_if.to_owned(),
            stats,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                eprintln!("warning: the relay thread of {} panicked", self.near_if);
            }
        }
        // The thread owned the descriptors: both devices are gone with them.
        let gone = cmd::wait_until(Duration::from_secs(5), || {
            crate::netns::ifindex(&self.near_if).is_none()
                && crate::netns::ifindex(&self.far_if).is_none()
        });
        if !gone {
            eprintln!("warning: TUN device {} still exists", self.near_if);
        }
    }
}

/// One direction: packets read from one device, due to be written to the other.
struct Direction {
    queue: VecDeque<(Instant, Vec<u8>)>,
    loss: Loss,
    rng: u64,
}

impl Direction {
    fn drops(&mut self, len: usize) -> bool {
        if self.loss.share <= 0.0 || len < self.loss.min_len {
            return false;
        }
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ((self.rng >> 11) as f64 / (1u64 << 53) as f64) < self.loss.share
    }
}

fn relay_loop(mut devs: [File; 2], config: RelayConfig, stats: &RelayStats, stop: &AtomicBool) {
    // dirs[0]: near -> far, dirs[1]: far -> near (indexed by the source device).
    let mut dirs = [
        Direction {
            queue: VecDeque::new(),
            loss: config.loss_to_far,
            rng: 0x9e37_79b9_7f4a_7c15,
        },
        Direction {
            queue: VecDeque::new(),
            loss: config.loss_to_near,
            rng: 0xd1b5_4a32_d192_ed03,
        },
    ];
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (src, dir) in dirs.iter_mut().enumerate() {
            while dir.queue.front().is_some_and(|(due, _)| *due <= now) {
                let Some((_, pkt)) = dir.queue.pop_front() else {
                    break;
                };
                let dst = &mut devs[1 - src];
                // A TUN write takes the whole packet or fails.
                match dst.write(&pkt) {
                    Ok(n) if n == pkt.len() => stats.relayed[src].fetch_add(1, Ordering::Relaxed),
                    _ => stats.write_errors[src].fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        let next_due = dirs
            .iter()
            .filter_map(|d| d.queue.front().map(|(due, _)| *due))
            .min();
        let wait = next_due.map_or(IDLE, |due| due.saturating_duration_since(now).min(IDLE));
        let mut fds = [
            libc::pollfd {
                fd: devs[0].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: devs[1].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of 2 pollfd; ts outlives the call; no sigmask.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if n <= 0 {
            continue;
        }
        for (src, pfd) in fds.iter().enumerate() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                match devs[src].read(&mut buf) {
                    Ok(0) => break,
                    Ok(len) => {
                        let dir = &mut dirs[src];
                        if dir.drops(len) {
                            stats.dropped[src].fetch_add(1, Ordering::Relaxed);
                        } else {
                            let due = Instant::now() + config.one_way;
                            dir.queue.push_back((due, buf[..len].to_vec()));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break, // WouldBlock: all read
                }
            }
        }
    }
}

/// A namespace with nothing in it yet; dropping it kills what runs there and
/// deletes it.
pub struct Netns {
    /// Its name (as in `ip netns list`).
    pub name: String,
}

impl Netns {
    /// `ip netns add <name>`, loopback up.
    pub fn new(name: &str) -> Netns {
        cmd::run("ip", &["netns", "add", name]);
        let guard = Netns {
            name: name.to_owned(),
        };
        cmd::run("ip", &["-n", name, "link", "set", "lo", "up"]);
        guard
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_netns_processes(&self.name);
        cmd::run_quiet("ip", &["netns", "del", &self.name]);
    }
}

/// Client namespace `a` —veth— root namespace —relay (TUN)— server
/// namespace `b`. The client reaches the server's addresses through the root
/// namespace (forwarding on for the host veth and the near TUN device only),
/// so every packet between them crosses `a.host_if` (where flowlens
/// attaches) and the relay. Fields drop in order: processes first, then the
/// relay (both TUN devices), the namespaces, and the leftover check of `b`'s
/// names.
pub struct RelayedPath {
    /// Processes on the client side (namespace `a`, a docker-style cgroup).
    pub ctr_a: FakeContainer,
    /// Processes on the server side (namespace `b`).
    pub ctr_b: FakeContainer,
    /// The relay; `near_if` in the root namespace, `far_if` in `b`.
    pub relay: Relay,
    /// The server namespace.
    pub b: Netns,
    /// The client namespace and its veth pair.
    pub a: VethNetns,
    /// The server addresses (on `far_if` in `b`), all reached from `a`
    /// through the relay.
    pub servers: Vec<Ipv4Addr>,
    /// The root namespace's address on `near_if`.
    pub near_v4: Ipv4Addr,
    _uniq_b: LeftoverCheck,
}

impl RelayedPath {
    /// Builds it with `extra_addrs` + 1 server addresses (`10.201.<m>.2`, `.3`, …).
    pub fn new(u: &Uniq, config: RelayConfig, extra_addrs: u8) -> RelayedPath {
        let uniq_b = LeftoverCheck(Uniq::new());
        let a = VethNetns::new(u);
        let gw = a.host_v4.to_string();
        cmd::run("ip", &["-n", &a.ns, "route", "add", "default", "via", &gw]);
        forwarding(&a.host_if, true);
        let b = Netns::new(uniq_b.0.as_str());
        let m = free_subnet("10.201");
        let near_v4 = Ipv4Addr::new(10, 201, m, 1);
        let relay = Relay::start(&u.ifname("tn"), &u.ifname("tf"), config);
        let (near, far) = (relay.near_if.clone(), relay.far_if.clone());
        cmd::run("ip", &["link", "set", &far, "netns", &b.name]);
        cmd::run(
            "ip",
            &["addr", "add", &format!("{near_v4}/24"), "dev", &near],
        );
        cmd::run("ip", &["link", "set", &near, "up"]);
        forwarding(&near, true);
        let servers: Vec<Ipv4Addr> = (0..=extra_addrs)
            .map(|i| Ipv4Addr::new(10, 201, m, 2 + i))
            .collect();
        for s in &servers {
            let addr = format!("{s}/24");
            cmd::run("ip", &["-n", &b.name, "addr", "add", &addr, "dev", &far]);
        }
        cmd::run("ip", &["-n", &b.name, "link", "set", &far, "up"]);
        let near_s = near_v4.to_string();
        cmd::run(
            "ip",
            &["-n", &b.name, "route", "add", "default", "via", &near_s],
        );
        let ctr_a = FakeContainer::new(u, &a);
        let ctr_b = FakeContainer::in_netns(&uniq_b.0, &b.name);
        RelayedPath {
            ctr_a,
            ctr_b,
            relay,
            b,
            a,
            servers,
            near_v4,
            _uniq_b: uniq_b,
        }
    }

    /// `ping` from the client namespace to `to` (`count` echoes, 0.1 s
    /// apart): min, avg, max round-trip time in microseconds.
    pub fn ping(&self, to: Ipv4Addr, count: u32) -> (u64, u64, u64) {
        let (to, count) = (to.to_string(), count.to_string());
        let out = cmd::run(
            "ip",
            &[
                "netns", "exec", &self.a.ns, "ping", "-n", "-q", "-c", &count, "-i", "0.1", &to,
            ],
        );
        parse_ping(&out).unwrap_or_else(|| panic!("no rtt line in ping's output:\n{out}"))
    }
}

/// `rtt min/avg/max/mdev = 40.1/40.5/41.2/0.3 ms` -> (min, avg, max) in µs.
pub fn parse_ping(out: &str) -> Option<(u64, u64, u64)> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    let values = line.split('=').nth(1)?.split_whitespace().next()?;
    let us: Vec<u64> = values
        .split('/')
        .take(3)
        .map(|v| v.parse::<f64>().map(|ms| (ms * 1000.0).round() as u64))
        .collect::<Result<_, _>>()
        .ok()?;
    (us.len() == 3).then(|| (us[0], us[1], us[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_parses() {
        let out = "--- 10.1.1.2 ping statistics ---\n10 packets transmitted, 10 received, 0% packet loss, time 905ms\nrtt min/avg/max/mdev = 40.112/40.587/41.903/0.512 ms\n";
        assert_eq!(parse_ping(out), Some((40_112, 40_587, 41_903)));
        assert_eq!(parse_ping("100% packet loss\n"), None);
    }

    #[test]
    fn loss_drops_about_the_share_of_long_packets_only() {
        let mut d = Direction {
            queue: VecDeque::new(),
            loss: Loss {
                share: 0.05,
                min_len: 1000,
            },
            rng: 0x9e37_79b9_7f4a_7c15,
        };
        assert!((0..1000).all(|_| !d.drops(999)));
        let dropped = (0..10_000).filter(|_| d.drops(1500)).count();
        assert!((400..600).contains(&dropped), "{dropped} of 10000");
    }
}
