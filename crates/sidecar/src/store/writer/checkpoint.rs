//! WAL checkpoints on a thread of their own, so that no commit waits for one.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past
//! `wal_autocheckpoint` pages: that commit copies about a thousand pages into the database
//! file and syncs it while every acknowledgement behind it waits. At 400 spans/s of the
//! agent shape on the 2-core VM this put the acknowledgement p99 at 16–18 ms; with no
//! checkpoint in the writer it was 4.3 ms (`runlens bench agent`, BENCHMARKS.md). Here the
//! writer's commit hook only signals, and a thread with its own connection runs a PASSIVE
//! checkpoint, which never blocks the writer. Should the WAL still grow past
//! [`BACKSTOP_PAGES`] (the thread starved of CPU), the writer checkpoints in its commit as
//! SQLite would.

use std::sync::mpsc::{Receiver, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// WAL pages after a commit that start a checkpoint (SQLite's own default threshold).
pub const CHECKPOINT_PAGES: i32 = 1000;

/// WAL pages at which the writer checkpoints itself rather than wait for the thread.
pub const BACKSTOP_PAGES: i32 = 16 * CHECKPOINT_PAGES;

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
        let hooked = conn.wal_hook(Some(
            move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
                if pages >= BACKSTOP_PAGES {
                    return wal.checkpoint();
                }
                if pages >= CHECKPOINT_PAGES {
                    match tx.try_send(()) {
                        Ok(()) | Err(TrySendError::Full(())) => {}
                        // The thread is gone: checkpoint here, as SQLite would.
                        Err(TrySendError::Disconnected(())) => return wal.checkpoint(),
                    }
                }
                Ok(())
            },
        ));
        if let Err(error) = hooked {
            tracing::debug!(%error, "no WAL hook; the writer checkpoints");
            // The hook (and its sender) was not installed, so the thread ends by itself.
            let _ = thread.join();
            return None;
        }
        Some(Checkpointer {
            thread: Some(thread),
        })
    }

    /// Stops the thread and closes its connection, handing checkpoints back to SQLite: the
    /// writer's connection, closed last, then checkpoints the WAL and removes it.
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

    #[test]
    fn the_thread_copies_the_wal_into_the_database_and_the_last_close_removes_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let checkpointer = Checkpointer::start(&mut conn).expect("a file database");
        // A row a page: past CHECKPOINT_PAGES, far below BACKSTOP_PAGES, so only the
        // thread can have copied them into the database file.
        let row = vec![7u8; 3500];
        let rows = CHECKPOINT_PAGES + 100;
        for _ in 0..rows {
            conn.execute("INSERT INTO t VALUES (?1)", [&row]).unwrap();
        }
        let copied = u64::try_from(CHECKPOINT_PAGES).unwrap() * 4096;
        let deadline = Instant::now() + Duration::from_secs(20);
        while file_len(&path) < copied && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            file_len(&path) >= copied,
            "nothing checkpointed: the database file holds {} bytes",
            file_len(&path)
        );
        checkpointer.stop(&mut conn);
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, i64::from(rows));
        drop(conn);
        // The writer's connection, closed last, checkpointed and took the WAL with it.
        assert!(!dir.path().join("c.db-wal").exists());
    }

    #[test]
    fn an_in_memory_database_keeps_sqlites_own_checkpoints() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert!(Checkpointer::start(&mut conn).is_none());
    }
}
