//! Cost of the golden-signal programs (signals.bpf.c) per packet and per
//! event, each beside an empty program of the same type on the same hook
//! (bench_empty.bpf.c: "the same programs without the new work"), measured
//! in the same run, interleaved round by round (the order alternates).
//!
//! - **Per packet, `BPF_PROG_TEST_RUN`**: `flowlens_dns_egress` /
//!   `flowlens_dns_ingress` (cgroup_skb) on packets that are not DNS (the
//!   common case: TCP and UDP to other ports, IPv4 and IPv6, a TCP segment of
//!   port 53 without payload) and on DNS packets (a 40-byte query: a small
//!   record; a 512-byte answer: a large record), `repeat` runs of one frame;
//!   the kernel reports the mean ns per run. The DNS cases reserve, fill and
//!   submit a ring-buffer record per run: the ring is drained between test
//!   runs (chunks of 8,192) and the counters must show exactly one copy per
//!   run and none lost, else the benchmark fails.
//! - **Per event, live (`BPF_ENABLE_STATS`: run_time_ns / run_cnt)**: the
//!   signal programs attached as the collector attaches them
//!   (`signals_loader::load_signals_object`: sockops and cgroup_skb on the
//!   cgroup v2 root, tp_btf `tcp_retransmit_skb`, `inet_sock_set_state`,
//!   `tcp_send_reset`, `tcp_receive_reset`) during workloads on the loopback
//!   of a private network namespace (made by this process, gone when it
//!   exits; `lo` with a 1,500-byte MTU): short TCP connections; one bulk
//!   transfer through an iptables rule dropping 5 % of its segments (retransmits); refused connects and
//!   aborts with SO_LINGER 0 (resets); steady UDP to another port and DNS
//!   exchanges with port 53. Rounds rotate none / signals / empty programs;
//!   the counts are system-wide (other tenants' packets and sockets count
//!   too, in both the measured and the empty rounds).
//!
//! `signal-costs [--repeat=N] [--rounds=N] [--conns=N] [--bulk-mib=N]
//!  [--resets=N] [--datagrams=N] [--smoke] [--no-header]`. Needs root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        links::CgroupAttachMode, BtfTracePoint, CgroupSkb, CgroupSkbAttachType, SockOps, TestRun,
        TestRunOptions,
    },
    sys::{enable_stats, Stats},
    Btf, Ebpf, EbpfLoader,
};
use flowlens_bench::{
    arg_u64, bench_empty, frames, median, pin_to_cpu, print_table, smoke_requested, Row,
    BENCH_EMPTY_OBJ,
};
use flowlens_collector::signals_loader::{load_signals_object, SignalOptions};
use flowlens_ebpf::{
    abi::{CNT_DNS_MESSAGES, CNT_DNS_RINGBUF_FULL, CNT_SIG_RINGBUF_FULL},
    signals, SIGNALS_OBJ,
};

/// Ring-buffer bytes of the measured objects: room for every record one
/// chunk of test runs or one live workload makes.
const RING_BYTES: u32 = 32 << 20;
/// Test runs per syscall on a DNS frame (one record each), then a drain.
const DNS_CHUNK: u32 = 8_192;

fn counter(bpf: &Ebpf, idx: u32) -> anyhow::Result<u64> {
    let c: PerCpuArray<_, u64> =
        PerCpuArray::try_from(bpf.map(signals::MAP_COUNTERS).context("counters")?)?;
    Ok(c.get(&idx, 0)?.iter().sum())
}

fn drain(ring: &mut RingBuf<MapData>) -> u64 {
    let mut n = 0;
    while let Some(item) = ring.next() {
        drop(item);
        n += 1;
    }
    n
}

/// ns over the floor and the ratio, as one cell: "1.23× (+4.5 ns)".
fn ratio_cell(ns: f64, floor: f64) -> String {
    format!("{:.2}× ({:+.1} ns)", ns / floor.max(1e-9), ns - floor)
}

