//! Loads `flow.bpf.o`, drives its programs with `BPF_PROG_TEST_RUN` and reads
//! its maps back, checking on the way that no frame is ever dropped or changed.

use std::collections::HashMap;

use std::cell::RefCell;

use aya::{
    maps::{HashMap as BpfHashMap, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use flowlens_collector::{
    clock::monotonic_ns,
    config::default_flow_slots_per_cpu,
    ebpf::flow_map::FlowMapReader,
    loader::{load_flow_object, possible_cpus, LoadOptions},
};
use flowlens_correlator::types::{ip_to_mapped, Hook};
use flowlens_ebpf::{abi::*, flow};

pub const XDP_PASS: u32 = 2;

/// `FLOWLENS_TEST_TIME_SCALE` (default 1): the kernel matrix's emulated CPU
/// runs timing-based tests with this many times longer phases.
pub fn time_scale() -> u32 {
    std::env::var("FLOWLENS_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}
/// `TC_ACT_UNSPEC` (-1) as the kernel reports it.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
/// The loopback device every test run is attributed to.
pub const LO_IFINDEX: u32 = 1;
pub const HOOKS: [u8; 2] = [FLOW_HOOK_XDP_INGRESS, FLOW_HOOK_TC_EGRESS];

/// Sizes of `struct __sk_buff` and the offsets of the fields a test run accepts.
const SKB_CTX_SIZE: usize = 192;
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;

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

/// One loaded copy of `flow.bpf.o` with fresh maps, loaded by the collector's
/// loader and read back through the collector's reader.
pub struct Harness {
    ebpf: Ebpf,
    reader: RefCell<Option<FlowMapReader>>,
    started_ns: u64,
}

impl Harness {
    /// The collector's defaults: flow slots in front of a 65,536-entry hash.
    pub fn new() -> Self {
        Self::load(65_536, default_flow_slots_per_cpu(possible_cpus()))
    }

    /// The hash alone (no slots), with `entries` entries.
    pub fn with_flow_capacity(entries: u32) -> Self {
        Self::load(entries, 0)
    }

    /// `slots_per_cpu` slots in front of a hash of `entries`.
    pub fn with_slots(slots_per_cpu: u32, entries: u32) -> Self {
        Self::load(entries, slots_per_cpu)
    }

    fn load(entries: u32, slots_per_cpu: u32) -> Self {
        let started_ns = monotonic_ns();
        let opts = LoadOptions {
            flow_map_entries: entries,
            flow_slots_per_cpu: slots_per_cpu,
            owner_refresh_ns: flowlens_collector::loader::OWNER_REFRESH_NS,
            ringbuf_bytes: 1 << 16,
        };
        let mut ebpf = load_flow_object(opts)
            .unwrap_or_else(|e| panic!("loading flow.bpf.o (needs root; verifier): {e:#}"));
        let reader = FlowMapReader::from_object(&mut ebpf, slots_per_cpu)
            .unwrap_or_else(|e| panic!("flow maps: {e}"));
        Self {
            ebpf,
            reader: RefCell::new(Some(reader)),
            started_ns,
        }
    }

    /// The collector's reader over this copy's maps.
    pub fn reader(&self) -> std::cell::RefMut<'_, FlowMapReader> {
        std::cell::RefMut::map(self.reader.borrow_mut(), |r| {
            r.as_mut().expect("the reader was taken")
        })
    }

    /// Moves the reader out (to read from another thread); `flows()` and
    /// `expect()` cannot be used afterwards.
    pub fn take_reader(&self) -> FlowMapReader {
        self.reader
            .borrow_mut()
            .take()
            .expect("the reader was taken")
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

    /// An IP frame shorter than its IP header through a TC test run: newer
    /// kernels refuse it (EINVAL) and the program does not run (returns 0);
    /// 5.10 runs it (returns 1, after checking the verdict and that the frame
    /// is unchanged). Callers add the result to the runs they expect.
    pub fn tc_short(&self, frame: &[u8]) -> u64 {
        let mut out = vec![0u8; frame.len()];
        let r = self.tc_prog().test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        });
        match r {
            Err(aya::programs::ProgramError::SyscallError(e)) => {
                assert_eq!(
                    e.io_error.raw_os_error(),
                    Some(libc::EINVAL),
                    "TC test run of {frame:?}"
                );
                0
            }
            Ok(r) => {
                assert_eq!(r.return_value, TC_ACT_UNSPEC, "TC verdict");
                assert_eq!(out, frame, "TC modified the frame");
                1
            }
            Err(e) => panic!("TC test run of {} bytes: {e:?}", frame.len()),
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

    /// Every flow counted since load: slots and hash summed per key; checks
    /// padding, unused per-CPU values and timestamps on the way, and that the
    /// collector's reader reports the same totals.
    pub fn flows(&self) -> HashMap<FlowKey, Totals> {
        let now = monotonic_ns();
        let mut flows: HashMap<FlowKey, Totals> = HashMap::new();
        let started = self.started_ns;
        let mut add = |key: FlowKey, v: &FlowValue| {
            assert_eq!(key.pad, 0, "key padding {key:?}");
            assert_eq!(v.pad, [0; 6], "value padding {key:?}");
            assert!(v.packets > 0, "an entry with no packets: {key:?}");
            assert!(
                started <= v.first_seen_ns
                    && v.first_seen_ns <= v.last_seen_ns
                    && v.last_seen_ns <= now,
                "timestamps of {key:?}: {v:?} not within [{started}, {now}]"
            );
            let t = flows.entry(key).or_insert(tot(0, 0, 0, 0));
            t.packets += v.packets;
            t.bytes += v.bytes;
            t.tcp_flags |= v.tcp_flags;
            t.flags |= v.flags;
        };
        let mut reader = self.reader();
        for (key, per_cpu) in reader.hash_snapshot() {
            for v in &per_cpu {
                if v.packets == 0 {
                    assert_eq!(
                        *v,
                        FlowValue::default(),
                        "an unused CPU value must stay zero: {key:?}"
                    );
                    continue;
                }
                add(key, v);
            }
        }
        let mut in_slots = std::collections::HashSet::new();
        for (idx, slot) in reader.slot_snapshot() {
            assert_eq!(
                (slot.pad0, slot.pad1, slot.pad2),
                (0, 0, [0; 32]),
                "slot padding"
            );
            assert_eq!(slot.seq % 2, 0, "a stable slot has an even seq");
            let cpu = idx / reader.slots_per_cpu().max(1);
            assert!(
                in_slots.insert((cpu, slot.key)),
                "{:?} twice in the slots of CPU {cpu}",
                slot.key
            );
            add(slot.key, &slot.val);
        }
        // The reader, from scratch, must agree key by key.
        reader.clear_totals();
        let mut obs = Vec::new();
        reader.drain(&mut obs);
        reader.set_reclaim_before(0); // keep every slot's flow for later reads
        assert_eq!(obs.len(), flows.len(), "reader keys vs raw keys");
        for o in &obs {
            let hook = if o.hook == Hook::Egress {
                FLOW_HOOK_TC_EGRESS
            } else {
                FLOW_HOOK_XDP_INGRESS
            };
            let key = FlowKey {
                src: ip_to_mapped(o.tuple.src),
                dst: ip_to_mapped(o.tuple.dst),
                sport: o.tuple.sport,
                dport: o.tuple.dport,
                proto: o.tuple.proto,
                hook,
                pad: 0,
                ifindex: o.ifindex,
            };
            let t = flows
                .get(&key)
                .unwrap_or_else(|| panic!("reader reported {key:?}, not in the maps"));
            assert_eq!(
                (o.packets, o.bytes, o.tcp_flags),
                (t.packets, t.bytes, t.tcp_flags),
                "{key:?}"
            );
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
