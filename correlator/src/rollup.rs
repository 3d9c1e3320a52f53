//! The golden signals of one local end, in a form that sums: what the `flow_rollup` measurement and the
//! web explorer's per-end grain carry (docs/schema.md, "`flow_rollup`"). Averages travel as a sum and a
//! count so that any group of ends recombines them exactly (an average of averages would not).

use crate::record::ConversationSignals;

/// Signals of one local end or of a group of ends (summed with [`EndSignals::combine`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndSignals {
    /// TCP segments this end retransmitted.
    pub retransmits_out: u64,
    /// TCP segments the other end retransmitted to this one.
    pub retransmits_in: u64,
    /// TCP resets this end sent.
    pub resets_out: u64,
    /// TCP resets the other end sent.
    pub resets_in: u64,
    /// Smallest RTT sample (µs).
    pub rtt_min_us: Option<u64>,
    /// Largest RTT sample (µs).
    pub rtt_max_us: Option<u64>,
    /// Sum of the RTT samples (µs): each conversation's `rtt_avg_us × rtt_samples`.
    pub rtt_sum_us: u64,
    /// RTT samples.
    pub rtt_samples: u64,
    /// Completed connects with a measured latency.
    pub connects: u64,
    /// Sum of their `connect_us`.
    pub connect_sum_us: u64,
    /// Largest `connect_us`.
    pub connect_max_us: Option<u64>,
    /// Failed connects (`connect_error` set).
    pub connect_errors: u64,
    /// DNS queries.
    pub dns_queries: u64,
    /// DNS responses.
    pub dns_responses: u64,
    /// Sum of DNS latencies (µs): each conversation's `dns_latency_avg_us × dns_latency_samples`.
    pub dns_latency_sum_us: u64,
    /// Answered queries behind the latency sum.
    pub dns_latency_samples: u64,
    /// Largest DNS latency (µs).
    pub dns_latency_max_us: Option<u64>,
    /// NXDOMAIN responses.
    pub dns_nxdomain: u64,
    /// SERVFAIL responses.
    pub dns_servfail: u64,
    /// REFUSED responses.
    pub dns_refused: u64,
    /// Other error rcodes.
    pub dns_other_errors: u64,
    /// Unanswered queries.
    pub dns_unanswered: u64,
}

impl EndSignals {
    /// The signals of the client end (`client == true`) or the server end of a conversation record.
    pub fn of_end(s: &ConversationSignals, client: bool) -> Self {
        let (retransmits_out, retransmits_in, resets_out, resets_in) = if client {
            (
                s.retransmits_c2s,
                s.retransmits_s2c,
                s.resets_c2s,
                s.resets_s2c,
            )
        } else {
            (
                s.retransmits_s2c,
                s.retransmits_c2s,
                s.resets_s2c,
                s.resets_c2s,
            )
        };
        let rtt = s.rtt_avg_us.filter(|_| s.rtt_samples > 0);
        let dns = s.dns_latency_avg_us.filter(|_| s.dns_latency_samples > 0);
        EndSignals {
            retransmits_out,
            retransmits_in,
            resets_out,
            resets_in,
            rtt_min_us: s.rtt_min_us,
            rtt_max_us: s.rtt_max_us,
            rtt_sum_us: rtt.map_or(0, |a| a.saturating_mul(s.rtt_samples)),
            rtt_samples: rtt.map_or(0, |_| s.rtt_samples),
            connects: u64::from(s.connect_us.is_some()),
            connect_sum_us: s.connect_us.unwrap_or(0),
            connect_max_us: s.connect_us,
            connect_errors: u64::from(s.connect_error.is_some()),
            dns_queries: s.dns_queries,
            dns_responses: s.dns_responses,
            dns_latency_sum_us: dns.map_or(0, |a| a.saturating_mul(s.dns_latency_samples)),
            dns_latency_samples: dns.map_or(0, |_| s.dns_latency_samples),
            dns_latency_max_us: s.dns_latency_max_us,
            dns_nxdomain: s.dns_nxdomain,
            dns_servfail: s.dns_servfail,
            dns_refused: s.dns_refused,
            dns_other_errors: s.dns_other_errors,
            dns_unanswered: s.dns_unanswered,
        }
    }

