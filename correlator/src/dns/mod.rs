//! DNS as flowlens sees it: the wire parser, the matching of queries and
//! responses (counts by rcode, latency, unanswered queries), and the
//! per-host cache of names behind addresses. Pure: the collector hands in
//! parsed messages with their times; no lookups of our own.

pub(crate) mod names;
pub mod parse;
pub(crate) mod tracker;

pub use parse::{parse_message, tcp_messages, DnsError, DnsMessage};