// ---------------------------------------------------------------------------
// Per packet: BPF_PROG_TEST_RUN of the DNS copy programs.

struct TestRunObjects {
    signals: Ebpf,
    empty: Ebpf,
    ring: RingBuf<MapData>,
}

impl TestRunObjects {
    fn load() -> anyhow::Result<Self> {
        let btf = Btf::from_sys_fs().context("kernel BTF")?;
        let mut sig = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries(signals::MAP_EVENTS, RING_BYTES)
            .load(SIGNALS_OBJ)
            .context("loading signals.bpf.o (needs root)")?;
        let mut empty = EbpfLoader::new()
            .btf(Some(&btf))
            .load(BENCH_EMPTY_OBJ)
            .context("loading bench_empty.bpf.o")?;
        let load = |bpf: &mut Ebpf, names: [&str; 2]| -> anyhow::Result<()> {
            for name in names {
                let p: &mut CgroupSkb = bpf
                    .program_mut(name)
                    .context(name.to_string())?
                    .try_into()?;
                p.load().with_context(|| format!("loading {name}"))?;
            }
            Ok(())
        };
        load(
            &mut sig,
            [signals::PROG_DNS_EGRESS, signals::PROG_DNS_INGRESS],
        )?;
        load(
            &mut empty,
            [
                bench_empty::CGROUP_SKB_EGRESS,
                bench_empty::CGROUP_SKB_INGRESS,
            ],
        )?;
        let ring = RingBuf::try_from(sig.take_map(signals::MAP_EVENTS).context("ring")?)?;
        Ok(Self {
            signals: sig,
            empty,
            ring,
        })
    }

    /// Mean ns per run of `repeat` runs of `prog` on `frame`, in chunks of
    /// [`DNS_CHUNK`] with a drain of the ring between them.
    fn run(&mut self, empty: bool, prog: &str, frame: &[u8], repeat: u32) -> anyhow::Result<f64> {
        let bpf = if empty { &self.empty } else { &self.signals };
        let p: &CgroupSkb = bpf.program(prog).context("program")?.try_into()?;
        let (mut left, mut ns) = (repeat, 0u64);
        while left > 0 {
            let n = left.min(DNS_CHUNK);
            let r = p.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: n,
                ..Default::default()
            })?;
            if r.return_value != 1 {
                bail!(
                    "{prog}: verdict {} (every packet must pass)",
                    r.return_value
                );
            }
            ns += u64::try_from(r.duration.as_nanos()).unwrap_or(u64::MAX) * u64::from(n);
            left -= n;
            drain(&mut self.ring);
        }
        Ok(ns as f64 / f64::from(repeat.max(1)))
    }
}

