//! Matches DNS queries with their responses, per conversation and message
//! id: each query and response counted once however many hooks saw it
//! (between two local processes every message is seen leaving one socket and
//! reaching the other), the latency measured where the querier is, and
//! queries left without an answer.
//!
//! A message copy is seen at the querier's side (a query leaving it, a
//! response reaching it) or at the server's side. The latency of a query
//! seen at the querier's side is taken there (what the asking process
//! waited); otherwise at the server's (its answer time). A response nobody
//! saw the query of is counted, but gives no latency and no names.

use std::collections::HashMap;
use std::hash::Hash;

use super::parse::DnsMessage;
use crate::owners::shrink;

/// A query without a response for this long is unanswered (ns): the default
/// resolver timeout of glibc and musl.
pub(crate) const DNS_TIMEOUT_NS: u64 = 5_000_000_000;
/// An answered query is kept this long to recognise the response's other copy (ns).
const HOLD_NS: u64 = 2_000_000_000;

/// Where a copy of a message was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// At the querying socket (query sent, response received).
    Querier = 0,
    /// At the answering socket.
    Server = 1,
}

/// What one copy (or an expiry) adds to its conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DnsEffect {
    pub queries: u64,
    pub responses: u64,
    /// The rcode of a counted response.
    pub rcode: Option<u8>,
    /// A query's latency, final.
    pub latency_ns: Option<u64>,
    pub unanswered: u64,
    /// The response answers a query seen for the same name: its addresses may be named.
    pub names: bool,
}

#[derive(Debug)]
struct Query {
    first_ns: u64,
    /// When the query was seen, by side.
    at: [Option<u64>; 2],
    qname: Option<Box<str>>,
    answered_ns: Option<u64>,
    /// Latency measured at the server's side, kept until the querier's copy comes.
    server_latency: Option<u64>,
    done: bool,
}

/// Queries in flight, by (conversation, id).
#[derive(Debug)]
pub(crate) struct DnsTracker<K> {
    queries: HashMap<(K, u16), Query>,
    max: usize,
    /// Queries not tracked (table full): counted, without latency or names.
    pub untracked: u64,
    /// Responses without a query seen.
    pub unmatched: u64,
}

impl<K: Hash + Eq + Copy> DnsTracker<K> {
    /// At most `max` queries in flight.
    pub fn new(max: usize) -> Self {
        Self {
            queries: HashMap::new(),
            max,
            untracked: 0,
            unmatched: 0,
        }
    }

    /// Queries in flight (and answered ones held for their other copy).
    pub fn len(&self) -> usize {
        self.queries.len()
    }

    fn room(&mut self) -> bool {
        if self.queries.len() < self.max {
            return true;
        }
        self.untracked += 1;
        false
    }

    /// One copy of a message of conversation `key`, seen at `side` at `ts_ns`.
    pub fn observe(&mut self, key: K, msg: &DnsMessage, side: Side, ts_ns: u64) -> DnsEffect {
        let qk = (key, msg.id);
        let s = side as usize;
        let mut fx = DnsEffect::default();
        let qname = msg.question.as_ref().map(|q| q.name.as_str());
        if !msg.response {
            match self.queries.get_mut(&qk) {
                Some(q) if q.answered_ns.is_none() => {
                    q.at[s].get_or_insert(ts_ns);
                }
                existing => {
                    // New, or the id used again after an answer.
                    if existing.is_some() || self.room() {
                        let mut at = [None; 2];
                        at[s] = Some(ts_ns);
                        self.queries.insert(
                            qk,
                            Query {
                                first_ns: ts_ns,
                                at,
                                qname: qname.map(Into::into),
                                answered_ns: None,
                                server_latency: None,
                                done: false,
                            },
                        );
                    }
                    fx.queries = 1;
                }
            }
            return fx;
        }
        let Some(q) = self.queries.get_mut(&qk) else {
            self.unmatched += 1;
            fx.responses = 1;
            fx.rcode = Some(msg.rcode);
            if self.room() {
                // A tombstone: the response's other copy is not counted again.
                self.queries.insert(
                    qk,
                    Query {
                        first_ns: ts_ns,
                        at: [None; 2],
                        qname: None,
                        answered_ns: Some(ts_ns),
                        server_latency: None,
                        done: true,
                    },
                );
            }
            return fx;
        };
        let latency = q.at[s].map(|t| ts_ns.saturating_sub(t));
        if q.answered_ns.is_none() {
            q.answered_ns = Some(ts_ns);
            fx.responses = 1;
            fx.rcode = Some(msg.rcode);
            fx.names = q.qname.is_some() && q.qname.as_deref() == qname;
            match side {
                Side::Querier => {
                    fx.latency_ns = latency;
                    q.done = true;
                }
                // The querier's copy will come: its latency is the one that counts.
                Side::Server if q.at[Side::Querier as usize].is_some() => {
                    q.server_latency = latency;
                }
                Side::Server => {
                    fx.latency_ns = latency;
                    q.done = true;
                }
            }
        } else if !q.done && side == Side::Querier {
            fx.latency_ns = latency.or(q.server_latency);
            q.done = true;
        }
        fx
    }

