//! The SQL of each request, one function per kind of row.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{
    EventRow, Finished, FinishedRun, FinishedSpan, RunEnd, RunStart, SpanEnd, SpanStart, WriteOp,
};
use super::times::SnapshotTimes;
use super::{attach, snapshot, sql_int, trace};
use crate::domain::Status;

/// Writes one request inside the caller's transaction.
pub(super) fn write_op(
    tx: &Connection,
    times: &mut SnapshotTimes,
    op: &WriteOp,
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    match op {
        WriteOp::Snapshot(s) => {
            snapshot::write_snapshot(tx, s)?;
            attach::note_sample(tx, times, s.snapshot.taken_at_ns, s.id)
        }
        WriteOp::Trace(rows) => trace::write_trace(tx, times, rows, finished),
        WriteOp::CloseRootless {
            quiet_since_ns,
            window_ns,
            reason,
        } => trace::close_rootless(tx, times, (*window_ns, *quiet_since_ns), reason, finished),
        WriteOp::StartRun(r) => {
            let sample = attach::resolve(tx, times, r.at_ns, r.snapshot, finished);
            start_run(tx, r, sample)
        }
        WriteOp::EndRun(r) => {
            let sample = attach::resolve(tx, times, r.at_ns, r.snapshot, finished);
            end_run(tx, r, sample, finished)
        }
        WriteOp::StartSpan(s) => {
            let sample = attach::resolve(tx, times, s.at_ns, s.snapshot, finished);
            start_span(tx, s, sample)
        }
        WriteOp::EndSpan(s) => {
            let sample = attach::resolve(tx, times, s.at_ns, s.snapshot, finished);
            end_span(tx, s, sample, finished)
        }
        WriteOp::Record(e) => {
            let sample = attach::resolve(tx, times, e.at_ns, e.snapshot, finished);
            record(tx, e, sample)
        }
        WriteOp::Nothing => Ok(()),
        WriteOp::ExportCursor { exporter, seq } => {
            tx.prepare_cached(
                "INSERT INTO export_cursor (exporter, seq) VALUES (?1, ?2)
                 ON CONFLICT (exporter) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![exporter, seq])?;
            Ok(())
        }
        WriteOp::ReleaseMemory => tx.execute_batch("PRAGMA shrink_memory"),
        WriteOp::ClientClock {
            client_id,
            offset_ns,
            skewed,
        } => {
            tx.prepare_cached(
                "INSERT INTO clients (client_id, committed_seq, last_seen_ns, clock_offset_ns,
                    clock_skewed)
                 VALUES (?1, 0, ?2, ?3, ?4)
                 ON CONFLICT (client_id) DO UPDATE SET
                    clock_offset_ns = excluded.clock_offset_ns,
                    clock_skewed = excluded.clock_skewed",
            )?
            .execute(params![
                client_id,
                probe_core::unix_now_ns(),
                offset_ns,
                skewed
            ])?;
            Ok(())
        }
        WriteOp::ClientStats {
            client_id,
            client_name,
            pid,
            cuda_visible_devices,
            nvidia_visible_devices,
            dropped_total,
        } => {
            tx.prepare_cached(
                "INSERT INTO clients (client_id, client_name, pid, committed_seq, last_seen_ns,
                    dropped_messages, cuda_visible_devices, nvidia_visible_devices)
                 VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7)
                 ON CONFLICT (client_id) DO UPDATE SET
                    client_name = excluded.client_name, pid = excluded.pid,
                    dropped_messages = max(dropped_messages, excluded.dropped_messages),
                    cuda_visible_devices =
                        coalesce(excluded.cuda_visible_devices, cuda_visible_devices),
                    nvidia_visible_devices =
                        coalesce(excluded.nvidia_visible_devices, nvidia_visible_devices)",
            )?
            .execute(params![
                client_id,
                client_name,
                pid,
                probe_core::unix_now_ns(),
                sql_int(*dropped_total),
                cuda_visible_devices,
                nvidia_visible_devices
            ])?;
            Ok(())
        }
    }
}

