//! Memory of the correlator: VmRSS of a process holding N concurrent
//! conversations (each with its owner), compared with the same process before
//! filling; and a soak (`--soak=SECONDS`): churning conversations through a
//! table at its caps, sampling RSS, which must stay flat.
//!
//! `table-rss [--sizes=10000,100000,1000000] [--signals=none,rtt] [--soak=180]
//! [--local-addrs=16|N|all] [--smoke]`.
//! Each size runs in a fresh child process so sizes do not share a heap.
//! "+ records": the peak RSS (VmHWM, reset before the export through
//! /proc/self/clear_refs) of one export whose records stream to a consumer
//! in chunks of the collector's 4,096 (each serialized as a JSON line, as the
//! JSON lines sink does), against the same export with every record held at
//! once (`export()`, what the collector did before it streamed).
//! `--signals`: `none`, conversations carry no golden signals (most real
//! ones); `rtt`, every conversation's client socket reported an RTT sample
//! before the export (what TCP conversations carry each interval).
//! `--local-addrs`: how many local addresses the client sockets share (ports
//! vary): 16 by default (a node with a handful of addresses); `all` gives every
//! socket its own address, the owner table's worst case (no real host has
//! one address per connection).

use std::process::Command;
use std::time::{Duration, Instant};

use flowlens_bench::{arg_u64, arg_value, print_table, rss_kib, smoke_requested, Row};
use flowlens_correlator::signals::{RttStats, TcpSignal};
use flowlens_correlator::{ConversationTable, TableConfig};

#[path = "../../../correlator/benches/common/mod.rs"]
mod common;

use common::{server, Clients, StaticLookup, S, UNIX0};

fn config(n: u64) -> TableConfig {
    TableConfig {
        max_conversations: usize::try_from(n).unwrap_or(usize::MAX),
        max_sockets: usize::try_from(2 * n).unwrap_or(usize::MAX),
        ..TableConfig::default()
    }
}

/// Records an export hands the sinks at a time (the collector's `EXPORT_CHUNK`).
const CHUNK: usize = 4096;

/// Peak RSS since the last [`reset_peak`] (VmHWM), KiB.
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmHWM:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

/// One export, streamed in chunks of [`CHUNK`] (each record serialized as a
/// JSON line into a reused buffer, as the JSON lines sink does) or, `all`,
/// every record at once. Returns the records.
fn export_once(t: &mut ConversationTable, now: u64, all: bool) -> u64 {
    let unix = UNIX0 + i128::from(now);
    if all {
        let records = t.export(now, unix, "h", &StaticLookup);
        let n = records.len() as u64;
        std::hint::black_box(records);
        return n;
    }
    let mut line = Vec::with_capacity(4096);
    let mut consume = |chunk: &[flowlens_correlator::record::ConversationRecord]| {
        for r in chunk {
            line.clear();
            if serde_json::to_writer(&mut line, r).is_ok() {
                std::hint::black_box(&line);
            }
        }
    };
    t.export_with(now, unix, "h", &StaticLookup, false, CHUNK, &mut consume)
}

/// Child mode: fill a table with `n` conversations (each with an RTT sample
/// when `rtt`), print "before table peak active records" (KiB: empty, the
/// table alone, the peak of one export: streamed, or every record at once
/// when `all`).
fn fill(n: u64, rtt: bool, all: bool, clients: Clients) -> anyhow::Result<()> {
    let before = rss_kib("self").unwrap_or(0);
    let mut t = ConversationTable::new(config(n));
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    clients.feed(&mut t, 0, n32, 10, 2);
    if rtt {
        for i in 0..n32 {
            let sample = RttStats {
                samples: 1,
                sum_us: 250,
                min_us: 250,
                max_us: 250,
            };
            let signal = TcpSignal {
                local: clients.client(i),
                remote: server(),
                retransmits: 0,
                rtt: sample,
            };
            t.observe_tcp_signal(signal, 2 * S);
        }
    }
    let table = rss_kib("self").unwrap_or(0);
    reset_peak()?;
    let records = export_once(&mut t, 2 * S, all);
    let peak = peak_kib().unwrap_or(0);
    println!(
        "{before} {table} {peak} {} {records}",
        t.stats().conversations_active,
    );
    Ok(())
}

