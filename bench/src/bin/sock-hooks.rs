//! Cost of the socket and process hooks (sock.bpf.o) per event, from the
//! kernel's own accounting (BPF_ENABLE_STATS: run_time_ns / run_cnt per
//! program), while a workload of loopback TCP connections (connect, send,
//! recv, accept, close) and fork+exec of /bin/true runs; and the workload's
//! wall time with the hooks attached against the same workload without them,
//! interleaved round by round. Needs root.
//!
//! Each hook is reported beside an empty program attached to the same hook
//! (bench_empty.bpf.o) and measured the same way in the same run: the floor
//! of running any program there, bpf_stats' own clock reads included. A
//! second workload, one connected UDP socket pair sending and receiving,
//! measures the send/recv fast path (a socket already reported) and the
//! per-packet cgroup_skb program.
//!
//! `sock-hooks [--conns=2000] [--execs=200] [--rounds=5] [--smoke] [--sock-obj=PATH]`
//! (`--sock-obj`: measure another build of sock.bpf.c, e.g. the previous commit's).
//!
//! `sock-hooks --hold [--iface=IF] [--tc-only]`: attaches only the empty
//! programs (on every socket/process hook flowlens attaches, and with
//! `--iface` the empty TC program on IF's ingress and egress the way flowlens
//! attaches its TC programs: TCX links on kernels ≥ 6.6; `--tc-only`: only
//! those), prints `attached` and keeps them until standard input closes: the
//! live-traffic floors of any monitor that hooks where flowlens does. The
//! kernel detaches them when the process exits, however it exits.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{MapData, RingBuf};
use aya::programs::{
    links::CgroupAttachMode, BtfTracePoint, CgroupSkb, CgroupSkbAttachType, FExit, SchedClassifier,
    TcAttachType, TracePoint,
};
use aya::sys::{enable_stats, Stats};
use aya::{Btf, Ebpf, EbpfLoader};
use flowlens_bench::{arg_u64, arg_value, median, print_table, smoke_requested, Row};
use flowlens_bench::{bench_empty, BENCH_EMPTY_OBJ};
use flowlens_collector::{
    kernel_probe::KernelProbe,
    loader::{load_sock_hooks, load_sock_hooks_from, LoadOptions},
};
use flowlens_ebpf::sock;

/// The empty programs of bench_empty.bpf.o, attached where flowlens attaches
/// its socket/process hooks on this kernel (`real`: the programs the
/// collector loaded, see `loader::SockHooks`).
fn load_empty(loaded: &[&'static str]) -> anyhow::Result<Ebpf> {
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    let mut bpf = load_empty_object(&btf)?;
    for (empty, real) in bench_empty::SOCK_HOOKS {
        if !loaded.contains(&real) {
            continue;
        }
        let tp_btf = sock::TP_BTF
            .iter()
            .chain(sock::TP_BTF_SEND_RECV.iter())
            .find(|(p, _)| *p == real)
            .map(|(_, tp)| *tp)
            .or_else(|| {
                [sock::PROG_EXIT, sock::PROG_EXIT_TASK]
                    .contains(&real)
                    .then_some(sock::TP_EXIT)
            });
        if let Some(tp) = tp_btf {
            let p: &mut BtfTracePoint = bpf.program_mut(empty).context(empty)?.try_into()?;
            p.load(tp, &btf)
                .with_context(|| format!("loading {empty}"))?;
            p.attach()?;
        } else if let Some((_, func)) = sock::FEXIT_SEND_RECV.iter().find(|(p, _)| *p == real) {
            let p: &mut FExit = bpf.program_mut(empty).context(empty)?.try_into()?;
            p.load(func, &btf)
                .with_context(|| format!("loading {empty}"))?;
            p.attach()?;
        } else if let Some((_, cat, tp)) = sock::TRACEPOINTS.iter().find(|(p, _, _)| *p == real) {
            let p: &mut TracePoint = bpf.program_mut(empty).context(empty)?.try_into()?;
            p.load()?;
            p.attach(cat, tp)?;
        } else {
            let p: &mut CgroupSkb = bpf.program_mut(empty).context(empty)?.try_into()?;
            p.load()?;
            let root = flowlens_collector::enrich::cgroup2_mount().context("cgroup v2 mount")?;
            let dir = std::fs::File::open(&root)?;
            p.attach(&dir, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)?;
        }
    }
    Ok(bpf)
}

/// The programs the collector loads on this kernel (loaded once, not attached).
fn real_programs(opts: LoadOptions) -> anyhow::Result<Vec<&'static str>> {
    let (_, hooks) = load_sock_hooks(opts, false)?;
    Ok(hooks.programs)
}

