//! The report's scans: what `runlens report` needs from the database, read in a few flat
//! queries into memory bounded by the snapshots, not the spans. The spans are read on a
//! second connection beside the rest and sorted by step and duration through a temporary
//! file ([`spill`]); snapshot figures are kept as columns ([`columns`]); GPU samples are
//! reduced as they are read ([`gpu_tracks`]); the runs pass once ([`Runs`]).

pub mod columns;
pub mod gpu_tracks;
pub mod spill;

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use crate::Result;
use crate::domain::{EndedBy, Status};
use crate::unsigned;
use columns::Snapshots;
use gpu_tracks::{GpuSample, GpuTrack, GpuTracks};
use spill::{NO_SNAPSHOT, SortedSpans, SpanRecord, SpanSorter};

/// One MiB, as the GPU figures count it.
pub const MIB: f64 = 1048576.0;

/// Which part of the history a report covers when it is split by group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupFilter {
    /// One client's runs and spans (`None`: runs with no client); all samples.
    Client(Option<String>),
    /// One merged source's runs, spans and samples (`None`: rows written here).
    Source(Option<i64>),
}

/// What a report is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The agent (session client or OTLP sender) that sent the runs.
    Client,
    /// The pod whose database was merged in (`runlens merge`).
    Source,
}

/// The figures of one snapshot that the report uses.
#[derive(Debug, Clone, Default)]
pub struct SnapFigures {
    /// When it was taken.
    pub taken_at_ns: i64,
    /// 1-minute load divided by the number of CPUs.
    pub cpu_load_per_core: Option<f64>,
    /// RAM available / total.
    pub ram_available_ratio: Option<f64>,
    /// 1 - cgroup used / limit, when there is a limit.
    pub cgroup_headroom_ratio: Option<f64>,
    /// Free memory of the GPU with the least free memory.
    pub gpu_free_min_bytes: Option<u64>,
    /// Which GPU that was.
    pub gpu_free_min_index: Option<u32>,
    /// Utilization of the busiest GPU.
    pub gpu_utilization_max: Option<f64>,
    /// Memory bandwidth used (0..1) of the GPU that used the most, and which GPU.
    pub gpu_dram_bandwidth_max: Option<(f64, u32)>,
    /// Tensor-core activity (0..1) of the GPU with the most, and which GPU.
    pub gpu_tensor_active_max: Option<(f64, u32)>,
}

impl SnapFigures {
    /// A snapshot's host and cgroup figures from its stored columns (GPU figures are
    /// folded in later by [`GpuFold`]).
    pub fn host(
        taken_at_ns: i64,
        load_1m: Option<f64>,
        cpus: i64,
        (ram_total, ram_available): (i64, i64),
        (cgroup_limit, cgroup_used): (Option<i64>, Option<i64>),
    ) -> SnapFigures {
        SnapFigures {
            taken_at_ns,
            cpu_load_per_core: load_1m.filter(|_| cpus > 0).map(|l| l / cpus as f64),
            ram_available_ratio: (ram_total > 0).then(|| ram_available as f64 / ram_total as f64),
            cgroup_headroom_ratio: match (cgroup_limit, cgroup_used) {
                (Some(l), Some(u)) if l > 0 => Some(1.0 - u as f64 / l as f64),
                _ => None,
            },
            ..SnapFigures::default()
        }
    }
}

/// Page cache of the report's connections (negative: KiB). The report scans tables once:
/// a larger cache only held pages already read (2 MiB a connection by default).
const SCAN_CACHE_KIB: i64 = -512;

/// How a span's snapshot reference (in [`SpanRecord`]) names its start snapshot.
#[derive(Debug, Clone, Copy)]
pub enum SnapshotRefs {
    /// The snapshot id's offset from this id (spans read beside the snapshots, before
    /// their positions were known).
    OffsetFrom(i64),
    /// Its position in the snapshot list.
    Positions,
}

impl SnapshotRefs {
    /// The position of the snapshot `span` started at, if it is in the window.
    pub fn position(self, span: &SpanRecord, index: &SnapshotIndex) -> Option<u32> {
        let reference = span.snapshot();
        if reference == NO_SNAPSHOT {
            return None;
        }
        match self {
            SnapshotRefs::OffsetFrom(base) => index.get(base.checked_add(i64::from(reference))?),
            SnapshotRefs::Positions => Some(reference),
        }
    }
}

/// Snapshot id → position in the snapshot list, for ids added in ascending order. Ids
/// are usually consecutive (one writer numbers them): the position is then the id's
/// offset from the first, and no list is kept; otherwise a binary search in the list of
/// ids. A hash map of a million ids cost about 40 MB and a hash per span.
#[derive(Debug, Default)]
pub struct SnapshotIndex {
    /// The first id and how many were added.
    first: Option<i64>,
    len: usize,
    /// Every id, once they are not consecutive (empty while they are).
    ids: Vec<i64>,
}

