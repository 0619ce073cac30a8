//! `runlens doctor`: what was tried, what was found, and what to do about each problem.
//!
//! Exit code 0 when everything asked for works; 1 when any check failed.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;

use probe_core::{CgroupProbe, GpuProbe, GpuState, HostProbe, NvmlLoadErrorKind, NvmlProbe};
use serde::Serialize;

use crate::cli::{DoctorArgs, Format};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::{bytes, table};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Works.
    Ok,
    /// Works partly, or not asked for; not counted as a problem.
    Warn,
    /// Does not work.
    Fail,
}

/// One thing checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `host`, `cgroup`, `nvml`, `gpu 0`, `pid 1234`.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it, when there is something to do.
    pub fix: Option<String>,
}

/// Everything doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// This runlens: version, commit and build date.
    pub runlens: String,
    /// True when no check failed.
    pub ok: bool,
    /// Number of failed checks.
    pub problems: usize,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

fn check(name: &str, status: Status, detail: String, fix: Option<&str>) -> Check {
    Check {
        name: name.to_owned(),
        status,
        detail,
        fix: fix.map(str::to_owned),
    }
}

/// Runs every check.
pub fn diagnose(args: &DoctorArgs) -> Report {
    let mut checks = vec![check_host()];
    checks.push(check_cgroup(args.probe.cgroup_root.as_deref()));
    checks.extend(check_gpus(&args.probe, args.no_gpu));
    for pid in &args.pid {
        checks.push(check_pid(*pid));
    }
    checks.extend(check_export(&args.db));
    checks.extend(check_clocks(&args.db));
    let problems = checks.iter().filter(|c| c.status == Status::Fail).count();
    Report {
        runlens: crate::build_info::LONG.to_owned(),
        ok: problems == 0,
        problems,
        checks,
    }
}

fn check_host() -> Check {
    match HostProbe::new() {
        Ok(mut host) => {
            let h = host.sample();
            check(
                "host",
                Status::Ok,
                format!(
                    "{} CPUs, load {:.2}; RAM {} of which {} available",
                    h.cpu_count,
                    h.cpu_load_1m.unwrap_or(0.0),
                    bytes(h.ram_total_bytes),
                    bytes(h.ram_available_bytes)
                ),
                None,
            )
        }
        Err(e) => check(
            "host",
            Status::Fail,
            e.to_string(),
            Some("runlens reads /proc: run it on Linux with /proc mounted"),
        ),
    }
}

fn check_cgroup(root: Option<&Path>) -> Check {
    let probe = match root {
        Some(root) => CgroupProbe::at(root),
        None => CgroupProbe::detect(),
    };
    let place = match &probe {
        CgroupProbe::V2 { dir } => dir.display().to_string(),
        CgroupProbe::V1 { memory, .. } => memory.display().to_string(),
        CgroupProbe::None => String::new(),
    };
    match probe.sample() {
        Some(c) => {
            let memory = c.memory_limit_bytes.map_or_else(
                || "no memory limit".to_owned(),
                |l| format!("memory limit {}", bytes(l)),
            );
            let cpu = c.cpu_quota_cores.map_or_else(
                || "no CPU quota".to_owned(),
                |q| format!("CPU quota {q:.2} cores"),
            );
            check(
                "cgroup",
                Status::Ok,
                format!("v{}: {memory}, {cpu} ({place})", c.version),
                None,
            )
        }
        None => check(
            "cgroup",
            Status::Warn,
            "no cgroup filesystem readable: container limits are unknown".to_owned(),
            Some("mount /sys/fs/cgroup (read-only is enough), or pass --cgroup-root"),
        ),
    }
}

