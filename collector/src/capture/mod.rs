//! Userspace packet capture shared by `flowlens run --capture afpacket` and
//! `flowlens replay`: the twin of the kernel programs' parser ([`parse`]) and
//! of their flow map ([`accounts`]). Frames in, cumulative per-(direction,
//! interface) flow counters out, with the kernel's rules, so both modes and
//! the eBPF path count the same bytes.

pub mod accounts;
pub mod parse;

/// Frame builders for the tests (the replay's use them too).
#[cfg(test)]
pub(crate) mod parse_tests;

pub use accounts::{AccountStats, FlowAccounts, FlowCounters, FlowDelta, FragmentPorts};
pub use parse::{linktype, parse_frame, Frag, ParsedPacket, Skip};
