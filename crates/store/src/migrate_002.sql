-- Schema version 2: GPU memory per watched agent per GPU; open runs by client.
--
-- `process_samples.gpu_memory_bytes` sums the agent's tree over every GPU. This table
-- keeps it per GPU, with the tree's PIDs already matched against NVML's process list:
-- memory held by a process the agent started (a worker, a model server) counts for the
-- agent on the GPU where it is held, which `gpu_processes` alone cannot tell (it lists
-- PIDs, not whose they are). Only GPUs where the tree holds memory have a row.
CREATE TABLE process_gpu_samples (
    snapshot_id        INTEGER NOT NULL REFERENCES snapshots (snapshot_id),
    pid                INTEGER NOT NULL,   -- the watched agent, as in process_samples
    gpu_index          INTEGER NOT NULL,
    used_memory_bytes  INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, pid, gpu_index)
) WITHOUT ROWID;

-- Runs still open, by the session client that opened them: the sidecar ends the runs of
-- agents that are gone (process exited, or never came back) as failed. Partial, so only
-- open runs are in it.
CREATE INDEX runs_open_by_client ON runs (client_id) WHERE status = 'running';
