//! `runlens bench soak`: runlens left running, as in a pod for weeks, compressed into
//! minutes. A fresh `runlens serve` samples eight fake GPUs (the fake NVML library) every
//! 100 ms with retention set small so that pruning runs all the time, while runlens.v1
//! clients and OTLP senders (half each) send tasks at a steady rate. Every interval it
//! prints the sidecar's resident memory, the database's size and the acknowledgement
//! latency; at the end whether memory stayed flat after warm-up and whether every span sent
//! is either stored or was pruned by retention (`verified N/N`, from the database and
//! `runlens_pruned_total`).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use runlens_client::Client;
use tokio::sync::Mutex;

use super::support::{ServeProcess, StoredDb, TempDir, mib, sorted_in, status_bytes};
use crate::cli::SoakBenchArgs;
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::report::stats::sorted_percentile;

/// Spans in one runlens.v1 task (a run of three spans, like `example-agent`).
const V1_SPANS: u64 = 3;
/// Spans in one OTLP task (a trace: its root, which is also the run, and three children).
const OTLP_SPANS: u64 = 4;
/// The resident-memory growth after warm-up the soak aims to stay within.
const RSS_GROWTH_TARGET: u64 = 5 << 20;
/// The acknowledgement p99 the soak aims to stay within.
const ACK_P99_TARGET: Duration = Duration::from_millis(10);

/// What the senders counted.
#[derive(Default)]
struct Sent {
    runs: AtomicU64,
    spans: AtomicU64,
    /// runlens.v1 acknowledgement latencies since the last report.
    v1: Mutex<Vec<Duration>>,
    /// OTLP export answer latencies since the last report.
    otlp: Mutex<Vec<Duration>>,
}

/// Runs the benchmark.
pub fn run(args: SoakBenchArgs) -> Result<(), Failure> {
    if args.minutes <= 0.0 || args.clients == 0 || args.rate == 0 {
        return Err(Failure::new(
            USAGE,
            "--minutes, --clients and --rate must be positive",
        ));
    }
    let nvml = match &args.nvml_lib {
        Some(path) => path.clone(),
        None => fake_nvml_next_to_this_binary()?,
    };
    let dir = TempDir::new("soak")?;
    let scenario = dir.0.join("gpus.json");
    write_scenario(&scenario, args.gpus)?;
    let db = dir.0.join("soak.db");
    let extra: Vec<String> = [
        "--sample-interval",
        "100ms",
        "--retain",
        &args.retain,
        "--retain-full",
        &args.retain_full,
        "--nvml-lib",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([nvml.display().to_string()])
    .collect();
    let env: [(&str, &OsStr); 1] = [("RUNLENS_FAKE_NVML_SCENARIO", scenario.as_os_str())];
    let serve = ServeProcess::start_with(&db, &extra, &env, true)?;
    let metrics = serve
        .metrics
        .clone()
        .ok_or_else(|| Failure::new(FAILURE, "runlens serve did not say its /metrics address"))?;
    let otlp = serve
        .otlp_grpc
        .clone()
        .ok_or_else(|| Failure::new(FAILURE, "runlens serve did not say its OTLP address"))?;
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let every = args
        .report_every
        .min(duration / 6)
        .max(Duration::from_secs(1));
    outln!(
        "runlens bench soak: {:.1} min, {} clients ({} runlens.v1, {} OTLP) sending {} spans/s \
         in all, {} fake GPUs sampled every 100 ms, --retain {} --retain-full {}; runlens \
         serve pid {}",
        args.minutes,
        args.clients,
        args.clients.div_ceil(2),
        args.clients / 2,
        args.rate,
        args.gpus,
        args.retain,
        args.retain_full,
        serve.pid
    )?;
    outln!(
        "{:>8}  {:>10}  {:>10}  {:>8}  {:>8}  {:>12}  {:>12}",
        "elapsed",
        "RSS",
        "db+wal",
        "runs",
        "spans",
        "v1 ack p99",
        "OTLP p99"
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FAILURE, format!("cannot start a runtime: {e}")))?;
    let sent = Arc::new(Sent::default());
    let outcome = runtime.block_on(drive(
        &args,
        &format!("http://{}", serve.addr),
        &format!("http://{otlp}"),
        duration,
        every,
        (&db, serve.pid),
        &sent,
    ));
    let verified = outcome.and_then(|series| {
        let pruned = consistent_counts(&db, &metrics)?;
        Ok((series, pruned))
    });
    serve.stop();
    let (series, (stored_runs, stored_spans, pruned_runs, pruned_spans)) = verified?;
    conclude(&args, &series, duration)?;
    let sent_runs = sent.runs.load(Ordering::Relaxed);
    let sent_spans = sent.spans.load(Ordering::Relaxed);
    outln!(
        "pruned while running: {pruned_runs} runs, {pruned_spans} spans; still stored: \
         {stored_runs} runs, {stored_spans} spans"
    )?;
    if stored_runs + pruned_runs != sent_runs || stored_spans + pruned_spans != sent_spans {
        return Err(Failure::new(
            FAILURE,
            format!(
                "lost data: sent {sent_runs} runs and {sent_spans} spans, stored + pruned \
                 {} runs and {} spans",
                stored_runs + pruned_runs,
                stored_spans + pruned_spans
            ),
        ));
    }
    outln!(
        "verified {}/{sent_spans} spans and {}/{sent_runs} runs: each stored or pruned by \
         retention, none lost",
        stored_spans + pruned_spans,
        stored_runs + pruned_runs
    )?;
    Ok(())
}

