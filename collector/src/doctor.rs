//! `flowlens doctor`: what this kernel and these privileges allow.

use std::path::Path;

use aya::programs::{SchedClassifier, Xdp};
use flowlens_ebpf::flow;

use crate::{enrich, loader, privileges};

/// One line of the report.
#[derive(Debug)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Needed by flowlens (a failed required check makes doctor exit 1).
    pub required: bool,
    /// Details or the fix.
    pub detail: String,
}

fn check(name: &str, ok: bool, required: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        required,
        detail: detail.into(),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (Some(ma), Some(mi)) = (it.next(), it.next()) else {
        return false;
    };
    (ma, mi) >= (major, minor)
}

/// Runs every check.
pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let rel = kernel_release();
    out.push(check(
        "kernel >= 6.3 (sock_send/recv_length tracepoints; older kernels fall back to AF_PACKET)",
        kernel_at_least(&rel, 6, 3),
        true,
        format!("running {rel}"),
    ));
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    out.push(check(
        "kernel BTF (/sys/kernel/btf/vmlinux)",
        btf,
        true,
        if btf {
            "present".to_string()
        } else {
            "missing: needs CONFIG_DEBUG_INFO_BTF=y".to_string()
        },
    ));
    let missing = privileges::missing_for_run();
    out.push(check(
        "privileges",
        missing.is_empty(),
        true,
        if missing.is_empty() {
            "root or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE".to_string()
        } else {
            format!("missing {}: run as root", missing.join(", "))
        },
    ));
    let cg = enrich::cgroup2_mount();
    out.push(check(
        "cgroup v2 mounted",
        cg.is_some(),
        false,
        cg.map(|p| p.display().to_string())
            .unwrap_or_else(|| "not found: container attribution needs cgroup v2".into()),
    ));
    let opts = loader::LoadOptions {
        flow_map_entries: 1024,
        flow_slots_per_cpu: 1024,
        owner_refresh_ns: crate::loader::OWNER_REFRESH_NS,
        ringbuf_bytes: 1 << 16,
    };
    match loader::load_flow_object(opts) {
        Ok(mut bpf) => {
            out.push(check(
                "XDP and TC flow programs load (verifier)",
                true,
                true,
                "flowlens_xdp, flowlens_tc, flowlens_tc_ingress",
            ));
            // Attach to lo to prove attachment works; dropped right away.
            let lo = crate::ifaces::by_name("lo");
            if let Some(lo) = lo {
                let xdp_ok = bpf
                    .program_mut(flow::PROG_XDP)
                    .and_then(|p| <&mut Xdp>::try_from(p).ok())
                    .map(|x| {
                        x.attach_to_if_index(lo.index, aya::programs::XdpMode::Skb)
                            .is_ok()
                    })
                    .unwrap_or(false);
                out.push(check(
                    "XDP attach (generic mode on lo; driver mode is used on NICs that support it)",
                    xdp_ok,
                    false,
                    "",
                ));
                for (name, what, dir) in [
                    (
                        flow::PROG_TC_INGRESS,
                        "TC ingress attach (TCX or clsact) on lo",
                        aya::programs::TcAttachType::Ingress,
                    ),
                    (
                        flow::PROG_TC,
                        "TC egress attach (TCX or clsact) on lo",
                        aya::programs::TcAttachType::Egress,
                    ),
                ] {
                    let ok = bpf
                        .program_mut(name)
                        .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
                        .map(|t| t.attach("lo", dir).is_ok())
                        .unwrap_or(false);
                    out.push(check(what, ok, true, ""));
                }
            }
        }
        Err(e) => out.push(check(
            "XDP and TC flow programs load (verifier)",
            false,
            true,
            e.to_string(),
        )),
    }
    match loader::load_sock_object(opts, true) {
        Ok(_) => out.push(check(
            "socket and process hooks (tp_btf sock_send/recv_length, inet_sock_set_state, sched_process_exec/exit; tracepoints sys_exit_accept/accept4)",
            true,
            true,
            "loaded and attached",
        )),
        Err(e) => out.push(check("socket and process hooks", false, true, e.to_string())),
    }
    out.push(match crate::conntrack::probe() {
        Ok(n) => check(
            "connection tracking (NAT join over ctnetlink)",
            true,
            false,
            format!("readable; {n} translated connections now"),
        ),
        Err(e) => check(
            "connection tracking (NAT join over ctnetlink)",
            false,
            false,
            format!(
                "{e}: NAT'd conversations are reported once per side, flagged nat=\"unjoined\""
            ),
        ),
    });
    let docker = Path::new("/var/run/docker.sock").exists();
    out.push(check(
        "Docker API socket (container names and images)",
        docker,
        false,
        if docker {
            "/var/run/docker.sock"
        } else {
            "absent: container ids still resolved from cgroups"
        },
    ));
    out.push(check(
        "fentry/kprobe",
        true,
        false,
        "not used: flowlens takes socket owners from tracepoints, which every BTF kernel has",
    ));
    out
}

/// Prints the report; returns the process exit code.
pub fn run() -> i32 {
    let checks = checks();
    let mut failed = Vec::new();
    for c in &checks {
        let status = match (c.ok, c.required) {
            (true, _) => "ok",
            (false, true) => "MISSING",
            (false, false) => "warn",
        };
        println!("[{status:>7}] {}: {}", c.name, c.detail);
        if !c.ok && c.required {
            failed.push(c.name.clone());
        }
    }
    if failed.is_empty() {
        println!("flowlens can run here.");
        0
    } else {
        println!("flowlens cannot run here; missing: {}", failed.join("; "));
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_compare() {
        assert!(kernel_at_least("6.18.44-fc-v657", 6, 3));
        assert!(!kernel_at_least("6.1.0-18-amd64", 6, 3));
        assert!(kernel_at_least("5.8.0", 5, 8));
        assert!(!kernel_at_least("5.4.0-100-generic", 5, 8));
        assert!(!kernel_at_least("garbage", 5, 8));
    }
}
