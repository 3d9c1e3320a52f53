//! Self-metrics: what flowlens saw and what it lost, by reason. Kept as a
//! serializable snapshot that the logs, and later the web and Prometheus
//! endpoints, serve.

use std::collections::BTreeMap;

use flowlens_correlator::conversation::TableStats;
use serde::Serialize;

use crate::{capture::AccountStats, influx::stats::InfluxMetrics};

/// Everything flowlens counts about itself, cumulative since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SelfMetrics {
    /// Intervals exported.
    pub intervals: u64,
    /// Records written (all sinks got them).
    pub records_exported: u64,
    /// Records a sink failed to write.
    pub records_lost_sink: u64,
    /// Kernel flow keys (direction × interface × hook) with new packets at the last interval.
    pub kernel_flow_entries: u64,
    /// Flow keys whose totals the reader keeps (bounded by the conversation cap).
    pub flow_keys_tracked: u64,
    /// Flow slots skipped because they were changing hands while read (their
    /// new flow is read at the next interval; not a loss).
    pub flow_slot_reads_busy: u64,

    /// Interfaces monitored now.
    pub interfaces_monitored: u64,
    /// Interface attach failures.
    pub interface_attach_failures: u64,
    /// Interfaces attached after start-up (new ones, and `--iface` ones back
    /// after being deleted).
    pub interfaces_attached_later: u64,
    /// Frames that crossed those interfaces before flowlens could attach to
    /// them (from their driver counters, any protocol): never counted.
    pub interface_frames_before_attach: u64,
    /// Their bytes (link-layer lengths).
    pub interface_bytes_before_attach: u64,
    /// Times the interface notifications overflowed (the interfaces were
    /// listed again; not a loss by itself).
    pub interface_notification_overruns: u64,
    /// Ring-buffer events read.
    pub events_received: u64,
    /// Ring-buffer records that could not be decoded.
    pub events_undecodable: u64,
    /// Events lost between the reader thread and the correlator (only when
    /// the correlator ended first; a full queue makes the reader wait).
    pub events_queue_overflow: u64,
    /// Times the reader waited for the correlator (back-pressure into the
    /// kernel's ring buffer while an interval is built; not a loss).
    pub events_queue_waits: u64,
    /// Exports that went on before the event reader had caught up with the kernel.
    pub events_sync_timeouts: u64,
    /// Sockets found in /proc at start-up.
    pub preexisting_sockets: u64,
    /// Flow entries that vanished while being read.
    pub flow_read_races: u64,
    /// Evicted flow entries the kernel map refused to delete (for another
    /// reason than "already gone"): they stay, and only their new packets
    /// count (for a new conversation). Not a loss; a growing number means the
    /// map fills up with them.
    pub flow_delete_errors: u64,
    /// Docker name/image lookups not queued because the lookup queue was full
    /// (asked again the next time the container is seen; records may lack the
    /// name meanwhile).
    pub docker_lookups_not_queued: u64,
    /// AF_PACKET mode: /proc scans for socket owners.
    pub proc_scans: u64,
    /// AF_PACKET mode: the userspace parser's counters (the kernel's
    /// `truncated_headers`, `frag_without_first` and fragment map evictions).
    pub userspace_parser: AccountStats,
    /// AF_PACKET mode: packets its sockets received (PACKET_STATISTICS tp_packets).
    pub afpacket_packets: u64,
    /// AF_PACKET mode: packets the kernel dropped because a socket's receive
    /// queue was full (PACKET_STATISTICS tp_drops): never counted.
    pub afpacket_drops: u64,
    /// Kernel counters by name (drops and health), summed over CPUs.
    pub kernel: BTreeMap<&'static str, u64>,
    /// Correlator table statistics.
    pub table: TableStats,
    /// The golden-signal reader; `None` when its programs did not load.
    pub signals: Option<crate::ebpf::signals::SignalReaderStats>,
    /// Connection tracking reader (NAT join); `None` when unavailable.
    pub conntrack: Option<crate::conntrack::ConntrackStats>,
    /// InfluxDB output counters, when it is enabled.
    pub influx: Option<InfluxMetrics>,
}

impl SelfMetrics {
    /// Sum of every counter that means data was lost.
    pub fn lost_total(&self) -> u64 {
        let k = |n: &str| self.kernel.get(n).copied().unwrap_or(0);
        k("flow_map_full")
            + k("frag_map_full")
            + k("ringbuf_full")
            + k("sig_ringbuf_full")
            + k("dns_ringbuf_full")
            + k("tcp_sig_map_full")
            + self.signals.map_or(0, |s| s.undecodable)
            + self.afpacket_drops
            + self.events_queue_overflow
            + self.events_undecodable
            + self.records_lost_sink
            + self.interface_frames_before_attach
            + self.table.conversations_dropped
            + self.table.sockets_dropped
            + self
                .influx
                .as_ref()
                .map_or(0, |i| i.lost_points() + i.points_dead_lettered)
    }

