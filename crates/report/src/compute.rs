//! From the loaded figures to a [`Report`]: latency, context, correlations and pressure
//! per step, and the chart series. The OOM section is `oom.rs`'s.
//!
//! The steps' figures come from two passes over the spans: one in any order that counts
//! (each step's spans, those under pressure, those with GPU free memory known: what the
//! percentiles and the scatter's sampling need to know beforehand), then one in step and
//! duration order ([`SortedSpans::merged`]) that picks the percentiles and gathers the
//! duration ranks per snapshot ([`StepRanks`]), a step at a time.

use super::columns::{Snapshots, Values};
use super::load::{Data, SnapFigures};
use super::oom::RunsSeen;
use super::ranks::{Classes, Percentiles, ResourceOrder, StepRanks};
use super::spill::{SortedSpans, SpanRecord};
use super::*;

/// At most this many points per chart series.
const CHART_POINTS: usize = 600;

/// At most this many steps get a scatter chart of duration against GPU free memory.
const MAX_SCATTER: usize = 12;

/// The presence bit of a snapshot under pressure (bits 0 to 6 are the resources').
const PRESSED: u8 = 1 << 7;

/// The presence bit of GPU free memory (the scatter's figure): bit k is `RESOURCES[k]`'s.
const FREE_KNOWN: u8 = 1 << 0;
const _: () = assert!(matches!(RESOURCES[0], Resource::GpuFreeMemory));

/// What every step's figures are computed against.
struct Shared<'a> {
    data: &'a Data,
    /// Each resource's snapshots in the order of its value.
    resources: Vec<ResourceOrder>,
    /// Which resources rank durations among the same spans.
    classes: Classes,
    /// Per snapshot: bit r set when it has resource r's figure, [`PRESSED`] when under
    /// pressure.
    presence: Vec<u8>,
    /// The snapshots' figures, read back by position.
    values: Values,
    /// Per resource, each snapshot's dense rank of its value: made only when some step is
    /// small enough to be ranked by sorting ([`StepRanks::against_few`]).
    dense: Vec<Option<Vec<u32>>>,
    /// "GPU n" or "the tightest GPU", "the busiest GPU" (bandwidth, tensor).
    labels: [String; 3],
}

/// One step's part of each section.
struct StepFigures {
    latency: Latency,
    context: Context,
    correlations: Vec<Correlation>,
    findings: Vec<String>,
    pressure: Pressure,
    scatter: Option<Scatter>,
}

