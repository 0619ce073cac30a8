//! How a batch of requests becomes one transaction: snapshots first, spans that start
//! and end in the same batch merged into one complete row, every session client's progress
//! committed with the rows it covers; and, when the database refuses a row, the others
//! written one by one.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, params};

use super::finished::{RETURNING_FINISHED, collect_finished};
use super::rows::{Finished, FinishedRun, RunEnd, RunStart, SpanEnd, SpanStart, WriteOp};
use super::times::SnapshotTimes;
use super::{Ack, Request, attach, ops, snapshot, sql_int};

pub(super) fn write_one_by_one(
    conn: &mut Connection,
    times: &mut SnapshotTimes,
    batch: &[Request],
    finished: &mut Finished,
    outbox: bool,
) -> rusqlite::Result<()> {
    let mut tx = conn.transaction()?;
    for req in batch {
        let sp = tx.savepoint()?;
        let mut this = Finished::default();
        match ops::write_op(&sp, times, &req.op, &mut this) {
            Ok(()) => {
                sp.commit()?;
                finished.spans.append(&mut this.spans);
                finished.runs.append(&mut this.runs);
            }
            Err(e) => tracing::error!(error = %e, op = ?req.op, "request not stored"),
        }
    }
    record_client_progress(&tx, batch)?;
    if outbox {
        record_outbox(&tx, finished)?;
    }
    tx.commit()
}

/// Runs that ended in this transaction join the export outbox, in the same transaction.
fn record_outbox(tx: &rusqlite::Transaction<'_>, finished: &Finished) -> rusqlite::Result<()> {
    if finished.runs.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached("INSERT INTO export_outbox (run_id) VALUES (?1)")?;
    for run in &finished.runs {
        stmt.execute([&run.run_id])?;
    }
    Ok(())
}

pub(super) fn write_batch(
    conn: &mut Connection,
    times: &mut SnapshotTimes,
    batch: &[Request],
    finished: &mut Finished,
    outbox: bool,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    // A span that starts and ends within one batch (most spans, at high volume) is
    // inserted once, complete, instead of inserted and then updated.
    let ends: HashMap<&str, &SpanEnd> = batch
        .iter()
        .filter_map(|r| match &r.op {
            WriteOp::EndSpan(e) => Some((e.span_id.as_str(), e)),
            _ => None,
        })
        .collect();
    let mut completed: Vec<(&SpanStart, &SpanEnd)> = Vec::new();
    let mut completed_ids: HashSet<&str> = HashSet::new();
    // So is a run (a short task, at any volume above a few runs a second).
    let run_ends: HashMap<&str, &RunEnd> = batch
        .iter()
        .filter_map(|r| match &r.op {
            WriteOp::EndRun(e) => Some((e.run_id.as_str(), e)),
            _ => None,
        })
        .collect();
    // Each completed run's end sample, found once (a second look would count twice), and
    // whether its row is new in this transaction.
    let mut completed_runs: HashMap<&str, (Option<i64>, bool)> = HashMap::new();
    // Runs with a span started in this batch and not ended in it: open when the run ends.
    let mut open_spans_of: HashSet<&str> = HashSet::new();
    // Snapshots first: rows of this batch may refer to any of them, and a completed span
    // refers to its end snapshot at its start's place.
    for req in batch {
        if let WriteOp::Snapshot(snapshot) = &req.op {
            snapshot::write_snapshot(&tx, snapshot)?;
            attach::note_sample(&tx, times, snapshot.snapshot.taken_at_ns, snapshot.id)?;
        }
    }
    for req in batch {
        match &req.op {
            WriteOp::Snapshot(_) => continue,
            WriteOp::StartSpan(start) => {
                if let Some(end) = ends.get(start.span_id.as_str()) {
                    completed.push((start, end));
                    completed_ids.insert(start.span_id.as_str());
                    continue;
                }
                open_spans_of.insert(start.run_id.as_str());
            }
            WriteOp::EndSpan(end) if completed_ids.contains(end.span_id.as_str()) => continue,
            WriteOp::StartRun(start) => {
                if let Some(end) = run_ends.get(start.run_id.as_str()) {
                    let written = write_complete_run(&tx, times, start, end, finished)?;
                    completed_runs.insert(start.run_id.as_str(), written);
                    continue;
                }
            }
            WriteOp::EndRun(end) => {
                if let Some(&(end_sample, new)) = completed_runs.get(end.run_id.as_str()) {
                    // Stored already; what remains is to end its spans still open then. A
                    // run new in this transaction has no spans but this batch's: unless one
                    // of them is open, there is nothing to look for.
                    if !new || open_spans_of.contains(end.run_id.as_str()) {
                        ops::close_open_spans(&tx, end, end_sample, finished)?;
                    }
                    continue;
                }
            }
            _ => {}
        }
        ops::write_op(&tx, times, &req.op, finished)?;
    }
    // Completed spans go in last, many rows per statement. Nothing else in the batch
    // depends on them: later rows of the batch only ever update spans still running.
    write_complete_spans(&tx, times, &completed, finished)?;
    record_client_progress(&tx, batch)?;
    if outbox {
        record_outbox(&tx, finished)?;
    }
    tx.commit()
}