/// Child mode: a burst of `n` conversations (cap raised to hold them), then
/// every one evicted (idle); print "before peak after_eviction active" (KiB).
/// Three bursts in a row: the last one's numbers.
fn burst(n: u64, clients: Clients) {
    let before = rss_kib("self").unwrap_or(0);
    let mut t = ConversationTable::new(TableConfig {
        idle_timeout_ns: 2 * S,
        owner_grace_ns: 2 * S,
        closed_owner_grace_ns: S,
        pending_state_ns: S,
        ..config(n)
    });
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    let (mut peak, mut after) = (0, 0);
    for round in 0..3u64 {
        let t0 = 1 + round * 10;
        clients.feed(&mut t, round as u32 * n32, (round as u32 + 1) * n32, 10, t0);
        export_once(&mut t, (t0 + 1) * S, false);
        peak = peak.max(rss_kib("self").unwrap_or(0));
        // Idle past the timeout and the owners' grace: everything goes.
        for k in 2..6 {
            export_once(&mut t, (t0 + k) * S, false);
        }
        let _ = t.take_evicted_flows();
        // What the collector does after a burst was evicted.
        // SAFETY: malloc_trim has no preconditions.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0);
        }
        after = rss_kib("self").unwrap_or(0);
    }
    println!("{before} {peak} {after} {}", t.stats().conversations_active);
}

/// Child mode: churn through a table capped at `cap` for `secs`; print "t rss" samples.
fn soak(cap: u64, secs: u64, clients: Clients) {
    let mut t = ConversationTable::new(TableConfig {
        idle_timeout_ns: 2 * S,
        owner_grace_ns: 2 * S,
        pending_state_ns: S,
        ..config(cap)
    });
    let start = Instant::now();
    let per_tick = u32::try_from(cap / 4).unwrap_or(u32::MAX).max(1);
    let mut next = 0u32;
    let mut tick = 1u64;
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    while start.elapsed() < Duration::from_secs(secs) {
        // Simulated time: one "second" per tick; new conversations every tick,
        // old ones idle out after 2 ticks, so the table stays near cap/2.
        clients.feed(&mut t, next, next.wrapping_add(per_tick), 10, tick);
        next = next.wrapping_add(per_tick);
        export_once(&mut t, tick * S, false);
        let _ = t.take_evicted_flows();
        tick += 1;
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            println!(
                "{:.1} {} {}",
                start.elapsed().as_secs_f64(),
                rss_kib("self").unwrap_or(0),
                t.stats().conversations_active
            );
        }
    }
}

