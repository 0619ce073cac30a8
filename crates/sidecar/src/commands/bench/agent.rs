//! `runlens bench agent`: what runlens costs at the rates agents really run, not at
//! saturation. The real client drives a fresh `runlens serve` with the example agent's shape
//! at a steady rate, and the CPU of each side is divided by the spans stored.
//!
//! The shape of one task (three spans, like `example-agent`): `start_run`, `plan`, under it
//! `llm_call` with two token metrics (and, with `--fresh`, fresh samples at its start and
//! end), then `tool_call`; every third task the tool fails (an event, three failures); a run
//! metric; `end_run`. Its messages are spread over the task's share of time, as an agent's
//! steps are; the client sends them as it would (lingering, `--linger-ms`).
//!
//! Per rate it prints CPU and wake-ups per span of both sides, the samples the sidecar took
//! per second, how far each boundary lies from the sample it refers to (the offset), the
//! acknowledgement latency, and that every span was stored.
//!
//! CPU is read from `/proc/<pid>/task/*/schedstat` (nanoseconds on CPU, every thread), so
//! even a sidecar that spends a few milliseconds a second is measured exactly. Wake-ups are
//! the context switches of every thread. With `--seed-python`, the seed's in-process emitter
//! (psutil at each span boundary, JSON lines to a file) runs at the same rate for comparison.
//! `--transport unix` connects through a Unix socket, as an agent in its pod does.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runlens_client::Client;

use super::support::{ServeProcess, StoredDb, TempDir, require_all_stored, summary};
use crate::cli::{AgentBenchArgs, BenchTransport};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;

/// Spans in one task.
const SPANS_PER_TASK: u64 = 3;

/// CPU and scheduling of a process, summed over its threads.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// Nanoseconds on a CPU.
    cpu_ns: u64,
    /// Context switches, voluntary (waits: each a wake-up) and not.
    switches: u64,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let mut usage = Usage::default();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return usage;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            if let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                usage.cpu_ns += ns;
            }
            if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
                usage.switches += status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        usage
    }

    fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// Runs the benchmark at each rate.
pub fn run(args: AgentBenchArgs) -> Result<(), Failure> {
    if args.rate.is_empty() || args.rate.contains(&0) || args.seconds == 0 {
        return Err(Failure::new(USAGE, "--rate and --seconds must be positive"));
    }
    let mut rows = Vec::new();
    for &rate in &args.rate {
        rows.push(one_rate(&args, rate)?);
    }
    if rows.len() > 1 {
        outln!("")?;
        outln!(
            "{:>6}  {:>9}  {:>8}  {:>8}  {:>8}  {:>6}  {:>9}  {:>9}  {:>15}  {:>13}",
            "spans/s",
            "sidecar µs",
            "client µs",
            "sum µs",
            "seed µs",
            "ratio",
            "wake-ups",
            "samples/s",
            "offset p50/p99 ms",
            "ack p50/p99 ms"
        )?;
        for r in &rows {
            let seed = r.seed.map_or("-".to_owned(), |s| format!("{s:.1}"));
            let ratio = r
                .seed
                .map_or("-".to_owned(), |s| format!("{:.2}", r.sum() / s));
            outln!(
                "{:>7}  {:>10.1}  {:>9.1}  {:>8.1}  {:>8}  {:>6}  {:>9.2}  {:>9.2}  {:>7.1} / {:>5.1}  {:>6.1} / {:>5.1}",
                r.rate,
                r.sidecar_us,
                r.client_us,
                r.sum(),
                seed,
                ratio,
                r.wakeups,
                r.samples_per_s,
                r.offset_ms.0,
                r.offset_ms.1,
                r.ack_ms.0,
                r.ack_ms.1
            )?;
        }
    }
    Ok(())
}

/// One rate's figures, per span.
struct RateRow {
    rate: u64,
    sidecar_us: f64,
    client_us: f64,
    seed: Option<f64>,
    wakeups: f64,
    samples_per_s: f64,
    /// p50, p99.
    offset_ms: (f64, f64),
    /// p50, p99.
    ack_ms: (f64, f64),
}

