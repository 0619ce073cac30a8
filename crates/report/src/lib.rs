//! `runlens report`: which slow or failed steps coincided with GPU memory pressure, CPU
//! saturation or near-OOM (seed Section 6).
//!
//! Everything is computed from a few flat reads in memory bounded by the snapshots, not
//! the spans (ten million spans within 64 MiB): the store's scans
//! ([`runlens_store::scan`]) read the spans on a second connection beside the rest and
//! sort them by step and duration through a temporary file, keep snapshot figures as
//! columns until each resource is ordered, reduce GPU samples as they are read, and pass
//! the runs once. Percentiles and rank correlations are exact, from one pass over
//! each step's spans in duration order (the `ranks` module). The result is a [`Report`],
//! rendered as a table, JSON (its serde form, documented in the README) or a
//! self-contained HTML page with SVG charts.

mod compute;
pub mod html;
mod model;
mod oom;
mod ranks;
pub mod stats;
mod svg;
pub mod table;
#[cfg(test)]
mod tests;
pub mod text;

// The scans live in the store (the crate that owns SQL); under their old names here.
use runlens_store::Connection;
use runlens_store::scan as load;
pub use runlens_store::scan::{GroupBy as ScanGroupBy, GroupFilter};
use runlens_store::scan::{columns, spill};

pub use load::AgentGpusFrom;
pub use model::*;

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

pub use runlens_store::{DEFAULT_OOM_THRESHOLD_MIB, OOM_LOOKBACK_NS};

/// Run ids listed per list of the JSON unless `--all-ids`: a list of a million ids made a
/// 1M-span report 4.4 MB.
pub const MAX_IDS: usize = 100;

/// Bytes in a MiB, for figures shown in MiB.
const MIB: f64 = 1048576.0;

/// What to analyse.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only data from this time on, Unix ns (0 = all).
    pub since_ns: i64,
    /// Only data before this time, Unix ns (`i64::MAX` = up to now).
    pub until_ns: i64,
    /// List every run id (else at most [`MAX_IDS`] per list, with a count).
    pub all_ids: bool,
    /// Only this run.
    pub run_id: Option<String>,
    /// Only spans of this name.
    pub name: Option<String>,
    /// GPU free memory below this is pressure ("OOM soon").
    pub oom_threshold_bytes: u64,
    /// Only one agent's or one pod's part (see [`build_grouped`]).
    pub group: Option<GroupFilter>,
}

/// What `--by` splits the report by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Per agent (client id).
    Client,
    /// Per pod (`runlens merge` source).
    Source,
}

/// The report per agent or per pod.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Grouped {
    /// What it is split by.
    pub by: GroupBy,
    /// One report per group, the busiest (most spans) first.
    pub groups: Vec<GroupReport>,
}

/// One group's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    /// The client id or source id (`null`: none / written here).
    pub key: Option<String>,
    /// For a person: the client's name and id, or the pod's name and file.
    pub label: String,
    /// The report over this group's part only.
    pub report: Report,
}

/// The report split by client or by source: every section per group.
pub fn build_grouped(conn: &Connection, options: &Options, by: GroupBy) -> Result<Grouped, Error> {
    let mut groups = Vec::new();
    let scan_by = match by {
        GroupBy::Client => ScanGroupBy::Client,
        GroupBy::Source => ScanGroupBy::Source,
    };
    let window = (options.since_ns, options.until_ns);
    for (filter, key, label) in load::groups(conn, window, scan_by)? {
        let report = build(
            conn,
            &Options {
                group: Some(filter),
                ..options.clone()
            },
        )?;
        groups.push(GroupReport { key, label, report });
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.report.spans_analyzed));
    Ok(Grouped { by, groups })
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be read.
    #[error("cannot read the database: {0}")]
    Read(#[from] runlens_store::StoreError),
    /// The spans sorted into temporary files could not be read back.
    #[error("cannot read back the report's temporary files (in TMPDIR): {0}")]
    Spill(#[from] std::io::Error),
}

/// Reads the database and computes the report.
pub fn build(conn: &Connection, options: &Options) -> Result<Report, Error> {
    let runs = load::StoredRuns {
        conn,
        window: (options.since_ns, options.until_ns),
        run_id: options.run_id.as_deref(),
        group: options.group.as_ref(),
    };
    let threshold = options.oom_threshold_bytes;
    let (mut data, oom) = load::load(
        conn,
        (options.since_ns, options.until_ns),
        options.run_id.as_deref(),
        options.name.as_deref(),
        options.group.as_ref(),
        threshold,
        // The runs are read while the spans are.
        |data| oom::oom(data, &runs, threshold, !options.all_ids),
    )?;
    compute::compute(&mut data, oom, options)
}

/// The report over data read elsewhere (Parquet files): `data` as [`build`] reads it from
/// a database, and the window's runs by start.
pub fn build_from(
    mut data: runlens_store::scan::Data,
    runs: &dyn runlens_store::scan::Runs,
    options: &Options,
) -> Result<Report, Error> {
    let oom = oom::oom(&data, runs, options.oom_threshold_bytes, !options.all_ids)?;
    compute::compute(&mut data, oom, options)
}

/// The rule for a finding, in words: "|ρ| ≥ 0.3 with n ≥ 20".
pub fn finding_rule() -> String {
    format!("|ρ| ≥ {MIN_RHO} with n ≥ {MIN_N}")
}

/// The rule for pressure, in words: "GPU free < threshold, load/core > 0.9, RAM or
/// cgroup < 10% free".
pub fn pressure_rule() -> String {
    format!(
        "GPU free < threshold, load/core > {CPU_PRESSURE}, RAM or cgroup < {} free",
        percent(MEMORY_PRESSURE)
    )
}

/// A share as a whole percentage: 0.1 → "10%".
pub fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}
