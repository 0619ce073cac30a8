//! One full sample: host plus GPUs.

use crate::cgroup::{CgroupProbe, CgroupReader};
use crate::gpu::GpuProbe;
use crate::host::HostProbe;
use crate::pods::{PodRef, pod_of_pid};
use crate::process::{ProcessProbe, WatchOutcome};
use crate::snapshot::{ProcessGpuMemory, Snapshot};
use crate::time::unix_now_ns;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Produces [`Snapshot`]s. Cheap to call repeatedly: all probes stay loaded between calls.
pub struct Sampler {
    host: HostProbe,
    gpu: Box<dyn GpuProbe>,
    cgroup: CgroupReader,
    processes: ProcessProbe,
    /// Where `<pid>/cgroup` files are read (`/proc`; a fixture directory in tests).
    proc_root: PathBuf,
    /// The pod of each GPU process id seen in the last sample: read once per process, and
    /// forgotten when NVML stops listing it (a later process may reuse the id).
    pods: HashMap<u32, Option<PodRef>>,
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
            proc_root: PathBuf::from("/proc"),
            pods: HashMap::new(),
        }
    }

    /// Reads processes' cgroup files under `root` instead of `/proc` (fixtures in tests).
    pub fn with_proc_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.proc_root = root.into();
        self
    }

    /// Reads the slow figures (load average, GPU temperature, power and clocks, the cgroup's
    /// page cache and throttling, process CPU time) at most every `every` (never more often
    /// than [`crate::SLOW_FIGURES_EVERY`]), however often [`Sampler::sample`] is called.
    /// The sidecar passes a little less than its idle interval: samples taken faster while
    /// work is in flight read only what changes fast, and the slow figures keep the idle
    /// cadence.
    pub fn set_slow_every(&mut self, every: Duration) {
        let every = every.max(crate::SLOW_FIGURES_EVERY);
        self.host.set_slow_every(every);
        self.gpu.set_slow_every(every);
        self.cgroup.set_slow_every(every);
        self.processes.set_slow_every(every);
    }

    /// Names the pod and container of every GPU process whose cgroup says so: in the host
    /// PID namespace (a DaemonSet with hostPID) NVML's host PIDs are this sampler's too.
    fn attribute_pods(&mut self, gpu: &mut crate::snapshot::GpuSnapshot) {
        let mut seen = HashMap::with_capacity(self.pods.len());
        for p in gpu.devices.iter_mut().flat_map(|d| d.processes.iter_mut()) {
            let pod = match (seen.get(&p.pid), self.pods.remove(&p.pid)) {
                (Some(this_sample), _) => Option::clone(this_sample),
                (None, Some(known)) => known,
                (None, None) => pod_of_pid(&self.proc_root, p.pid),
            };
            if let Some(pod) = &pod {
                p.pod_uid = Some(pod.pod_uid.clone());
                p.container_id.clone_from(&pod.container_id);
            }
            seen.insert(p.pid, pod);
        }
        self.pods = seen;
    }

    /// Starts recording this agent process (and its descendants) in every sample.
    pub fn watch_process(&mut self, pid: u32) -> WatchOutcome {
        self.processes.watch(pid)
    }

    /// Takes one sample now.
    pub fn sample(&mut self) -> Snapshot {
        let taken_at_ns = unix_now_ns();
        let host = self.host.sample();
        let mut gpu = self.gpu.sample();
        self.attribute_pods(&mut gpu);
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
    fn gpu_processes_are_named_by_their_pod_from_their_cgroup() {
        // A node's /proc as a DaemonSet with hostPID sees it: one agent in a pod, one
        // process outside Kubernetes, one gone.
        let proc_root = tempfile::tempdir().unwrap();
        let uid = "7c1b4d2e-9f3a-4b5c-8d6e-0f1a2b3c4d5e";
        let cgroup = |pid: u32, text: &str| {
            let dir = proc_root.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup"), text).unwrap();
        };
        cgroup(
            4242,
            &format!(
                "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope\n",
                uid.replace('-', "_"),
                "a".repeat(64)
            ),
        );
        cgroup(77, "0::/system.slice/sshd.service\n");
        let mut device = GpuDevice::bare(0, GpuState::Ok);
        device.processes = [4242, 77, 99]
            .into_iter()
            .map(|pid| crate::snapshot::GpuProcess {
                pid,
                used_memory_bytes: Some(1 << 30),
                pod_uid: None,
                container_id: None,
            })
            .collect();
        let mut sampler = Sampler::new(host(), Box::new(StaticGpus::new(vec![device])))
            .with_proc_root(proc_root.path());
        for _ in 0..2 {
            // The second sample answers from the cache (the files are gone by then).
            let s = sampler.sample();
            let named: Vec<(u32, Option<&str>, Option<usize>)> = s.gpu.devices[0]
                .processes
                .iter()
                .map(|p| {
                    (
                        p.pid,
                        p.pod_uid.as_deref(),
                        p.container_id.as_ref().map(String::len),
                    )
                })
                .collect();
            assert_eq!(
                named,
                [
                    (4242, Some(uid), Some(64)),
                    (77, None, None),
                    (99, None, None)
                ]
            );
            std::fs::remove_dir_all(proc_root.path().join("4242")).ok();
        }
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
