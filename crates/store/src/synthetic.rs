//! A synthetic history written straight into a runlens database, with or without a
//! planted effect: what `runlens bench report` times the report on, and what the report's
//! tests check it against.
//!
//! The history: one GPU (80 GiB) whose free memory wanders between ~100 MiB and ~40 GiB,
//! a snapshot every 100 ms, runs of `plan`, `llm_call` and `tool_call` spans. With the
//! planted effect, llm_call takes longer the less GPU memory is free, and a run that ends
//! with less than 500 MiB free fails with "CUDA out of memory". Without it, durations
//! and failures ignore resources and the GPU never drops below 2 GiB free.

use rusqlite::params;

use crate::open_for_writing;

/// Whether the generated history hides a resource effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// llm_call slower with less GPU free memory; OOM failures.
    Planted,
    /// No relation between resources and durations or failures.
    None,
}

const GIB: f64 = 1073741824.0;
const MIB: f64 = 1048576.0;
const TOTAL_BYTES: i64 = 80 << 30;

/// A small deterministic generator (xorshift64*): the same history every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed of the history `runlens bench report` builds.
const SEED: u64 = 0x5eed_1234_abcd_ef01;

/// Writes the synthetic history into a new database at `db`.
pub fn build_history(db: &std::path::Path, spans: u64, effect: Effect) -> Result<(), String> {
    build_history_seeded(db, spans, effect, SEED)
}

/// The same with another seed: another history of the same shape (for tests over many).
pub fn build_history_seeded(
    db: &std::path::Path,
    spans: u64,
    effect: Effect,
    seed: u64,
) -> Result<(), String> {
    let mut conn = open_for_writing(db, false, None).map_err(|e| e.to_string())?;
    write_history(&mut conn, spans, effect, seed).map_err(|e| e.to_string())
}

/// Puts every run of the database at `db` in the OTLP export outbox, oldest first, as if
/// each had just ended with export on: a backlog for the exporter to drain (`runlens bench
/// export`, `runlens bench agent --export-backlog`).
pub fn queue_for_export(db: &std::path::Path) -> Result<u64, String> {
    let conn = open_for_writing(db, false, None).map_err(|e| e.to_string())?;
    conn.execute(
        "INSERT INTO export_outbox (run_id) SELECT run_id FROM runs ORDER BY started_at_ns",
        [],
    )
    .map(|n| n as u64)
    .map_err(|e| e.to_string())
}

