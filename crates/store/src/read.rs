//! Reads for the history rpcs and for recovering state after a restart, through a
//! [`Reader`]: its own read-only connection (WAL: it never blocks the writer), so that no
//! code outside the store touches SQL.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Result;
use crate::domain::Status;

/// A read-only connection to a runlens database, with the reads the sidecar needs.
pub struct Reader {
    pub(super) conn: Connection,
}

/// A [`Reader`] shared between tasks (session opening, the gone-client check); each read
/// holds it only for its own few primary-key lookups. Cheap to clone.
#[derive(Clone)]
pub struct SharedReader(Arc<Mutex<Reader>>);

impl SharedReader {
    /// Shares `reader`.
    pub fn new(reader: Reader) -> Self {
        Self(Arc::new(Mutex::new(reader)))
    }

    /// Runs one read (never across an await).
    pub fn read<T>(&self, f: impl FnOnce(&Reader) -> Result<T>) -> Result<T> {
        f(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A run as stored, for the history rpcs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    /// Client-chosen id.
    pub run_id: String,
    /// Name.
    pub name: String,
    /// Where it is in its life.
    pub status: Status,
    /// Error text.
    pub error: Option<String>,
    /// Start, Unix ns.
    pub started_at_ns: i64,
    /// End, Unix ns.
    pub ended_at_ns: Option<i64>,
    /// Baseline snapshot.
    pub start_snapshot_id: Option<i64>,
    /// End snapshot.
    pub end_snapshot_id: Option<i64>,
    /// Attributes.
    pub attributes: HashMap<String, String>,
}

/// A span as stored, for the history rpcs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    /// Client-chosen id.
    pub span_id: String,
    /// Enclosing span.
    pub parent_span_id: Option<String>,
    /// Name.
    pub name: String,
    /// Where it is in its life.
    pub status: Status,
    /// Error text.
    pub error: Option<String>,
    /// Start, Unix ns.
    pub started_at_ns: i64,
    /// End, Unix ns.
    pub ended_at_ns: Option<i64>,
    /// Snapshot at start.
    pub start_snapshot_id: Option<i64>,
    /// Snapshot at end.
    pub end_snapshot_id: Option<i64>,
    /// Attributes.
    pub attributes: HashMap<String, String>,
}

fn attributes(text: Option<String>) -> HashMap<String, String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

const RUN_COLUMNS: &str = "run_id, name, status, error, started_at_ns, ended_at_ns, \
                           start_snapshot_id, end_snapshot_id, attributes";

fn run_row(r: &Row<'_>) -> rusqlite::Result<StoredRun> {
    Ok(StoredRun {
        run_id: r.get(0)?,
        name: r.get(1)?,
        status: r.get(2)?,
        error: r.get(3)?,
        started_at_ns: r.get(4)?,
        ended_at_ns: r.get(5)?,
        start_snapshot_id: r.get(6)?,
        end_snapshot_id: r.get(7)?,
        attributes: attributes(r.get(8)?),
    })
}

/// A client's clock as the sidecar estimated it (`clients.clock_offset_ns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientClock {
    /// The client.
    pub client_id: String,
    /// Its name.
    pub name: String,
    /// How far its clock runs ahead of the sidecar's, ns (negative: behind).
    pub offset_ns: i64,
    /// Whether that was beyond the matching window.
    pub skewed: bool,
}

