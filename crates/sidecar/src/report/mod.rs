//! `runlens report`: which slow or failed steps coincided with GPU memory pressure, CPU
//! saturation or near-OOM (seed Section 6).
//!
//! Everything is computed from a few flat reads (see [`load`]); the result is a
//! [`Report`], rendered as a table, JSON (its serde form, documented in the README) or a
//! self-contained HTML page with SVG charts.

pub mod html;
mod load;
pub mod stats;
pub mod table;

use rusqlite::Connection;
use serde::Serialize;

pub use load::AgentGpusFrom;
use load::{Data, RunRow, SnapFigures};
use stats::{sorted_percentile, spearman};

/// A correlation is stated as a finding only from this strength ...
pub const MIN_RHO: f64 = 0.3;
/// ... and this many spans up.
pub const MIN_N: usize = 20;
/// CPU load per core above this is pressure.
pub const CPU_PRESSURE: f64 = 0.9;
/// RAM or cgroup headroom below this share is pressure.
pub const MEMORY_PRESSURE: f64 = 0.1;
/// A GPU below the threshold in more than this share of samples is a hardware limit.
pub const HARDWARE_LIMIT_SHARE: f64 = 0.5;

/// How far before a failed run's end (but not before its start) the report looks for GPU
/// memory pressure. The end
/// snapshot alone can miss it: a run the sidecar ended after its agent died (an OOM kill,
/// a crash) has an end snapshot of the machine after the dead process's memory was freed;
/// the samples just before show what the agent was up against.
pub const OOM_LOOKBACK_NS: i64 = 5_000_000_000;

/// What to analyse.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only data from this time on, Unix ns (0 = all).
    pub since_ns: i64,
    /// Only this run.
    pub run_id: Option<String>,
    /// Only spans of this name.
    pub name: Option<String>,
    /// GPU free memory below this is pressure ("OOM soon").
    pub oom_threshold_bytes: u64,
}

/// The whole report. Field names are stable: scripts and CI read the JSON form.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the report was made.
    pub generated_at_ns: i64,
    /// What was analysed.
    pub window: Window,
    /// GPU free memory below this counts as pressure.
    pub oom_threshold_bytes: u64,
    /// Finished spans analysed.
    pub spans_analyzed: usize,
    /// Runs in the window.
    pub runs_analyzed: usize,
    /// Snapshots in the window.
    pub snapshots_analyzed: usize,
    /// The GPUs the agents used; "the tightest GPU" is the tightest of these. Empty when
    /// unknown: all GPUs count.
    pub agent_gpus: Vec<u32>,
    /// How `agent_gpus` was known: `processes` (a watched agent's process tree held
    /// memory there) or `cuda_visible_devices` (the agents' own setting); null when unknown.
    pub agent_gpus_from: Option<AgentGpusFrom>,
    /// Section 1: latency by step.
    pub latency: Vec<Latency>,
    /// Section 2: what the machine looked like at span start, per step.
    pub context: Vec<Context>,
    /// Section 3: rank correlation of duration with each resource figure, per step.
    pub correlations: Vec<Correlation>,
    /// Strong correlations in plain words.
    pub findings: Vec<String>,
    /// Section 4: durations and failures under pressure and not.
    pub pressure: Vec<Pressure>,
    /// Section 5: OOM risk and hardware limits.
    pub oom: Oom,
    /// Data for charts (downsampled).
    pub charts: Charts,
}

impl Report {
    /// Which GPUs the GPU columns of the context and correlation sections describe, and
    /// how the report knows they are the agents'.
    pub fn gpu_columns_meaning(&self) -> String {
        let list = self
            .agent_gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let gpus = if self.agent_gpus.len() == 1 {
            "GPU"
        } else {
            "GPUs"
        };
        let which = match self.agent_gpus_from {
            Some(AgentGpusFrom::Processes) => {
                format!("{gpus} {list}, where the agents' processes held memory")
            }
            Some(AgentGpusFrom::CudaVisibleDevices) => {
                format!("{gpus} {list}, named by the agents' CUDA_VISIBLE_DEVICES")
            }
            None => "every GPU (the agents' GPUs are not known)".to_owned(),
        };
        format!("GPU columns: tightest (FREE), busiest (UTIL) of {which}")
    }
}

