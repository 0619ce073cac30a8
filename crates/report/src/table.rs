//! The report as text, readable in a 100-column terminal.

use std::fmt::Write as _;

use super::{Report, Resource};
use crate::text::{table, wrap};

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

/// Renders every section.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "runlens report: {} spans, {} runs, {} snapshots; GPU pressure below {} MiB",
        r.spans_analyzed,
        r.runs_analyzed,
        r.snapshots_analyzed,
        r.oom_threshold_bytes / (1 << 20)
    );

    for section in [latency, context, correlations, pressure, oom] {
        section(&mut out, r);
    }
    out
}

/// Every group's report, each under a rule naming the group.
pub fn render_grouped(g: &super::Grouped) -> String {
    if g.groups.is_empty() {
        return "runlens report: no runs in this window\n".to_owned();
    }
    let mut out = String::new();
    for group in &g.groups {
        let _ = writeln!(out, "\n══ {} ══", group.label);
        out.push_str(&render(&group.report));
    }
    out
}

/// Column headers.
fn h(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| (*c).to_owned()).collect()
}

/// Section 1: latency by step.
fn latency(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\n1. Latency by step");
    let rows: Vec<Vec<String>> = r
        .latency
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.count.to_string(),
                l.failures.to_string(),
                pct(Some(l.failure_rate)),
                format!("{:.1}", l.p50_ms),
                format!("{:.1}", l.p95_ms),
                format!("{:.1}", l.p99_ms),
            ]
        })
        .collect();
    out.push_str(&table(
        &h(&[
            "STEP", "COUNT", "FAILED", "FAIL%", "P50 ms", "P95 ms", "P99 ms",
        ]),
        &rows,
        28,
    ));
}

/// Section 2: the machine at span start.
fn context(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\n2. The machine at span start (medians)");
    let _ = writeln!(out, "{}", wrap(&r.gpu_columns_meaning(), 100).join("\n"));
    // The GPU performance columns only where some GPU measured them (Hopper and newer).
    let perf = r
        .context
        .iter()
        .any(|c| c.gpu_dram_bandwidth_p50.is_some() || c.gpu_tensor_active_p50.is_some());
    let rows: Vec<Vec<String>> = r
        .context
        .iter()
        .map(|c| {
            let mut row = vec![
                c.name.clone(),
                num(c.gpu_free_min_mib_p50, 0),
                pct(c.gpu_utilization_p50),
                num(c.cpu_load_per_core_p50, 2),
                pct(c.ram_headroom_ratio_p50),
                pct(c.cgroup_headroom_ratio_p50),
            ];
            if perf {
                row.push(pct(c.gpu_dram_bandwidth_p50));
                row.push(pct(c.gpu_tensor_active_p50));
            }
            row
        })
        .collect();
    let mut columns = h(&[
        "STEP",
        "GPU FREE MiB",
        "GPU UTIL",
        "LOAD/CORE",
        "RAM FREE",
        "CGROUP FREE",
    ]);
    if perf {
        columns.extend(h(&["GPU MEM BW", "TENSOR"]));
    }
    out.push_str(&table(&columns, &rows, 28));
}

/// Section 3: correlation of duration with resources, and the findings.
fn correlations(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "\n3. Correlation of duration with the machine at start (Spearman ρ, n)"
    );
    let resources = [
        Resource::GpuFreeMemory,
        Resource::GpuUtilization,
        Resource::CpuLoadPerCore,
        Resource::RamHeadroom,
        Resource::CgroupHeadroom,
    ];
    let rows: Vec<Vec<String>> = r
        .latency
        .iter()
        .map(|l| {
            let mut row = vec![l.name.clone()];
            for res in resources {
                row.push(
                    r.correlations
                        .iter()
                        .find(|c| c.name == l.name && c.resource == res)
                        .map_or_else(
                            || "-".to_owned(),
                            |c| {
                                format!(
                                    "{:+.2} ({}){}",
                                    c.rho,
                                    c.n,
                                    if c.strong { "*" } else { "" }
                                )
                            },
                        ),
                );
            }
            row
        })
        .collect();
    out.push_str(&table(
        &h(&[
            "STEP",
            "GPU FREE",
            "GPU UTIL",
            "LOAD/CORE",
            "RAM FREE",
            "CGROUP",
        ]),
        &rows,
        28,
    ));
    if r.findings.is_empty() {
        let _ = writeln!(out, "no finding: no {}", super::finding_rule());
    } else {
        for f in &r.findings {
            let _ = writeln!(out, "* {f}");
        }
    }
}

/// Section 4: spans under pressure and the others.
fn pressure(out: &mut String, r: &Report) {
    let _ = writeln!(
        out,
        "\n4. Under pressure vs not ({})",
        super::pressure_rule()
    );
    let rows: Vec<Vec<String>> = r
        .pressure
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.under_pressure.n.to_string(),
                num(p.under_pressure.p50_ms, 1),
                num(p.under_pressure.p95_ms, 1),
                pct(p.under_pressure.failure_rate),
                p.no_pressure.n.to_string(),
                num(p.no_pressure.p50_ms, 1),
                num(p.no_pressure.p95_ms, 1),
                pct(p.no_pressure.failure_rate),
                p.p50_ratio
                    .map_or_else(|| "-".into(), |x| format!("{x:.2}x")),
            ]
        })
        .collect();
    out.push_str(&table(
        &h(&[
            "STEP", "N PRESS", "P50", "P95", "FAIL%", "N CALM", "P50", "P95", "FAIL%", "P50 ×",
        ]),
        &rows,
        20,
    ));
}

/// Section 5: OOM risk and hardware limits.
fn oom(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\n5. OOM risk and hardware limits");
    if r.oom.gpus.is_empty() {
        let _ = writeln!(out, "no GPU samples in this window");
    } else {
        let rows: Vec<Vec<String>> = r
            .oom
            .gpus
            .iter()
            .map(|g| {
                vec![
                    g.gpu_index.to_string(),
                    g.name.clone().unwrap_or_default(),
                    g.samples.to_string(),
                    g.samples_below.to_string(),
                    pct(Some(g.share_below)),
                    num(g.min_free_mib, 0),
                    format!("{:.1}", g.seconds_below),
                    g.runs_below_count.to_string(),
                    if g.hardware_limit { "LIMIT" } else { "" }.to_owned(),
                ]
            })
            .collect();
        out.push_str(&table(
            &h(&[
                "GPU",
                "NAME",
                "SAMPLES",
                "BELOW",
                "SHARE",
                "MIN FREE MiB",
                "SECONDS",
                "RUNS",
                "",
            ]),
            &rows,
            24,
        ));
        for g in r.oom.gpus.iter().filter(|g| g.hardware_limit) {
            let _ = writeln!(out, "* {}", g.hardware_limit_sentence());
        }
    }
    const SHOWN: usize = 10;
    for line in r.oom.counts_beyond(SHOWN, r.oom_threshold_bytes) {
        let _ = writeln!(out, "* {line}");
    }
    for run in r.oom.likely_oom_runs.iter().take(SHOWN) {
        let _ = writeln!(out, "* likely OOM: {}", run.sentence());
    }
    for run in r.oom.likely_oom_killed_runs.iter().take(SHOWN) {
        let _ = writeln!(out, "* likely OOM kill: {}", run.sentence());
    }
}
