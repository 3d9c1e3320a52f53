//! Loads `flow.bpf.o`, drives its programs with `BPF_PROG_TEST_RUN` and reads
//! its maps back, checking on the way that no frame is ever dropped or changed.

use std::collections::HashMap;

use aya::{
    maps::{HashMap as BpfHashMap, PerCpuArray, PerCpuHashMap},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use flowlens_ebpf::{abi::*, flow, FLOW_OBJ};

const XDP_PASS: u32 = 2;
/// `TC_ACT_UNSPEC` (-1) as the kernel reports it.
const TC_ACT_UNSPEC: u32 = u32::MAX;
/// The loopback device every test run is attributed to.
pub const LO_IFINDEX: u32 = 1;
pub const HOOKS: [u8; 2] = [FLOW_HOOK_XDP_INGRESS, FLOW_HOOK_TC_EGRESS];

/// Sizes of `struct __sk_buff` and the offsets of the fields a test run accepts.
const SKB_CTX_SIZE: usize = 192;
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC is bpf_ktime_get_ns's clock.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    u64::try_from(ts.tv_sec).expect("tv_sec") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("tv_nsec")
}

/// A flow's per-CPU values summed (packets, bytes) and OR-ed (flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
    pub flags: u8,
}

pub fn tot(packets: u64, bytes: u64, tcp_flags: u8, flags: u8) -> Totals {
    Totals {
        packets,
        bytes,
        tcp_flags,
        flags,
    }
}

pub fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

pub fn key6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src,
        dst,
        sport,
        dport,
        proto,
        hook: FLOW_HOOK_XDP_INGRESS,
        pad: 0,
        ifindex: LO_IFINDEX,
    }
}

pub fn key4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> FlowKey {
    key6(mapped(src), mapped(dst), sport, dport, proto)
}

pub fn at(hook: u8, key: FlowKey) -> FlowKey {
    FlowKey { hook, ..key }
}

/// The same flows expected at both hooks.
pub fn on_both(flows: &[(FlowKey, Totals)]) -> Vec<(FlowKey, Totals)> {
    HOOKS
        .iter()
        .flat_map(|&h| flows.iter().map(move |&(k, t)| (at(h, k), t)))
        .collect()
}

/// One loaded copy of `flow.bpf.o` with fresh maps.
pub struct Harness {
    ebpf: Ebpf,
    started_ns: u64,
}

impl Harness {
    pub fn new() -> Self {
        Self::load(EbpfLoader::new())
    }

    pub fn with_flow_capacity(entries: u32) -> Self {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(flow::MAP_FLOWS, entries);
        Self::load(loader)
    }

    fn load(mut loader: EbpfLoader<'_>) -> Self {
        let started_ns = monotonic_ns();
        let mut ebpf = loader
            .load(FLOW_OBJ)
            .unwrap_or_else(|e| panic!("loading flow.bpf.o (needs root): {e:#}"));
        let xdp: &mut Xdp = ebpf
            .program_mut(flow::PROG_XDP)
            .expect("XDP program")
            .try_into()
            .expect("XDP program type");
        xdp.load()
            .unwrap_or_else(|e| panic!("verifier, XDP: {e:#}\n{e:?}"));
        let tc: &mut SchedClassifier = ebpf
            .program_mut(flow::PROG_TC)
            .expect("TC program")
            .try_into()
            .expect("TC program type");
        tc.load()
            .unwrap_or_else(|e| panic!("verifier, TC: {e:#}\n{e:?}"));
        let tc_in: &mut SchedClassifier = ebpf
            .program_mut(flow::PROG_TC_INGRESS)
            .expect("TC ingress program")
            .try_into()
            .expect("TC program type");
        tc_in
            .load()
            .unwrap_or_else(|e| panic!("verifier, TC ingress: {e:#}\n{e:?}"));
        Self { ebpf, started_ns }
    }

    pub fn xdp_prog(&self) -> &Xdp {
        self.ebpf
            .program(flow::PROG_XDP)
            .expect("XDP program")
            .try_into()
            .expect("XDP program type")
    }

    pub fn tc_prog(&self) -> &SchedClassifier {
        self.ebpf
            .program(flow::PROG_TC)
            .expect("TC program")
            .try_into()
            .expect("TC program type")
    }

