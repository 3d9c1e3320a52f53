//! ns/packet of the flow programs (XDP and TC) under `BPF_PROG_TEST_RUN`,
//! each beside an empty program of the same type measured in the same run,
//! interleaved round by round; the medians over rounds are reported as a ratio.
//!
//! Method (see BENCHMARKS.md, "Kernel programs"):
//! - hot flow: one test run with `repeat` (default 1,000,000) of one frame;
//!   the kernel reports the mean ns per repetition. After the first
//!   repetition every packet updates an existing entry.
//! - 64k steady: the map is first filled with 65,536 distinct flows (the
//!   collector's default map size), then every round sweeps all of them in a
//!   shuffled order (not the fill order: see below), `passes` times, one test run with repeat = 1 per
//!   packet (a test run repeats one frame, so a distinct key needs its own
//!   run). The kernel-reported duration of each run (program only, not the
//!   syscall) is summed and divided by the packets. The empty program is swept
//!   over the same frames the same way, so both carry the same per-run timer
//!   overhead (two ktime reads), which the ratio therefore contains.
//! - 64k new: the map is emptied from user space before each round, then one
//!   sweep inserts 65,536 new flows.
//!
//! `--smoke`: tiny repeat counts and 256 flows, one round: only checks that
//! the benchmark still runs. Needs root.

use anyhow::{bail, Context};
use aya::{
    maps::PerCpuArray,
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use flowlens_bench::{
    arg_u64, arg_value, bench_empty, frames, goal_max, median, pin_to_cpu, print_table,
    smoke_requested, Row, BENCH_EMPTY_OBJ,
};
use flowlens_collector::{
    config::default_flow_slots_per_cpu,
    ebpf::flow_map::FlowMapReader,
    kernel_probe::{Build, KernelProbe},
    loader::{load_flow_object_from, possible_cpus, LoadOptions},
};
use flowlens_ebpf::{
    abi::{CNT_FLOW_MAP_FULL, CNT_FLOW_SLOTS_FULL},
    flow, FLOW_COMPAT_OBJ, FLOW_OBJ,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Self::Xdp => "XDP",
            Self::Tc => "TC",
        }
    }
}

struct Objects {
    flow: Ebpf,
    empty: Ebpf,
    reader: FlowMapReader,
}

fn load(bpf: &mut Ebpf, xdp: &str, tc: &str) -> anyhow::Result<()> {
    let p: &mut Xdp = bpf.program_mut(xdp).context(xdp.to_string())?.try_into()?;
    p.load().with_context(|| format!("loading {xdp}"))?;
    let p: &mut SchedClassifier = bpf.program_mut(tc).context(tc.to_string())?.try_into()?;
    p.load().with_context(|| format!("loading {tc}"))?;
    Ok(())
}

impl Objects {
    fn new(flow_entries: u32, slots_per_cpu: u32, flow_obj: &[u8]) -> anyhow::Result<Self> {
        // The collector's loader: slot table, seed and every program loaded.
        let opts = LoadOptions {
            flow_map_entries: flow_entries,
            flow_slots_per_cpu: slots_per_cpu,
            owner_refresh_ns: flowlens_collector::loader::OWNER_REFRESH_NS,
            ringbuf_bytes: 1 << 16,
        };
        let mut flow_bpf =
            load_flow_object_from(flow_obj, opts).context("loading flow.bpf.o (needs root)")?;
        let reader = FlowMapReader::from_object(&mut flow_bpf, slots_per_cpu)
            .map_err(|e| anyhow::anyhow!("flow maps: {e}"))?;
        let mut empty = Ebpf::load(BENCH_EMPTY_OBJ).context("loading bench_empty.bpf.o")?;
        load(&mut empty, bench_empty::PROG_XDP, bench_empty::PROG_TC)?;
        Ok(Self {
            flow: flow_bpf,
            empty,
            reader,
        })
    }

