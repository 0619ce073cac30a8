//! The `runlens` binary.
#![forbid(unsafe_code)]

mod auth;
mod budget;
mod build_info;
mod cli;
mod commands;
mod exit;
mod export;
mod figures;
mod format;
mod ingest;
mod metrics;
mod net;
mod otel_env;
mod otlp;
mod otlp_ids;
mod peer;
mod sampler;
mod service;
#[cfg(test)]
mod test_fixtures;

use std::process::ExitCode;

// The store and report crates under the names the modules use (`crate::store`,
// `crate::domain`, `crate::report`).
use runlens_report as report;
use runlens_store as store;
use runlens_store::domain;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` are answers (exit 0); anything else clap refuses is
            // a usage error, with the same code as every check after parsing (EX_USAGE,
            // not clap's own 2).
            let code = if error.exit_code() == 0 {
                0
            } else {
                exit::USAGE
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    // The docs' test asks whether each `runlens` command the book shows is accepted by
    // this build's flags, without running it.
    if std::env::var_os(cli::env::CHECK_ARGS).is_some() {
        println!("runlens: arguments accepted");
        return ExitCode::SUCCESS;
    }
    // The sidecar reports its life at info; one-shot commands speak only of problems.
    init_logging(
        match cli.command {
            cli::Command::Serve(_) => "info",
            _ => "warn",
        },
        cli.log_format,
    );
    let result = match cli.command {
        cli::Command::Serve(args) => commands::serve::run(*args),
        cli::Command::Snapshot(args) => commands::snapshot::run(args),
        cli::Command::Query(args) => commands::query::run(args),
        cli::Command::Doctor(args) => commands::doctor::run(args),
        cli::Command::Bench(args) => commands::bench::run(args),
        cli::Command::Stress(args) => commands::stress::run(args),
        cli::Command::Report(args) => commands::report::run(args),
        cli::Command::Export(command) => commands::export::run(command),
        cli::Command::Merge(args) => commands::merge::run(args),
        cli::Command::Backup(args) => commands::backup::run(args),
        cli::Command::Top(args) => commands::top::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("runlens: {failure}");
            ExitCode::from(failure.code)
        }
    }
}

/// Logs go to stderr; `RUNLENS_LOG` sets the filter (e.g. `debug`), else `default`.
/// `json` writes one object a line with the event's fields at the top level (beside
/// `timestamp`, `level`, `target` and `message`), as log pipelines index them.
fn init_logging(default: &str, format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(cli::env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        cli::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
