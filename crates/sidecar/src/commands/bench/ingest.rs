//! `runlens bench ingest`: the sidecar as a separate process on loopback, driven by the
//! real client, with every figure printed and the database checked at the end.

use std::time::{Duration, Instant};

use runlens_client::Client;

use super::support::{
    ServeProcess, StoredDb, TempDir, mib, require_all_stored, sorted_in, status_bytes, summary,
};
use crate::cli::IngestArgs;
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::report::stats::sorted_percentile;

/// Runs the benchmark.
pub fn run(args: IngestArgs) -> Result<(), Failure> {
    if args.spans == 0 || args.clients == 0 {
        return Err(Failure::new(
            USAGE,
            "--spans and --clients must be positive",
        ));
    }
    let (db, _tmp) = match &args.db {
        Some(db) if db.exists() => {
            return Err(Failure::new(
                USAGE,
                format!(
                    "{} exists; bench ingest needs a fresh database path",
                    db.display()
                ),
            ));
        }
        Some(db) => (db.clone(), None),
        None => {
            let dir = TempDir::new("ingest")?;
            (dir.0.join("ingest.db"), Some(dir))
        }
    };
    let serve = ServeProcess::start(&db, &[])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FAILURE, format!("cannot start a runtime: {e}")))?;
    let endpoint = format!("http://{}", serve.addr);
    outln!(
        "runlens bench ingest: {} spans from {} client(s) to runlens serve (pid {}) at {}, db {}",
        args.spans,
        args.clients,
        serve.pid,
        serve.addr,
        db.display()
    )?;
    let result = runtime.block_on(drive(&args, &endpoint));
    let peak = status_bytes(serve.pid, "VmHWM:");
    serve.stop();
    let (sent, steady_spans) = result?;
    outln!("sidecar peak resident memory: {}", mib(peak))?;
    let stored = StoredDb::open(&db)?.count(
        "SELECT count(*) FROM spans WHERE status = 'ok' AND start_snapshot_id IS NOT NULL
         AND end_snapshot_id IS NOT NULL",
    )?;
    let expected = sent + steady_spans;
    outln!("verified {stored}/{expected} spans stored, each with both snapshots")?;
    require_all_stored(stored, expected, "the database")?;
    Ok(())
}

async fn drive(args: &IngestArgs, endpoint: &str) -> Result<(u64, u64), Failure> {
    let fail = |e: runlens_client::Error| Failure::new(FAILURE, e.to_string());
    let per_client = args.spans / args.clients;
    let sent = per_client * args.clients;
    let clients: Vec<Client> = (0..args.clients)
        .map(|i| {
            Client::builder(endpoint)
                .name(format!("bench-{i}"))
                .capacity(usize::try_from(per_client * 2 + 16).unwrap_or(usize::MAX))
                .capacity_bytes(usize::MAX)
                .build()
        })
        .collect::<Result<_, _>>()
        .map_err(fail)?;

    // Phase 1: full speed. Each client records from its own thread; spans/s counts until
    // the sidecar has acknowledged the last one.
    let start = Instant::now();
    let mut threads = Vec::new();
    for client in &clients {
        let client = client.clone();
        threads.push(std::thread::spawn(move || {
            let run = client.start_run("bench");
            let mut per_batch = Vec::new();
            let mut left = per_client;
            while left > 0 {
                let n = left.min(1000);
                let t = Instant::now();
                for _ in 0..n {
                    run.span("step").end_ok();
                }
                per_batch.push(t.elapsed() / u32::try_from(n).unwrap_or(1));
                left -= n;
            }
            run.end_ok();
            per_batch
        }));
    }
    let mut hot_path = Vec::new();
    for t in threads {
        hot_path.extend(
            t.join()
                .map_err(|_| Failure::new(FAILURE, "a client thread panicked"))?,
        );
    }
    let recorded = start.elapsed();
    for c in &clients {
        c.flush().await.map_err(fail)?;
    }
    let acked = start.elapsed().as_secs_f64();
    let messages = sent * 2 + 2 * args.clients;
    outln!(
        "full speed: {:.0} spans/s, {:.0} messages/s ({} spans acknowledged in {:.2} s; recording took {:.2} s)",
        sent as f64 / acked,
        messages as f64 / acked,
        sent,
        acked,
        recorded.as_secs_f64()
    )?;
    let ns = sorted_in(&hot_path, 1e9);
    outln!(
        "client hot path, span start+end (mean per span over batches of 1000): median {:.0} ns, p99 {:.0} ns",
        sorted_percentile(&ns, 0.5).unwrap_or(0.0),
        sorted_percentile(&ns, 0.99).unwrap_or(0.0)
    )?;
    let dropped: u64 = clients.iter().map(Client::dropped).sum();
    if dropped > 0 {
        outln!("dropped by clients: {dropped}")?;
    }

    // Phase 2: a steady rate; acknowledgement latency of every 10th span.
    if args.steady_seconds == 0 || args.rate == 0 {
        return Ok((sent, 0));
    }
    let client = clients[0].clone();
    let run = client.start_run("steady");
    let total = args.rate * args.steady_seconds;
    let gap = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut waits = Vec::new();
    let begin = Instant::now();
    for i in 0..total {
        let due = begin + gap * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(sleep) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(sleep).await;
        }
        run.span("steady").end_ok();
        if i % 10 == 0 {
            let seq = client.last_seq();
            let t = Instant::now();
            let c = client.clone();
            waits.push(tokio::spawn(async move {
                c.committed(seq).await.map(|()| t.elapsed())
            }));
        }
    }
    run.end_ok();
    let mut latencies = Vec::with_capacity(waits.len());
    for w in waits {
        latencies.push(
            w.await
                .map_err(|e| Failure::new(FAILURE, e.to_string()))?
                .map_err(fail)?,
        );
    }
    client.flush().await.map_err(fail)?;
    outln!(
        "steady {} spans/s for {} s: acknowledgement latency {}",
        args.rate,
        args.steady_seconds,
        summary(latencies)
    )?;
    Ok((sent, total))
}
