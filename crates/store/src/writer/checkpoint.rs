//! WAL checkpoints on a thread of their own, so that no commit waits for one.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past
//! `wal_autocheckpoint` pages: that commit copies about a thousand pages into the database
//! file and syncs it while every acknowledgement behind it waits. At 400 spans/s of the
//! agent shape on the 2-core VM this put the acknowledgement p99 at 16–18 ms; with no
//! checkpoint in the writer it was 4.3 ms (`runlens bench agent`, BENCHMARKS.md). Here the
//! writer's commit hook only signals, and a thread with its own connection runs a PASSIVE
//! checkpoint, which never blocks the writer.
//!
//! A WAL starts over from its beginning only when a write transaction begins with every
//! frame copied. While the writer leaves gaps between commits (agent rates) the thread's
//! checkpoint completes in one and the WAL stays near [`CHECKPOINT_PAGES`]. At saturation
//! commits follow each other with no such gap, so at [`BACKSTOP_PAGES`] the writer's commit
//! finishes the checkpoint itself: the thread has copied most frames by then, so it copies
//! the few since and syncs, and the WAL starts over (about 8 MiB; without this step it
//! grew to 49 MiB during `runlens bench ingest`).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// WAL pages after a commit that start a checkpoint (SQLite's own default threshold).
pub const CHECKPOINT_PAGES: i32 = 1000;

/// WAL pages at which the writer's commit finishes the checkpoint itself.
pub const BACKSTOP_PAGES: i32 = 2 * CHECKPOINT_PAGES;

/// The checkpoint thread of one writer connection.
pub struct Checkpointer {
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Moves `conn`'s checkpoints to a new thread with its own connection to the same file.
    /// `None` (and SQLite's automatic checkpoints kept) for an in-memory database or when
    /// the thread or its connection cannot be had.
    pub fn start(conn: &mut Connection) -> Option<Checkpointer> {
        let path = conn.path().filter(|p| !p.is_empty())?.to_owned();
        let own = match Connection::open(&path) {
            Ok(own) => own,
            Err(error) => {
                tracing::debug!(%error, "no checkpoint connection; the writer checkpoints");
                return None;
            }
        };
        // One signal is enough however many commits ask: the thread checkpoints the whole WAL.
        let (tx, rx) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("runlens-checkpoint".into())
            .spawn(move || run(own, rx))
            .ok()?;
        if let Err(error) = conn.wal_hook(Some(commit_hook(tx))) {
            tracing::debug!(%error, "no WAL hook; the writer checkpoints");
            // The hook (and its sender) was not installed, so the thread ends by itself.
            let _ = thread.join();
            return None;
        }
        Some(Checkpointer {
            thread: Some(thread),
        })
    }

    /// Stops the thread and closes its connection, hands checkpoints back to SQLite, and
    /// copies the whole WAL into the database file, so that the file alone is complete.
    pub fn stop(mut self, conn: &mut Connection) {
        // Dropping the hook drops the thread's only sender.
        if let Err(error) = conn.wal_hook(None::<fn(&mut rusqlite::hooks::Wal, _) -> _>) {
            tracing::debug!(%error, "removing the WAL hook failed");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Back to SQLite's automatic checkpoints for whatever the writer still commits.
        let _ = conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES);
        // Everything into the database file and the WAL emptied: the sidecar's read-only
        // connections may outlive this one, and the last connection to close only
        // checkpoints if it can write, so without this a clean stop left the last commits
        // in the WAL, and a copy of the database file alone missed them. A reader still
        // mid-query makes this wait (the busy timeout) or give up; SQLite then recovers
        // the WAL at the next open, as after any crash.
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!(%error, "final checkpoint not done; the WAL is kept");
        }
    }
}

