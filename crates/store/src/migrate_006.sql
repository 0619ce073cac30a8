-- Schema version 6: `span_resources` and `run_resources` carry what the span or run
-- itself says, not only its resources: the span's `kind` and `attributes` (JSON), the
-- run's `attributes` (JSON) and `ended_by`. Appended after the existing columns, so
-- queries that name columns, or read them by position, keep working.
DROP VIEW span_resources;
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
       b.cgroup_memory_used_bytes - a.cgroup_memory_used_bytes AS delta_cgroup_memory_used_bytes,
       sp.kind, sp.attributes
FROM spans sp
LEFT JOIN snapshot_summary a ON a.snapshot_id = sp.start_snapshot_id
LEFT JOIN snapshot_summary b ON b.snapshot_id = sp.end_snapshot_id;

DROP VIEW run_resources;
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
       b.cgroup_memory_used_bytes - a.cgroup_memory_used_bytes AS delta_cgroup_memory_used_bytes,
       r.attributes, r.ended_by
FROM runs r
LEFT JOIN snapshot_summary a ON a.snapshot_id = r.start_snapshot_id
LEFT JOIN snapshot_summary b ON b.snapshot_id = r.end_snapshot_id;
