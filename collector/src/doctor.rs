//! `flowlens doctor`: what this kernel and these privileges allow.

use std::path::Path;

use aya::programs::{SchedClassifier, Xdp};
use flowlens_ebpf::flow;

use crate::{
    enrich,
    kernel_probe::KernelProbe,
    loader::{self, LoadError},
    privileges,
};

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

/// Attaches TC program `name` to `iface` (adding clsact first before 6.6).
fn attach_tc(
    bpf: &mut aya::Ebpf,
    name: &'static str,
    iface: &str,
    dir: aya::programs::TcAttachType,
) -> Result<(), LoadError> {
    loader::ensure_clsact(iface)?;
    let refused = |e: aya::programs::ProgramError| LoadError::Program {
        program: name,
        message: loader::describe_program_error(&e),
    };
    let tc: &mut SchedClassifier = bpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(refused)?;
    tc.attach(iface, dir).map(|_| ()).map_err(refused)
}

/// Runs every check.
pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let probe = KernelProbe::get();
    out.push(check(
        "kernel >= 5.10 (older kernels fall back to AF_PACKET)",
        probe.release_supported(),
        true,
        format!("running {}", probe.release),
    ));
    out.push(check(
        "kernel BTF (/sys/kernel/btf/vmlinux)",
        probe.btf,
        true,
        if probe.btf {
            "present".to_string()
        } else {
            "missing: needs CONFIG_DEBUG_INFO_BTF=y (without it flowlens falls back to AF_PACKET)"
                .to_string()
        },
    ));
    let missing = privileges::missing_for_run();
    out.push(check(
        "privileges",
        missing.is_empty(),
        true,
        if missing.is_empty() {
            format!("root or {}", privileges::RUN_CAPS)
        } else {
            format!(
                "missing {}: run as root, or {} the binary",
                missing.join(", "),
                privileges::SETCAP_RUN
            )
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
    match loader::load_flow_object_built(opts) {
        Ok((mut bpf, build)) => {
            out.push(check(
                "XDP and TC flow programs load (verifier)",
                true,
                true,
                format!(
                    "flowlens_xdp, flowlens_tc, flowlens_tc_ingress ({} build)",
                    build.name()
                ),
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
                    let result = attach_tc(&mut bpf, name, "lo", dir);
                    out.push(check(
                        what,
                        result.is_ok(),
                        true,
                        result.err().map(|e| e.to_string()).unwrap_or_default(),
                    ));
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
    let mut sock_build = None;
    let mut plan = probe.clone();
    match loader::load_sock_hooks(opts, true) {
        Ok((_, hooks)) => {
            sock_build = Some(hooks.build);
            plan.send_recv = hooks.send_recv;
            out.push(check(
                "socket and process hooks load and attach",
                true,
                true,
                hooks.programs.join(", "),
            ));
            if let Some(e) = hooks.send_recv_error {
                out.push(check("send/recv hooks (fexit)", false, false, e));
            }
        }
        Err(e) => out.push(check(
            "socket and process hooks load and attach",
            false,
            true,
            e.to_string(),
        )),
    }
    let signal_opts = crate::signals_loader::SignalOptions {
        max_sockets: 1024,
        ringbuf_bytes: 1 << 16,
    };
    match crate::signals_loader::load_signals_object(signal_opts) {
        Ok((_, hooks)) => {
            out.push(check(
                "golden-signal hooks (RTT, retransmits, resets, DNS) load and attach",
                hooks.missing.is_empty(),
                false,
                hooks.programs.join(", "),
            ));
            for (program, signal, why) in hooks.missing {
                out.push(check(
                    &format!("signal hook: {program}"),
                    false,
                    false,
                    format!("{signal} missing from the records: {why}"),
                ));
            }
        }
        Err(e) => out.push(check(
            "golden-signal hooks (RTT, retransmits, resets, DNS) load and attach",
            false,
            false,
            format!("{e}: records carry no RTT, retransmits, resets or DNS names"),
        )),
    }
    for h in plan.hook_paths(sock_build) {
        out.push(check(
            &format!("hook: {}", h.hook),
            !h.degraded,
            false,
            format!("{} — fidelity: {}", h.path, h.fidelity),
        ));
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
        if c.detail.is_empty() {
            println!("[{status:>7}] {}", c.name);
        } else {
            println!("[{status:>7}] {}: {}", c.name, c.detail);
        }
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
