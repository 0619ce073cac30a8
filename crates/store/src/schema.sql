-- runlens schema, version 1. Timestamps are Unix nanoseconds; units are in column names.

-- One row per resource sample. `reason` says why it was taken.
CREATE TABLE snapshots (
    snapshot_id             INTEGER PRIMARY KEY,
    taken_at_ns             INTEGER NOT NULL,
    reason                  TEXT    NOT NULL,  -- interval | run_start | run_end | fresh | stale
    gpu_available           INTEGER NOT NULL,  -- 1 when NVML answered, else 0
    gpu_unavailable_reason  TEXT,
    gpu_count               INTEGER NOT NULL,
    cpu_count               INTEGER NOT NULL,
    cpu_load_1m             REAL,
    cpu_load_5m             REAL,
    cpu_load_15m            REAL,
    cpu_utilization_ratio   REAL,
    cpu_core_utilization    TEXT,              -- JSON array of per-core ratios
    ram_total_bytes         INTEGER NOT NULL,
    ram_used_bytes          INTEGER NOT NULL,
    ram_available_bytes     INTEGER NOT NULL,
    swap_total_bytes        INTEGER NOT NULL,
    swap_used_bytes         INTEGER NOT NULL,
    -- The container's own cgroup (NULL columns: no cgroup, or no limit).
    cgroup_version             INTEGER,
    cgroup_memory_limit_bytes  INTEGER,
    cgroup_memory_used_bytes   INTEGER,            -- usage minus inactive_file
    cgroup_cpu_quota_cores     REAL,
    cgroup_cpu_throttled_ns    INTEGER
);
CREATE INDEX snapshots_by_time ON snapshots (taken_at_ns);

-- One row per GPU per snapshot. A metric the GPU does not support is NULL.
CREATE TABLE gpu_samples (
    snapshot_id               INTEGER NOT NULL REFERENCES snapshots (snapshot_id),
    gpu_index                 INTEGER NOT NULL,
    uuid                      TEXT,
    name                      TEXT,
    state                     TEXT    NOT NULL,  -- ok | lost | error
    memory_total_bytes        INTEGER,
    memory_used_bytes         INTEGER,
    memory_free_bytes         INTEGER,
    utilization_ratio         REAL,
    memory_utilization_ratio  REAL,
    temperature_celsius       REAL,
    power_watts               REAL,
    memory_reserved_bytes     INTEGER,
    power_limit_watts         REAL,
    clock_sm_mhz              INTEGER,
    clock_memory_mhz          INTEGER,
    performance_state         INTEGER,           -- 0 = P0 (fastest) .. 15
    clock_event_reasons       INTEGER,           -- NVML bit mask
    clock_event_reason_names  TEXT,              -- e.g. 'sw_power_cap,hw_slowdown'
    ecc_corrected_errors      INTEGER,
    ecc_uncorrected_errors    INTEGER,
    mig_enabled               INTEGER,           -- 1 in MIG mode, 0 not, NULL no MIG
    PRIMARY KEY (snapshot_id, gpu_index)
) WITHOUT ROWID;

-- MIG instances of GPUs in MIG mode, each with its own memory.
CREATE TABLE mig_samples (
    snapshot_id         INTEGER NOT NULL REFERENCES snapshots (snapshot_id),
    gpu_index           INTEGER NOT NULL,
    mig_index           INTEGER NOT NULL,
    uuid                TEXT,
    memory_total_bytes  INTEGER,
    memory_used_bytes   INTEGER,
    memory_free_bytes   INTEGER,
    PRIMARY KEY (snapshot_id, gpu_index, mig_index)
) WITHOUT ROWID;

-- Which processes held memory on which GPU at each snapshot (host PIDs, as NVML reports).
CREATE TABLE gpu_processes (
    snapshot_id        INTEGER NOT NULL REFERENCES snapshots (snapshot_id),
    gpu_index          INTEGER NOT NULL,
    pid                INTEGER NOT NULL,
    used_memory_bytes  INTEGER,
    PRIMARY KEY (snapshot_id, gpu_index, pid)
) WITHOUT ROWID;
CREATE INDEX gpu_processes_by_pid ON gpu_processes (pid);

-- Watched agent processes (session clients that gave their PID), each summed over its
-- descendants.
CREATE TABLE process_samples (
    snapshot_id       INTEGER NOT NULL REFERENCES snapshots (snapshot_id),
    pid               INTEGER NOT NULL,
    process_count     INTEGER NOT NULL,
    rss_bytes         INTEGER NOT NULL,
    cpu_ratio         REAL,               -- cores busy since the previous sample
    gpu_memory_bytes  INTEGER,
    PRIMARY KEY (snapshot_id, pid)
) WITHOUT ROWID;