fn per_packet_rows(repeat: u32, rounds: u64) -> anyhow::Result<Vec<Row>> {
    let mut objs = TestRunObjects::load()?;
    let a = [10, 0, 0, 1];
    let b = [10, 0, 0, 2];
    // (case, frame, DNS copies per run)
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        (
            "not DNS: TCP/IPv4 64 B to port 443",
            frames::ipv4(frames::TCP, a, b, 40000, 443, 64),
            0,
        ),
        (
            "not DNS: TCP/IPv4 1500 B to port 443",
            frames::ipv4(frames::TCP, a, b, 40000, 443, 1514),
            0,
        ),
        (
            "not DNS: UDP/IPv4 64 B to port 443",
            frames::ipv4(frames::UDP, a, b, 40000, 443, 64),
            0,
        ),
        (
            "not DNS: TCP/IPv6 74 B to port 443",
            frames::ipv6(frames::TCP, [0xfd; 16], [0xfe; 16], 40000, 443, 74),
            0,
        ),
        (
            "not DNS: TCP/IPv4 port 53 without payload (ACK)",
            frames::ipv4(frames::TCP, a, b, 40000, 53, 54),
            0,
        ),
        (
            "DNS: UDP/IPv4 query, 40 B message (small record)",
            frames::ipv4(frames::UDP, a, b, 40000, 53, 14 + 20 + 8 + 40),
            1,
        ),
        (
            "DNS: UDP/IPv4 answer, 512 B message (large record)",
            frames::ipv4(frames::UDP, b, a, 53, 40000, 14 + 20 + 8 + 512),
            1,
        ),
    ];
    let progs = [
        (
            "egress",
            signals::PROG_DNS_EGRESS,
            bench_empty::CGROUP_SKB_EGRESS,
        ),
        (
            "ingress",
            signals::PROG_DNS_INGRESS,
            bench_empty::CGROUP_SKB_INGRESS,
        ),
    ];
    let mut res: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); cases.len() * 2];
    let copies_before = counter(&objs.signals, CNT_DNS_MESSAGES)?;
    let lost_before = counter(&objs.signals, CNT_DNS_RINGBUF_FULL)?;
    let mut copies_wanted = 0u64;
    for round in 0..rounds {
        for (ci, (_, frame, copies)) in cases.iter().enumerate() {
            for (pi, (_, prog, empty_prog)) in progs.iter().enumerate() {
                let slot = &mut res[ci * 2 + pi];
                for empty in [round % 2 == 0, round % 2 == 1] {
                    if empty {
                        slot.1.push(objs.run(true, empty_prog, frame, repeat)?);
                    } else {
                        slot.0.push(objs.run(false, prog, frame, repeat)?);
                        copies_wanted += copies * u64::from(repeat);
                    }
                }
            }
        }
    }
    let copies = counter(&objs.signals, CNT_DNS_MESSAGES)? - copies_before;
    let lost = counter(&objs.signals, CNT_DNS_RINGBUF_FULL)? - lost_before;
    if copies == 0 && copies_wanted > 0 {
        // 5.10 to 6.12 (measured in the kernel matrix) give a cgroup_skb test
        // run no packet pointers: every case would time the early return.
        return Ok(vec![Row {
            section: "signals",
            case: "DNS copy programs per packet (test run): not measurable on this kernel, its cgroup_skb test runs give programs no packet data; the live rows measure the same programs".into(),
            value: String::new(),
            baseline: String::new(),
            ratio: String::new(),
            goal: String::new(),
        }]);
    }
    if copies != copies_wanted || lost != 0 {
        bail!("DNS copies {copies}, expected {copies_wanted}; lost to a full ring {lost}: the measured path is not the one described");
    }
    let mut rows = Vec::new();
    for (ci, (case, _, _)) in cases.iter().enumerate() {
        for (pi, (dir, prog, _)) in progs.iter().enumerate() {
            let (f, e) = (median(&res[ci * 2 + pi].0), median(&res[ci * 2 + pi].1));
            rows.push(Row {
                section: "signals",
                case: format!(
                    "{prog} (cgroup_skb {dir}) per packet, {case} (test run, repeat {repeat})"
                ),
                value: format!("{f:.1} ns/pkt"),
                baseline: format!("empty cgroup_skb {e:.1} ns/pkt"),
                ratio: ratio_cell(f, e),
                goal: String::new(),
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Per event: live workloads, bpf_stats.

/// The loopback port whose TCP segments iptables drops at 5 %.
const LOSSY_PORT: u16 = 7101;

/// Moves this process's threads made from now on (and its children) into a
/// new network namespace with `lo` up and the lossy port's drop rule. The
/// namespace goes away with the process, however it exits.
fn private_netns() -> anyhow::Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; it affects the
    // calling thread, which spawns every workload thread afterwards.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET) (needs root)");
    }
    let run = |cmd: &str, args: &[&str]| -> anyhow::Result<()> {
        let st = std::process::Command::new(cmd)
            .args(args)
            .status()
            .with_context(|| format!("running {cmd} (apt-get install iproute2 iptables)"))?;
        if !st.success() {
            bail!("{cmd} {args:?}: {st}");
        }
        Ok(())
    };
    run("ip", &["link", "set", "lo", "mtu", "1500", "up"])?;
    let port = LOSSY_PORT.to_string();
    run(
        "iptables",
        &[
            // INPUT: a segment dropped on OUTPUT is an error to the sender
            // (not sent, no retransmit); on INPUT it is lost on the way.
            "-A",
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.05",
            "-j",
            "DROP",
        ],
    )?;
    Ok(())
}

#[derive(Clone, Copy)]
struct Sizes {
    conns: u64,
    bulk_bytes: u64,
    resets: u64,
    datagrams: u64,
}

/// The parts of the live workload, each measured on its own.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Part {
    Connections,
    Bulk,
    Resets,
    Udp,
    Dns,
}

impl Part {
    const ALL: [Part; 5] = [
        Part::Connections,
        Part::Bulk,
        Part::Resets,
        Part::Udp,
        Part::Dns,
    ];

    fn describe(self, s: Sizes) -> String {
        match self {
            Part::Connections => format!(
                "{} loopback TCP connections (connect, 100 B each way, close)",
                s.conns
            ),
            Part::Bulk => format!(
                "one TCP transfer of {} MiB with 5 % of segments dropped",
                s.bulk_bytes >> 20
            ),
            Part::Resets => format!(
                "{} refused connects + {} aborts (SO_LINGER 0)",
                s.resets, s.resets
            ),
            Part::Udp => format!(
                "{} × (send + recv 64 B) on a connected UDP pair, port 9999",
                s.datagrams
            ),
            Part::Dns => format!(
                "{} DNS exchanges over UDP port 53 (40 B query, 120 B answer)",
                s.datagrams / 4
            ),
        }
    }

    fn run(self, s: Sizes) -> anyhow::Result<Duration> {
        let start = Instant::now();
        match self {
            Part::Connections => connections(s.conns)?,
            Part::Bulk => bulk(s.bulk_bytes)?,
            Part::Resets => resets(s.resets)?,
            Part::Udp => udp(9999, 64, 64, s.datagrams)?,
            Part::Dns => udp(53, 40, 120, s.datagrams / 4)?,
        }
        Ok(start.elapsed())
    }
}

fn connections(n: u64) -> anyhow::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..n {
            let mut s = l.accept()?.0;
            let mut b = [0u8; 100];
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
        Ok(())
    });
    for _ in 0..n {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(&[7u8; 100])?;
        let mut b = [0u8; 100];
        s.read_exact(&mut b)?;
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread"))??;
    Ok(())
}