impl RateRow {
    fn sum(&self) -> f64 {
        self.sidecar_us + self.client_us
    }
}

/// Writes `runs` ended runs (ten spans each) into `db`, all waiting in the export outbox,
/// starts a second sidecar to receive them, and adds `--otlp-export` to `extra`.
fn export_backlog(
    dir: &std::path::Path,
    db: &std::path::Path,
    runs: u64,
    extra: &mut Vec<String>,
) -> Result<ServeProcess, Failure> {
    let fail = |what: &str, e: String| Failure::new(FAILURE, format!("{what}: {e}"));
    crate::store::synthetic::build_history(db, runs * 10, crate::store::synthetic::Effect::None)
        .map_err(|e| fail("cannot build the backlog's history", e))?;
    let queued = crate::store::synthetic::queue_for_export(db)
        .map_err(|e| fail("cannot fill the export outbox", e))?;
    let receiver = ServeProcess::start(&dir.join("receiver.db"), &[])?;
    let otlp = receiver
        .otlp_grpc
        .clone()
        .ok_or_else(|| Failure::new(FAILURE, "the receiver did not say its OTLP address"))?;
    extra.extend(["--otlp-export".to_owned(), format!("http://{otlp}")]);
    outln!(
        "export backlog: {queued} runs in the outbox, exported to runlens serve (pid {}) at {otlp}",
        receiver.pid
    )?;
    Ok(receiver)
}

