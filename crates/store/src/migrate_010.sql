-- Schema version 10: live views (`WatchActivity`, `runlens top`) list the runs open now.
-- This index holds open runs only (an entry is added when a run starts and removed when it
-- ends), so finding them never scans the history.
CREATE INDEX runs_open ON runs (started_at_ns) WHERE ended_at_ns IS NULL;