/// One line of the series.
struct Point {
    elapsed: Duration,
    rss: u64,
    db_bytes: u64,
    v1_p99: Option<Duration>,
    otlp_p99: Option<Duration>,
    /// The longest single acknowledgement (or export answer) of the interval: what a
    /// pruning step or a checkpoint holding the writer shows as.
    v1_max: Option<Duration>,
    otlp_max: Option<Duration>,
}

async fn drive(
    args: &SoakBenchArgs,
    v1_endpoint: &str,
    otlp_endpoint: &str,
    duration: Duration,
    every: Duration,
    (db, pid): (&Path, u32),
    sent: &Arc<Sent>,
) -> Result<Vec<Point>, Failure> {
    let fail = |e: &dyn std::fmt::Display| Failure::new(FAILURE, e.to_string());
    let per_client = args.rate as f64 / f64::from(args.clients);
    let begin = Instant::now();
    let mut senders = Vec::new();
    for i in 0..args.clients {
        let sent = sent.clone();
        if i % 2 == 0 {
            let client = Client::builder(v1_endpoint)
                .name(format!("soak-{i}"))
                .build()
                .map_err(|e| fail(&e))?;
            senders.push(tokio::spawn(v1_sender(
                client, per_client, begin, duration, sent,
            )));
        } else {
            let exporter = TraceServiceClient::connect(otlp_endpoint.to_owned())
                .await
                .map_err(|e| fail(&e))?;
            senders.push(tokio::spawn(otlp_sender(
                exporter,
                u64::from(i),
                per_client,
                begin,
                duration,
                sent,
            )));
        }
    }
    let mut series = Vec::new();
    let mut next = begin + every;
    while next <= begin + duration + Duration::from_millis(10) {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let p99 = |samples: &[Duration]| {
            sorted_percentile(&sorted_in(samples, 1e6), 0.99)
                .map(|us| Duration::from_secs_f64(us / 1e6))
        };
        let v1 = std::mem::take(&mut *sent.v1.lock().await);
        let otlp = std::mem::take(&mut *sent.otlp.lock().await);
        let point = Point {
            elapsed: begin.elapsed(),
            rss: status_bytes(pid, "VmRSS:").unwrap_or(0),
            db_bytes: file_size(db) + file_size(&wal_of(db)),
            v1_p99: p99(&v1),
            otlp_p99: p99(&otlp),
            v1_max: v1.iter().max().copied(),
            otlp_max: otlp.iter().max().copied(),
        };
        let ms = |d: Option<Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
            )
        };
        outln!(
            "{:>7.0}s  {:>10}  {:>10}  {:>8}  {:>8}  {:>12}  {:>12}",
            point.elapsed.as_secs_f64(),
            mib(Some(point.rss)),
            mib(Some(point.db_bytes)),
            sent.runs.load(Ordering::Relaxed),
            sent.spans.load(Ordering::Relaxed),
            ms(point.v1_p99),
            ms(point.otlp_p99)
        )?;
        series.push(point);
    }
    for sender in senders {
        sender.await.map_err(|e| fail(&e))?.map_err(|e| fail(&e))?;
    }
    Ok(series)
}

