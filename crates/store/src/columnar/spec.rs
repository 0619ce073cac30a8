//! The fleet layout's tables and columns (layout version [`LAYOUT_VERSION`]): what each
//! Parquet file holds, with the SQL that reads it from a database. A contract: engines'
//! queries name these columns, so a column is added, never renamed or retyped, and a change
//! of meaning is a new layout version.

/// The version of the layout these tables describe (also written into each file's
/// key-value metadata as `runlens.layout`).
pub const LAYOUT_VERSION: u32 = 1;

/// A column's type in the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit integer (bytes, counts, snapshot ids).
    Int,
    /// A double (ratios, loads, watts).
    Real,
    /// A UTF-8 string (run and span ids, names, JSON attributes).
    Text,
    /// An instant: Unix nanoseconds in the database, TIMESTAMP(ns, UTC) in the files.
    Time,
    /// A flag: 0/1 in the database, BOOLEAN in the files.
    Bool,
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name in the files (the database column's name where it is one).
    pub name: &'static str,
    /// Its type in the files.
    pub kind: Kind,
    /// The SQL that reads it (over the table's `FROM`).
    pub sql: &'static str,
    /// A column of the table itself, read back by `report --from`; `false` for figures
    /// the export adds for engines (a span's machine at start and end, a sample's time).
    pub stored: bool,
    /// It holds a snapshot id (shifted when several pods' files are read into one database).
    pub snapshot_ref: bool,
}

const fn col(name: &'static str, kind: Kind, sql: &'static str) -> Column {
    Column {
        name,
        kind,
        sql,
        stored: true,
        snapshot_ref: false,
    }
}

const fn snap(name: &'static str, sql: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Int,
        sql,
        stored: true,
        snapshot_ref: true,
    }
}

const fn derived(name: &'static str, kind: Kind, sql: &'static str) -> Column {
    Column {
        name,
        kind,
        sql,
        stored: false,
        snapshot_ref: false,
    }
}

/// A table of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// One row per resource sample.
    Snapshots,
    /// One row per GPU per snapshot.
    GpuSamples,
    /// MIG instances per snapshot.
    MigSamples,
    /// Processes holding GPU memory per snapshot.
    GpuProcesses,
    /// Watched agent processes per snapshot.
    ProcessSamples,
    /// Watched agents' GPU memory per GPU per snapshot.
    ProcessGpuSamples,
    /// Agents (session clients and OTLP senders): one file per pod, rewritten.
    Clients,
    /// Runs (tasks).
    Runs,
    /// Spans (steps), with the machine at their start and end.
    Spans,
    /// Metrics, custom events and the sidecar's own events.
    Events,
}

impl Table {
    /// Every table, parents first (the order `report --from` reads them in).
    pub const ALL: [Table; 10] = [
        Table::Snapshots,
        Table::GpuSamples,
        Table::MigSamples,
        Table::GpuProcesses,
        Table::ProcessSamples,
        Table::ProcessGpuSamples,
        Table::Clients,
        Table::Runs,
        Table::Spans,
        Table::Events,
    ];