    /// Mean ns per repetition as the kernel reports it (integer ns).
    fn run(&self, empty: bool, hook: Hook, frame: &[u8], repeat: u32) -> anyhow::Result<u64> {
        let (bpf, xdp, tc) = if empty {
            (&self.empty, bench_empty::PROG_XDP, bench_empty::PROG_TC)
        } else {
            (&self.flow, flow::PROG_XDP, flow::PROG_TC)
        };
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        let r = match hook {
            Hook::Xdp => {
                let p: &Xdp = bpf.program(xdp).context("xdp")?.try_into()?;
                p.test_run(opts)?
            }
            Hook::Tc => {
                let p: &SchedClassifier = bpf.program(tc).context("tc")?.try_into()?;
                p.test_run(opts)?
            }
        };
        let want = if hook == Hook::Xdp { 2 } else { u32::MAX };
        if r.return_value != want {
            bail!("unexpected verdict {}", r.return_value);
        }
        Ok(u64::try_from(r.duration.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Mean ns per packet of one run per frame, in `order`, `passes` times.
    fn sweep(
        &self,
        empty: bool,
        hook: Hook,
        frames: &[Vec<u8>],
        order: &[usize],
        passes: u64,
    ) -> anyhow::Result<f64> {
        let mut total = 0u64;
        for _ in 0..passes {
            for &i in order {
                total += self.run(empty, hook, &frames[i], 1)?;
            }
        }
        Ok(total as f64 / (order.len() as u64 * passes) as f64)
    }

    /// ms of a full drain (every key reported, as after a restart of the
    /// reader) and of an idle drain (nothing new), medians of `rounds`.
    fn drain_ms(&mut self, rounds: u64) -> (f64, f64, usize) {
        let (mut full, mut idle, mut n) = (Vec::new(), Vec::new(), 0);
        let mut obs = Vec::new();
        for _ in 0..rounds {
            obs.clear();
            self.reader.clear_totals();
            let t = std::time::Instant::now();
            n = self.reader.drain(&mut obs);
            full.push(t.elapsed().as_secs_f64() * 1e3);
            obs.clear();
            let t = std::time::Instant::now();
            self.reader.drain(&mut obs);
            idle.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (median(&full), median(&idle), n)
    }

    /// Distinct flow keys counted so far (slots and hash).
    fn flow_count(&mut self) -> usize {
        let mut obs = Vec::new();
        self.reader.clear_totals();
        self.reader.drain(&mut obs);
        obs.len()
    }

    fn clear_flows(&mut self) -> anyhow::Result<()> {
        self.reader.clear().context("emptying the flow slots")
    }

    fn counter(&self, idx: u32) -> anyhow::Result<u64> {
        let c: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.flow.map(flow::MAP_COUNTERS).context("counters")?)?;
        Ok(c.get(&idx, 0)?.iter().sum())
    }

    fn map_full(&self) -> anyhow::Result<u64> {
        self.counter(CNT_FLOW_MAP_FULL)
    }
}

/// Medians over rounds of (flow ns, empty ns), measured alternately.
struct Pair {
    flow: Vec<f64>,
    empty: Vec<f64>,
}

impl Pair {
    fn new() -> Self {
        Self {
            flow: Vec::new(),
            empty: Vec::new(),
        }
    }

    fn row(&self, case: String, goal: Option<f64>) -> Row {
        let (f, e) = (median(&self.flow), median(&self.empty));
        let ratio = if e > 0.0 { f / e } else { f64::INFINITY };
        Row {
            section: "kernel",
            case,
            value: format!("{f:.1} ns/pkt"),
            baseline: format!("empty {e:.1} ns/pkt"),
            ratio: format!("{ratio:.2}×"),
            goal: goal.map(|g| goal_max(ratio, g)).unwrap_or_default(),
        }
    }
}

/// The collector's reader over the filled table, beside a plain copy of as
/// many bytes as it scans (the floor of any full read).
fn drain_rows(objs: &mut Objects, rounds: u64, slots_per_cpu: u32) -> Vec<Row> {
    let slots = possible_cpus() * slots_per_cpu as usize;
    let bytes = slots * 128;
    let src = vec![1u8; bytes.max(1)];
    let mut dst = vec![0u8; bytes.max(1)];
    let mut copy = Vec::new();
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        copy.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let floor = median(&copy);
    let (full, idle, n) = objs.drain_ms(rounds);
    let row = |case: String, ms: f64| Row {
        section: "kernel",
        case,
        value: format!("{ms:.2} ms"),
        baseline: format!("copy of {} MiB {floor:.2} ms", bytes >> 20),
        ratio: format!("{:.2}×", ms / floor.max(1e-6)),
        goal: String::new(),
    };
    vec![
        row(
            format!("reader: drain of {n} flows from {slots} slots + hash, every key reported"),
            full,
        ),
        row(
            format!("reader: drain of the same table with no new packets ({slots} slots scanned)"),
            idle,
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let smoke = smoke_requested();
    let repeat = u32::try_from(arg_u64("repeat", if smoke { 1_000 } else { 1_000_000 }))?;
    let rounds = arg_u64("rounds", if smoke { 1 } else { 7 });
    let nflows = usize::try_from(arg_u64("flows", if smoke { 256 } else { 65_536 }))?;
    let passes = arg_u64("passes", if smoke { 1 } else { 4 });
    let new_rounds = arg_u64("new-rounds", if smoke { 1 } else { 5 });
    pin_to_cpu(usize::try_from(arg_u64("cpu", 1))?);
    // `--slots-per-cpu=N`: the flow slot table (0 = hash only); default as the collector's.
    let slots_per_cpu = u32::try_from(arg_u64(
        "slots-per-cpu",
        u64::from(default_flow_slots_per_cpu(possible_cpus())),
    ))?;

    // `--flow-obj=PATH`: measure another build of flow.bpf.c (same names);
    // by default the build the collector loads on this kernel.
    let custom = arg_value("flow-obj")
        .map(|p| std::fs::read(&p).with_context(|| p.clone()))
        .transpose()?;
    let build = KernelProbe::get().flow_build();
    let flow_obj = custom.unwrap_or_else(|| match build {
        Build::Current => FLOW_OBJ.to_vec(),
        Build::Compat => FLOW_COMPAT_OBJ.to_vec(),
    });
    eprintln!(
        "kernel {}: flow programs, {} build",
        KernelProbe::get().release,
        build.name()
    );
    let mut objs = Objects::new(u32::try_from(nflows.max(1024))?, slots_per_cpu, &flow_obj)?;
    let hooks = [Hook::Xdp, Hook::Tc];
    let hot: Vec<(&str, Vec<u8>)> = vec![
        (
            "hot flow, TCP/IPv4 64 B",
            frames::ipv4(frames::TCP, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, 64),
        ),
        (
            "hot flow, TCP/IPv4 1500 B",
            frames::ipv4(frames::TCP, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, 1514),
        ),
        (
            "hot flow, TCP/IPv6 74 B",
            frames::ipv6(frames::TCP, [0xfd; 16], [0xfe; 16], 40000, 443, 74),
        ),
        (
            "hot flow, UDP/IPv4 64 B",
            frames::ipv4(frames::UDP, [10, 0, 0, 1], [10, 0, 0, 2], 5353, 53, 64),
        ),
    ];
    let mut rows = Vec::new();

    // Hot flows: all cases, both hooks, interleaved per round; the order of
    // flow/empty alternates between rounds.
    let mut hot_pairs: Vec<Pair> = (0..hot.len() * hooks.len()).map(|_| Pair::new()).collect();
    for round in 0..rounds {
        for (hi, &hook) in hooks.iter().enumerate() {
            for (ci, (_, frame)) in hot.iter().enumerate() {
                let pair = &mut hot_pairs[hi * hot.len() + ci];
                for empty in [round % 2 == 0, round % 2 == 1] {
                    let ns = objs.run(empty, hook, frame, repeat)? as f64;
                    if empty {
                        pair.empty.push(ns);
                    } else {
                        pair.flow.push(ns);
                    }
                }
            }
        }
    }
    for (hi, &hook) in hooks.iter().enumerate() {
        for (ci, (name, _)) in hot.iter().enumerate() {
            rows.push(hot_pairs[hi * hot.len() + ci].row(
                format!("{} {name} (repeat {repeat})", hook.name()),
                Some(2.0),
            ));
        }
    }

    // Many flows: one hook at a time owns the map.
    let many: Vec<Vec<u8>> = (0..nflows)
        .map(|i| frames::distinct_tcp4(u32::try_from(i).unwrap_or(0)))
        .collect();
    let order = frames::shuffled(nflows, 0x5eed);
    // Sweeping in the order the map was filled in walks its entries in
    // allocation order (prefetch-friendly, flattering by ~1.7x); live traffic
    // does not arrive in allocation order, so the sweeps use another shuffle.
    let sweep_order = frames::shuffled(nflows, 0xbeef);
    for hook in hooks {
        objs.clear_flows()?;
        // Steady state: fill, then sweep.
        let hashed_before = objs.counter(CNT_FLOW_SLOTS_FULL)?;
        objs.sweep(false, hook, &many, &order, 1)?;
        let filled = objs.flow_count();
        // One packet per flow in the fill: packets counted in the hash = flows there.
        let in_hash = objs.counter(CNT_FLOW_SLOTS_FULL)? - hashed_before;
        if hook == Hook::Xdp {
            rows.extend(drain_rows(&mut objs, rounds, slots_per_cpu));
        }
        let mut steady = Pair::new();
        for round in 0..rounds {
            for empty in [round % 2 == 0, round % 2 == 1] {
                let ns = objs.sweep(empty, hook, &many, &sweep_order, passes)?;
                if empty {
                    steady.empty.push(ns);
                } else {
                    steady.flow.push(ns);
                }
            }
        }
        rows.push(steady.row(
            format!(
                "{} {filled} flows steady state ({in_hash} of them in the hash, {slots_per_cpu} slots/CPU; 1 run/pkt, {} pkts/round)",
                hook.name(),
                nflows as u64 * passes
            ),
            Some(6.0),
        ));
        // New flows into an empty map.
        let mut fresh = Pair::new();
        for round in 0..new_rounds {
            objs.clear_flows()?;
            let order = frames::shuffled(nflows, 0x5eed + round);
            for empty in [round % 2 == 0, round % 2 == 1] {
                let ns = objs.sweep(empty, hook, &many, &order, 1)?;
                if empty {
                    fresh.empty.push(ns);
                } else {
                    fresh.flow.push(ns);
                }
            }
        }
        rows.push(fresh.row(
            format!(
                "{} {nflows} new flows into an empty map (1 run/pkt)",
                hook.name()
            ),
            None,
        ));
    }
    let full = objs.map_full()?;
    if full != 0 {
        bail!("flow_map_full = {full}: the map was too small for the benchmark");
    }
    print_table(&rows, !std::env::args().any(|a| a == "--no-header"));
    Ok(())
}
