//! flowlens correlator: joins packet flows with socket owners into attributed
//! conversations. Pure Rust: no kernel, no file system, no async runtime.

#![warn(missing_docs)]

pub mod cgroup;
pub mod conversation;
pub mod dns;
mod nat;
mod owners;
mod paths;
pub mod record;
pub mod rollup;
pub mod signals;
pub mod types;

pub use cgroup::{parse_container, ContainerRef};
pub use conversation::{ConversationTable, NatJoin, TableConfig, TableStats};
pub use record::{ConversationRecord, ConversationSignals, Endpoint, ProcessAttribution};
pub use types::normalize_ip;
