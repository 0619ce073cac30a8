//! Which Kubernetes pod and container a process belongs to, from `/proc/<pid>/cgroup`.
//!
//! NVML reports host process ids. A sidecar in the host PID namespace (a DaemonSet with
//! `hostPID: true`) sees every process of the node, and the kubelet puts each container in
//! a cgroup whose path names its pod's UID and its container id, in the cgroupfs layout
//! (`/kubepods/burstable/pod<uid>/<container id>`) or the systemd one
//! (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>
//! .slice/cri-containerd-<container id>.scope`).

use std::path::Path;

/// A process's pod and container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's UID (`metadata.uid`, dashes as Kubernetes writes it).
    pub pod_uid: String,
    /// The container's runtime id, when the path names one.
    pub container_id: Option<String>,
}

/// Reads `<proc_root>/<pid>/cgroup`; `None` for a process outside Kubernetes, gone, or
/// not visible here.
pub fn pod_of_pid(proc_root: &Path, pid: u32) -> Option<PodRef> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    pod_of_cgroup(&text)
}

/// The pod and container a `/proc/<pid>/cgroup` text names, if any (cgroup v1 or v2,
/// cgroupfs or systemd layout).
pub fn pod_of_cgroup(text: &str) -> Option<PodRef> {
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find_map(pod_of_path)
}

fn pod_of_path(path: &str) -> Option<PodRef> {
    if !path.contains("kubepods") {
        return None;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (at, pod_uid) = segments.iter().enumerate().find_map(|(i, segment)| {
        let name = segment.strip_suffix(".slice").unwrap_or(segment);
        // cgroupfs: "pod<uid>"; systemd: "kubepods-<qos>-pod<uid_with_underscores>".
        let uid = name.rsplit_once("pod").map(|(_, uid)| uid)?;
        let uid = uid.replace('_', "-");
        looks_like_uid(&uid).then_some((i, uid))
    })?;
    let container_id = segments.get(at + 1).map(|segment| {
        let name = segment.strip_suffix(".scope").unwrap_or(segment);
        // "cri-containerd-<id>", "docker-<id>", "crio-<id>", or the bare id.
        name.rsplit_once('-')
            .filter(|(_, id)| id.len() >= 12)
            .map_or(name, |(_, id)| id)
            .to_owned()
    });
    Some(PodRef {
        pod_uid,
        container_id,
    })
}

fn looks_like_uid(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "7c1b4d2e-9f3a-4b5c-8d6e-0f1a2b3c4d5e";
    const ID: &str = "4f9a1c2b3d4e5f60718293a4b5c6d7e8f9012345678901234567890abcdef12";

    #[test]
    fn cgroup_v2_systemd_layout() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
             cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        assert_eq!(
            pod_of_cgroup(&text),
            Some(PodRef {
                pod_uid: UID.into(),
                container_id: Some(ID.into())
            })
        );
    }

    #[test]
    fn cgroup_v1_cgroupfs_layout_and_guaranteed_qos() {
        let text =
            format!("12:memory:/kubepods/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/pod{UID}/{ID}\n");
        let pod = pod_of_cgroup(&text).unwrap();
        assert_eq!(pod.pod_uid, UID);
        assert_eq!(pod.container_id.as_deref(), Some(ID));
        let besteffort = format!("0::/kubepods/besteffort/pod{UID}\n");
        assert_eq!(pod_of_cgroup(&besteffort).unwrap().container_id, None);
    }

    #[test]
    fn processes_outside_kubernetes_have_no_pod() {
        assert_eq!(
            pod_of_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
        assert_eq!(pod_of_cgroup("0::/system.slice/docker-abc.scope\n"), None);
        assert_eq!(pod_of_cgroup(""), None);
        assert_eq!(pod_of_pid(Path::new("/nonexistent"), 1), None);
    }
}
