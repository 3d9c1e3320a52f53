//! `flowlens run`: picks the flow source (eBPF, or AF_PACKET when asked for
//! or when the kernel cannot run the programs), opens the outputs and runs
//! the exporter until SIGINT/SIGTERM.

use std::{
    io::IsTerminal,
    sync::{atomic::AtomicBool, Arc},
};

use anyhow::{bail, Context};
use tracing::warn;

use crate::{
    afpacket::AfPacketSource,
    cli::CaptureMode,
    config::{
        default_flow_slots_per_cpu, RunConfig, DEFAULT_FLOW_MAP_ENTRIES, DEFAULT_RINGBUF_BYTES,
    },
    docker::DockerResolver,
    ebpf::{load_objects, EbpfSource},
    exporter::{ExportConfig, Exporter, FlowSource, Names},
    ifaces::{self, Iface},
    influx::sink::InfluxSink,
    loader::{LoadError, LoadOptions, OWNER_REFRESH_NS},
    outputs, privileges,
    signals_loader::SignalOptions,
    sinks::{LiveViewSink, OutputsEnd, Sinks},
    user_input::quote,
    web::{self, RunWeb},
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
    let stop = stop_on_signals()?;
    let reopen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reopen))
        .context("installing signal handlers")?;
    Ok(Signals { stop, reopen })
}

/// SIGINT and SIGTERM set the returned flag (also `flowlens web`'s stop).
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Whether a load error lets flowlens capture with AF_PACKET instead: the
/// kernel cannot run the programs (no BTF, verifier refusal, unsupported
/// program or map type) or may not (a locked-down host refusing bpf()), and
/// packet sockets are allowed. Without them the fallback could only fail
/// (EPERM on the first socket): the load error is the answer.
pub fn falls_back_to_afpacket(_e: &LoadError, afpacket_allowed: bool) -> bool {
    afpacket_allowed
}

/// The sizes a user set that the kernel refuses: when the objects do not
/// load with the configured sizes but load with the defaults, the limits
/// (alone on top of the defaults) that fail to load, as `limits.x = v`, and
/// their defaults. `None` when every size is the default or the defaults
/// fail too (then the kernel cannot run the programs at all).
fn refused_limits(opts: LoadOptions, err: &LoadError) -> Option<(String, String)> {
    if matches!(err, LoadError::Permission) {
        return None;
    }
    let defaults = LoadOptions {
        flow_map_entries: DEFAULT_FLOW_MAP_ENTRIES,
        flow_slots_per_cpu: default_flow_slots_per_cpu(crate::loader::possible_cpus()),
        ringbuf_bytes: DEFAULT_RINGBUF_BYTES,
        ..opts
    };
    let set: Vec<(&str, u32, u32, LoadOptions)> = [
        (
            "limits.flow_map_entries",
            opts.flow_map_entries,
            defaults.flow_map_entries,
            LoadOptions {
                flow_map_entries: opts.flow_map_entries,
                ..defaults
            },
        ),
        (
            "limits.flow_slots_per_cpu",
            opts.flow_slots_per_cpu,
            defaults.flow_slots_per_cpu,
            LoadOptions {
                flow_slots_per_cpu: opts.flow_slots_per_cpu,
                ..defaults
            },
        ),
        (
            "limits.ringbuf_bytes",
            opts.ringbuf_bytes,
            defaults.ringbuf_bytes,
            LoadOptions {
                ringbuf_bytes: opts.ringbuf_bytes,
                ..defaults
            },
        ),
    ]
    .into_iter()
    .filter(|(_, value, default, _)| value != default)
    .collect();
    if set.is_empty() || !loads(defaults) {
        return None;
    }
    let mut refused: Vec<&(&str, u32, u32, LoadOptions)> =
        set.iter().filter(|(_, _, _, o)| !loads(*o)).collect();
    if refused.is_empty() {
        // Each loads alone: together they are too much.
        refused = set.iter().collect();
    }
    let names: Vec<String> = refused
        .iter()
        .map(|(n, v, _, _)| format!("{n} = {v}"))
        .collect();
    let defaults: Vec<String> = refused
        .iter()
        .map(|(n, _, d, _)| format!("{n} = {d}"))
        .collect();
    Some((names.join(", "), defaults.join(", ")))
}

/// Whether both objects load with `opts` (nothing attached; dropped at once).
fn loads(opts: LoadOptions) -> bool {
    crate::loader::load_flow_object(opts).is_ok()
        && crate::loader::load_sock_object(opts, false).is_ok()
}

