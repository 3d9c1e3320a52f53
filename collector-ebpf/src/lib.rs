//! flowlens kernel programs: the compiled BPF objects and their ABI.
//!
//! The C sources live in `bpf/`; `build.rs` compiles them with clang. This
//! crate embeds the objects and names every map and program the collector uses.

pub mod abi;

/// Packet-flow programs: XDP (ingress) and TC (egress) aggregation into per-CPU maps.
pub static FLOW_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flow.bpf.o"));
/// Socket-ownership and process programs: tracepoints emitting ring-buffer events.
pub static SOCK_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock.bpf.o"));

/// Empty XDP and TC programs: the floor the kernel-program benchmarks divide by.
pub static BENCH_EMPTY_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_empty.bpf.o"));

/// Program names inside [`BENCH_EMPTY_OBJ`].
pub mod bench_empty {
    /// XDP program returning `XDP_PASS`.
    pub const PROG_XDP: &str = "bench_empty_xdp";
    /// TC classifier returning `TC_ACT_UNSPEC`.
    pub const PROG_TC: &str = "bench_empty_tc";
    /// Empty programs on the socket/process hooks, as (empty program,
    /// flowlens program it stands beside).
    pub const SOCK_HOOKS: [(&str, &str); 8] = [
        ("bench_empty_sock_send", super::sock::PROG_SEND),
        ("bench_empty_sock_recv", super::sock::PROG_RECV),
        ("bench_empty_sock_state", super::sock::PROG_STATE),
        ("bench_empty_exec", super::sock::PROG_EXEC),
        ("bench_empty_exit", super::sock::PROG_EXIT),
        ("bench_empty_accept4", super::sock::PROG_ACCEPT4),
        ("bench_empty_accept", super::sock::PROG_ACCEPT),
        ("bench_empty_icmp_egress", super::sock::PROG_ICMP_EGRESS),
    ];
}

/// Program and map names inside [`FLOW_OBJ`].
pub mod flow {
    /// XDP program counting ingress packets.
    pub const PROG_XDP: &str = "flowlens_xdp";
    /// TC classifier counting egress packets.
    pub const PROG_TC: &str = "flowlens_tc";
    /// TC classifier counting ingress packets where XDP is not used (virtual
    /// devices, no XDP driver support).
    pub const PROG_TC_INGRESS: &str = "flowlens_tc_ingress";
    /// `BPF_MAP_TYPE_PERCPU_HASH` FlowKey -> FlowValue.
    pub const MAP_FLOWS: &str = "flowlens_flows";
    /// `BPF_MAP_TYPE_ARRAY` (`BPF_F_MMAPABLE`) of FlowSlot: `nr_cpus << slot_bits` entries.
    pub const MAP_SLOTS: &str = "flowlens_slots";
    /// `BPF_MAP_TYPE_ARRAY` of one FlowCtl.
    pub const MAP_CTL: &str = "flowlens_ctl";
    /// `const volatile u32`: log2 of the slots per CPU; 0 = no slots.
    pub const GLOBAL_SLOT_BITS: &str = "fl_slot_bits";
    /// `const volatile u64`: seed of the slot hash.
    pub const GLOBAL_HASH_SEED: &str = "fl_hash_seed";
    /// Largest `fl_slot_bits` the programs accept.
    pub const MAX_SLOT_BITS: u32 = 24;
    /// `BPF_MAP_TYPE_LRU_HASH` FragKey -> FragValue.
    pub const MAP_FRAGS: &str = "flowlens_frags";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` of u64 drop/health counters (`CNT_*`).
    pub const MAP_COUNTERS: &str = "flowlens_counters";
}

/// Program and map names inside [`SOCK_OBJ`].
pub mod sock {
    /// `const volatile u64`: a socket in use is reported again this long after its last report (ns).
    pub const GLOBAL_REFRESH_NS: &str = "fl_refresh_ns";
    /// `tp_btf/sock_send_length`.
    pub const PROG_SEND: &str = "flowlens_sock_send";
    /// `tp_btf/sock_recv_length`.
    pub const PROG_RECV: &str = "flowlens_sock_recv";
    /// `tp_btf/inet_sock_set_state`.
    pub const PROG_STATE: &str = "flowlens_sock_state";
    /// `tracepoint/syscalls/sys_exit_accept4`.
    pub const PROG_ACCEPT4: &str = "flowlens_accept4";
    /// `tracepoint/syscalls/sys_exit_accept`.
    pub const PROG_ACCEPT: &str = "flowlens_accept";
    /// `tp_btf/sched_process_exec`.
    pub const PROG_EXEC: &str = "flowlens_exec";
    /// `tp_btf/sched_process_exit`.
    pub const PROG_EXIT: &str = "flowlens_exit";
    /// `cgroup_skb/egress` on the cgroup v2 root: socket of each ICMP echo request.
    pub const PROG_ICMP_EGRESS: &str = "flowlens_icmp_egress";
    /// `BPF_MAP_TYPE_LRU_HASH` IcmpEchoKey -> socket cookie (u64).
    pub const MAP_ICMP_ECHO: &str = "flowlens_icmp_echo";
    /// `BPF_MAP_TYPE_RINGBUF` of events (`EV_*`).
    pub const MAP_EVENTS: &str = "flowlens_events";
    /// `BPF_MAP_TYPE_LRU_HASH` cookie -> u64: sockets already reported.
    pub const MAP_SEEN: &str = "flowlens_sock_seen";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` of u64 drop/health counters (`CNT_*`).
    pub const MAP_COUNTERS: &str = "flowlens_counters";
    /// Tracepoints as (program, category or BTF name).
    pub const TP_BTF: [(&str, &str); 5] = [
        (PROG_SEND, "sock_send_length"),
        (PROG_RECV, "sock_recv_length"),
        (PROG_STATE, "inet_sock_set_state"),
        (PROG_EXEC, "sched_process_exec"),
        (PROG_EXIT, "sched_process_exit"),
    ];
    /// Classic tracepoints as (program, category, name).
    pub const TRACEPOINTS: [(&str, &str, &str); 2] = [
        (PROG_ACCEPT4, "syscalls", "sys_exit_accept4"),
        (PROG_ACCEPT, "syscalls", "sys_exit_accept"),
    ];
}