pub(super) fn compute(
    data: &mut Data,
    (oom, runs): (Oom, RunsSeen),
    options: &Options,
) -> Result<Report, Error> {
    let threshold = options.oom_threshold_bytes;
    let spans = std::mem::take(&mut data.spans);
    // What needs every snapshot's figures first; then their values go to a temporary file
    // (the steps read a few back: medians and the scatter's points).
    let presence: Vec<u8> = data
        .snapshots
        .iter()
        .map(|s| {
            let mut bits = if under_pressure(&s, threshold) {
                PRESSED
            } else {
                0
            };
            for (k, r) in RESOURCES.iter().enumerate() {
                if r.value(&s).is_some_and(f64::is_finite) {
                    bits |= 1 << k;
                }
            }
            bits
        })
        .collect();
    let labels = [
        gpu_label(
            &data.snapshots,
            |s| s.gpu_free_min_index,
            "the tightest GPU",
        ),
        gpu_label(
            &data.snapshots,
            |s| s.gpu_dram_bandwidth_max.map(|(_, i)| i),
            "the busiest GPU",
        ),
        gpu_label(
            &data.snapshots,
            |s| s.gpu_tensor_active_max.map(|(_, i)| i),
            "the busiest GPU",
        ),
    ];
    let cpu_load = cpu_chart(&data.snapshots);
    data.snapshots.forget_times();
    let resources: Vec<ResourceOrder> = (0..RESOURCES.len())
        .map(|k| ResourceOrder::new(data.snapshots.column(k).unwrap_or_default()))
        .collect();
    let values = data.snapshots.spill();
    let snapshots = data.snapshots.len();
    let any_small = spans
        .per_step(data.names.len())
        .iter()
        .any(|&n| StepRanks::small_step(n, snapshots));
    let dense = resources
        .iter()
        .map(|order| match any_small && !order.is_empty() {
            true => order.dense_ranks(snapshots).map(Some),
            false => Ok(None),
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let data = &*data;
    let present: Vec<bool> = resources.iter().map(|r| !r.is_empty()).collect();
    let shared = Shared {
        data,
        classes: Classes::new(&presence, &present),
        resources,
        presence,
        values,
        dense,
        labels,
    };
    let spans_analyzed = spans.len();
    let steps = every_step(&shared, &spans)?;
    drop(spans);
    let mut latency = Vec::new();
    let mut context = Vec::new();
    let mut correlations = Vec::new();
    let mut findings = Vec::new();
    let mut pressure = Vec::new();
    // (strong with GPU free memory, spans, series) per step that has a scatter series.
    let mut scatter = Vec::new();
    for step in steps {
        if let Some(series) = step.scatter {
            let strong = step
                .correlations
                .iter()
                .any(|c| c.strong && c.resource == Resource::GpuFreeMemory);
            scatter.push((strong, step.latency.count, series));
        }
        latency.push(step.latency);
        context.push(step.context);
        correlations.extend(step.correlations);
        findings.extend(step.findings);
        pressure.push(step.pressure);
    }
    latency.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms));
    // A chart per step is unreadable beyond a dozen (a history of 600 span names made a
    // 40 MB JSON of them): the steps with a finding, then the busiest.
    scatter.sort_by_key(|&(strong, n, _)| std::cmp::Reverse((strong, n)));
    let scatter: Vec<Scatter> = scatter
        .into_iter()
        .take(MAX_SCATTER)
        .map(|(_, _, series)| series)
        .collect();
    let runs_analyzed = runs.count;
    let charts = Charts {
        gpu_memory: gpu_memory(data),
        cpu_load,
        runs: runs.chart,
        scatter,
    };
    Ok(Report {
        generated_at_ns: probe_core::unix_now_ns(),
        window: Window {
            since_ns: options.since_ns,
            until_ns: (options.until_ns != i64::MAX).then_some(options.until_ns),
            run_id: options.run_id.clone(),
            name: options.name.clone(),
        },
        oom_threshold_bytes: threshold,
        spans_analyzed,
        runs_analyzed,
        snapshots_analyzed: data.snapshots.len(),
        agent_gpus: data.agent_gpus.clone(),
        agent_gpus_from: data.agent_gpus_from,
        latency,
        context,
        correlations,
        findings,
        pressure,
        oom,
        charts,
    })
}

/// What the counting pass learns of a step.
#[derive(Debug, Clone, Default)]
struct StepCounts {
    /// Spans.
    n: usize,
    /// Spans that started under pressure.
    under: usize,
    /// Spans whose start snapshot knows GPU free memory.
    free_known: usize,
}

/// Every step's figures, in the order of `data.names`. Steps are independent, so two
/// threads share them when the machine has two cores (the larger steps first), each with
/// its own per-snapshot cells.
fn every_step(shared: &Shared, spans: &SortedSpans) -> std::io::Result<Vec<StepFigures>> {
    let steps = shared.data.names.len();
    let sizes = spans.per_step(steps);
    let mut by_size: Vec<usize> = (0..steps).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> std::io::Result<Vec<(usize, StepFigures)>> {
        let mut ranks: Option<StepRanks> = None;
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&i) = by_size.get(k) else {
                return Ok(done);
            };
            let ranks = ranks.get_or_insert_with(|| {
                StepRanks::new(shared.data.snapshots.len(), &shared.classes)
            });
            done.push((i, step(shared, spans, i, ranks)?));
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let mut done = if threads < 2 || steps < 2 {
        work()?
    } else {
        std::thread::scope(|scope| {
            let other = scope.spawn(work);
            let mine = work();
            // A panic there is a bug here: pass it on as it is.
            let theirs = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let mut done = mine?;
            done.extend(theirs?);
            Ok::<_, std::io::Error>(done)
        })?
    };
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, step)| step).collect())
}