fn bulk(bytes: u64) -> anyhow::Result<()> {
    let l = TcpListener::bind(("127.0.0.1", LOSSY_PORT))?;
    let server = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut s = l.accept()?.0;
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let mut c = TcpStream::connect(("127.0.0.1", LOSSY_PORT))?;
    let chunk = vec![1u8; 1 << 16];
    let mut sent = 0u64;
    while sent < bytes {
        let n = usize::try_from((bytes - sent).min(chunk.len() as u64))?;
        c.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    c.shutdown(Shutdown::Write)?;
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("bulk server thread"))??;
    if got != bytes {
        bail!("bulk transfer: {got} of {bytes} bytes received");
    }
    Ok(())
}

fn resets(n: u64) -> anyhow::Result<()> {
    // A port nothing listens on: bind a listener, note its port, close it.
    let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    for _ in 0..n {
        match TcpStream::connect(closed) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => bail!("connect to a closed port: {other:?}"),
        }
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..n {
            let mut s = l.accept()?.0;
            let mut b = [0u8; 1];
            // The client aborts: a reset, read as an error or as EOF.
            let _ = s.read(&mut b);
        }
        Ok(())
    });
    for _ in 0..n {
        let s = TcpStream::connect(addr)?;
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads exactly size_of::<linger>() bytes from a
        // live local; the fd is open for the call.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::linger>())?,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("SO_LINGER");
        }
        drop(s); // close with linger 0: RST
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("reset server thread"))??;
    Ok(())
}

