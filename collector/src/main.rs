//! flowlens: who is behind every network flow on this host.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use flowlens_collector::{
    cli::{Cli, Command},
    config::{ReplayConfig, RunConfig},
    doctor, replay, run,
};

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLOWLENS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Doctor => Ok(doctor::run()),
        Command::Replay(args) => ReplayConfig::from_args(&args)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| replay::run(&cfg)),
        Command::Run(args) => RunConfig::from_args(&args)
            .map_err(anyhow::Error::from)
            .and_then(run::run)
            .map(|()| 0),
    };
    let code = result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        1
    });
    std::process::exit(code);
}