/// Step `index`'s figures: a counting pass over its spans, then one in duration order.
fn step(
    shared: &Shared,
    spans: &SortedSpans,
    index: usize,
    ranks: &mut StepRanks,
) -> std::io::Result<StepFigures> {
    let data = shared.data;
    let position = |s: &SpanRecord| data.span_snapshots.position(s, &data.snapshot_index);
    let step = u32::try_from(index).unwrap_or(u32::MAX);
    let mut counts = StepCounts::default();
    spans.unordered(step, |s| {
        counts.n += 1;
        if let Some(p) = position(&s) {
            let bits = shared.presence[p as usize];
            counts.under += usize::from(bits & PRESSED != 0);
            counts.free_known += usize::from(bits & FREE_KNOWN != 0);
        }
    })?;
    let mut pass = StepPass::new(index, &counts);
    spans.merged(step, |s| pass.push(shared, ranks, &s, position(&s)))?;
    pass.finish(shared, ranks)
}

/// One step's spans passing in duration order.
struct StepPass {
    /// The step's index.
    index: usize,
    /// Its spans.
    n: usize,
    failures: usize,
    /// p50, p95, p99 of all its spans.
    all: Percentiles<3>,
    /// p50, p95 of those under pressure, then of the others.
    sides: [Percentiles<2>; 2],
    /// (spans, failures) under pressure, then of the others.
    side_counts: [(usize, usize); 2],
    /// Spans whose start snapshot is known.
    with_snapshot: usize,
    /// The scatter takes every this-many-th span with GPU free memory known.
    scatter_every: usize,
    free_seen: usize,
    /// (snapshot position, duration) of the scatter's spans.
    scatter: Vec<(u32, f64)>,
}

impl StepPass {
    fn new(index: usize, counts: &StepCounts) -> Self {
        Self {
            index,
            n: counts.n,
            failures: 0,
            all: Percentiles::new(counts.n, [0.5, 0.95, 0.99]),
            sides: [
                Percentiles::new(counts.under, [0.5, 0.95]),
                Percentiles::new(counts.n - counts.under, [0.5, 0.95]),
            ],
            side_counts: [(0, 0); 2],
            with_snapshot: 0,
            scatter_every: counts.free_known.div_ceil(CHART_POINTS * 2).max(1),
            free_seen: 0,
            scatter: Vec::new(),
        }
    }

    fn push(&mut self, shared: &Shared, ranks: &mut StepRanks, s: &SpanRecord, at: Option<u32>) {
        let duration = s.duration_ms();
        let failed = usize::from(s.failed());
        self.failures += failed;
        self.all.see(duration);
        let bits = at.map_or(0, |p| shared.presence[p as usize]);
        let side = usize::from(bits & PRESSED == 0);
        self.sides[side].see(duration);
        self.side_counts[side].0 += 1;
        self.side_counts[side].1 += failed;
        if let Some(p) = at {
            self.with_snapshot += 1;
            ranks.push(&shared.presence, duration, p);
            if bits & FREE_KNOWN != 0 {
                if self.free_seen.is_multiple_of(self.scatter_every) {
                    self.scatter.push((p, duration));
                }
                self.free_seen += 1;
            }
        }
    }

