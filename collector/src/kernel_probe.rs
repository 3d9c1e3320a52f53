//! What the running kernel offers flowlens' programs, probed once at load
//! time (BTF types and functions, program types, instructions), and the path
//! each hook takes on it. The loader attaches by this plan; `doctor` prints it
//! with what each path costs in fidelity.

use std::sync::OnceLock;

use aya::programs::ProgramType;
use flowlens_ebpf::btf::Btf;
use tracing::debug;

/// Oldest kernel the eBPF programs support; older ones run in AF_PACKET mode.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// Which build of a BPF object the kernel gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `<name>.bpf.o`: 5.12+ instructions and helpers.
    Current,
    /// `<name>.compat.bpf.o`: 5.10 and 5.11.
    Compat,
}

impl Build {
    /// Short name for logs and doctor.
    pub fn name(self) -> &'static str {
        match self {
            Build::Current => "current (5.12+)",
            Build::Compat => "compat (5.10+)",
        }
    }
}

/// Where sends and receives (the owner's context for UDP and established TCP) are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRecvPath {
    /// `tp_btf/sock_send_length`, `tp_btf/sock_recv_length` (6.3+).
    Tracepoint,
    /// fexit on `inet_sendmsg`, `inet6_sendmsg`, `inet_recvmsg`, `inet6_recvmsg`.
    Fexit,
    /// Neither: owners only from connect/accept and the /proc scan.
    Unavailable,
}

/// Which process-exit tracepoint form the kernel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitPath {
    /// `sched_process_exit(p, group_dead)` (6.16+).
    GroupDead,
    /// `sched_process_exit(p)`: the group's end from `signal->live`.
    TaskOnly,
}

/// The probe results.
#[derive(Debug, Clone)]
pub struct KernelProbe {
    /// `uname -r`.
    pub release: String,
    /// `/sys/kernel/btf/vmlinux` was readable and parsed.
    pub btf: bool,
    /// The verifier accepts fetching atomics (5.12+): the current flow build.
    pub fetch_atomics: bool,
    /// fentry/fexit programs load (`BPF_PROG_TYPE_TRACING` with a trampoline).
    pub fexit: bool,
    /// The send/recv path this kernel gets.
    pub send_recv: SendRecvPath,
    /// fexit targets present in BTF (subset of `sock::FEXIT_SEND_RECV`'s functions).
    pub fexit_targets: Vec<&'static str>,
    /// The process-exit form.
    pub exit: ExitPath,
    /// `FLOWLENS_BPF_COMPAT=1`: use the compat builds whatever the kernel.
    pub force_compat: bool,
}