    /// Its name: the database table's, and the first folder of its files.
    pub fn name(self) -> &'static str {
        match self {
            Table::Snapshots => "snapshots",
            Table::GpuSamples => "gpu_samples",
            Table::MigSamples => "mig_samples",
            Table::GpuProcesses => "gpu_processes",
            Table::ProcessSamples => "process_samples",
            Table::ProcessGpuSamples => "process_gpu_samples",
            Table::Clients => "clients",
            Table::Runs => "runs",
            Table::Spans => "spans",
            Table::Events => "events",
        }
    }

    /// The table named `name`.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether its files are partitioned by date (all but `clients`, which is state: one
    /// file per pod, replaced by each export).
    pub fn by_date(self) -> bool {
        self != Table::Clients
    }

    /// Its columns, in file order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Snapshots => SNAPSHOTS,
            Table::GpuSamples => GPU_SAMPLES,
            Table::MigSamples => MIG_SAMPLES,
            Table::GpuProcesses => GPU_PROCESSES,
            Table::ProcessSamples => PROCESS_SAMPLES,
            Table::ProcessGpuSamples => PROCESS_GPU_SAMPLES,
            Table::Clients => CLIENTS,
            Table::Runs => RUNS,
            Table::Spans => SPANS,
            Table::Events => EVENTS,
        }
    }

    /// What the rows are read from (`t` the table; `s` its snapshot, for sample tables).
    pub(super) fn rows_sql(self) -> &'static str {
        match self {
            Table::Snapshots => "snapshots t",
            Table::GpuSamples => "gpu_samples t JOIN snapshots s USING (snapshot_id)",
            Table::MigSamples => "mig_samples t JOIN snapshots s USING (snapshot_id)",
            Table::GpuProcesses => "gpu_processes t JOIN snapshots s USING (snapshot_id)",
            Table::ProcessSamples => "process_samples t JOIN snapshots s USING (snapshot_id)",
            Table::ProcessGpuSamples => {
                "process_gpu_samples t JOIN snapshots s USING (snapshot_id)"
            }
            Table::Clients => "clients t",
            Table::Runs => "runs t",
            Table::Spans => {
                "spans t LEFT JOIN snapshots a ON a.snapshot_id = t.start_snapshot_id
                 LEFT JOIN snapshots b ON b.snapshot_id = t.end_snapshot_id"
            }
            Table::Events => "events t",
        }
    }

    /// The instant that places a row in its date partition.
    pub(super) fn time_sql(self) -> &'static str {
        match self {
            Table::Snapshots => "t.taken_at_ns",
            Table::GpuSamples
            | Table::MigSamples
            | Table::GpuProcesses
            | Table::ProcessSamples
            | Table::ProcessGpuSamples => "s.taken_at_ns",
            Table::Clients => "t.last_seen_ns",
            Table::Runs | Table::Spans => "t.started_at_ns",
            Table::Events => "t.at_ns",
        }
    }

    /// The order rows are written in (`None`: as read): samples by snapshot id, so that a
    /// reader takes each pod's snapshots in id order; runs by start, as the report passes
    /// them; events by id.
    pub(super) fn order_sql(self) -> Option<&'static str> {
        match self {
            Table::Clients | Table::Spans => None,
            Table::Runs => Some("t.started_at_ns"),
            Table::Events => Some("t.event_id"),
            _ => Some("t.snapshot_id"),
        }
    }

    /// The row's merged source (`runlens merge`), NULL for rows written by a sidecar.
    pub(super) fn source_sql(self) -> &'static str {
        match self {
            Table::Snapshots | Table::Clients | Table::Runs | Table::Spans | Table::Events => {
                "t.source_id"
            }
            _ => "s.source_id",
        }
    }
}

const SNAPSHOTS: &[Column] = &[
    col("snapshot_id", Kind::Int, "t.snapshot_id"),
    col("taken_at_ns", Kind::Time, "t.taken_at_ns"),
    col("reason", Kind::Text, "t.reason"),
    col("gpu_available", Kind::Bool, "t.gpu_available"),
    col(
        "gpu_unavailable_reason",
        Kind::Text,
        "t.gpu_unavailable_reason",
    ),
    col("gpu_count", Kind::Int, "t.gpu_count"),
    col("cpu_count", Kind::Int, "t.cpu_count"),
    col("cpu_load_1m", Kind::Real, "t.cpu_load_1m"),
    col("cpu_load_5m", Kind::Real, "t.cpu_load_5m"),
    col("cpu_load_15m", Kind::Real, "t.cpu_load_15m"),
    col(
        "cpu_utilization_ratio",
        Kind::Real,
        "t.cpu_utilization_ratio",
    ),
    col("cpu_core_utilization", Kind::Text, "t.cpu_core_utilization"),
    col("ram_total_bytes", Kind::Int, "t.ram_total_bytes"),
    col("ram_used_bytes", Kind::Int, "t.ram_used_bytes"),
    col("ram_available_bytes", Kind::Int, "t.ram_available_bytes"),
    col("swap_total_bytes", Kind::Int, "t.swap_total_bytes"),
    col("swap_used_bytes", Kind::Int, "t.swap_used_bytes"),
    col("cgroup_version", Kind::Int, "t.cgroup_version"),
    col(
        "cgroup_memory_limit_bytes",
        Kind::Int,
        "t.cgroup_memory_limit_bytes",
    ),
    col(
        "cgroup_memory_used_bytes",
        Kind::Int,
        "t.cgroup_memory_used_bytes",
    ),
    col(
        "cgroup_cpu_quota_cores",
        Kind::Real,
        "t.cgroup_cpu_quota_cores",
    ),
    col(
        "cgroup_cpu_throttled_ns",
        Kind::Int,
        "t.cgroup_cpu_throttled_ns",
    ),
];

