//! The SQL of traced spans (OTLP): one run per trace, created by the first span that
//! arrives and named, ended and given its status by the root; each span inserted once
//! (a resend is skipped, so its events and metrics are not doubled); each span's start and
//! end annotated with the stored samples nearest those instants.

use std::collections::HashSet;
use std::sync::LazyLock;

use rusqlite::{Connection, ToSql, params, params_from_iter};

use super::attach;
use super::finished::{RETURNING_FINISHED, collect_finished};
use super::rows::{Finished, FinishedRun, FinishedSpan, TraceRows, TraceSpanRow};
use super::times::SnapshotTimes;
use crate::domain::{EndedBy, Status};

/// The name a traced run has until its root span arrives.
pub const WAITING_FOR_ROOT: &str = "(root span not received yet)";

/// Writes one export's spans and senders.
pub(super) fn write_trace(
    tx: &Connection,
    times: &mut SnapshotTimes,
    rows: &TraceRows,
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let now = probe_core::unix_now_ns();
    for c in &rows.clients {
        tx.prepare_cached(
            "INSERT INTO clients (client_id, client_name, pid, committed_seq, last_seen_ns,
                resource)
             VALUES (?1, ?2, ?3, 0, ?4, ?5)
             ON CONFLICT (client_id) DO UPDATE SET
                client_name = excluded.client_name, pid = excluded.pid,
                last_seen_ns = excluded.last_seen_ns,
                resource = coalesce(excluded.resource, resource)",
        )?
        .execute(params![c.client_id, c.name, c.pid, now, c.resource])?;
    }
    let mut runs: HashSet<&str> = HashSet::new();
    // Spans with nothing hanging off them (no events or metrics, not a root) go in many
    // rows per statement; the others one by one, since what follows depends on whether
    // the span is new.
    let mut plain: Vec<PlainSpan<'_>> = Vec::new();
    for span in &rows.spans {
        let start = attach::resolve(tx, times, span.start_ns, span.snapshot, finished);
        let end = attach::resolve(tx, times, span.end_ns, span.snapshot, finished);
        if runs.insert(&span.run_id) {
            open_run(tx, span, start)?;
        }
        if span.parent_span_id.is_none() || !span.events.is_empty() {
            write_span(tx, span, (start, end), finished)?;
        } else {
            plain.push((span, start, end));
        }
    }
    write_plain_spans(tx, &plain, finished)
}

/// A span with its start and end samples.
type PlainSpan<'a> = (&'a TraceSpanRow, Option<i64>, Option<i64>);

/// The trace's run exists from its first span on (once per trace and export).
fn open_run(tx: &Connection, s: &TraceSpanRow, start: Option<i64>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO runs (run_id, name, status, client_id, started_at_ns,
            start_snapshot_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        s.run_id,
        WAITING_FOR_ROOT,
        Status::Running,
        s.client_id,
        s.start_ns,
        start
    ])?;
    Ok(())
}

/// Columns of a traced span row, and how many.
const SPAN_COLUMNS: &str = "INSERT OR IGNORE INTO spans (span_id, run_id, parent_span_id, name,
    kind, status, error, attributes, started_at_ns, ended_at_ns, start_snapshot_id,
    end_snapshot_id) VALUES ";
const SPAN_PARAMS: usize = 12;
/// Rows per multi-row INSERT.
const SPANS_PER_INSERT: usize = 32;

/// The multi-row INSERT (returning what it inserted) and the one-row INSERT, built once.
static SPAN_INSERTS: LazyLock<(String, String)> = LazyLock::new(|| {
    let row = format!("({})", ["?"; SPAN_PARAMS].join(", "));
    (
        format!(
            "{SPAN_COLUMNS}{} {RETURNING_FINISHED}",
            vec![row.as_str(); SPANS_PER_INSERT].join(", ")
        ),
        format!("{SPAN_COLUMNS}{row}"),
    )
});

/// Spans nothing else depends on, [`SPANS_PER_INSERT`] rows per statement (a resend is
/// ignored row by row).
fn write_plain_spans(
    tx: &Connection,
    spans: &[PlainSpan<'_>],
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let (full, single) = &*SPAN_INSERTS;
    for chunk in spans.chunks(SPANS_PER_INSERT) {
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * SPAN_PARAMS);
        for (s, start, end) in chunk {
            values.extend([
                &s.span_id as &dyn ToSql,
                &s.run_id,
                &s.parent_span_id,
                &s.name,
                &s.kind,
                &s.status,
                &s.error,
                &s.attributes,
                &s.start_ns,
                &s.end_ns,
                start,
                end,
            ]);
        }
        if chunk.len() == SPANS_PER_INSERT {
            collect_finished(
                &mut tx.prepare_cached(full)?,
                params_from_iter(values),
                finished,
            )?;
        } else {
            let mut one = tx.prepare_cached(single)?;
            for (row, (s, _, _)) in values.chunks(SPAN_PARAMS).zip(chunk) {
                if one.execute(params_from_iter(row))? > 0 {
                    finished.spans.push(finished_span(s));
                }
            }
        }
    }
    Ok(())
}

