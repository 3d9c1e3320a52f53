//! Privilege checks with messages that say what to do.

use anyhow::bail;

/// Capability numbers (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_PTRACE: read other processes' /proc fds and exe.
pub const CAP_SYS_PTRACE: u32 = 19;
/// CAP_SYS_ADMIN: the pre-5.8 catch-all.
pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_PERFMON: tracepoints.
pub const CAP_PERFMON: u32 = 38;
/// CAP_BPF: load programs and create maps.
pub const CAP_BPF: u32 = 39;

/// Effective capability mask of this process.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether a capability is effective.
pub fn has_cap(cap: u32) -> bool {
    effective_caps() & (1u64 << cap) != 0
}

/// Capabilities `flowlens run` needs that this process lacks, by name.
pub fn missing_for_run() -> Vec<&'static str> {
    let have_admin = has_cap(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has_cap(CAP_BPF) && !have_admin {
        missing.push("CAP_BPF");
    }
    if !has_cap(CAP_PERFMON) && !have_admin {
        missing.push("CAP_PERFMON");
    }
    if !has_cap(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has_cap(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    missing
}

/// Fails with an actionable message unless `flowlens run` has what it needs.
pub fn require_for_run() -> anyhow::Result<()> {
    let missing = missing_for_run();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    bail!(
        "flowlens run needs root or the capabilities {} (running as uid {euid}, missing {}). \
         Run it with sudo, or grant them: setcap cap_bpf,cap_perfmon,cap_net_admin,cap_sys_ptrace+ep $(which flowlens). \
         `flowlens doctor` checks everything.",
        "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE",
        missing.join(", ")
    )
}

/// CAP_NET_RAW: AF_PACKET sockets.
pub const CAP_NET_RAW: u32 = 13;

/// Fails with an actionable message unless `flowlens run --capture afpacket`
/// has what it needs (packet sockets, other processes' /proc fds).
pub fn require_for_afpacket() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        (CAP_NET_RAW, "CAP_NET_RAW"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    ]
    .into_iter()
    .filter(|(c, _)| !has_cap(*c))
    .map(|(_, n)| n)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "flowlens run --capture afpacket needs root or the capabilities CAP_NET_RAW, CAP_SYS_PTRACE \
         (missing {}). Run it with sudo, or grant them: setcap cap_net_raw,cap_sys_ptrace+ep $(which flowlens).",
        missing.join(", ")
    )
}
