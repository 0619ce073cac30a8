//! The SQL of a snapshot: its host row, a row per GPU (with its MIG instances and
//! processes), and a row per watched agent (with its memory per GPU).

use rusqlite::{Connection, params};

use super::rows::StoredSnapshot;
use super::sql_int as bytes;

/// Writes a snapshot and every row that hangs off it.
pub(super) fn write_snapshot(tx: &Connection, s: &StoredSnapshot) -> rusqlite::Result<()> {
    host_row(tx, s)?;
    gpu_rows(tx, s)?;
    agent_rows(tx, s)
}

/// The `snapshots` row: host, cgroup and whether GPUs were readable.
fn host_row(tx: &Connection, s: &StoredSnapshot) -> rusqlite::Result<()> {
    let h = &s.snapshot.host;
    let g = &s.snapshot.gpu;
    let c = s.snapshot.cgroup.as_ref();
    let cores = if h.cpu_core_utilization_ratio.is_empty() {
        None
    } else {
        serde_json::to_string(&h.cpu_core_utilization_ratio).ok()
    };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO snapshots (snapshot_id, taken_at_ns, reason, gpu_available,
            gpu_unavailable_reason, gpu_count, cpu_count, cpu_load_1m, cpu_load_5m, cpu_load_15m,
            cpu_utilization_ratio, cpu_core_utilization, ram_total_bytes, ram_used_bytes,
            ram_available_bytes, swap_total_bytes, swap_used_bytes, cgroup_version,
            cgroup_memory_limit_bytes, cgroup_memory_used_bytes, cgroup_cpu_quota_cores,
            cgroup_cpu_throttled_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22)",
    )?
    .execute(params![
        s.id,
        s.snapshot.taken_at_ns,
        s.reason,
        g.available,
        g.unavailable_reason,
        g.devices.len() as i64,
        h.cpu_count,
        h.cpu_load_1m,
        h.cpu_load_5m,
        h.cpu_load_15m,
        h.cpu_utilization_ratio,
        cores,
        bytes(h.ram_total_bytes),
        bytes(h.ram_used_bytes),
        bytes(h.ram_available_bytes),
        bytes(h.swap_total_bytes),
        bytes(h.swap_used_bytes),
        c.map(|c| c.version),
        c.and_then(|c| c.memory_limit_bytes).map(bytes),
        c.and_then(|c| c.memory_used_bytes).map(bytes),
        c.and_then(|c| c.cpu_quota_cores),
        c.and_then(|c| c.cpu_throttled_ns).map(bytes),
    ])?;
    Ok(())
}

