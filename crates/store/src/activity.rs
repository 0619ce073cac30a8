//! The live state `WatchActivity` sends (`runlens top` shows it): agents heard from lately,
//! runs open now with their open spans, and the latest failed runs. Every read is bounded
//! (index ranges and limits), so a watcher costs the same on a day-old and a year-old
//! database.

use rusqlite::{OptionalExtension, params};

use super::Result;
use super::read::Reader;
use super::unsigned;

/// At most this many clients, open runs and open spans per run are read.
pub const MAX_CLIENTS: usize = 100;
/// See [`MAX_CLIENTS`].
pub const MAX_OPEN_RUNS: usize = 100;
/// See [`MAX_CLIENTS`].
pub const MAX_OPEN_SPANS: usize = 50;
/// At most this many failed runs, from the last [`FAILURES_WITHIN_NS`].
pub const MAX_FAILURES: usize = 10;
/// Failed runs older than this are not "recent".
pub const FAILURES_WITHIN_NS: i64 = 3_600_000_000_000;
/// Clients heard from within this are listed.
pub const CLIENTS_WITHIN_NS: i64 = 60_000_000_000;
/// How far before a failed run's end its GPU memory counts (the report's rule).
const OOM_LOOKBACK_NS: i64 = crate::OOM_LOOKBACK_NS;

/// An agent heard from lately.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRow {
    /// Its id.
    pub client_id: String,
    /// Its name.
    pub client_name: Option<String>,
    /// Its process id.
    pub pid: Option<u32>,
    /// Its last message.
    pub last_seen_ns: i64,
    /// Messages it dropped.
    pub dropped_messages: u64,
    /// Its clock's estimated offset, ns, once known.
    pub clock_offset_ns: Option<i64>,
    /// Whether that offset is beyond the matching window.
    pub clock_skewed: bool,
}

/// A run open now.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenRunRow {
    /// Its id.
    pub run_id: String,
    /// Its name.
    pub name: String,
    /// Who opened it.
    pub client_id: Option<String>,
    /// Its start.
    pub started_at_ns: i64,
    /// GPU free memory per GPU in its start sample.
    pub start_gpu_free: Vec<(u32, u64)>,
    /// Its open spans, oldest first.
    pub open_spans: Vec<OpenSpanRow>,
}

/// A span open now.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenSpanRow {
    /// Its id.
    pub span_id: String,
    /// Its parent.
    pub parent_span_id: Option<String>,
    /// Its name.
    pub name: String,
    /// Its start.
    pub started_at_ns: i64,
    /// GPU free memory per GPU in its start sample.
    pub start_gpu_free: Vec<(u32, u64)>,
}

/// A run that ended failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRunRow {
    /// Its id.
    pub run_id: String,
    /// Its name.
    pub name: String,
    /// Its error.
    pub error: Option<String>,
    /// Its end.
    pub ended_at_ns: i64,
    /// Least GPU free memory at its end or in its last seconds.
    pub gpu_free_min_bytes: Option<u64>,
}

/// The whole live state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityRows {
    /// Agents heard from lately, most recent first.
    pub clients: Vec<ClientRow>,
    /// Runs open now, newest first.
    pub open_runs: Vec<OpenRunRow>,
    /// Open runs beyond those listed.
    pub more_open_runs: u32,
    /// Latest failed runs, newest first.
    pub failures: Vec<FailedRunRow>,
}

