//! Values the unit tests share (compiled only for tests).

use probe_core::HostSnapshot;

/// A small host sample: 2 CPUs at load 0.5, 100 bytes of RAM with 40 used.
pub fn host_snapshot() -> HostSnapshot {
    HostSnapshot {
        cpu_load_1m: Some(0.5),
        cpu_load_5m: None,
        cpu_load_15m: None,
        cpu_count: 2,
        cpu_utilization_ratio: None,
        cpu_core_utilization_ratio: vec![],
        ram_total_bytes: 100,
        ram_used_bytes: 40,
        ram_available_bytes: 60,
        swap_total_bytes: 0,
        swap_used_bytes: 0,
    }
}
