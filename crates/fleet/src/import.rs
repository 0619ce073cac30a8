//! Reading a destination's files back into one scratch database, for `runlens report
//! --from`: the report then runs over it exactly as over a `--db` (the same code, so the
//! same JSON). Files are streamed one at a time through a local copy and imported in
//! batches: memory is a batch, disk the database of what the window holds.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use runlens_store::columnar::{Importer, Table};

use crate::arrow_columns::from_record_batch;
use crate::layout::FileName;
use crate::location::Location;
use crate::{FleetError, Result, block_on};

/// Rows per batch read from a file.
const READ_BATCH_ROWS: usize = 8_192;

/// What was read.
#[derive(Debug, Clone, Default)]
pub struct ReadBack {
    /// Files read.
    pub files: u64,
    /// Rows read.
    pub rows: u64,
    /// Bytes of the files read.
    pub bytes: u64,
    /// Rows whose key (run, span, sample) was already read: the same data in two files
    /// (two pods exported from one database, or overlapping one-shot windows), counted once.
    pub repeated: u64,
    /// The sources (pods), in the order their `source_id`s were given (1, 2, ...).
    pub sources: Vec<String>,
}

/// A file found: its place in the layout, its path in the store and its size.
pub type Listed = (FileName, object_store::path::Path, u64);

/// Every layout file under `location` (of days in `days`, inclusive, when given), by
/// source, each source's by table, then part, then day.
pub fn list(
    location: &Location,
    days: Option<(i64, i64)>,
) -> Result<BTreeMap<String, Vec<Listed>>> {
    let listed = block_on(async {
        let mut stream = location.store.list(Some(&location.prefix));
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            out.push((meta.location, meta.size));
        }
        Ok::<_, FleetError>(out)
    })?;
    let mut by_source: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for (path, size) in listed {
        let Some(name) = FileName::parse(&location.relative(&path)) else {
            continue;
        };
        if let (Some(day), Some((first, last))) = (name.day, days)
            && (day < first || day > last)
        {
            continue;
        }
        by_source
            .entry(name.source.clone())
            .or_default()
            .push((name, path, size));
    }
    let order = |t: Table| {
        Table::ALL
            .iter()
            .position(|&x| x == t)
            .unwrap_or(usize::MAX)
    };
    // Within a table: by part, then day: id order for the files runlens writes.
    for files in by_source.values_mut() {
        files.sort_by(|a, b| {
            (order(a.0.table), &a.0.part, a.0.day).cmp(&(order(b.0.table), &b.0.part, b.0.day))
        });
    }
    Ok(by_source)
}

/// Reads every layout file under `location` (of days in `days` when given) into the new
/// database at `db`, each source (pod) a merged source of it.
pub fn read_into(location: &Location, days: Option<(i64, i64)>, db: &Path) -> Result<ReadBack> {
    let by_source = list(location, days)?;
    let conn = runlens_store::open_for_writing(db, false, None)?;
    let scratch = tempfile::tempdir_in(db.parent().unwrap_or(Path::new(".")))?;
    let mut importer = Importer::new(&conn);
    let mut read = ReadBack::default();
    for (source, files) in by_source {
        // Local copies of this source's files (one source's, not the fleet's, at a time).
        let mut local: Vec<(FileName, PathBuf)> = Vec::with_capacity(files.len());
        for (k, (name, path, size)) in files.into_iter().enumerate() {
            let copy = scratch.path().join(format!("{k}.parquet"));
            block_on(download(location, &path, &copy))?;
            read.files += 1;
            read.bytes += size;
            local.push((name, copy));
        }
        let first = first_snapshot_id(&local)?;
        let source_id = importer.add_source(&source, first)?;
        for (name, copy) in &local {
            let (rows, new) = import_file(&importer, name.table, source_id, copy)?;
            read.rows += rows;
            read.repeated += rows - new;
            std::fs::remove_file(copy)?;
        }
        read.sources.push(source);
    }
    Ok(read)
}

/// The smallest snapshot id of a source's snapshot files.
fn first_snapshot_id(files: &[(FileName, PathBuf)]) -> Result<Option<i64>> {
    let mut first: Option<i64> = None;
    for (_, path) in files.iter().filter(|(n, _)| n.table == Table::Snapshots) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["snapshot_id"]);
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let (_, values) = from_record_batch(Table::Snapshots, &batch)?;
            if let Some(runlens_store::columnar::Values::Int(ids)) = values.first() {
                for id in ids.iter().flatten() {
                    first = Some(first.map_or(*id, |f: i64| f.min(*id)));
                }
            }
        }
    }
    Ok(first)
}

/// Imports one file; returns its rows and how many of them were new.
fn import_file(
    importer: &Importer<'_>,
    table: Table,
    source_id: i64,
    path: &Path,
) -> Result<(u64, u64)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?
        .with_batch_size(READ_BATCH_ROWS)
        .build()?;
    let (mut rows, mut new) = (0, 0);
    for batch in reader {
        let batch = batch?;
        let (names, values) = from_record_batch(table, &batch)?;
        new += importer.write(table, source_id, &names, &values)?;
        rows += batch.num_rows() as u64;
    }
    Ok((rows, new))
}

/// Copies an object to a local file, streaming.
pub(crate) async fn download(
    location: &Location,
    path: &object_store::path::Path,
    to: &Path,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut stream = location.store.get(path).await?.into_stream();
    let mut file = tokio::fs::File::create(to).await?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    Ok(())
}