    /// Ends what has waited long enough at `now_ns`: unanswered queries, and
    /// latencies whose querier copy never came (the server's is used).
    /// Returns the effects by conversation.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<(K, DnsEffect)>) {
        self.queries.retain(|(key, _), q| match q.answered_ns {
            None if now_ns.saturating_sub(q.first_ns) > DNS_TIMEOUT_NS => {
                out.push((
                    *key,
                    DnsEffect {
                        unanswered: 1,
                        ..DnsEffect::default()
                    },
                ));
                false
            }
            None => true,
            Some(t) if !q.done && now_ns.saturating_sub(t) > DNS_TIMEOUT_NS => {
                out.push((
                    *key,
                    DnsEffect {
                        latency_ns: q.server_latency,
                        ..DnsEffect::default()
                    },
                ));
                false
            }
            Some(t) => !q.done || now_ns.saturating_sub(t) <= HOLD_NS,
        });
        shrink(&mut self.queries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::parse::{DnsMessage, Question};

    const MS: u64 = 1_000_000;

    fn msg(id: u16, response: bool, rcode: u8, name: &str) -> DnsMessage {
        DnsMessage {
            id,
            response,
            opcode: 0,
            rcode,
            truncated: false,
            question: Some(Question {
                name: name.into(),
                qtype: 1,
            }),
            answers: Vec::new(),
            complete: true,
        }
    }

    #[test]
    fn both_local_each_message_once_and_the_querier_latency() {
        let mut t = DnsTracker::new(100);
        let q = msg(7, false, 0, "a.t");
        let r = msg(7, true, 0, "a.t");
        // query leaves the client at 0, reaches the server at 20 ms; the answer
        // leaves the server at 21 ms and reaches the client at 41 ms.
        assert_eq!(t.observe(1, &q, Side::Querier, 0).queries, 1);
        assert_eq!(
            t.observe(1, &q, Side::Server, 20 * MS),
            DnsEffect::default()
        );
        let fx = t.observe(1, &r, Side::Server, 21 * MS);
        assert_eq!(
            (fx.responses, fx.rcode, fx.latency_ns, fx.names),
            (1, Some(0), None, true)
        );
        let fx = t.observe(1, &r, Side::Querier, 41 * MS);
        assert_eq!((fx.responses, fx.latency_ns), (0, Some(41 * MS)));
        let mut out = Vec::new();
        t.expire(42 * MS + HOLD_NS + 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn remote_querier_latency_at_the_server() {
        let mut t = DnsTracker::new(100);
        t.observe(1, &msg(3, false, 0, "a.t"), Side::Server, 10 * MS);
        let fx = t.observe(1, &msg(3, true, 3, "a.t"), Side::Server, 12 * MS);
        assert_eq!(
            (fx.responses, fx.rcode, fx.latency_ns),
            (1, Some(3), Some(2 * MS))
        );
    }

    #[test]
    fn unanswered_unmatched_and_mismatched_names() {
        let mut t = DnsTracker::new(100);
        t.observe(1, &msg(1, false, 0, "a.t"), Side::Querier, 0);
        let mut out = Vec::new();
        t.expire(DNS_TIMEOUT_NS, &mut out);
        assert!(out.is_empty(), "not yet");
        t.expire(DNS_TIMEOUT_NS + 1, &mut out);
        assert_eq!(
            out,
            vec![(
                1,
                DnsEffect {
                    unanswered: 1,
                    ..Default::default()
                }
            )]
        );
        // A response without a query: counted once over both copies, no names.
        let r = msg(2, true, 2, "b.t");
        let fx = t.observe(1, &r, Side::Server, 0);
        assert_eq!((fx.responses, fx.rcode, fx.names), (1, Some(2), false));
        assert_eq!(t.observe(1, &r, Side::Querier, MS), DnsEffect::default());
        assert_eq!(t.unmatched, 1);
        // A response for another name than asked names nothing.
        t.observe(1, &msg(4, false, 0, "c.t"), Side::Querier, 0);
        assert!(
            !t.observe(1, &msg(4, true, 0, "evil.t"), Side::Querier, MS)
                .names
        );
    }

    #[test]
    fn the_querier_copy_never_comes_then_the_server_latency_counts() {
        let mut t = DnsTracker::new(100);
        t.observe(1, &msg(5, false, 0, "a.t"), Side::Querier, 0);
        t.observe(1, &msg(5, false, 0, "a.t"), Side::Server, MS);
        t.observe(1, &msg(5, true, 0, "a.t"), Side::Server, 4 * MS);
        let mut out = Vec::new();
        t.expire(4 * MS + DNS_TIMEOUT_NS + 1, &mut out);
        assert_eq!(
            out,
            vec![(
                1,
                DnsEffect {
                    latency_ns: Some(3 * MS),
                    ..Default::default()
                }
            )]
        );
    }

    #[test]
    fn a_full_tracker_still_counts() {
        let mut t = DnsTracker::new(1);
        assert_eq!(
            t.observe(1, &msg(1, false, 0, "a.t"), Side::Querier, 0)
                .queries,
            1
        );
        assert_eq!(
            t.observe(1, &msg(2, false, 0, "b.t"), Side::Querier, 0)
                .queries,
            1
        );
        assert_eq!(t.untracked, 1);
        let fx = t.observe(1, &msg(2, true, 0, "b.t"), Side::Querier, MS);
        assert_eq!((fx.responses, fx.latency_ns), (1, None));
    }
}