/// The multi-row and the one-row INSERT of completed spans, built once.
static COMPLETE_SPAN_INSERTS: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| {
        let columns = "INSERT OR IGNORE INTO spans (span_id, run_id, parent_span_id, name, \
            status, error, attributes, started_at_ns, ended_at_ns, start_snapshot_id, \
            end_snapshot_id) VALUES ";
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        (
            format!(
                "{columns}{} {RETURNING_FINISHED}",
                vec![row; SPANS_PER_INSERT].join(", ")
            ),
            format!("{columns}{row} {RETURNING_FINISHED}"),
        )
    });

/// Rows per multi-row INSERT of completed spans (11 parameters each).
const SPANS_PER_INSERT: usize = 32;

/// Inserts spans whose start and end are both at hand, `SPANS_PER_INSERT` per statement:
/// one statement step instead of 32 is most of the writer's per-span cost.
fn write_complete_spans(
    tx: &rusqlite::Connection,
    times: &mut SnapshotTimes,
    spans: &[(&SpanStart, &SpanEnd)],
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let (full, single) = &*COMPLETE_SPAN_INSERTS;
    for chunk in spans.chunks(SPANS_PER_INSERT) {
        let samples: Vec<(Option<i64>, Option<i64>)> = chunk
            .iter()
            .map(|(s, e)| {
                (
                    attach::resolve(tx, times, s.at_ns, s.snapshot, finished),
                    attach::resolve(tx, times, e.at_ns, e.snapshot, finished),
                )
            })
            .collect();
        let attributes: Vec<Option<String>> = chunk
            .iter()
            .map(|(s, e)| merge_attributes(s.attributes.as_deref(), e.attributes.as_deref()))
            .collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 11);
        for (((start, end), attrs), (start_sample, end_sample)) in
            chunk.iter().zip(&attributes).zip(&samples)
        {
            values.extend([
                &start.span_id as &dyn rusqlite::ToSql,
                &start.run_id,
                &start.parent_span_id,
                &start.name,
                &end.status,
                &end.error,
                attrs,
                &start.at_ns,
                &end.at_ns,
                start_sample,
                end_sample,
            ]);
        }
        if chunk.len() == SPANS_PER_INSERT {
            let mut stmt = tx.prepare_cached(full)?;
            collect_finished(&mut stmt, rusqlite::params_from_iter(values), finished)?;
        } else {
            let mut one = tx.prepare_cached(single)?;
            for row in values.chunks(11) {
                collect_finished(&mut one, rusqlite::params_from_iter(row), finished)?;
            }
        }
    }
    Ok(())
}

