//! When the exporter exports and polls interfaces, on its source's clock.

use super::source::Timeline;

/// Live sources look for new interfaces this often.
const IFACE_POLL_NS: u64 = 1_000_000_000;

/// What is due at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// Poll the interfaces now.
    pub poll: bool,
    /// Export now, stamped with this time (source clock, monotonic ns).
    pub export_at: Option<u64>,
}

/// The export and interface-poll deadlines of one run.
#[derive(Debug, Clone)]
pub struct Schedule {
    timeline: Timeline,
    interval_ns: u64,
    /// None until anchored at the first moment seen.
    next_export: Option<u64>,
    next_poll: Option<u64>,
}

/// The first multiple of `interval` after `ts`.
fn boundary_after(ts: u64, interval: u64) -> u64 {
    (ts / interval).saturating_add(1).saturating_mul(interval)
}

impl Schedule {
    /// Exports every `interval_ns` (at least 1) of the source's clock.
    pub fn new(timeline: Timeline, interval_ns: u64) -> Self {
        Self {
            timeline,
            interval_ns: interval_ns.max(1),
            next_export: None,
            next_poll: None,
        }
    }

    /// Sets the first deadlines from the first moment seen: a live run
    /// exports one interval after it, a capture at the next boundary.
    pub fn anchor(&mut self, now: u64) {
        if self.next_export.is_some() {
            return;
        }
        self.next_export = Some(match self.timeline {
            Timeline::Live => now.saturating_add(self.interval_ns),
            Timeline::Capture => boundary_after(now, self.interval_ns),
        });
        if self.timeline == Timeline::Live {
            self.next_poll = Some(now.saturating_add(IFACE_POLL_NS));
        }
    }

    /// The earliest deadline (None before [`Schedule::anchor`]).
    pub fn next_wake(&self) -> Option<u64> {
        match (self.next_export, self.next_poll) {
            (Some(e), Some(p)) => Some(e.min(p)),
            (e, p) => e.or(p),
        }
    }

    /// What is due at `now`, advancing the deadlines that fired. Missed
    /// exports are skipped, not bunched.
    pub fn due(&mut self, now: u64) -> Due {
        self.anchor(now);
        let mut due = Due::default();
        if let Some(p) = self.next_poll.filter(|p| now >= *p) {
            due.poll = true;
            self.next_poll = Some(now.max(p).saturating_add(IFACE_POLL_NS));
        }
        if let Some(next) = self.next_export.filter(|n| now >= *n) {
            due.export_at = Some(match self.timeline {
                Timeline::Live => now,
                Timeline::Capture => next,
            });
            let mut following = next.saturating_add(self.interval_ns);
            if following <= now {
                following = match self.timeline {
                    Timeline::Live => now.saturating_add(self.interval_ns),
                    Timeline::Capture => boundary_after(now, self.interval_ns),
                };
            }
            self.next_export = Some(following);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn live_exports_every_interval_from_start_and_skips_missed_ones() {
        let mut s = Schedule::new(Timeline::Live, 10 * S);
        s.anchor(5 * S);
        assert_eq!(s.next_wake(), Some(6 * S));
        assert_eq!(
            s.due(6 * S),
            Due {
                poll: true,
                export_at: None
            }
        );
        assert_eq!(s.due(15 * S).export_at, Some(15 * S));
        // The next one is 25 s; a stall until 40 s exports once, then 50 s.
        assert_eq!(s.due(40 * S).export_at, Some(40 * S));
        assert_eq!(s.due(45 * S).export_at, None);
        assert_eq!(s.due(50 * S).export_at, Some(50 * S));
    }

    #[test]
    fn capture_exports_on_boundaries_and_skips_empty_intervals() {
        let mut s = Schedule::new(Timeline::Capture, 10 * S);
        s.anchor(3 * S);
        assert_eq!(s.next_wake(), Some(10 * S));
        let d = s.due(10 * S);
        assert_eq!(
            d,
            Due {
                poll: false,
                export_at: Some(10 * S)
            }
        );
        // A packet at 47 s: one export stamped 20 s, the next boundary is 50 s.
        assert_eq!(s.due(47 * S).export_at, Some(20 * S));
        assert_eq!(s.next_wake(), Some(50 * S));
        assert_eq!(s.due(49 * S).export_at, None);
    }
}