/// `--sock-obj=PATH`: another build of sock.bpf.c (same names), loaded with
/// the hooks this kernel gets; else the collector's own.
fn load_measured(custom: Option<&[u8]>) -> anyhow::Result<Ebpf> {
    Ok(match custom {
        Some(obj) => load_sock_hooks_from(obj, KernelProbe::get().sock_builds()[0], OPTS, true)?.0,
        None => load_sock_hooks(OPTS, true)?.0,
    })
}

fn load_empty_object(btf: &Btf) -> anyhow::Result<Ebpf> {
    EbpfLoader::new()
        .btf(Some(btf))
        .load(BENCH_EMPTY_OBJ)
        .context("loading bench_empty.bpf.o")
}

/// The empty TC program on `iface` ingress and egress, attached as the
/// collector attaches its own (`SchedClassifier::attach`: TCX on ≥ 6.6).
fn attach_empty_tc(bpf: &mut Ebpf, iface: &str) -> anyhow::Result<()> {
    let p: &mut SchedClassifier = bpf
        .program_mut(bench_empty::PROG_TC)
        .context(bench_empty::PROG_TC)?
        .try_into()?;
    p.load()?;
    for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
        p.attach(iface, dir)
            .with_context(|| format!("attaching the empty TC program to {iface} {dir:?}"))?;
    }
    Ok(())
}

fn stats_of(
    bpf: &Ebpf,
    names: &[&'static str],
) -> anyhow::Result<BTreeMap<&'static str, (u64, u64)>> {
    let mut m = BTreeMap::new();
    for &name in names {
        let info = bpf.program(name).context(name)?.info()?;
        let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        m.insert(name, (ns, info.run_count()));
    }
    Ok(m)
}

fn add_delta(
    into: &mut BTreeMap<&'static str, (u64, u64)>,
    before: &BTreeMap<&'static str, (u64, u64)>,
    after: BTreeMap<&'static str, (u64, u64)>,
) {
    for (name, (ns, cnt)) in after {
        let (ns0, cnt0) = before.get(name).copied().unwrap_or((0, 0));
        let e = into.entry(name).or_insert((0, 0));
        e.0 += ns.saturating_sub(ns0);
        e.1 += cnt.saturating_sub(cnt0);
    }
}

fn workload(conns: u64, execs: u64) -> anyhow::Result<Duration> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let start = Instant::now();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for i in 0..conns {
            // Every other connection through accept(2), the rest through
            // accept4(2) (what std uses): both tracepoints are measured.
            let mut s = if i % 2 == 0 {
                l.accept()?.0
            } else {
                // SAFETY: accept(2) on a listening socket we own; NULL address
                // arguments are allowed. A non-negative result is a new fd we own.
                let fd = unsafe {
                    libc::accept(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut())
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: fd is a fresh descriptor owned by nobody else.
                TcpStream::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
            };
            let mut b = [0u8; 100];
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
        Ok(())
    });
    for _ in 0..conns {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(&[7u8; 100])?;
        let mut b = [0u8; 100];
        s.read_exact(&mut b)?;
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread"))??;
    for _ in 0..execs {
        std::process::Command::new("/bin/true").status()?;
    }
    Ok(start.elapsed())
}

/// Steady traffic on one socket pair: the send/recv fast path (a socket
/// already reported). `n` datagrams of 64 bytes over loopback UDP.
fn workload_steady(n: u64) -> anyhow::Result<Duration> {
    let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let b = std::net::UdpSocket::bind("127.0.0.1:0")?;
    a.connect(b.local_addr()?)?;
    let start = Instant::now();
    let mut buf = [0u8; 64];
    for _ in 0..n {
        a.send(&buf)?;
        b.recv(&mut buf)?;
    }
    Ok(start.elapsed())
}