/// `n` request/answer exchanges between two connected UDP sockets, the
/// server on `port` (53: DNS to the programs; the payload is not parsed in
/// the kernel, only copied).
fn udp(port: u16, req: usize, ans: usize, n: u64) -> anyhow::Result<()> {
    let server = UdpSocket::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    server.connect(client.local_addr()?)?;
    let (q, a) = (vec![0u8; req], vec![0u8; ans]);
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        client.send(&q)?;
        server.recv(&mut buf)?;
        server.send(&a)?;
        client.recv(&mut buf)?;
    }
    Ok(())
}

type Stats2 = BTreeMap<&'static str, (u64, u64)>;

fn stats_of(bpf: &Ebpf, names: &[&'static str]) -> anyhow::Result<Stats2> {
    let mut m = BTreeMap::new();
    for &name in names {
        let info = bpf.program(name).context(name)?.info()?;
        let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        m.insert(name, (ns, info.run_count()));
    }
    Ok(m)
}

fn add_delta(into: &mut Stats2, before: &Stats2, after: &Stats2) {
    for (name, (ns, cnt)) in after {
        let (ns0, cnt0) = before.get(name).copied().unwrap_or((0, 0));
        let e = into.entry(name).or_insert((0, 0));
        e.0 += ns.saturating_sub(ns0);
        e.1 += cnt.saturating_sub(cnt0);
    }
}

/// The empty programs of bench_empty.bpf.o on the signal programs' hooks,
/// attached the way `signals_loader` attaches the real ones.
fn load_empty_signal_hooks() -> anyhow::Result<Ebpf> {
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    let mut bpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(BENCH_EMPTY_OBJ)
        .context("loading bench_empty.bpf.o")?;
    let root = std::fs::File::open(
        flowlens_collector::enrich::cgroup2_mount().context("cgroup v2 mount")?,
    )?;
    for (empty, real, tp) in bench_empty::SIGNAL_HOOKS {
        if let Some(tp) = tp {
            let p: &mut BtfTracePoint = bpf.program_mut(empty).context(empty)?.try_into()?;
            p.load(tp, &btf)
                .with_context(|| format!("loading {empty}"))?;
            p.attach()?;
        } else if real == signals::PROG_SOCKOPS {
            let p: &mut SockOps = bpf.program_mut(empty).context(empty)?.try_into()?;
            p.load()?;
            p.attach(&root, CgroupAttachMode::Single)?;
        } else {
            let kind = if real == signals::PROG_DNS_EGRESS {
                CgroupSkbAttachType::Egress
            } else {
                CgroupSkbAttachType::Ingress
            };
            let p: &mut CgroupSkb = bpf.program_mut(empty).context(empty)?.try_into()?;
            p.load()?;
            p.attach(&root, kind, CgroupAttachMode::Single)?;
        }
    }
    Ok(bpf)
}

#[derive(Default)]
struct LiveResults {
    /// (part, program) -> (ns, runs) of the signal programs.
    signals: BTreeMap<(Part, &'static str), (u64, u64)>,
    /// (part, signal program it stands beside) -> (ns, runs) of the empty ones.
    empty: BTreeMap<(Part, &'static str), (u64, u64)>,
    /// part -> wall seconds per round: none, signals, empty programs.
    wall: BTreeMap<Part, [Vec<f64>; 3]>,
    events: u64,
}

fn per_event_rows(rounds: u64, sizes: Sizes) -> anyhow::Result<Vec<Row>> {
    private_netns()?;
    let _stats_fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (needs root)")?;
    let real: Vec<&'static str> = bench_empty::SIGNAL_HOOKS.iter().map(|h| h.1).collect();
    let empties: Vec<&'static str> = bench_empty::SIGNAL_HOOKS.iter().map(|h| h.0).collect();
    let beside = |empty: &str| {
        bench_empty::SIGNAL_HOOKS
            .iter()
            .find(|h| h.0 == empty)
            .map(|h| h.1)
    };
    for p in Part::ALL {
        p.run(Sizes {
            conns: sizes.conns / 10 + 1,
            bulk_bytes: 1 << 20,
            resets: sizes.resets / 10 + 1,
            datagrams: sizes.datagrams / 10 + 4,
        })?; // warm-up
    }
    let mut r = LiveResults::default();
    for round in 0..rounds {
        for phase in 0..3 {
            match (phase + round) % 3 {
                0 => {
                    for p in Part::ALL {
                        let t = p.run(sizes)?.as_secs_f64();
                        r.wall.entry(p).or_default()[0].push(t);
                    }
                }
                1 => {
                    let (mut bpf, hooks) = load_signals_object(SignalOptions {
                        max_sockets: 65_536,
                        ringbuf_bytes: RING_BYTES,
                    })
                    .context("loading the signal programs")?;
                    if !hooks.missing.is_empty() {
                        bail!("signal hooks missing on this kernel: {:?}", hooks.missing);
                    }
                    let lost0 =
                        counter(&bpf, CNT_DNS_RINGBUF_FULL)? + counter(&bpf, CNT_SIG_RINGBUF_FULL)?;
                    let mut ring: RingBuf<MapData> =
                        RingBuf::try_from(bpf.take_map(signals::MAP_EVENTS).context("ring")?)?;
                    for p in Part::ALL {
                        let before = stats_of(&bpf, &real)?;
                        let t = p.run(sizes)?.as_secs_f64();
                        let after = stats_of(&bpf, &real)?;
                        r.events += drain(&mut ring);
                        r.wall.entry(p).or_default()[1].push(t);
                        let mut d = Stats2::new();
                        add_delta(&mut d, &before, &after);
                        for (name, v) in d {
                            let e = r.signals.entry((p, name)).or_insert((0, 0));
                            e.0 += v.0;
                            e.1 += v.1;
                        }
                    }
                    let lost = counter(&bpf, CNT_DNS_RINGBUF_FULL)?
                        + counter(&bpf, CNT_SIG_RINGBUF_FULL)?
                        - lost0;
                    if lost != 0 {
                        bail!("{lost} signal events lost to a full ring buffer: the measured path is not the one described");
                    }
                }
                _ => {
                    let bpf = load_empty_signal_hooks()?;
                    for p in Part::ALL {
                        let before = stats_of(&bpf, &empties)?;
                        let t = p.run(sizes)?.as_secs_f64();
                        let after = stats_of(&bpf, &empties)?;
                        r.wall.entry(p).or_default()[2].push(t);
                        let mut d = Stats2::new();
                        add_delta(&mut d, &before, &after);
                        for (name, v) in d {
                            let real = beside(name).context("empty program")?;
                            let e = r.empty.entry((p, real)).or_insert((0, 0));
                            e.0 += v.0;
                            e.1 += v.1;
                        }
                    }
                }
            }
        }
    }
    // Which programs each part is about (the others run too, and are shown
    // where their event is the point of the part).
    const SOCKOPS: (&str, &str) = (signals::PROG_SOCKOPS, "per sockops callback");
    const EGRESS: (&str, &str) = (signals::PROG_DNS_EGRESS, "per packet sent, not DNS");
    const INGRESS: (&str, &str) = (signals::PROG_DNS_INGRESS, "per packet received, not DNS");
    let shown: [(Part, &[(&str, &str)]); 5] = [
        (
            Part::Connections,
            &[
                SOCKOPS,
                (
                    signals::PROG_CLOSE,
                    "per inet_sock_set_state (every transition; works on CLOSE)",
                ),
                EGRESS,
                INGRESS,
            ],
        ),
        (
            Part::Bulk,
            &[
                SOCKOPS,
                (signals::PROG_RETRANSMIT, "per retransmitted segment"),
                EGRESS,
            ],
        ),
        (
            Part::Resets,
            &[
                (signals::PROG_SEND_RESET, "per reset sent"),
                (signals::PROG_RECV_RESET, "per reset received"),
            ],
        ),
        (Part::Udp, &[EGRESS, INGRESS]),
        (
            Part::Dns,
            &[
                (signals::PROG_DNS_EGRESS, "per DNS packet sent (copied)"),
                (
                    signals::PROG_DNS_INGRESS,
                    "per DNS packet received (copied)",
                ),
            ],
        ),
    ];
    let mut rows = Vec::new();
    for (part, progs) in shown {
        for (prog, what) in progs {
            let (ns, cnt) = r.signals.get(&(part, *prog)).copied().unwrap_or((0, 0));
            let (ens, ecnt) = r.empty.get(&(part, *prog)).copied().unwrap_or((0, 0));
            if cnt == 0 || ecnt == 0 {
                rows.push(Row {
                    section: "signals",
                    case: format!("{prog} during {}: not reached", part.describe(sizes)),
                    value: format!("{cnt} runs"),
                    baseline: format!("{ecnt} runs"),
                    ratio: String::new(),
                    goal: String::new(),
                });
                continue;
            }
            let (f, e) = (ns as f64 / cnt as f64, ens as f64 / ecnt as f64);
            rows.push(Row {
                section: "signals",
                case: format!("{prog} ({what}, bpf_stats) during {}", part.describe(sizes)),
                value: format!("{f:.0} ns per run ({cnt} runs)"),
                baseline: format!("empty program {e:.0} ns ({ecnt} runs)"),
                ratio: ratio_cell(f, e),
                goal: String::new(),
            });
        }
    }
    for p in Part::ALL {
        let w = &r.wall[&p];
        let (none, sig, emp) = (median(&w[0]), median(&w[1]), median(&w[2]));
        rows.push(Row {
            section: "signals",
            case: format!("wall time of {}, medians of {rounds}", p.describe(sizes)),
            value: format!("{:.1} ms with the signal programs", sig * 1e3),
            baseline: format!(
                "{:.1} ms without; {:.1} ms with empty programs on the same hooks",
                none * 1e3,
                emp * 1e3
            ),
            ratio: format!(
                "{:.3}× of without, {:.3}× of empty",
                sig / none.max(1e-9),
                sig / emp.max(1e-9)
            ),
            goal: String::new(),
        });
    }
    rows.push(Row {
        section: "signals",
        case: "events read from the signal ring buffer over the live rounds (resets, closed sockets, DNS copies; none lost)".into(),
        value: r.events.to_string(),
        baseline: String::new(),
        ratio: String::new(),
        goal: String::new(),
    });
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let smoke = smoke_requested();
    let repeat = u32::try_from(arg_u64("repeat", if smoke { 1_000 } else { 200_000 }))?;
    let rounds = arg_u64("rounds", if smoke { 1 } else { 5 });
    let sizes = Sizes {
        conns: arg_u64("conns", if smoke { 50 } else { 2_000 }),
        bulk_bytes: arg_u64("bulk-mib", if smoke { 4 } else { 32 }) << 20,
        resets: arg_u64("resets", if smoke { 20 } else { 500 }),
        datagrams: arg_u64("datagrams", if smoke { 200 } else { 20_000 }),
    };
    // The test runs pinned to one CPU (as kernel-progs); the live workloads
    // (client and server threads) free to use both.
    let cpu = usize::try_from(arg_u64("cpu", 1))?;
    let mut rows = std::thread::spawn(move || {
        pin_to_cpu(cpu);
        per_packet_rows(repeat, rounds)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("test-run thread"))??;
    rows.extend(per_event_rows(rounds, sizes)?);
    print_table(&rows, !std::env::args().any(|a| a == "--no-header"));
    Ok(())
}