/// A `gpu_samples` row per GPU, with its `mig_samples` and `gpu_processes` rows.
fn gpu_rows(tx: &Connection, s: &StoredSnapshot) -> rusqlite::Result<()> {
    let g = &s.snapshot.gpu;
    let mut gpu = tx.prepare_cached(
        "INSERT OR IGNORE INTO gpu_samples (snapshot_id, gpu_index, uuid, name, state,
            memory_total_bytes, memory_used_bytes, memory_free_bytes, utilization_ratio,
            memory_utilization_ratio, temperature_celsius, power_watts, memory_reserved_bytes,
            power_limit_watts, clock_sm_mhz, clock_memory_mhz, performance_state,
            clock_event_reasons, clock_event_reason_names, ecc_corrected_errors,
            ecc_uncorrected_errors, mig_enabled, sm_active_ratio, sm_occupancy_ratio,
            tensor_active_ratio, tensor_hmma_active_ratio, dram_bandwidth_ratio,
            fp16_active_ratio, fp32_active_ratio, pcie_tx_bytes_per_second,
            pcie_rx_bytes_per_second, nvlink_tx_bytes_per_second, nvlink_rx_bytes_per_second,
            gpm_interval_seconds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32,
                 ?33, ?34)",
    )?;
    let mut mig = tx.prepare_cached(
        "INSERT OR IGNORE INTO mig_samples (snapshot_id, gpu_index, mig_index, uuid,
            memory_total_bytes, memory_used_bytes, memory_free_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut process = tx.prepare_cached(
        "INSERT OR IGNORE INTO gpu_processes (snapshot_id, gpu_index, pid, used_memory_bytes,
            pod_uid, container_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for d in &g.devices {
        let perf = d.perf.unwrap_or_default();
        let gpm = d.perf.is_some();
        gpu.execute(params![
            s.id,
            d.index,
            d.uuid,
            d.name,
            d.state.as_str(),
            d.memory_total_bytes.map(bytes),
            d.memory_used_bytes.map(bytes),
            d.memory_free_bytes.map(bytes),
            d.utilization_ratio,
            d.memory_utilization_ratio,
            d.temperature_celsius,
            d.power_watts,
            d.memory_reserved_bytes.map(bytes),
            d.power_limit_watts,
            d.clock_sm_mhz,
            d.clock_memory_mhz,
            d.performance_state,
            d.clock_event_reasons.map(bytes),
            d.clock_event_reasons
                .map(|m| probe_core::clock_event_reason_names(m).join(",")),
            d.ecc_corrected_errors.map(bytes),
            d.ecc_uncorrected_errors.map(bytes),
            d.mig_enabled,
            perf.sm_active_ratio,
            perf.sm_occupancy_ratio,
            perf.tensor_active_ratio,
            perf.tensor_hmma_active_ratio,
            perf.dram_bandwidth_ratio,
            perf.fp16_active_ratio,
            perf.fp32_active_ratio,
            perf.pcie_tx_bytes_per_second,
            perf.pcie_rx_bytes_per_second,
            perf.nvlink_tx_bytes_per_second,
            perf.nvlink_rx_bytes_per_second,
            gpm.then_some(perf.interval_seconds),
        ])?;
        for m in &d.mig_devices {
            mig.execute(params![
                s.id,
                d.index,
                m.index,
                m.uuid,
                m.memory_total_bytes.map(bytes),
                m.memory_used_bytes.map(bytes),
                m.memory_free_bytes.map(bytes)
            ])?;
        }
        for p in &d.processes {
            process.execute(params![
                s.id,
                d.index,
                p.pid,
                p.used_memory_bytes.map(bytes),
                p.pod_uid,
                p.container_id
            ])?;
        }
    }
    Ok(())
}

/// A `process_samples` row per watched agent, with its `process_gpu_samples` rows.
fn agent_rows(tx: &Connection, s: &StoredSnapshot) -> rusqlite::Result<()> {
    if !s.snapshot.processes.is_empty() {
        let mut agent = tx.prepare_cached(
            "INSERT OR IGNORE INTO process_samples (snapshot_id, pid, process_count, rss_bytes,
                cpu_ratio, gpu_memory_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut per_gpu = tx.prepare_cached(
            "INSERT OR IGNORE INTO process_gpu_samples (snapshot_id, pid, gpu_index,
                used_memory_bytes)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for p in &s.snapshot.processes {
            agent.execute(params![
                s.id,
                p.pid,
                p.process_count,
                bytes(p.rss_bytes),
                p.cpu_ratio,
                p.gpu_memory_bytes.map(bytes)
            ])?;
            for g in &p.gpus {
                per_gpu.execute(params![
                    s.id,
                    p.pid,
                    g.gpu_index,
                    bytes(g.used_memory_bytes)
                ])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use probe_core::{GpuDevice, GpuProcess, GpuSnapshot, GpuState, Snapshot};

    use super::*;
    use crate::read::Reader;

    #[test]
    fn a_gpu_process_keeps_its_pod_and_container_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pods.db");
        let mut conn = crate::open_for_writing(&db, false, None).unwrap();
        let mut device = GpuDevice::bare(0, GpuState::Ok);
        device.processes = vec![
            GpuProcess {
                pid: 4242,
                used_memory_bytes: Some(1 << 30),
                pod_uid: Some("7c1b4d2e-9f3a-4b5c-8d6e-0f1a2b3c4d5e".into()),
                container_id: Some("abc123def456".into()),
            },
            GpuProcess {
                pid: 77,
                used_memory_bytes: None,
                pod_uid: None,
                container_id: None,
            },
        ];
        let stored = StoredSnapshot {
            id: 1,
            reason: "interval",
            snapshot: Snapshot {
                taken_at_ns: 1,
                host: crate::test_fixtures::host_snapshot(),
                gpu: GpuSnapshot {
                    available: true,
                    unavailable_reason: None,
                    devices: vec![device.clone()],
                },
                cgroup: None,
                processes: vec![],
            },
            taken: Instant::now(),
        };
        let tx = conn.transaction().unwrap();
        write_snapshot(&tx, &stored).unwrap();
        tx.commit().unwrap();
        let read = Reader::open(&db).unwrap().snapshot(1).unwrap().unwrap();
        let mut expected = device.processes;
        expected.sort_by_key(|p| p.pid);
        assert_eq!(read.gpu.devices[0].processes, expected);
    }
}
