//! The socket/process object: the build and hooks this kernel gets
//! ([`KernelProbe`]), loaded, and attached once (links live as long as the
//! returned object).

use aya::{
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FExit, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use flowlens_ebpf::{sock, SOCK_COMPAT_OBJ, SOCK_OBJ};
use tracing::{info, warn};

use crate::{
    kernel_probe::{Build, ExitPath, KernelProbe, SendRecvPath},
    loader::{
        check_kernel, compat_may_help, describe_program_error, ensure_tracefs, object_error,
        program_error, LoadError, LoadOptions,
    },
};

/// Which hooks the socket object got on this kernel.
#[derive(Debug, Clone)]
pub struct SockHooks {
    /// The build of sock.bpf.c that loaded.
    pub build: Build,
    /// The send/recv path actually loaded (may be worse than the probe's
    /// plan if the kernel refused it).
    pub send_recv: SendRecvPath,
    /// Why the planned send/recv path could not be used, if it could not.
    pub send_recv_error: Option<String>,
    /// Programs loaded (and attached, if asked).
    pub programs: Vec<&'static str>,
}

/// The loaded socket/process object with every hook attached (links live as
/// long as the returned object).
pub fn load_sock_object(opts: LoadOptions, attach: bool) -> Result<Ebpf, LoadError> {
    load_sock_hooks(opts, attach).map(|(bpf, _)| bpf)
}

/// [`load_sock_object`], and which hooks this kernel got.
pub fn load_sock_hooks(opts: LoadOptions, attach: bool) -> Result<(Ebpf, SockHooks), LoadError> {
    let probe = KernelProbe::get();
    check_kernel(probe)?;
    let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(e.to_string()))?;
    let builds = probe.sock_builds();
    let mut first_error = None;
    for (i, build) in builds.iter().enumerate() {
        match load_sock_build(*build, probe, &btf, opts) {
            Ok((mut bpf, mut hooks)) => {
                if let Some(e) = &first_error {
                    warn!(error = %e, "The kernel refused the current socket programs; using the compat build.");
                }
                if attach {
                    attach_sock(&mut bpf, &mut hooks)?;
                }
                info!(build = hooks.build.name(), send_recv = ?hooks.send_recv, programs = ?hooks.programs, "Socket and process hooks loaded.");
                return Ok((bpf, hooks));
            }
            Err(e) if i + 1 < builds.len() && compat_may_help(&e) => first_error = Some(e),
            Err(e) => return Err(first_error.unwrap_or(e)),
        }
    }
    Err(first_error.unwrap_or(LoadError::MissingProgram(sock::PROG_STATE)))
}

/// Loads another build of `sock.bpf.c` (same maps and programs) with the
/// hooks this kernel gets, as [`load_sock_hooks`] loads the embedded one:
/// benchmarks compare builds.
pub fn load_sock_hooks_from(
    object: &[u8],
    build: Build,
    opts: LoadOptions,
    attach: bool,
) -> Result<(Ebpf, SockHooks), LoadError> {
    let probe = KernelProbe::get();
    check_kernel(probe)?;
    let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(e.to_string()))?;
    let (mut bpf, mut hooks) = load_sock_object_bytes(object, build, probe, &btf, opts)?;
    if attach {
        attach_sock(&mut bpf, &mut hooks)?;
    }
    Ok((bpf, hooks))
}

fn load_sock_build(
    build: Build,
    probe: &KernelProbe,
    btf: &Btf,
    opts: LoadOptions,
) -> Result<(Ebpf, SockHooks), LoadError> {
    let object = match build {
        Build::Current => SOCK_OBJ,
        Build::Compat => SOCK_COMPAT_OBJ,
    };
    load_sock_object_bytes(object, build, probe, btf, opts)
}

