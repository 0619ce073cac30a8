//! The report's input read straight from the files, one column batch at a time: the same
//! [`Data`] the database's scans build (through the same folding parts of
//! `runlens_store::scan`) and the runs by start ([`FinishedRuns`]), so `runlens report
//! --from` is the database's report without loading the files into a database first.
//!
//! Each pod's snapshot ids are its own: a pod's ids are shifted past the previous pod's, as
//! `runlens merge` does (the first pod's are kept). Files are read in the order their
//! names give (`part`, then `date`), which is id order for the files runlens writes; files
//! whose snapshots are not (written by hand, or a clock that jumped back across midnight)
//! are refused with [`FleetError::Order`], and the caller reads them through a database.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampNanosecondType};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use probe_core::GpuState;
use runlens_store::columnar::Table;
use runlens_store::domain::{EndedBy, Status};
use runlens_store::scan::spill::NO_SNAPSHOT;
use runlens_store::scan::{
    AgentGpusFrom, Data, GpuFold, GpuRow, RunFigures, SnapFigures, SnapshotIndex, SnapshotRefs,
    StepCollector, columns::Snapshots, gpus_named,
};

use crate::import::{Listed, list};
use crate::location::Location;
use crate::sorted_runs::{FinishedRuns, SortedRuns};
use crate::{FleetError, Result, block_on};

/// Rows per batch read from a file.
const BATCH_ROWS: usize = 2_048;

/// What a report covers.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// `[since, until)`, Unix ns.
    pub window: (i64, i64),
    /// Only this run.
    pub run_id: Option<&'a str>,
    /// Only spans of this name.
    pub name: Option<&'a str>,
    /// Only this pod.
    pub source: Option<&'a str>,
    /// GPU free memory below this counts as short, bytes.
    pub threshold: u64,
}

/// The files of a destination, by pod.
pub struct FleetFiles {
    location: Location,
    by_source: BTreeMap<String, Vec<Listed>>,
    /// Where the files are on this machine, when the destination is a directory.
    local_root: Option<PathBuf>,
}

impl FleetFiles {
    /// Lists the files of days in `days` (inclusive; all when `None`).
    pub fn list(location: Location, days: Option<(i64, i64)>) -> Result<FleetFiles> {
        let by_source = list(&location, days)?;
        let local_root = location.local_root.clone();
        Ok(FleetFiles {
            location,
            by_source,
            local_root,
        })
    }

    /// The pods, in name order (the order `source_id`s are given in: 1, 2, ...).
    pub fn sources(&self) -> Vec<String> {
        self.by_source.keys().cloned().collect()
    }

    /// How many files.
    pub fn files(&self) -> usize {
        self.by_source.values().map(Vec::len).sum()
    }

