//! The machine's figures, read from a sample: every GPU and MIG instance, the watched agents,
//! the host and the container.

use std::collections::HashMap;

use probe_core::{GpuDevice, GpuState, MigDevice, Snapshot};

use super::{Attribute, Figure, FigureUnit, Kind, Otlp, Point, Read};

/// Who a GPU's point is of: UUID, index and model on both sides; the OTLP export adds the
/// hardware conventions' `hw.type` and `hw.vendor` (constant here, so a scrape leaves them out).
pub fn gpu_attributes(d: &GpuDevice) -> Vec<Attribute> {
    vec![
        Attribute::both("hw_id", "hw.id", d.uuid.clone().unwrap_or_default()),
        Attribute::both("gpu", "gpu", d.index.to_string()),
        Attribute::both("hw_model", "hw.model", d.name.clone().unwrap_or_default()),
        Attribute {
            prometheus: None,
            otlp: Some("hw.type"),
            value: "gpu".to_owned(),
        },
        Attribute {
            prometheus: None,
            otlp: Some("hw.vendor"),
            value: "nvidia".to_owned(),
        },
    ]
}

/// Who a MIG instance's point is of.
fn mig_attributes(d: &GpuDevice, m: &MigDevice) -> Vec<Attribute> {
    vec![
        Attribute::both("hw_id", "hw.id", m.uuid.clone().unwrap_or_default()),
        Attribute::both("gpu", "gpu", d.index.to_string()),
        Attribute::both("mig", "mig", m.index.to_string()),
    ]
}

/// Who an agent's point is of: its PID, and on a scrape the name its client gave (the OTLP
/// export reads stored samples, which do not keep client names).
fn agent_attributes(pid: u32, clients: &HashMap<u32, String>) -> Vec<Attribute> {
    vec![
        Attribute {
            prometheus: Some("client"),
            otlp: None,
            value: clients.get(&pid).cloned().unwrap_or_default(),
        },
        Attribute::both("pid", "process.pid", pid.to_string()),
    ]
}

/// One point per GPU that has the value.
fn per_gpu(s: &Snapshot, value: impl Fn(&GpuDevice) -> Option<f64>) -> Vec<Point> {
    s.gpu
        .devices
        .iter()
        .filter_map(|d| Some(Point::new(gpu_attributes(d), value(d)?)))
        .collect()
}

