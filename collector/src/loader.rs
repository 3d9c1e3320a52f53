//! Loads the kernel objects (the socket/process object through
//! [`crate::sock_loader`]), attaches the packet programs per interface, and
//! detaches everything on drop. Which build and hooks a kernel gets comes
//! from [`crate::kernel_probe`].

use std::collections::BTreeMap;

use aya::{
    programs::{
        tc::SchedClassifierLinkId, xdp::XdpLinkId, ProgramError, SchedClassifier, TcAttachType,
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use flowlens_ebpf::{flow, FLOW_COMPAT_OBJ, FLOW_OBJ};
use tracing::{debug, info, warn};

pub use crate::sock_loader::{load_sock_hooks, load_sock_hooks_from, load_sock_object, SockHooks};
use crate::{
    ifaces::Iface,
    kernel_probe::{Build, KernelProbe, MIN_KERNEL},
};

/// Why the kernel side could not be set up; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Missing privileges (the kernel answered EPERM).
    #[error(
        "permission denied loading BPF programs: run flowlens as root (or with CAP_BPF, CAP_NET_ADMIN, \
         CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH); `flowlens doctor` shows what is missing"
    )]
    Permission,
    /// The kernel has no BTF.
    #[error("kernel BTF is not available (/sys/kernel/btf/vmlinux): {0}; flowlens' eBPF programs need CONFIG_DEBUG_INFO_BTF=y (AF_PACKET mode works without)")]
    NoBtf(String),
    /// The kernel is older than the programs support.
    #[error("Linux {release} is older than {}.{}, the oldest kernel flowlens' eBPF programs support (AF_PACKET mode works there)", MIN_KERNEL.0, MIN_KERNEL.1)]
    KernelTooOld {
        /// `uname -r`.
        release: String,
    },
    /// The object could not be parsed or a map could not be created.
    #[error("loading {object}: {message}")]
    Object {
        /// Which object.
        object: &'static str,
        /// Error text.
        message: String,
    },
    /// A load option is out of range.
    #[error("flow slots per CPU must be 0 or a power of two up to 2^{max_bits}, not {slots}")]
    SlotsPerCpu {
        /// The value asked for.
        slots: u32,
        /// Largest log2 accepted.
        max_bits: u32,
    },
    /// A program is missing from the object (build problem).
    #[error("program {0} is missing from the embedded object (build problem)")]
    MissingProgram(&'static str),
    /// The verifier or the kernel refused a program.
    #[error("the kernel refused program {program}: {message}")]
    Program {
        /// Program name.
        program: &'static str,
        /// Error, including the verifier log when there is one.
        message: String,
    },
    /// tracefs (needed by the accept tracepoints) is not mounted and could not be.
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}")]
    Tracefs(#[source] std::io::Error),
    /// tracefs is mounted, but readable by root only (mode 0700).
    #[error("tracefs at {} is readable by root only: without root flowlens needs CAP_DAC_READ_SEARCH to read the accept tracepoints' ids", .0.display())]
    TracefsUnreadable(std::path::PathBuf),
}

/// Formats a program error with the verifier log when there is one.
pub fn describe_program_error(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            format!("{io_error}\nverifier log:\n{verifier_log}")
        }
        other => error_chain(other),
    }
}

/// An error and its sources, joined with ": ".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The first OS error code in `e`'s source chain (aya wraps the syscall's
/// `io::Error` at various depths).
pub fn os_error_code(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(code) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(code);
        }
        cur = err.source();
    }
    None
}

fn is_permission(e: &(dyn std::error::Error + 'static)) -> bool {
    os_error_code(e) == Some(libc::EPERM)
}

pub(crate) fn program_error(program: &'static str, e: ProgramError) -> LoadError {
    if is_permission(&e) {
        LoadError::Permission
    } else {
        LoadError::Program {
            program,
            message: describe_program_error(&e),
        }
    }
}

pub(crate) fn object_error(object: &'static str, e: aya::EbpfError) -> LoadError {
    if is_permission(&e) {
        LoadError::Permission
    } else {
        LoadError::Object {
            object,
            message: error_chain(&e),
        }
    }
}

/// Kernels before 5.11 charge BPF maps and programs to RLIMIT_MEMLOCK (later
/// ones to the memory cgroup): lift it, as every BPF loader does. Without
/// CAP_SYS_RESOURCE this fails, which newer kernels do not mind.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct passed by reference.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        debug!(error = %std::io::Error::last_os_error(), "Cannot lift RLIMIT_MEMLOCK (needed for BPF maps before Linux 5.11 only).");
    }
}