    /// Runs the XDP program on `frame`: XDP_PASS and the frame unchanged.
    pub fn xdp(&self, frame: &[u8]) {
        let mut out = vec![0u8; frame.len()];
        let r = self
            .xdp_prog()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("XDP test run of {} bytes: {e:#}", frame.len()));
        assert_eq!(r.return_value, XDP_PASS, "XDP verdict");
        assert_eq!(r.data_size_out as usize, frame.len(), "XDP output length");
        assert_eq!(out, frame, "XDP modified the frame");
    }

    /// Runs the TC program on `frame` with an optional `__sk_buff` context:
    /// TC_ACT_UNSPEC and the frame unchanged.
    pub fn tc_ctx(&self, frame: &[u8], ctx: Option<&[u8]>) {
        let mut out = vec![0u8; frame.len()];
        let r = self
            .tc_prog()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ctx,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("TC test run of {} bytes: {e:?}", frame.len()));
        assert_eq!(r.return_value, TC_ACT_UNSPEC, "TC verdict");
        assert_eq!(r.data_size_out as usize, frame.len(), "TC output length");
        assert_eq!(out, frame, "TC modified the frame");
    }

    pub fn tc(&self, frame: &[u8]) {
        self.tc_ctx(frame, None);
    }

    /// The kernel refuses this frame for a TC test run (EINVAL): the program does not run.
    pub fn tc_refused(&self, frame: &[u8]) {
        let r = self.tc_prog().test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        });
        match r {
            Err(aya::programs::ProgramError::SyscallError(e)) => {
                assert_eq!(
                    e.io_error.raw_os_error(),
                    Some(libc::EINVAL),
                    "TC test run of {frame:?}"
                )
            }
            other => panic!(
                "TC test run of {} bytes was not refused: {other:?}",
                frame.len()
            ),
        }
    }

    /// TC with `skb->gso_segs` / `skb->gso_size` set.
    pub fn tc_gso(&self, frame: &[u8], gso_segs: u32, gso_size: u32) {
        let mut ctx = [0u8; SKB_CTX_SIZE];
        ctx[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&gso_segs.to_ne_bytes());
        ctx[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
        self.tc_ctx(frame, Some(&ctx));
    }

    /// The TC ingress program (used instead of XDP on virtual devices) with
    /// `skb->gso_segs` / `skb->gso_size` set: TC_ACT_UNSPEC, frame unchanged.
    pub fn tc_ingress_gso(&self, frame: &[u8], gso_segs: u32, gso_size: u32) {
        let mut ctx = [0u8; SKB_CTX_SIZE];
        ctx[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&gso_segs.to_ne_bytes());
        ctx[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
        let prog: &SchedClassifier = self
            .ebpf
            .program(flow::PROG_TC_INGRESS)
            .expect("TC ingress program")
            .try_into()
            .expect("TC program type");
        let mut out = vec![0u8; frame.len()];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("TC ingress test run: {e:?}"));
        assert_eq!(r.return_value, TC_ACT_UNSPEC, "TC ingress verdict");
        assert_eq!(out, frame, "TC ingress modified the frame");
    }

    /// Both hooks on every frame.
    pub fn both(&self, frames: &[Vec<u8>]) {
        for f in frames {
            self.xdp(f);
            self.tc(f);
        }
    }

    /// The flow map summed over CPUs; checks padding and timestamps on the way.
    pub fn flows(&self) -> HashMap<FlowKey, Totals> {
        let map: PerCpuHashMap<_, FlowKey, FlowValue> =
            PerCpuHashMap::try_from(self.ebpf.map(flow::MAP_FLOWS).expect("flow map"))
                .expect("flow map type");
        let now = monotonic_ns();
        let mut flows = HashMap::new();
        for item in map.iter() {
            let (key, per_cpu) = item.expect("flow map entry");
            assert_eq!(key.pad, 0, "key padding {key:?}");
            let mut t = tot(0, 0, 0, 0);
            for v in per_cpu.iter() {
                if v.packets == 0 {
                    assert_eq!(
                        *v,
                        FlowValue::default(),
                        "an unused CPU slot must stay zero: {key:?}"
                    );
                    continue;
                }
                assert_eq!(v.pad, [0; 6], "value padding {key:?}");
                assert!(
                    self.started_ns <= v.first_seen_ns
                        && v.first_seen_ns <= v.last_seen_ns
                        && v.last_seen_ns <= now,
                    "timestamps of {key:?}: {v:?} not within [{}, {now}]",
                    self.started_ns
                );
                t.packets += v.packets;
                t.bytes += v.bytes;
                t.tcp_flags |= v.tcp_flags;
                t.flags |= v.flags;
            }
            assert!(t.packets > 0, "an entry with no packets: {key:?}");
            assert!(flows.insert(key, t).is_none(), "duplicate key {key:?}");
        }
        flows
    }

    pub fn counters(&self) -> [u64; CNT_MAX as usize] {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(flow::MAP_COUNTERS).expect("counter map"))
                .expect("counter map type");
        let mut c = [0u64; CNT_MAX as usize];
        for (i, slot) in c.iter_mut().enumerate() {
            let idx = u32::try_from(i).expect("index");
            *slot = map.get(&idx, 0).expect("counter").iter().sum();
        }
        c
    }

    pub fn frags(&self) -> HashMap<FragKey, FragValue> {
        let map: BpfHashMap<_, FragKey, FragValue> =
            BpfHashMap::try_from(self.ebpf.map(flow::MAP_FRAGS).expect("frag map"))
                .expect("frag map type");
        map.iter().map(|e| e.expect("frag map entry")).collect()
    }

    /// Exactly these flows and exactly these non-zero counters.
    #[track_caller]
    pub fn expect(&self, flows: &[(FlowKey, Totals)], counters: &[(u32, u64)]) {
        let want: HashMap<FlowKey, Totals> = flows.iter().copied().collect();
        assert_eq!(want.len(), flows.len(), "the test lists a key twice");
        let got = self.flows();
        for (k, t) in &want {
            assert_eq!(got.get(k), Some(t), "flow {k:?}");
        }
        for k in got.keys() {
            assert!(want.contains_key(k), "unexpected flow {k:?} = {:?}", got[k]);
        }
        let mut want_c = [0u64; CNT_MAX as usize];
        for &(i, n) in counters {
            want_c[i as usize] = n;
        }
        let got_c = self.counters();
        let names = |c: &[u64]| -> Vec<String> {
            c.iter()
                .enumerate()
                .filter(|(_, &n)| n != 0)
                .map(|(i, n)| {
                    let name = COUNTER_NAMES
                        .iter()
                        .find(|(j, _)| *j as usize == i)
                        .map_or("?", |(_, s)| s);
                    format!("{name}={n}")
                })
                .collect()
        };
        assert_eq!(names(&got_c), names(&want_c), "counters");
    }
}
