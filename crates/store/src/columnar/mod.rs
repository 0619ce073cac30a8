//! The store's tables as typed columns: read out in batches for the fleet's Parquet files
//! ([`scan`]), and written back into a database ([`Importer`]) so that `runlens report
//! --from` runs the same report over files as over a database. What the columns are is
//! the layout ([`spec`]); how they become files is the `runlens-fleet` crate's business.

pub mod spec;

use std::collections::HashMap;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, params_from_iter};

use crate::Result;
pub use spec::{Column, Kind, LAYOUT_VERSION, Table};

/// One column's values of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// [`Kind::Int`], [`Kind::Time`] and [`Kind::Bool`] columns (0/1).
    Int(Vec<Option<i64>>),
    /// [`Kind::Real`] columns.
    Real(Vec<Option<f64>>),
    /// [`Kind::Text`] columns.
    Text(Vec<Option<String>>),
}

impl Values {
    fn empty(kind: Kind, capacity: usize) -> Values {
        match kind {
            Kind::Int | Kind::Time | Kind::Bool => Values::Int(Vec::with_capacity(capacity)),
            Kind::Real => Values::Real(Vec::with_capacity(capacity)),
            Kind::Text => Values::Text(Vec::with_capacity(capacity)),
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        match self {
            Values::Int(v) => v.len(),
            Values::Real(v) => v.len(),
            Values::Text(v) => v.len(),
        }
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a database value (a value of another type than the column's is NULL: SQLite
    /// columns are typed by affinity only, and a file column has one type).
    fn push(&mut self, value: ValueRef<'_>) {
        match self {
            Values::Int(v) => v.push(match value {
                ValueRef::Integer(i) => Some(i),
                ValueRef::Real(r) => Some(r as i64),
                _ => None,
            }),
            Values::Real(v) => v.push(match value {
                ValueRef::Real(r) => Some(r),
                ValueRef::Integer(i) => Some(i as f64),
                _ => None,
            }),
            Values::Text(v) => v.push(match value {
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                _ => None,
            }),
        }
    }

    /// The value of row `row` as a database value.
    fn value(&self, row: usize) -> Value {
        let value = match self {
            Values::Int(v) => v.get(row).copied().flatten().map(Value::Integer),
            Values::Real(v) => v.get(row).copied().flatten().map(Value::Real),
            Values::Text(v) => v.get(row).cloned().flatten().map(Value::Text),
        };
        value.unwrap_or(Value::Null)
    }
}

/// Rows of one table that share a partition: the same merged source and the same UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The `runlens merge` source the rows came from (`None`: written by this database's
    /// own sidecar).
    pub source_id: Option<i64>,
    /// The UTC day of the rows' partition time, as days since 1970-01-01.
    pub day: i64,
    /// One entry per column of [`Table::columns`], all of the same length.
    pub columns: Vec<Values>,
}

impl Batch {
    /// How many rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Values::len)
    }
}

/// Which rows a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Rows whose own time (a run's or span's start, a sample's time, an event's time) is
    /// in `[since_ns, until_ns)`; every client.
    Window {
        /// First instant.
        since_ns: i64,
        /// First instant after.
        until_ns: i64,
    },
    /// Rows past a continuous export's cursor, up to `upto` (inclusive): runs and their
    /// spans by export outbox entry (runs that ended), samples by snapshot id, events by
    /// event id; every client.
    Range {
        /// The last key already exported.
        after: i64,
        /// The last key to export now.
        upto: i64,
    },
}

/// One UTC day, ns.
const DAY_NS: i64 = 86_400_000_000_000;