    /// The step's figures (and `ranks` made ready for the next step).
    fn finish(self, shared: &Shared, ranks: &mut StepRanks) -> std::io::Result<StepFigures> {
        let data = shared.data;
        let name = &data.names[self.index];
        ranks.flush(&shared.presence);
        let [p50, p95, p99] = self.all.get();
        let latency = Latency {
            name: name.clone(),
            count: self.n,
            failures: self.failures,
            failure_rate: if self.n == 0 {
                0.0
            } else {
                self.failures as f64 / self.n as f64
            },
            p50_ms: p50.unwrap_or(0.0),
            p95_ms: p95.unwrap_or(0.0),
            p99_ms: p99.unwrap_or(0.0),
        };
        let (mut correlations, mut findings, mut scatter) = (Vec::new(), Vec::new(), None);
        let mut medians = [None; RESOURCES.len()];
        for (k, resource) in RESOURCES.iter().enumerate() {
            let Some(class) = shared.classes.of(k) else {
                continue;
            };
            let against = match &shared.dense[k] {
                Some(dense) if ranks.is_small() => ranks.against_few(class, dense),
                _ => ranks.against(class, &shared.resources[k])?,
            };
            medians[k] = match against.median_at {
                Some(p) => shared.values.get(k, p)?,
                None => None,
            };
            let Some(rho) = against.rho else {
                continue;
            };
            let n = against.n;
            let strong = rho.abs() >= MIN_RHO && n >= MIN_N;
            if strong {
                let gpu = match resource {
                    Resource::GpuDramBandwidth => &shared.labels[1],
                    Resource::GpuTensorActive => &shared.labels[2],
                    _ => &shared.labels[0],
                };
                findings.push(format!(
                    "{name} is slower when {}: ρ = {rho:.2}, n = {n}",
                    resource.phrase(rho, gpu)
                ));
            }
            correlations.push(Correlation {
                name: name.clone(),
                resource: *resource,
                rho,
                n,
                strong,
            });
            if *resource == Resource::GpuFreeMemory {
                scatter = Some(Scatter {
                    name: name.clone(),
                    points: self
                        .scatter
                        .iter()
                        .filter_map(|&(p, duration)| {
                            let free = shared.values.get(k, p).transpose()?;
                            Some(free.map(|free| (free / MIB, duration)))
                        })
                        .collect::<std::io::Result<_>>()?,
                });
            }
        }
        ranks.reset();
        let context = Context {
            name: name.clone(),
            n: self.with_snapshot,
            gpu_free_min_mib_p50: medians[0].map(|b| b / MIB),
            gpu_utilization_p50: medians[1],
            cpu_load_per_core_p50: medians[2],
            ram_headroom_ratio_p50: medians[3],
            cgroup_headroom_ratio_p50: medians[4],
            gpu_dram_bandwidth_p50: medians[5],
            gpu_tensor_active_p50: medians[6],
        };
        let group = |(n, failures): (usize, usize), [p50_ms, p95_ms]: [Option<f64>; 2]| Group {
            n,
            p50_ms,
            p95_ms,
            failure_rate: (n > 0).then(|| failures as f64 / n as f64),
        };
        let under_pressure = group(self.side_counts[0], self.sides[0].get());
        let no_pressure = group(self.side_counts[1], self.sides[1].get());
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let pressure = Pressure {
            name: name.clone(),
            p50_ratio: ratio(under_pressure.p50_ms, no_pressure.p50_ms),
            p95_ratio: ratio(under_pressure.p95_ms, no_pressure.p95_ms),
            under_pressure,
            no_pressure,
        };
        Ok(StepFigures {
            latency,
            context,
            correlations,
            findings,
            pressure,
            scatter,
        })
    }
}

fn under_pressure(f: &SnapFigures, threshold: u64) -> bool {
    f.gpu_free_min_bytes.is_some_and(|b| b < threshold)
        || f.cpu_load_per_core.is_some_and(|l| l > CPU_PRESSURE)
        || f.ram_available_ratio.is_some_and(|r| r < MEMORY_PRESSURE)
        || f.cgroup_headroom_ratio.is_some_and(|r| r < MEMORY_PRESSURE)
}

/// "GPU 0" when `which` picks one GPU in nearly every sample (the tightest, the busiest),
/// else `otherwise`.
fn gpu_label(
    snapshots: &Snapshots,
    which: impl Fn(&SnapFigures) -> Option<u32>,
    otherwise: &str,
) -> String {
    let mut counts = std::collections::HashMap::new();
    let mut total = 0;
    for s in snapshots.iter() {
        if let Some(i) = which(&s) {
            *counts.entry(i).or_insert(0usize) += 1;
            total += 1;
        }
    }
    match counts.into_iter().max_by_key(|(_, n)| *n) {
        Some((index, n)) if n * 10 >= total * 9 => format!("GPU {index}"),
        _ => otherwise.to_owned(),
    }
}