/// The analysed window.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Start, Unix ns (0 = everything).
    pub since_ns: i64,
    /// The run analysed, if one was asked for.
    pub run_id: Option<String>,
    /// The span name analysed, if one was asked for.
    pub name: Option<String>,
}

/// Latency of one step (span name).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Span name.
    pub name: String,
    /// Finished spans.
    pub count: usize,
    /// Of which failed.
    pub failures: usize,
    /// failures / count.
    pub failure_rate: f64,
    /// Median duration.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Medians of the machine's state at span start, for one step.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// Span name.
    pub name: String,
    /// Spans with a start snapshot.
    pub n: usize,
    /// Free memory of the tightest GPU, MiB.
    pub gpu_free_min_mib_p50: Option<f64>,
    /// Utilization of the busiest GPU, 0..1.
    pub gpu_utilization_p50: Option<f64>,
    /// 1-minute load per CPU.
    pub cpu_load_per_core_p50: Option<f64>,
    /// RAM available / total.
    pub ram_headroom_ratio_p50: Option<f64>,
    /// 1 - cgroup memory used / limit.
    pub cgroup_headroom_ratio_p50: Option<f64>,
}

/// The resource figures correlated with duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// Free memory of the tightest GPU.
    GpuFreeMemory,
    /// Utilization of the busiest GPU.
    GpuUtilization,
    /// CPU load per core.
    CpuLoadPerCore,
    /// RAM available / total.
    RamHeadroom,
    /// cgroup memory headroom.
    CgroupHeadroom,
}

const RESOURCES: [Resource; 5] = [
    Resource::GpuFreeMemory,
    Resource::GpuUtilization,
    Resource::CpuLoadPerCore,
    Resource::RamHeadroom,
    Resource::CgroupHeadroom,
];

impl Resource {
    fn value(self, s: &SnapFigures) -> Option<f64> {
        match self {
            Resource::GpuFreeMemory => s.gpu_free_min_bytes.map(|b| b as f64),
            Resource::GpuUtilization => s.gpu_utilization_max,
            Resource::CpuLoadPerCore => s.cpu_load_per_core,
            Resource::RamHeadroom => s.ram_available_ratio,
            Resource::CgroupHeadroom => s.cgroup_headroom_ratio,
        }
    }

    /// What a reader calls this figure.
    pub fn label(self) -> &'static str {
        match self {
            Resource::GpuFreeMemory => "GPU free memory",
            Resource::GpuUtilization => "GPU utilization",
            Resource::CpuLoadPerCore => "CPU load per core",
            Resource::RamHeadroom => "RAM available",
            Resource::CgroupHeadroom => "cgroup memory headroom",
        }
    }

    /// "when `<phrase>`" for a correlation of this sign with duration.
    fn phrase(self, rho: f64, gpu: &str) -> String {
        let more = rho > 0.0;
        match self {
            Resource::GpuFreeMemory => {
                format!(
                    "{gpu} has {} free memory",
                    if more { "more" } else { "less" }
                )
            }
            Resource::GpuUtilization => {
                format!("{gpu} is {}", if more { "busier" } else { "less busy" })
            }
            Resource::CpuLoadPerCore => {
                format!("CPU load is {}", if more { "higher" } else { "lower" })
            }
            Resource::RamHeadroom => {
                format!("{} RAM is available", if more { "more" } else { "less" })
            }
            Resource::CgroupHeadroom => format!(
                "the container is {} its memory limit",
                if more { "further from" } else { "closer to" }
            ),
        }
    }
}

/// Spearman correlation of one step's duration with one resource figure.
#[derive(Debug, Clone, Serialize)]
pub struct Correlation {
    /// Span name.
    pub name: String,
    /// The resource figure at span start.
    pub resource: Resource,
    /// Spearman's rho, -1..1.
    pub rho: f64,
    /// Spans with both figures.
    pub n: usize,
    /// |rho| >= 0.3 and n >= 20: stated as a finding.
    pub strong: bool,
}