/// Tasks of three spans at `rate` spans/s until `duration` is over; the acknowledgement
/// of every task's last message is timed.
async fn v1_sender(
    client: Client,
    rate: f64,
    begin: Instant,
    duration: Duration,
    sent: Arc<Sent>,
) -> Result<(), String> {
    let gap = Duration::from_secs_f64(V1_SPANS as f64 / rate);
    let mut due = begin;
    let mut waits = Vec::new();
    while due < begin + duration {
        tokio::time::sleep_until(due.into()).await;
        due += gap;
        let run = client.start_run("soak-task");
        for name in ["plan", "llm_call", "tool_call"] {
            run.span(name).end_ok();
        }
        run.end_ok();
        let seq = client.last_seq();
        let t = Instant::now();
        let c = client.clone();
        let sent = sent.clone();
        waits.push(tokio::spawn(async move {
            c.committed(seq).await.map_err(|e| e.to_string())?;
            sent.v1.lock().await.push(t.elapsed());
            sent.runs.fetch_add(1, Ordering::Relaxed);
            sent.spans.fetch_add(V1_SPANS, Ordering::Relaxed);
            Ok::<(), String>(())
        }));
        waits.retain(|w| !w.is_finished());
    }
    for w in waits {
        w.await.map_err(|e| e.to_string())??;
    }
    client
        .shutdown(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())
}

/// One trace of four spans per export at `rate` spans/s; the export's answer (sent once
/// the spans are committed) is timed.
async fn otlp_sender(
    mut exporter: TraceServiceClient<tonic::transport::Channel>,
    index: u64,
    rate: f64,
    begin: Instant,
    duration: Duration,
    sent: Arc<Sent>,
) -> Result<(), String> {
    let gap = Duration::from_secs_f64(OTLP_SPANS as f64 / rate);
    let mut due = begin;
    let mut n = 0_u64;
    while due < begin + duration {
        tokio::time::sleep_until(due.into()).await;
        due += gap;
        n += 1;
        let request = super::otlp::export(index * 1_000_000_000 + n, OTLP_SPANS, OTLP_SPANS);
        let t = Instant::now();
        exporter
            .export(request)
            .await
            .map_err(|e| format!("an export failed: {e}"))?;
        sent.otlp.lock().await.push(t.elapsed());
        sent.runs.fetch_add(1, Ordering::Relaxed);
        sent.spans.fetch_add(OTLP_SPANS, Ordering::Relaxed);
    }
    Ok(())
}

/// Prints the summary: memory after warm-up, the database's largest size, ack p99.
fn conclude(args: &SoakBenchArgs, series: &[Point], duration: Duration) -> Result<(), Failure> {
    // Warm-up: the first fifth of the run or the first minute, whichever is shorter.
    let warm = (duration / 5).min(Duration::from_secs(60));
    let after: Vec<&Point> = series.iter().filter(|p| p.elapsed >= warm).collect();
    if let (Some(first), Some(last)) = (after.first(), after.last()) {
        let growth = last.rss.saturating_sub(first.rss);
        let peak = after.iter().map(|p| p.rss).max().unwrap_or(0);
        outln!(
            "sidecar RSS after warm-up ({:.0} s): {} at {:.0} s, {} at the end, peak {}; \
             growth {} (target ≤ {})",
            warm.as_secs_f64(),
            mib(Some(first.rss)),
            first.elapsed.as_secs_f64(),
            mib(Some(last.rss)),
            mib(Some(peak)),
            mib(Some(growth)),
            mib(Some(RSS_GROWTH_TARGET))
        )?;
    }
    let largest = series.iter().map(|p| p.db_bytes).max().unwrap_or(0);
    let end = series.last().map_or(0, |p| p.db_bytes);
    outln!(
        "database file (+ WAL): largest {}, at the end {} (retention {} / {})",
        mib(Some(largest)),
        mib(Some(end)),
        args.retain,
        args.retain_full
    )?;
    for (what, worst, longest) in [
        (
            "runlens.v1 acknowledgement",
            series.iter().filter_map(|p| p.v1_p99).max(),
            series.iter().filter_map(|p| p.v1_max).max(),
        ),
        (
            "OTLP export answer",
            series.iter().filter_map(|p| p.otlp_p99).max(),
            series.iter().filter_map(|p| p.otlp_max).max(),
        ),
    ] {
        if let (Some(worst), Some(longest)) = (worst, longest) {
            outln!(
                "{what} p99, worst interval: {:.2} ms (target ≤ {} ms); longest {:.2} ms",
                worst.as_secs_f64() * 1e3,
                ACK_P99_TARGET.as_millis(),
                longest.as_secs_f64() * 1e3
            )?;
        }
    }
    Ok(())
}

