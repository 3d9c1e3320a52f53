//! flowlens collector: loads the kernel programs, reads their maps and ring
//! buffer, correlates flows with their owners and writes records. The
//! `flowlens` binary (`main.rs`) is a thin CLI over this library.

pub mod afpacket;
pub mod clock;
pub mod config;
pub mod docker;
pub mod doctor;
pub mod enrich;
pub mod events;
pub mod ifaces;
pub mod influx;
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod privileges;
pub mod procscan;
pub mod readers;
pub mod replay;
pub mod sinks;
