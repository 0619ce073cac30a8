-- Schema version 9: what kind of busy each GPU was (NVML's GPU performance monitoring,
-- Hopper and newer), over the interval since the GPU's previous performance sample. NULL
-- on GPUs without it (pre-Hopper, MIG mode, older drivers) and on a GPU's first sample.
-- Ratios are 0..1; traffic is bytes per second.
ALTER TABLE gpu_samples ADD COLUMN sm_active_ratio REAL;
ALTER TABLE gpu_samples ADD COLUMN sm_occupancy_ratio REAL;
ALTER TABLE gpu_samples ADD COLUMN tensor_active_ratio REAL;
ALTER TABLE gpu_samples ADD COLUMN tensor_hmma_active_ratio REAL;
ALTER TABLE gpu_samples ADD COLUMN dram_bandwidth_ratio REAL;
ALTER TABLE gpu_samples ADD COLUMN fp16_active_ratio REAL;
ALTER TABLE gpu_samples ADD COLUMN fp32_active_ratio REAL;
ALTER TABLE gpu_samples ADD COLUMN pcie_tx_bytes_per_second REAL;
ALTER TABLE gpu_samples ADD COLUMN pcie_rx_bytes_per_second REAL;
ALTER TABLE gpu_samples ADD COLUMN nvlink_tx_bytes_per_second REAL;
ALTER TABLE gpu_samples ADD COLUMN nvlink_rx_bytes_per_second REAL;
ALTER TABLE gpu_samples ADD COLUMN gpm_interval_seconds REAL;

-- The busiest GPU's SM activity, tensor activity and memory bandwidth per snapshot,
-- appended to `snapshot_summary`; their values at a span's start and end appended to
-- `span_resources`. Existing columns keep their names and positions.
DROP VIEW span_resources;
DROP VIEW snapshot_summary;
CREATE VIEW snapshot_summary AS
SELECT s.*,
       g.gpu_memory_used_bytes,
       g.gpu_memory_total_bytes,
       g.gpu_memory_free_min_bytes,
       g.gpu_utilization_max_ratio,
       g.gpu_lost_count,
       g.gpu_sm_active_max_ratio,
       g.gpu_tensor_max_ratio,
       g.gpu_dram_bw_max_ratio
FROM snapshots s
LEFT JOIN (
    SELECT snapshot_id,
           sum(memory_used_bytes)     AS gpu_memory_used_bytes,
           sum(memory_total_bytes)    AS gpu_memory_total_bytes,
           min(memory_free_bytes)     AS gpu_memory_free_min_bytes,
           max(utilization_ratio)     AS gpu_utilization_max_ratio,
           sum(state = 'lost')        AS gpu_lost_count,
           max(sm_active_ratio)       AS gpu_sm_active_max_ratio,
           max(tensor_active_ratio)   AS gpu_tensor_max_ratio,
           max(dram_bandwidth_ratio)  AS gpu_dram_bw_max_ratio
    FROM gpu_samples GROUP BY snapshot_id
) g USING (snapshot_id);

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
       sp.kind, sp.attributes,
       a.gpu_sm_active_max_ratio AS start_gpu_sm_active_max_ratio,
       b.gpu_sm_active_max_ratio AS end_gpu_sm_active_max_ratio,
       a.gpu_tensor_max_ratio AS start_gpu_tensor_max_ratio,
       b.gpu_tensor_max_ratio AS end_gpu_tensor_max_ratio,
       a.gpu_dram_bw_max_ratio AS start_gpu_dram_bw_max_ratio,
       b.gpu_dram_bw_max_ratio AS end_gpu_dram_bw_max_ratio
FROM spans sp
LEFT JOIN snapshot_summary a ON a.snapshot_id = sp.start_snapshot_id
LEFT JOIN snapshot_summary b ON b.snapshot_id = sp.end_snapshot_id;