fn start_run(tx: &Connection, r: &RunStart, sample: Option<i64>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO runs (run_id, name, status, attributes, client_id,
            started_at_ns, start_snapshot_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        r.run_id,
        r.name,
        Status::Running,
        r.attributes,
        r.client_id,
        r.at_ns,
        sample
    ])?;
    Ok(())
}

/// Ends the run, and any of its spans still open (as failed: the run ended under them).
pub(super) fn end_run(
    tx: &Connection,
    r: &RunEnd,
    sample: Option<i64>,
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let name: Option<String> = tx
        .prepare_cached(
            "UPDATE runs SET status = ?2, error = ?3, ended_at_ns = ?4, end_snapshot_id = ?5,
                ended_by = ?7,
                attributes = CASE WHEN ?6 IS NULL THEN attributes
                                  ELSE json_patch(coalesce(attributes, '{}'), ?6) END
             WHERE run_id = ?1 AND status = ?8
             RETURNING name",
        )?
        .query_row(
            params![
                r.run_id,
                r.status,
                r.error,
                r.at_ns,
                sample,
                r.attributes,
                r.ended_by,
                Status::Running
            ],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(name) = name {
        finished.runs.push(FinishedRun {
            run_id: r.run_id.clone(),
            name,
            status: r.status,
        });
    }
    close_open_spans(tx, r, sample, finished)
}

/// Ends the spans of run `r` still open when it ended, as failed.
pub(super) fn close_open_spans(
    tx: &Connection,
    r: &RunEnd,
    sample: Option<i64>,
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let mut closed = tx.prepare_cached(
        "UPDATE spans SET status = ?4, error = 'run ended while span was open',
            ended_at_ns = ?2, end_snapshot_id = ?3
         WHERE run_id = ?1 AND status = ?5
         RETURNING name, ended_at_ns - started_at_ns",
    )?;
    let mut rows = closed.query(params![
        r.run_id,
        r.at_ns,
        sample,
        Status::Failed,
        Status::Running
    ])?;
    while let Some(row) = rows.next()? {
        finished.spans.push(FinishedSpan {
            name: row.get(0)?,
            status: Status::Failed,
            duration_ns: row.get(1)?,
        });
    }
    Ok(())
}

fn start_span(tx: &Connection, s: &SpanStart, sample: Option<i64>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO spans (span_id, run_id, parent_span_id, name, status,
            attributes, started_at_ns, start_snapshot_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        s.span_id,
        s.run_id,
        s.parent_span_id,
        s.name,
        Status::Running,
        s.attributes,
        s.at_ns,
        sample
    ])?;
    Ok(())
}

fn end_span(
    tx: &Connection,
    s: &SpanEnd,
    sample: Option<i64>,
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let ended: Option<(String, i64)> = tx
        .prepare_cached(
            "UPDATE spans SET status = ?2, error = ?3, ended_at_ns = ?4, end_snapshot_id = ?5,
                attributes = CASE WHEN ?6 IS NULL THEN attributes
                                  ELSE json_patch(coalesce(attributes, '{}'), ?6) END
             WHERE span_id = ?1 AND status = ?7
             RETURNING name, ended_at_ns - started_at_ns",
        )?
        .query_row(
            params![
                s.span_id,
                s.status,
                s.error,
                s.at_ns,
                sample,
                s.attributes,
                Status::Running
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((name, duration_ns)) = ended {
        finished.spans.push(FinishedSpan {
            name,
            status: s.status,
            duration_ns,
        });
    }
    Ok(())
}

fn record(tx: &Connection, e: &EventRow, sample: Option<i64>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (kind, run_id, span_id, name, value, unit, attributes,
            at_ns, snapshot_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.kind,
        e.run_id,
        e.span_id,
        e.name,
        e.value,
        e.unit,
        e.attributes,
        e.at_ns,
        sample
    ])?;
    Ok(())
}