/// Measures one rate against a fresh sidecar.
fn one_rate(args: &AgentBenchArgs, rate: u64) -> Result<RateRow, Failure> {
    // Spans from here on are the agent's (an export backlog's are years older).
    let since_ns = probe_core::unix_now_ns();
    let dir = TempDir::new(&format!("agent-{rate}"))?;
    let db = dir.0.join("agent.db");
    let socket = dir.0.join("runlens.sock");
    let (mut extra, endpoint) = match args.transport {
        BenchTransport::Unix => {
            let listen = format!("unix://{}", socket.display());
            (vec!["--listen".to_owned(), listen.clone()], Some(listen))
        }
        BenchTransport::Tcp => (Vec::new(), None),
    };
    if let Some(active) = args.active_sample_interval {
        extra.push("--active-sample-interval".to_owned());
        extra.push(humantime::format_duration(active).to_string());
    }
    // The receiver lives as long as the measurement; `None` without a backlog.
    let _receiver = match args.export_backlog {
        Some(runs) => Some(export_backlog(&dir.0, &db, runs, &mut extra)?),
        None => None,
    };
    let serve = ServeProcess::start(&db, &extra)?;
    let endpoint = endpoint.unwrap_or_else(|| format!("http://{}", serve.addr));
    let tasks = (rate * args.seconds).div_ceil(SPANS_PER_TASK);
    outln!(
        "runlens bench agent: {rate} spans/s for {} s ({tasks} tasks of {SPANS_PER_TASK} spans, \
         the example agent's shape{}) to runlens serve (pid {}) at {endpoint}",
        args.seconds,
        if args.fresh {
            ", fresh llm_call samples"
        } else {
            ""
        },
        serve.pid,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FAILURE, format!("cannot start a runtime: {e}")))?;
    let outcome = drive(args, &runtime, rate, &endpoint, serve.pid, tasks);
    serve.stop();
    let mut measured = outcome?;
    let spans = tasks * SPANS_PER_TASK;
    let per_span = |u: Usage| u.cpu_ns as f64 / 1e3 / spans as f64;
    outln!(
        "sidecar: {:.1} µs CPU per span, {:.2} wake-ups per span ({:.2} % of a core)",
        per_span(measured.sidecar),
        measured.sidecar.switches as f64 / spans as f64,
        measured.sidecar.cpu_ns as f64 / 1e7 / measured.wall.as_secs_f64()
    )?;
    // The driver's own pacing (its sleeps between steps) is what any agent pays, with or
    // without runlens: measured alone at the same rate and subtracted, so the client's
    // figure is what recording and sending cost.
    let dry_tasks = tasks.min(rate * DRY_SECONDS / SPANS_PER_TASK).max(1);
    let dry = pace_only(rate, dry_tasks);
    let scale = tasks as f64 / dry_tasks as f64;
    let driver = Usage {
        cpu_ns: (dry.cpu_ns as f64 * scale) as u64,
        switches: (dry.switches as f64 * scale) as u64,
    };
    outln!(
        "the driver's pacing alone: {:.1} µs CPU per span, {:.2} wake-ups per span ({dry_tasks} \
         tasks without recording; subtracted below)",
        per_span(driver),
        driver.switches as f64 / spans as f64
    )?;
    measured.client = measured.client.since(driver);
    outln!(
        "client (recording and sending, in the agent's process): {:.1} µs CPU per span, {:.2} \
         wake-ups per span",
        per_span(measured.client),
        measured.client.switches as f64 / spans as f64
    )?;
    outln!(
        "sidecar + client: {:.1} µs CPU per span",
        per_span(measured.sidecar) + per_span(measured.client)
    )?;
    let stored_db = StoredDb::open(&db)?;
    let count = |sql: &str| stored_db.count(sql);
    let samples = count(&format!(
        "SELECT count(*) FROM snapshots WHERE taken_at_ns >= {}",
        measured.began_ns
    ))?;
    let samples_per_s = samples as f64 / measured.wall.as_secs_f64();
    let fresh = count(&format!(
        "SELECT count(*) FROM snapshots WHERE reason IN ('fresh', 'stale') AND taken_at_ns >= {}",
        measured.began_ns
    ))?;
    outln!(
        "samples: {samples_per_s:.2} per second ({samples} in {:.1} s, {fresh} of them fresh)",
        measured.wall.as_secs_f64()
    )?;
    let offsets: Vec<Duration> = stored_db
        .sample_offsets(measured.began_ns)?
        .into_iter()
        .map(|ns| Duration::from_nanos(ns.unsigned_abs()))
        .collect();
    let offset_ms = percentiles_ms(&offsets);
    outln!("boundary to its sample (offset): {}", summary(offsets))?;
    let ack_ms = percentiles_ms(&measured.acks);
    outln!("acknowledgement latency: {}", summary(measured.acks))?;
    let stored = count(&format!(
        "SELECT count(*) FROM spans WHERE start_snapshot_id IS NOT NULL
         AND end_snapshot_id IS NOT NULL AND started_at_ns >= {since_ns}"
    ))?;
    outln!("verified {stored}/{spans} spans stored, each with both samples")?;
    let seed = match &args.seed_python {
        Some(python) => {
            let seed = seed_emitter(python, rate, args.seconds.min(10), &dir.0)?;
            outln!(
                "seed emitter (psutil + JSON lines, in process, same rate, its pacing subtracted): \
                 {seed:.1} µs CPU per span; runlens is {:.2}x of it",
                (per_span(measured.sidecar) + per_span(measured.client)) / seed
            )?;
            Some(seed)
        }
        None => None,
    };
    require_all_stored(stored, spans, "the database")?;
    Ok(RateRow {
        rate,
        sidecar_us: per_span(measured.sidecar),
        client_us: per_span(measured.client),
        seed,
        wakeups: (measured.sidecar.switches + measured.client.switches) as f64 / spans as f64,
        samples_per_s,
        offset_ms,
        ack_ms,
    })
}

/// The median and p99 of `samples`, in ms.
fn percentiles_ms(samples: &[Duration]) -> (f64, f64) {
    let ms = super::support::sorted_in(samples, 1e3);
    let pick = |q| crate::report::stats::sorted_percentile(&ms, q).unwrap_or(0.0);
    (pick(0.5), pick(0.99))
}

/// What one run measured.
struct Measured {
    sidecar: Usage,
    client: Usage,
    wall: Duration,
    /// When measuring began, Unix ns.
    began_ns: i64,
    acks: Vec<Duration>,
}

