//! Golden signals as they come in (per socket, per reset, per DNS message)
//! and as a conversation's record carries them (per interval, by direction).
//!
//! The inputs are the readers' domain types; [`PendingSignals`] adds up what
//! arrived for one conversation since its last record, by the end (index in
//! the conversation key) that sent or measured it, and [`PendingSignals::render`]
//! turns that into the record's `client`/`server` directions once the client
//! is known. The table glue lives in `conversation/signals.rs`.

use std::net::IpAddr;

use crate::dns::tracker::DnsEffect;
use crate::dns::DnsMessage;
use crate::record::ConversationSignals;

/// An address and a port.
pub type Addr = (IpAddr, u16);

/// RTT samples of one socket over one read (µs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttStats {
    /// Samples.
    pub samples: u64,
    /// Their sum.
    pub sum_us: u64,
    /// Smallest.
    pub min_us: u64,
    /// Largest.
    pub max_us: u64,
}

impl RttStats {
    /// Both sets of samples together.
    pub fn merge(self, o: RttStats) -> RttStats {
        match (self.samples, o.samples) {
            (0, _) => o,
            (_, 0) => self,
            _ => RttStats {
                samples: self.samples + o.samples,
                sum_us: self.sum_us.saturating_add(o.sum_us),
                min_us: self.min_us.min(o.min_us),
                max_us: self.max_us.max(o.max_us),
            },
        }
    }
}

/// What the kernel measured on one local TCP socket since the last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSignal {
    /// The socket's own address and port.
    pub local: Addr,
    /// Its peer.
    pub remote: Addr,
    /// Segments it retransmitted since the last read.
    pub retransmits: u64,
    /// RTT samples (its smoothed estimate) since the last read.
    pub rtt: RttStats,
}

/// A TCP reset seen by this host: sent by `local`, or received by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpReset {
    /// The end on this host.
    pub local: Addr,
    /// The other end.
    pub remote: Addr,
    /// Sent by `local` (else received).
    pub sent: bool,
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
}

/// A step of a local client's connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectStep {
    /// connect() sent the SYN (the socket's tuple may not be bound yet).
    Started,
    /// SYN_SENT -> ESTABLISHED.
    Established,
    /// SYN_SENT -> CLOSE, with the socket's error (errno; 0: the application
    /// gave up before any answer).
    Failed(i32),
}

/// A connect event of the socket `cookie`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectEvent {
    /// The socket.
    pub cookie: u64,
    /// Its address and port (port 0 before it is bound).
    pub local: Addr,
    /// The address it connects to.
    pub remote: Addr,
    /// What happened.
    pub step: ConnectStep,
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
}

/// Why a connect failed, as records name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The server answered with a reset (ECONNREFUSED).
    Refused,
    /// No answer: the kernel gave up (ETIMEDOUT) or the application did after at least a second.
    Timeout,
    /// The network said no (ICMP unreachable and the like).
    Unreachable,
    /// ECONNRESET or EPIPE at the end of a connect. Reserved: Linux reports an
    /// RST to a SYN as ECONNREFUSED, and sets ECONNRESET of an aborted connect
    /// only after the state change the collector reads (docs/schema.md).
    Reset,
}

/// A connect the application abandoned sooner than this is not a failure
/// (happy eyeballs cancels the slower address family): one initial SYN
/// retransmission timeout (ns).
pub const CONNECT_ABANDON_NS: u64 = 1_000_000_000;

impl ConnectError {
    /// The record's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Reset => "reset",
        }
    }

    /// The error of a connect that failed with `errno` after `waited_ns`
    /// (`None` when unknown); `None` for one abandoned early, without an error.
    pub fn classify(errno: i32, waited_ns: Option<u64>) -> Option<Self> {
        const ETIMEDOUT: i32 = 110;
        const ECONNREFUSED: i32 = 111;
        const ECONNRESET: i32 = 104;
        const EPIPE: i32 = 32;
        match errno {
            0 => waited_ns
                .is_some_and(|w| w >= CONNECT_ABANDON_NS)
                .then_some(Self::Timeout),
            ECONNREFUSED => Some(Self::Refused),
            ETIMEDOUT => Some(Self::Timeout),
            ECONNRESET | EPIPE => Some(Self::Reset),
            // EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENETDOWN, EACCES, EPERM, EPROTO ...
            _ => Some(Self::Unreachable),
        }
    }
}

/// One DNS message a local socket sent or received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsObservation {
    /// IP protocol (UDP or TCP).
    pub proto: u8,
    /// Sender.
    pub src: Addr,
    /// Receiver.
    pub dst: Addr,
    /// Seen leaving a local socket (else reaching one).
    pub egress: bool,
    /// The message.
    pub message: DnsMessage,
    /// CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
}

/// DNS counts of one conversation and interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DnsCounts {
    pub queries: u64,
    pub responses: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub refused: u64,
    pub other_errors: u64,
    pub unanswered: u64,
    pub latency_sum_ns: u64,
    pub latency_n: u64,
    pub latency_max_ns: u64,
}