-- One row per run (one task of an agent).
CREATE TABLE runs (
    run_id             TEXT PRIMARY KEY,
    name               TEXT    NOT NULL,
    status             TEXT    NOT NULL,  -- running | ok | failed
    error              TEXT,
    attributes         TEXT,              -- JSON object
    client_id          TEXT,
    started_at_ns      INTEGER NOT NULL,
    ended_at_ns        INTEGER,
    start_snapshot_id  INTEGER REFERENCES snapshots (snapshot_id),
    end_snapshot_id    INTEGER REFERENCES snapshots (snapshot_id)
);
CREATE INDEX runs_by_start ON runs (started_at_ns);

-- One row per span (one step of a run), nested through parent_span_id.
CREATE TABLE spans (
    span_id            TEXT PRIMARY KEY,
    run_id             TEXT    NOT NULL REFERENCES runs (run_id),
    parent_span_id     TEXT,
    name               TEXT    NOT NULL,
    status             TEXT    NOT NULL,  -- running | ok | failed
    error              TEXT,
    attributes         TEXT,              -- JSON object
    started_at_ns      INTEGER NOT NULL,
    ended_at_ns        INTEGER,
    start_snapshot_id  INTEGER REFERENCES snapshots (snapshot_id),
    end_snapshot_id    INTEGER REFERENCES snapshots (snapshot_id)
);
CREATE INDEX spans_by_run ON spans (run_id);

-- Metrics (kind 'metric', with a value), custom events (kind 'event') and what the
-- sidecar itself noticed (kind 'system': gpu.lost, gpu.unavailable, gpu.available).
CREATE TABLE events (
    event_id     INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL,  -- metric | event | system
    run_id       TEXT,              -- NULL for system events
    span_id      TEXT,
    name         TEXT    NOT NULL,
    value        REAL,
    unit         TEXT,
    attributes   TEXT,              -- JSON object
    at_ns        INTEGER NOT NULL,
    snapshot_id  INTEGER REFERENCES snapshots (snapshot_id)
);
CREATE INDEX events_by_run ON events (run_id, at_ns);

-- Session clients and the highest sequence number committed for each: resends after a
-- reconnect or a sidecar restart are recognised and skipped.
CREATE TABLE clients (
    client_id      TEXT PRIMARY KEY,
    client_name    TEXT,
    pid            INTEGER,
    committed_seq  INTEGER NOT NULL,
    last_seen_ns   INTEGER NOT NULL,
    -- Messages the client dropped because its buffer was full: data known to be missing.
    dropped_messages INTEGER NOT NULL DEFAULT 0,
    -- The agent's CUDA_VISIBLE_DEVICES from hello: which GPUs it means to use.
    cuda_visible_devices TEXT
);

-- Each snapshot with its GPU figures folded in: total GPU memory used, the tightest GPU's
-- free memory, the busiest GPU's utilization.
CREATE VIEW snapshot_summary AS
SELECT s.*,
       g.gpu_memory_used_bytes,
       g.gpu_memory_total_bytes,
       g.gpu_memory_free_min_bytes,
       g.gpu_utilization_max_ratio,
       g.gpu_lost_count
FROM snapshots s
LEFT JOIN (
    SELECT snapshot_id,
           sum(memory_used_bytes)  AS gpu_memory_used_bytes,
           sum(memory_total_bytes) AS gpu_memory_total_bytes,
           min(memory_free_bytes)  AS gpu_memory_free_min_bytes,
           max(utilization_ratio)  AS gpu_utilization_max_ratio,
           sum(state = 'lost')     AS gpu_lost_count
    FROM gpu_samples GROUP BY snapshot_id
) g USING (snapshot_id);