impl Reader {
    /// Opens the database at `path` for reading; see [`super::open_read_only`].
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: super::open_read_only(path)?,
        })
    }

    /// Runs, newest first, optionally filtered by status and paged by start time.
    pub fn list_runs(
        &self,
        limit: u32,
        status: Option<Status>,
        started_before_ns: Option<i64>,
    ) -> Result<Vec<StoredRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR started_at_ns < ?2)
             ORDER BY started_at_ns DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params![status, started_before_ns, limit], run_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// One run, if stored.
    pub fn get_run(&self, run_id: &str) -> Result<Option<StoredRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1");
        Ok(self.conn.query_row(&sql, [run_id], run_row).optional()?)
    }

    /// The spans of a run, in start order.
    pub fn spans_of_run(&self, run_id: &str) -> Result<Vec<StoredSpan>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT span_id, parent_span_id, name, status, error, started_at_ns, ended_at_ns,
                    start_snapshot_id, end_snapshot_id, attributes
             FROM spans WHERE run_id = ?1 ORDER BY started_at_ns, span_id",
        )?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(StoredSpan {
                    span_id: r.get(0)?,
                    parent_span_id: r.get(1)?,
                    name: r.get(2)?,
                    status: r.get(3)?,
                    error: r.get(4)?,
                    started_at_ns: r.get(5)?,
                    ended_at_ns: r.get(6)?,
                    start_snapshot_id: r.get(7)?,
                    end_snapshot_id: r.get(8)?,
                    attributes: attributes(r.get(9)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Status of a stored run, if it exists.
    pub fn run_status(&self, run_id: &str) -> Result<Option<Status>> {
        // Asked for every run this process has not seen (each new run): a cached
        // statement, not a parse per call.
        Ok(self
            .conn
            .prepare_cached("SELECT status FROM runs WHERE run_id = ?1")?
            .query_row([run_id], |r| r.get(0))
            .optional()?)
    }

    /// How many runs are stored.
    pub fn run_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Calls `f` with the id of every stored run, in no particular order.
    pub fn each_run_id(&self, mut f: impl FnMut(&str)) -> Result<()> {
        let mut stmt = self.conn.prepare("SELECT run_id FROM runs")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            if let rusqlite::types::ValueRef::Text(id) = row.get_ref(0)? {
                f(std::str::from_utf8(id).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Run id and status of a stored span, if it exists.
    pub fn span_status(&self, span_id: &str) -> Result<Option<(String, Status)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT run_id, status FROM spans WHERE span_id = ?1")?
            .query_row([span_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Ids of a run's spans that are still open.
    pub fn open_spans_of_run(&self, run_id: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT span_id FROM spans WHERE run_id = ?1 AND status = 'running'")?;
        let rows = stmt
            .query_map([run_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Runs a session client opened that are still open.
    pub fn open_runs_of_client(&self, client_id: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id FROM runs WHERE client_id = ?1 AND status = 'running' ORDER BY run_id",
        )?;
        let rows = stmt
            .query_map([client_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Session clients with runs still open: (client id, name, pid). OTLP senders are not
    /// session clients: their runs end with their root span (or its timeout).
    pub fn clients_with_open_runs(&self) -> Result<Vec<(String, String, u32)>> {
        let mut stmt = self.conn.prepare(
            "SELECT client_id, coalesce(client_name, ''), coalesce(pid, 0) FROM clients
             WHERE client_id IN (SELECT client_id FROM runs WHERE status = 'running')
               AND client_id NOT LIKE 'otlp/%'",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// How far each run and span boundary, metric and event lies from the sample it refers
    /// to, ns, for those from `since_ns` on that have one (what `runlens bench agent`
    /// reports as the matching offset).
    pub fn sample_offsets(&self, since_ns: i64) -> Result<Vec<i64>> {
        let mut stmt = self.conn.prepare(
            "SELECT abs(s.taken_at_ns - b.t) FROM (
                 SELECT started_at_ns AS t, start_snapshot_id AS id FROM runs
                 UNION ALL SELECT ended_at_ns, end_snapshot_id FROM runs
                 UNION ALL SELECT started_at_ns, start_snapshot_id FROM spans
                 UNION ALL SELECT ended_at_ns, end_snapshot_id FROM spans
                 UNION ALL SELECT at_ns, snapshot_id FROM events WHERE run_id IS NOT NULL
             ) b JOIN snapshots s ON s.snapshot_id = b.id
             WHERE b.t >= ?1",
        )?;
        let offsets = stmt
            .query_map([since_ns], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        Ok(offsets)
    }

    /// The single integer a statement such as `SELECT count(*) …` returns.
    pub fn single_integer(&self, sql: &str) -> Result<i64> {
        Ok(self.conn.query_row(sql, [], |r| r.get(0))?)
    }

    /// The latest `export.held` or `export.resumed` system event: (held, when, message).
    pub fn export_held(&self) -> Result<Option<(bool, i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name = 'export.held', at_ns,
                        coalesce(json_extract(attributes, '$.message'), '')
                 FROM events WHERE kind = 'system'
                   AND name IN ('export.held', 'export.resumed')
                 ORDER BY at_ns DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// Clients heard from since `since_ns` whose clock was estimated: (client id, name,
    /// offset ns, whether beyond the matching window), the farthest off first.
    pub fn client_clocks(&self, since_ns: i64) -> Result<Vec<ClientClock>> {
        let mut stmt = self.conn.prepare(
            "SELECT client_id, coalesce(client_name, ''), clock_offset_ns, clock_skewed
             FROM clients
             WHERE clock_offset_ns IS NOT NULL AND last_seen_ns >= ?1
             ORDER BY abs(clock_offset_ns) DESC",
        )?;
        let rows = stmt
            .query_map([since_ns], |r| {
                Ok(ClientClock {
                    client_id: r.get(0)?,
                    name: r.get(1)?,
                    offset_ns: r.get(2)?,
                    skewed: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Highest sequence number committed for a session client (0 for a new client).
    pub fn committed_seq(&self, client_id: &str) -> Result<u64> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT committed_seq FROM clients WHERE client_id = ?1",
                [client_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    /// A stored snapshot with its GPU rows, as a probe-core [`probe_core::Snapshot`].
    pub fn snapshot(&self, snapshot_id: i64) -> Result<Option<probe_core::Snapshot>> {
        let conn = &self.conn;
        let Some(head) = snapshot_head(conn, snapshot_id)? else {
            return Ok(None);
        };
        Ok(Some(probe_core::Snapshot {
            taken_at_ns: head.taken_at_ns,
            host: head.host,
            gpu: probe_core::GpuSnapshot {
                available: head.gpu_available,
                unavailable_reason: head.gpu_unavailable_reason,
                devices: snapshot_gpus(conn, snapshot_id)?,
            },
            cgroup: head.cgroup,
            processes: agent_processes(conn, snapshot_id)?,
        }))
    }
}

/// A snapshot's own row: the host, the container and whether GPUs could be read.
struct SnapshotHead {
    taken_at_ns: i64,
    gpu_available: bool,
    gpu_unavailable_reason: Option<String>,
    host: probe_core::HostSnapshot,
    cgroup: Option<probe_core::CgroupSnapshot>,
}

/// The `snapshots` row of `snapshot_id`, if there is one.
fn snapshot_head(conn: &Connection, snapshot_id: i64) -> Result<Option<SnapshotHead>> {
    let head = conn
        .query_row(
            "SELECT taken_at_ns, gpu_available, gpu_unavailable_reason, cpu_count, cpu_load_1m,
                    cpu_load_5m, cpu_load_15m, cpu_utilization_ratio, cpu_core_utilization,
                    ram_total_bytes, ram_used_bytes, ram_available_bytes, swap_total_bytes,
                    swap_used_bytes, cgroup_version, cgroup_memory_limit_bytes,
                    cgroup_memory_used_bytes, cgroup_cpu_quota_cores, cgroup_cpu_throttled_ns
             FROM snapshots WHERE snapshot_id = ?1",
            [snapshot_id],
            |r| {
                let cores: Option<String> = r.get(8)?;
                let cgroup_version: Option<u8> = r.get(14)?;
                let cgroup = match cgroup_version {
                    Some(version) => Some(probe_core::CgroupSnapshot {
                        version,
                        memory_limit_bytes: r.get::<_, Option<i64>>(15)?.map(unsigned),
                        memory_used_bytes: r.get::<_, Option<i64>>(16)?.map(unsigned),
                        cpu_quota_cores: r.get(17)?,
                        cpu_throttled_ns: r.get::<_, Option<i64>>(18)?.map(unsigned),
                    }),
                    None => None,
                };
                Ok(SnapshotHead {
                    cgroup,
                    taken_at_ns: r.get(0)?,
                    gpu_available: r.get(1)?,
                    gpu_unavailable_reason: r.get(2)?,
                    host: probe_core::HostSnapshot {
                        cpu_count: r.get(3)?,
                        cpu_load_1m: r.get(4)?,
                        cpu_load_5m: r.get(5)?,
                        cpu_load_15m: r.get(6)?,
                        cpu_utilization_ratio: r.get(7)?,
                        cpu_core_utilization_ratio: cores
                            .and_then(|c| serde_json::from_str(&c).ok())
                            .unwrap_or_default(),
                        ram_total_bytes: unsigned(r.get(9)?),
                        ram_used_bytes: unsigned(r.get(10)?),
                        ram_available_bytes: unsigned(r.get(11)?),
                        swap_total_bytes: unsigned(r.get(12)?),
                        swap_used_bytes: unsigned(r.get(13)?),
                    },
                })
            },
        )
        .optional()?;
    Ok(head)
}

/// The GPUs of snapshot `snapshot_id`, each with the processes it held.
fn snapshot_gpus(conn: &Connection, snapshot_id: i64) -> Result<Vec<probe_core::GpuDevice>> {
    let mut stmt = conn.prepare_cached(
        "SELECT gpu_index, uuid, name, state, memory_total_bytes, memory_used_bytes,
                memory_free_bytes, utilization_ratio, memory_utilization_ratio,
                temperature_celsius, power_watts, memory_reserved_bytes, power_limit_watts,
                clock_sm_mhz, clock_memory_mhz, performance_state, clock_event_reasons,
                ecc_corrected_errors, ecc_uncorrected_errors, gpm_interval_seconds,
                sm_active_ratio, sm_occupancy_ratio, tensor_active_ratio,
                tensor_hmma_active_ratio, dram_bandwidth_ratio, fp16_active_ratio,
                fp32_active_ratio, pcie_tx_bytes_per_second, pcie_rx_bytes_per_second,
                nvlink_tx_bytes_per_second, nvlink_rx_bytes_per_second
         FROM gpu_samples WHERE snapshot_id = ?1 ORDER BY gpu_index",
    )?;
    let mut devices = stmt
        .query_map([snapshot_id], |r| {
            let state: String = r.get(3)?;
            Ok(probe_core::GpuDevice {
                index: r.get(0)?,
                uuid: r.get(1)?,
                name: r.get(2)?,
                // A state this build does not know reads as an error: not readable.
                state: probe_core::GpuState::parse(&state).unwrap_or(probe_core::GpuState::Error),
                memory_total_bytes: r.get::<_, Option<i64>>(4)?.map(unsigned),
                memory_used_bytes: r.get::<_, Option<i64>>(5)?.map(unsigned),
                memory_free_bytes: r.get::<_, Option<i64>>(6)?.map(unsigned),
                utilization_ratio: r.get(7)?,
                memory_utilization_ratio: r.get(8)?,
                temperature_celsius: r.get(9)?,
                power_watts: r.get(10)?,
                memory_reserved_bytes: r.get::<_, Option<i64>>(11)?.map(unsigned),
                power_limit_watts: r.get(12)?,
                clock_sm_mhz: r.get(13)?,
                clock_memory_mhz: r.get(14)?,
                performance_state: r.get(15)?,
                clock_event_reasons: r.get::<_, Option<i64>>(16)?.map(unsigned),
                ecc_corrected_errors: r.get::<_, Option<i64>>(17)?.map(unsigned),
                ecc_uncorrected_errors: r.get::<_, Option<i64>>(18)?.map(unsigned),
                processes: Vec::new(),
                unsupported: Vec::new(),
                mig_enabled: None,
                mig_devices: Vec::new(),
                perf: match r.get::<_, Option<f64>>(19)? {
                    None => None,
                    Some(interval_seconds) => Some(probe_core::GpuPerf {
                        interval_seconds,
                        sm_active_ratio: r.get(20)?,
                        sm_occupancy_ratio: r.get(21)?,
                        tensor_active_ratio: r.get(22)?,
                        tensor_hmma_active_ratio: r.get(23)?,
                        dram_bandwidth_ratio: r.get(24)?,
                        fp16_active_ratio: r.get(25)?,
                        fp32_active_ratio: r.get(26)?,
                        pcie_tx_bytes_per_second: r.get(27)?,
                        pcie_rx_bytes_per_second: r.get(28)?,
                        nvlink_tx_bytes_per_second: r.get(29)?,
                        nvlink_rx_bytes_per_second: r.get(30)?,
                    }),
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut procs = conn.prepare_cached(
        "SELECT gpu_index, pid, used_memory_bytes, pod_uid, container_id FROM gpu_processes
         WHERE snapshot_id = ?1 ORDER BY gpu_index, pid",
    )?;
    let rows = procs.query_map([snapshot_id], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            probe_core::GpuProcess {
                pid: r.get(1)?,
                used_memory_bytes: r.get::<_, Option<i64>>(2)?.map(unsigned),
                pod_uid: r.get(3)?,
                container_id: r.get(4)?,
            },
        ))
    })?;
    for row in rows {
        let (index, process) = row?;
        if let Some(d) = devices.iter_mut().find(|d| d.index == index) {
            d.processes.push(process);
        }
    }
    Ok(devices)
}

/// The traces exporter's name in `export_cursor`.
pub const TRACES_CURSOR: &str = "otlp";
/// The metrics exporter's name in `export_cursor`.
pub const METRICS_CURSOR: &str = "otlp-metrics";
/// The Parquet export's cursor over the export outbox (runs that ended, with their spans).
pub const PARQUET_RUNS_CURSOR: &str = "parquet-runs";
/// The Parquet export's cursor over snapshot ids (samples and what hangs off them).
pub const PARQUET_SNAPSHOTS_CURSOR: &str = "parquet-snapshots";
/// The Parquet export's cursor over event ids.
pub const PARQUET_EVENTS_CURSOR: &str = "parquet-events";

/// A run to export, with everything that hangs off it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRun {
    /// Its id.
    pub run_id: String,
    /// Its name.
    pub name: String,
    /// `Ok` or `Failed` (or `Running` when it was reopened meanwhile).
    pub status: Status,
    /// Error text.
    pub error: Option<String>,
    /// Attributes, JSON object text.
    pub attributes: Option<String>,
    /// Start and end, Unix ns.
    pub started_at_ns: i64,
    /// End, Unix ns.
    pub ended_at_ns: Option<i64>,
    /// The client's name.
    pub client_name: Option<String>,
    /// The machine at its start and end.
    pub start: Option<ResourceContext>,
    /// The machine at its end.
    pub end: Option<ResourceContext>,
    /// Its spans.
    pub spans: Vec<ExportSpan>,
    /// Its metrics and events.
    pub events: Vec<ExportEvent>,
}

/// A span to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpan {
    /// Its id.
    pub span_id: String,
    /// Its parent.
    pub parent_span_id: Option<String>,
    /// Its name.
    pub name: String,
    /// OpenTelemetry span kind, as stored (`client` ...).
    pub kind: Option<String>,
    /// Its status.
    pub status: Status,
    /// Error text.
    pub error: Option<String>,
    /// Attributes, JSON object text.
    pub attributes: Option<String>,
    /// Start, Unix ns.
    pub started_at_ns: i64,
    /// End, Unix ns.
    pub ended_at_ns: Option<i64>,
    /// The machine at its start.
    pub start: Option<ResourceContext>,
    /// The machine at its end.
    pub end: Option<ResourceContext>,
}

/// A metric or event to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportEvent {
    /// The span it belongs to, if any.
    pub span_id: Option<String>,
    /// `metric` or `event`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// A metric's value.
    pub value: Option<f64>,
    /// A metric's unit.
    pub unit: Option<String>,
    /// Attributes, JSON object text.
    pub attributes: Option<String>,
    /// When, Unix ns.
    pub at_ns: i64,
}

/// What a span or run is annotated with: the machine in one sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceContext {
    /// Free memory of the tightest GPU.
    pub gpu_free_min_bytes: Option<i64>,
    /// Utilization of the busiest GPU.
    pub gpu_utilization_max: Option<f64>,
    /// 1-minute load per CPU.
    pub cpu_load_per_core: Option<f64>,
    /// RAM available.
    pub ram_available_bytes: Option<i64>,
    /// 1 - cgroup used / limit, when there is a limit.
    pub cgroup_headroom_ratio: Option<f64>,
}

impl Reader {
    /// The last outbox entry the receiver acknowledged (0 before the first).
    pub fn export_cursor(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM export_cursor WHERE exporter = 'otlp'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Up to `limit` outbox entries after `after`: (seq, run id).
    pub fn export_outbox(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, run_id FROM export_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The position an exporter acknowledged (`otlp`: outbox entries; `otlp-metrics`:
    /// snapshot ids); 0 before the first.
    pub fn cursor_of(&self, exporter: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM export_cursor WHERE exporter = ?1",
                [exporter],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The newest stored sample's id (0 when there is none).
    pub fn newest_sample_id(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT coalesce(max(snapshot_id), 0) FROM snapshots",
            [],
            |r| r.get(0),
        )?)
    }

    /// Up to `limit` stored samples after snapshot id `after`, oldest first, with their ids.
    pub fn samples_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, probe_core::Snapshot)>> {
        let ids: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT snapshot_id FROM snapshots WHERE snapshot_id > ?1
                 ORDER BY snapshot_id LIMIT ?2",
            )?
            .query_map(params![after, limit], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut samples = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.snapshot(id)? {
                samples.push((id, s));
            }
        }
        Ok(samples)
    }

    /// The export lag after outbox entry `after`: entries waiting, and when the oldest of
    /// their runs ended (Unix ns), if any wait.
    pub fn export_lag(&self, after: i64) -> Result<(i64, Option<i64>)> {
        Ok(self.conn.query_row(
            "SELECT count(*), min(r.ended_at_ns) FROM export_outbox o
             LEFT JOIN runs r ON r.run_id = o.run_id WHERE o.seq > ?1",
            [after],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Runs with their spans, events and the machine at each boundary; runs no longer
    /// stored are left out. Samples shared by many boundaries are read once.
    pub fn export_runs(&self, run_ids: &[String]) -> Result<Vec<ExportRun>> {
        let mut contexts = HashMap::new();
        let mut runs = Vec::with_capacity(run_ids.len());
        for run_id in run_ids {
            runs.extend(self.export_run(run_id, &mut contexts)?);
        }
        Ok(runs)
    }

    /// A run with its spans, events and the machine at each boundary.
    fn export_run(
        &self,
        run_id: &str,
        contexts: &mut HashMap<i64, Option<ResourceContext>>,
    ) -> Result<Option<ExportRun>> {
        let run = self
            .conn
            .query_row(
                "SELECT r.run_id, r.name, r.status, r.error, r.attributes, r.started_at_ns,
                        r.ended_at_ns, c.client_name, r.start_snapshot_id, r.end_snapshot_id
                 FROM runs r LEFT JOIN clients c USING (client_id) WHERE r.run_id = ?1",
                [run_id],
                |r| {
                    Ok((
                        ExportRun {
                            run_id: r.get(0)?,
                            name: r.get(1)?,
                            status: r.get(2)?,
                            error: r.get(3)?,
                            attributes: r.get(4)?,
                            started_at_ns: r.get(5)?,
                            ended_at_ns: r.get(6)?,
                            client_name: r.get(7)?,
                            start: None,
                            end: None,
                            spans: Vec::new(),
                            events: Vec::new(),
                        },
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, Option<i64>>(9)?,
                    ))
                },
            )
            .optional()?;
        let Some((mut run, start, end)) = run else {
            return Ok(None);
        };
        run.start = self.context(start, contexts)?;
        run.end = self.context(end, contexts)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT span_id, parent_span_id, name, kind, status, error, attributes,
                    started_at_ns, ended_at_ns, start_snapshot_id, end_snapshot_id
             FROM spans WHERE run_id = ?1 ORDER BY started_at_ns, span_id",
        )?;
        let spans = stmt
            .query_map([run_id], |r| {
                Ok((
                    ExportSpan {
                        span_id: r.get(0)?,
                        parent_span_id: r.get(1)?,
                        name: r.get(2)?,
                        kind: r.get(3)?,
                        status: r.get(4)?,
                        error: r.get(5)?,
                        attributes: r.get(6)?,
                        started_at_ns: r.get(7)?,
                        ended_at_ns: r.get(8)?,
                        start: None,
                        end: None,
                    },
                    r.get::<_, Option<i64>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (mut span, start, end) in spans {
            span.start = self.context(start, contexts)?;
            span.end = self.context(end, contexts)?;
            run.spans.push(span);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT span_id, kind, name, value, unit, attributes, at_ns FROM events
             WHERE run_id = ?1 AND kind IN ('metric', 'event') ORDER BY at_ns, event_id",
        )?;
        run.events = stmt
            .query_map([run_id], |r| {
                Ok(ExportEvent {
                    span_id: r.get(0)?,
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    value: r.get(3)?,
                    unit: r.get(4)?,
                    attributes: r.get(5)?,
                    at_ns: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(run))
    }

    fn context(
        &self,
        snapshot_id: Option<i64>,
        cache: &mut HashMap<i64, Option<ResourceContext>>,
    ) -> Result<Option<ResourceContext>> {
        let Some(id) = snapshot_id else {
            return Ok(None);
        };
        if let Some(known) = cache.get(&id) {
            return Ok(*known);
        }
        // The snapshot_summary view's figures, for one snapshot, without the view (a view
        // with GROUP BY costs a full parse each time SQLite re-prepares).
        let context = self
            .conn
            .prepare_cached(
                "SELECT (SELECT min(memory_free_bytes) FROM gpu_samples
                         WHERE snapshot_id = ?1 AND state = 'ok'),
                        (SELECT max(utilization_ratio) FROM gpu_samples
                         WHERE snapshot_id = ?1 AND state = 'ok'),
                        cpu_load_1m / nullif(cpu_count, 0), ram_available_bytes,
                        1.0 - cast(cgroup_memory_used_bytes AS REAL)
                              / nullif(cgroup_memory_limit_bytes, 0)
                 FROM snapshots WHERE snapshot_id = ?1",
            )?
            .query_row([id], |r| {
                Ok(ResourceContext {
                    gpu_free_min_bytes: r.get(0)?,
                    gpu_utilization_max: r.get(1)?,
                    cpu_load_per_core: r.get(2)?,
                    ram_available_bytes: r.get(3)?,
                    cgroup_headroom_ratio: r.get(4)?,
                })
            })
            .optional()?;
        cache.insert(id, context);
        Ok(context)
    }
}

/// The next free snapshot id.
pub fn next_snapshot_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT coalesce(max(snapshot_id), 0) + 1 FROM snapshots",
        [],
        |r| r.get(0),
    )?)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn agent_processes(conn: &Connection, snapshot_id: i64) -> Result<Vec<probe_core::ProcessSample>> {
    let mut stmt = conn.prepare_cached(
        "SELECT pid, process_count, rss_bytes, cpu_ratio, gpu_memory_bytes
         FROM process_samples WHERE snapshot_id = ?1 ORDER BY pid",
    )?;
    let mut rows = stmt
        .query_map([snapshot_id], |r| {
            Ok(probe_core::ProcessSample {
                pid: r.get(0)?,
                process_count: r.get(1)?,
                rss_bytes: unsigned(r.get(2)?),
                cpu_ratio: r.get(3)?,
                gpu_memory_bytes: r.get::<_, Option<i64>>(4)?.map(unsigned),
                gpus: Vec::new(),
                tree: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT pid, gpu_index, used_memory_bytes FROM process_gpu_samples
         WHERE snapshot_id = ?1 ORDER BY pid, gpu_index",
    )?;
    let mut per_gpu = stmt.query([snapshot_id])?;
    while let Some(r) = per_gpu.next()? {
        let pid: u32 = r.get(0)?;
        if let Some(p) = rows.iter_mut().find(|p| p.pid == pid) {
            p.gpus.push(probe_core::ProcessGpuMemory {
                gpu_index: r.get(1)?,
                used_memory_bytes: unsigned(r.get(2)?),
            });
        }
    }
    Ok(rows)
}