impl DnsCounts {
    pub fn add(&mut self, fx: &DnsEffect) {
        use crate::dns::parse::rcode;
        self.queries += fx.queries;
        self.responses += fx.responses;
        self.unanswered += fx.unanswered;
        match fx.rcode {
            None | Some(rcode::NOERROR) => {}
            Some(rcode::NXDOMAIN) => self.nxdomain += 1,
            Some(rcode::SERVFAIL) => self.servfail += 1,
            Some(rcode::REFUSED) => self.refused += 1,
            Some(_) => self.other_errors += 1,
        }
        if let Some(l) = fx.latency_ns {
            self.latency_sum_ns = self.latency_sum_ns.saturating_add(l);
            self.latency_n += 1;
            self.latency_max_ns = self.latency_max_ns.max(l);
        }
    }
}

/// What arrived for one conversation since its last record, by end index
/// (0/1 as in the conversation key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PendingSignals {
    /// Segments retransmitted, by the sending end.
    pub retransmits: [u64; 2],
    /// Resets sent, by sender as its own socket saw them.
    pub resets_sent: [u64; 2],
    /// Resets received, by the end that sent them (as the receiver saw them).
    pub resets_received_from: [u64; 2],
    pub rtt: RttStats,
    pub connect_us: Option<u64>,
    /// A failed connect: its error, and the connecting end.
    pub connect_error: Option<(ConnectError, usize)>,
    pub dns: DnsCounts,
    /// A failed connect's start and end (CLOCK_MONOTONIC ns).
    pub failed_at: Option<(u64, u64)>,
    /// First arrival (CLOCK_MONOTONIC ns): for giving up on a conversation that never shows.
    pub since_ns: u64,
}

impl PendingSignals {
    /// Renders into `out` with `client` the client's end index.
    pub fn render(&self, client: usize, out: &mut ConversationSignals) {
        let server = 1 - client;
        let resets = |end: usize| self.resets_sent[end].max(self.resets_received_from[end]);
        let r = &self.rtt;
        if let Some(avg) = r.sum_us.checked_div(r.samples) {
            out.rtt_min_us = Some(r.min_us);
            out.rtt_max_us = Some(r.max_us);
            out.rtt_avg_us = Some(avg);
            out.rtt_samples = r.samples;
        }
        out.connect_us = self.connect_us;
        out.connect_error = self.connect_error.map(|(e, _)| e.as_str().to_owned());
        out.retransmits_c2s = self.retransmits[client];
        out.retransmits_s2c = self.retransmits[server];
        out.resets_c2s = resets(client);
        out.resets_s2c = resets(server);
        let d = &self.dns;
        out.dns_queries = d.queries;
        out.dns_responses = d.responses;
        out.dns_nxdomain = d.nxdomain;
        out.dns_servfail = d.servfail;
        out.dns_refused = d.refused;
        out.dns_other_errors = d.other_errors;
        out.dns_unanswered = d.unanswered;
        if let Some(avg_ns) = d.latency_sum_ns.checked_div(d.latency_n) {
            out.dns_latency_avg_us = Some(avg_ns / 1000);
            out.dns_latency_max_us = Some(d.latency_max_ns / 1000);
            out.dns_latency_samples = d.latency_n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors() {
        assert_eq!(
            ConnectError::classify(111, None),
            Some(ConnectError::Refused)
        );
        assert_eq!(
            ConnectError::classify(110, None),
            Some(ConnectError::Timeout)
        );
        assert_eq!(
            ConnectError::classify(113, None),
            Some(ConnectError::Unreachable)
        );
        assert_eq!(
            ConnectError::classify(101, Some(5)),
            Some(ConnectError::Unreachable)
        );
        assert_eq!(ConnectError::classify(104, None), Some(ConnectError::Reset));
        // the application closed it: after a second a timeout, before it no failure
        assert_eq!(
            ConnectError::classify(0, Some(CONNECT_ABANDON_NS)),
            Some(ConnectError::Timeout)
        );
        assert_eq!(ConnectError::classify(0, Some(200_000_000)), None);
        assert_eq!(ConnectError::classify(0, None), None);
    }

    #[test]
    fn directions_and_resets_seen_from_both_ends_count_once() {
        let p = PendingSignals {
            retransmits: [3, 1],
            resets_sent: [0, 1],
            resets_received_from: [0, 1],
            rtt: RttStats {
                samples: 4,
                sum_us: 400,
                min_us: 50,
                max_us: 200,
            },
            connect_us: Some(90),
            ..Default::default()
        };
        let mut s = ConversationSignals::default();
        p.render(1, &mut s);
        assert_eq!((s.retransmits_c2s, s.retransmits_s2c), (1, 3));
        assert_eq!((s.resets_c2s, s.resets_s2c), (1, 0));
        assert_eq!(
            (s.rtt_min_us, s.rtt_avg_us, s.rtt_max_us),
            (Some(50), Some(100), Some(200))
        );
        assert_eq!(s.connect_us, Some(90));
        let m = RttStats::default().merge(p.rtt).merge(RttStats {
            samples: 1,
            sum_us: 10,
            min_us: 10,
            max_us: 10,
        });
        assert_eq!((m.samples, m.min_us, m.max_us), (5, 10, 200));
    }
}