const GPU_SAMPLES: &[Column] = &[
    snap("snapshot_id", "t.snapshot_id"),
    derived("taken_at_ns", Kind::Time, "s.taken_at_ns"),
    col("gpu_index", Kind::Int, "t.gpu_index"),
    col("uuid", Kind::Text, "t.uuid"),
    col("name", Kind::Text, "t.name"),
    col("state", Kind::Text, "t.state"),
    col("memory_total_bytes", Kind::Int, "t.memory_total_bytes"),
    col("memory_used_bytes", Kind::Int, "t.memory_used_bytes"),
    col("memory_free_bytes", Kind::Int, "t.memory_free_bytes"),
    col("utilization_ratio", Kind::Real, "t.utilization_ratio"),
    col(
        "memory_utilization_ratio",
        Kind::Real,
        "t.memory_utilization_ratio",
    ),
    col("temperature_celsius", Kind::Real, "t.temperature_celsius"),
    col("power_watts", Kind::Real, "t.power_watts"),
    col(
        "memory_reserved_bytes",
        Kind::Int,
        "t.memory_reserved_bytes",
    ),
    col("power_limit_watts", Kind::Real, "t.power_limit_watts"),
    col("clock_sm_mhz", Kind::Int, "t.clock_sm_mhz"),
    col("clock_memory_mhz", Kind::Int, "t.clock_memory_mhz"),
    col("performance_state", Kind::Int, "t.performance_state"),
    col("clock_event_reasons", Kind::Int, "t.clock_event_reasons"),
    col(
        "clock_event_reason_names",
        Kind::Text,
        "t.clock_event_reason_names",
    ),
    col("ecc_corrected_errors", Kind::Int, "t.ecc_corrected_errors"),
    col(
        "ecc_uncorrected_errors",
        Kind::Int,
        "t.ecc_uncorrected_errors",
    ),
    col("mig_enabled", Kind::Bool, "t.mig_enabled"),
    col("sm_active_ratio", Kind::Real, "t.sm_active_ratio"),
    col("sm_occupancy_ratio", Kind::Real, "t.sm_occupancy_ratio"),
    col("tensor_active_ratio", Kind::Real, "t.tensor_active_ratio"),
    col(
        "tensor_hmma_active_ratio",
        Kind::Real,
        "t.tensor_hmma_active_ratio",
    ),
    col("dram_bandwidth_ratio", Kind::Real, "t.dram_bandwidth_ratio"),
    col("fp16_active_ratio", Kind::Real, "t.fp16_active_ratio"),
    col("fp32_active_ratio", Kind::Real, "t.fp32_active_ratio"),
    col(
        "pcie_tx_bytes_per_second",
        Kind::Real,
        "t.pcie_tx_bytes_per_second",
    ),
    col(
        "pcie_rx_bytes_per_second",
        Kind::Real,
        "t.pcie_rx_bytes_per_second",
    ),
    col(
        "nvlink_tx_bytes_per_second",
        Kind::Real,
        "t.nvlink_tx_bytes_per_second",
    ),
    col(
        "nvlink_rx_bytes_per_second",
        Kind::Real,
        "t.nvlink_rx_bytes_per_second",
    ),
    col("gpm_interval_seconds", Kind::Real, "t.gpm_interval_seconds"),
];

const MIG_SAMPLES: &[Column] = &[
    snap("snapshot_id", "t.snapshot_id"),
    derived("taken_at_ns", Kind::Time, "s.taken_at_ns"),
    col("gpu_index", Kind::Int, "t.gpu_index"),
    col("mig_index", Kind::Int, "t.mig_index"),
    col("uuid", Kind::Text, "t.uuid"),
    col("memory_total_bytes", Kind::Int, "t.memory_total_bytes"),
    col("memory_used_bytes", Kind::Int, "t.memory_used_bytes"),
    col("memory_free_bytes", Kind::Int, "t.memory_free_bytes"),
];

