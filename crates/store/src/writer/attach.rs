//! Which stored sample each run and span boundary, metric and event refers to: the one
//! nearest the row's own time, before or after it, within a window; never simply the one
//! current when the message arrived (an agent that buffered for seconds, or started
//! before the sidecar, would otherwise be shown a later machine than its own).
//!
//! A row is matched when it is written, against the samples stored so far. A boundary
//! recorded after the latest sample can lie nearer the next one, which does not exist yet;
//! so when a sample is stored, the rows that refer to its neighbours in time but lie nearer
//! to it are moved onto it ([`note_sample`]). One indexed `UPDATE` per column and
//! neighbour, per sample: the cost is per sample (a few a second), not per row. Rows left
//! without a sample stay so: a later sample is never nearer to them than the window.

use rusqlite::{Connection, params};

use super::rows::{Finished, SampleRef};
use super::times::SnapshotTimes;

/// The columns that refer to a sample, each with the time it stands for.
const REFERENCES: [(&str, &str, &str); 5] = [
    ("spans", "start_snapshot_id", "started_at_ns"),
    ("spans", "end_snapshot_id", "ended_at_ns"),
    ("runs", "start_snapshot_id", "started_at_ns"),
    ("runs", "end_snapshot_id", "ended_at_ns"),
    ("events", "snapshot_id", "at_ns"),
];

/// The sample a row written now refers to, counted in `finished` as matched or not.
pub(super) fn resolve(
    conn: &Connection,
    times: &mut SnapshotTimes,
    at_ns: i64,
    sample: SampleRef,
    finished: &mut Finished,
) -> Option<i64> {
    let id = match sample {
        SampleRef::Taken(id) => return Some(id),
        SampleRef::Unrelated => return None,
        SampleRef::Skewed => {
            finished.skewed += 1;
            return None;
        }
        SampleRef::Nearest { window_ns } => times.nearest(conn, at_ns, window_ns),
        SampleRef::Corrected {
            window_ns,
            offset_ns,
        } => times.nearest(conn, at_ns.saturating_sub(offset_ns), window_ns),
    };
    match id {
        Some(_) => finished.matched += 1,
        None => finished.unmatched += 1,
    }
    id
}

/// Notes a stored sample and moves onto it the rows of its neighbours in time that lie
/// nearer to it. Harmless to repeat (a retried batch stores its samples again).
pub(super) fn note_sample(
    conn: &Connection,
    times: &mut SnapshotTimes,
    taken_at_ns: i64,
    snapshot_id: i64,
) -> rusqlite::Result<()> {
    times.insert(taken_at_ns, snapshot_id);
    let (before, after) = times.neighbours(taken_at_ns, snapshot_id);
    // Only a neighbour handed out for a time past the midpoint towards the new sample can
    // have rows to give up (the same comparisons as the statements below).
    let before = before.filter(|&(before_ns, id)| {
        times
            .handed_out_times(id)
            .is_some_and(|(_, latest)| latest - before_ns > taken_at_ns - latest)
    });
    let after = after.filter(|&(after_ns, id)| {
        times
            .handed_out_times(id)
            .is_some_and(|(earliest, _)| earliest - taken_at_ns <= after_ns - earliest)
    });
    // Rows moved onto the new sample may in turn lie nearer a sample stored later.
    if let Some((before_ns, id)) = before
        && let Some((_, latest)) = times.handed_out_times(id)
    {
        let midpoint = before_ns + (taken_at_ns - before_ns) / 2;
        times.handed_out_for(snapshot_id, midpoint, latest);
    }
    if let Some((after_ns, id)) = after
        && let Some((earliest, _)) = times.handed_out_times(id)
    {
        let midpoint = taken_at_ns + (after_ns - taken_at_ns) / 2;
        times.handed_out_for(snapshot_id, earliest, midpoint);
    }
    // A row that lies nearer the new sample than its own lies within the window of it
    // anyway; rows matched at corrected times (a sender's clock far off) do not, and their
    // own time says nothing about which sample is nearer: the bound leaves them be.
    let window_ns = times.window_ns();
    for (table, column, time) in REFERENCES {
        // Ties go to the earlier sample, as in `SnapshotTimes::nearest`.
        if let Some((before_ns, before_id)) = before {
            conn.prepare_cached(&format!(
                "UPDATE {table} SET {column} = ?1
                 WHERE {column} = ?2 AND {time} - ?3 > ?4 - {time}
                   AND abs({time} - ?4) <= ?5"
            ))?
            .execute(params![
                snapshot_id,
                before_id,
                before_ns,
                taken_at_ns,
                window_ns
            ])?;
        }
        if let Some((after_ns, after_id)) = after {
            conn.prepare_cached(&format!(
                "UPDATE {table} SET {column} = ?1
                 WHERE {column} = ?2 AND {time} - ?3 <= ?4 - {time}
                   AND abs({time} - ?3) <= ?5"
            ))?
            .execute(params![
                snapshot_id,
                after_id,
                taken_at_ns,
                after_ns,
                window_ns
            ])?;
        }
    }
    Ok(())
}