/// The condition and order of a scan of `table`, with its two parameters.
fn selection_sql(table: Table, selection: Selection) -> (String, [i64; 2]) {
    match selection {
        Selection::Window { since_ns, until_ns } => {
            let time = table.time_sql();
            let condition = if table == Table::Clients {
                "?1 IS NOT NULL AND ?2 IS NOT NULL".to_owned()
            } else {
                format!("{time} >= ?1 AND {time} < ?2")
            };
            (condition, [since_ns, until_ns])
        }
        Selection::Range { after, upto } => {
            let condition = match table {
                Table::Runs => {
                    "t.run_id IN (SELECT run_id FROM export_outbox
                                 WHERE seq > ?1 AND seq <= ?2)"
                }
                Table::Spans => {
                    "t.run_id IN (SELECT run_id FROM export_outbox
                                  WHERE seq > ?1 AND seq <= ?2)"
                }
                Table::Events => "t.event_id > ?1 AND t.event_id <= ?2",
                Table::Clients => "?1 IS NOT NULL AND ?2 IS NOT NULL",
                _ => "t.snapshot_id > ?1 AND t.snapshot_id <= ?2",
            };
            (condition.to_owned(), [after, upto])
        }
    }
}

/// Reads `table`'s rows of `selection` in batches of up to `batch_rows`, each batch of one
/// partition (source and day), and hands each to `each`. Memory: one batch.
pub fn scan(
    conn: &Connection,
    table: Table,
    selection: Selection,
    batch_rows: usize,
    each: &mut dyn FnMut(Batch) -> Result<()>,
) -> Result<()> {
    let columns = table.columns();
    let list: Vec<&str> = columns.iter().map(|c| c.sql).collect();
    let (condition, params) = selection_sql(table, selection);
    let order = table
        .order_sql()
        .map_or(String::new(), |o| format!(" ORDER BY {o}"));
    let sql = format!(
        "SELECT {}, {}, {} FROM {} WHERE {condition}{order}",
        table.source_sql(),
        table.time_sql(),
        list.join(", "),
        table.rows_sql(),
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params)?;
    let batch_rows = batch_rows.max(1);
    let fresh = |source_id, day| Batch {
        source_id,
        day,
        columns: columns
            .iter()
            .map(|c| Values::empty(c.kind, batch_rows))
            .collect(),
    };
    let mut batch: Option<Batch> = None;
    while let Some(row) = rows.next()? {
        let source_id: Option<i64> = row.get(0)?;
        let day = row
            .get::<_, Option<i64>>(1)?
            .unwrap_or(0)
            .div_euclid(DAY_NS);
        let day = if table.by_date() { day } else { 0 };
        let same = batch
            .as_ref()
            .is_some_and(|b| b.source_id == source_id && b.day == day && b.rows() < batch_rows);
        if !same {
            if let Some(full) = batch.take() {
                each(full)?;
            }
            batch = Some(fresh(source_id, day));
        }
        if let Some(b) = batch.as_mut() {
            for (k, values) in b.columns.iter_mut().enumerate() {
                values.push(row.get_ref(k + 2)?);
            }
        }
    }
    if let Some(last) = batch {
        each(last)?;
    }
    Ok(())
}

/// The highest keys a continuous export could take now: (last outbox entry, last snapshot
/// id, last event id).
pub fn export_heads(conn: &Connection) -> Result<[i64; 3]> {
    Ok(conn.query_row(
        "SELECT (SELECT coalesce(max(seq), 0) FROM export_outbox),
                (SELECT coalesce(max(snapshot_id), 0) FROM snapshots),
                (SELECT coalesce(max(event_id), 0) FROM events)",
        [],
        |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]),
    )?)
}

/// Where a continuous export stands: the last keys it wrote, in the order of
/// [`export_heads`] (0 before the first export).
pub fn export_cursors(conn: &Connection) -> Result<[i64; 3]> {
    use crate::read::{PARQUET_EVENTS_CURSOR, PARQUET_RUNS_CURSOR, PARQUET_SNAPSHOTS_CURSOR};
    let mut out = [0; 3];
    for (k, name) in [
        PARQUET_RUNS_CURSOR,
        PARQUET_SNAPSHOTS_CURSOR,
        PARQUET_EVENTS_CURSOR,
    ]
    .into_iter()
    .enumerate()
    {
        out[k] = conn
            .query_row(
                "SELECT seq FROM export_cursor WHERE exporter = ?1",
                [name],
                |r| r.get(0),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                e => Err(e),
            })?;
    }
    Ok(out)
}

/// Which key of [`export_heads`] selects `table`'s rows in a continuous export.
pub fn head_of(table: Table) -> usize {
    match table {
        Table::Runs | Table::Spans => 0,
        Table::Events => 2,
        _ => 1,
    }
}

