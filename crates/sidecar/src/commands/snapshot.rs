//! `runlens snapshot`: one sample, printed.
//!
//! The JSON form is the serde form of `probe_core::Snapshot` (documented in the README):
//! `{"taken_at_ns", "host": {...}, "gpu": {"available", "unavailable_reason", "devices"}}`.

use std::fmt::Write as _;

use probe_core::{HostProbe, Snapshot};

use super::build_sampler;
use crate::cli::{Format, SnapshotArgs};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::{bytes, percent, table, timestamp, wrap};

/// Samples once (after the short wait CPU utilization needs) and prints the result.
pub fn run(args: SnapshotArgs) -> Result<(), Failure> {
    let (mut sampler, _) = build_sampler(&args.probe)?;
    // CPU utilization, like GPU performance figures (GPM), is the change between two
    // readings at least this far apart: a first sample starts both intervals.
    let _ = sampler.sample();
    std::thread::sleep(HostProbe::cpu_warmup().max(probe_core::GPM_MIN_INTERVAL));
    let snapshot = sampler.sample();
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&snapshot)
            .map_err(|e| Failure::new(FAILURE, format!("cannot encode JSON: {e}")))?,
        Format::Table => render_table(&snapshot),
        Format::Csv => {
            return Err(Failure::new(
                USAGE,
                "snapshot prints table or json; csv is for `runlens query`",
            ));
        }
    };
    crate::format::emit(text.trim_end())?;
    Ok(())
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// The human form, readable in a 100-column terminal.
pub fn render_table(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "runlens snapshot at {}", timestamp(s.taken_at_ns));
    host_lines(&mut out, &s.host);
    cgroup_line(&mut out, s.cgroup.as_ref());
    gpu_table(&mut out, s);
    out
}

/// The CPU and RAM lines.
fn host_lines(out: &mut String, h: &probe_core::HostSnapshot) {
    let load = |v: Option<f64>| opt(v, |x| format!("{x:.2}"));
    let _ = writeln!(
        out,
        "CPU   {} cores  load {} {} {} (1/5/15 min)  utilization {}",
        h.cpu_count,
        load(h.cpu_load_1m),
        load(h.cpu_load_5m),
        load(h.cpu_load_15m),
        opt(h.cpu_utilization_ratio, percent),
    );
    if !h.cpu_core_utilization_ratio.is_empty() {
        let cores: Vec<String> = h
            .cpu_core_utilization_ratio
            .iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect();
        for chunk in cores.chunks(16) {
            let _ = writeln!(out, "      per core {}", chunk.join(" "));
        }
    }
    let used_share = if h.ram_total_bytes > 0 {
        percent(h.ram_used_bytes as f64 / h.ram_total_bytes as f64)
    } else {
        "-".to_owned()
    };
    let _ = writeln!(
        out,
        "RAM   used {} of {} ({used_share})  available {}  swap {} of {}",
        bytes(h.ram_used_bytes),
        bytes(h.ram_total_bytes),
        bytes(h.ram_available_bytes),
        bytes(h.swap_used_bytes),
        bytes(h.swap_total_bytes),
    );
}

/// The container's limits, or that none are readable.
fn cgroup_line(out: &mut String, cgroup: Option<&probe_core::CgroupSnapshot>) {
    match cgroup {
        Some(c) => {
            let limit = c
                .memory_limit_bytes
                .map_or_else(|| "no limit".to_owned(), bytes);
            let used = opt(c.memory_used_bytes, bytes);
            let share = match (c.memory_used_bytes, c.memory_limit_bytes) {
                (Some(u), Some(l)) if l > 0 => format!(" ({})", percent(u as f64 / l as f64)),
                _ => String::new(),
            };
            let cpu = c.cpu_quota_cores.map_or_else(
                || "no CPU quota".to_owned(),
                |q| format!("CPU quota {q:.2} cores"),
            );
            let throttled = opt(c.cpu_throttled_ns, |ns| format!("{:.1} s", ns as f64 / 1e9));
            let _ = writeln!(
                out,
                "CGRP  v{}  memory {used} of {limit}{share}  {cpu}  throttled {throttled}",
                c.version
            );
        }
        None => {
            let _ = writeln!(out, "CGRP  none readable");
        }
    }
}

