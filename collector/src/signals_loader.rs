//! The golden-signals object (signals.bpf.c): TCP RTT and retransmits,
//! resets, DNS copies. Every hook is optional: a kernel that lacks one (or
//! refuses it) loses that signal, says so in the log and in `flowlens
//! doctor`, and everything else runs. Loading never fails the collector.

use std::fs::File;

use aya::{
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, SockOps,
    },
    Btf, Ebpf, EbpfLoader,
};
use flowlens_ebpf::signals;
use tracing::{info, warn};

use crate::loader::{describe_program_error, object_error, LoadError};

/// Which signal hooks this kernel got.
#[derive(Debug, Clone, Default)]
pub struct SignalHooks {
    /// Programs loaded and attached.
    pub programs: Vec<&'static str>,
    /// Programs that could not be used, the signal each serves, and why.
    pub missing: Vec<(&'static str, &'static str, String)>,
}

impl SignalHooks {
    /// Whether `program` runs.
    pub fn has(&self, program: &str) -> bool {
        self.programs.contains(&program)
    }

    fn miss(&mut self, program: &'static str, signal: &'static str, why: String) {
        warn!(program, signal, error = %why, "Signal hook unavailable on this kernel: that signal will be missing from the records.");
        self.missing.push((program, signal, why));
    }
}

/// Options of the signals object.
#[derive(Debug, Clone, Copy)]
pub struct SignalOptions {
    /// Entries of the per-socket map (TCP sockets tracked at once).
    pub max_sockets: u32,
    /// Bytes of its ring buffer (resets, closed sockets, DNS copies).
    pub ringbuf_bytes: u32,
}

/// Loads and attaches what this kernel allows; `None` (logged) when the
/// object itself cannot load: records then carry no signals.
pub fn load_signals(opts: SignalOptions) -> Option<(Ebpf, SignalHooks)> {
    match load_signals_object(opts) {
        Ok(x) => Some(x),
        Err(e) => {
            warn!(error = %e, "The golden-signal programs did not load: records carry no RTT, retransmits, resets or DNS names.");
            None
        }
    }
}

/// [`load_signals`] with the reason when the object does not load.
pub fn load_signals_object(opts: SignalOptions) -> Result<(Ebpf, SignalHooks), LoadError> {
    let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(e.to_string()))?;
    let mut bpf = EbpfLoader::new()
        .btf(Some(&btf))
        .map_max_entries(signals::MAP_TCP_SIGS, opts.max_sockets.max(1))
        .map_max_entries(signals::MAP_EVENTS, opts.ringbuf_bytes)
        .load(flowlens_ebpf::SIGNALS_OBJ)
        .map_err(|e| object_error("signal programs", e))?;
    let mut hooks = SignalHooks::default();
    for (name, tp, signal) in signals::TP_BTF {
        match tp_btf(&mut bpf, &btf, name, tp) {
            Ok(()) => hooks.programs.push(name),
            Err(e) => hooks.miss(name, signal, e),
        }
    }
    match File::open(crate::enrich::cgroup2_mount().unwrap_or_default()) {
        Ok(root) => {
            match sockops(&mut bpf, &root) {
                Ok(()) => hooks.programs.push(signals::PROG_SOCKOPS),
                Err(e) => hooks.miss(signals::PROG_SOCKOPS, "rtt", e),
            }
            for (name, kind) in [
                (signals::PROG_DNS_EGRESS, CgroupSkbAttachType::Egress),
                (signals::PROG_DNS_INGRESS, CgroupSkbAttachType::Ingress),
            ] {
                match cgroup_skb(&mut bpf, &root, name, kind) {
                    Ok(()) => hooks.programs.push(name),
                    Err(e) => hooks.miss(name, "dns", e),
                }
            }
        }
        Err(e) => {
            let why = format!("no cgroup v2 root: {e}");
            hooks.miss(signals::PROG_SOCKOPS, "rtt", why.clone());
            hooks.miss(signals::PROG_DNS_EGRESS, "dns", why.clone());
            hooks.miss(signals::PROG_DNS_INGRESS, "dns", why);
        }
    }
    info!(programs = ?hooks.programs, missing = hooks.missing.len(), "Golden-signal hooks loaded.");
    Ok((bpf, hooks))
}

fn describe(e: ProgramError) -> String {
    describe_program_error(&e)
}

fn tp_btf(bpf: &mut Ebpf, btf: &Btf, name: &str, tp: &str) -> Result<(), String> {
    let prog: &mut BtfTracePoint = bpf
        .program_mut(name)
        .ok_or("missing from the object")?
        .try_into()
        .map_err(describe)?;
    prog.load(tp, btf).map_err(describe)?;
    prog.attach().map_err(describe)?;
    Ok(())
}

fn sockops(bpf: &mut Ebpf, root: &File) -> Result<(), String> {
    let prog: &mut SockOps = bpf
        .program_mut(signals::PROG_SOCKOPS)
        .ok_or("missing from the object")?
        .try_into()
        .map_err(describe)?;
    prog.load().map_err(describe)?;
    // Single: as a bpf_link (5.7+) it still runs beside other programs on the root.
    prog.attach(root, CgroupAttachMode::Single)
        .map_err(describe)?;
    Ok(())
}

fn cgroup_skb(
    bpf: &mut Ebpf,
    root: &File,
    name: &str,
    kind: CgroupSkbAttachType,
) -> Result<(), String> {
    let prog: &mut CgroupSkb = bpf
        .program_mut(name)
        .ok_or("missing from the object")?
        .try_into()
        .map_err(describe)?;
    prog.load().map_err(describe)?;
    prog.attach(root, kind, CgroupAttachMode::Single)
        .map_err(describe)?;
    Ok(())
}