/// Inserts a run whose start and end are both in the batch, complete: one INSERT instead of
/// an INSERT and an UPDATE that moves it through the open-run indexes. A run id already
/// stored (nothing inserted) is ended as the UPDATE would have. Returns the end's sample
/// and whether the row was inserted.
fn write_complete_run(
    tx: &rusqlite::Connection,
    times: &mut SnapshotTimes,
    start: &RunStart,
    end: &RunEnd,
    finished: &mut Finished,
) -> rusqlite::Result<(Option<i64>, bool)> {
    let start_sample = attach::resolve(tx, times, start.at_ns, start.snapshot, finished);
    let end_sample = attach::resolve(tx, times, end.at_ns, end.snapshot, finished);
    let attributes = merge_attributes(start.attributes.as_deref(), end.attributes.as_deref());
    // Counted with `execute`, not `RETURNING`: each `RETURNING` builds a temporary table.
    let inserted =
        tx.prepare_cached(
            "INSERT OR IGNORE INTO runs (run_id, name, status, error, attributes, client_id,
                started_at_ns, ended_at_ns, start_snapshot_id, end_snapshot_id, ended_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(rusqlite::params![
            start.run_id,
            start.name,
            end.status,
            end.error,
            attributes,
            start.client_id,
            start.at_ns,
            end.at_ns,
            start_sample,
            end_sample,
            end.ended_by
        ])? == 1;
    if inserted {
        finished.runs.push(FinishedRun {
            run_id: start.run_id.clone(),
            name: start.name.clone(),
            status: end.status,
        });
    } else {
        ops::end_run(tx, end, end_sample, finished)?;
    }
    Ok((end_sample, inserted))
}

/// Start attributes with end attributes laid over them (the same as SQL `json_patch` for
/// flat string maps).
fn merge_attributes(start: Option<&str>, end: Option<&str>) -> Option<String> {
    let Some(end) = end else {
        return start.map(str::to_owned);
    };
    let parse = |t: &str| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(t).unwrap_or_default()
    };
    let mut merged = start.map(parse).unwrap_or_default();
    merged.extend(parse(end));
    serde_json::to_string(&merged).ok()
}