/// (runs stored, spans stored, runs pruned, spans pruned), read in a quiet moment:
/// retention keeps pruning (its window keeps moving), and a step's counter is raised a
/// moment after its deletions commit (the retention task hears of them from the writer).
/// So the counts and the counter must both stay the same over half a second, longer than
/// any such moment; a count taken mid-step would look like lost data.
fn consistent_counts(db: &Path, metrics: &str) -> Result<(u64, u64, u64, u64), Failure> {
    let stored = StoredDb::open(db)?;
    let counts = || -> Result<(i64, i64), Failure> {
        Ok((
            stored.count("SELECT count(*) FROM runs")?,
            stored.count("SELECT count(*) FROM spans")?,
        ))
    };
    for _ in 0..50 {
        let before = pruned(metrics)?;
        let (runs, spans) = counts()?;
        std::thread::sleep(Duration::from_millis(500));
        if counts()? == (runs, spans) && pruned(metrics)? == before {
            let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
            return Ok((as_u64(runs), as_u64(spans), before.0, before.1));
        }
    }
    Err(Failure::new(
        FAILURE,
        "pruning never paused long enough to count",
    ))
}

/// `runlens_pruned_total` for runs and spans, from a scrape.
fn pruned(metrics: &str) -> Result<(u64, u64), Failure> {
    let fail = |e: std::io::Error| Failure::new(FAILURE, format!("cannot scrape {metrics}: {e}"));
    let mut stream = std::net::TcpStream::connect(metrics).map_err(fail)?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: runlens\r\n\r\n")
        .map_err(fail)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(fail)?;
    let value = |what: &str| {
        let prefix = format!("runlens_pruned_total{{what=\"{what}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    Ok((value("runs"), value("spans")))
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn wal_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// `librunlens_fake_nvml.so` beside this binary (where cargo builds both).
fn fake_nvml_next_to_this_binary() -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(FAILURE, format!("cannot find this binary: {e}")))?;
    let lib = exe.with_file_name("librunlens_fake_nvml.so");
    if lib.exists() {
        Ok(lib)
    } else {
        Err(Failure::new(
            USAGE,
            format!(
                "no fake NVML library at {}: build it (`cargo build --release -p \
                 runlens-fake-nvml`) or pass --nvml-lib",
                lib.display()
            ),
        ))
    }
}

/// A scenario of `gpus` busy GPUs, each with a process holding memory.
fn write_scenario(path: &Path, gpus: u32) -> Result<(), Failure> {
    let devices: Vec<serde_json::Value> = (0..gpus)
        .map(|i| {
            serde_json::json!({
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": format!("GPU-{i:08}-soak-4000-8000-{i:012}"),
                "memory_total_bytes": 85_520_809_984_u64,
                "memory_used_bytes": 60_129_542_144_u64,
                "utilization_gpu_percent": 87,
                "utilization_memory_percent": 41,
                "temperature_celsius": 64,
                "power_milliwatts": 512_000,
                "power_limit_milliwatts": 700_000,
                "processes": [{ "pid": 4242 + i, "used_memory_bytes": 60_129_542_144_u64 }]
            })
        })
        .collect();
    std::fs::write(path, serde_json::json!({ "devices": devices }).to_string())
        .map_err(|e| Failure::new(FAILURE, format!("cannot write the GPU scenario: {e}")))
}
