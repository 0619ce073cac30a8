//! When each stored sample was taken, so that a span that arrives after it ended (OTLP
//! senders batch for seconds, retries take minutes) gets the samples nearest its own start
//! and end, not the latest.
//!
//! The writer sees every snapshot it stores, so it keeps their times in memory: recent
//! ones (the last [`KEPT`]) in a sorted vector, older ones looked up in SQLite through the
//! `snapshots_by_time` index. The rule: the sample nearest the instant, if it is at most one
//! sampling interval away; none otherwise (the sidecar was not running then, or the span is
//! older than the oldest sample).

use rusqlite::{Connection, OptionalExtension, params};

/// Sample times kept in memory: 1 MiB, a day at the default 1 s interval.
const KEPT: usize = 64 * 1024;

/// A stored sample: (taken_at_ns, snapshot_id).
pub type Sample = (i64, i64);

/// Times of stored samples, oldest first.
#[derive(Debug, Default)]
pub struct SnapshotTimes {
    /// (taken_at_ns, snapshot_id), sorted by time.
    recent: Vec<(i64, i64)>,
    /// The latest samples `nearest` handed out (newest last, a few), each with the
    /// earliest and latest time it was handed out for: only rows that refer to one of
    /// these can lie nearer a sample stored after them, and only if their times reach past
    /// the midpoint between the two. A new sample next to none of them (an idle sidecar,
    /// or rows all nearer their own sample) moves nothing and runs no statement.
    handed_out: Vec<HandedOut>,
    /// The widest matching window asked for so far, ns.
    window_ns: i64,
}

/// Samples remembered as handed out: more than are ever stored between two batches.
const HANDED_OUT: usize = 64;

/// A sample rows were matched to, and the span of their times.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HandedOut {
    snapshot_id: i64,
    earliest_ns: i64,
    latest_ns: i64,
}

impl SnapshotTimes {
    /// The latest [`KEPT`] samples of the database.
    pub fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let mut stmt = conn.prepare(
            "SELECT taken_at_ns, snapshot_id FROM (
                 SELECT taken_at_ns, snapshot_id FROM snapshots
                 ORDER BY taken_at_ns DESC LIMIT ?1)
             ORDER BY taken_at_ns",
        )?;
        let recent = stmt
            .query_map([KEPT as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self {
            recent,
            handed_out: Vec::new(),
            window_ns: 0,
        })
    }

    /// Notes a stored sample (again is harmless: a retried batch writes its samples twice).
    pub fn insert(&mut self, taken_at_ns: i64, snapshot_id: i64) {
        let at = self
            .recent
            .partition_point(|&s| s < (taken_at_ns, snapshot_id));
        if self.recent.get(at) == Some(&(taken_at_ns, snapshot_id)) {
            return;
        }
        self.recent.insert(at, (taken_at_ns, snapshot_id));
        if self.recent.len() > KEPT + KEPT / 4 {
            self.recent.drain(..self.recent.len() - KEPT);
        }
    }

    /// The samples just before and just after `(taken_at_ns, snapshot_id)` in time, as
    /// kept in memory (a sample older than those kept has no neighbours here).
    pub fn neighbours(
        &self,
        taken_at_ns: i64,
        snapshot_id: i64,
    ) -> (Option<Sample>, Option<Sample>) {
        let at = self
            .recent
            .partition_point(|&s| s < (taken_at_ns, snapshot_id));
        if self.recent.get(at) != Some(&(taken_at_ns, snapshot_id)) {
            return (None, None);
        }
        let before = at.checked_sub(1).and_then(|i| self.recent.get(i)).copied();
        (before, self.recent.get(at + 1).copied())
    }

    /// Forgets deleted samples (retention), so that no late span is given one of them.
    pub fn forget(&mut self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<i64> = ids.iter().copied().collect();
        self.recent.retain(|(_, id)| !gone.contains(id));
    }

    /// The earliest and latest time rows were given this sample for lately (by `nearest`,
    /// or moved onto it: [`SnapshotTimes::handed_out_for`]); `None` when none were (since
    /// the process started; after a restart, rows written before it are matched against
    /// what was stored then).
    pub fn handed_out_times(&self, snapshot_id: i64) -> Option<(i64, i64)> {
        self.handed_out
            .iter()
            .rev()
            .find(|h| h.snapshot_id == snapshot_id)
            .map(|h| (h.earliest_ns, h.latest_ns))
    }

    /// Notes that rows of times from `earliest_ns` to `latest_ns` refer to this sample.
    pub fn handed_out_for(&mut self, snapshot_id: i64, earliest_ns: i64, latest_ns: i64) {
        if let Some(h) = self
            .handed_out
            .iter_mut()
            .rev()
            .find(|h| h.snapshot_id == snapshot_id)
        {
            h.earliest_ns = h.earliest_ns.min(earliest_ns);
            h.latest_ns = h.latest_ns.max(latest_ns);
            return;
        }
        if self.handed_out.len() >= HANDED_OUT {
            self.handed_out.remove(0);
        }
        self.handed_out.push(HandedOut {
            snapshot_id,
            earliest_ns,
            latest_ns,
        });
    }

    /// The widest matching window `nearest` was asked for, ns.
    pub fn window_ns(&self) -> i64 {
        self.window_ns
    }

    /// The sample nearest `at_ns`, if one is at most `window_ns` away.
    pub fn nearest(&mut self, conn: &Connection, at_ns: i64, window_ns: i64) -> Option<i64> {
        self.window_ns = self.window_ns.max(window_ns);
        let id = self.nearest_id(conn, at_ns, window_ns)?;
        self.handed_out_for(id, at_ns, at_ns);
        Some(id)
    }

    fn nearest_id(&self, conn: &Connection, at_ns: i64, window_ns: i64) -> Option<i64> {
        let in_memory = self
            .recent
            .first()
            .is_some_and(|&(oldest, _)| at_ns >= oldest);
        let (time, id) = if in_memory {
            let at = self.recent.partition_point(|&(t, _)| t < at_ns);
            let before = at.checked_sub(1).and_then(|i| self.recent.get(i));
            let after = self.recent.get(at);
            match (before, after) {
                (Some(b), Some(a)) if at_ns - b.0 <= a.0 - at_ns => *b,
                (Some(_), Some(a)) | (None, Some(a)) => *a,
                (Some(b), None) => *b,
                (None, None) => return None,
            }
        } else {
            nearest_in_db(conn, at_ns).ok().flatten()?
        };
        (time.abs_diff(at_ns) <= window_ns.unsigned_abs()).then_some(id)
    }
}