impl SnapshotIndex {
    /// Adds the next snapshot id (greater than every id before it); returns its position.
    pub fn push(&mut self, id: i64) -> u32 {
        let first = *self.first.get_or_insert(id);
        let consecutive = self.ids.is_empty() && first.checked_add(self.len as i64) == Some(id);
        if !consecutive && self.ids.is_empty() && self.len > 0 {
            // The first gap: from now on, every id is kept.
            self.ids = (0..self.len as i64).map(|k| first + k).collect();
        }
        if !self.ids.is_empty() || !consecutive {
            debug_assert!(self.ids.last().is_none_or(|&last| last < id));
            self.ids.push(id);
        }
        self.len += 1;
        u32::try_from(self.len - 1).unwrap_or(u32::MAX)
    }

    /// The position of snapshot `id`, if it was added.
    pub fn get(&self, id: i64) -> Option<u32> {
        let position = if self.ids.is_empty() {
            let offset = usize::try_from(id.checked_sub(self.first?)?).ok()?;
            (offset < self.len).then_some(offset)?
        } else {
            self.ids.binary_search(&id).ok()?
        };
        u32::try_from(position).ok()
    }

    /// The smallest id added.
    pub fn first(&self) -> Option<i64> {
        self.first
    }
}

/// A run in the window (a million of them at fleet scale: the id is one allocation, the
/// name shared by every run of that name).
#[derive(Debug, Clone)]
pub struct RunFigures {
    /// Id.
    pub run_id: Box<str>,
    /// Name.
    pub name: Arc<str>,
    /// Where it is in its life.
    pub status: Status,
    /// Who ended it (`None` while running).
    pub ended_by: Option<EndedBy>,
    /// Error text.
    pub error: Option<Box<str>>,
    /// Start.
    pub started_at_ns: i64,
    /// End (or now for a running run).
    pub ended_at_ns: Option<i64>,
    /// End snapshot.
    pub end_snapshot_id: Option<i64>,
}

/// A GPU's UUID and product name, from its latest sample in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuNames {
    /// GPU index.
    pub gpu_index: u32,
    /// UUID.
    pub uuid: Option<String>,
    /// Product name.
    pub name: Option<String>,
}

/// What the report reads.
pub struct Data {
    /// Snapshot figures, by position.
    pub snapshots: Snapshots,
    /// Snapshot id → position.
    pub snapshot_index: SnapshotIndex,
    /// Distinct span names.
    pub names: Vec<String>,
    /// Finished spans, sorted by step (index into `names`) and duration.
    pub spans: SortedSpans,
    /// How the spans name their start snapshots.
    pub span_snapshots: SnapshotRefs,
    /// Each GPU's samples, reduced (by GPU index).
    pub gpus: Vec<GpuTrack>,
    /// Each GPU's names, by index.
    pub gpu_names: Vec<GpuNames>,
    /// The GPUs the agents use (empty: unknown, all GPUs count).
    pub agent_gpus: Vec<u32>,
    /// How `agent_gpus` was known.
    pub agent_gpus_from: Option<AgentGpusFrom>,
}

/// Where the report learned which GPUs the agents use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentGpusFrom {
    /// A watched agent's process tree (the agent or a process it started) held memory on
    /// them (NVML's per-process list).
    Processes,
    /// The agents' `NVIDIA_VISIBLE_DEVICES` (in Kubernetes, their pods' GPU UUIDs), sent
    /// in their session hello: used when no agent process shows in NVML's list.
    NvidiaVisibleDevices,
    /// The agents' `CUDA_VISIBLE_DEVICES`, sent in their session hello: used when no
    /// agent process shows in NVML's list (its PIDs are the host's, not the container's)
    /// and no `NVIDIA_VISIBLE_DEVICES` names GPUs.
    CudaVisibleDevices,
}

/// The SQL of a [`GroupFilter`]: extra conditions bound to one more parameter, the last
/// of each statement. Without a group (or where the group does not narrow) the condition
/// is always true and names no column, so databases from before `source_id` (schema 7)
/// still report; it still names the parameter, which rusqlite counts.
struct Filter<'a>(Option<&'a GroupFilter>);

impl<'a> Filter<'a> {
    fn new(group: Option<&'a GroupFilter>) -> Self {
        Self(group)
    }

    /// The parameter's value: the client id or the source id.
    fn value(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match self.0 {
            Some(GroupFilter::Client(Some(id))) => Value::Text(id.clone()),
            Some(GroupFilter::Source(Some(id))) => Value::Integer(*id),
            _ => Value::Null,
        }
    }

    /// The condition on samples (only a source narrows them: agents share a machine).
    fn samples(&self, column: &str) -> String {
        match self.0 {
            Some(GroupFilter::Source(_)) => format!("AND {column} IS ?3"),
            _ => "AND (?3 IS NULL OR ?3 IS NOT NULL)".to_owned(),
        }
    }

    /// The condition on runs.
    fn runs(&self) -> &'static str {
        match self.0 {
            Some(GroupFilter::Client(_)) => "AND client_id IS ?4",
            Some(GroupFilter::Source(_)) => "AND source_id IS ?4",
            None => "AND (?4 IS NULL OR ?4 IS NOT NULL)",
        }
    }

    /// The condition on spans (a client's spans are its runs' spans).
    fn spans(&self) -> &'static str {
        match self.0 {
            Some(GroupFilter::Client(_)) => {
                "AND run_id IN (SELECT run_id FROM runs WHERE client_id IS ?5)"
            }
            Some(GroupFilter::Source(_)) => "AND source_id IS ?5",
            None => "AND (?5 IS NULL OR ?5 IS NOT NULL)",
        }
    }
}

