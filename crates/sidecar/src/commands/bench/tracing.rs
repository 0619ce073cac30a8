//! `runlens bench tracing`: what `runlens_client::tracing::RunlensLayer` adds to a
//! `tracing` span on the caller's thread. The same loop of spans (a task span around 99
//! step spans, each created, entered, exited and closed) runs under a bare
//! `tracing-subscriber` registry and under the registry with the layer, alternating, for
//! several rounds; the layer's spans go to a real `runlens serve` and are verified stored.

use std::time::{Duration, Instant};

use runlens_client::Client;
use runlens_client::tracing::RunlensLayer;
use tracing::info_span;
use tracing_subscriber::prelude::*;

use super::support::{ServeProcess, StoredDb, TempDir, require_all_stored};
use crate::cli::TracingBenchArgs;
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::report::stats::sorted_percentile;

/// Step spans under each task span.
const STEPS_PER_TASK: u64 = 99;

/// Runs the benchmark.
pub fn run(args: TracingBenchArgs) -> Result<(), Failure> {
    if args.spans < STEPS_PER_TASK + 1 || args.rounds == 0 {
        return Err(Failure::new(
            USAGE,
            format!(
                "--spans must be at least {} and --rounds positive",
                STEPS_PER_TASK + 1
            ),
        ));
    }
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("{what}: {e}"));
    let dir = TempDir::new("tracing")?;
    let db = dir.0.join("tracing.db");
    let serve = ServeProcess::start(&db, &[])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| fail("cannot start a runtime", &e))?;
    let tasks = args.spans / (STEPS_PER_TASK + 1);
    let spans = tasks * (STEPS_PER_TASK + 1);
    // Room for a whole round (a start and an end per span), so nothing is dropped.
    let capacity = usize::try_from(spans * 2 + 16).unwrap_or(usize::MAX);
    let client = {
        let _entered = runtime.enter();
        Client::builder(format!("http://{}", serve.addr))
            .name("bench-tracing")
            .capacity(capacity)
            .capacity_bytes(usize::MAX)
            .build()
            .map_err(|e| fail("cannot build the client", &e))?
    };
    outln!(
        "runlens bench tracing: {spans} spans a round ({tasks} tasks of 1 + {STEPS_PER_TASK}), \
         {} rounds, runlens serve (pid {}) at {}",
        args.rounds,
        serve.pid,
        serve.addr
    )?;
    let mut bare = Vec::new();
    let mut layered = Vec::new();
    for _ in 0..args.rounds {
        bare.push(per_span(spans, || {
            tracing::subscriber::with_default(tracing_subscriber::registry(), || loop_spans(tasks))
        }));
        let subscriber = tracing_subscriber::registry().with(RunlensLayer::new(client.clone()));
        layered.push(per_span(spans, || {
            tracing::subscriber::with_default(subscriber, || loop_spans(tasks))
        }));
        // Delivery is not the caller's cost, but a round must not crowd the next one.
        runtime
            .block_on(client.flush_timeout(Duration::from_secs(120)))
            .map_err(|e| fail("the sidecar did not commit a round", &e))?;
    }
    let bare_ns = median(&mut bare);
    let layered_ns = median(&mut layered);
    outln!(
        "bare registry:        median {bare_ns:>7.0} ns a span   (rounds: {})",
        list(&bare)
    )?;
    outln!(
        "with RunlensLayer:    median {layered_ns:>7.0} ns a span   (rounds: {})",
        list(&layered)
    )?;
    outln!(
        "the layer adds {:.0} ns a span ({:.1}× the bare registry) on the caller's thread",
        layered_ns - bare_ns,
        layered_ns / bare_ns.max(1.0)
    )?;
    if client.dropped() > 0 || client.rejected() > 0 {
        return Err(Failure::new(
            FAILURE,
            format!(
                "{} dropped, {} rejected",
                client.dropped(),
                client.rejected()
            ),
        ));
    }
    drop(client);
    serve.stop();
    let stored = StoredDb::open(&db)?.count(
        "SELECT (SELECT count(*) FROM spans WHERE status = 'ok')
              + (SELECT count(*) FROM runs WHERE status = 'ok')",
    )?;
    let expected = spans * u64::from(args.rounds);
    outln!("verified {stored}/{expected} spans stored (task spans as runs)")?;
    require_all_stored(stored, expected, "the database")
}

/// The measured loop: `tasks` task spans, each around `STEPS_PER_TASK` step spans.
fn loop_spans(tasks: u64) {
    for task in 0..tasks {
        info_span!("task", task).in_scope(|| {
            for step in 0..STEPS_PER_TASK {
                info_span!("step", step).in_scope(|| std::hint::black_box(step));
            }
        });
    }
}

/// Nanoseconds a span for one timed call.
fn per_span(spans: u64, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e9 / spans as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    sorted_percentile(v, 0.5).unwrap_or(0.0)
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