/// A span that is a root or carries events: written alone, its events and the run's
/// update only with its first arrival.
fn finished_span(s: &TraceSpanRow) -> FinishedSpan {
    FinishedSpan {
        name: s.name.clone(),
        status: s.status,
        duration_ns: s.end_ns - s.start_ns,
    }
}

fn write_span(
    tx: &Connection,
    s: &TraceSpanRow,
    (start, end): (Option<i64>, Option<i64>),
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let inserted = tx.prepare_cached(&SPAN_INSERTS.1)?.execute(params![
        s.span_id,
        s.run_id,
        s.parent_span_id,
        s.name,
        s.kind,
        s.status,
        s.error,
        s.attributes,
        s.start_ns,
        s.end_ns,
        start,
        end
    ])?;
    if inserted == 0 {
        return Ok(()); // a resend: everything below was written with the first arrival
    }
    finished.spans.push(finished_span(s));
    for e in &s.events {
        tx.prepare_cached(
            "INSERT INTO events (kind, run_id, span_id, name, value, unit, attributes, at_ns,
                snapshot_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            e.kind,
            s.run_id,
            s.span_id,
            e.name,
            e.value,
            e.unit,
            e.attributes,
            e.at_ns,
            end
        ])?;
    }
    if s.parent_span_id.is_none() {
        // The root: the run is what it says, whenever it arrives (even after the run was
        // closed for want of it).
        tx.prepare_cached(
            "UPDATE runs SET name = ?2, status = ?3, error = ?4, attributes = ?5,
                started_at_ns = ?6, ended_at_ns = ?7, start_snapshot_id = ?8,
                end_snapshot_id = ?9, ended_by = ?10
             WHERE run_id = ?1",
        )?
        .execute(params![
            s.run_id,
            s.name,
            s.status,
            s.error,
            s.attributes,
            s.start_ns,
            s.end_ns,
            start,
            end,
            EndedBy::Client
        ])?;
        finished.runs.push(FinishedRun {
            run_id: s.run_id.clone(),
            name: s.name.clone(),
            status: s.status,
        });
    }
    Ok(())
}

/// Ends, as failed, the traced runs still waiting for their root whose last span ended
/// before `quiet_since_ns`; each ends when its last span ended, with the sample nearest.
pub(super) fn close_rootless(
    tx: &Connection,
    times: &mut SnapshotTimes,
    (window_ns, quiet_since_ns): (i64, i64),
    reason: &str,
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    // Traced runs are the open runs of `otlp/` clients: a range of the partial index of
    // open runs by client.
    let quiet: Vec<(String, i64)> = tx
        .prepare_cached(
            "SELECT r.run_id, coalesce(max(s.ended_at_ns), r.started_at_ns) AS last_ns
             FROM runs r LEFT JOIN spans s ON s.run_id = r.run_id
             WHERE r.status = 'running' AND r.client_id >= 'otlp/' AND r.client_id < 'otlp0'
             GROUP BY r.run_id HAVING last_ns < ?1",
        )?
        .query_map([quiet_since_ns], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (run_id, last_ns) in &quiet {
        let ended = tx
            .prepare_cached(
                "UPDATE runs SET status = ?2, error = ?3, ended_at_ns = ?4, end_snapshot_id = ?5,
                ended_by = ?6
             WHERE run_id = ?1 AND status = ?7",
            )?
            .execute(params![
                run_id,
                Status::Failed,
                reason,
                last_ns,
                times.nearest(tx, *last_ns, window_ns),
                EndedBy::RootMissing,
                Status::Running
            ])?;
        if ended > 0 {
            finished.runs.push(FinishedRun {
                run_id: run_id.clone(),
                name: WAITING_FOR_ROOT.to_owned(),
                status: Status::Failed,
            });
        }
    }
    if !quiet.is_empty() {
        tracing::warn!(runs = quiet.len(), %reason, "ended traced runs whose root span never arrived");
    }
    Ok(())
}