/// The groups of `by` that have runs in the window: (filter, key, label).
pub fn groups(
    conn: &Connection,
    (since_ns, until_ns): (i64, i64),
    by: GroupBy,
) -> Result<Vec<(GroupFilter, Option<String>, String)>> {
    let window = rusqlite::params![since_ns, until_ns];
    Ok(match by {
        GroupBy::Client => {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT r.client_id, c.client_name FROM runs r
                 LEFT JOIN clients c USING (client_id)
                 WHERE r.started_at_ns >= ?1 AND r.started_at_ns < ?2",
            )?;
            stmt.query_map(window, |r| {
                let id: Option<String> = r.get(0)?;
                let name: Option<String> = r.get(1)?;
                let label = match (&id, name) {
                    (Some(id), Some(name)) if !name.is_empty() => format!("agent {name} ({id})"),
                    (Some(id), _) => format!("agent {id}"),
                    (None, _) => "runs without a client".to_owned(),
                };
                Ok((GroupFilter::Client(id.clone()), id, label))
            })?
            .collect::<rusqlite::Result<_>>()?
        }
        GroupBy::Source => {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT r.source_id, m.path, m.resource FROM runs r
                 LEFT JOIN merge_sources m USING (source_id)
                 WHERE r.started_at_ns >= ?1 AND r.started_at_ns < ?2",
            )?;
            stmt.query_map(window, |r| {
                let id: Option<i64> = r.get(0)?;
                let path: Option<String> = r.get(1)?;
                let resource: Option<String> = r.get(2)?;
                let pod = resource
                    .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
                    .and_then(|v| v.get("k8s.pod.name")?.as_str().map(str::to_owned));
                let label = match (id, pod, path) {
                    (None, ..) => "rows written here (not merged)".to_owned(),
                    (Some(_), Some(pod), Some(path)) => format!("pod {pod} ({path})"),
                    (Some(_), None, Some(path)) => format!("source {path}"),
                    (Some(id), ..) => format!("source {id}"),
                };
                Ok((GroupFilter::Source(id), id.map(|i| i.to_string()), label))
            })?
            .collect::<rusqlite::Result<_>>()?
        }
    })
}

/// Reads everything from `since_ns` on (optionally one run, one span name), and runs
/// `beside` on what is read but the spans (the OOM section's pass over the runs).
///
/// The spans, most of the reading, are read on a second connection in a thread of their
/// own while this one reads snapshots and GPU samples, then runs `beside`. Without a file
/// to open again (an in-memory database) everything is done here, one after the other.
pub fn load<T>(
    conn: &Connection,
    (since_ns, until_ns): (i64, i64),
    run_id: Option<&str>,
    name: Option<&str>,
    group: Option<&GroupFilter>,
    threshold: u64,
    beside: impl FnOnce(&Data) -> Result<T>,
) -> Result<(Data, T)> {
    conn.pragma_update(None, "cache_size", SCAN_CACHE_KIB)?;
    let filter = Filter::new(group);
    let span_query = (since_ns, until_ns, run_id, name);
    let path = conn.path().filter(|p| !p.is_empty());
    // Span snapshot ids are kept as offsets from the smallest id, known before the
    // snapshots are read, and turned into positions once they are.
    let base: i64 = conn.query_row(
        "SELECT coalesce(min(snapshot_id), 0) FROM snapshots",
        [],
        |r| r.get(0),
    )?;
    let (read, rest) = std::thread::scope(|scope| {
        let spans_thread = path.map(|path| {
            let filter = Filter::new(group);
            scope.spawn(move || {
                let conn = Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                conn.pragma_update(None, "cache_size", SCAN_CACHE_KIB)?;
                span_figures(&conn, span_query, &filter, Positions::OffsetFrom(base))
            })
        });
        // Meanwhile, everything else (none of it needs the spans).
        let the_rest = || -> Result<_> {
            let (mut snapshots, snapshot_index) =
                snapshot_figures(conn, since_ns, until_ns, &filter)?;
            let first_id = snapshot_index.first().unwrap_or(i64::MAX);
            let (agent_gpus, agent_gpus_from) = agent_gpus(conn, first_id, since_ns)?;
            let read = (first_id, &agent_gpus[..], &snapshot_index, threshold);
            let (gpus, gpu_names) = gpu_figures(conn, read, &mut snapshots)?;
            let data = Data {
                gpus,
                gpu_names,
                snapshots,
                snapshot_index,
                names: Vec::new(),
                spans: SortedSpans::default(),
                span_snapshots: SnapshotRefs::Positions,
                agent_gpus,
                agent_gpus_from,
            };
            let beside = beside(&data)?;
            Ok((data, beside))
        };
        let the_rest = the_rest();
        let read = match spans_thread {
            // A panic there is a bug here: pass it on as it is.
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(None),
        };
        the_rest.map(|rest| (read, rest))
    })?;
    let (mut data, beside) = rest;
    let ((names, spans), span_snapshots) = match read? {
        Some(read) => (read, SnapshotRefs::OffsetFrom(base)),
        // No second connection, or an offset too far to keep: read them here.
        None => (
            span_figures(
                conn,
                span_query,
                &filter,
                Positions::Index(&data.snapshot_index),
            )?
            .unwrap_or_default(),
            SnapshotRefs::Positions,
        ),
    };
    data.names = names;
    data.spans = spans;
    data.span_snapshots = span_snapshots;
    Ok((data, beside))
}

