//! `runlens bench export`: how fast the OTLP exporter drains its outbox to a local receiver
//! (a second `runlens serve`, whose OTLP ingest stores what it gets). The history is the
//! synthetic one of `bench report`; every run is put in the outbox, then drained.

use std::time::Instant;

use super::support::{ServeProcess, StoredDb, TempDir, require_all_stored};
use crate::cli::{Effect, ExportBenchArgs};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::export::{ExportState, Exporter};
use crate::format::outln;
use crate::store::Writer;
use crate::store::read::{Reader, SharedReader};

/// Runs the benchmark.
pub fn run(args: ExportBenchArgs) -> Result<(), Failure> {
    if args.spans == 0 {
        return Err(Failure::new(USAGE, "--spans must be positive"));
    }
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("{what}: {e}"));
    let dir = TempDir::new("export")?;
    let history = dir.0.join("history.db");
    super::report::build_history(&history, args.spans, Effect::None)
        .map_err(|e| fail("cannot build the history", &e))?;
    let conn = crate::store::open_for_writing(&history, false, None)?;
    let (runs, spans): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM spans)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| fail("cannot read the history", &e))?;
    crate::store::synthetic::queue_for_export(&history)
        .map_err(|e| fail("cannot fill the outbox", &e))?;
    let receiver = ServeProcess::start(&dir.0.join("receiver.db"), &[])?;
    let endpoint = format!(
        "http://{}",
        receiver
            .otlp_grpc
            .clone()
            .ok_or_else(|| Failure::new(FAILURE, "the receiver did not say its OTLP address"))?
    );
    let writer =
        Writer::start(conn, None, true, None).map_err(|e| fail("cannot start the writer", &e))?;
    let exporter = Exporter {
        transport: crate::export::transport::Transport::new(
            &endpoint,
            crate::export::transport::Protocol::Grpc,
        )
        .map_err(|e| fail("bad endpoint", &e))?,
        reader: SharedReader::new(Reader::open(&history)?),
        writer: writer.handle(),
        state: std::sync::Arc::new(ExportState::default()),
        resource: Vec::new(),
    };
    outln!(
        "runlens bench export: {runs} runs, {spans} spans ({} with each run's own root span) \
         from the outbox to runlens serve (pid {}) at {endpoint}",
        runs + spans,
        receiver.pid
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| fail("cannot start a runtime", &e))?;
    let start = Instant::now();
    runtime
        .block_on(exporter.drain())
        .map_err(|e| fail("export failed", &e))?;
    let elapsed = start.elapsed().as_secs_f64();
    runtime.block_on(writer.close());
    receiver.stop();
    let sent = runs + spans;
    outln!(
        "{:.0} spans/s exported and acknowledged ({sent} in {elapsed:.2} s)",
        sent as f64 / elapsed
    )?;
    let stored = StoredDb::open(&dir.0.join("receiver.db"))?.count("SELECT count(*) FROM spans")?;
    outln!("verified {stored}/{sent} spans at the receiver")?;
    require_all_stored(stored, u64::try_from(sent).unwrap_or(0), "the receiver")
}