fn write_history(
    conn: &mut rusqlite::Connection,
    spans: u64,
    effect: Effect,
    seed: u64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut rng = Rng(seed.max(1));
    let snapshots = (spans / 10).max(10);
    let base: i64 = 1_700_000_000_000_000_000;
    let step: i64 = 100_000_000; // 100 ms between snapshots
    let floor = if effect == Effect::Planted {
        100.0 * MIB
    } else {
        2.0 * GIB
    };
    let mut free = 20.0 * GIB;
    let mut frees = Vec::with_capacity(snapshots as usize);
    {
        let mut snap = tx.prepare(
            "INSERT INTO snapshots (snapshot_id, taken_at_ns, reason, gpu_available, gpu_count,
                cpu_count, cpu_load_1m, cpu_utilization_ratio, ram_total_bytes, ram_used_bytes,
                ram_available_bytes, swap_total_bytes, swap_used_bytes)
             VALUES (?1, ?2, 'interval', 1, 1, 8, ?3, ?4, ?5, ?6, ?7, 0, 0)",
        )?;
        let mut gpu = tx.prepare(
            "INSERT INTO gpu_samples (snapshot_id, gpu_index, uuid, name, state,
                memory_total_bytes, memory_used_bytes, memory_free_bytes, utilization_ratio)
             VALUES (?1, 0, 'GPU-synthetic-0', 'NVIDIA H100 80GB HBM3', 'ok', ?2, ?3, ?4, ?5)",
        )?;
        let ram_total: i64 = 64 << 30;
        for i in 0..snapshots {
            // A random walk with occasional drops, kept between the floor and 40 GiB.
            free += (rng.next() - 0.5) * 4.0 * GIB;
            if rng.next() < 0.02 {
                free = floor + rng.next() * GIB;
            }
            free = free.clamp(floor, 40.0 * GIB);
            frees.push(free);
            let id = i64::try_from(i).unwrap_or(i64::MAX) + 1;
            let load = 1.0 + rng.next() * 5.0;
            let available = (0.3 + rng.next() * 0.6) * ram_total as f64;
            snap.execute(params![
                id,
                base + id * step,
                load,
                load / 8.0,
                ram_total,
                ram_total - available as i64,
                available as i64
            ])?;
            let free_bytes = free as i64;
            gpu.execute(params![
                id,
                TOTAL_BYTES,
                TOTAL_BYTES - free_bytes - (512 << 20),
                free_bytes,
                rng.next()
            ])?;
        }
    }
    let mut run_stmt = tx.prepare(
        "INSERT INTO runs (run_id, name, status, error, started_at_ns, ended_at_ns,
            start_snapshot_id, end_snapshot_id)
         VALUES (?1, 'answer-question', ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut span_stmt = tx.prepare(
        "INSERT INTO spans (span_id, run_id, parent_span_id, name, status, error,
            started_at_ns, ended_at_ns, start_snapshot_id, end_snapshot_id)
         VALUES (?1, ?2, NULL, ?3, ?4, NULL, ?5, ?6, ?7, ?7)",
    )?;
    let names = ["plan", "llm_call", "tool_call"];
    let per_run = 10u64;
    let runs = spans.div_ceil(per_run);
    let mut written = 0u64;
    for r in 0..runs {
        // Runs are spread evenly over the snapshots' time.
        let first = (r * snapshots / runs).min(snapshots - 1);
        let last = (((r + 1) * snapshots / runs).max(first + 1) - 1).min(snapshots - 1);
        let run_id = format!("run-{r}");
        let start_ns = base + (i64::try_from(first).unwrap_or(0) + 1) * step;
        let end_ns = base + (i64::try_from(last).unwrap_or(0) + 1) * step + step / 2;
        for k in 0..per_run.min(spans - written) {
            let s = first + (k * (last - first + 1) / per_run).min(last - first);
            let name = names[usize::try_from(k % 3).unwrap_or(0)];
            let free = frees[usize::try_from(s).unwrap_or(0)];
            let mut ms = match name {
                "plan" => 20.0 + rng.next() * 20.0,
                "llm_call" => 200.0 + rng.next() * 100.0,
                _ => 50.0 + rng.next() * 50.0,
            };
            if effect == Effect::Planted && name == "llm_call" {
                // Up to 3x slower as free memory runs out.
                ms *= 1.0 + 2.0 * (1.0 - free / (40.0 * GIB));
            }
            let failed = rng.next() < 0.02;
            let span_start = base + (i64::try_from(s).unwrap_or(0) + 1) * step;
            span_stmt.execute(params![
                format!("{run_id}-{k}"),
                run_id,
                name,
                if failed { "failed" } else { "ok" },
                span_start,
                span_start + (ms * 1e6) as i64,
                i64::try_from(s).unwrap_or(0) + 1
            ])?;
            written += 1;
        }
        let end_free = frees[usize::try_from(last).unwrap_or(0)];
        let (status, error) = match effect {
            Effect::Planted if end_free < 500.0 * MIB => (
                "failed",
                Some("CUDA out of memory. Tried to allocate 2.00 GiB"),
            ),
            _ if rng.next() < 0.05 => ("failed", Some("tool_call failed: search timed out")),
            _ => ("ok", None),
        };
        let last_id = i64::try_from(last).unwrap_or(0) + 1;
        run_stmt.execute(params![
            run_id,
            status,
            error,
            start_ns,
            end_ns,
            i64::try_from(first).unwrap_or(0) + 1,
            last_id
        ])?;
    }
    drop(run_stmt);
    drop(span_stmt);
    tx.commit()
}