/// Durations and failures of a group of spans.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Spans.
    pub n: usize,
    /// Median duration.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// Failed share.
    pub failure_rate: Option<f64>,
}

/// One step under pressure and not.
#[derive(Debug, Clone, Serialize)]
pub struct Pressure {
    /// Span name.
    pub name: String,
    /// Spans that started with GPU free memory below the threshold, CPU load per core
    /// above 0.9, or RAM or cgroup headroom below 10 %.
    pub under_pressure: Group,
    /// The others.
    pub no_pressure: Group,
    /// p50 under pressure / p50 without.
    pub p50_ratio: Option<f64>,
    /// p95 under pressure / p95 without.
    pub p95_ratio: Option<f64>,
}

/// OOM risk.
#[derive(Debug, Clone, Serialize)]
pub struct Oom {
    /// Each GPU and how often it was below the threshold.
    pub gpus: Vec<GpuRisk>,
    /// Failed runs that ended with a GPU below the threshold (at the end, or in the 5 s
    /// before it).
    pub likely_oom_runs: Vec<LikelyOom>,
    /// Runs ended by the sidecar because their agent's process died, while RAM or the
    /// container's memory was nearly full: likely killed by the kernel's OOM killer.
    pub likely_oom_killed_runs: Vec<LikelyOomKilled>,
}

/// A run whose agent process died without ending it, under memory pressure.
#[derive(Debug, Clone, Serialize)]
pub struct LikelyOomKilled {
    /// Run id.
    pub run_id: String,
    /// Run name.
    pub name: String,
    /// Its error text (the sidecar's: which process exited).
    pub error: Option<String>,
    /// When it was ended.
    pub ended_at_ns: Option<i64>,
    /// Least RAM available / total at its end or in the 5 s before (while it ran).
    pub ram_available_min_ratio: Option<f64>,
    /// Least cgroup memory headroom (1 − used / limit) in the same window; null without
    /// a limit.
    pub cgroup_headroom_min_ratio: Option<f64>,
}

/// One GPU's time below the threshold.
#[derive(Debug, Clone, Serialize)]
pub struct GpuRisk {
    /// GPU index.
    pub gpu_index: u32,
    /// UUID.
    pub uuid: Option<String>,
    /// Product name.
    pub name: Option<String>,
    /// Samples in the window.
    pub samples: usize,
    /// Samples below the threshold.
    pub samples_below: usize,
    /// samples_below / samples.
    pub share_below: f64,
    /// Lowest free memory seen, MiB.
    pub min_free_mib: Option<f64>,
    /// First sample below, Unix ns.
    pub first_below_ns: Option<i64>,
    /// Last sample below, Unix ns.
    pub last_below_ns: Option<i64>,
    /// Time spent below (sum of sample intervals), seconds.
    pub seconds_below: f64,
    /// Runs that were running while it was below.
    pub runs_below: Vec<String>,
    /// Below in most samples: the work does not fit this GPU.
    pub hardware_limit: bool,
}

/// A failed run that ended under GPU memory pressure.
#[derive(Debug, Clone, Serialize)]
pub struct LikelyOom {
    /// Run id.
    pub run_id: String,
    /// Run name.
    pub name: String,
    /// Its error text.
    pub error: Option<String>,
    /// When it ended.
    pub ended_at_ns: Option<i64>,
    /// Least free memory of the tightest GPU at its end or in the 5 s before (while it
    /// ran), MiB.
    pub gpu_free_min_mib: f64,
}

// The OOM section's sentences, one wording for the table and the HTML page.

fn ended_at(ns: Option<i64>) -> String {
    ns.map_or_else(|| "-".into(), crate::format::timestamp)
}

impl GpuRisk {
    /// "GPU 0 is below the threshold in 80% of samples: a hardware limit for this work".
    pub fn hardware_limit_sentence(&self) -> String {
        format!(
            "GPU {} is below the threshold in {:.0}% of samples: a hardware limit for this work",
            self.gpu_index,
            self.share_below * 100.0
        )
    }
}