const GPU_PROCESSES: &[Column] = &[
    snap("snapshot_id", "t.snapshot_id"),
    derived("taken_at_ns", Kind::Time, "s.taken_at_ns"),
    col("gpu_index", Kind::Int, "t.gpu_index"),
    col("pid", Kind::Int, "t.pid"),
    col("used_memory_bytes", Kind::Int, "t.used_memory_bytes"),
    col("pod_uid", Kind::Text, "t.pod_uid"),
    col("container_id", Kind::Text, "t.container_id"),
];

const PROCESS_SAMPLES: &[Column] = &[
    snap("snapshot_id", "t.snapshot_id"),
    derived("taken_at_ns", Kind::Time, "s.taken_at_ns"),
    col("pid", Kind::Int, "t.pid"),
    col("process_count", Kind::Int, "t.process_count"),
    col("rss_bytes", Kind::Int, "t.rss_bytes"),
    col("cpu_ratio", Kind::Real, "t.cpu_ratio"),
    col("gpu_memory_bytes", Kind::Int, "t.gpu_memory_bytes"),
];

const PROCESS_GPU_SAMPLES: &[Column] = &[
    snap("snapshot_id", "t.snapshot_id"),
    derived("taken_at_ns", Kind::Time, "s.taken_at_ns"),
    col("pid", Kind::Int, "t.pid"),
    col("gpu_index", Kind::Int, "t.gpu_index"),
    col("used_memory_bytes", Kind::Int, "t.used_memory_bytes"),
];

const CLIENTS: &[Column] = &[
    col("client_id", Kind::Text, "t.client_id"),
    col("client_name", Kind::Text, "t.client_name"),
    col("pid", Kind::Int, "t.pid"),
    col("committed_seq", Kind::Int, "t.committed_seq"),
    col("last_seen_ns", Kind::Time, "t.last_seen_ns"),
    col("dropped_messages", Kind::Int, "t.dropped_messages"),
    col("cuda_visible_devices", Kind::Text, "t.cuda_visible_devices"),
    col("resource", Kind::Text, "t.resource"),
    col(
        "nvidia_visible_devices",
        Kind::Text,
        "t.nvidia_visible_devices",
    ),
    col("clock_offset_ns", Kind::Int, "t.clock_offset_ns"),
    col("clock_skewed", Kind::Bool, "t.clock_skewed"),
];

const RUNS: &[Column] = &[
    col("run_id", Kind::Text, "t.run_id"),
    col("name", Kind::Text, "t.name"),
    col("status", Kind::Text, "t.status"),
    col("ended_by", Kind::Text, "t.ended_by"),
    col("error", Kind::Text, "t.error"),
    col("attributes", Kind::Text, "t.attributes"),
    col("client_id", Kind::Text, "t.client_id"),
    col("started_at_ns", Kind::Time, "t.started_at_ns"),
    col("ended_at_ns", Kind::Time, "t.ended_at_ns"),
    derived("duration_ns", Kind::Int, "t.ended_at_ns - t.started_at_ns"),
    snap("start_snapshot_id", "t.start_snapshot_id"),
    snap("end_snapshot_id", "t.end_snapshot_id"),
];

/// A span's machine at start (`a`) or end (`b`), as `span_resources` has it: host figures
/// from the snapshot, GPU figures folded over its GPUs (by the samples' primary key).
macro_rules! gpu_fold {
    ($fold:literal, $column:literal, $side:literal) => {
        concat!(
            "(SELECT ",
            $fold,
            "(",
            $column,
            ") FROM gpu_samples g WHERE g.snapshot_id = t.",
            $side,
            "_snapshot_id)"
        )
    };
}

