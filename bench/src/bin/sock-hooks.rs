//! Cost of the socket and process hooks (sock.bpf.o) per event, from the
//! kernel's own accounting (BPF_ENABLE_STATS: run_time_ns / run_cnt per
//! program), while a workload of loopback TCP connections (connect, send,
//! recv, accept, close) and fork+exec of /bin/true runs; and the workload's
//! wall time with the hooks attached against the same workload without them,
//! interleaved round by round. Needs root.
//!
//! `sock-hooks [--conns=2000] [--execs=200] [--rounds=5] [--smoke]`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{MapData, RingBuf};
use aya::sys::{enable_stats, Stats};
use flowlens_bench::{arg_u64, median, print_table, smoke_requested, Row};
use flowlens_collector::loader::{load_sock_object, LoadOptions};
use flowlens_ebpf::sock;

fn workload(conns: u64, execs: u64) -> anyhow::Result<Duration> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let start = Instant::now();
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        for _ in 0..conns {
            let (mut s, _) = l.accept()?;
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

fn all_progs() -> Vec<&'static str> {
    let mut v: Vec<&str> = sock::TP_BTF.iter().map(|(p, _)| *p).collect();
    v.extend(sock::TRACEPOINTS.iter().map(|(p, _, _)| *p));
    v
}

fn stats(bpf: &aya::Ebpf) -> anyhow::Result<BTreeMap<&'static str, (u64, u64)>> {
    let mut m = BTreeMap::new();
    for name in all_progs() {
        let info = bpf.program(name).context(name)?.info()?;
        let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
        m.insert(name, (ns, info.run_count()));
    }
    Ok(m)
}

fn main() -> anyhow::Result<()> {
    let smoke = smoke_requested();
    let conns = arg_u64("conns", if smoke { 50 } else { 2_000 });
    let execs = arg_u64("execs", if smoke { 5 } else { 200 });
    let rounds = arg_u64("rounds", if smoke { 1 } else { 5 });
    let opts = LoadOptions {
        flow_map_entries: 65_536,
        flow_slots_per_cpu: 0,
        ringbuf_bytes: 4 << 20,
    };
    let _stats_fd = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (needs root)")?;
    workload(conns / 10 + 1, 1)?; // warm-up
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut per_prog: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut events = 0u64;
    for round in 0..rounds {
        for hooks in [round % 2 == 1, round % 2 == 0] {
            if !hooks {
                off.push(workload(conns, execs)?.as_secs_f64());
                continue;
            }
            let mut bpf = load_sock_object(opts, true)?;
            let mut ring: RingBuf<MapData> =
                RingBuf::try_from(bpf.take_map(sock::MAP_EVENTS).context("ring buffer")?)?;
            let before = stats(&bpf)?;
            on.push(workload(conns, execs)?.as_secs_f64());
            let after = stats(&bpf)?;
            while let Some(item) = ring.next() {
                drop(item);
                events += 1;
            }
            for (name, (ns, cnt)) in after {
                let (ns0, cnt0) = before.get(name).copied().unwrap_or((0, 0));
                let e = per_prog.entry(name).or_insert((0, 0));
                e.0 += ns - ns0;
                e.1 += cnt - cnt0;
            }
        }
    }
    let mut rows = Vec::new();
    let (mut tot_ns, mut tot_cnt) = (0u64, 0u64);
    for (name, (ns, cnt)) in &per_prog {
        tot_ns += ns;
        tot_cnt += cnt;
        rows.push(Row {
            section: "hooks",
            case: format!("{name}: ns per run (bpf_stats)"),
            value: format!("{:.0} ns", *ns as f64 / (*cnt).max(1) as f64),
            baseline: String::new(),
            ratio: format!("{cnt} runs"),
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