impl KernelProbe {
    /// Probes once per process; later calls return the same answer.
    pub fn get() -> &'static KernelProbe {
        static PROBE: OnceLock<KernelProbe> = OnceLock::new();
        PROBE.get_or_init(KernelProbe::run)
    }

    fn run() -> KernelProbe {
        let release = kernel_release();
        let btf = match Btf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) => {
                debug!(error = %e, "No kernel BTF.");
                None
            }
        };
        let fexit = matches!(
            aya::sys::is_program_supported(ProgramType::Tracing),
            Ok(true)
        );
        let fetch_atomics = probe_fetch_atomics();
        let force_compat = std::env::var("FLOWLENS_BPF_COMPAT").is_ok_and(|v| v == "1");
        Self::decide(release, btf.as_ref(), fexit, fetch_atomics, force_compat)
    }

    /// The plan for a kernel with this BTF and these probe results (pure: tested below).
    pub fn decide(
        release: String,
        btf: Option<&Btf>,
        fexit: bool,
        fetch_atomics: bool,
        force_compat: bool,
    ) -> KernelProbe {
        let fexit_targets: Vec<&'static str> = flowlens_ebpf::sock::FEXIT_SEND_RECV
            .iter()
            .map(|(_, f)| *f)
            .filter(|f| btf.is_some_and(|b| b.func_params(f).is_some()))
            .collect();
        let tracepoints = btf.is_some_and(|b| {
            flowlens_ebpf::sock::TP_BTF_SEND_RECV
                .iter()
                .all(|(_, tp)| b.has_btf_tracepoint(tp))
        });
        let send_recv = if tracepoints {
            SendRecvPath::Tracepoint
        } else if fexit
            && fexit_targets.contains(&"inet_sendmsg")
            && fexit_targets.contains(&"inet_recvmsg")
        {
            SendRecvPath::Fexit
        } else {
            SendRecvPath::Unavailable
        };
        let exit = match btf.and_then(|b| b.btf_tracepoint_args(flowlens_ebpf::sock::TP_EXIT)) {
            Some(n) if n >= 2 => ExitPath::GroupDead,
            _ => ExitPath::TaskOnly,
        };
        KernelProbe {
            release,
            btf: btf.is_some(),
            fetch_atomics,
            fexit,
            send_recv,
            fexit_targets,
            exit,
            force_compat,
        }
    }

    /// Whether the release is at least [`MIN_KERNEL`] (unparsable: assumed new enough).
    pub fn release_supported(&self) -> bool {
        release_at_least(&self.release, MIN_KERNEL).unwrap_or(true)
    }

    /// The build of flow.bpf.c to load first.
    pub fn flow_build(&self) -> Build {
        if self.fetch_atomics && !self.force_compat {
            Build::Current
        } else {
            Build::Compat
        }
    }

    /// The builds of sock.bpf.c to try, in order (the current build's helpers
    /// in tracing programs arrived in 5.11 and 5.12; no probe can ask for them
    /// outside a real attach target, so a refusal falls back to compat).
    pub fn sock_builds(&self) -> &'static [Build] {
        if self.force_compat {
            &[Build::Compat]
        } else if self.fetch_atomics {
            &[Build::Current, Build::Compat]
        } else {
            &[Build::Compat]
        }
    }

    /// Per hook: which path this kernel gets and what it costs, for doctor and the log.
    pub fn hook_paths(&self, sock_build: Option<Build>) -> Vec<HookPath> {
        let mut out = Vec::new();
        let compat = sock_build == Some(Build::Compat);
        out.push(HookPath {
            hook: "packet flows",
            path: format!(
                "XDP (driver mode on NICs) / TC ingress + TC egress; {} build",
                self.flow_build().name()
            ),
            fidelity: if self.flow_build() == Build::Compat && !cfg!(target_arch = "x86_64") {
                "full counts; no flow slots (hash map only, slower per packet) without fetching atomics on this architecture".into()
            } else {
                "full".into()
            },
            degraded: false,
        });
        let (path, fidelity, degraded) = match self.send_recv {
            SendRecvPath::Tracepoint => (
                "tp_btf sock_send_length / sock_recv_length".to_string(),
                "full".to_string(),
                false,
            ),
            SendRecvPath::Fexit => (
                format!("fexit {}", self.fexit_targets.join(", ")),
                if self.fexit_targets.len() < 4 {
                    "same events as the 6.3 tracepoints for the functions present; IPv6 sockets without inet6_* in BTF are not seen at send/recv".to_string()
                } else {
                    "same events as the 6.3 tracepoints (every IPv4/IPv6 TCP, UDP, ping and raw socket in the owner's context)".to_string()
                },
                false,
            ),
            SendRecvPath::Unavailable => (
                "none (no 6.3 tracepoints, fexit refused or its functions missing)".to_string(),
                "UDP and ICMP owners only from the /proc scan; TCP owners from connect/accept; idle connections not re-reported".to_string(),
                true,
            ),
        };
        out.push(HookPath {
            hook: "send/recv owners",
            path,
            fidelity,
            degraded,
        });
        out.push(HookPath {
            hook: "connect, TCP states",
            path: "tp_btf inet_sock_set_state".into(),
            fidelity: "full".into(),
            degraded: false,
        });
        out.push(HookPath {
            hook: "accept owners",
            path: "tracepoints syscalls/sys_exit_accept, sys_exit_accept4".into(),
            fidelity: "full".into(),
            degraded: false,
        });
        out.push(HookPath {
            hook: "process exec/exit",
            path: match self.exit {
                ExitPath::GroupDead => {
                    "tp_btf sched_process_exec, sched_process_exit(group_dead)".into()
                }
                ExitPath::TaskOnly => {
                    "tp_btf sched_process_exec, sched_process_exit(task) + signal->live".into()
                }
            },
            fidelity: match self.exit {
                ExitPath::GroupDead => "full".into(),
                ExitPath::TaskOnly => {
                    "full (threads exiting together may report a process exit twice; harmless)"
                        .into()
                }
            },
            degraded: false,
        });
        out.push(HookPath {
            hook: "ping owners (raw sockets)",
            path: "cgroup_skb egress on the cgroup v2 root".into(),
            fidelity: "full".into(),
            degraded: false,
        });
        if let Some(b) = sock_build {
            out.push(HookPath {
                hook: "socket ids",
                path: format!("{} build", b.name()),
                fidelity: if compat {
                    "kernel socket cookie where one was generated, else an id from the socket's address; a socket whose cookie is generated later (ss, a ping) is reported again under the cookie".into()
                } else {
                    "kernel socket cookies; per-socket storage for the send/recv fast path".into()
                },
                degraded: false,
            });
        }
        out
    }
}

