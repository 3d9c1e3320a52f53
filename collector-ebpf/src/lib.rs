//! flowlens kernel programs: the compiled BPF objects and their ABI.
//!
//! The C sources live in `bpf/`; `build.rs` compiles them with clang. This
//! crate embeds the objects and names every map and program the collector uses.

pub mod abi;
pub mod btf;

/// Packet-flow programs: XDP (ingress) and TC (egress) aggregation into per-CPU maps.
pub static FLOW_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flow.bpf.o"));
/// Socket-ownership and process programs: tracepoints emitting ring-buffer events.
pub static SOCK_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock.bpf.o"));

/// Golden-signal programs: TCP RTT and retransmits (sockops, tracepoints),
/// resets, and DNS message copies (cgroup_skb); one build for every kernel.
pub static SIGNALS_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/signals.bpf.o"));

/// [`FLOW_OBJ`] built for kernels 5.10 and 5.11 (`-DFL_COMPAT`: no fetching
/// atomics, no pointer arguments to global functions); same maps and programs.
pub static FLOW_COMPAT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flow.compat.bpf.o"));
/// [`SOCK_OBJ`] built for kernels 5.10 and 5.11 (`-DFL_COMPAT`: no
/// `bpf_get_current_task_btf`, no socket cookie or socket storage helpers in
/// tracing programs); same maps and programs.
pub static SOCK_COMPAT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock.compat.bpf.o"));

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
    /// `tp_btf/sock_send_length` (6.3+).
    pub const PROG_SEND: &str = "flowlens_sock_send";
    /// `tp_btf/sock_recv_length` (6.3+).
    pub const PROG_RECV: &str = "flowlens_sock_recv";
    /// `fexit/inet_sendmsg`: sends where the 6.3 tracepoints are missing.
    pub const PROG_FEXIT_SEND4: &str = "flowlens_inet_sendmsg";
    /// `fexit/inet6_sendmsg`.
    pub const PROG_FEXIT_SEND6: &str = "flowlens_inet6_sendmsg";
    /// `fexit/inet_recvmsg`: receives where the 6.3 tracepoints are missing.
    pub const PROG_FEXIT_RECV4: &str = "flowlens_inet_recvmsg";
    /// `fexit/inet6_recvmsg`.
    pub const PROG_FEXIT_RECV6: &str = "flowlens_inet6_recvmsg";
    /// The fexit programs as (program, kernel function).
    pub const FEXIT_SEND_RECV: [(&str, &str); 4] = [
        (PROG_FEXIT_SEND4, "inet_sendmsg"),
        (PROG_FEXIT_SEND6, "inet6_sendmsg"),
        (PROG_FEXIT_RECV4, "inet_recvmsg"),
        (PROG_FEXIT_RECV6, "inet6_recvmsg"),
    ];
    /// `tp_btf/inet_sock_set_state`.
    pub const PROG_STATE: &str = "flowlens_sock_state";
    /// `tracepoint/syscalls/sys_exit_accept4`.
    pub const PROG_ACCEPT4: &str = "flowlens_accept4";
    /// `tracepoint/syscalls/sys_exit_accept`.
    pub const PROG_ACCEPT: &str = "flowlens_accept";
    /// `tp_btf/sched_process_exec`.
    pub const PROG_EXEC: &str = "flowlens_exec";
    /// `tp_btf/sched_process_exit` with its `group_dead` argument (6.16+).
    pub const PROG_EXIT: &str = "flowlens_exit";
    /// `tp_btf/sched_process_exit` of older kernels (the task only): the
    /// group's end is read from `signal->live`.
    pub const PROG_EXIT_TASK: &str = "flowlens_exit_task";
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
    /// The 6.3 send/recv tracepoints as (program, BTF name).
    pub const TP_BTF_SEND_RECV: [(&str, &str); 2] = [
        (PROG_SEND, "sock_send_length"),
        (PROG_RECV, "sock_recv_length"),
    ];
    /// BTF tracepoints every supported kernel has, as (program, BTF name).
    pub const TP_BTF: [(&str, &str); 2] = [
        (PROG_STATE, "inet_sock_set_state"),
        (PROG_EXEC, "sched_process_exec"),
    ];
    /// BTF name of the process exit tracepoint ([`PROG_EXIT`] or [`PROG_EXIT_TASK`]).
    pub const TP_EXIT: &str = "sched_process_exit";
    /// Classic tracepoints as (program, category, name).
    pub const TRACEPOINTS: [(&str, &str, &str); 2] = [
        (PROG_ACCEPT4, "syscalls", "sys_exit_accept4"),
        (PROG_ACCEPT, "syscalls", "sys_exit_accept"),
    ];
}

/// Program and map names inside [`SIGNALS_OBJ`].
pub mod signals {
    /// `sockops` on the cgroup v2 root: RTT samples and retransmits per socket.
    pub const PROG_SOCKOPS: &str = "flowlens_tcp_sockops";
    /// `tp_btf/tcp_retransmit_skb`.
    pub const PROG_RETRANSMIT: &str = "flowlens_tcp_retransmit";
    /// `tp_btf/inet_sock_set_state`: a socket's final signals at CLOSE.
    pub const PROG_CLOSE: &str = "flowlens_tcp_close";
    /// `tp_btf/tcp_send_reset`.
    pub const PROG_SEND_RESET: &str = "flowlens_tcp_send_reset";
    /// `tp_btf/tcp_receive_reset`.
    pub const PROG_RECV_RESET: &str = "flowlens_tcp_recv_reset";
    /// `cgroup_skb/egress` on the cgroup v2 root: DNS messages sent.
    pub const PROG_DNS_EGRESS: &str = "flowlens_dns_egress";
    /// `cgroup_skb/ingress` on the cgroup v2 root: DNS messages received.
    pub const PROG_DNS_INGRESS: &str = "flowlens_dns_ingress";
    /// `BPF_MAP_TYPE_HASH` SigKey -> TcpSig.
    pub const MAP_TCP_SIGS: &str = "flowlens_tcp_sigs";
    /// `BPF_MAP_TYPE_ARRAY` of one SigCtl.
    pub const MAP_CTL: &str = "flowlens_sig_ctl";
    /// `BPF_MAP_TYPE_RINGBUF` of EV_TCP_RESET, EV_TCP_SIG_FINAL and EV_DNS.
    pub const MAP_EVENTS: &str = "flowlens_sig_events";
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` of u64 counters (`CNT_*`).
    pub const MAP_COUNTERS: &str = "flowlens_counters";
    /// The BTF tracepoints as (program, BTF name, signal they serve).
    pub const TP_BTF: [(&str, &str, &str); 4] = [
        (PROG_RETRANSMIT, "tcp_retransmit_skb", "retransmits"),
        (PROG_CLOSE, "inet_sock_set_state", "retransmits"),
        (PROG_SEND_RESET, "tcp_send_reset", "resets"),
        (PROG_RECV_RESET, "tcp_receive_reset", "resets"),
    ];
}
