//! One full sample: host plus GPUs.

use crate::cgroup::{CgroupProbe, CgroupReader};
use crate::gpu::GpuProbe;
use crate::host::HostProbe;
use crate::process::{ProcessProbe, WatchOutcome};
use crate::snapshot::{ProcessGpuMemory, Snapshot};
use crate::time::unix_now_ns;

/// Produces [`Snapshot`]s. Cheap to call repeatedly: all probes stay loaded between calls.
pub struct Sampler {
    host: HostProbe,
    gpu: Box<dyn GpuProbe>,
    cgroup: CgroupReader,
    processes: ProcessProbe,
}

impl Sampler {
    /// A sampler over this host, these GPUs and this process's own cgroup.
    pub fn new(host: HostProbe, gpu: Box<dyn GpuProbe>) -> Self {
        Self::with_cgroup(host, gpu, CgroupProbe::detect())
    }

    /// A sampler reading the given cgroup (fixtures in tests, `--cgroup-root`).
    pub fn with_cgroup(host: HostProbe, gpu: Box<dyn GpuProbe>, cgroup: CgroupProbe) -> Self {
        Self {
            host,
            gpu,
            cgroup: CgroupReader::new(cgroup),
            processes: ProcessProbe::new(),
        }
    }

    /// Starts recording this agent process (and its descendants) in every sample.
    pub fn watch_process(&mut self, pid: u32) -> WatchOutcome {
        self.processes.watch(pid)
    }

    /// Takes one sample now.
    pub fn sample(&mut self) -> Snapshot {
        let taken_at_ns = unix_now_ns();
        let host = self.host.sample();
        let gpu = self.gpu.sample();
        let cgroup = self.cgroup.sample();
        let mut processes = self.processes.sample();
        if gpu.available {
            // NVML's per-process list, matched against each watched tree: memory that a
            // child process holds (a worker, a model server it started) is the agent's.
            for p in &mut processes {
                p.gpus = gpu
                    .devices
                    .iter()
                    .filter_map(|d| {
                        let used: u64 = d
                            .processes
                            .iter()
                            .filter(|gp| p.tree.binary_search(&gp.pid).is_ok())
                            .filter_map(|gp| gp.used_memory_bytes)
                            .sum();
                        (used > 0).then_some(ProcessGpuMemory {
                            gpu_index: d.index,
                            used_memory_bytes: used,
                        })
                    })
                    .collect();
                p.gpu_memory_bytes = Some(p.gpus.iter().map(|g| g.used_memory_bytes).sum());
            }
        }
        Snapshot {
            taken_at_ns,
            host,
            gpu,
            cgroup,
            processes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{NoGpu, NvmlProbe, StaticGpus};
    use crate::snapshot::{GpuDevice, GpuState};

    fn host() -> HostProbe {
        HostProbe::new().expect("host readable in tests")
    }

    #[test]
    fn host_figures_are_plausible() {
        let mut sampler = Sampler::new(host(), Box::new(NoGpu::new("test")));
        let s = sampler.sample();
        assert!(s.host.ram_total_bytes > 0);
        assert!(s.host.ram_used_bytes > 0 && s.host.ram_used_bytes <= s.host.ram_total_bytes);
        assert_eq!(
            s.host.ram_used_bytes + s.host.ram_available_bytes,
            s.host.ram_total_bytes
        );
        assert!(s.host.cpu_count >= 1);
        assert!(s.host.cpu_load_1m.is_some_and(|l| l >= 0.0));
        assert!(s.taken_at_ns > 1_600_000_000_000_000_000);
    }

    #[test]
    fn cpu_utilization_appears_after_warmup() {
        let mut sampler = Sampler::new(host(), Box::new(NoGpu::new("test")));
        assert_eq!(sampler.sample().host.cpu_utilization_ratio, None);
        std::thread::sleep(HostProbe::cpu_warmup());
        let s = sampler.sample();
        let ratio = s
            .host
            .cpu_utilization_ratio
            .expect("measured after warm-up");
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        assert_eq!(
            s.host.cpu_core_utilization_ratio.len(),
            s.host.cpu_count as usize
        );
    }

    #[test]
    fn missing_nvml_library_is_reported_not_fatal() {
        let probe = NvmlProbe::load(Some("/nonexistent/libnvidia-ml.so.1".as_ref()));
        let reason = probe.load_error().expect("load must fail").to_owned();
        assert!(
            reason.contains("/nonexistent/libnvidia-ml.so.1"),
            "{reason}"
        );
        let mut sampler = Sampler::new(host(), Box::new(probe));
        let s = sampler.sample();
        assert!(!s.gpu.available);
        assert_eq!(s.gpu.unavailable_reason.as_deref(), Some(reason.as_str()));
        assert!(s.gpu.devices.is_empty());
    }

    #[test]
    fn static_gpus_pass_through() {
        let mut dev = GpuDevice::bare(0, GpuState::Ok);
        dev.memory_total_bytes = Some(80 << 30);
        let mut sampler = Sampler::new(host(), Box::new(StaticGpus::new(vec![dev.clone()])));
        let s = sampler.sample();
        assert!(s.gpu.available);
        assert_eq!(s.gpu.devices, vec![dev]);
    }

    #[test]
    fn snapshot_json_uses_unit_suffixed_names() {
        let mut sampler = Sampler::new(host(), Box::new(NoGpu::new("none here")));
        let json = serde_json::to_value(sampler.sample()).expect("serialises");
        for key in [
            "ram_total_bytes",
            "ram_used_bytes",
            "ram_available_bytes",
            "cpu_load_1m",
        ] {
            assert!(json["host"].get(key).is_some(), "missing host.{key}");
        }
        assert_eq!(json["gpu"]["available"], false);
        assert_eq!(json["gpu"]["unavailable_reason"], "none here");
    }
}
