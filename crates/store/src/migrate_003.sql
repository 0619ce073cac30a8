-- Schema version 3: how each run ended, in a column of its own.
--
-- The report tells runs that the sidecar ended (their agent's process exited, or its
-- session never came back) from runs their client ended. Before this column it had to
-- recognise the sidecar's wording in `error`, which a user's own error text could match.
--   client           the agent ended it (EndRun)
--   process_exit     the sidecar ended it: the agent's process exited with the run open
--   session_timeout  the sidecar ended it: the agent's session stayed closed too long
-- NULL while the run is open.
ALTER TABLE runs ADD COLUMN ended_by TEXT;

-- Runs ended before this version: the sidecar's own wording is the only record, and
-- before this version only the sidecar wrote it for runs it ended itself.
UPDATE runs SET ended_by = CASE
    WHEN status = 'failed' AND error LIKE 'the agent process (pid %) exited without ending this run'
        THEN 'process_exit'
    WHEN status = 'failed' AND error LIKE 'the agent''s session closed and did not come back within %'
        THEN 'session_timeout'
    ELSE 'client'
END
WHERE status <> 'running';