/// The distinct step names and the finished spans, each of a step by its index.
type StepSpans = (Vec<String>, SortedSpans);

/// How [`span_figures`] keeps a span's start snapshot.
#[derive(Clone, Copy)]
enum Positions<'a> {
    /// As its position, from the snapshots already read ([`SnapshotRefs::Positions`]).
    Index(&'a SnapshotIndex),
    /// As its id's offset from this id ([`SnapshotRefs::OffsetFrom`]).
    OffsetFrom(i64),
}

/// Host and cgroup figures of every snapshot from `since_ns` on, and id → position.
fn snapshot_figures(
    conn: &Connection,
    since_ns: i64,
    until_ns: i64,
    filter: &Filter,
) -> rusqlite::Result<(Snapshots, SnapshotIndex)> {
    let expected: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM snapshots WHERE taken_at_ns >= ?1 AND taken_at_ns < ?2 {}",
            filter.samples("source_id")
        ),
        rusqlite::params![since_ns, until_ns, filter.value()],
        |r| r.get(0),
    )?;
    let mut snapshots = Snapshots::with_capacity(usize::try_from(expected).unwrap_or(0));
    let mut snapshot_index = SnapshotIndex::default();
    let mut stmt = conn.prepare(&format!(
        "SELECT snapshot_id, taken_at_ns, cpu_load_1m, cpu_count, ram_total_bytes,
                ram_available_bytes, cgroup_memory_limit_bytes, cgroup_memory_used_bytes
         FROM snapshots WHERE taken_at_ns >= ?1 AND taken_at_ns < ?2 {}
         ORDER BY snapshot_id",
        filter.samples("source_id")
    ))?;
    let mut rows = stmt.query(rusqlite::params![since_ns, until_ns, filter.value()])?;
    while let Some(r) = rows.next()? {
        snapshot_index.push(r.get(0)?);
        snapshots.push(&SnapFigures::host(
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            (r.get(4)?, r.get(5)?),
            (r.get(6)?, r.get(7)?),
        ));
    }
    drop(rows);
    Ok((snapshots, snapshot_index))
}

/// The GPUs the agents use, and how that is known.
fn agent_gpus(
    conn: &Connection,
    first_id: i64,
    since_ns: i64,
) -> rusqlite::Result<(Vec<u32>, Option<AgentGpusFrom>)> {
    // The GPUs the agents use: those where a watched agent process held memory. When
    // known, "the tightest GPU" means the tightest of these, not of the whole machine.
    // Databases of schema 2 on have the agents' trees matched per GPU (children count);
    // older ones only NVML's list, where the agent's own PID is all that can be matched.
    let per_gpu = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'process_gpu_samples'",
        [],
        |r| r.get::<_, i64>(0),
    )? > 0;
    let agent_gpus_sql = if per_gpu {
        "SELECT gpu_index FROM process_gpu_samples
         WHERE snapshot_id >= ?1 AND used_memory_bytes > 0
         UNION
         SELECT gpu_index FROM gpu_processes
         WHERE snapshot_id >= ?1
           AND pid IN (SELECT DISTINCT pid FROM process_samples WHERE snapshot_id >= ?1)
         ORDER BY gpu_index"
    } else {
        "SELECT DISTINCT gpu_index FROM gpu_processes
         WHERE snapshot_id >= ?1
           AND pid IN (SELECT DISTINCT pid FROM process_samples WHERE snapshot_id >= ?1)
         ORDER BY gpu_index"
    };
    let mut agent_gpus: Vec<u32> = conn
        .prepare(agent_gpus_sql)?
        .query_map([first_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut agent_gpus_from = (!agent_gpus.is_empty()).then_some(AgentGpusFrom::Processes);
    for (column, from) in [
        (
            "nvidia_visible_devices",
            AgentGpusFrom::NvidiaVisibleDevices,
        ),
        ("cuda_visible_devices", AgentGpusFrom::CudaVisibleDevices),
    ] {
        if agent_gpus.is_empty() {
            agent_gpus = gpus_named_by_clients(conn, column, since_ns)?;
            agent_gpus_from = (!agent_gpus.is_empty()).then_some(from);
        }
    }
    Ok((agent_gpus, agent_gpus_from))
}

/// Each snapshot's tightest and busiest GPU (among the agents' GPUs when known), and
/// every readable sample of every GPU reduced per GPU in time order ([`GpuTracks`], below
/// `threshold` bytes free counting as short) with each GPU's names from its latest
/// sample: one pass over `gpu_samples` for both.
fn gpu_figures(
    conn: &Connection,
    (first_id, agent_gpus, snapshot_index, threshold): (i64, &[u32], &SnapshotIndex, u64),
    snapshots: &mut Snapshots,
) -> rusqlite::Result<(Vec<GpuTrack>, Vec<GpuNames>)> {
    // Rows come by snapshot id (the table's key, so the order costs no sort).
    let mut fold = GpuFold::new(snapshots, agent_gpus, threshold);
    let mut stmt = conn.prepare(
        "SELECT snapshot_id, gpu_index, memory_free_bytes, utilization_ratio,
                dram_bandwidth_ratio, tensor_active_ratio, memory_used_bytes,
                memory_total_bytes, uuid, name
         FROM gpu_samples WHERE snapshot_id >= ?1 AND state = 'ok'
         ORDER BY snapshot_id",
    )?;
    let mut rows = stmt.query([first_id])?;
    while let Some(r) = rows.next()? {
        let Some(i) = snapshot_index.get(r.get::<_, i64>(0)?) else {
            continue;
        };
        let row = GpuRow {
            gpu_index: r.get(1)?,
            free_bytes: unsigned(r.get(2)?),
            utilization: r.get(3)?,
            dram_bandwidth: r.get(4)?,
            tensor_active: r.get(5)?,
            used_bytes: unsigned(r.get(6)?),
            total_bytes: unsigned(r.get(7)?),
            uuid: r.get_ref(8)?.as_str_or_null()?,
            name: r.get_ref(9)?.as_str_or_null()?,
        };
        fold.add(snapshots, i as usize, &row);
    }
    drop(rows);
    Ok(fold.finish())
}

/// One readable GPU sample (`state = 'ok'`), as the report reads it.
#[derive(Debug, Clone, Copy)]
pub struct GpuRow<'a> {
    /// GPU index.
    pub gpu_index: u32,
    /// Free memory.
    pub free_bytes: Option<u64>,
    /// Utilization (0..1).
    pub utilization: Option<f64>,
    /// Memory bandwidth used (0..1).
    pub dram_bandwidth: Option<f64>,
    /// Tensor-core activity (0..1).
    pub tensor_active: Option<f64>,
    /// Used memory.
    pub used_bytes: Option<u64>,
    /// Total memory.
    pub total_bytes: Option<u64>,
    /// UUID.
    pub uuid: Option<&'a str>,
    /// Product name.
    pub name: Option<&'a str>,
}