/// The kernel can run the programs at all: new enough, with BTF.
pub(crate) fn check_kernel(probe: &KernelProbe) -> Result<(), LoadError> {
    if !probe.release_supported() {
        return Err(LoadError::KernelTooOld {
            release: probe.release.clone(),
        });
    }
    if !probe.btf {
        return Err(LoadError::NoBtf("absent or unreadable".into()));
    }
    raise_memlock();
    Ok(())
}

/// Whether a load failure of the current build is one the compat build may
/// not have: the verifier or the kernel refusing a program or instruction
/// (not privileges, not a missing program).
pub(crate) fn compat_may_help(e: &LoadError) -> bool {
    matches!(e, LoadError::Program { .. } | LoadError::Object { .. })
}

/// Sizes set at load time.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Entries of the flow map.
    pub flow_map_entries: u32,
    /// Bytes of the event ring buffer.
    pub ringbuf_bytes: u32,
    /// Flow slots per CPU (a power of two, or 0: hash only).
    pub flow_slots_per_cpu: u32,
    /// A socket still in use is reported again this long after its last
    /// report (ns); must stay below the correlator's owner grace period.
    pub owner_refresh_ns: u64,
}

/// Default [`LoadOptions::owner_refresh_ns`]: 60 s.
pub const OWNER_REFRESH_NS: u64 = 60_000_000_000;

/// Highest possible CPU id + 1 (bpf_get_smp_processor_id() is below this;
/// with holes in the possible set it exceeds the number of CPUs).
pub fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| cpu_list_end(&s))
        .unwrap_or_else(|| aya::util::nr_cpus().unwrap_or(1))
        .max(1)
}

/// Highest id + 1 of a kernel CPU list ("0-3", "0,2-3", "0").
pub fn cpu_list_end(list: &str) -> Option<usize> {
    list.trim()
        .split(',')
        .map(|part| {
            part.rsplit('-')
                .next()
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
        .try_fold(0usize, |max, n| n.map(|n| max.max(n + 1)))
        .filter(|n| *n > 0)
}

/// Entries of the slot table for `slots_per_cpu` (0 when off).
pub fn slot_entries(slots_per_cpu: u32) -> usize {
    possible_cpus().saturating_mul(slots_per_cpu as usize)
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: writes at most 8 bytes into seed.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(seed)
    } else {
        // No entropy source: the seed only spreads flows over slots.
        std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15
    }
}

/// The loaded packet-flow object: the build this kernel takes (see
/// [`KernelProbe::flow_build`]); if the kernel refuses the current build,
/// the compat build.
pub fn load_flow_object(opts: LoadOptions) -> Result<Ebpf, LoadError> {
    load_flow_object_built(opts).map(|(bpf, _)| bpf)
}

/// [`load_flow_object`], and which build was loaded.
pub fn load_flow_object_built(opts: LoadOptions) -> Result<(Ebpf, Build), LoadError> {
    let probe = KernelProbe::get();
    check_kernel(probe)?;
    let first = probe.flow_build();
    if first == Build::Current {
        match load_flow_object_from(FLOW_OBJ, opts) {
            Ok(bpf) => return Ok((bpf, Build::Current)),
            Err(e) if compat_may_help(&e) => {
                warn!(error = %e, "The kernel refused the current flow programs; loading the compat build.");
            }
            Err(e) => return Err(e),
        }
    }
    let mut compat_opts = opts;
    if !cfg!(target_arch = "x86_64") {
        // The compat slot claim relies on x86's store order (flow.bpf.c).
        compat_opts.flow_slots_per_cpu = 0;
    }
    load_flow_object_from(FLOW_COMPAT_OBJ, compat_opts).map(|bpf| (bpf, Build::Compat))
}

/// Loads another build of `flow.bpf.c` (same maps and programs) the way
/// [`load_flow_object`] loads the embedded one: benchmarks compare builds.
pub fn load_flow_object_from(object: &[u8], opts: LoadOptions) -> Result<Ebpf, LoadError> {
    let slots_per_cpu = opts.flow_slots_per_cpu;
    let bits = if slots_per_cpu == 0 {
        0
    } else {
        slots_per_cpu.trailing_zeros()
    };
    if slots_per_cpu != 0 && (!slots_per_cpu.is_power_of_two() || bits > flow::MAX_SLOT_BITS) {
        return Err(LoadError::SlotsPerCpu {
            slots: slots_per_cpu,
            max_bits: flow::MAX_SLOT_BITS,
        });
    }
    raise_memlock();
    let entries = u32::try_from(slot_entries(slots_per_cpu).max(1)).unwrap_or(u32::MAX);
    let seed = random_seed();
    let mut bpf = EbpfLoader::new()
        .map_max_entries(flow::MAP_FLOWS, opts.flow_map_entries)
        .map_max_entries(flow::MAP_SLOTS, entries)
        .override_global(flow::GLOBAL_SLOT_BITS, &bits, true)
        .override_global(flow::GLOBAL_HASH_SEED, &seed, true)
        .load(object)
        .map_err(|e| object_error("flow programs", e))?;
    {
        let xdp: &mut Xdp = bpf
            .program_mut(flow::PROG_XDP)
            .ok_or(LoadError::MissingProgram(flow::PROG_XDP))?
            .try_into()
            .map_err(|e| program_error(flow::PROG_XDP, e))?;
        xdp.load().map_err(|e| program_error(flow::PROG_XDP, e))?;
    }
    for name in [flow::PROG_TC, flow::PROG_TC_INGRESS] {
        tc_program(&mut bpf, name)?
            .load()
            .map_err(|e| program_error(name, e))?;
    }
    Ok(bpf)
}

/// Classic tracepoints are attached through tracefs; mount it when the host
/// has not (aya looks for it at /sys/kernel/tracing or the debugfs copy).
pub fn ensure_tracefs() -> Result<(), LoadError> {
    match crate::privileges::tracefs() {
        crate::privileges::Tracefs::Readable(_) => return Ok(()),
        // Mounted: mounting again cannot help (and `Path::exists` would call
        // it absent).
        crate::privileges::Tracefs::Unreadable(p) => return Err(LoadError::TracefsUnreadable(p)),
        crate::privileges::Tracefs::Absent => {}
    }
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Tracefs(std::io::Error::last_os_error()));
    }
    info!("Mounted tracefs at /sys/kernel/tracing (needed for the accept tracepoints).");
    Ok(())
}