/// The stored sample nearest `at_ns`, older than what is kept in memory.
fn nearest_in_db(conn: &Connection, at_ns: i64) -> rusqlite::Result<Option<(i64, i64)>> {
    let side = |sql: &str| -> rusqlite::Result<Option<(i64, i64)>> {
        conn.prepare_cached(sql)?
            .query_row(params![at_ns], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    };
    let before = side(
        "SELECT taken_at_ns, snapshot_id FROM snapshots WHERE taken_at_ns <= ?1
         ORDER BY taken_at_ns DESC LIMIT 1",
    )?;
    let after = side(
        "SELECT taken_at_ns, snapshot_id FROM snapshots WHERE taken_at_ns > ?1
         ORDER BY taken_at_ns LIMIT 1",
    )?;
    Ok(match (before, after) {
        (Some(b), Some(a)) if at_ns - b.0 <= a.0 - at_ns => Some(b),
        (b, a) => a.or(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_sample_within_the_window_is_chosen() {
        let conn = Connection::open_in_memory().unwrap();
        let mut times = SnapshotTimes::default();
        for (t, id) in [(1000, 1), (2000, 2), (3000, 3)] {
            times.insert(t, id);
        }
        times.insert(2000, 2); // again: no double
        assert_eq!(times.recent.len(), 3);
        assert_eq!(times.nearest(&conn, 1400, 1000), Some(1));
        assert_eq!(times.nearest(&conn, 1600, 1000), Some(2));
        assert_eq!(times.nearest(&conn, 3900, 1000), Some(3));
        assert_eq!(
            times.nearest(&conn, 4100, 1000),
            None,
            "too far after the last"
        );
        times.insert(1500, 9); // a fresh sample between two periodic ones
        assert_eq!(times.nearest(&conn, 1450, 1000), Some(9));
    }

    #[test]
    fn older_instants_are_looked_up_in_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::open_for_writing(&dir.path().join("t.db"), false, None).unwrap();
        conn.execute_batch(
            "INSERT INTO snapshots (snapshot_id, taken_at_ns, reason, gpu_available, gpu_count,
                 cpu_count, ram_total_bytes, ram_used_bytes, ram_available_bytes,
                 swap_total_bytes, swap_used_bytes)
             VALUES (1, 1000, 'interval', 0, 0, 2, 1, 1, 1, 0, 0),
                    (2, 2000, 'interval', 0, 0, 2, 1, 1, 1, 0, 0)",
        )
        .unwrap();
        let mut times = SnapshotTimes::default();
        times.insert(9000, 3); // memory only holds the newest
        assert_eq!(times.nearest(&conn, 1900, 500), Some(2));
        assert_eq!(times.nearest(&conn, 1100, 500), Some(1));
        assert_eq!(
            times.nearest(&conn, 500, 100),
            None,
            "before the oldest sample"
        );
        let loaded = SnapshotTimes::load(&conn).unwrap();
        assert_eq!(loaded.recent, [(1000, 1), (2000, 2)]);
    }
}