const SPANS: &[Column] = &[
    col("span_id", Kind::Text, "t.span_id"),
    col("run_id", Kind::Text, "t.run_id"),
    col("parent_span_id", Kind::Text, "t.parent_span_id"),
    col("name", Kind::Text, "t.name"),
    col("kind", Kind::Text, "t.kind"),
    col("status", Kind::Text, "t.status"),
    col("error", Kind::Text, "t.error"),
    col("attributes", Kind::Text, "t.attributes"),
    col("started_at_ns", Kind::Time, "t.started_at_ns"),
    col("ended_at_ns", Kind::Time, "t.ended_at_ns"),
    derived("duration_ns", Kind::Int, "t.ended_at_ns - t.started_at_ns"),
    snap("start_snapshot_id", "t.start_snapshot_id"),
    snap("end_snapshot_id", "t.end_snapshot_id"),
    derived("start_cpu_load_1m", Kind::Real, "a.cpu_load_1m"),
    derived("end_cpu_load_1m", Kind::Real, "b.cpu_load_1m"),
    derived(
        "start_cpu_utilization_ratio",
        Kind::Real,
        "a.cpu_utilization_ratio",
    ),
    derived(
        "end_cpu_utilization_ratio",
        Kind::Real,
        "b.cpu_utilization_ratio",
    ),
    derived("start_ram_used_bytes", Kind::Int, "a.ram_used_bytes"),
    derived("end_ram_used_bytes", Kind::Int, "b.ram_used_bytes"),
    derived(
        "start_ram_available_bytes",
        Kind::Int,
        "a.ram_available_bytes",
    ),
    derived(
        "end_ram_available_bytes",
        Kind::Int,
        "b.ram_available_bytes",
    ),
    derived("start_gpu_available", Kind::Bool, "a.gpu_available"),
    derived("end_gpu_available", Kind::Bool, "b.gpu_available"),
    derived(
        "start_gpu_memory_used_bytes",
        Kind::Int,
        gpu_fold!("sum", "memory_used_bytes", "start"),
    ),
    derived(
        "end_gpu_memory_used_bytes",
        Kind::Int,
        gpu_fold!("sum", "memory_used_bytes", "end"),
    ),
    derived(
        "start_gpu_memory_free_min_bytes",
        Kind::Int,
        gpu_fold!("min", "memory_free_bytes", "start"),
    ),
    derived(
        "end_gpu_memory_free_min_bytes",
        Kind::Int,
        gpu_fold!("min", "memory_free_bytes", "end"),
    ),
    derived(
        "start_gpu_utilization_max_ratio",
        Kind::Real,
        gpu_fold!("max", "utilization_ratio", "start"),
    ),
    derived(
        "end_gpu_utilization_max_ratio",
        Kind::Real,
        gpu_fold!("max", "utilization_ratio", "end"),
    ),
    derived(
        "start_cgroup_memory_limit_bytes",
        Kind::Int,
        "a.cgroup_memory_limit_bytes",
    ),
    derived(
        "start_cgroup_memory_used_bytes",
        Kind::Int,
        "a.cgroup_memory_used_bytes",
    ),
    derived(
        "end_cgroup_memory_used_bytes",
        Kind::Int,
        "b.cgroup_memory_used_bytes",
    ),
];

const EVENTS: &[Column] = &[
    col("event_id", Kind::Int, "t.event_id"),
    col("kind", Kind::Text, "t.kind"),
    col("run_id", Kind::Text, "t.run_id"),
    col("span_id", Kind::Text, "t.span_id"),
    col("name", Kind::Text, "t.name"),
    col("value", Kind::Real, "t.value"),
    col("unit", Kind::Text, "t.unit"),
    col("attributes", Kind::Text, "t.attributes"),
    col("at_ns", Kind::Time, "t.at_ns"),
    snap("snapshot_id", "t.snapshot_id"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_column_is_a_column_of_its_table() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open_for_writing(&dir.path().join("t.db"), false, None).unwrap();
        for table in Table::ALL {
            let mut stmt = conn
                .prepare(&format!("PRAGMA table_info({})", table.name()))
                .unwrap();
            let names: Vec<String> = stmt
                .query_map([], |r| r.get(1))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            for column in table.columns().iter().filter(|c| c.stored) {
                assert!(
                    names.iter().any(|n| n == column.name),
                    "{}.{} is not in the schema",
                    table.name(),
                    column.name
                );
            }
            // And every column of the table is exported (but where a row came from,
            // which the files' source partition says).
            for name in names.iter().filter(|n| *n != "source_id") {
                assert!(
                    table.columns().iter().any(|c| c.stored && c.name == name),
                    "{}.{name} is not exported",
                    table.name()
                );
            }
        }
    }
}