fn load_sock_object_bytes(
    object: &[u8],
    build: Build,
    probe: &KernelProbe,
    btf: &Btf,
    opts: LoadOptions,
) -> Result<(Ebpf, SockHooks), LoadError> {
    let refresh = opts.owner_refresh_ns.max(1);
    let mut bpf = EbpfLoader::new()
        .btf(Some(btf))
        .map_max_entries(sock::MAP_EVENTS, opts.ringbuf_bytes)
        .override_global(sock::GLOBAL_REFRESH_NS, &refresh, true)
        .load(object)
        .map_err(|e| object_error("socket programs", e))?;
    let mut hooks = SockHooks {
        build,
        send_recv: probe.send_recv,
        send_recv_error: None,
        programs: Vec::new(),
    };
    let exit = match probe.exit {
        ExitPath::GroupDead => sock::PROG_EXIT,
        ExitPath::TaskOnly => sock::PROG_EXIT_TASK,
    };
    for (name, tp) in sock::TP_BTF.into_iter().chain([(exit, sock::TP_EXIT)]) {
        load_tp_btf(&mut bpf, btf, name, tp)?;
        hooks.programs.push(name);
    }
    match probe.send_recv {
        SendRecvPath::Tracepoint => {
            for (name, tp) in sock::TP_BTF_SEND_RECV {
                load_tp_btf(&mut bpf, btf, name, tp)?;
                hooks.programs.push(name);
            }
        }
        SendRecvPath::Fexit => {
            // A kernel may refuse trampolines (lockdown, no ftrace on this
            // architecture): then flowlens runs with connect/accept owners
            // only, and says so.
            let mut loaded = Vec::new();
            for (name, func) in sock::FEXIT_SEND_RECV {
                if !probe.fexit_targets.contains(&func) {
                    continue;
                }
                match load_fexit(&mut bpf, btf, name, func) {
                    Ok(()) => loaded.push(name),
                    Err(e @ LoadError::Program { .. }) | Err(e @ LoadError::Permission) => {
                        warn!(program = name, error = %e, "fexit refused: send/recv owners unavailable on this kernel.");
                        hooks.send_recv = SendRecvPath::Unavailable;
                        hooks.send_recv_error = Some(e.to_string());
                        loaded.clear();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            hooks.programs.extend(loaded);
        }
        SendRecvPath::Unavailable => {
            warn!("No send/recv hook on this kernel (no 6.3 tracepoints, no fexit): UDP owners come from the /proc scan only.");
        }
    }
    for (name, _, _) in sock::TRACEPOINTS {
        let prog: &mut TracePoint = bpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram(name))?
            .try_into()
            .map_err(|e| program_error(name, e))?;
        prog.load().map_err(|e| program_error(name, e))?;
        hooks.programs.push(name);
    }
    {
        let prog: &mut CgroupSkb = bpf
            .program_mut(sock::PROG_ICMP_EGRESS)
            .ok_or(LoadError::MissingProgram(sock::PROG_ICMP_EGRESS))?
            .try_into()
            .map_err(|e| program_error(sock::PROG_ICMP_EGRESS, e))?;
        prog.load()
            .map_err(|e| program_error(sock::PROG_ICMP_EGRESS, e))?;
        hooks.programs.push(sock::PROG_ICMP_EGRESS);
    }
    Ok((bpf, hooks))
}

fn load_tp_btf(bpf: &mut Ebpf, btf: &Btf, name: &'static str, tp: &str) -> Result<(), LoadError> {
    let prog: &mut BtfTracePoint = bpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, e))?;
    prog.load(tp, btf).map_err(|e| program_error(name, e))
}

fn load_fexit(bpf: &mut Ebpf, btf: &Btf, name: &'static str, func: &str) -> Result<(), LoadError> {
    let prog: &mut FExit = bpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, e))?;
    prog.load(func, btf).map_err(|e| program_error(name, e))
}

/// Attaches every loaded program of the socket object.
fn attach_sock(bpf: &mut Ebpf, hooks: &mut SockHooks) -> Result<(), LoadError> {
    ensure_tracefs()?;
    for name in hooks.programs.clone() {
        if let Some((_, category, tp)) = sock::TRACEPOINTS.iter().find(|(p, _, _)| *p == name) {
            let prog: &mut TracePoint = bpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()
                .map_err(|e| program_error(name, e))?;
            prog.attach(category, tp)
                .map_err(|e| program_error(name, e))?;
        } else if name == sock::PROG_ICMP_EGRESS {
            let prog: &mut CgroupSkb = bpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()
                .map_err(|e| program_error(name, e))?;
            attach_icmp_egress(prog);
        } else if sock::FEXIT_SEND_RECV.iter().any(|(p, _)| *p == name) {
            let prog: &mut FExit = bpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()
                .map_err(|e| program_error(name, e))?;
            prog.attach().map_err(|e| program_error(name, e))?;
        } else {
            let prog: &mut BtfTracePoint = bpf
                .program_mut(name)
                .ok_or(LoadError::MissingProgram(name))?
                .try_into()
                .map_err(|e| program_error(name, e))?;
            prog.attach().map_err(|e| program_error(name, e))?;
        }
    }
    Ok(())
}

/// Attaches the ICMP echo program to the cgroup v2 root (every local
/// socket). Without it, pings from raw sockets stay unattributed; nothing
/// else depends on it, so a failure is a warning.
fn attach_icmp_egress(prog: &mut CgroupSkb) {
    let Some(root) = crate::enrich::cgroup2_mount() else {
        warn!("No cgroup v2 mount: pings from raw ICMP sockets will not be attributed.");
        return;
    };
    let dir = match std::fs::File::open(&root) {
        Ok(d) => d,
        Err(e) => {
            warn!(cgroup = %root.display(), error = %e, "Cannot open the cgroup v2 root: pings from raw ICMP sockets will not be attributed.");
            return;
        }
    };
    if let Err(e) = prog.attach(&dir, CgroupSkbAttachType::Egress, CgroupAttachMode::Single) {
        warn!(error = %describe_program_error(&e), "Cannot attach the ICMP echo program: pings from raw ICMP sockets will not be attributed.");
    }
}