/// Everything a source needs besides itself, prepared before it starts.
struct Prepared {
    cfg: RunConfig,
    explicit: Vec<Iface>,
    influx: Option<InfluxSink>,
    web: RunWeb,
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
    let signal_opts = cfg.signals.then(|| SignalOptions {
        max_sockets: u32::try_from(cfg.max_sockets).unwrap_or(u32::MAX),
        ringbuf_bytes: cfg.ringbuf_bytes,
    });
    let p = prepare(cfg)?;
    let (flow_bpf, sock_bpf, signals_bpf) = match load_objects(opts, signal_opts) {
        Ok(objects) => objects,
        Err(e) => {
            // A size the user set is refused: an error naming it, not a
            // fallback (that is for kernels that cannot run the programs).
            if let Some((names, defaults)) = refused_limits(opts, &e) {
                bail!(
                    "the kernel refused {names} ({e}); the programs load with {defaults} (the default): choose a smaller value (docs/configuration.md, [limits])"
                );
            }
            if !falls_back_to_afpacket(&e, afpacket_allowed()) {
                let why = privileges::require_for_afpacket()
                    .err()
                    .map_or_else(String::new, |w| {
                        format!("; the AF_PACKET fallback is not possible either: {w}")
                    });
                bail!("{e}{why}");
            }
            warn!(error = %e, "The kernel cannot run flowlens' eBPF programs; falling back to AF_PACKET capture (userspace counting, owners from /proc scans; docs/afpacket.md lists what it cannot see).");
            return run_afpacket(p);
        }
    };
    let docker = DockerResolver::start(p.cfg.docker_socket.clone());
    let containers = docker.cache();
    let mut source = EbpfSource::start(
        flow_bpf,
        sock_bpf,
        signals_bpf,
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
    let web = web::start_for_run(cfg.web.as_ref())?;
    let signals = install_signals()?;
    Ok(Prepared {
        cfg,
        explicit,
        influx,
        web,
        signals,
    })
}

fn run_afpacket(p: Prepared) -> anyhow::Result<()> {
    if p.cfg.capture == CaptureMode::Afpacket {
        warn!("Capturing with AF_PACKET as asked: weaker than eBPF (userspace counting, owners from /proc scans: short-lived processes and ICMP owners are missed; docs/afpacket.md).");
    }
    let docker = DockerResolver::start(p.cfg.docker_socket.clone());
    let containers = docker.cache();
    let mut source = AfPacketSource::new(docker);
    export(p, &mut source, Names::host(containers))
}

/// Attaches `source` and runs the exporter until a signal.
fn export<S: FlowSource>(mut p: Prepared, source: &mut S, names: Names) -> anyhow::Result<()> {
    let note = (source.name() == "afpacket").then_some(outputs::AFPACKET_NOTE);
    // On a terminal with no output configured, the live view replaces the
    // scrolling summary (the summary stays for pipes and files).
    let live_view = p.cfg.outputs.jsonl.is_none()
        && p.influx.is_none()
        && std::io::stdout().is_terminal()
        && std::env::var_os("FLOWLENS_PLAIN").is_none();
    let (mut sinks, influx) = if live_view {
        let mut s = Sinks::new();
        let view = LiveViewSink::start(
            p.web.url(),
            p.cfg.export_interval.as_secs_f64(),
            p.cfg.host.clone(),
            note,
        )
        .context("starting the live view on the terminal (FLOWLENS_PLAIN=1 prints plain text)")?;
        s.push(Box::new(view));
        (s, None)
    } else {
        outputs::open(&p.cfg.outputs, p.influx, note)?
    };
    p.web.add_sink(&mut sinks);
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
    )
    .with_metrics(Arc::clone(&p.web.metrics));
    exporter.attach_initial(source, &p.explicit)?;
    exporter.reopen_on(Arc::clone(&p.signals.reopen));
    let finished = exporter.run(source, &p.signals.stop);
    p.web.stop();
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
    fn load_errors_fall_back_only_when_packet_sockets_are_allowed() {
        let errors = [
            LoadError::Permission,
            LoadError::NoBtf("absent".into()),
            LoadError::Program {
                program: "flowlens_xdp",
                message: "invalid argument\nverifier log:\n...".into(),
            },
            LoadError::Object {
                object: "flow programs",
                message: "map type not supported".into(),
            },
        ];
        for e in &errors {
            assert!(falls_back_to_afpacket(e, true), "{e}");
            assert!(!falls_back_to_afpacket(e, false), "{e}");
        }
    }
}