impl LikelyOom {
    /// "run r (name) failed at <time> with 100 MiB GPU memory free: <error>".
    pub fn sentence(&self) -> String {
        format!(
            "run {} ({}) failed at {} with {:.0} MiB GPU memory free: {}",
            self.run_id,
            self.name,
            ended_at(self.ended_at_ns),
            self.gpu_free_min_mib,
            self.error.as_deref().unwrap_or("")
        )
    }
}

impl LikelyOomKilled {
    /// "run r (name) lost its agent process at <time> with cgroup memory headroom 2 %: <error>".
    pub fn sentence(&self) -> String {
        format!(
            "run {} ({}) lost its agent process at {} with {}: {}",
            self.run_id,
            self.name,
            ended_at(self.ended_at_ns),
            self.memory_words(),
            self.error.as_deref().unwrap_or("")
        )
    }

    /// The memory figures that were short, in words: "cgroup headroom 2 %, RAM available 40 %".
    fn memory_words(&self) -> String {
        let pct = |v: f64| format!("{:.0} %", v * 100.0);
        let mut parts = Vec::new();
        if let Some(c) = self.cgroup_headroom_min_ratio {
            parts.push(format!("cgroup memory headroom {}", pct(c)));
        }
        if let Some(r) = self.ram_available_min_ratio {
            parts.push(format!("RAM available {}", pct(r)));
        }
        parts.join(", ")
    }
}

impl Oom {
    /// A line saying how many likely OOM runs (and likely OOM kills) there are, for each
    /// list longer than the `shown` entries a format prints; empty when all are shown.
    pub fn counts_beyond(&self, shown: usize, threshold_bytes: u64) -> Vec<String> {
        let mut lines = Vec::new();
        if self.likely_oom_runs.len() > shown {
            lines.push(format!(
                "{} failed runs ended with less than {} MiB GPU memory free: likely OOM \
                 (the first {shown} below; all in --format json)",
                self.likely_oom_runs.len(),
                threshold_bytes >> 20
            ));
        }
        if self.likely_oom_killed_runs.len() > shown {
            lines.push(format!(
                "{} runs lost their agent process under memory pressure: likely OOM kills \
                 (the first {shown} below; all in --format json)",
                self.likely_oom_killed_runs.len()
            ));
        }
        lines
    }
}

/// Downsampled series for charts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Charts {
    /// GPU memory used over time, per GPU: (Unix ns, used MiB, total MiB).
    pub gpu_memory: Vec<GpuSeries>,
    /// CPU load per core over time: (Unix ns, load per core).
    pub cpu_load: Vec<(i64, f64)>,
    /// Runs as bars: (start ns, end ns, failed, name).
    pub runs: Vec<(i64, i64, bool, String)>,
    /// Per span name, (GPU free MiB at start, duration ms) points.
    pub scatter: Vec<Scatter>,
}

/// One GPU's memory series.
#[derive(Debug, Clone, Serialize)]
pub struct GpuSeries {
    /// GPU index.
    pub gpu_index: u32,
    /// Total memory, MiB.
    pub total_mib: f64,
    /// (Unix ns, used MiB).
    pub points: Vec<(i64, f64)>,
}

/// Duration against GPU free memory for one step.
#[derive(Debug, Clone, Serialize)]
pub struct Scatter {
    /// Span name.
    pub name: String,
    /// (GPU free MiB at start, duration ms).
    pub points: Vec<(f64, f64)>,
}

const MIB: f64 = 1048576.0;
/// At most this many points per chart series.
const CHART_POINTS: usize = 600;

fn every<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    let step = items.len().div_ceil(max.max(1)).max(1);
    items.iter().step_by(step).cloned().collect()
}