/// Records `tasks` tasks at the rate, measuring both processes from the first to the last
/// acknowledgement.
///
/// The agent is this thread: it records and paces itself with a blocking sleep, as the
/// seed's emitter does (`time.sleep`) and as an agent blocked on its model call is. The
/// client's background task runs on `runtime`'s one worker. (Pacing with the runtime's
/// timers from `block_on` would make every pause a wake-up of the worker that hands the
/// timer back to this thread: the driver's costs mixed into the client's threads.)
fn drive(
    args: &AgentBenchArgs,
    runtime: &tokio::runtime::Runtime,
    rate: u64,
    endpoint: &str,
    sidecar: u32,
    tasks: u64,
) -> Result<Measured, Failure> {
    let fail = |e: runlens_client::Error| Failure::new(FAILURE, e.to_string());
    let mut builder = Client::builder(endpoint).name("bench-agent");
    if let Some(ms) = args.linger_ms {
        builder = builder.linger(Duration::from_millis(ms));
    }
    let client = {
        let _inside = runtime.enter();
        builder.build().map_err(fail)?
    };
    // Connected and warm before measuring.
    client.start_run("warm-up").end_ok();
    runtime.block_on(client.flush()).map_err(fail)?;
    let me = std::process::id();
    let (sidecar_before, client_before) = (Usage::of(sidecar), Usage::of(me));
    let begin = Instant::now();
    let began_ns = probe_core::unix_now_ns();
    let acks = AckClock::start(runtime, client.clone());
    let task_time = Duration::from_secs_f64(SPANS_PER_TASK as f64 / rate as f64);
    // A task's messages come in four groups, a quarter of its time apart.
    let step = task_time / 4;
    for i in 0..tasks {
        let due = begin + task_time * u32::try_from(i).unwrap_or(u32::MAX);
        pause_until(due);
        let fails = i % 3 == 2;
        let run = client.start_run_with("answer-question", [("task", i.to_string())]);
        let plan = run.span("plan");
        pause_until(due + step);
        let llm = plan.span_with("llm_call", [("model", "example-7b")], args.fresh);
        llm.metric("gen_ai.usage.input_tokens", 200.0, "{token}");
        llm.metric("gen_ai.usage.output_tokens", 50.0, "{token}");
        llm.end_ok();
        pause_until(due + step * 2);
        let tool = plan.span_with("tool_call", [("tool", "search")], false);
        if fails {
            tool.event("retry", [("attempt", "1")]);
            tool.end_failed("search timed out after 1 retry");
            plan.end_failed("tool_call failed");
        } else {
            tool.end_ok();
            plan.end_ok();
        }
        pause_until(due + step * 3);
        run.metric("agent.steps", 3.0, "{step}");
        if fails {
            run.end_failed("tool_call failed");
        } else {
            run.end_ok();
        }
        acks.sent(client.last_seq());
    }
    runtime.block_on(client.flush()).map_err(fail)?;
    let latencies = runtime.block_on(acks.finish())?;
    Ok(Measured {
        sidecar: Usage::of(sidecar).since(sidecar_before),
        client: Usage::of(me).since(client_before),
        wall: begin.elapsed(),
        began_ns,
        acks: latencies,
    })
}

/// Times each task's acknowledgement: how long its last message waits for its commit.
///
/// One task on the client's runtime wakes with each acknowledgement (when the client's
/// stream task is awake anyway, reading it) and stamps every task it covers: measuring
/// adds no wake-up of its own to the client's threads.
struct AckClock {
    waiting: Arc<Mutex<VecDeque<(u64, Instant)>>>,
    done: Arc<tokio::sync::Notify>,
    stamper: tokio::task::JoinHandle<Result<Vec<Duration>, runlens_client::Error>>,
}

