//! Privilege checks with messages that say what to do.

use std::path::{Path, PathBuf};

use anyhow::bail;

/// Capability numbers (linux/capability.h).
/// CAP_DAC_OVERRIDE: bypasses every file permission check.
pub const CAP_DAC_OVERRIDE: u32 = 1;
/// CAP_DAC_READ_SEARCH: read any file and directory (tracefs is root-only).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// CAP_NET_ADMIN: attach XDP/TC and cgroup programs.
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

/// The capabilities `flowlens run` needs without root, for messages.
pub const RUN_CAPS: &str =
    "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH";

/// The `setcap` line that grants them (README, errors).
pub const SETCAP_RUN: &str =
    "setcap cap_bpf,cap_perfmon,cap_net_admin,cap_sys_ptrace,cap_dac_read_search+ep";

/// tracefs (where the accept tracepoints' ids are read), as this process
/// sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracefs {
    /// Mounted and readable here.
    Readable(PathBuf),
    /// Mounted, but not readable by this process: mode 0700, root only
    /// (needs CAP_DAC_READ_SEARCH). Not "missing": mounting again cannot help.
    Unreadable(PathBuf),
    /// Not mounted at either place.
    Absent,
}

/// Looks for tracefs at `/sys/kernel/tracing`, then `/sys/kernel/debug/tracing`.
pub fn tracefs() -> Tracefs {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        // `Path::exists` says false on EACCES too: ask for the error.
        match std::fs::metadata(Path::new(dir).join("events")) {
            Ok(_) => return Tracefs::Readable(dir.into()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Tracefs::Unreadable(dir.into());
            }
            Err(_) => {}
        }
    }
    Tracefs::Absent
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
    // Tested, not inferred: root-only tracefs is common, not universal.
    if matches!(tracefs(), Tracefs::Unreadable(_)) {
        missing.push("CAP_DAC_READ_SEARCH");
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
    let tracefs = match tracefs() {
        Tracefs::Unreadable(p) => format!(
            "; CAP_DAC_READ_SEARCH because tracefs ({}) is readable by root only",
            p.display()
        ),
        _ => String::new(),
    };
    bail!(
        "flowlens run needs root or the capabilities {RUN_CAPS} (running as uid {euid}, missing {}{tracefs}). \
         Run it with sudo, or grant them: {SETCAP_RUN} $(which flowlens). \
         `flowlens doctor` checks everything.",
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