impl Reader {
    /// The live state as of `now_ns`.
    pub fn activity(&self, now_ns: i64) -> Result<ActivityRows> {
        let conn = &self.conn;
        let clients = conn
            .prepare_cached(
                "SELECT client_id, client_name, pid, last_seen_ns, dropped_messages,
                        clock_offset_ns, clock_skewed
                 FROM clients WHERE last_seen_ns >= ?1 ORDER BY last_seen_ns DESC LIMIT ?2",
            )?
            .query_map(
                params![now_ns - CLIENTS_WITHIN_NS, MAX_CLIENTS as i64],
                |r| {
                    Ok(ClientRow {
                        client_id: r.get(0)?,
                        client_name: r.get(1)?,
                        pid: r.get(2)?,
                        last_seen_ns: r.get(3)?,
                        dropped_messages: unsigned(r.get(4)?).unwrap_or(0),
                        clock_offset_ns: r.get(5)?,
                        clock_skewed: r.get(6)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // `runs_open` (schema 10) holds only open runs: these reads never scan ended ones.
        let total_open: i64 = conn
            .prepare_cached("SELECT count(*) FROM runs WHERE ended_at_ns IS NULL")?
            .query_row([], |r| r.get(0))?;
        let runs = conn
            .prepare_cached(
                "SELECT run_id, name, client_id, started_at_ns, start_snapshot_id FROM runs
                 WHERE ended_at_ns IS NULL ORDER BY started_at_ns DESC LIMIT ?1",
            )?
            .query_map([MAX_OPEN_RUNS as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut open_runs = Vec::with_capacity(runs.len());
        for (run_id, name, client_id, started_at_ns, snapshot) in runs {
            let open_spans = self.open_spans(&run_id)?;
            open_runs.push(OpenRunRow {
                start_gpu_free: self.gpu_free(snapshot)?,
                run_id,
                name,
                client_id,
                started_at_ns,
                open_spans,
            });
        }
        Ok(ActivityRows {
            more_open_runs: u32::try_from(total_open.max(0) as usize - open_runs.len())
                .unwrap_or(u32::MAX),
            clients,
            open_runs,
            failures: self.failures(now_ns)?,
        })
    }

    fn open_spans(&self, run_id: &str) -> Result<Vec<OpenSpanRow>> {
        let spans = self
            .conn
            .prepare_cached(
                "SELECT span_id, parent_span_id, name, started_at_ns, start_snapshot_id
                 FROM spans WHERE run_id = ?1 AND ended_at_ns IS NULL
                 ORDER BY started_at_ns LIMIT ?2",
            )?
            .query_map(params![run_id, MAX_OPEN_SPANS as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        spans
            .into_iter()
            .map(|(span_id, parent_span_id, name, started_at_ns, snapshot)| {
                Ok(OpenSpanRow {
                    start_gpu_free: self.gpu_free(snapshot)?,
                    span_id,
                    parent_span_id,
                    name,
                    started_at_ns,
                })
            })
            .collect()
    }

    /// GPU free memory per GPU in one sample.
    fn gpu_free(&self, snapshot_id: Option<i64>) -> Result<Vec<(u32, u64)>> {
        let Some(id) = snapshot_id else {
            return Ok(Vec::new());
        };
        Ok(self
            .conn
            .prepare_cached(
                "SELECT gpu_index, memory_free_bytes FROM gpu_samples
                 WHERE snapshot_id = ?1 AND memory_free_bytes IS NOT NULL ORDER BY gpu_index",
            )?
            .query_map([id], |r| Ok((r.get(0)?, unsigned(r.get(1)?))))?
            .filter_map(|row| match row {
                Ok((index, Some(free))) => Some(Ok((index, free))),
                Ok((_, None)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The latest failed runs of the last hour, each with its least GPU free memory at
    /// its end or in the seconds before (while it ran).
    fn failures(&self, now_ns: i64) -> Result<Vec<FailedRunRow>> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT run_id, name, error, started_at_ns, ended_at_ns, end_snapshot_id
                 FROM runs WHERE ended_at_ns >= ?1 AND status = 'failed'
                 ORDER BY ended_at_ns DESC LIMIT ?2",
            )?
            .query_map(
                params![now_ns - FAILURES_WITHIN_NS, MAX_FAILURES as i64],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut least = self.conn.prepare_cached(
            "SELECT min(memory_free_bytes) FROM gpu_samples
             WHERE snapshot_id = ?1
                OR snapshot_id IN (SELECT snapshot_id FROM snapshots
                                   WHERE taken_at_ns BETWEEN ?2 AND ?3)",
        )?;
        rows.into_iter()
            .map(|(run_id, name, error, started, ended, end_snapshot)| {
                let since = (ended - OOM_LOOKBACK_NS).max(started);
                let free: Option<i64> = least
                    .query_row(params![end_snapshot.unwrap_or(-1), since, ended], |r| {
                        r.get(0)
                    })
                    .optional()?
                    .flatten();
                Ok(FailedRunRow {
                    run_id,
                    name,
                    error,
                    ended_at_ns: ended,
                    gpu_free_min_bytes: unsigned(free),
                })
            })
            .collect()
    }
}
