//! `runlens bench`: measured figures for the cost of sampling, of an idle sidecar, of
//! ingest (runlens.v1 and OTLP) and of the report.
//!
//! Figures are printed, never asserted: timings belong in a benchmark, not in a test
//! that flakes on a busy machine. Each benchmark is its own module; what they share
//! (a sidecar process, percentiles, /proc figures) is in `support`, which imports none
//! of them.

mod agent;
mod export;
mod idle;
mod ingest;
mod metrics;
mod otlp;
pub mod report;
mod sample;
mod soak;
mod support;
mod tracing;

use crate::cli::{BenchArgs, BenchCommand};
use crate::exit::Failure;

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    match args.command {
        BenchCommand::Sample(a) => sample::run(a),
        BenchCommand::Idle(a) => idle::run(a),
        BenchCommand::Ingest(a) => ingest::run(a),
        BenchCommand::Report(a) => report::run(a),
        BenchCommand::Otlp(a) => otlp::run(a),
        BenchCommand::Agent(a) => agent::run(a),
        BenchCommand::Metrics(a) => metrics::run(a),
        BenchCommand::Export(a) => export::run(a),
        BenchCommand::Tracing(a) => tracing::run(a),
        BenchCommand::Soak(a) => soak::run(a),
    }
}