fn child(args: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).args(args).output()?;
    anyhow::ensure!(out.status.success(), "child {args:?} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `--local-addrs`: `all` (each client socket its own address) or a count (default 16).
fn clients_arg() -> anyhow::Result<(Clients, String)> {
    let v = arg_value("local-addrs").unwrap_or_else(|| "16".to_owned());
    if v == "all" {
        return Ok((Clients::OWN_ADDRESS, v));
    }
    match v.replace('_', "").parse::<u32>() {
        Ok(n) if n > 0 => Ok((Clients { addrs: Some(n) }, v)),
        _ => anyhow::bail!("--local-addrs: {v:?} is neither a count > 0 nor \"all\""),
    }
}

fn main() -> anyhow::Result<()> {
    let (clients, local_addrs) = clients_arg()?;
    if let Some(n) = arg_value("child-fill") {
        return fill(
            n.parse()?,
            arg_value("rtt").is_some(),
            arg_value("all").is_some(),
            clients,
        );
    }
    if let Some(n) = arg_value("child-burst") {
        burst(n.parse()?, clients);
        return Ok(());
    }
    if let Some(secs) = arg_value("child-soak") {
        soak(arg_u64("cap", 100_000), secs.parse()?, clients);
        return Ok(());
    }
    let addrs_arg = format!("--local-addrs={local_addrs}");
    let addrs_text = match clients.addrs {
        Some(n) => format!("client sockets on {n} local addresses"),
        None => "each client socket its own local address".to_owned(),
    };
    let smoke = smoke_requested();
    let sizes: Vec<u64> = arg_value("sizes")
        .unwrap_or_else(|| {
            if smoke {
                "1000".into()
            } else {
                "10000,100000,1000000".into()
            }
        })
        .split(',')
        .filter_map(|s| s.replace('_', "").parse().ok())
        .collect();
    let signals: Vec<String> = arg_value("signals")
        .unwrap_or_else(|| {
            if smoke {
                "none".into()
            } else {
                "none,rtt".into()
            }
        })
        .split(',')
        .map(str::to_owned)
        .collect();
    let soak_secs = arg_u64("soak", if smoke { 2 } else { 180 });
    let soak_cap = arg_u64("cap", if smoke { 1_000 } else { 100_000 });
    let mut rows = Vec::new();
    for (n, signals) in sizes
        .iter()
        .flat_map(|n| signals.iter().map(move |s| (*n, s.as_str())))
    {
        let mut args = vec![format!("--child-fill={n}"), addrs_arg.clone()];
        let carried = match signals {
            "none" => "no signals",
            "rtt" => {
                args.push("--rtt=1".to_owned());
                "each an RTT sample"
            }
            other => anyhow::bail!("--signals: unknown {other:?} (none, rtt)"),
        };
        // Every record at once (as before streaming), then streamed: fresh children each.
        let mut all_args = args.clone();
        all_args.push("--all=1".to_owned());
        let [all, streamed] = [all_args, args].map(|a| -> anyhow::Result<[u64; 5]> {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let out = child(&a)?;
            let v: Vec<u64> = out
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            let [before, table, peak, active, records] = v[..] else {
                anyhow::bail!("unexpected child output {out:?}");
            };
            Ok([before, table, peak, active, records])
        });
        let [_, _, all_peak, _, _] = all?;
        let [before, table, peak, active, records] = streamed?;
        let per = |kib: u64| kib.saturating_sub(before) as f64 * 1024.0 / active.max(1) as f64;
        rows.push(Row {
            section: "memory",
            case: format!("ConversationTable, {n} concurrent conversations + owners, {carried}, {addrs_text} (+ one export of {records} records, streamed in chunks of {CHUNK})"),
            value: format!(
                "{:.1} MiB RSS ({:.1} MiB peak of the export, {:.1} MiB with every record at once)",
                table as f64 / 1024.0,
                peak as f64 / 1024.0,
                all_peak as f64 / 1024.0
            ),
            baseline: format!("empty process {:.1} MiB", before as f64 / 1024.0),
            ratio: format!(
                "{:.0} B/conversation in the table, {:.0} B at the export's peak ({:.0} B with every record at once)",
                per(table),
                per(peak),
                per(all_peak)
            ),
            goal: format!(
                "≤ 500 B/conversation in the table (issue 16): {}",
                if per(table) <= 500.0 { "met" } else { "MISSED" }
            ),
        });
    }
    let burst_n = arg_u64("burst", if smoke { 10_000 } else { 300_000 });
    if burst_n > 0 {
        let out = child(&[&format!("--child-burst={burst_n}"), &addrs_arg])?;
        let v: Vec<u64> = out
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        let [before, peak, after, active] = v[..] else {
            anyhow::bail!("unexpected child output {out:?}");
        };
        let kept = after.saturating_sub(before) as f64 / peak.saturating_sub(before).max(1) as f64;
        rows.push(Row {
            section: "memory",
            case: format!("burst of {burst_n} conversations, all evicted ({active} left), third burst in a row, {addrs_text}"),
            value: format!("{:.1} MiB RSS after eviction", after as f64 / 1024.0),
            baseline: format!("peak {:.1} MiB, empty process {:.1} MiB", peak as f64 / 1024.0, before as f64 / 1024.0),
            ratio: format!("{:.2} of the burst's memory kept", kept),
            goal: flowlens_bench::goal_max(kept, 0.25),
        });
    }
    if soak_secs > 0 {
        let out = child(&[
            &format!("--child-soak={soak_secs}"),
            &format!("--cap={soak_cap}"),
            &addrs_arg,
        ])?;
        let samples: Vec<(f64, f64)> = out
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
            .collect();
        anyhow::ensure!(!samples.is_empty(), "no soak samples");
        // Flat: the last quarter's max against the first quarter's max (after warm-up).
        let q = (samples.len() / 4).max(1);
        let first = samples[..q].iter().map(|s| s.1).fold(0.0, f64::max);
        let last = samples[samples.len() - q..]
            .iter()
            .map(|s| s.1)
            .fold(0.0, f64::max);
        let growth = last / first.max(1.0);
        rows.push(Row {
            section: "memory",
            case: format!(
                "soak {soak_secs} s: churn through a table capped at {soak_cap}, {addrs_text} ({} samples)",
                samples.len()
            ),
            value: format!("last quarter max {:.1} MiB", last / 1024.0),
            baseline: format!("first quarter max {:.1} MiB", first / 1024.0),
            ratio: format!("{growth:.3}×"),
            goal: flowlens_bench::goal_max(growth, 1.05),
        });
    }
    print_table(&rows, !std::env::args().any(|a| a == "--no-header"));
    Ok(())
}