fn group(durations: &mut [f64], failures: usize) -> Group {
    durations.sort_unstable_by(f64::total_cmp);
    let n = durations.len();
    Group {
        n,
        p50_ms: sorted_percentile(durations, 0.5),
        p95_ms: sorted_percentile(durations, 0.95),
        failure_rate: (n > 0).then(|| failures as f64 / n as f64),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    stats::percentile(&mut v, 0.5)
}

/// Reads the database and computes the report.
pub fn build(conn: &Connection, options: &Options) -> rusqlite::Result<Report> {
    let data = load::load(
        conn,
        options.since_ns,
        options.run_id.as_deref(),
        options.name.as_deref(),
    )?;
    Ok(compute(&data, options))
}

fn compute(data: &Data, options: &Options) -> Report {
    let threshold = options.oom_threshold_bytes;
    let mut by_name: Vec<Vec<usize>> = vec![Vec::new(); data.names.len()];
    for (i, s) in data.spans.iter().enumerate() {
        by_name[s.name as usize].push(i);
    }
    let gpu_label = gpu_label(&data.snapshots);
    let mut latency = Vec::new();
    let mut context = Vec::new();
    let mut correlations = Vec::new();
    let mut findings = Vec::new();
    let mut pressure = Vec::new();
    let mut scatter = Vec::new();
    for (name_idx, members) in by_name.iter().enumerate() {
        let name = &data.names[name_idx];
        let spans: Vec<&load::SpanRow> = members.iter().map(|&i| &data.spans[i]).collect();
        let failures = spans.iter().filter(|s| s.failed).count();
        let mut durations: Vec<f64> = spans.iter().map(|s| s.duration_ms).collect();
        let all = group(&mut durations, failures);
        latency.push(Latency {
            name: name.clone(),
            count: spans.len(),
            failures,
            failure_rate: all.failure_rate.unwrap_or(0.0),
            p50_ms: all.p50_ms.unwrap_or(0.0),
            p95_ms: all.p95_ms.unwrap_or(0.0),
            p99_ms: sorted_percentile(&durations, 0.99).unwrap_or(0.0),
        });
        let snap = |s: &load::SpanRow| s.snapshot.map(|i| &data.snapshots[i as usize]);
        let figures = |r: Resource| -> Vec<(f64, f64)> {
            spans
                .iter()
                .filter_map(|s| Some((r.value(snap(s)?)?, s.duration_ms)))
                .filter(|(v, _)| v.is_finite())
                .collect()
        };
        let mut medians = [None; 5];
        for (k, resource) in RESOURCES.iter().enumerate() {
            let pairs = figures(*resource);
            medians[k] = median(pairs.iter().map(|p| p.0).collect());
            if pairs.len() < 3 {
                continue;
            }
            let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
            let Some(rho) = spearman(&x, &y) else {
                continue;
            };
            let strong = rho.abs() >= MIN_RHO && pairs.len() >= MIN_N;
            if strong {
                findings.push(format!(
                    "{name} is slower when {}: ρ = {:.2}, n = {}",
                    resource.phrase(rho, &gpu_label),
                    rho,
                    pairs.len()
                ));
            }
            correlations.push(Correlation {
                name: name.clone(),
                resource: *resource,
                rho,
                n: pairs.len(),
                strong,
            });
            if *resource == Resource::GpuFreeMemory {
                scatter.push(Scatter {
                    name: name.clone(),
                    points: every(&pairs, CHART_POINTS * 2)
                        .into_iter()
                        .map(|(free, d)| (free / MIB, d))
                        .collect(),
                });
            }
        }
        context.push(Context {
            name: name.clone(),
            n: spans.iter().filter(|s| s.snapshot.is_some()).count(),
            gpu_free_min_mib_p50: medians[0].map(|b| b / MIB),
            gpu_utilization_p50: medians[1],
            cpu_load_per_core_p50: medians[2],
            ram_headroom_ratio_p50: medians[3],
            cgroup_headroom_ratio_p50: medians[4],
        });
        let (mut under, mut normal) = (Vec::new(), Vec::new());
        let (mut under_failed, mut normal_failed) = (0, 0);
        for s in &spans {
            if snap(s).is_some_and(|f| under_pressure(f, threshold)) {
                under.push(s.duration_ms);
                under_failed += usize::from(s.failed);
            } else {
                normal.push(s.duration_ms);
                normal_failed += usize::from(s.failed);
            }
        }
        let under = group(&mut under, under_failed);
        let normal = group(&mut normal, normal_failed);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        pressure.push(Pressure {
            name: name.clone(),
            p50_ratio: ratio(under.p50_ms, normal.p50_ms),
            p95_ratio: ratio(under.p95_ms, normal.p95_ms),
            under_pressure: under,
            no_pressure: normal,
        });
    }
    latency.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms));
    let oom = oom(data, threshold);
    let charts = charts(data, scatter);
    Report {
        generated_at_ns: probe_core::unix_now_ns(),
        window: Window {
            since_ns: options.since_ns,
            run_id: options.run_id.clone(),
            name: options.name.clone(),
        },
        oom_threshold_bytes: threshold,
        spans_analyzed: data.spans.len(),
        runs_analyzed: data.runs.len(),
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
    }
}

