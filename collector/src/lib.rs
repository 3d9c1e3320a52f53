//! flowlens collector: sees packets (eBPF programs, AF_PACKET sockets or a
//! pcap replay), correlates flows with their owners and writes records. The
//! `flowlens` binary (`main.rs`) is a thin CLI over this library; the data
//! flow is drawn in docs/architecture.md.
//!
//! - [`cli`], [`config`]: flags and the TOML file, validated once;
//! - [`exporter`]: the one run loop, driving a [`exporter::FlowSource`];
//! - flow sources: [`ebpf`] (kernel maps and ring buffer), [`afpacket`]
//!   (packet sockets + [`procscan`]), [`replay`] (capture files); the last
//!   two count with [`capture`], the userspace twin of the kernel programs;
//! - [`kernel_probe`], [`loader`], [`sock_loader`], [`signals_loader`], [`doctor`], [`privileges`]: the kernel side
//!   (what this kernel offers, which build and hooks it gets, loading and attaching);
//! - outputs: [`sinks`] (JSON lines, summary), [`influx`], assembled by [`outputs`];
//! - [`metrics`]: what flowlens saw and lost;
//! - helpers: [`clock`], [`docker`], [`enrich`], [`ifaces`] (and
//!   [`link_watch`], their notifications), [`user_input`].

pub mod afpacket;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conntrack;
pub mod docker;
pub mod doctor;
pub mod ebpf;
pub mod enrich;
pub mod exporter;
pub mod heap;
pub mod ifaces;
pub mod influx;
pub mod kernel_probe;
pub mod link_watch;
pub mod loader;
pub mod metrics;
pub mod outputs;
pub mod privileges;
pub mod procscan;
pub mod replay;
pub mod run;
pub mod signals_loader;
pub mod sinks;
pub mod sock_loader;
pub mod user_input;
pub mod web;