    /// Bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.by_source.values().flatten().map(|f| f.2).sum()
    }

    /// Rows of `source`'s `table` files, from their footers.
    fn rows(&self, source: &str, table: Table) -> Result<usize> {
        let mut rows = 0;
        self.each_file(source, table, &mut |file| {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
            rows += usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Opens each of `source`'s `table` files.
    fn each_file(
        &self,
        source: &str,
        table: Table,
        each: &mut dyn FnMut(File) -> Result<()>,
    ) -> Result<()> {
        let Some(files) = self.by_source.get(source) else {
            return Ok(());
        };
        for (name, path, _) in files.iter().filter(|f| f.0.table == table) {
            // A directory's files are read where they are; a bucket's through a local copy.
            match &self.local_root {
                Some(root) => each(File::open(root.join(name.relative()))?)?,
                None => {
                    let copy = tempfile::NamedTempFile::new()?;
                    block_on(crate::import::download(&self.location, path, copy.path()))?;
                    each(File::open(copy.path())?)?;
                }
            }
        }
        Ok(())
    }

    /// Reads each batch of `columns` (those the file has) of `source`'s `table` files.
    fn each_batch(
        &self,
        source: &str,
        table: Table,
        columns: &[&str],
        each: &mut dyn FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<()> {
        self.each_file(source, table, &mut |file| {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
            let wanted: Vec<&str> = columns
                .iter()
                .copied()
                .filter(|c| builder.schema().field_with_name(c).is_ok())
                .collect();
            let mask = ProjectionMask::columns(builder.parquet_schema(), wanted);
            for batch in builder
                .with_projection(mask)
                .with_batch_size(BATCH_ROWS)
                .build()?
            {
                each(&batch?)?;
            }
            Ok(())
        })
    }

    /// The report's input over `scope`.
    pub fn load(&self, scope: &Scope<'_>) -> Result<(Data, FinishedRuns)> {
        let sources: Vec<String> = self
            .sources()
            .into_iter()
            .filter(|s| scope.source.is_none_or(|only| only == s))
            .collect();
        // Room for every snapshot of the files at once (grown by doubling, each column held
        // its old and new copy for a moment): the files' own row counts, an upper bound
        // for a narrower window.
        let mut expected = 0;
        for source in &sources {
            expected += self.rows(source, Table::Snapshots)?;
        }
        let mut reading = Reading {
            snapshots: Snapshots::with_capacity(expected),
            ..Reading::default()
        };
        for source in &sources {
            reading.snapshots(self, source, scope)?;
        }
        // The spans and runs before the GPU figures: their sorting buffers are at their
        // largest while they fill, and the snapshots' GPU columns do not exist yet.
        let mut steps = StepCollector::default();
        let mut runs = SortedRuns::new();
        for source in &sources {
            reading.spans(self, source, scope, &mut steps)?;
            reading.runs(self, source, scope, &mut runs)?;
        }
        let (names, spans) = steps.finish();
        let runs = runs.finish()?;
        let first_id = reading.index.first().unwrap_or(i64::MAX);
        let (agent_gpus, agent_gpus_from) = self.agent_gpus(&sources, &reading, first_id, scope)?;
        let (gpus, gpu_names) = {
            let mut fold = GpuFold::new(&reading.snapshots, &agent_gpus, scope.threshold);
            for source in &sources {
                reading.gpu_samples(self, source, first_id, &mut fold)?;
            }
            fold.finish()
        };
        let data = Data {
            snapshots: reading.snapshots,
            snapshot_index: reading.index,
            names,
            spans,
            span_snapshots: SnapshotRefs::Positions,
            gpus,
            gpu_names,
            agent_gpus,
            agent_gpus_from,
        };
        Ok((data, runs))
    }

    /// The GPUs the agents use, as the database's scan finds them: where a watched agent's
    /// tree held memory (from `first_id` on), else what the agents' hello named.
    fn agent_gpus(
        &self,
        sources: &[String],
        reading: &Reading,
        first_id: i64,
        scope: &Scope<'_>,
    ) -> Result<(Vec<u32>, Option<AgentGpusFrom>)> {
        let mut gpus: Vec<u32> = Vec::new();
        for source in sources {
            let shift = reading.shift(source);
            let from = |id: Option<i64>| id.is_some_and(|id| id.saturating_add(shift) >= first_id);
            let mut pids: HashSet<i64> = HashSet::new();
            self.each_batch(
                source,
                Table::ProcessSamples,
                &["snapshot_id", "pid"],
                &mut |b| {
                    let (ids, pid) = (ints(b, "snapshot_id")?, ints(b, "pid")?);
                    for k in 0..b.num_rows() {
                        if from(ids.get(k).copied().flatten()) {
                            pids.extend(pid.get(k).copied().flatten());
                        }
                    }
                    Ok(())
                },
            )?;
            let columns = ["snapshot_id", "gpu_index", "used_memory_bytes"];
            self.each_batch(source, Table::ProcessGpuSamples, &columns, &mut |b| {
                let (ids, index, used) = (
                    ints(b, "snapshot_id")?,
                    ints(b, "gpu_index")?,
                    ints(b, "used_memory_bytes")?,
                );
                for k in 0..b.num_rows() {
                    if from(ids[k]) && used[k].is_some_and(|u| u > 0) {
                        gpus.extend(index[k].and_then(|i| u32::try_from(i).ok()));
                    }
                }
                Ok(())
            })?;
            self.each_batch(
                source,
                Table::GpuProcesses,
                &["snapshot_id", "gpu_index", "pid"],
                &mut |b| {
                    let (ids, index, pid) = (
                        ints(b, "snapshot_id")?,
                        ints(b, "gpu_index")?,
                        ints(b, "pid")?,
                    );
                    for k in 0..b.num_rows() {
                        if from(ids[k]) && pid[k].is_some_and(|p| pids.contains(&p)) {
                            gpus.extend(index[k].and_then(|i| u32::try_from(i).ok()));
                        }
                    }
                    Ok(())
                },
            )?;
        }
        gpus.sort_unstable();
        gpus.dedup();
        if !gpus.is_empty() {
            return Ok((gpus, Some(AgentGpusFrom::Processes)));
        }
        for (column, from) in [
            (
                "nvidia_visible_devices",
                AgentGpusFrom::NvidiaVisibleDevices,
            ),
            ("cuda_visible_devices", AgentGpusFrom::CudaVisibleDevices),
        ] {
            let mut lists: Vec<String> = Vec::new();
            for source in sources {
                self.each_batch(
                    source,
                    Table::Clients,
                    &["last_seen_ns", column],
                    &mut |b| {
                        let (seen, values) = (times(b, "last_seen_ns")?, texts(b, column)?);
                        for k in 0..b.num_rows() {
                            let Some(value) = &values[k] else { continue };
                            let named = !value.is_empty()
                                && !["all", "none", "void"]
                                    .contains(&value.to_lowercase().as_str());
                            if named
                                && seen[k].is_some_and(|t| t >= scope.window.0)
                                && !lists.contains(value)
                            {
                                lists.push(value.clone());
                            }
                        }
                        Ok(())
                    },
                )?;
            }
            if lists.is_empty() {
                continue;
            }
            let gpus = self.identities(sources, reading, Table::GpuSamples)?;
            let migs = self.identities(sources, reading, Table::MigSamples)?;
            let named = gpus_named(&lists, &gpus, &migs);
            if !named.is_empty() {
                return Ok((named, Some(from)));
            }
        }
        Ok((Vec::new(), None))
    }

    /// (index, UUID) of the newest snapshot's samples that have a UUID, over every pod.
    fn identities(
        &self,
        sources: &[String],
        reading: &Reading,
        table: Table,
    ) -> Result<Vec<(u32, String)>> {
        let mut newest: (i64, Vec<(u32, String)>) = (i64::MIN, Vec::new());
        let index_column = if table == Table::MigSamples {
            "mig_index"
        } else {
            "gpu_index"
        };
        let parent = if table == Table::MigSamples {
            "gpu_index"
        } else {
            index_column
        };
        for source in sources {
            let shift = reading.shift(source);
            self.each_batch(source, table, &["snapshot_id", parent, "uuid"], &mut |b| {
                let (ids, index, uuid) =
                    (ints(b, "snapshot_id")?, ints(b, parent)?, texts(b, "uuid")?);
                for k in 0..b.num_rows() {
                    let Some(id) = ids[k].map(|i| i.saturating_add(shift)) else {
                        continue;
                    };
                    if id > newest.0 {
                        newest = (id, Vec::new());
                    }
                    if id == newest.0
                        && let (Some(i), Some(u)) = (index[k], &uuid[k])
                    {
                        newest
                            .1
                            .push((u32::try_from(i).unwrap_or(u32::MAX), u.clone()));
                    }
                }
                Ok(())
            })?;
        }
        Ok(newest.1)
    }
}

/// What is read so far, and each pod's snapshot id shift.
#[derive(Default)]
struct Reading {
    snapshots: Snapshots,
    index: SnapshotIndex,
    /// Per pod: the shift of its snapshot ids.
    shifts: BTreeMap<String, i64>,
    /// The largest (shifted) snapshot id read, of every pod so far.
    last_id: Option<i64>,
}

impl Reading {
    fn shift(&self, source: &str) -> i64 {
        self.shifts.get(source).copied().unwrap_or(0)
    }

    /// A pod's snapshots in the window.
    fn snapshots(&mut self, files: &FleetFiles, source: &str, scope: &Scope<'_>) -> Result<()> {
        let columns = [
            "snapshot_id",
            "taken_at_ns",
            "cpu_load_1m",
            "cpu_count",
            "ram_total_bytes",
            "ram_available_bytes",
            "cgroup_memory_limit_bytes",
            "cgroup_memory_used_bytes",
        ];
        let (since, until) = scope.window;
        files.each_batch(source, Table::Snapshots, &columns, &mut |b| {
            let ids = ints(b, "snapshot_id")?;
            let taken = times(b, "taken_at_ns")?;
            let load = reals(b, "cpu_load_1m")?;
            let cpus = ints(b, "cpu_count")?;
            let (total, available) = (ints(b, "ram_total_bytes")?, ints(b, "ram_available_bytes")?);
            let (limit, used) = (
                ints(b, "cgroup_memory_limit_bytes")?,
                ints(b, "cgroup_memory_used_bytes")?,
            );
            for k in 0..b.num_rows() {
                let Some(id) = ids[k] else { continue };
                // The pod's first id follows the previous pod's last.
                let shift = *self.shifts.entry(source.to_owned()).or_insert_with(|| {
                    self.last_id
                        .map_or(0, |last| (last + 1).saturating_sub(id).max(0))
                });
                let id = id.saturating_add(shift);
                if self.last_id.is_some_and(|last| id <= last) {
                    return Err(FleetError::Order(format!(
                        "{source}'s snapshot ids are not in the order of its files' names"
                    )));
                }
                self.last_id = Some(id);
                let Some(at) = taken[k] else { continue };
                if at < since || at >= until {
                    continue;
                }
                self.index.push(id);
                self.snapshots.push(&SnapFigures::host(
                    at,
                    load[k],
                    cpus[k].unwrap_or(0),
                    (total[k].unwrap_or(0), available[k].unwrap_or(0)),
                    (limit[k], used[k]),
                ));
            }
            Ok(())
        })
    }

    /// A pod's readable GPU samples from `first_id` on, folded.
    fn gpu_samples(
        &mut self,
        files: &FleetFiles,
        source: &str,
        first_id: i64,
        fold: &mut GpuFold<'_>,
    ) -> Result<()> {
        let columns = [
            "snapshot_id",
            "gpu_index",
            "state",
            "memory_free_bytes",
            "utilization_ratio",
            "dram_bandwidth_ratio",
            "tensor_active_ratio",
            "memory_used_bytes",
            "memory_total_bytes",
            "uuid",
            "name",
        ];
        let shift = self.shift(source);
        let (snapshots, index) = (&mut self.snapshots, &self.index);
        files.each_batch(source, Table::GpuSamples, &columns, &mut |b| {
            let ids = ints(b, "snapshot_id")?;
            let gpu = ints(b, "gpu_index")?;
            let state = texts_ref(b, "state")?;
            let (free, used, total) = (
                ints(b, "memory_free_bytes")?,
                ints(b, "memory_used_bytes")?,
                ints(b, "memory_total_bytes")?,
            );
            let (util, dram, tensor) = (
                reals(b, "utilization_ratio")?,
                reals(b, "dram_bandwidth_ratio")?,
                reals(b, "tensor_active_ratio")?,
            );
            let (uuid, name) = (texts_ref(b, "uuid")?, texts_ref(b, "name")?);
            let unsigned = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
            for k in 0..b.num_rows() {
                let Some(id) = ids[k].map(|i| i.saturating_add(shift)) else {
                    continue;
                };
                if id < first_id || text_at(&state, k) != Some(GpuState::Ok.as_str()) {
                    continue;
                }
                let Some(position) = index.get(id) else {
                    continue;
                };
                let row = GpuRow {
                    gpu_index: gpu[k]
                        .and_then(|i| u32::try_from(i).ok())
                        .unwrap_or(u32::MAX),
                    free_bytes: unsigned(free[k]),
                    utilization: util[k],
                    dram_bandwidth: dram[k],
                    tensor_active: tensor[k],
                    used_bytes: unsigned(used[k]),
                    total_bytes: unsigned(total[k]),
                    uuid: text_at(&uuid, k),
                    name: text_at(&name, k),
                };
                fold.add(snapshots, position as usize, &row);
            }
            Ok(())
        })
    }

    /// A pod's finished spans in the window.
    fn spans(
        &self,
        files: &FleetFiles,
        source: &str,
        scope: &Scope<'_>,
        steps: &mut StepCollector,
    ) -> Result<()> {
        let columns = [
            "run_id",
            "name",
            "status",
            "started_at_ns",
            "ended_at_ns",
            "start_snapshot_id",
        ];
        let shift = self.shift(source);
        let (since, until) = scope.window;
        files.each_batch(source, Table::Spans, &columns, &mut |b| {
            let (run, name, status) = (
                texts_ref(b, "run_id")?,
                texts_ref(b, "name")?,
                texts_ref(b, "status")?,
            );
            let (started, ended) = (times(b, "started_at_ns")?, times(b, "ended_at_ns")?);
            let snapshot = ints(b, "start_snapshot_id")?;
            for k in 0..b.num_rows() {
                let (Some(start), Some(end)) = (started[k], ended[k]) else {
                    continue;
                };
                if start < since || start >= until {
                    continue;
                }
                if scope.run_id.is_some_and(|r| run.value(k) != r)
                    || scope.name.is_some_and(|n| name.value(k) != n)
                    || name.is_null(k)
                {
                    continue;
                }
                let position = snapshot[k]
                    .and_then(|id| self.index.get(id.saturating_add(shift)))
                    .unwrap_or(NO_SNAPSHOT);
                let failed = Status::parse(status.value(k)) == Some(Status::Failed);
                steps.push(name.value(k), (end - start) as f64 / 1e6, failed, position);
            }
            Ok(())
        })
    }

    /// A pod's runs in the window.
    fn runs(
        &self,
        files: &FleetFiles,
        source: &str,
        scope: &Scope<'_>,
        runs: &mut SortedRuns,
    ) -> Result<()> {
        let columns = [
            "run_id",
            "name",
            "status",
            "error",
            "started_at_ns",
            "ended_at_ns",
            "end_snapshot_id",
            "ended_by",
        ];
        let shift = self.shift(source);
        let (since, until) = scope.window;
        files.each_batch(source, Table::Runs, &columns, &mut |b| {
            let (id, name, status, error, ended_by) = (
                texts_ref(b, "run_id")?,
                texts_ref(b, "name")?,
                texts_ref(b, "status")?,
                texts_ref(b, "error")?,
                texts_ref(b, "ended_by")?,
            );
            let (started, ended) = (times(b, "started_at_ns")?, times(b, "ended_at_ns")?);
            let end_snapshot = ints(b, "end_snapshot_id")?;
            for k in 0..b.num_rows() {
                let Some(start) = started[k] else { continue };
                if start < since || start >= until || scope.run_id.is_some_and(|r| id.value(k) != r)
                {
                    continue;
                }
                runs.push(&RunFigures {
                    run_id: id.value(k).into(),
                    name: name.value(k).into(),
                    status: Status::parse(status.value(k)).unwrap_or(Status::Running),
                    ended_by: text_at(&ended_by, k).and_then(EndedBy::parse),
                    error: text_at(&error, k).map(Box::from),
                    started_at_ns: start,
                    ended_at_ns: ended[k],
                    end_snapshot_id: end_snapshot[k].map(|i| i.saturating_add(shift)),
                })?;
            }
            Ok(())
        })
    }
}

// Columns of a batch by name, as the layout types them; a column the file lacks (an older
// layout) reads as all nulls.

fn ints(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    Ok(match b.column_by_name(name) {
        Some(a) if a.data_type() == &arrow_schema::DataType::Int64 => {
            a.as_primitive::<Int64Type>().iter().collect()
        }
        Some(a) => return Err(mistyped(name, a.data_type())),
        None => vec![None; b.num_rows()],
    })
}

fn times(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    Ok(match b.column_by_name(name) {
        Some(a)
            if matches!(
                a.data_type(),
                arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, _)
            ) =>
        {
            a.as_primitive::<TimestampNanosecondType>().iter().collect()
        }
        Some(a) => return Err(mistyped(name, a.data_type())),
        None => vec![None; b.num_rows()],
    })
}

fn reals(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(match b.column_by_name(name) {
        Some(a) if a.data_type() == &arrow_schema::DataType::Float64 => {
            a.as_primitive::<Float64Type>().iter().collect()
        }
        Some(a) => return Err(mistyped(name, a.data_type())),
        None => vec![None; b.num_rows()],
    })
}

fn texts(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    Ok(texts_ref(b, name)?
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect())
}

/// A text column as Arrow holds it (no copy per row); nulls for a missing column.
fn texts_ref(b: &RecordBatch, name: &str) -> Result<arrow_array::StringArray> {
    Ok(match b.column_by_name(name) {
        Some(a) if a.data_type() == &arrow_schema::DataType::Utf8 => a.as_string::<i32>().clone(),
        Some(a) => return Err(mistyped(name, a.data_type())),
        None => arrow_array::StringArray::new_null(b.num_rows()),
    })
}

/// Row `k` of a text column, `None` when null.
fn text_at(a: &arrow_array::StringArray, k: usize) -> Option<&str> {
    (!a.is_null(k)).then(|| a.value(k))
}

fn mistyped(name: &str, found: &arrow_schema::DataType) -> FleetError {
    FleetError::Format(format!("column {name} is {found}, not the layout's type"))
}