-- Each span with its start and end snapshot side by side, and end-minus-start deltas.
CREATE VIEW span_resources AS
SELECT sp.span_id, sp.run_id, sp.parent_span_id, sp.name, sp.status, sp.error,
       sp.started_at_ns, sp.ended_at_ns, sp.ended_at_ns - sp.started_at_ns AS duration_ns,
       sp.start_snapshot_id, sp.end_snapshot_id,
       a.cpu_load_1m AS start_cpu_load_1m, b.cpu_load_1m AS end_cpu_load_1m,
       b.cpu_load_1m - a.cpu_load_1m AS delta_cpu_load_1m,
       a.cpu_utilization_ratio AS start_cpu_utilization_ratio,
       b.cpu_utilization_ratio AS end_cpu_utilization_ratio,
       b.cpu_utilization_ratio - a.cpu_utilization_ratio AS delta_cpu_utilization_ratio,
       a.ram_used_bytes AS start_ram_used_bytes, b.ram_used_bytes AS end_ram_used_bytes,
       b.ram_used_bytes - a.ram_used_bytes AS delta_ram_used_bytes,
       a.ram_available_bytes AS start_ram_available_bytes,
       b.ram_available_bytes AS end_ram_available_bytes,
       b.ram_available_bytes - a.ram_available_bytes AS delta_ram_available_bytes,
       a.gpu_available AS start_gpu_available, b.gpu_available AS end_gpu_available,
       a.gpu_memory_used_bytes AS start_gpu_memory_used_bytes,
       b.gpu_memory_used_bytes AS end_gpu_memory_used_bytes,
       b.gpu_memory_used_bytes - a.gpu_memory_used_bytes AS delta_gpu_memory_used_bytes,
       a.gpu_memory_free_min_bytes AS start_gpu_memory_free_min_bytes,
       b.gpu_memory_free_min_bytes AS end_gpu_memory_free_min_bytes,
       b.gpu_memory_free_min_bytes - a.gpu_memory_free_min_bytes AS delta_gpu_memory_free_min_bytes,
       a.gpu_utilization_max_ratio AS start_gpu_utilization_max_ratio,
       b.gpu_utilization_max_ratio AS end_gpu_utilization_max_ratio,
       a.cgroup_memory_limit_bytes AS start_cgroup_memory_limit_bytes,
       a.cgroup_memory_used_bytes AS start_cgroup_memory_used_bytes,
       b.cgroup_memory_used_bytes AS end_cgroup_memory_used_bytes,
       b.cgroup_memory_used_bytes - a.cgroup_memory_used_bytes AS delta_cgroup_memory_used_bytes
FROM spans sp
LEFT JOIN snapshot_summary a ON a.snapshot_id = sp.start_snapshot_id
LEFT JOIN snapshot_summary b ON b.snapshot_id = sp.end_snapshot_id;

-- Each run with its baseline and end-state snapshots side by side, and the deltas.
CREATE VIEW run_resources AS
SELECT r.run_id, r.name, r.status, r.error,
       r.started_at_ns, r.ended_at_ns, r.ended_at_ns - r.started_at_ns AS duration_ns,
       r.start_snapshot_id, r.end_snapshot_id,
       (SELECT count(*) FROM spans s WHERE s.run_id = r.run_id) AS span_count,
       a.cpu_load_1m AS start_cpu_load_1m, b.cpu_load_1m AS end_cpu_load_1m,
       b.cpu_load_1m - a.cpu_load_1m AS delta_cpu_load_1m,
       a.cpu_utilization_ratio AS start_cpu_utilization_ratio,
       b.cpu_utilization_ratio AS end_cpu_utilization_ratio,
       a.ram_used_bytes AS start_ram_used_bytes, b.ram_used_bytes AS end_ram_used_bytes,
       b.ram_used_bytes - a.ram_used_bytes AS delta_ram_used_bytes,
       a.ram_available_bytes AS start_ram_available_bytes,
       b.ram_available_bytes AS end_ram_available_bytes,
       a.gpu_available AS start_gpu_available, b.gpu_available AS end_gpu_available,
       a.gpu_memory_used_bytes AS start_gpu_memory_used_bytes,
       b.gpu_memory_used_bytes AS end_gpu_memory_used_bytes,
       b.gpu_memory_used_bytes - a.gpu_memory_used_bytes AS delta_gpu_memory_used_bytes,
       a.gpu_memory_free_min_bytes AS start_gpu_memory_free_min_bytes,
       b.gpu_memory_free_min_bytes AS end_gpu_memory_free_min_bytes,
       b.gpu_memory_free_min_bytes - a.gpu_memory_free_min_bytes AS delta_gpu_memory_free_min_bytes,
       a.cgroup_memory_limit_bytes AS start_cgroup_memory_limit_bytes,
       a.cgroup_memory_used_bytes AS start_cgroup_memory_used_bytes,
       b.cgroup_memory_used_bytes AS end_cgroup_memory_used_bytes,
       b.cgroup_memory_used_bytes - a.cgroup_memory_used_bytes AS delta_cgroup_memory_used_bytes
FROM runs r
LEFT JOIN snapshot_summary a ON a.snapshot_id = r.start_snapshot_id
LEFT JOIN snapshot_summary b ON b.snapshot_id = r.end_snapshot_id;