/// Folds GPU samples, given by snapshot, into each snapshot's tightest and busiest GPU
/// (among the agents' GPUs when known), every GPU's track ([`GpuTracks`], below
/// `threshold` bytes free counting as short) and each GPU's names from its latest sample.
pub struct GpuFold<'a> {
    agent_gpus: &'a [u32],
    in_time_order: bool,
    tracks: GpuTracks,
    unordered: Vec<GpuSample>,
    /// Per GPU: its names and when the sample they came from was taken.
    names: Vec<(GpuNames, i64)>,
}

impl<'a> GpuFold<'a> {
    /// Starts a fold over `snapshots` (all of them read already).
    pub fn new(snapshots: &Snapshots, agent_gpus: &'a [u32], threshold: u64) -> Self {
        Self {
            agent_gpus,
            // Samples come in time order when the snapshots' positions are; else they
            // are gathered and sorted at the end.
            in_time_order: snapshots.in_time_order(),
            tracks: GpuTracks::new(threshold),
            unordered: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Adds one sample of the snapshot at `position`.
    pub fn add(&mut self, snapshots: &mut Snapshots, position: usize, row: &GpuRow<'_>) {
        let mut figures = snapshots.get(position);
        let s = &mut figures;
        let index = row.gpu_index;
        let sample = GpuSample {
            gpu_index: index,
            taken_at_ns: s.taken_at_ns,
            free_bytes: row.free_bytes,
            used_bytes: row.used_bytes,
            total_bytes: row.total_bytes,
        };
        if self.in_time_order {
            self.tracks.add(sample);
        } else {
            self.unordered.push(sample);
        }
        let at = s.taken_at_ns;
        let known = match self.names.iter().position(|(n, _)| n.gpu_index == index) {
            Some(k) => k,
            None => {
                let blank = GpuNames {
                    gpu_index: index,
                    ..GpuNames::default()
                };
                self.names.push((blank, i64::MIN));
                self.names.len() - 1
            }
        };
        let (kept, kept_at) = &mut self.names[known];
        if at >= *kept_at {
            *kept_at = at;
            // Copied only when they change: a string per row would cost an allocation each.
            for (value, kept) in [(row.uuid, &mut kept.uuid), (row.name, &mut kept.name)] {
                if value != kept.as_deref() {
                    *kept = value.map(str::to_owned);
                }
            }
        }
        if !self.agent_gpus.is_empty() && self.agent_gpus.binary_search(&index).is_err() {
            return;
        }
        if let Some(free) = row.free_bytes
            && s.gpu_free_min_bytes.is_none_or(|m| free < m)
        {
            s.gpu_free_min_bytes = Some(free);
            s.gpu_free_min_index = Some(index);
        }
        if let Some(util) = row.utilization {
            s.gpu_utilization_max = Some(s.gpu_utilization_max.map_or(util, |m| m.max(util)));
        }
        let busiest = |current: Option<(f64, u32)>, value: Option<f64>| match (current, value) {
            (Some((m, _)), Some(v)) if v <= m => current,
            (_, Some(v)) => Some((v, index)),
            (current, None) => current,
        };
        s.gpu_dram_bandwidth_max = busiest(s.gpu_dram_bandwidth_max, row.dram_bandwidth);
        s.gpu_tensor_active_max = busiest(s.gpu_tensor_active_max, row.tensor_active);
        snapshots.set(position, &figures);
    }

    /// The tracks and names.
    pub fn finish(mut self) -> (Vec<GpuTrack>, Vec<GpuNames>) {
        // Stable: samples of one time keep the order read.
        self.unordered.sort_by_key(|p| (p.gpu_index, p.taken_at_ns));
        for sample in self.unordered {
            self.tracks.add(sample);
        }
        let mut names: Vec<GpuNames> = self.names.into_iter().map(|(n, _)| n).collect();
        names.sort_by_key(|n| n.gpu_index);
        (self.tracks.finish(), names)
    }
}

/// Finished spans in the window (from `since_ns`, of `run_id` and `name` when given),
/// with the distinct span names they index.
fn span_figures(
    conn: &Connection,
    (since_ns, until_ns, run_id, name): (i64, i64, Option<&str>, Option<&str>),
    filter: &Filter,
    positions: Positions,
) -> rusqlite::Result<Option<StepSpans>> {
    let mut steps = StepCollector::default();
    let mut stmt = conn.prepare(&format!(
        "SELECT name, status, started_at_ns, ended_at_ns, start_snapshot_id FROM spans
         WHERE ended_at_ns IS NOT NULL AND started_at_ns >= ?1 AND started_at_ns < ?4
           AND (?2 IS NULL OR run_id = ?2) AND (?3 IS NULL OR name = ?3) {}",
        filter.spans()
    ))?;
    let mut rows = stmt.query(rusqlite::params![
        since_ns,
        run_id,
        name,
        until_ns,
        filter.value()
    ])?;
    while let Some(r) = rows.next()? {
        let started: i64 = r.get(2)?;
        let ended: i64 = r.get(3)?;
        let snapshot = match (r.get::<_, Option<i64>>(4)?, positions) {
            (None, _) => NO_SNAPSHOT,
            (Some(id), Positions::Index(index)) => index.get(id).unwrap_or(NO_SNAPSHOT),
            // Below the smallest id: no such snapshot (a dangling reference).
            (Some(id), Positions::OffsetFrom(base)) if id < base => NO_SNAPSHOT,
            (Some(id), Positions::OffsetFrom(base)) => {
                match id.checked_sub(base).and_then(|o| u32::try_from(o).ok()) {
                    Some(offset) if offset < NO_SNAPSHOT => offset,
                    // Two billion ids past the smallest: let the caller read with
                    // positions instead.
                    _ => return Ok(None),
                }
            }
        };
        steps.push(
            r.get_ref(0)?.as_str()?,
            (ended - started) as f64 / 1e6,
            r.get::<_, Status>(1)? == Status::Failed,
            snapshot,
        );
    }
    drop(rows);
    Ok(Some(steps.finish()))
}

/// Gathers finished spans by step: the distinct step names, and each span by its step's
/// index, sorted by step and duration ([`SpanSorter`]).
#[derive(Default)]
pub struct StepCollector {
    names: Vec<String>,
    name_index: HashMap<String, usize>,
    spans: SpanSorter,
}

impl StepCollector {
    /// Adds a finished span of step `name` that started at snapshot position `snapshot`
    /// ([`NO_SNAPSHOT`]: none known).
    pub fn push(&mut self, name: &str, duration_ms: f64, failed: bool, snapshot: u32) {
        // A handful of step names is usual: comparing them beats hashing each row's name.
        let known = if self.names.len() <= 8 {
            self.names.iter().position(|n| n == name)
        } else {
            self.name_index.get(name).copied()
        };
        let step = match known {
            Some(i) => i,
            None => {
                self.names.push(name.to_owned());
                self.name_index
                    .insert(name.to_owned(), self.names.len() - 1);
                self.names.len() - 1
            }
        };
        self.spans.push(SpanRecord::new(
            u32::try_from(step).unwrap_or(u32::MAX),
            duration_ms,
            failed,
            snapshot,
        ));
    }

    /// The step names and the sorted spans.
    pub fn finish(self) -> (Vec<String>, SortedSpans) {
        (self.names, self.spans.finish())
    }
}

/// The runs of the window, passed one at a time by start time: the report never holds
/// them all (a million at fleet scale).
pub trait Runs {
    /// How many.
    fn count(&self) -> Result<usize>;
    /// Each, by start time.
    fn each(&self, each: &mut dyn FnMut(&RunFigures)) -> Result<()>;
}

/// Runs already in memory (tests).
impl Runs for Vec<RunFigures> {
    fn count(&self) -> Result<usize> {
        Ok(self.len())
    }

    fn each(&self, each: &mut dyn FnMut(&RunFigures)) -> Result<()> {
        self.iter().for_each(each);
        Ok(())
    }
}

/// The runs started in the window (only `run_id` when given), read from the database.
pub struct StoredRuns<'a> {
    /// Where.
    pub conn: &'a Connection,
    /// [since, until) in Unix ns.
    pub window: (i64, i64),
    /// Only this run.
    pub run_id: Option<&'a str>,
    /// Only one agent's or pod's.
    pub group: Option<&'a GroupFilter>,
}

impl StoredRuns<'_> {
    fn query(&self, columns: &str, order: &str) -> String {
        format!(
            "SELECT {columns} FROM runs WHERE started_at_ns >= ?1 AND started_at_ns < ?3
               AND (?2 IS NULL OR run_id = ?2) {} {order}",
            Filter::new(self.group).runs()
        )
    }