    /// Adds `o` into `self`: counts and sums add (saturating), minima and maxima combine.
    pub fn combine(&mut self, o: &EndSignals) {
        fn opt(a: Option<u64>, b: Option<u64>, f: fn(u64, u64) -> u64) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(f(a, b)),
                (a, b) => a.or(b),
            }
        }
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.retransmits_out, o.retransmits_out);
        add(&mut self.retransmits_in, o.retransmits_in);
        add(&mut self.resets_out, o.resets_out);
        add(&mut self.resets_in, o.resets_in);
        self.rtt_min_us = opt(self.rtt_min_us, o.rtt_min_us, u64::min);
        self.rtt_max_us = opt(self.rtt_max_us, o.rtt_max_us, u64::max);
        add(&mut self.rtt_sum_us, o.rtt_sum_us);
        add(&mut self.rtt_samples, o.rtt_samples);
        add(&mut self.connects, o.connects);
        add(&mut self.connect_sum_us, o.connect_sum_us);
        self.connect_max_us = opt(self.connect_max_us, o.connect_max_us, u64::max);
        add(&mut self.connect_errors, o.connect_errors);
        add(&mut self.dns_queries, o.dns_queries);
        add(&mut self.dns_responses, o.dns_responses);
        add(&mut self.dns_latency_sum_us, o.dns_latency_sum_us);
        add(&mut self.dns_latency_samples, o.dns_latency_samples);
        self.dns_latency_max_us = opt(self.dns_latency_max_us, o.dns_latency_max_us, u64::max);
        add(&mut self.dns_nxdomain, o.dns_nxdomain);
        add(&mut self.dns_servfail, o.dns_servfail);
        add(&mut self.dns_refused, o.dns_refused);
        add(&mut self.dns_other_errors, o.dns_other_errors);
        add(&mut self.dns_unanswered, o.dns_unanswered);
    }

    /// Mean RTT of the group (µs), when it has samples.
    pub fn rtt_avg_us(&self) -> Option<u64> {
        self.rtt_sum_us.checked_div(self.rtt_samples)
    }

    /// Mean connect latency of the group (µs), when a connect completed.
    pub fn connect_avg_us(&self) -> Option<u64> {
        self.connect_sum_us.checked_div(self.connects)
    }

    /// Mean DNS latency of the group (µs), when a query was answered.
    pub fn dns_latency_avg_us(&self) -> Option<u64> {
        self.dns_latency_sum_us
            .checked_div(self.dns_latency_samples)
    }

    /// Errors of the group: retransmits and resets both ways, failed connects, DNS error rcodes and
    /// unanswered queries.
    pub fn errors(&self) -> u64 {
        [
            self.retransmits_out,
            self.retransmits_in,
            self.resets_out,
            self.resets_in,
            self.connect_errors,
            self.dns_nxdomain,
            self.dns_servfail,
            self.dns_refused,
            self.dns_other_errors,
            self.dns_unanswered,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(rtt: (u64, u64, u64, u64), connect: Option<u64>) -> ConversationSignals {
        ConversationSignals {
            rtt_min_us: Some(rtt.0),
            rtt_avg_us: Some(rtt.1),
            rtt_max_us: Some(rtt.2),
            rtt_samples: rtt.3,
            connect_us: connect,
            retransmits_c2s: 3,
            resets_s2c: 1,
            ..Default::default()
        }
    }

    #[test]
    fn averages_recombine_by_weight_not_as_average_of_averages() {
        // 1 sample of 100 µs and 3 of 1000 µs: the mean is 775, the average of averages 550.
        let mut a = EndSignals::of_end(&signals((100, 100, 100, 1), Some(40)), true);
        let b = EndSignals::of_end(&signals((900, 1000, 1100, 3), None), true);
        a.combine(&b);
        assert_eq!(a.rtt_avg_us(), Some(775));
        assert_eq!((a.rtt_min_us, a.rtt_max_us), (Some(100), Some(1100)));
        assert_eq!(
            (a.connects, a.connect_avg_us(), a.connect_max_us),
            (1, Some(40), Some(40))
        );
        assert_eq!((a.retransmits_out, a.resets_in, a.errors()), (6, 2, 8));
    }

    #[test]
    fn the_server_end_sees_the_directions_swapped() {
        let s = EndSignals::of_end(&signals((1, 1, 1, 1), None), false);
        assert_eq!(
            (
                s.retransmits_out,
                s.retransmits_in,
                s.resets_out,
                s.resets_in
            ),
            (0, 3, 1, 0)
        );
        let empty = EndSignals::of_end(&ConversationSignals::default(), true);
        assert_eq!((empty.rtt_avg_us(), empty.errors()), (None, 0));
    }
}