fn under_pressure(f: &SnapFigures, threshold: u64) -> bool {
    f.gpu_free_min_bytes.is_some_and(|b| b < threshold)
        || f.cpu_load_per_core.is_some_and(|l| l > CPU_PRESSURE)
        || f.ram_available_ratio.is_some_and(|r| r < MEMORY_PRESSURE)
        || f.cgroup_headroom_ratio.is_some_and(|r| r < MEMORY_PRESSURE)
}

/// "GPU 0" when one GPU is the tightest in nearly every sample, else "the tightest GPU".
fn gpu_label(snapshots: &[SnapFigures]) -> String {
    let mut counts = std::collections::HashMap::new();
    let mut total = 0;
    for s in snapshots {
        if let Some(i) = s.gpu_free_min_index {
            *counts.entry(i).or_insert(0usize) += 1;
            total += 1;
        }
    }
    match counts.into_iter().max_by_key(|(_, n)| *n) {
        Some((index, n)) if n * 10 >= total * 9 => format!("GPU {index}"),
        _ => "the tightest GPU".to_owned(),
    }
}

fn oom(data: &Data, threshold: u64) -> Oom {
    let mut gpus = Vec::new();
    let mut start = 0;
    while start < data.gpus.len() {
        let index = data.gpus[start].gpu_index;
        let end = data.gpus[start..]
            .iter()
            .position(|p| p.gpu_index != index)
            .map_or(data.gpus.len(), |n| start + n);
        let points = &data.gpus[start..end];
        let below: Vec<usize> = (0..points.len())
            .filter(|&i| points[i].free_bytes.is_some_and(|f| f < threshold))
            .collect();
        let seconds_below = below
            .iter()
            .filter_map(|&i| {
                points
                    .get(i + 1)
                    .map(|n| (n.taken_at_ns - points[i].taken_at_ns) as f64 / 1e9)
            })
            .map(|gap| gap.min(60.0))
            .sum();
        let below_times: Vec<i64> = below.iter().map(|&i| points[i].taken_at_ns).collect();
        let runs_below = data
            .runs
            .iter()
            .filter(|r| {
                let end = r.ended_at_ns.unwrap_or(i64::MAX);
                let from = below_times.partition_point(|&t| t < r.started_at_ns);
                below_times.get(from).is_some_and(|&t| t <= end)
            })
            .map(|r| r.run_id.clone())
            .collect();
        let share_below = below.len() as f64 / points.len().max(1) as f64;
        gpus.push(GpuRisk {
            gpu_index: index,
            uuid: points.last().and_then(|p| p.uuid.clone()),
            name: points.last().and_then(|p| p.name.clone()),
            samples: points.len(),
            samples_below: below.len(),
            share_below,
            min_free_mib: points
                .iter()
                .filter_map(|p| p.free_bytes)
                .min()
                .map(|b| b as f64 / MIB),
            first_below_ns: below_times.first().copied(),
            last_below_ns: below_times.last().copied(),
            seconds_below,
            runs_below,
            hardware_limit: share_below > HARDWARE_LIMIT_SHARE,
        });
        start = end;
    }
    // Every snapshot by time, to find those just before a run's end.
    let mut by_time: Vec<(i64, usize)> = data
        .snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.taken_at_ns, i))
        .collect();
    by_time.sort_unstable();
    let failed = data.runs.iter().filter(|r| r.status == "failed");
    let likely_oom_runs = failed
        .clone()
        .filter_map(|r| {
            let free = end_window(data, &by_time, r)
                .filter_map(|s| s.gpu_free_min_bytes)
                .min()?;
            (free < threshold).then(|| LikelyOom {
                run_id: r.run_id.clone(),
                name: r.name.clone(),
                error: r.error.clone(),
                ended_at_ns: r.ended_at_ns,
                gpu_free_min_mib: free as f64 / MIB,
            })
        })
        .collect();
    let least = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let likely_oom_killed_runs = failed
        .filter(|r| {
            r.error
                .as_deref()
                .is_some_and(|e| e.starts_with(crate::service::EXITED_REASON_PREFIX))
        })
        .filter_map(|r| {
            let (ram, cgroup) = end_window(data, &by_time, r).fold((None, None), |(ram, cg), s| {
                (
                    least(ram, s.ram_available_ratio),
                    least(cg, s.cgroup_headroom_ratio),
                )
            });
            let pressed = |v: Option<f64>| v.is_some_and(|v| v < MEMORY_PRESSURE);
            (pressed(ram) || pressed(cgroup)).then(|| LikelyOomKilled {
                run_id: r.run_id.clone(),
                name: r.name.clone(),
                error: r.error.clone(),
                ended_at_ns: r.ended_at_ns,
                ram_available_min_ratio: ram,
                cgroup_headroom_min_ratio: cgroup,
            })
        })
        .collect();
    Oom {
        gpus,
        likely_oom_runs,
        likely_oom_killed_runs,
    }
}