impl AckClock {
    fn start(runtime: &tokio::runtime::Runtime, client: Client) -> AckClock {
        let waiting = Arc::new(Mutex::new(VecDeque::<(u64, Instant)>::new()));
        let done = Arc::new(tokio::sync::Notify::new());
        let (queue, finished) = (waiting.clone(), done.clone());
        let stamper = runtime.spawn(async move {
            let mut latencies = Vec::new();
            let stamp = |latencies: &mut Vec<Duration>, committed: u64| {
                let now = Instant::now();
                if let Ok(mut q) = queue.lock() {
                    while let Some(&(_, sent)) = q.front().filter(|(s, _)| *s <= committed) {
                        latencies.push(now.duration_since(sent));
                        q.pop_front();
                    }
                }
            };
            loop {
                let next = client.committed_seq() + 1;
                tokio::select! {
                    acked = client.committed(next) => {
                        acked?;
                        stamp(&mut latencies, client.committed_seq());
                    }
                    () = finished.notified() => {
                        // Every task is acknowledged (the driver flushed) but its
                        // acknowledgement may not have been stamped yet.
                        stamp(&mut latencies, client.committed_seq());
                        return Ok(latencies);
                    }
                }
            }
        });
        AckClock {
            waiting,
            done,
            stamper,
        }
    }

    /// A task ended with message `seq`, now.
    fn sent(&self, seq: u64) {
        if let Ok(mut q) = self.waiting.lock() {
            q.push_back((seq, Instant::now()));
        }
    }

    /// Every task's latency; call once all are acknowledged.
    async fn finish(self) -> Result<Vec<Duration>, Failure> {
        self.done.notify_one();
        self.stamper
            .await
            .map_err(|e| Failure::new(FAILURE, e.to_string()))?
            .map_err(|e| Failure::new(FAILURE, e.to_string()))
    }
}

/// Seconds of the dry run that measures the driver's pacing alone.
const DRY_SECONDS: u64 = 5;

/// The driver's schedule without recording: the same four pauses per task.
fn pace_only(rate: u64, tasks: u64) -> Usage {
    let me = std::process::id();
    let before = Usage::of(me);
    let begin = Instant::now();
    let task_time = Duration::from_secs_f64(SPANS_PER_TASK as f64 / rate as f64);
    let step = task_time / 4;
    for i in 0..tasks {
        let due = begin + task_time * u32::try_from(i).unwrap_or(u32::MAX);
        for k in 0..4 {
            pause_until(due + step * k);
        }
    }
    Usage::of(me).since(before)
}

/// Sleeps this thread until `due` (at once when it has passed).
fn pause_until(due: Instant) {
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// The seed's emitter (Section 8 of the course): at each span's start and end, psutil's
/// load average and virtual memory, and a JSON line appended to a file; run by `python` at
/// `rate` spans/s for `seconds`. Returns its CPU per span, µs, less its loop's pacing
/// (measured alone first, as runlens's driver's is).
fn seed_emitter(python: &Path, rate: u64, seconds: u64, dir: &Path) -> Result<f64, Failure> {
    const SEED: &str = r#"
import json, os, sys, time
import psutil
rate, seconds, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def system_metrics():
    mem = psutil.virtual_memory()
    return {"cpu_load_1m": psutil.getloadavg()[0], "ram_used_mb": mem.used / 2**20,
            "ram_free_mb": mem.available / 2**20}
n = rate * seconds
gap = 1.0 / rate
def paced(work):
    begin = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(n):
        delay = begin + i * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        work(i)
    return (time.process_time() - cpu0) * 1e6 / n
with open(path, "a") as out:
    def emit(kind, **fields):
        out.write(json.dumps({"ts": time.time(), "kind": kind, **fields}) + "\n")
        out.flush()
    def span(i):
        emit("span_start", name="llm_call", span=i, **system_metrics())
        emit("span_end", name="llm_call", span=i, status="ok", **system_metrics())
    # The loop's own pacing, measured alone and subtracted, as for runlens's driver.
    pacing = paced(lambda i: None)
    print(paced(span) - pacing, pacing)
"#;
    let out = std::process::Command::new(python)
        .args(["-c", SEED, &rate.to_string(), &seconds.to_string()])
        .arg(dir.join("seed.jsonl"))
        .output()
        .map_err(|e| Failure::new(FAILURE, format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(Failure::new(
            FAILURE,
            format!(
                "the seed emitter failed (is psutil installed for {}?): {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|emitter| emitter.parse().ok())
        .ok_or_else(|| {
            Failure::new(
                FAILURE,
                format!("the seed emitter said something else: {text}"),
            )
        })
}