    fn params(&self) -> [rusqlite::types::Value; 4] {
        use rusqlite::types::Value;
        [
            Value::Integer(self.window.0),
            self.run_id
                .map_or(Value::Null, |id| Value::Text(id.to_owned())),
            Value::Integer(self.window.1),
            Filter::new(self.group).value(),
        ]
    }
}

impl Runs for StoredRuns<'_> {
    fn count(&self) -> Result<usize> {
        Ok(self.count_rows()?)
    }

    fn each(&self, each: &mut dyn FnMut(&RunFigures)) -> Result<()> {
        Ok(self.each_row(each)?)
    }
}

impl StoredRuns<'_> {
    fn count_rows(&self) -> rusqlite::Result<usize> {
        let sql = self.query("count(*)", "");
        self.conn
            .query_row(&sql, rusqlite::params_from_iter(self.params()), |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| usize::try_from(n).unwrap_or(0))
    }

    fn each_row(&self, each: &mut dyn FnMut(&RunFigures)) -> rusqlite::Result<()> {
        let sql = self.query(
            "run_id, name, status, error, started_at_ns, ended_at_ns, end_snapshot_id, ended_by",
            "ORDER BY started_at_ns",
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(self.params()))?;
        // Run names are few: one shared copy of each.
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        while let Some(r) = rows.next()? {
            let name = r.get_ref(1)?.as_str()?;
            let name = match names.get(name) {
                Some(shared) => Arc::clone(shared),
                None => {
                    let shared: Arc<str> = Arc::from(name);
                    names.insert(name.to_owned(), Arc::clone(&shared));
                    shared
                }
            };
            each(&RunFigures {
                run_id: r.get_ref(0)?.as_str()?.into(),
                name,
                status: r.get(2)?,
                error: r.get_ref(3)?.as_str_or_null()?.map(Box::from),
                started_at_ns: r.get(4)?,
                ended_at_ns: r.get(5)?,
                end_snapshot_id: r.get(6)?,
                ended_by: r.get(7)?,
            });
        }
        Ok(())
    }
}

