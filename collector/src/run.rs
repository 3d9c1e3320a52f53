//! `flowlens run`: picks the flow source (eBPF, or AF_PACKET when asked for
//! or when the kernel cannot run the programs), opens the outputs and runs
//! the exporter until SIGINT/SIGTERM.

use std::sync::{atomic::AtomicBool, Arc};

use anyhow::{bail, Context};
use tracing::warn;

use crate::{
    afpacket::AfPacketSource,
    cli::CaptureMode,
    config::RunConfig,
    docker::DockerResolver,
    ebpf::{load_objects, EbpfSource},
    exporter::{ExportConfig, Exporter, FlowSource, Names},
    ifaces::{self, Iface},
    influx::sink::InfluxSink,
    loader::{LoadError, LoadOptions, OWNER_REFRESH_NS},
    outputs, privileges,
    sinks::OutputsEnd,
    user_input::quote,
};

/// Interfaces named with `--iface`, resolved before anything is loaded.
fn resolve_explicit(cfg: &RunConfig) -> anyhow::Result<Vec<Iface>> {
    let mut explicit = Vec::new();
    for name in &cfg.ifaces {
        match ifaces::by_name(name) {
            Some(i) if !i.is_ethernet() => bail!(
                "interface {} has link type {} (not Ethernet): flowlens parses Ethernet frames; \
                 monitor the Ethernet interface the traffic crosses instead",
                quote(name),
                i.link_type
            ),
            Some(i) => explicit.push(i),
            None => {
                let have: Vec<String> = ifaces::list().into_values().map(|i| i.name).collect();
                bail!(
                    "unknown interface {} (interfaces here: {})",
                    quote(name),
                    have.join(", ")
                );
            }
        }
    }
    Ok(explicit)
}

/// The flags the signals set: SIGINT and SIGTERM stop the run (the last
/// interval is flushed), SIGHUP reopens the output files (log rotation).
struct Signals {
    stop: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
}

fn install_signals() -> anyhow::Result<Signals> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let reopen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reopen))
        .context("installing signal handlers")?;
    Ok(Signals { stop, reopen })
}

/// Whether a load error lets flowlens capture with AF_PACKET instead: "this
/// kernel cannot run the programs" (no BTF, verifier refusal, unsupported
/// program or map type) always; "not allowed to" (a locked-down host refusing
/// bpf()) only when packet sockets are allowed.
pub fn falls_back_to_afpacket(e: &LoadError, afpacket_allowed: bool) -> bool {
    !matches!(e, LoadError::Permission) || afpacket_allowed
}

/// Everything a source needs besides itself, prepared before it starts.
struct Prepared {
    cfg: RunConfig,
    explicit: Vec<Iface>,
    influx: Option<InfluxSink>,
    signals: Signals,
}

/// Runs until SIGINT/SIGTERM; flushes the last interval and detaches.
pub fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let afpacket_allowed = || privileges::require_for_afpacket().is_ok();
    if cfg.capture == CaptureMode::Afpacket {
        privileges::require_for_afpacket()?;
        return run_afpacket(prepare(cfg)?);
    }
    if let Err(e) = privileges::require_for_run() {
        // Locked-down hosts: no BPF, but packet sockets are allowed.
        if !afpacket_allowed() {
            return Err(e);
        }
        warn!(missing = ?privileges::missing_for_run(), "Not allowed to load eBPF programs; falling back to AF_PACKET capture (userspace counting, owners from /proc scans; docs/afpacket.md lists what it cannot see).");
        return run_afpacket(prepare(cfg)?);
    }
    let opts = LoadOptions {
        flow_map_entries: cfg.flow_map_entries,
        flow_slots_per_cpu: cfg.flow_slots_per_cpu,
        owner_refresh_ns: OWNER_REFRESH_NS,
        ringbuf_bytes: cfg.ringbuf_bytes,
    };
    let p = prepare(cfg)?;
    let (flow_bpf, sock_bpf) = match load_objects(opts) {
        Ok(objects) => objects,
        Err(e) if falls_back_to_afpacket(&e, afpacket_allowed()) => {
            warn!(error = %e, "The kernel cannot run flowlens' eBPF programs; falling back to AF_PACKET capture (userspace counting, owners from /proc scans; docs/afpacket.md lists what it cannot see).");
            return run_afpacket(p);
        }
        Err(e) => return Err(e.into()),
    };
    let docker = DockerResolver::start(p.cfg.docker_socket.clone());
    let containers = docker.cache();
    let mut source = EbpfSource::start(
        flow_bpf,
        sock_bpf,
        p.cfg.flow_slots_per_cpu,
        p.cfg.event_queue,
        docker,
        Arc::clone(&p.signals.stop),
    )?;
    export(p, &mut source, Names::host(containers))
}

/// Interfaces, outputs and signals, checked before a source starts: a
/// refused InfluxDB credential or an unknown interface fails first.
fn prepare(cfg: RunConfig) -> anyhow::Result<Prepared> {
    let explicit = resolve_explicit(&cfg)?;
    let influx = outputs::start_influx(&cfg.outputs)?;
    let signals = install_signals()?;
    Ok(Prepared {
        cfg,
        explicit,
        influx,
        signals,
    })
}

fn run_afpacket(p: Prepared) -> anyhow::Result<()> {
    let docker = DockerResolver::start(p.cfg.docker_socket.clone());
    let containers = docker.cache();
    let mut source = AfPacketSource::new(docker);
    export(p, &mut source, Names::host(containers))
}

/// Attaches `source` and runs the exporter until a signal.
fn export<S: FlowSource>(p: Prepared, source: &mut S, names: Names) -> anyhow::Result<()> {
    let (sinks, influx) = outputs::open(&p.cfg.outputs, p.influx)?;
    let mut exporter = Exporter::new(
        ExportConfig {
            host: p.cfg.host.clone(),
            interval_ns: u64::try_from(p.cfg.export_interval.as_nanos()).unwrap_or(u64::MAX),
            table: p.cfg.table_config(),
            ifaces: p.cfg.iface_selection(),
        },
        names,
        sinks,
        influx,
    );
    exporter.attach_initial(source, &p.explicit)?;
    exporter.reopen_on(Arc::clone(&p.signals.reopen));
    let finished = exporter.run(source, &p.signals.stop);
    match finished.outputs_end {
        Some(OutputsEnd::NothingWritable(why)) => bail!("{why}"),
        // A closed standard output is a normal end (`flowlens run --jsonl - | head`).
        Some(OutputsEnd::StdoutClosed) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_fall_back_only_when_packet_sockets_are_allowed() {
        assert!(!falls_back_to_afpacket(&LoadError::Permission, false));
        assert!(falls_back_to_afpacket(&LoadError::Permission, true));
        assert!(falls_back_to_afpacket(
            &LoadError::NoBtf("absent".into()),
            false
        ));
        assert!(falls_back_to_afpacket(
            &LoadError::Program {
                program: "flowlens_xdp",
                message: "invalid argument\nverifier log:\n...".into(),
            },
            false
        ));
        assert!(falls_back_to_afpacket(
            &LoadError::Object {
                object: "flow programs",
                message: "map type not supported".into(),
            },
            false
        ));
    }
}