    /// Logs an ERROR with the loss counters by reason when one of them grew
    /// past `last` (what the previous interval reported), with what to do
    /// about each reason that grew, and moves `last` on.
    pub fn log_new_losses(&self, last: &mut BTreeMap<&'static str, u64>) {
        let now = self.losses();
        let grew: Vec<(&'static str, u64)> = now
            .iter()
            .filter_map(|(r, v)| {
                let before = last.get(r).copied().unwrap_or(0);
                (*v > before).then(|| (*r, v - before))
            })
            .collect();
        if grew.is_empty() {
            return;
        }
        let mut hints: Vec<&str> = Vec::new();
        for (reason, _) in &grew {
            let h = loss_hint(reason);
            if !hints.contains(&h) {
                hints.push(h);
            }
        }
        tracing::error!(
            new = grew.iter().map(|(_, n)| n).sum::<u64>(),
            by_reason = ?now,
            "Data was lost this interval (counters by reason; {}).",
            hints.join("; ")
        );
        *last = now;
    }

    /// Counters that lose no data but need attention (only the non-zero ones).
    pub fn problems(&self) -> BTreeMap<&'static str, u64> {
        [
            ("flow_delete_errors", self.flow_delete_errors),
            ("docker_lookups_not_queued", self.docker_lookups_not_queued),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect()
    }

    /// Logs a WARN with [`SelfMetrics::problems`] when their sum grew past
    /// `*last` (what the previous interval reported), and moves it on.
    pub fn log_new_problems(&self, last: &mut u64) {
        let total: u64 = self.problems().values().sum();
        if total > *last {
            tracing::warn!(
                new = total - *last,
                by_reason = ?self.problems(),
                "Some flow entries could not be deleted or container lookups could not be queued (counters by reason; no data was lost)."
            );
            *last = total;
        }
    }

    /// Loss counters by reason (only the non-zero ones).
    pub fn losses(&self) -> BTreeMap<&'static str, u64> {
        self.all_losses()
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// Every loss counter by reason, zeros included, in a fixed order (cumulative since start).
    pub fn all_losses(&self) -> Vec<(&'static str, u64)> {
        let k = |n: &str| self.kernel.get(n).copied().unwrap_or(0);
        let all = [
            ("kernel_flow_map_full", k("flow_map_full")),
            ("kernel_frag_map_full", k("frag_map_full")),
            ("kernel_ringbuf_full", k("ringbuf_full")),
            ("kernel_sig_ringbuf_full", k("sig_ringbuf_full")),
            ("kernel_dns_ringbuf_full", k("dns_ringbuf_full")),
            ("kernel_tcp_sig_map_full", k("tcp_sig_map_full")),
            (
                "signal_events_undecodable",
                self.signals.map_or(0, |s| s.undecodable),
            ),
            ("afpacket_drops", self.afpacket_drops),
            ("event_queue_overflow", self.events_queue_overflow),
            ("events_undecodable", self.events_undecodable),
            ("records_lost_sink", self.records_lost_sink),
            (
                "interface_frames_before_attach",
                self.interface_frames_before_attach,
            ),
            (
                "conversations_dropped_cap",
                self.table.conversations_dropped,
            ),
            ("sockets_dropped_cap", self.table.sockets_dropped),
        ];
        let i = self.influx.clone().unwrap_or_default();
        let influx = [
            ("influx_spool_full_points", i.spool_overflow_points),
            ("influx_spool_failed_points", i.spool_failed_points),
            ("influx_spool_corrupt_points", i.spool_corrupt_points),
            ("influx_spool_corrupt_regions", i.spool_corrupt_regions),
            ("influx_dead_lettered_points", i.points_dead_lettered),
            (
                "influx_dead_letter_full_points",
                i.dead_letter_overflow_points,
            ),
        ];
        all.into_iter().chain(influx).collect()
    }
}

/// What to do when the loss counter `reason` grows.
fn loss_hint(reason: &str) -> &'static str {
    match reason {
        "records_lost_sink" => "an output could not write: its ERROR above says why",
        "afpacket_drops" => {
            "the packet sockets' queues overflowed: userspace capture cannot keep up (eBPF mode counts in the kernel)"
        }
        "events_undecodable" => {
            "events from the kernel could not be decoded: a flowlens bug, please report it"
        }
        "interface_frames_before_attach" => {
            "traffic crossed an interface before flowlens could attach to it"
        }
        r if r.starts_with("influx_") => "the InfluxDB output: its log lines above say why",
        _ => "raise the [limits] in the config file (docs/configuration.md)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_reaches_the_snapshot_and_the_log_lines() {
        let m = SelfMetrics {
            flow_delete_errors: 2,
            docker_lookups_not_queued: 3,
            afpacket_drops: 5,
            ..Default::default()
        };
        assert_eq!(
            m.problems(),
            BTreeMap::from([("docker_lookups_not_queued", 3), ("flow_delete_errors", 2)])
        );
        assert_eq!(m.losses(), BTreeMap::from([("afpacket_drops", 5)]));
        assert_eq!(m.lost_total(), 5);
        let json = serde_json::to_value(&m).expect("serializes");
        assert_eq!(json["flow_delete_errors"], 2);
        assert_eq!(json["docker_lookups_not_queued"], 3);
        let mut last = 0;
        m.log_new_problems(&mut last);
        assert_eq!(last, 5);
    }

    #[test]
    fn loss_hints_fit_the_cause() {
        assert!(loss_hint("records_lost_sink").contains("output"));
        assert!(!loss_hint("records_lost_sink").contains("limits"));
        assert!(loss_hint("kernel_flow_map_full").contains("limits"));
        assert!(loss_hint("influx_spool_full_points").contains("InfluxDB"));
        let m = SelfMetrics {
            records_lost_sink: 3,
            ..Default::default()
        };
        let mut last = BTreeMap::new();
        m.log_new_losses(&mut last);
        assert_eq!(last, BTreeMap::from([("records_lost_sink", 3)]));
    }
}
