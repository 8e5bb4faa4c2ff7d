//! `shoal-agent`: parses the command line, runs it, and turns errors into a message on stderr
//! and an exit code (0 success, 1 failed operation, 2 bad usage or bad config).

use clap::Parser;
use shoal_agent::cli::{self, Cli};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// The log filter from `SHOAL_LOG`: a default level and per-target levels, as in
/// `SHOAL_LOG=info` or `SHOAL_LOG=warn,shoal_agent::fetch=debug` (`Targets` syntax: the
/// `target=level` directives of `RUST_LOG`, without span or field filters). Unset means `warn`;
/// a value that does not parse is said once and `warn` is used. Not tracing's `EnvFilter`: its
/// span and regex filters cost the device binary 0.4 MB (docs/CROSS.md, "Size").
fn log_filter() -> Targets {
    let warn = Targets::new().with_default(LevelFilter::WARN);
    let value = match std::env::var("SHOAL_LOG") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => return warn,
    };
    match value.parse::<Targets>() {
        Ok(targets) => targets,
        Err(e) => {
            eprintln!("warning: SHOAL_LOG={value:?} is not a log filter ({e}); logging at warn. Use a level (error, warn, info, debug, trace) or target=level pairs separated by commas");
            warn
        }
    }
}

fn main() {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: under systemd, stderr goes to the journal,
        // where escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(logs.with_filter(log_filter()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
