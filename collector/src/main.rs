//! flowlens: who is behind every network flow on this host.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use flowlens_collector::{
    cli::{Cli, Command},
    config::{FlushConfig, ReplayConfig, RunConfig},
    doctor, influx, replay, run,
    user_input::shorten_long_words,
};

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // clap quotes a value it refuses whole: a 100,000-character argument
        // would be echoed in full.
        let text = e.render().to_string();
        let short = shorten_long_words(&text);
        if short == text {
            e.exit();
        }
        eprint!("{short}");
        std::process::exit(e.exit_code());
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FLOWLENS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(flowlens_collector::sinks::live_view::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Doctor => Ok(doctor::run()),
        Command::Replay(args) => ReplayConfig::from_args(&args)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| replay::run(&cfg)),
        Command::Web(args) => run::stop_on_signals()
            .and_then(|stop| flowlens_collector::web::run_web(&args, &stop))
            .map(|()| 0),
        Command::InfluxFlush(args) => FlushConfig::from_args(&args)
            .map_err(anyhow::Error::from)
            .and_then(|cfg| influx::flush::run(cfg.influx)),
        Command::Run(args) => RunConfig::from_args(&args)
            .map_err(anyhow::Error::from)
            .and_then(run::run)
            .map(|()| 0),
    };
    let code = result.unwrap_or_else(|e| {
        eprintln!("error: {}", shorten_long_words(&format!("{e:#}")));
        1
    });
    std::process::exit(code);
}
