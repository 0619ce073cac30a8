-- Schema version 8: retention. Pruning asks, for each old sample, "does a run, span or
-- event still refer to it?" and deletes old runs' spans and the sidecar's own events by
-- age. These indexes answer both without scanning whole tables. Sample ids grow with time,
-- so new entries are appended at the right edge of each index.
CREATE INDEX spans_by_start_snapshot ON spans (start_snapshot_id);
CREATE INDEX spans_by_end_snapshot ON spans (end_snapshot_id);
CREATE INDEX runs_by_start_snapshot ON runs (start_snapshot_id);
CREATE INDEX runs_by_end_snapshot ON runs (end_snapshot_id);
CREATE INDEX events_by_snapshot ON events (snapshot_id) WHERE snapshot_id IS NOT NULL;
CREATE INDEX system_events_by_time ON events (at_ns) WHERE run_id IS NULL;
CREATE INDEX runs_by_end ON runs (ended_at_ns) WHERE ended_at_ns IS NOT NULL;