/// The GPUs that the `column` (`cuda_visible_devices` or `nvidia_visible_devices`) of
/// clients seen since `since_ns` names, as NVML indices; empty when no client sent one or
/// none names a GPU this database knows (`all`, `none` and `void` name no particular GPU).
fn gpus_named_by_clients(
    conn: &Connection,
    column: &str,
    since_ns: i64,
) -> rusqlite::Result<Vec<u32>> {
    let lists: Vec<String> = conn
        .prepare(&format!(
            "SELECT DISTINCT {column} FROM clients
             WHERE last_seen_ns >= ?1 AND {column} <> ''
               AND lower({column}) NOT IN ('all', 'none', 'void')"
        ))?
        .query_map([since_ns], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if lists.is_empty() {
        return Ok(Vec::new());
    }
    // Identities from the newest snapshot that has them: UUIDs do not change.
    let identities = |table: &str| -> rusqlite::Result<Vec<(u32, String)>> {
        conn.prepare(&format!(
            "SELECT gpu_index, uuid FROM {table}
             WHERE snapshot_id = (SELECT max(snapshot_id) FROM {table}) AND uuid IS NOT NULL"
        ))?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
    };
    let gpus = identities("gpu_samples")?;
    let migs = identities("mig_samples")?;
    Ok(gpus_named(&lists, &gpus, &migs))
}

/// The GPUs some of the clients' `CUDA_VISIBLE_DEVICES` (or `NVIDIA_VISIBLE_DEVICES`)
/// values name, in index order, each once; `gpus` and `migs` are (index, UUID) of the
/// newest sample. Values that name no particular GPU (`''`, `all`, `none`, `void`) are
/// left out by the caller.
pub fn gpus_named(lists: &[String], gpus: &[(u32, String)], migs: &[(u32, String)]) -> Vec<u32> {
    let mut named: Vec<u32> = lists
        .iter()
        .flat_map(|list| cuda_visible_gpus(list, gpus, migs))
        .collect();
    named.sort_unstable();
    named.dedup();
    named
}

/// The NVML indices of the GPUs one `CUDA_VISIBLE_DEVICES` value names. Entries are
/// indices, GPU UUIDs (`GPU-…`, a unique prefix is enough, as CUDA allows) or MIG UUIDs
/// (`MIG-…`, which count as their parent GPU). Like CUDA, the list ends at the first entry
/// that names no device. An index is read as NVML's (PCI bus order), which is CUDA's only
/// with `CUDA_DEVICE_ORDER=PCI_BUS_ID` or on machines of one GPU model; UUIDs are exact.
pub fn cuda_visible_gpus(value: &str, gpus: &[(u32, String)], migs: &[(u32, String)]) -> Vec<u32> {
    let mut named = Vec::new();
    for entry in value.split(',').map(str::trim) {
        let found = if let Ok(index) = entry.parse::<u32>() {
            gpus.iter().find(|(i, _)| *i == index).map(|(i, _)| *i)
        } else {
            let table = if entry.starts_with("MIG-") {
                migs
            } else {
                gpus
            };
            let mut matches = table
                .iter()
                .filter(|(_, uuid)| !entry.is_empty() && uuid.starts_with(entry));
            match (matches.next(), matches.next()) {
                (Some((i, _)), None) => Some(*i),
                _ => None, // no such device, or an ambiguous prefix
            }
        };
        match found {
            Some(index) => named.push(index),
            None => break,
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use super::{SnapshotIndex, cuda_visible_gpus};

    #[test]
    fn snapshot_positions_with_and_without_gaps() {
        let mut index = SnapshotIndex::default();
        for id in [10, 11, 12] {
            index.push(id);
        }
        assert!(index.ids.is_empty(), "consecutive ids keep no list");
        assert_eq!(
            (index.get(10), index.get(12), index.get(13), index.get(9)),
            (Some(0), Some(2), None, None)
        );
        for id in [15, 16] {
            index.push(id);
        }
        assert_eq!(index.get(12), Some(2));
        assert_eq!(index.get(15), Some(3));
        assert_eq!(index.get(16), Some(4));
        assert_eq!(index.get(13), None);
        assert_eq!(index.first(), Some(10));
        let mut single = SnapshotIndex::default();
        single.push(7);
        assert_eq!((single.get(7), single.get(8)), (Some(0), None));
    }

    fn gpus() -> Vec<(u32, String)> {
        vec![
            (0, "GPU-0a1b2c3d-aaaa".to_owned()),
            (1, "GPU-0a1b9999-bbbb".to_owned()),
            (2, "GPU-77777777-cccc".to_owned()),
        ]
    }

    #[test]
    fn indices_uuids_and_prefixes_name_nvml_gpus() {
        let migs = vec![(2, "MIG-5555-dddd".to_owned())];
        assert_eq!(cuda_visible_gpus("1,0", &gpus(), &migs), vec![1, 0]);
        assert_eq!(cuda_visible_gpus(" 2 ", &gpus(), &migs), vec![2]);
        assert_eq!(
            cuda_visible_gpus("GPU-77777777-cccc", &gpus(), &migs),
            vec![2]
        );
        assert_eq!(cuda_visible_gpus("GPU-0a1b2", &gpus(), &migs), vec![0]);
        assert_eq!(cuda_visible_gpus("MIG-5555", &gpus(), &migs), vec![2]);
    }

    #[test]
    fn the_list_ends_at_the_first_entry_that_names_no_gpu() {
        let none: Vec<(u32, String)> = Vec::new();
        // An ambiguous prefix names no device, as in CUDA.
        assert_eq!(
            cuda_visible_gpus("GPU-0a1b", &gpus(), &none),
            Vec::<u32>::new()
        );
        assert_eq!(cuda_visible_gpus("0,7,1", &gpus(), &none), vec![0]);
        assert_eq!(cuda_visible_gpus("-1", &gpus(), &none), Vec::<u32>::new());
        assert_eq!(
            cuda_visible_gpus("NoDevFiles", &gpus(), &none),
            Vec::<u32>::new()
        );
        assert_eq!(cuda_visible_gpus("", &gpus(), &none), Vec::<u32>::new());
    }
}

#[doc(hidden)]
pub mod fixture {
    //! Hand-made [`Data`] for the unit tests of the report's computations (not an API).

    use super::*;

    /// No spans, runs, snapshots or GPUs.
    pub fn empty() -> Data {
        Data {
            snapshots: Snapshots::default(),
            snapshot_index: SnapshotIndex::default(),
            names: Vec::new(),
            spans: SortedSpans::default(),
            span_snapshots: SnapshotRefs::Positions,
            gpus: Vec::new(),
            gpu_names: Vec::new(),
            agent_gpus: Vec::new(),
            agent_gpus_from: None,
        }
    }

    /// Adds a snapshot taken at `at_s` seconds; returns its id (= position + 1).
    pub fn snapshot(data: &mut Data, at_s: f64, figures: SnapFigures) -> i64 {
        let position = data.snapshots.len() as u32;
        data.snapshots.push(&SnapFigures {
            taken_at_ns: (at_s * 1e9) as i64,
            ..figures
        });
        let id = i64::from(position) + 1;
        data.snapshot_index.push(id);
        id
    }

    /// Adds a finished span of step `name` that started at snapshot `snapshot_id`.
    pub fn span(data: &mut Data, name: &str, duration_ms: f64, failed: bool, snapshot_id: i64) {
        let index = match data.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                data.names.push(name.to_owned());
                data.names.len() - 1
            }
        };
        let snapshot = data.snapshot_index.get(snapshot_id).unwrap_or(NO_SNAPSHOT);
        data.spans
            .add(SpanRecord::new(index as u32, duration_ms, failed, snapshot));
    }

    /// Adds an ended run.
    pub fn run(
        runs: &mut Vec<RunFigures>,
        run_id: &str,
        (start_s, end_s): (f64, f64),
        outcome: (Status, EndedBy, &str),
        end_snapshot_id: Option<i64>,
    ) {
        runs.push(RunFigures {
            run_id: run_id.into(),
            name: "task".into(),
            status: outcome.0,
            ended_by: Some(outcome.1),
            error: (!outcome.2.is_empty()).then(|| outcome.2.into()),
            started_at_ns: (start_s * 1e9) as i64,
            ended_at_ns: Some((end_s * 1e9) as i64),
            end_snapshot_id,
        });
    }
}