const OPTS: LoadOptions = LoadOptions {
    flow_map_entries: 65_536,
    flow_slots_per_cpu: 0,
    owner_refresh_ns: flowlens_collector::loader::OWNER_REFRESH_NS,
    ringbuf_bytes: 4 << 20,
};

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--hold") {
        let mut bpf = if std::env::args().any(|a| a == "--tc-only") {
            load_empty_object(&Btf::from_sys_fs().context("kernel BTF")?)?
        } else {
            load_empty(&real_programs(OPTS)?)?
        };
        if let Some(iface) = arg_value("iface") {
            attach_empty_tc(&mut bpf, &iface)?;
        }
        println!("attached");
        std::io::stdout().flush()?;
        let mut sink = Vec::new();
        std::io::stdin().read_to_end(&mut sink)?;
        return Ok(());
    }
    let smoke = smoke_requested();
    let conns = arg_u64("conns", if smoke { 50 } else { 2_000 });
    let execs = arg_u64("execs", if smoke { 5 } else { 200 });
    let rounds = arg_u64("rounds", if smoke { 1 } else { 5 });
    let real = real_programs(OPTS)?;
    let custom = arg_value("sock-obj")
        .map(|p| std::fs::read(&p).with_context(|| p.clone()))
        .transpose()?;
    let _stats_fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (needs root)")?;
    workload(conns / 10 + 1, 1)?; // warm-up
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut per_prog: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut events = 0u64;
    let mut per_empty: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let (mut steady_prog, mut steady_empty) = (BTreeMap::new(), BTreeMap::new());
    let steady = conns * 10;
    let empties: Vec<&'static str> = bench_empty::SOCK_HOOKS
        .iter()
        .filter(|(_, r)| real.contains(r))
        .map(|(e, _)| *e)
        .collect();
    for round in 0..rounds {
        // off, flowlens, empty programs: the order rotates by round.
        for phase in 0..3 {
            match (phase + round) % 3 {
                0 => off.push(workload(conns, execs)?.as_secs_f64()),
                1 => {
                    let mut bpf = load_measured(custom.as_deref())?;
                    let mut ring: RingBuf<MapData> =
                        RingBuf::try_from(bpf.take_map(sock::MAP_EVENTS).context("ring buffer")?)?;
                    let before = stats_of(&bpf, &real)?;
                    on.push(workload(conns, execs)?.as_secs_f64());
                    let after = stats_of(&bpf, &real)?;
                    workload_steady(steady)?;
                    add_delta(&mut steady_prog, &after, stats_of(&bpf, &real)?);
                    while let Some(item) = ring.next() {
                        drop(item);
                        events += 1;
                    }
                    add_delta(&mut per_prog, &before, after);
                }
                _ => {
                    let bpf = load_empty(&real)?;
                    let before = stats_of(&bpf, &empties)?;
                    workload(conns, execs)?;
                    let after = stats_of(&bpf, &empties)?;
                    workload_steady(steady)?;
                    add_delta(&mut steady_empty, &after, stats_of(&bpf, &empties)?);
                    add_delta(&mut per_empty, &before, after);
                }
            }
        }
    }
    let mut rows = Vec::new();
    let (mut tot_ns, mut tot_cnt) = (0u64, 0u64);
    for (name, (ns, cnt)) in &per_prog {
        if *cnt == 0 {
            continue; // a hook the workload does not reach here (IPv6 send/recv)
        }
        tot_ns += ns;
        tot_cnt += cnt;
        let per_run = *ns as f64 / (*cnt).max(1) as f64;
        let empty = bench_empty::SOCK_HOOKS
            .iter()
            .find(|(_, real)| real == name)
            .and_then(|(e, _)| per_empty.get(e))
            .map(|(ns, cnt)| *ns as f64 / (*cnt).max(1) as f64);
        rows.push(Row {
            section: "hooks",
            case: format!("{name}: ns per run (bpf_stats)"),
            value: format!("{per_run:.0} ns ({cnt} runs)"),
            baseline: empty.map_or(String::new(), |e| format!("empty program {e:.0} ns")),
            ratio: empty.map_or(String::new(), |e| format!("{:.2}×", per_run / e.max(1.0))),
            goal: String::new(),
        });
    }
    for (name, empty) in [
        (sock::PROG_SEND, "bench_empty_sock_send"),
        (sock::PROG_RECV, "bench_empty_sock_recv"),
        (sock::PROG_FEXIT_SEND4, "bench_empty_inet_sendmsg"),
        (sock::PROG_FEXIT_RECV4, "bench_empty_inet_recvmsg"),
        (sock::PROG_ICMP_EGRESS, "bench_empty_icmp_egress"),
    ] {
        if !real.contains(&name) {
            continue;
        }
        let per = |m: &BTreeMap<&str, (u64, u64)>, k: &str| {
            m.get(k)
                .map_or(0.0, |(ns, cnt)| *ns as f64 / (*cnt).max(1) as f64)
        };
        let (f, e) = (per(&steady_prog, name), per(&steady_empty, empty));
        rows.push(Row {
            section: "hooks",
            case: format!(
                "{name} on steady traffic (socket already reported): one connected UDP socket pair, {steady} × (send + recv 64 B)"
            ),
            value: format!("{f:.0} ns per run"),
            baseline: format!("empty program {e:.0} ns"),
            ratio: format!("{:.2}×", f / e.max(1.0)),
            goal: String::new(),
        });
    }
    let (m_off, m_on) = (median(&off), median(&on));
    rows.push(Row {
        section: "hooks",
        case: format!(
            "all socket/process hooks: {conns} loopback TCP connections + {execs} fork/exec, {tot_cnt} hook runs, {events} events read"
        ),
        value: format!("{:.0} ns per hook run; workload {:.1} ms with hooks", tot_ns as f64 / tot_cnt.max(1) as f64, m_on * 1e3),
        baseline: format!("workload {:.1} ms without hooks", m_off * 1e3),
        ratio: format!("{:.3}× wall time", m_on / m_off.max(1e-9)),
        goal: String::new(),
    });
    print_table(&rows, !std::env::args().any(|a| a == "--no-header"));
    Ok(())
}