/// A row per GPU, then a line of notes per GPU that has any (or why there are no GPUs).
fn gpu_table(out: &mut String, s: &Snapshot) {
    if !s.gpu.available {
        let reason = s
            .gpu
            .unavailable_reason
            .as_deref()
            .unwrap_or("unknown reason");
        for (i, line) in wrap(&format!("none: {reason}"), 94).iter().enumerate() {
            let _ = writeln!(out, "{}{line}", if i == 0 { "GPU   " } else { "      " });
        }
        return;
    }
    let _ = writeln!(out, "GPU   {} device(s)", s.gpu.devices.len());
    let headers: Vec<String> = [
        "IDX",
        "NAME",
        "STATE",
        "MEM USED",
        "MEM TOTAL",
        "MEM FREE",
        "UTIL",
        "MEM UTIL",
        "TEMP",
        "POWER",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = s
        .gpu
        .devices
        .iter()
        .map(|d| {
            vec![
                d.index.to_string(),
                d.name.clone().unwrap_or_else(|| "-".into()),
                d.state.as_str().to_owned(),
                opt(d.memory_used_bytes, bytes),
                opt(d.memory_total_bytes, bytes),
                opt(d.memory_free_bytes, bytes),
                opt(d.utilization_ratio, |r| format!("{:.0}%", r * 100.0)),
                opt(d.memory_utilization_ratio, |r| format!("{:.0}%", r * 100.0)),
                opt(d.temperature_celsius, |t| format!("{t:.0}C")),
                opt(d.power_watts, |w| format!("{w:.0} W")),
            ]
        })
        .collect();
    out.push_str(&table(&headers, &rows, 24));
    for d in &s.gpu.devices {
        gpu_notes(out, d);
    }
}

/// Held clocks, ECC errors, processes, MIG instances and unsupported metrics of a GPU.
fn gpu_notes(out: &mut String, d: &probe_core::GpuDevice) {
    let mut notes = Vec::new();
    if let Some(reasons) = d.clock_event_reasons {
        let names = probe_core::clock_event_reason_names(reasons);
        let held: Vec<&str> = names.into_iter().filter(|n| *n != "gpu_idle").collect();
        if !held.is_empty() {
            notes.push(format!("clocks held by {}", held.join(", ")));
        }
    }
    if let Some(n) = d.ecc_uncorrected_errors.filter(|n| *n > 0) {
        notes.push(format!("{n} uncorrected ECC errors"));
    }
    if !d.processes.is_empty() {
        let procs: Vec<String> = d
            .processes
            .iter()
            .map(|p| format!("{} ({})", p.pid, opt(p.used_memory_bytes, bytes)))
            .collect();
        notes.push(format!("processes {}", procs.join(", ")));
    }
    if !d.mig_devices.is_empty() {
        let migs: Vec<String> = d
            .mig_devices
            .iter()
            .map(|m| {
                format!(
                    "{} {} of {}",
                    m.uuid.as_deref().unwrap_or("?"),
                    opt(m.memory_used_bytes, bytes),
                    opt(m.memory_total_bytes, bytes)
                )
            })
            .collect();
        notes.push(format!("MIG: {}", migs.join(", ")));
    }
    if let Some(perf) = &d.perf {
        notes.push(format!(
            "over {:.1} s: {}",
            perf.interval_seconds,
            crate::figures::gpu_perf::describe(perf)
        ));
    }
    if !d.unsupported.is_empty() {
        notes.push(format!("not supported: {}", d.unsupported.join(", ")));
    }
    for (i, line) in wrap(&notes.join("; "), 90).iter().enumerate() {
        if !line.is_empty() {
            let lead = if i == 0 {
                format!("GPU {}:", d.index)
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {lead:<7}{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_core::{GpuDevice, GpuSnapshot, GpuState, HostSnapshot};

    fn host() -> HostSnapshot {
        HostSnapshot {
            cpu_load_1m: Some(0.5),
            cpu_load_5m: Some(0.25),
            cpu_load_15m: None,
            cpu_count: 2,
            cpu_utilization_ratio: Some(0.125),
            cpu_core_utilization_ratio: vec![0.1, 0.15],
            ram_total_bytes: 8 << 30,
            ram_used_bytes: 2 << 30,
            ram_available_bytes: 6 << 30,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
        }
    }

    #[test]
    fn table_without_gpu_says_why() {
        let s = Snapshot {
            taken_at_ns: 0,
            host: host(),
            gpu: GpuSnapshot::unavailable("NVML library not found"),
            cgroup: None,
            processes: vec![],
        };
        let text = render_table(&s);
        assert!(text.contains("load 0.50 0.25 - (1/5/15 min)"), "{text}");
        assert!(text.contains("used 2.0 GiB of 8.0 GiB (25.0%)"), "{text}");
        assert!(
            text.contains("GPU   none: NVML library not found"),
            "{text}"
        );
        let long = Snapshot {
            gpu: GpuSnapshot::unavailable("word ".repeat(60)),
            ..s
        };
        let text = render_table(&long);
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
        assert_eq!(text.matches("word").count(), 60);
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    }

    #[test]
    fn table_lists_each_gpu_with_missing_metrics_as_dashes() {
        let mut d = GpuDevice::bare(0, GpuState::Ok);
        d.name = Some("NVIDIA H100 80GB HBM3".into());
        d.memory_total_bytes = Some(80 << 30);
        d.memory_used_bytes = Some(1 << 30);
        d.memory_free_bytes = Some(79 << 30);
        d.utilization_ratio = Some(0.42);
        d.clock_event_reasons = Some(0x4 | 0x1);
        d.processes = vec![probe_core::GpuProcess {
            pid: 4242,
            used_memory_bytes: Some(1 << 30),
            pod_uid: None,
            container_id: None,
        }];
        let s = Snapshot {
            taken_at_ns: 0,
            host: host(),
            gpu: GpuSnapshot {
                available: true,
                unavailable_reason: None,
                devices: vec![d, GpuDevice::bare(1, GpuState::Lost)],
            },
            cgroup: Some(probe_core::CgroupSnapshot {
                version: 2,
                memory_limit_bytes: Some(4 << 30),
                memory_used_bytes: Some(3 << 30),
                cpu_quota_cores: Some(1.5),
                cpu_throttled_ns: Some(2_000_000_000),
            }),
            processes: vec![],
        };
        let text = render_table(&s);
        let row0 = text.lines().find(|l| l.starts_with("0 ")).unwrap();
        assert!(
            row0.contains("NVIDIA H100 80GB HBM3") && row0.contains("42%"),
            "{row0}"
        );
        assert!(row0.contains("80.0 GiB") && row0.ends_with('-'), "{row0}");
        assert!(
            text.contains("CGRP  v2  memory 3.0 GiB of 4.0 GiB (75.0%)  CPU quota 1.50 cores"),
            "{text}"
        );
        assert!(
            text.contains("  GPU 0: clocks held by sw_power_cap; processes 4242 (1.0 GiB)"),
            "{text}"
        );
        let row1 = text.lines().find(|l| l.starts_with("1 ")).unwrap();
        assert!(row1.contains("lost"), "{row1}");
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    }
}