/// The snapshots a failed run's end is judged by: its end snapshot, and those taken in the
/// [`OOM_LOOKBACK_NS`] before its end while it ran.
fn end_window<'a>(
    data: &'a Data,
    by_time: &'a [(i64, usize)],
    r: &RunRow,
) -> impl Iterator<Item = &'a SnapFigures> + 'a {
    let at_end = r
        .end_snapshot_id
        .and_then(|id| data.snapshot_index.get(&id))
        .map(|&i| &data.snapshots[i as usize]);
    let window = r.ended_at_ns.map_or(&by_time[..0], |ended| {
        // Only while the run ran: pressure before it started is not its story.
        let since = (ended - OOM_LOOKBACK_NS).max(r.started_at_ns);
        let from = by_time.partition_point(|&(t, _)| t < since);
        let to = by_time.partition_point(|&(t, _)| t <= ended);
        &by_time[from..to]
    });
    at_end
        .into_iter()
        .chain(window.iter().map(|&(_, i)| &data.snapshots[i]))
}

fn charts(data: &Data, scatter: Vec<Scatter>) -> Charts {
    let mut gpu_memory: Vec<GpuSeries> = Vec::new();
    for p in &data.gpus {
        let (Some(used), Some(total)) = (p.used_bytes, p.total_bytes) else {
            continue;
        };
        match gpu_memory.last_mut() {
            Some(s) if s.gpu_index == p.gpu_index => {
                s.points.push((p.taken_at_ns, used as f64 / MIB));
            }
            _ => gpu_memory.push(GpuSeries {
                gpu_index: p.gpu_index,
                total_mib: total as f64 / MIB,
                points: vec![(p.taken_at_ns, used as f64 / MIB)],
            }),
        }
    }
    for s in &mut gpu_memory {
        s.points = every(&s.points, CHART_POINTS);
    }
    let cpu: Vec<(i64, f64)> = data
        .snapshots
        .iter()
        .filter_map(|s| Some((s.taken_at_ns, s.cpu_load_per_core?)))
        .collect();
    let runs: Vec<(i64, i64, bool, String)> = data
        .runs
        .iter()
        .map(|r| {
            (
                r.started_at_ns,
                r.ended_at_ns.unwrap_or(r.started_at_ns),
                r.status == "failed",
                r.name.clone(),
            )
        })
        .collect();
    Charts {
        gpu_memory,
        cpu_load: every(&cpu, CHART_POINTS),
        runs: every(&runs, 400),
        scatter,
    }
}
