//! Shared pieces of the flowlens benchmark binaries: frame builders, medians,
//! `/proc` readers and the one table format every binary prints.
//!
//! Every number is reported beside a baseline measured in the same run
//! (interleaved), because the machine is shared and absolute numbers drift.

pub mod frames;

/// Empty programs of every type and hook flowlens uses
/// (`bpf/bench_empty.bpf.c`): the floor the kernel benchmarks divide by.
pub static BENCH_EMPTY_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_empty.bpf.o"));

/// Program names inside [`BENCH_EMPTY_OBJ`].
pub mod bench_empty {
    use flowlens_ebpf::{signals, sock};

    /// XDP program returning `XDP_PASS`.
    pub const PROG_XDP: &str = "bench_empty_xdp";
    /// TC classifier returning `TC_ACT_UNSPEC`.
    pub const PROG_TC: &str = "bench_empty_tc";
    /// Empty programs on the socket/process hooks, as (empty program,
    /// flowlens program it stands beside).
    pub const SOCK_HOOKS: [(&str, &str); 13] = [
        ("bench_empty_sock_send", sock::PROG_SEND),
        ("bench_empty_sock_recv", sock::PROG_RECV),
        ("bench_empty_inet_sendmsg", sock::PROG_FEXIT_SEND4),
        ("bench_empty_inet6_sendmsg", sock::PROG_FEXIT_SEND6),
        ("bench_empty_inet_recvmsg", sock::PROG_FEXIT_RECV4),
        ("bench_empty_inet6_recvmsg", sock::PROG_FEXIT_RECV6),
        ("bench_empty_sock_state", sock::PROG_STATE),
        ("bench_empty_exec", sock::PROG_EXEC),
        ("bench_empty_exit", sock::PROG_EXIT),
        ("bench_empty_exit_task", sock::PROG_EXIT_TASK),
        ("bench_empty_accept4", sock::PROG_ACCEPT4),
        ("bench_empty_accept", sock::PROG_ACCEPT),
        ("bench_empty_icmp_egress", sock::PROG_ICMP_EGRESS),
    ];

    /// cgroup_skb egress returning 1 (pass).
    pub const CGROUP_SKB_EGRESS: &str = "bench_empty_icmp_egress";
    /// cgroup_skb ingress returning 1 (pass).
    pub const CGROUP_SKB_INGRESS: &str = "bench_empty_cgroup_ingress";

    /// Empty programs on the hooks of the golden-signal programs
    /// (signals.bpf.c), as (empty program, signal program it stands beside,
    /// BTF tracepoint for the `tp_btf` ones).
    pub const SIGNAL_HOOKS: [(&str, &str, Option<&str>); 7] = [
        ("bench_empty_sockops", signals::PROG_SOCKOPS, None),
        (
            "bench_empty_tcp_retransmit",
            signals::PROG_RETRANSMIT,
            Some("tcp_retransmit_skb"),
        ),
        (
            "bench_empty_sock_state",
            signals::PROG_CLOSE,
            Some("inet_sock_set_state"),
        ),
        (
            "bench_empty_tcp_send_reset",
            signals::PROG_SEND_RESET,
            Some("tcp_send_reset"),
        ),
        (
            "bench_empty_tcp_recv_reset",
            signals::PROG_RECV_RESET,
            Some("tcp_receive_reset"),
        ),
        ("bench_empty_icmp_egress", signals::PROG_DNS_EGRESS, None),
        (
            "bench_empty_cgroup_ingress",
            signals::PROG_DNS_INGRESS,
            None,
        ),
    ];
}

use std::time::Duration;

/// Median of `xs` (mean of the middle two for an even count); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One result row: `| section | case | measured | baseline | ratio | goal |`.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which part of the suite (kernel, hooks, live, memory).
    pub section: &'static str,
    /// What was measured.
    pub case: String,
    /// The measured value with its unit.
    pub value: String,
    /// The baseline measured in the same run, with its unit ("" if none).
    pub baseline: String,
    /// value / baseline, or another derived figure.
    pub ratio: String,
    /// The goal and whether it is met ("" if there is no goal).
    pub goal: String,
}

/// The header of the table all binaries print.
pub const TABLE_HEADER: &str =
    "| section | case | measured | baseline (same run) | ratio | goal |\n|---|---|---|---|---|---|";

impl Row {
    /// The markdown line of this row.
    pub fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            self.section, self.case, self.value, self.baseline, self.ratio, self.goal
        )
    }
}

/// Prints the header and the rows (stdout; `bench/run-all.sh` merges them).
pub fn print_table(rows: &[Row], with_header: bool) {
    if with_header {
        println!("{TABLE_HEADER}");
    }
    for r in rows {
        println!("{}", r.line());
    }
}

/// "met" or "MISSED" for a ratio that must stay at or under `max`.
pub fn goal_max(ratio: f64, max: f64) -> String {
    let verdict = if ratio <= max { "met" } else { "MISSED" };
    format!("≤ {max}×: {verdict}")
}

/// "met" or "MISSED" for a ratio that must stay at or above `min`.
pub fn goal_min(ratio: f64, min: f64) -> String {
    let verdict = if ratio >= min { "met" } else { "MISSED" };
    format!("≥ {min}: {verdict}")
}

/// Whether `--smoke` was passed: tiny repeat counts, only checks the benchmark still runs.
pub fn smoke_requested() -> bool {
    std::env::args().any(|a| a == "--smoke")
}

/// The value of `--name=value` on the command line.
pub fn arg_value(name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    std::env::args().find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

/// `--name=N` parsed, or `default`.
pub fn arg_u64(name: &str, default: u64) -> u64 {
    arg_value(name)
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Resident set size of a process in KiB (`VmRSS` of /proc/<pid>/status); `None` if gone.
pub fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}

/// utime + stime of a process (/proc/<pid>/stat), as a duration.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// Pins the calling thread to one CPU (less migration noise); errors are ignored.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: set is a zeroed cpu_set_t, CPU_SET writes inside it, and
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(rss_kib("self").is_some_and(|k| k > 0));
        assert!(cpu_time("self").is_some());
    }
}