/// Each session client's highest sequence number in the batch, stored in the same
/// transaction as the rows: a restarted sidecar knows exactly what it has.
fn record_client_progress(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Request],
) -> rusqlite::Result<()> {
    let mut client_seq: HashMap<&str, u64> = HashMap::new();
    for req in batch {
        if let Ack::Session { client_id, seq, .. } = &req.ack {
            let entry = client_seq.entry(client_id).or_default();
            *entry = (*entry).max(*seq);
        }
    }
    if !client_seq.is_empty() {
        let now = probe_core::unix_now_ns();
        let mut stmt = tx.prepare_cached(
            "INSERT INTO clients (client_id, committed_seq, last_seen_ns) VALUES (?1, ?2, ?3)
             ON CONFLICT (client_id) DO UPDATE SET
                committed_seq = max(committed_seq, excluded.committed_seq),
                last_seen_ns = excluded.last_seen_ns",
        )?;
        for (client, seq) in client_seq {
            stmt.execute(params![client, sql_int(seq), now])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::watch;

    use crate::domain::{EndedBy, Status};
    use crate::writer::SessionProgress;
    use crate::writer::rows::{FinishedSpan, RunEnd, RunStart, SampleRef, StoredSnapshot};

    fn snapshot(id: i64) -> WriteOp {
        let host = crate::test_fixtures::host_snapshot();
        WriteOp::Snapshot(Arc::new(StoredSnapshot {
            id,
            reason: "interval",
            snapshot: probe_core::Snapshot {
                taken_at_ns: id,
                host,
                gpu: probe_core::GpuSnapshot::unavailable("none in this test"),
                cgroup: None,
                processes: vec![],
            },
            taken: Instant::now(),
        }))
    }

    fn request(op: WriteOp) -> Request {
        Request { op, ack: Ack::None }
    }

    fn start_span(span_id: &str, at_ns: i64, attributes: Option<&str>) -> WriteOp {
        WriteOp::StartSpan(SpanStart {
            span_id: span_id.into(),
            run_id: "r".into(),
            parent_span_id: None,
            name: "step".into(),
            attributes: attributes.map(str::to_owned),
            at_ns,
            snapshot: SampleRef::Taken(1),
        })
    }

    fn end_span(span_id: &str, at_ns: i64, attributes: Option<&str>) -> WriteOp {
        WriteOp::EndSpan(SpanEnd {
            span_id: span_id.into(),
            status: Status::Ok,
            error: None,
            attributes: attributes.map(str::to_owned),
            at_ns,
            snapshot: SampleRef::Taken(2),
        })
    }

    /// Writes a batch in one transaction; returns what it finished.
    fn write(conn: &mut Connection, batch: &[Request]) -> rusqlite::Result<Finished> {
        let mut finished = Finished::default();
        write_batch(
            conn,
            &mut SnapshotTimes::default(),
            batch,
            &mut finished,
            true,
        )?;
        Ok(finished)
    }

    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open_for_writing(&dir.path().join("t.db"), false, None).unwrap();
        (dir, conn)
    }

    type SpanState = (Status, Option<i64>, Option<i64>, Option<String>);

    fn span(conn: &Connection, span_id: &str) -> SpanState {
        conn.query_row(
            "SELECT status, ended_at_ns, end_snapshot_id, attributes FROM spans WHERE span_id = ?1",
            [span_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
    }

    #[test]
    fn a_boundary_gets_the_sample_nearest_its_own_time_even_one_stored_after_it() {
        let (_dir, mut conn) = database();
        let mut times = SnapshotTimes::default();
        let mut write_with_times = |batch: &[Request]| {
            let mut finished = Finished::default();
            write_batch(&mut conn, &mut times, batch, &mut finished, false).unwrap();
            finished
        };
        let near = SampleRef::Nearest { window_ns: 1000 };
        let run = WriteOp::StartRun(RunStart {
            run_id: "r".into(),
            name: "run".into(),
            attributes: None,
            client_id: None,
            at_ns: 900,
            snapshot: near,
        });
        let at = |span_id: &str, at_ns: i64| {
            request(WriteOp::StartSpan(SpanStart {
                snapshot: near,
                ..match start_span(span_id, at_ns, None) {
                    WriteOp::StartSpan(s) => s,
                    _ => unreachable!(),
                }
            }))
        };
        // Samples at 1000 and 2000 (ids are their times in these tests); boundaries
        // recorded before the second was stored refer to the first.
        let first = write_with_times(&[
            request(snapshot(1000)),
            request(run),
            at("early", 1400),
            at("late", 1800),
        ]);
        assert_eq!((first.matched, first.unmatched), (3, 0));
        let second =
            write_with_times(&[request(snapshot(2000)), at("after", 2100), at("far", 3500)]);
        assert_eq!(
            (second.matched, second.unmatched),
            (1, 1),
            "3500 is 1500 from 2000"
        );
        // A sample stored late, between two others, takes over what lies nearer to it.
        write_with_times(&[request(snapshot(1500))]);
        let start = |id: &str| -> Option<i64> {
            conn.query_row(
                "SELECT start_snapshot_id FROM spans WHERE span_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(start("early"), Some(1500), "1400: nearer 1500 than 1000");
        assert_eq!(start("late"), Some(2000), "1800: nearer 2000 than 1500");
        assert_eq!(start("after"), Some(2000));
        assert_eq!(start("far"), None, "outside the window of every sample");
        let run_start: Option<i64> = conn
            .query_row("SELECT start_snapshot_id FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(run_start, Some(1000));
    }

    #[test]
    fn a_boundary_moved_onto_a_sample_moves_again_to_one_stored_later_between_them() {
        let (_dir, mut conn) = database();
        let mut times = SnapshotTimes::default();
        let near = SampleRef::Nearest { window_ns: 1000 };
        let run = WriteOp::StartRun(RunStart {
            run_id: "r".into(),
            name: "run".into(),
            attributes: None,
            client_id: None,
            at_ns: 1000,
            snapshot: near,
        });
        let span = WriteOp::StartSpan(SpanStart {
            snapshot: near,
            ..match start_span("s", 1900, None) {
                WriteOp::StartSpan(s) => s,
                _ => unreachable!(),
            }
        });
        let mut write_then_start = |batch: &[Request]| -> Option<i64> {
            write_batch(
                &mut conn,
                &mut times,
                batch,
                &mut Finished::default(),
                false,
            )
            .unwrap();
            conn.query_row("SELECT start_snapshot_id FROM spans", [], |r| r.get(0))
                .unwrap()
        };
        let first = [request(snapshot(1000)), request(run), request(span)];
        assert_eq!(write_then_start(&first), Some(1000));
        // 1900 is nearer 2000 than 1000: moved when 2000 is stored; then nearer 1950,
        // stored later still, though no row was ever matched to 2000 directly.
        assert_eq!(write_then_start(&[request(snapshot(2000))]), Some(2000));
        assert_eq!(write_then_start(&[request(snapshot(1950))]), Some(1950));
        // Nothing lies past the midpoint towards a sample stored far later: nothing moves.
        assert_eq!(write_then_start(&[request(snapshot(5000))]), Some(1950));
    }

    #[test]
    fn a_run_started_and_ended_in_one_batch_is_one_complete_row_that_ends_its_open_spans() {
        let (_dir, mut conn) = database();
        let start = WriteOp::StartRun(RunStart {
            run_id: "r".into(),
            name: "task".into(),
            attributes: Some(r#"{"model":"a","tries":"1"}"#.into()),
            client_id: Some("c".into()),
            at_ns: 10,
            snapshot: SampleRef::Nearest { window_ns: 1000 },
        });
        let end = WriteOp::EndRun(RunEnd {
            run_id: "r".into(),
            status: Status::Failed,
            error: Some("tool failed".into()),
            ended_by: EndedBy::Client,
            attributes: Some(r#"{"tries":"2"}"#.into()),
            at_ns: 90,
            snapshot: SampleRef::Nearest { window_ns: 1000 },
        });
        let finished = write(
            &mut conn,
            &[
                request(snapshot(1)),
                request(snapshot(2)),
                request(start),
                request(start_span("open", 20, None)),
                request(start_span("done", 30, None)),
                request(end_span("done", 40, None)),
                request(end),
            ],
        )
        .unwrap();
        type RunRow = (
            Status,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            String,
            String,
        );
        let row: RunRow = conn
            .query_row(
                "SELECT status, error, ended_at_ns, start_snapshot_id, end_snapshot_id,
                        attributes, ended_by FROM runs WHERE run_id = 'r'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            row,
            (
                Status::Failed,
                Some("tool failed".into()),
                Some(90),
                Some(2),
                Some(2),
                r#"{"model":"a","tries":"2"}"#.into(),
                "client".into()
            )
        );
        assert_eq!(finished.runs.len(), 1, "counted once");
        assert_eq!(
            (finished.matched, finished.unmatched),
            (2, 0),
            "its start and its end matched to the nearest sample, each once"
        );
        assert_eq!(finished.runs[0].status, Status::Failed);
        // The span the run ended under is failed at the run's end; the other is complete.
        assert_eq!(
            span(&conn, "open"),
            (Status::Failed, Some(90), Some(2), None)
        );
        assert_eq!(span(&conn, "done"), (Status::Ok, Some(40), Some(2), None));
        let outbox: i64 = conn
            .query_row("SELECT count(*) FROM export_outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            outbox, 1,
            "it joins the export outbox in the same transaction"
        );
    }

    #[test]
    fn a_run_started_again_in_a_later_batch_still_ends_the_spans_an_earlier_batch_left_open() {
        let (_dir, mut conn) = database();
        let start = || {
            WriteOp::StartRun(RunStart {
                run_id: "r".into(),
                name: "task".into(),
                attributes: None,
                client_id: None,
                at_ns: 10,
                snapshot: SampleRef::Taken(1),
            })
        };
        write(
            &mut conn,
            &[
                request(snapshot(1)),
                request(start()),
                request(start_span("open", 20, None)),
            ],
        )
        .unwrap();
        // The same run's start and end in one batch: its row exists already, so its open
        // span (from the earlier batch) must be looked for and ended.
        let end = WriteOp::EndRun(RunEnd {
            run_id: "r".into(),
            status: Status::Ok,
            error: None,
            ended_by: EndedBy::Client,
            attributes: None,
            at_ns: 90,
            snapshot: SampleRef::Taken(1),
        });
        let finished = write(&mut conn, &[request(start()), request(end)]).unwrap();
        assert_eq!(
            span(&conn, "open"),
            (Status::Failed, Some(90), Some(1), None)
        );
        assert_eq!(finished.runs.len(), 1, "the run ended once");
        assert_eq!(
            finished.spans.len(),
            1,
            "its open span ended with it, counted once"
        );
    }

    #[test]
    fn a_span_started_and_ended_in_one_batch_is_one_complete_row_and_others_are_updated_later() {
        let (_dir, mut conn) = database();
        let start = WriteOp::StartRun(RunStart {
            run_id: "r".into(),
            name: "run".into(),
            attributes: None,
            client_id: None,
            at_ns: 1,
            snapshot: SampleRef::Taken(1),
        });
        // More complete spans than one multi-row INSERT holds, so both statements run.
        let mut first = vec![request(snapshot(1)), request(snapshot(2)), request(start)];
        for i in 0..40 {
            first.push(request(start_span(
                &format!("s{i}"),
                10,
                Some(r#"{"a":"1"}"#),
            )));
            first.push(request(end_span(
                &format!("s{i}"),
                20,
                Some(r#"{"b":"2"}"#),
            )));
        }
        first.push(request(start_span("open", 11, None)));
        let finished = write(&mut conn, &first).unwrap();
        // What the counters see: the 40 complete spans, each once, with its duration.
        assert_eq!(finished.spans.len(), 40);
        assert!(
            finished
                .spans
                .iter()
                .all(|f| f.name == "step" && f.duration_ns == 10)
        );
        for i in [0, 31, 32, 39] {
            assert_eq!(
                span(&conn, &format!("s{i}")),
                (
                    Status::Ok,
                    Some(20),
                    Some(2),
                    Some(r#"{"a":"1","b":"2"}"#.into())
                )
            );
        }
        assert_eq!(span(&conn, "open"), (Status::Running, None, None, None));
        let finished = write(&mut conn, &[request(end_span("open", 30, None))]).unwrap();
        assert_eq!(span(&conn, "open"), (Status::Ok, Some(30), Some(2), None));
        assert_eq!(finished.spans[0].duration_ns, 19);
        // Ending it again finishes nothing.
        let again = write(&mut conn, &[request(end_span("open", 31, None))]).unwrap();
        assert!(again.spans.is_empty());
        let end = WriteOp::EndRun(RunEnd {
            run_id: "r".into(),
            status: Status::Failed,
            error: Some("boom".into()),
            ended_by: EndedBy::ProcessExit,
            attributes: None,
            at_ns: 40,
            snapshot: SampleRef::Taken(2),
        });
        let finished = write(
            &mut conn,
            &[request(start_span("late", 35, None)), request(end)],
        )
        .unwrap();
        assert_eq!(
            finished.runs,
            [FinishedRun {
                run_id: "r".into(),
                name: "run".into(),
                status: Status::Failed
            }]
        );
        assert_eq!(
            finished.spans,
            [FinishedSpan {
                name: "step".into(),
                status: Status::Failed,
                duration_ns: 5
            }]
        );
        assert_eq!(span(&conn, "late").0, Status::Failed, "closed with its run");
        let (status, ended_by): (Status, EndedBy) = conn
            .query_row(
                "SELECT status, ended_by FROM runs WHERE run_id = 'r'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status, ended_by), (Status::Failed, EndedBy::ProcessExit));
    }

    #[test]
    fn each_session_clients_highest_sequence_number_is_committed_with_the_batch() {
        let (_dir, mut conn) = database();
        let progress = Arc::new(watch::channel(SessionProgress::default()).0);
        let ack = |client: &str, seq| Ack::Session {
            client_id: Arc::from(client),
            progress: progress.clone(),
            seq,
        };
        let batch = vec![
            Request {
                op: WriteOp::Nothing,
                ack: ack("a", 7),
            },
            Request {
                op: WriteOp::Nothing,
                ack: ack("a", 5),
            },
            Request {
                op: WriteOp::Nothing,
                ack: ack("b", 3),
            },
        ];
        write(&mut conn, &batch).unwrap();
        let seq = |conn: &Connection, client: &str| -> i64 {
            conn.query_row(
                "SELECT committed_seq FROM clients WHERE client_id = ?1",
                [client],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!((seq(&conn, "a"), seq(&conn, "b")), (7, 3));
        // A later, lower number (a resend) never moves it back.
        write(
            &mut conn,
            &[Request {
                op: WriteOp::Nothing,
                ack: ack("a", 2),
            }],
        )
        .unwrap();
        assert_eq!(seq(&conn, "a"), 7);
    }

    #[test]
    fn end_attributes_are_laid_over_start_attributes() {
        assert_eq!(merge_attributes(None, None), None);
        assert_eq!(
            merge_attributes(Some(r#"{"a":"1"}"#), None).as_deref(),
            Some(r#"{"a":"1"}"#)
        );
        assert_eq!(
            merge_attributes(Some(r#"{"a":"1","b":"2"}"#), Some(r#"{"b":"3","c":"4"}"#)).as_deref(),
            Some(r#"{"a":"1","b":"3","c":"4"}"#)
        );
        assert_eq!(
            merge_attributes(None, Some(r#"{"c":"4"}"#)).as_deref(),
            Some(r#"{"c":"4"}"#)
        );
    }
}