/// Each GPU's memory chart.
fn gpu_memory(data: &Data) -> Vec<GpuSeries> {
    data.gpus
        .iter()
        .filter_map(|t| {
            Some(GpuSeries {
                gpu_index: t.gpu_index,
                total_mib: t.total_mib?,
                points: t.chart(CHART_POINTS),
            })
        })
        .collect()
}

/// (time, load per core) of every n/600th snapshot that has it.
fn cpu_chart(snapshots: &Snapshots) -> Vec<(i64, f64)> {
    let points = || {
        snapshots
            .iter()
            .filter_map(|s| Some((s.taken_at_ns, s.cpu_load_per_core?)))
    };
    let step = points().count().div_ceil(CHART_POINTS).max(1);
    points().step_by(step).collect()
}

#[cfg(test)]
mod tests {
    use super::super::load::fixture::{self, empty};
    use super::*;

    fn options() -> Options {
        Options {
            since_ns: 0,
            until_ns: i64::MAX,
            all_ids: false,
            run_id: None,
            name: None,
            oom_threshold_bytes: 500 << 20,
            group: None,
        }
    }

    fn no_runs() -> (Oom, RunsSeen) {
        super::super::oom::oom(&empty(), &Vec::new(), 500 << 20, true).unwrap()
    }

    fn gpu_free(mib: u64) -> SnapFigures {
        SnapFigures {
            gpu_free_min_bytes: Some(mib << 20),
            gpu_free_min_index: Some(0),
            ..Default::default()
        }
    }

    /// `n` spans of `name`, each starting on its own snapshot with `free_mib(i)` GPU
    /// memory free and lasting `duration_ms(i)`.
    fn steps(
        data: &mut Data,
        name: &str,
        n: u32,
        free_mib: impl Fn(u32) -> u64,
        duration_ms: impl Fn(u32) -> f64,
    ) {
        for i in 0..n {
            let at = data.snapshots.len() as f64;
            let id = fixture::snapshot(data, at, gpu_free(free_mib(i)));
            fixture::span(data, name, duration_ms(i), false, id);
        }
    }

    /// 30 spans of `name`: the less GPU memory free, the slower.
    fn slower_with_less_free_memory(data: &mut Data, name: &str) {
        steps(
            data,
            name,
            30,
            |i| 1000 + 100 * u64::from(i),
            |i| f64::from(300 - i),
        );
    }

    #[test]
    fn a_step_slower_with_less_gpu_memory_free_is_a_finding_and_an_unrelated_one_is_not() {
        let mut data = empty();
        slower_with_less_free_memory(&mut data, "llm_call");
        // tool_call: durations that ignore memory (alternating).
        steps(
            &mut data,
            "tool_call",
            30,
            |i| 1000 + 100 * u64::from(i),
            |i| {
                if i % 2 == 0 { 10.0 } else { 20.0 }
            },
        );
        // plan: a perfect relation, but too few spans to state it.
        steps(
            &mut data,
            "plan",
            MIN_N as u32 - 1,
            |i| 1000 + u64::from(i),
            |i| f64::from(100 - i),
        );
        let report = compute(&mut data, no_runs(), &options()).unwrap();
        let rho = |name: &str| {
            report
                .correlations
                .iter()
                .find(|c| c.name == name && c.resource == Resource::GpuFreeMemory)
                .map(|c| (c.rho, c.strong))
        };
        assert_eq!(rho("llm_call"), Some((-1.0, true)));
        let (tool_rho, tool_strong) = rho("tool_call").unwrap();
        assert!(tool_rho.abs() < MIN_RHO && !tool_strong, "{tool_rho}");
        assert_eq!(rho("plan"), Some((-1.0, false)));
        assert_eq!(
            report.findings,
            ["llm_call is slower when GPU 0 has less free memory: ρ = -1.00, n = 30"]
        );
    }