fn nvml_fix(kind: NvmlLoadErrorKind, no_gpu: bool) -> &'static str {
    match kind {
        // The user already said there is no GPU: advising --no-gpu again would be noise.
        NvmlLoadErrorKind::NotFound if no_gpu => {
            "none needed with --no-gpu; install the NVIDIA driver or point --nvml-lib at \
             libnvidia-ml.so.1 if this machine should have a GPU"
        }
        NvmlLoadErrorKind::NotFound => {
            "install the NVIDIA driver, or expose it to this container (NVIDIA container \
             toolkit), or point --nvml-lib at libnvidia-ml.so.1; pass --no-gpu if this machine \
             has no GPU"
        }
        NvmlLoadErrorKind::DriverNotLoaded => {
            "load the kernel driver (`nvidia-smi` should answer), or reinstall it"
        }
        NvmlLoadErrorKind::VersionMismatch => {
            "the NVML library and the kernel driver differ: reinstall the driver so both match"
        }
        NvmlLoadErrorKind::PermissionDenied => {
            "give this user access to /dev/nvidia* (e.g. the video group), or run the container \
             with the GPU devices exposed"
        }
        NvmlLoadErrorKind::Other => "check `nvidia-smi`; if it fails too, the driver is broken",
    }
}

/// What NVML and the GPUs `--gpus` selects say.
fn check_gpus(probe_args: &crate::cli::ProbeArgs, no_gpu: bool) -> Vec<Check> {
    let lib = probe_args.nvml_lib.as_deref();
    let selection = probe_args.gpu_selection();
    let lib_name = lib.map_or_else(
        || "libnvidia-ml.so.1 (system library path)".to_owned(),
        |p| p.display().to_string(),
    );
    let mut probe = NvmlProbe::load(lib.map(OsStr::new)).with_selection(selection);
    if let Some(failure) = probe.load_failure() {
        let status = if no_gpu { Status::Warn } else { Status::Fail };
        return vec![check(
            "nvml",
            status,
            format!("{}: {}", failure.kind.as_str(), failure.message),
            Some(nvml_fix(failure.kind, no_gpu)),
        )];
    }
    let driver = probe
        .driver_version()
        .unwrap_or_else(|| "unknown".to_owned());
    let cuda = probe
        .cuda_driver_version()
        .unwrap_or_else(|| "unknown".to_owned());
    let mut checks = vec![check(
        "nvml",
        Status::Ok,
        // The versions first: a long library path wraps, the versions stay on one line.
        format!("driver {driver}, CUDA {cuda}; loaded {lib_name}"),
        None,
    )];
    let gpus = probe.sample();
    if !gpus.available {
        checks.push(check(
            "gpus",
            Status::Fail,
            gpus.unavailable_reason.unwrap_or_default(),
            Some("check `nvidia-smi`; the driver stopped answering"),
        ));
        return checks;
    }
    if gpus.devices.is_empty() {
        checks.push(check(
            "gpus",
            if no_gpu { Status::Warn } else { Status::Fail },
            "NVML answers but sees no GPU".to_owned(),
            Some(
                "check NVIDIA_VISIBLE_DEVICES / the container's GPU request; CUDA_VISIBLE_DEVICES \
                 does not hide GPUs from NVML",
            ),
        ));
    }
    for d in &gpus.devices {
        let name = format!("gpu {}", d.index);
        let label = [d.name.as_deref(), d.uuid.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        // A device that cannot be opened cannot say what it is.
        let known = |text: String| {
            if label.is_empty() {
                text
            } else {
                format!("{label}: {text}")
            }
        };
        match d.state {
            GpuState::Ok => {
                let memory = match (d.memory_used_bytes, d.memory_total_bytes) {
                    (Some(u), Some(t)) => format!("{} of {} used", bytes(u), bytes(t)),
                    _ => "memory unknown".to_owned(),
                };
                let unsupported = if d.unsupported.is_empty() {
                    "every metric supported".to_owned()
                } else {
                    format!("not supported: {}", d.unsupported.join(", "))
                };
                checks.push(check(
                    &name,
                    Status::Ok,
                    format!("{label}; {memory}; {unsupported}"),
                    None,
                ));
            }
            GpuState::Lost => checks.push(check(
                &name,
                Status::Fail,
                known("lost (fallen off the bus)".to_owned()),
                Some("the GPU needs a reset or the node a reboot; check `dmesg` for Xid errors"),
            )),
            GpuState::Error => checks.push(check(
                &name,
                Status::Fail,
                known("cannot be opened".to_owned()),
                Some("check `nvidia-smi -i` for this index"),
            )),
        }
    }
    checks.extend(check_gpu_pids(&gpus.devices));
    checks
}

/// NVML reports GPU processes by host PID. If none of them exists in this PID namespace,
/// GPU memory cannot be matched to agents here.
fn check_gpu_pids(devices: &[probe_core::GpuDevice]) -> Option<Check> {
    let pids: Vec<u32> = devices
        .iter()
        .flat_map(|d| d.processes.iter().map(|p| p.pid))
        .collect();
    if pids.is_empty() {
        return None;
    }
    let visible = pids
        .iter()
        .filter(|pid| Path::new("/proc").join(pid.to_string()).exists())
        .count();
    Some(if visible == 0 {
        check(
            "gpu pids",
            Status::Warn,
            format!(
                "none of the {} GPU process ids NVML reports is visible here: NVML reports host \
                 PIDs, so GPU memory cannot be attributed per process; the report takes the \
                 agents' GPUs from their NVIDIA_VISIBLE_DEVICES or CUDA_VISIBLE_DEVICES \
                 instead and counts those GPUs' memory as theirs",
                pids.len()
            ),
            Some(
                "for per-process (and per-pod) attribution run runlens in the host PID \
                 namespace (Kubernetes: hostPID: true, see deploy/kubernetes/daemonset.yaml; \
                 Docker: --pid=host)",
            ),
        )
    } else {
        check(
            "gpu pids",
            Status::Ok,
            format!("{visible} of {} GPU process ids visible here", pids.len()),
            None,
        )
    })
}

/// The OTLP export's lag, when the database has an outbox with runs in it.
fn check_export(db: &std::path::Path) -> Option<Check> {
    let reader = crate::store::read::Reader::open(db).ok()?;
    let cursor = reader.export_cursor().ok()?;
    let (lag, oldest) = reader.export_lag(cursor).ok()?;
    if let Ok(Some((true, since_ns, message))) = reader.export_held() {
        return Some(check(
            "export",
            Status::Fail,
            format!(
                "held since {} with {lag} ended run(s) waiting: {message}",
                crate::format::timestamp(since_ns)
            ),
            Some(
                "fix --otlp-export (the URL, its path, or the credentials in \
                 OTEL_EXPORTER_OTLP_HEADERS) and restart the sidecar: the held runs are kept \
                 and sent once the receiver accepts them (runlens_export_held in /metrics)",
            ),
        ));
    }
    if cursor == 0 && lag == 0 {
        return None; // export never used with this database
    }
    Some(if lag == 0 {
        check(
            "export",
            Status::Ok,
            "every ended run acknowledged by the OTLP receiver".to_owned(),
            None,
        )
    } else {
        check(
            "export",
            Status::Warn,
            format!(
                "{lag} ended run(s) not yet acknowledged by the OTLP receiver{}",
                oldest
                    .map(|ns| format!(
                        ", the oldest waiting {}",
                        humantime::format_duration(std::time::Duration::from_secs(
                            u64::try_from((probe_core::unix_now_ns() - ns) / 1_000_000_000)
                                .unwrap_or(0)
                        ))
                    ))
                    .unwrap_or_default()
            ),
            Some(
                "check that the --otlp-export receiver is up: they are sent as soon as it \
                 answers (runlens_export_lag_runs in /metrics follows it)",
            ),
        )
    })
}

/// Clients whose clock the sidecar found off (heard from in the last day).
fn check_clocks(db: &std::path::Path) -> Option<Check> {
    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    let reader = crate::store::read::Reader::open(db).ok()?;
    let clocks = reader
        .client_clocks(probe_core::unix_now_ns() - DAY_NS)
        .ok()?;
    if clocks.is_empty() {
        return None; // no client sent enough to tell
    }
    let skewed: Vec<String> = clocks
        .iter()
        .filter(|c| c.skewed)
        .map(|c| {
            let name = if c.name.is_empty() {
                &c.client_id
            } else {
                &c.name
            };
            format!(
                "{name} ({}) {}",
                c.client_id,
                crate::ingest::clock::signed_seconds(c.offset_ns)
            )
        })
        .collect();
    Some(if skewed.is_empty() {
        check(
            "clocks",
            Status::Ok,
            format!(
                "the clocks of {} client(s) agree with the sidecar's within the matching window",
                clocks.len()
            ),
            None,
        )
    } else {
        check(
            "clocks",
            Status::Warn,
            format!(
                "{} client(s) with a clock off by more than the matching window, so their \
                 runs and spans get no resource snapshots: {}",
                skewed.len(),
                skewed.join(", ")
            ),
            Some(
                "set those machines' clocks (NTP, chrony); or start the sidecar with \
                 --clock-skew-correction to match them at corrected times \
                 (runlens_client_clock_offset_seconds in /metrics follows the offsets)",
            ),
        )
    })
}

fn check_pid(pid: u32) -> Check {
    let name = format!("pid {pid}");
    let proc_dir = Path::new("/proc").join(pid.to_string());
    match std::fs::read_to_string(proc_dir.join("comm")) {
        Ok(comm) => check(&name, Status::Ok, format!("visible: {}", comm.trim()), None),
        Err(_) => check(
            &name,
            Status::Fail,
            "not visible from here: its memory and CPU cannot be recorded".to_owned(),
            Some(
                "share the process namespace with the agent (Kubernetes: shareProcessNamespace: \
                 true; Docker: --pid=container:<agent>), or run runlens in the agent's container",
            ),
        ),
    }
}

/// Prints the report and turns problems into a non-zero exit.
pub fn run(args: DoctorArgs) -> Result<(), Failure> {
    let report = diagnose(&args);
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::new(FAILURE, format!("cannot encode JSON: {e}")))?,
        Format::Table => render(&report),
        Format::Csv => return Err(Failure::new(USAGE, "doctor prints table or json")),
    };
    crate::format::emit(text.trim_end())?;
    if report.ok {
        Ok(())
    } else {
        Err(Failure::new(
            FAILURE,
            format!(
                "{} problem{} found (see FAIL above)",
                report.problems,
                if report.problems == 1 { "" } else { "s" }
            ),
        ))
    }
}

/// The human form.
pub fn render(report: &Report) -> String {
    let mut rows = Vec::new();
    for c in &report.checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        rows.push(vec![status.to_owned(), c.name.clone(), c.detail.clone()]);
        if let Some(fix) = &c.fix {
            rows.push(vec![String::new(), String::new(), format!("fix: {fix}")]);
        }
    }
    let mut out = format!("runlens doctor: runlens {}\n", report.runlens);
    let headers = ["STATUS", "CHECK", "FOUND"].map(String::from).to_vec();
    // Long findings wrap under their column instead of being cut.
    let mut wrapped = Vec::new();
    for row in rows {
        for (i, line) in crate::format::wrap(&row[2], 76).into_iter().enumerate() {
            if i == 0 {
                wrapped.push(vec![row[0].clone(), row[1].clone(), line]);
            } else {
                wrapped.push(vec![String::new(), String::new(), line]);
            }
        }
    }
    out.push_str(&table(&headers, &wrapped, 80));
    let _ = writeln!(
        out,
        "{}",
        if report.ok {
            "everything checked works".to_owned()
        } else {
            format!("{} problem(s)", report.problems)
        }
    );
    out
}