/// Which program counts an interface's ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressHook {
    /// XDP in driver mode (physical NICs that support it): packets as they
    /// arrive, before GRO.
    XdpDriver,
    /// TC ingress: virtual devices (veth, bridges, lo) and NICs without XDP
    /// driver support. Sees GRO/GSO packets with their segment count.
    TcIngress,
}

/// Whether the interface is backed by hardware (has a `device` link in sysfs).
fn is_physical(iface: &Iface) -> bool {
    std::path::Path::new(&format!("/sys/class/net/{}/device", iface.name)).exists()
}

enum Link {
    Xdp(XdpLinkId),
    Tc(&'static str, SchedClassifierLinkId),
}

struct IfaceLinks {
    name: String,
    links: Vec<Link>,
}

/// Packet programs attached per interface.
pub struct FlowAttachments {
    links: BTreeMap<u32, IfaceLinks>,
    /// Attach failures so far (exported in self-metrics).
    pub attach_failures: u64,
}

fn tc_program<'a>(
    bpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, LoadError> {
    bpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|e| program_error(name, e))
}

/// Before 6.6 (no TCX) aya attaches TC programs through a clsact qdisc,
/// which must exist first: add it unless it is there. From 6.6 on TCX links
/// need none, and none is added.
pub fn ensure_clsact(iface: &str) -> Result<(), LoadError> {
    use aya::util::KernelVersion;
    // aya's own test (its choice between TCX and netlink), on its version reading.
    let tcx =
        KernelVersion::current().is_ok_and(|v| v.code() >= KernelVersion::new(6, 6, 0).code());
    if tcx {
        return Ok(());
    }
    match aya::programs::tc::qdisc_add_clsact(iface) {
        Ok(()) => Ok(()),
        Err(e) if os_error_code(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(LoadError::Program {
            program: flow::PROG_TC,
            message: format!("adding the clsact qdisc to {iface}: {}", error_chain(&e)),
        }),
    }
}

fn detach_link(bpf: &mut Ebpf, iface: &str, link: Link) {
    let result = match link {
        Link::Xdp(id) => match bpf.program_mut(flow::PROG_XDP).map(<&mut Xdp>::try_from) {
            Some(Ok(xdp)) => xdp.detach(id),
            _ => return,
        },
        Link::Tc(name, id) => match bpf.program_mut(name).map(<&mut SchedClassifier>::try_from) {
            Some(Ok(tc)) => tc.detach(id),
            _ => return,
        },
    };
    if let Err(e) = result {
        debug!(%iface, error = %e, "Detach failed (interface gone?).");
    }
}

impl FlowAttachments {
    /// Nothing attached yet.
    pub fn new() -> Self {
        Self {
            links: BTreeMap::new(),
            attach_failures: 0,
        }
    }

    /// Interfaces currently monitored, index -> name.
    pub fn attached(&self) -> impl Iterator<Item = (u32, &str)> {
        self.links.iter().map(|(i, l)| (*i, l.name.as_str()))
    }

    /// Whether an interface is monitored.
    pub fn contains(&self, ifindex: u32) -> bool {
        self.links.contains_key(&ifindex)
    }

    /// Attaches the ingress program (XDP driver mode on physical NICs that
    /// support it, else TC ingress) and TC egress to `iface`. On failure
    /// nothing stays attached.
    pub fn attach(&mut self, bpf: &mut Ebpf, iface: &Iface) -> Result<IngressHook, LoadError> {
        let mut links = Vec::new();
        let result = Self::attach_links(bpf, iface, &mut links);
        match result {
            Ok(hook) => {
                info!(iface = %iface.name, ifindex = iface.index, ingress = ?hook, "Monitoring interface.");
                self.links.insert(
                    iface.index,
                    IfaceLinks {
                        name: iface.name.clone(),
                        links,
                    },
                );
                Ok(hook)
            }
            Err(e) => {
                self.attach_failures += 1;
                for l in links {
                    detach_link(bpf, &iface.name, l);
                }
                Err(e)
            }
        }
    }

    fn attach_links(
        bpf: &mut Ebpf,
        iface: &Iface,
        links: &mut Vec<Link>,
    ) -> Result<IngressHook, LoadError> {
        let mut hook = IngressHook::TcIngress;
        if is_physical(iface) {
            let xdp: &mut Xdp = bpf
                .program_mut(flow::PROG_XDP)
                .ok_or(LoadError::MissingProgram(flow::PROG_XDP))?
                .try_into()
                .map_err(|e| program_error(flow::PROG_XDP, e))?;
            match xdp.attach_to_if_index(iface.index, XdpMode::Driver) {
                Ok(l) => {
                    links.push(Link::Xdp(l));
                    hook = IngressHook::XdpDriver;
                }
                Err(e) => {
                    debug!(iface = %iface.name, error = %describe_program_error(&e), "No XDP driver mode; counting ingress with TC.");
                }
            }
        }
        ensure_clsact(&iface.name)?;
        if hook == IngressHook::TcIngress {
            let tc = tc_program(bpf, flow::PROG_TC_INGRESS)?;
            let l = tc
                .attach(&iface.name, TcAttachType::Ingress)
                .map_err(|e| program_error(flow::PROG_TC_INGRESS, e))?;
            links.push(Link::Tc(flow::PROG_TC_INGRESS, l));
        }
        let tc = tc_program(bpf, flow::PROG_TC)?;
        let l = tc
            .attach(&iface.name, TcAttachType::Egress)
            .map_err(|e| program_error(flow::PROG_TC, e))?;
        links.push(Link::Tc(flow::PROG_TC, l));
        Ok(hook)
    }

    /// Detaches from an interface (it may already be gone: then the kernel
    /// has dropped the links and errors are expected).
    pub fn detach(&mut self, bpf: &mut Ebpf, ifindex: u32) {
        let Some(l) = self.links.remove(&ifindex) else {
            return;
        };
        for link in l.links {
            detach_link(bpf, &l.name, link);
        }
        info!(iface = %l.name, ifindex, "Stopped monitoring interface.");
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self, bpf: &mut Ebpf) {
        let all: Vec<u32> = self.links.keys().copied().collect();
        for i in all {
            self.detach(bpf, i);
        }
    }
}

impl Default for FlowAttachments {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs a warning once per interface that cannot be monitored.
pub fn warn_attach(iface: &Iface, e: &LoadError) {
    warn!(iface = %iface.name, error = %e, "Cannot monitor interface; its traffic is not counted.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_end_after_their_highest_id() {
        assert_eq!(cpu_list_end("0-1\n"), Some(2));
        assert_eq!(cpu_list_end("0"), Some(1));
        assert_eq!(cpu_list_end("0,2-3"), Some(4));
        assert_eq!(cpu_list_end("0-3,8-11"), Some(12));
        assert_eq!(cpu_list_end(""), None);
        assert_eq!(cpu_list_end("x"), None);
    }
}