/// A merged source: its id, the path it was merged from and its resource (JSON).
pub type MergedSource = (i64, String, Option<String>);

/// Where a database's rows came from: the resource (JSON) of its latest `runlens serve`
/// start, for rows its own sidecar wrote, and each merged source's (id, path, resource).
pub fn sources(conn: &Connection) -> Result<(Option<String>, Vec<MergedSource>)> {
    let own: Option<String> = conn
        .query_row(
            "SELECT resource FROM sidecar_starts WHERE source_id IS NULL
             ORDER BY started_at_ns DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let merged = conn
        .prepare("SELECT source_id, path, resource FROM merge_sources ORDER BY source_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((own, merged))
}

/// Writes batches read from files back into a database (a scratch one, for `report
/// --from`): each file source gets a `merge_sources` row and its rows carry its
/// `source_id`; snapshot ids are shifted past those already there, as `runlens merge`
/// does, except for the first source, whose ids are kept.
pub struct Importer<'c> {
    conn: &'c Connection,
    /// Snapshot id shift per source.
    shifts: HashMap<i64, i64>,
}

impl<'c> Importer<'c> {
    /// Starts importing into `conn` (one transaction per [`Importer::write`]).
    pub fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            shifts: HashMap::new(),
        }
    }

    /// Adds a source named `name` (a pod); returns its `source_id`. Its snapshots' ids
    /// will be shifted so that the smallest, `first_snapshot_id`, follows the largest
    /// already imported (kept as they are in an empty database).
    pub fn add_source(&mut self, name: &str, first_snapshot_id: Option<i64>) -> Result<i64> {
        let resource = serde_json::json!({ "runlens.source": name }).to_string();
        self.conn.execute(
            "INSERT INTO merge_sources (path, resource, merged_at_ns) VALUES (?1, ?2, 0)",
            rusqlite::params![name, resource],
        )?;
        let source_id = self.conn.last_insert_rowid();
        let next: i64 = self.conn.query_row(
            "SELECT coalesce(max(snapshot_id) + 1, 0) FROM snapshots",
            [],
            |r| r.get(0),
        )?;
        let shift = match first_snapshot_id {
            Some(first) if next > 0 => next.saturating_sub(first),
            _ => 0,
        };
        self.shifts.insert(source_id, shift);
        Ok(source_id)
    }

    /// Inserts `batch` (columns named `names`, each a stored column of `table`; others are
    /// skipped) as rows of `source_id`. A row already there (the same key twice) is kept
    /// once; returns how many rows were new.
    pub fn write(
        &self,
        table: Table,
        source_id: i64,
        names: &[&str],
        columns: &[Values],
    ) -> Result<u64> {
        let spec = table.columns();
        let picked: Vec<(usize, &Column)> = names
            .iter()
            .enumerate()
            .filter_map(|(k, name)| {
                spec.iter()
                    .find(|c| c.stored && c.name == *name)
                    .map(|c| (k, c))
            })
            .collect();
        if picked.is_empty() {
            return Ok(0);
        }
        let shift = self.shifts.get(&source_id).copied().unwrap_or(0);
        let mut list: Vec<&str> = picked.iter().map(|(_, c)| c.name).collect();
        list.push("source_id");
        let marks: Vec<String> = (1..=list.len()).map(|k| format!("?{k}")).collect();
        let sql = format!(
            "INSERT OR IGNORE INTO {} ({}) VALUES ({})",
            table.name(),
            list.join(", "),
            marks.join(", ")
        );
        // Tables without a source column (samples) take the value and ignore it.
        let sql = if has_source_column(table) {
            sql
        } else {
            let list = &list[..list.len() - 1];
            format!(
                "INSERT OR IGNORE INTO {} ({}) VALUES ({})",
                table.name(),
                list.join(", "),
                marks[..list.len()].join(", ")
            )
        };
        let rows = columns.first().map_or(0, Values::len);
        let tx = self.conn.unchecked_transaction()?;
        let mut inserted = 0;
        {
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut row: Vec<Value> = Vec::with_capacity(list.len());
            for r in 0..rows {
                row.clear();
                for (k, column) in &picked {
                    let value = columns.get(*k).map_or(Value::Null, |v| v.value(r));
                    row.push(match value {
                        Value::Integer(id) if column.snapshot_ref => {
                            Value::Integer(id.saturating_add(shift))
                        }
                        Value::Integer(id) if column.name == "snapshot_id" => {
                            Value::Integer(id.saturating_add(shift))
                        }
                        other => other,
                    });
                }
                if has_source_column(table) {
                    row.push(Value::Integer(source_id));
                }
                inserted += stmt.execute(params_from_iter(row.iter()))? as u64;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }
}

/// Whether the database table has a `source_id` column of its own.
fn has_source_column(table: Table) -> bool {
    matches!(
        table,
        Table::Snapshots | Table::Clients | Table::Runs | Table::Spans | Table::Events
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("h.db");
        crate::synthetic::build_history(&path, 3000, crate::synthetic::Effect::Planted)
            .expect("synthetic history");
        path
    }

    fn all(conn: &Connection, table: Table) -> Vec<Batch> {
        let mut out = Vec::new();
        let window = Selection::Window {
            since_ns: i64::MIN,
            until_ns: i64::MAX,
        };
        scan(conn, table, window, 1000, &mut |b| {
            out.push(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn scanned_rows_written_back_give_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let from = crate::open_read_only(&history(dir.path())).unwrap();
        let into = crate::open_for_writing(&dir.path().join("back.db"), false, None).unwrap();
        let mut importer = Importer::new(&into);
        let source = importer.add_source("pod-a", Some(1)).unwrap();
        for table in Table::ALL {
            let names: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
            for batch in all(&from, table) {
                assert!(batch.rows() <= 1000);
                importer
                    .write(table, source, &names, &batch.columns)
                    .unwrap();
            }
        }
        for table in Table::ALL {
            let count = |c: &Connection| -> i64 {
                c.query_row(&format!("SELECT count(*) FROM {}", table.name()), [], |r| {
                    r.get(0)
                })
                .unwrap()
            };
            assert_eq!(count(&from), count(&into), "{}", table.name());
        }
        let spans = |c: &Connection| -> Vec<(String, i64, Option<i64>)> {
            c.prepare("SELECT span_id, started_at_ns, start_snapshot_id FROM spans ORDER BY 1")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(spans(&from), spans(&into));
        assert!(!spans(&from).is_empty());
    }

    #[test]
    fn batches_split_at_day_boundaries_and_carry_the_days() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open_read_only(&history(dir.path())).unwrap();
        let batches = all(&conn, Table::Snapshots);
        let first_time = |b: &Batch| match &b.columns[1] {
            Values::Int(v) => v[0].unwrap(),
            other => panic!("{other:?}"),
        };
        for b in &batches {
            assert_eq!(first_time(b).div_euclid(DAY_NS), b.day);
        }
        let rows: usize = batches.iter().map(Batch::rows).sum();
        let total: i64 = conn
            .query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows as i64, total);
    }

    #[test]
    fn a_second_source_gets_its_snapshots_shifted_past_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let from = crate::open_read_only(&history(dir.path())).unwrap();
        let into = crate::open_for_writing(&dir.path().join("two.db"), false, None).unwrap();
        let mut importer = Importer::new(&into);
        let first: i64 = from
            .query_row("SELECT min(snapshot_id) FROM snapshots", [], |r| r.get(0))
            .unwrap();
        for pod in ["a", "b"] {
            let source = importer.add_source(pod, Some(first)).unwrap();
            for table in [Table::Snapshots, Table::GpuSamples] {
                let names: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
                for batch in all(&from, table) {
                    importer
                        .write(table, source, &names, &batch.columns)
                        .unwrap();
                }
            }
        }
        let (snapshots, samples, sources): (i64, i64, i64) = into
            .query_row(
                "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM gpu_samples),
                        (SELECT count(DISTINCT source_id) FROM snapshots)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let original: (i64, i64) = from
            .query_row(
                "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM gpu_samples)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((snapshots, samples), (original.0 * 2, original.1 * 2));
        assert_eq!(sources, 2);
    }
}