/// What the writer's connection runs after each commit, with the WAL's size in frames:
/// signal the thread past [`CHECKPOINT_PAGES`], finish the checkpoint itself past
/// [`BACKSTOP_PAGES`] (or once the thread is gone).
fn commit_hook(
    signal: SyncSender<()>,
) -> impl FnMut(&mut rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()> + Send + 'static
{
    move |wal, pages| {
        after_commit(pages, &signal, || wal.checkpoint());
        // Never an error from the hook: it runs after the commit, and an error would make
        // the commit look failed, so the writer would write the batch a second time.
        Ok(())
    }
}

/// The hook's decision, apart from SQLite: signal the thread, or `checkpoint` here. A
/// checkpoint that cannot run now (`SQLITE_BUSY` while the thread runs one) is left to the
/// next commit, as SQLite's own hook does.
fn after_commit(
    pages: std::ffi::c_int,
    signal: &SyncSender<()>,
    checkpoint: impl FnOnce() -> rusqlite::Result<()>,
) {
    let finish_here = pages >= BACKSTOP_PAGES
        || (pages >= CHECKPOINT_PAGES
            && matches!(signal.try_send(()), Err(TrySendError::Disconnected(()))));
    if finish_here && let Err(error) = checkpoint() {
        tracing::trace!(%error, "checkpoint in the commit deferred");
    }
}

/// Checkpoints once per signal until the writer's hook is gone.
fn run(conn: Connection, signals: Receiver<()>) {
    while signals.recv().is_ok() {
        // PASSIVE: copies what no reader still needs, without waiting for anyone.
        let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match outcome {
            Ok((log, copied)) => tracing::trace!(log, copied, "checkpoint"),
            Err(error) => tracing::debug!(%error, "checkpoint failed; the next one retries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn file_len(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// A WAL database with one table `t (x BLOB)`, synced as the sidecar syncs.
    fn wal_database(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        conn
    }

    #[test]
    fn the_thread_copies_the_wal_into_the_database_and_stop_leaves_the_file_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut conn = wal_database(&path);
        let checkpointer = Checkpointer::start(&mut conn).expect("a file database");
        // A row a page, committed one by one until the commit that takes the WAL past
        // CHECKPOINT_PAGES frames (its hook signals the thread): far below BACKSTOP_PAGES,
        // so only the thread can copy them into the database file.
        let row = vec![7u8; 3500];
        let wal = dir.path().join("c.db-wal");
        let frames = u64::try_from(CHECKPOINT_PAGES).unwrap();
        let mut rows = 0;
        while file_len(&wal) < 32 + frames * (4096 + 24) && rows < 10_000 {
            conn.execute("INSERT INTO t VALUES (?1)", [&row]).unwrap();
            rows += 1;
        }
        let copied = u64::try_from(rows).unwrap() * 4096;
        let deadline = Instant::now() + Duration::from_secs(20);
        while file_len(&path) < copied && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            file_len(&path) >= copied,
            "nothing checkpointed: the database file holds {} bytes",
            file_len(&path)
        );
        // A read-only connection, as the sidecar's readers, outlives the writer's.
        let reader =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        conn.execute("INSERT INTO t VALUES (?1)", [&row]).unwrap();
        checkpointer.stop(&mut conn);
        drop(conn);
        // Every row is in the database file itself: a copy of it alone holds them all.
        assert_eq!(file_len(&wal), 0, "the WAL is emptied on stop");
        drop(reader);
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let stored: i64 = Connection::open(&copy)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, i64::from(rows) + 1);
    }

    #[test]
    fn with_the_thread_not_keeping_up_the_writer_bounds_the_wal_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let mut conn = wal_database(&path);
        // A thread that never answers: its one-signal channel stays full.
        let (signal, _never_read) = sync_channel::<()>(1);
        conn.wal_hook(Some(commit_hook(signal))).unwrap();
        let row = vec![7u8; 3500];
        for _ in 0..(2 * BACKSTOP_PAGES) {
            conn.execute("INSERT INTO t VALUES (?1)", [&row]).unwrap();
        }
        // Each insert writes a few frames: without the backstop the WAL would hold them all.
        let wal = file_len(&dir.path().join("b.db-wal"));
        let bound = 32 + u64::try_from(BACKSTOP_PAGES + 8).unwrap() * (4096 + 24);
        assert!(wal <= bound, "the WAL grew to {wal} bytes (bound {bound})");
    }

    #[test]
    fn the_hook_signals_below_the_backstop_and_checkpoints_itself_at_it_or_without_a_thread() {
        let (signal, signals) = sync_channel::<()>(1);
        let mut ran = 0;
        after_commit(CHECKPOINT_PAGES - 1, &signal, || {
            ran += 1;
            Ok(())
        });
        assert!(signals.try_recv().is_err(), "no signal below the threshold");
        after_commit(CHECKPOINT_PAGES, &signal, || {
            ran += 1;
            Ok(())
        });
        assert!(signals.try_recv().is_ok(), "the thread is signalled");
        assert_eq!(ran, 0, "and the commit does not checkpoint");
        after_commit(BACKSTOP_PAGES, &signal, || {
            ran += 1;
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ))
        });
        assert_eq!(
            ran, 1,
            "at the backstop the commit checkpoints (BUSY is left for later)"
        );
        drop(signals);
        after_commit(CHECKPOINT_PAGES, &signal, || {
            ran += 1;
            Ok(())
        });
        assert_eq!(ran, 2, "with the thread gone the commit checkpoints");
    }

    #[test]
    fn an_in_memory_database_keeps_sqlites_own_checkpoints() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert!(Checkpointer::start(&mut conn).is_none());
    }
}
