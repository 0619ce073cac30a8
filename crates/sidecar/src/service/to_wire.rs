//! Conversions from probe-core types to wire types: the one place where a sample becomes a
//! `runlens.v1` message (the api crate stays free of probe-core, so agents linking the
//! client do not link NVML or sysinfo).

use runlens_api::pb;

/// Converts a sample to its wire form; `snapshot_id` is the stored row id (0 = not stored).
pub fn snapshot_to_wire(snapshot: &probe_core::Snapshot, snapshot_id: i64) -> pb::Snapshot {
    let h = &snapshot.host;
    pb::Snapshot {
        snapshot_id,
        taken_at_ns: snapshot.taken_at_ns,
        host: Some(pb::HostResources {
            cpu_load_1m: h.cpu_load_1m,
            cpu_load_5m: h.cpu_load_5m,
            cpu_load_15m: h.cpu_load_15m,
            cpu_count: h.cpu_count,
            cpu_utilization_ratio: h.cpu_utilization_ratio,
            cpu_core_utilization_ratio: h.cpu_core_utilization_ratio.clone(),
            ram_total_bytes: h.ram_total_bytes,
            ram_used_bytes: h.ram_used_bytes,
            ram_available_bytes: h.ram_available_bytes,
            swap_total_bytes: h.swap_total_bytes,
            swap_used_bytes: h.swap_used_bytes,
        }),
        gpu_available: snapshot.gpu.available,
        gpu_unavailable_reason: snapshot.gpu.unavailable_reason.clone().unwrap_or_default(),
        gpus: snapshot.gpu.devices.iter().map(gpu_to_wire).collect(),
        cgroup: snapshot.cgroup.as_ref().map(|c| pb::CgroupResources {
            version: u32::from(c.version),
            memory_limit_bytes: c.memory_limit_bytes,
            memory_used_bytes: c.memory_used_bytes,
            cpu_quota_cores: c.cpu_quota_cores,
            cpu_throttled_ns: c.cpu_throttled_ns,
        }),
        agent_processes: snapshot
            .processes
            .iter()
            .map(|p| pb::AgentProcess {
                pid: p.pid,
                process_count: p.process_count,
                rss_bytes: p.rss_bytes,
                cpu_ratio: p.cpu_ratio,
                gpu_memory_bytes: p.gpu_memory_bytes,
                gpus: p
                    .gpus
                    .iter()
                    .map(|g| pb::AgentGpuMemory {
                        gpu_index: g.gpu_index,
                        used_memory_bytes: g.used_memory_bytes,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn gpu_to_wire(d: &probe_core::GpuDevice) -> pb::GpuResources {
    pb::GpuResources {
        index: d.index,
        uuid: d.uuid.clone().unwrap_or_default(),
        name: d.name.clone().unwrap_or_default(),
        state: d.state.as_str().to_owned(),
        memory_total_bytes: d.memory_total_bytes,
        memory_used_bytes: d.memory_used_bytes,
        memory_free_bytes: d.memory_free_bytes,
        utilization_ratio: d.utilization_ratio,
        memory_utilization_ratio: d.memory_utilization_ratio,
        temperature_celsius: d.temperature_celsius,
        power_watts: d.power_watts,
        memory_reserved_bytes: d.memory_reserved_bytes,
        power_limit_watts: d.power_limit_watts,
        clock_sm_mhz: d.clock_sm_mhz,
        clock_memory_mhz: d.clock_memory_mhz,
        performance_state: d.performance_state,
        clock_event_reasons: d.clock_event_reasons,
        ecc_corrected_errors: d.ecc_corrected_errors,
        ecc_uncorrected_errors: d.ecc_uncorrected_errors,
        processes: d
            .processes
            .iter()
            .map(|p| pb::GpuProcess {
                pid: p.pid,
                used_memory_bytes: p.used_memory_bytes,
                pod_uid: p.pod_uid.clone(),
                container_id: p.container_id.clone(),
            })
            .collect(),
        mig_enabled: d.mig_enabled,
        mig_devices: d
            .mig_devices
            .iter()
            .map(|m| pb::MigDevice {
                index: m.index,
                uuid: m.uuid.clone().unwrap_or_default(),
                memory_total_bytes: m.memory_total_bytes,
                memory_used_bytes: m.memory_used_bytes,
                memory_free_bytes: m.memory_free_bytes,
            })
            .collect(),
        perf: d.perf.map(|p| pb::GpuPerf {
            interval_seconds: p.interval_seconds,
            sm_active_ratio: p.sm_active_ratio,
            sm_occupancy_ratio: p.sm_occupancy_ratio,
            tensor_active_ratio: p.tensor_active_ratio,
            tensor_hmma_active_ratio: p.tensor_hmma_active_ratio,
            dram_bandwidth_ratio: p.dram_bandwidth_ratio,
            fp16_active_ratio: p.fp16_active_ratio,
            fp32_active_ratio: p.fp32_active_ratio,
            pcie_tx_bytes_per_second: p.pcie_tx_bytes_per_second,
            pcie_rx_bytes_per_second: p.pcie_rx_bytes_per_second,
            nvlink_tx_bytes_per_second: p.nvlink_tx_bytes_per_second,
            nvlink_rx_bytes_per_second: p.nvlink_rx_bytes_per_second,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_core::{GpuDevice, GpuSnapshot, GpuState, Snapshot};

    #[test]
    fn absent_gpu_metrics_stay_absent_on_the_wire() {
        let mut dev = GpuDevice::bare(1, GpuState::Lost);
        dev.uuid = Some("GPU-1".into());
        dev.processes = vec![probe_core::GpuProcess {
            pid: 4242,
            used_memory_bytes: None,
            pod_uid: Some("7c1b4d2e-9f3a-4b5c-8d6e-0f1a2b3c4d5e".into()),
            container_id: None,
        }];
        let snap = Snapshot {
            taken_at_ns: 42,
            host: crate::test_fixtures::host_snapshot(),
            gpu: GpuSnapshot {
                available: true,
                unavailable_reason: None,
                devices: vec![dev],
            },
            cgroup: None,
            processes: vec![],
        };
        let wire = snapshot_to_wire(&snap, 7);
        assert_eq!(wire.snapshot_id, 7);
        assert_eq!(wire.host.as_ref().map(|h| h.ram_used_bytes), Some(40));
        assert_eq!(wire.gpus[0].state, "lost");
        assert_eq!(wire.gpus[0].uuid, "GPU-1");
        assert_eq!(wire.gpus[0].memory_free_bytes, None);
        let process = &wire.gpus[0].processes[0];
        assert_eq!(
            (
                process.pid,
                process.used_memory_bytes,
                process.container_id.as_deref()
            ),
            (4242, None, None)
        );
        assert_eq!(
            process.pod_uid.as_deref(),
            Some("7c1b4d2e-9f3a-4b5c-8d6e-0f1a2b3c4d5e")
        );
    }
}
