//! Writing the store's tables as Parquet files: each table scanned once, its rows split by
//! partition (pod and day) into one file each, written locally with the Arrow project's
//! writer (zstd, row groups of [`ROW_GROUP_ROWS`]) and then uploaded, so a file appears
//! whole or not at all.

use std::collections::BTreeMap;
use std::fs::File;

use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use runlens_store::Connection;
use runlens_store::columnar::{self, Batch, LAYOUT_VERSION, Selection, Table};

use crate::arrow_columns::{schema, to_record_batch};
use crate::layout::FileName;
use crate::location::Location;
use crate::sources::SourceNames;
use crate::{Result, block_on};

/// Rows per row group: large enough for engines' scans (a few MB a column chunk), small
/// enough that a writer holds little.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Bytes of a data page (and of a dictionary page, past which a column falls back to plain
/// encoding): 128 KiB, where Parquet's default is 1 MiB.
const PAGE_BYTES: usize = 128 << 10;

/// Rows read from the database per batch.
const BATCH_ROWS: usize = 8_192;

/// What an export wrote, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Per table: (rows, files, bytes).
    pub tables: BTreeMap<&'static str, (u64, u64, u64)>,
}

impl Written {
    /// Rows over every table.
    pub fn rows(&self) -> u64 {
        self.tables.values().map(|t| t.0).sum()
    }

    /// Files over every table.
    pub fn files(&self) -> u64 {
        self.tables.values().map(|t| t.1).sum()
    }

    /// Bytes over every table.
    pub fn bytes(&self) -> u64 {
        self.tables.values().map(|t| t.2).sum()
    }
}

/// What one table's export reads, and what its files continue from.
#[derive(Debug, Clone)]
pub struct TableExport {
    /// The table.
    pub table: Table,
    /// Its rows.
    pub selection: Selection,
    /// The `part-<first>` of its files (the same for a retried export of the same rows).
    pub part: String,
}

/// Writes each table's selected rows to `location`, one file per partition; returns what
/// was written. A file of the same name already there is replaced.
pub fn export(
    conn: &Connection,
    location: &Location,
    tables: &[TableExport],
    sources: &SourceNames,
) -> Result<Written> {
    let scratch = tempfile::tempdir()?;
    let mut written = Written::default();
    for job in tables {
        let files = write_table(conn, scratch.path(), job, sources)?;
        let entry = written.tables.entry(job.table.name()).or_default();
        for (name, path, rows) in files {
            let bytes = std::fs::metadata(&path)?.len();
            block_on(upload(location, &name.relative(), &path))?;
            std::fs::remove_file(&path)?;
            entry.0 += rows;
            entry.1 += 1;
            entry.2 += bytes;
        }
    }
    Ok(written)
}

/// An open file of one partition.
struct PartFile {
    name: FileName,
    path: std::path::PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

/// Writes one table's rows into local files, one per partition.
fn write_table(
    conn: &Connection,
    scratch: &std::path::Path,
    job: &TableExport,
    sources: &SourceNames,
) -> Result<Vec<(FileName, std::path::PathBuf, u64)>> {
    let schema = schema(job.table);
    let mut open: BTreeMap<(Option<i64>, i64), PartFile> = BTreeMap::new();
    let mut failure = None;
    columnar::scan(
        conn,
        job.table,
        job.selection,
        BATCH_ROWS,
        &mut |batch: Batch| {
            let key = (batch.source_id, batch.day);
            let rows = batch.rows() as u64;
            let file = match open.get_mut(&key) {
                Some(file) => file,
                None => {
                    let name = FileName {
                        table: job.table,
                        day: job.table.by_date().then_some(batch.day),
                        source: sources.name(batch.source_id),
                        part: job.part.clone(),
                    };
                    match new_file(scratch, open.len(), name, &schema) {
                        Ok(file) => open.entry(key).or_insert(file),
                        Err(e) => {
                            failure = Some(e);
                            return Ok(());
                        }
                    }
                }
            };
            let result = to_record_batch(job.table, &schema, batch.columns)
                .and_then(|b| Ok(file.writer.write(&b)?));
            match result {
                Ok(()) => file.rows += rows,
                Err(e) => failure = Some(e),
            }
            Ok(())
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    let mut done = Vec::with_capacity(open.len());
    for file in open.into_values() {
        file.writer.close()?;
        done.push((file.name, file.path, file.rows));
    }
    Ok(done)
}

fn new_file(
    scratch: &std::path::Path,
    k: usize,
    name: FileName,
    schema: &SchemaRef,
) -> Result<PartFile> {
    let path = scratch.join(format!("{}-{k}.parquet", name.table.name()));
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_size(ROW_GROUP_ROWS)
        // Readers hold a page per column they read (compressed and decoded): small pages
        // keep `report --from` within its memory bound; scans lose nothing measurable.
        .set_data_page_size_limit(PAGE_BYTES)
        .set_dictionary_page_size_limit(PAGE_BYTES)
        .set_created_by(format!("runlens {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "runlens.layout".to_owned(),
            LAYOUT_VERSION.to_string(),
        )]))
        .build();
    let writer = ArrowWriter::try_new(File::create(&path)?, schema.clone(), Some(properties))?;
    Ok(PartFile {
        name,
        path,
        writer,
        rows: 0,
    })
}

/// Uploads a local file to `relative` under the location (multipart when large).
async fn upload(location: &Location, relative: &str, local: &std::path::Path) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let path = location.path(relative);
    let mut writer = object_store::buffered::BufWriter::new(location.store.clone(), path);
    let mut file = tokio::fs::File::open(local).await?;
    tokio::io::copy(&mut file, &mut writer).await?;
    writer.shutdown().await?;
    Ok(())
}