/// One hook's path on this kernel.
#[derive(Debug, Clone)]
pub struct HookPath {
    /// What the hook is for.
    pub hook: &'static str,
    /// Which kernel hook(s) serve it here.
    pub path: String,
    /// What that costs in fidelity ("full" if nothing).
    pub fidelity: String,
    /// Owners are missed on this kernel (doctor warns).
    pub degraded: bool,
}

/// `uname -r` of the running kernel ("" if unreadable).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether `release` ("6.1.0-18-amd64") is at least `min`; None if unparsable.
pub fn release_at_least(release: &str, min: (u32, u32)) -> Option<bool> {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (ma, mi) = (it.next()?, it.next()?);
    Some((ma, mi) >= min)
}

/// Loads a two-instruction socket filter that uses a fetching atomic add
/// (`BPF_ATOMIC | BPF_FETCH`, 5.12+) on the stack. The flow slots claim
/// slots with it; kernels without it get the compat build.
fn probe_fetch_atomics() -> bool {
    // struct bpf_insn: code, dst:4 | src:4, off: i16, imm: i32
    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[1] = (src << 4) | (dst & 0x0f);
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        b
    }
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const STX_DW: u8 = 0x7b; // BPF_STX | BPF_MEM | BPF_DW
    const ATOMIC_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW
    const EXIT: u8 = 0x95;
    const ADD_FETCH: i32 = 0x01; // BPF_ADD | BPF_FETCH
    let prog: Vec<u8> = [
        insn(MOV64_K, 1, 0, 0, 0),
        insn(STX_DW, 10, 1, -8, 0),
        insn(MOV64_K, 1, 0, 0, 1),
        insn(ATOMIC_DW, 10, 1, -8, ADD_FETCH),
        insn(MOV64_K, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ]
    .concat();
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license;
    // everything after zero (the kernel rejects non-zero unknown fields).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_PROG_TYPE_SOCKET_FILTER
    attr[4..8].copy_from_slice(&((prog.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(prog.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    const BPF_PROG_LOAD: libc::c_long = 5;
    // SAFETY: attr is a zeroed bpf_attr whose pointers (insns, license) stay
    // valid for the call; the size passed is attr's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        debug!(error = %std::io::Error::last_os_error(), "Fetching atomics refused: compat flow programs.");
        return false;
    }
    // SAFETY: fd was just returned by the kernel and is owned here.
    unsafe { libc::close(fd as libc::c_int) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_compare() {
        assert_eq!(release_at_least("6.18.44-fc-v657", (6, 3)), Some(true));
        assert_eq!(release_at_least("6.1.0-18-amd64", (6, 3)), Some(false));
        assert_eq!(release_at_least("5.10.0-32-amd64", MIN_KERNEL), Some(true));
        assert_eq!(
            release_at_least("5.4.0-100-generic", MIN_KERNEL),
            Some(false)
        );
        assert_eq!(release_at_least("garbage", MIN_KERNEL), None);
    }

    #[test]
    fn without_btf_nothing_is_attributed_at_send() {
        let p = KernelProbe::decide("5.10.0".into(), None, true, false, false);
        assert!(!p.btf);
        assert_eq!(p.send_recv, SendRecvPath::Unavailable);
        assert_eq!(p.flow_build(), Build::Compat);
        assert_eq!(p.sock_builds(), &[Build::Compat]);
        assert!(p.hook_paths(None).iter().any(|h| h.degraded));
    }

    #[test]
    fn this_kernel_gets_a_plan_from_its_own_btf() {
        let Ok(btf) = Btf::from_sys_fs() else {
            return; // no BTF here: covered by the test above
        };
        let p = KernelProbe::decide(kernel_release(), Some(&btf), true, true, false);
        // Every supported kernel has inet_sendmsg in BTF, and the exit tracepoint.
        assert!(p.fexit_targets.contains(&"inet_sendmsg"), "{p:?}");
        assert!(btf
            .btf_tracepoint_args(flowlens_ebpf::sock::TP_EXIT)
            .is_some());
        let has_tp = btf.has_btf_tracepoint("sock_send_length");
        assert_eq!(p.send_recv == SendRecvPath::Tracepoint, has_tp);
        if !has_tp {
            assert_eq!(p.send_recv, SendRecvPath::Fexit);
        }
        let forced = KernelProbe::decide(kernel_release(), Some(&btf), true, true, true);
        assert_eq!(forced.flow_build(), Build::Compat);
        assert_eq!(forced.sock_builds(), &[Build::Compat]);
    }
}