    #[test]
    fn at_most_a_dozen_steps_get_a_scatter_chart_those_with_a_finding_first() {
        let mut data = empty();
        for k in 0..15 {
            // Unrelated to memory: alternating durations.
            steps(
                &mut data,
                &format!("tool_{k}"),
                6 + k,
                |i| 1000 + 100 * u64::from(i),
                |i| f64::from(10 + i % 2),
            );
        }
        slower_with_less_free_memory(&mut data, "llm_call");
        let report = compute(&mut data, no_runs(), &options()).unwrap();
        let names: Vec<&str> = report
            .charts
            .scatter
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names.len(), MAX_SCATTER);
        assert_eq!(names[0], "llm_call");
        // Then the busiest: tool_14 (20 spans) down to tool_4.
        assert_eq!(names[1], "tool_14");
        assert!(!names.contains(&"tool_0"));
    }

    #[test]
    fn a_step_slower_when_memory_bandwidth_is_busier_is_a_finding_naming_that_gpu() {
        let mut data = empty();
        for i in 0..30u32 {
            let id = fixture::snapshot(
                &mut data,
                f64::from(i),
                SnapFigures {
                    // GPU 1 uses the most bandwidth; tensor activity does not vary.
                    gpu_dram_bandwidth_max: Some((0.1 + 0.02 * f64::from(i), 1)),
                    gpu_tensor_active_max: Some((0.5, 1)),
                    ..Default::default()
                },
            );
            fixture::span(&mut data, "llm_call", 10.0 + f64::from(i), false, id);
        }
        let report = compute(&mut data, no_runs(), &options()).unwrap();
        assert_eq!(
            report.findings,
            ["llm_call is slower when GPU 1's memory bandwidth is busier: ρ = 1.00, n = 30"]
        );
        let context = &report.context[0];
        assert_eq!(context.gpu_tensor_active_p50, Some(0.5));
        let median = context.gpu_dram_bandwidth_p50.unwrap();
        assert!((median - 0.38).abs() < 1e-9, "{median}");
        assert!(
            !report
                .correlations
                .iter()
                .any(|c| c.resource == Resource::GpuTensorActive),
            "no variance, no correlation"
        );
    }

    #[test]
    fn spans_that_started_under_pressure_are_compared_with_the_others() {
        let mut data = empty();
        // 10 spans with 100 MiB free (under the 500 MiB threshold) taking 50 ms, 10 with
        // plenty free taking 10 ms; two of the squeezed ones failed.
        for i in 0..20 {
            let squeezed = i < 10;
            let id = fixture::snapshot(
                &mut data,
                f64::from(i),
                gpu_free(if squeezed { 100 } else { 9000 }),
            );
            let duration = if squeezed { 50.0 } else { 10.0 };
            fixture::span(&mut data, "llm_call", duration, squeezed && i < 2, id);
        }
        // CPU load per core above CPU_PRESSURE is pressure too.
        let busy = fixture::snapshot(
            &mut data,
            30.0,
            SnapFigures {
                cpu_load_per_core: Some(CPU_PRESSURE + 0.05),
                ..Default::default()
            },
        );
        fixture::span(&mut data, "tool_call", 5.0, false, busy);
        let report = compute(&mut data, no_runs(), &options()).unwrap();
        let llm = report
            .pressure
            .iter()
            .find(|p| p.name == "llm_call")
            .unwrap();
        assert_eq!((llm.under_pressure.n, llm.no_pressure.n), (10, 10));
        assert_eq!(llm.under_pressure.failure_rate, Some(0.2));
        assert_eq!(llm.no_pressure.failure_rate, Some(0.0));
        assert_eq!(llm.p50_ratio, Some(5.0));
        let tool = report
            .pressure
            .iter()
            .find(|p| p.name == "tool_call")
            .unwrap();
        assert_eq!(tool.under_pressure.n, 1);
        let latency = report
            .latency
            .iter()
            .find(|l| l.name == "llm_call")
            .unwrap();
        assert_eq!(
            (latency.count, latency.failures, latency.p95_ms),
            (20, 2, 50.0)
        );
    }
}
