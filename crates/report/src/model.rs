//! What the report says: the sections, their rows, and the sentences the table and the
//! HTML page share. Field names are stable: scripts read the JSON form.

use serde::Serialize;

use super::AgentGpusFrom;
use super::load::SnapFigures;

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
            Some(AgentGpusFrom::NvidiaVisibleDevices) => {
                format!("{gpus} {list}, named by the agents' NVIDIA_VISIBLE_DEVICES")
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
    /// End (exclusive), Unix ns; absent = up to the report's time.
    pub until_ns: Option<i64>,
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
    /// Memory bandwidth used of the GPU that used the most, 0..1 (GPU performance
    /// monitoring, Hopper and newer; absent elsewhere).
    pub gpu_dram_bandwidth_p50: Option<f64>,
    /// Tensor-core activity of the GPU with the most, 0..1 (likewise).
    pub gpu_tensor_active_p50: Option<f64>,
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
    /// Memory bandwidth used by the GPU that used the most (GPU performance monitoring).
    GpuDramBandwidth,
    /// Tensor-core activity of the GPU with the most (GPU performance monitoring).
    GpuTensorActive,
}

pub(super) const RESOURCES: [Resource; 7] = [
    Resource::GpuFreeMemory,
    Resource::GpuUtilization,
    Resource::CpuLoadPerCore,
    Resource::RamHeadroom,
    Resource::CgroupHeadroom,
    Resource::GpuDramBandwidth,
    Resource::GpuTensorActive,
];

impl Resource {
    pub(super) fn value(self, s: &SnapFigures) -> Option<f64> {
        match self {
            Resource::GpuFreeMemory => s.gpu_free_min_bytes.map(|b| b as f64),
            Resource::GpuUtilization => s.gpu_utilization_max,
            Resource::CpuLoadPerCore => s.cpu_load_per_core,
            Resource::RamHeadroom => s.ram_available_ratio,
            Resource::CgroupHeadroom => s.cgroup_headroom_ratio,
            Resource::GpuDramBandwidth => s.gpu_dram_bandwidth_max.map(|(v, _)| v),
            Resource::GpuTensorActive => s.gpu_tensor_active_max.map(|(v, _)| v),
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
            Resource::GpuDramBandwidth => "GPU memory bandwidth",
            Resource::GpuTensorActive => "GPU tensor activity",
        }
    }

    /// "when `<phrase>`" for a correlation of this sign with duration; `gpu` names the
    /// GPU the figure is mostly of ("GPU 0", or "the busiest GPU").
    pub(super) fn phrase(self, rho: f64, gpu: &str) -> String {
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
            Resource::GpuDramBandwidth => format!(
                "{gpu}'s memory bandwidth is {}",
                if more { "busier" } else { "less busy" }
            ),
            Resource::GpuTensorActive => format!(
                "{gpu}'s tensor cores are {}",
                if more { "busier" } else { "less busy" }
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
    /// |rho| >= [`super::MIN_RHO`] and n >= [`super::MIN_N`]: stated as a finding.
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
    /// above [`super::CPU_PRESSURE`], or RAM or cgroup headroom below
    /// [`super::MEMORY_PRESSURE`].
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
    /// before it): the first [`super::MAX_IDS`] unless every one was asked for.
    pub likely_oom_runs: Vec<LikelyOom>,
    /// How many such runs there are.
    pub likely_oom_runs_count: usize,
    /// Runs ended by the sidecar because their agent's process died, while RAM or the
    /// container's memory was nearly full: likely killed by the kernel's OOM killer (the
    /// first [`super::MAX_IDS`] unless every one was asked for).
    pub likely_oom_killed_runs: Vec<LikelyOomKilled>,
    /// How many such runs there are.
    pub likely_oom_killed_runs_count: usize,
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
    /// Runs that were running while it was below (the first [`super::MAX_IDS`] unless
    /// every id was asked for: `runs_below_count` has the number).
    pub runs_below: Vec<String>,
    /// How many runs were running while it was below.
    pub runs_below_count: usize,
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
    ns.map_or_else(|| "-".into(), crate::text::timestamp)
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
    /// `"run r (name) failed at <time> with 100 MiB GPU memory free: <error>"`.
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
    /// `"run r (name) lost its agent process at <time> with cgroup memory headroom 2 %: <error>"`.
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
        if self.likely_oom_runs_count > shown {
            lines.push(format!(
                "{} failed runs ended with less than {} MiB GPU memory free: likely OOM \
                 (the first {shown} below; all in --format json --all-ids)",
                self.likely_oom_runs_count,
                threshold_bytes >> 20
            ));
        }
        if self.likely_oom_killed_runs_count > shown {
            lines.push(format!(
                "{} runs lost their agent process under memory pressure: likely OOM kills \
                 (the first {shown} below; all in --format json --all-ids)",
                self.likely_oom_killed_runs_count
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
    /// Runs as bars: (start ns, end ns, failed, name, run id).
    pub runs: Vec<(i64, i64, bool, String, String)>,
    /// Per span name, (GPU free MiB at start, duration ms) points: at most 12 span names,
    /// those with a finding on GPU free memory first, then those with the most spans.
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
