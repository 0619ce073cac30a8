-- Schema version 7: every database says where it came from, and databases of many pods
-- merge into one (`runlens merge`).
--
-- One row per `runlens serve` start: its version and its resource, from
-- OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (in a pod: k8s.pod.name,
-- k8s.namespace.name, k8s.node.name ... through the downward API), as a JSON object.
CREATE TABLE sidecar_starts (
    started_at_ns  INTEGER NOT NULL,
    version        TEXT    NOT NULL,
    resource       TEXT    NOT NULL,  -- JSON object, {} when the environment says nothing
    source_id      INTEGER            -- set by `runlens merge`, as below
);

-- In a merged database: each database merged in, with the resource its latest sidecar
-- start recorded. Rows that came from it carry its source_id; rows a sidecar wrote here
-- directly leave it NULL.
CREATE TABLE merge_sources (
    source_id     INTEGER PRIMARY KEY,
    path          TEXT    NOT NULL,
    resource      TEXT,
    merged_at_ns  INTEGER NOT NULL
);
ALTER TABLE snapshots ADD COLUMN source_id INTEGER;
ALTER TABLE runs ADD COLUMN source_id INTEGER;
ALTER TABLE spans ADD COLUMN source_id INTEGER;
ALTER TABLE events ADD COLUMN source_id INTEGER;
ALTER TABLE clients ADD COLUMN source_id INTEGER;

-- A GPU process's Kubernetes pod and container, when the sidecar runs in the host PID
-- namespace (hostPID) and the process's cgroup names them; NULL otherwise.
ALTER TABLE gpu_processes ADD COLUMN pod_uid TEXT;
ALTER TABLE gpu_processes ADD COLUMN container_id TEXT;

-- The agent's NVIDIA_VISIBLE_DEVICES from hello (in Kubernetes: its pod's GPU UUIDs).
ALTER TABLE clients ADD COLUMN nvidia_visible_devices TEXT;
