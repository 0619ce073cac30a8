//! The spans an `INSERT OR IGNORE` actually inserted, for the counters fed after commit: the
//! batch's completed spans and the traced spans both insert this way (a module of its own so
//! that neither reaches into the other).

use super::rows::{Finished, FinishedSpan};

/// What an INSERT OR IGNORE of ended spans returns: only the rows it inserted.
pub(super) const RETURNING_FINISHED: &str = "RETURNING name, status, ended_at_ns - started_at_ns";

/// Runs `stmt` (ending in [`RETURNING_FINISHED`]) and notes the spans it inserted.
pub(super) fn collect_finished(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
    finished: &mut Finished,
) -> rusqlite::Result<()> {
    let mut rows = stmt.query(params)?;
    while let Some(r) = rows.next()? {
        finished.spans.push(FinishedSpan {
            name: r.get(0)?,
            status: r.get(1)?,
            duration_ns: r.get(2)?,
        });
    }
    Ok(())
}
