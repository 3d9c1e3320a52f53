//! flowlens: who is behind every network flow on this host.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use flowlens_collector::{
    config::{Cli, Command, Config},
    doctor, pipeline,
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
    let code = match cli.command {
        Command::Doctor => doctor::run(),
        Command::Replay(args) => flowlens_collector::replay::run(&args).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            1
        }),
        Command::Run(args) => match Config::from_args(&args)
            .map_err(anyhow::Error::from)
            .and_then(pipeline::run)
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