/// One point per MIG instance that has the value.
fn per_mig(s: &Snapshot, value: impl Fn(&MigDevice) -> Option<f64>) -> Vec<Point> {
    s.gpu
        .devices
        .iter()
        .flat_map(|d| {
            d.mig_devices
                .iter()
                .filter_map(|m| Some(Point::new(mig_attributes(d, m), value(m)?)))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A lone point without attributes, when there is a value.
fn lone(value: Option<f64>) -> Vec<Point> {
    value
        .map(|v| Point::new(Vec::new(), v))
        .into_iter()
        .collect()
}

/// Why a figure stays off the OTLP export: a point's time already says it.
const OTLP_POINTS_CARRY_TIME: &str = "every OTLP point carries its sample's time";

/// The machine's figures, in the order a scrape shows them.
pub const FIGURES: [Figure; 25] = [
    Figure {
        prometheus: "hw_gpu_up",
        otlp: Otlp::Name("hw.gpu.up"),
        convention: None,
        unit: FigureUnit::Count("1"),
        kind: Kind::Gauge,
        help: "1 while the GPU answers NVML, 0 when it is lost or in error",
        read: Read::Sample(|s, _| {
            s.gpu
                .devices
                .iter()
                .map(|d| {
                    let up = f64::from(u8::from(d.state == GpuState::Ok));
                    Point::new(gpu_attributes(d), up)
                })
                .collect()
        }),
    },
    Figure {
        prometheus: "hw_gpu_memory_usage",
        otlp: Otlp::Name("hw.gpu.memory.usage"),
        convention: Some("hw.gpu.memory.usage"),
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "GPU memory in use",
        read: Read::Sample(|s, _| per_gpu(s, |d| Some(d.memory_used_bytes? as f64))),
    },
    Figure {
        prometheus: "hw_gpu_memory_limit",
        otlp: Otlp::Name("hw.gpu.memory.limit"),
        convention: Some("hw.gpu.memory.limit"),
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "GPU memory in all",
        read: Read::Sample(|s, _| per_gpu(s, |d| Some(d.memory_total_bytes? as f64))),
    },
    Figure {
        prometheus: "hw_gpu_memory_free",
        otlp: Otlp::Name("hw.gpu.memory.free"),
        convention: None,
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "GPU memory free",
        read: Read::Sample(|s, _| per_gpu(s, |d| Some(d.memory_free_bytes? as f64))),
    },
    Figure {
        prometheus: "hw_gpu_utilization",
        otlp: Otlp::Name("hw.gpu.utilization"),
        convention: Some("hw.gpu.utilization"),
        unit: FigureUnit::Ratio,
        kind: Kind::Gauge,
        help: "Share of time a kernel ran",
        read: Read::Sample(|s, _| per_gpu(s, |d| d.utilization_ratio)),
    },
    Figure {
        prometheus: "hw_gpu_memory_utilization",
        otlp: Otlp::Name("hw.gpu.memory.utilization"),
        convention: Some("hw.gpu.memory.utilization"),
        unit: FigureUnit::Ratio,
        kind: Kind::Gauge,
        help: "Share of time memory was read or written",
        read: Read::Sample(|s, _| per_gpu(s, |d| d.memory_utilization_ratio)),
    },
    Figure {
        prometheus: "hw_gpu_temperature",
        otlp: Otlp::Name("hw.gpu.temperature"),
        convention: None,
        unit: FigureUnit::Celsius,
        kind: Kind::Gauge,
        help: "GPU temperature",
        read: Read::Sample(|s, _| per_gpu(s, |d| d.temperature_celsius)),
    },
    Figure {
        prometheus: "hw_gpu_power",
        otlp: Otlp::Name("hw.gpu.power"),
        convention: None,
        unit: FigureUnit::Watts,
        kind: Kind::Gauge,
        help: "GPU power draw",
        read: Read::Sample(|s, _| per_gpu(s, |d| d.power_watts)),
    },
    Figure {
        prometheus: "hw_gpu_power_limit",
        otlp: Otlp::Name("hw.gpu.power.limit"),
        convention: None,
        unit: FigureUnit::Watts,
        kind: Kind::Gauge,
        help: "GPU power limit",
        read: Read::Sample(|s, _| per_gpu(s, |d| d.power_limit_watts)),
    },
    Figure {
        prometheus: "hw_gpu_clock_sm",
        otlp: Otlp::Name("hw.gpu.clock.sm"),
        convention: None,
        unit: FigureUnit::Hertz,
        kind: Kind::Gauge,
        help: "SM clock",
        read: Read::Sample(|s, _| per_gpu(s, |d| Some(f64::from(d.clock_sm_mhz?) * 1e6))),
    },
    Figure {
        prometheus: "hw_gpu_throttled",
        otlp: Otlp::Name("hw.gpu.throttled"),
        convention: None,
        unit: FigureUnit::Count("1"),
        kind: Kind::Gauge,
        help: "1 for each reason the GPU's clocks are held down now",
        read: Read::Sample(|s, _| {
            s.gpu
                .devices
                .iter()
                .flat_map(|d| {
                    d.clock_event_reasons
                        .map(probe_core::clock_event_reason_names)
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |reason| {
                            let mut attributes = gpu_attributes(d);
                            attributes.push(Attribute::both("reason", "reason", reason));
                            Point::new(attributes, 1.0)
                        })
                })
                .collect()
        }),
    },
    Figure {
        prometheus: "hw_errors",
        otlp: Otlp::Name("hw.errors"),
        convention: Some("hw.errors"),
        unit: FigureUnit::Count("{error}"),
        kind: Kind::Counter,
        help: "GPU memory ECC errors since the driver loaded",
        read: Read::Sample(|s, _| {
            s.gpu
                .devices
                .iter()
                .flat_map(|d| {
                    [
                        ("corrected", d.ecc_corrected_errors),
                        ("uncorrected", d.ecc_uncorrected_errors),
                    ]
                    .into_iter()
                    .filter_map(move |(kind, n)| {
                        let mut attributes = gpu_attributes(d);
                        attributes.push(Attribute::both("error_type", "error.type", kind));
                        Some(Point::new(attributes, n? as f64))
                    })
                })
                .collect()
        }),
    },
    Figure {
        prometheus: "hw_gpu_mig_memory_usage",
        otlp: Otlp::Name("hw.gpu.mig.memory.usage"),
        convention: None,
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "Memory in use on a MIG instance",
        read: Read::Sample(|s, _| per_mig(s, |m| Some(m.memory_used_bytes? as f64))),
    },
    Figure {
        prometheus: "hw_gpu_mig_memory_limit",
        otlp: Otlp::Name("hw.gpu.mig.memory.limit"),
        convention: None,
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "Memory of a MIG instance",
        read: Read::Sample(|s, _| per_mig(s, |m| Some(m.memory_total_bytes? as f64))),
    },
    Figure {
        prometheus: "process_memory_usage",
        otlp: Otlp::Name("process.memory.usage"),
        convention: Some("process.memory.usage"),
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "Resident memory of a watched agent and its children",
        read: Read::Sample(|s, clients| {
            s.processes
                .iter()
                .map(|p| Point::new(agent_attributes(p.pid, clients), p.rss_bytes as f64))
                .collect()
        }),
    },
    Figure {
        prometheus: "process_gpu_memory_usage",
        otlp: Otlp::Name("process.gpu.memory.usage"),
        convention: None,
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "GPU memory a watched agent and its children hold, per GPU",
        read: Read::Sample(|s, clients| {
            s.processes
                .iter()
                .flat_map(|p| {
                    p.gpus.iter().map(move |g| {
                        let mut attributes = agent_attributes(p.pid, clients);
                        attributes.push(Attribute::both("gpu", "gpu", g.gpu_index.to_string()));
                        Point::new(attributes, g.used_memory_bytes as f64)
                    })
                })
                .collect()
        }),
    },
    Figure {
        prometheus: "system_cpu_utilization",
        otlp: Otlp::Name("system.cpu.utilization"),
        convention: Some("system.cpu.utilization"),
        unit: FigureUnit::Ratio,
        kind: Kind::Gauge,
        help: "Share of CPU time busy, all cores",
        read: Read::Sample(|s, _| lone(s.host.cpu_utilization_ratio)),
    },
    Figure {
        prometheus: "system_cpu_load_average_1m",
        otlp: Otlp::Name("system.cpu.load_average.1m"),
        convention: None,
        unit: FigureUnit::Count("1"),
        kind: Kind::Gauge,
        help: "1-minute load average",
        read: Read::Sample(|s, _| lone(s.host.cpu_load_1m)),
    },
    Figure {
        prometheus: "system_cpu_logical_cpus",
        otlp: Otlp::Name("system.cpu.logical.count"),
        convention: Some("system.cpu.logical.count"),
        unit: FigureUnit::Count("{cpu}"),
        kind: Kind::Gauge,
        help: "Logical CPUs",
        read: Read::Sample(|s, _| lone(Some(f64::from(s.host.cpu_count)))),
    },
    Figure {
        prometheus: "system_memory_usage",
        otlp: Otlp::Name("system.memory.usage"),
        convention: Some("system.memory.usage"),
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "Host memory by state (used, free: available to new work)",
        read: Read::Sample(|s, _| {
            let state = |v: &str| vec![Attribute::both("state", "system.memory.state", v)];
            vec![
                Point::new(state("used"), s.host.ram_used_bytes as f64),
                Point::new(state("free"), s.host.ram_available_bytes as f64),
            ]
        }),
    },
    Figure {
        prometheus: "system_memory_limit",
        otlp: Otlp::Name("system.memory.limit"),
        convention: Some("system.memory.limit"),
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "Host memory in all",
        read: Read::Sample(|s, _| lone(Some(s.host.ram_total_bytes as f64))),
    },
    Figure {
        prometheus: "container_memory_usage",
        otlp: Otlp::Name("container.memory.usage"),
        convention: Some("container.memory.usage"),
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "The container's memory use, without reclaimable page cache",
        read: Read::Sample(|s, _| {
            lone(
                s.cgroup
                    .as_ref()
                    .and_then(|c| Some(c.memory_used_bytes? as f64)),
            )
        }),
    },
    Figure {
        prometheus: "container_memory_limit",
        otlp: Otlp::Name("container.memory.limit"),
        convention: None,
        unit: FigureUnit::Bytes,
        kind: Kind::Gauge,
        help: "The container's memory limit (absent when there is none)",
        read: Read::Sample(|s, _| {
            lone(
                s.cgroup
                    .as_ref()
                    .and_then(|c| Some(c.memory_limit_bytes? as f64)),
            )
        }),
    },
    Figure {
        prometheus: "container_cpu_throttled",
        otlp: Otlp::Name("container.cpu.throttled"),
        convention: None,
        unit: FigureUnit::Seconds,
        kind: Kind::Counter,
        help: "Time the container's CPU quota held it back",
        read: Read::Sample(|s, _| {
            lone(
                s.cgroup
                    .as_ref()
                    .and_then(|c| Some(c.cpu_throttled_ns? as f64 / 1e9)),
            )
        }),
    },
    Figure {
        prometheus: "runlens_sample_timestamp",
        otlp: Otlp::Not(OTLP_POINTS_CARRY_TIME),
        convention: None,
        unit: FigureUnit::Seconds,
        kind: Kind::Gauge,
        help: "When the latest sample was taken, Unix time",
        read: Read::Sample(|s, _| lone(Some(s.taken_at_ns as f64 / 1e9))),
    },
];
