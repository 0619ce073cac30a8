//! The report as one self-contained HTML page: no scripts, no network, charts as inline
//! SVG (a timeline of GPU memory and CPU load with runs as bars, and duration against GPU
//! free memory per step).

use std::fmt::Write as _;

use super::svg::{self, Axis, Frame};

use super::{Charts, Report};

const COLORS: [&str; 8] = [
    "#2563eb", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777",
];

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Maps a value range onto pixels.
/// Renders the page.
pub fn render(r: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    head(&mut out);
    body(&mut out, r, "runlens report");
    tail(&mut out);
    out
}

/// Renders one page with every group's report under its own heading.
pub fn render_grouped(g: &super::Grouped) -> String {
    let mut out = String::with_capacity(64 * 1024 * g.groups.len().max(1));
    head(&mut out);
    if g.groups.is_empty() {
        out.push_str("<h1>runlens report</h1>\n<p class=\"muted\">No runs in this window.</p>\n");
    }
    for group in &g.groups {
        body(
            &mut out,
            &group.report,
            &format!("runlens report: {}", group.label),
        );
    }
    tail(&mut out);
    out
}

fn head(out: &mut String) {
    out.push_str(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>runlens report</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1000px;color:#1f2937;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #e5e7eb;padding-bottom:.3rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{padding:.25rem .6rem;text-align:right;border-bottom:1px solid #f3f4f6}
td:first-child,th:first-child{text-align:left} th{color:#6b7280;font-weight:600}
.finding{background:#fef3c7;border-left:4px solid #d97706;padding:.5rem .8rem;margin:.4rem 0}
.oom{background:#fee2e2;border-left:4px solid #dc2626;padding:.5rem .8rem;margin:.4rem 0}
.muted{color:#6b7280} svg{background:#fafafa;border:1px solid #e5e7eb;margin:.3rem .3rem .3rem 0}
svg text{font-size:11px;fill:#4b5563}
</style></head><body>
"#,
    );
}

fn body(out: &mut String, r: &Report, title: &str) {
    let _ = write!(
        out,
        "<h1>{}</h1>\n<p class=\"muted\">{} spans, {} runs, {} snapshots analysed; GPU memory pressure below {} MiB.</p>\n",
        esc(title),
        r.spans_analyzed,
        r.runs_analyzed,
        r.snapshots_analyzed,
        r.oom_threshold_bytes >> 20
    );
    findings(out, r);
    out.push_str("<h2>Timeline</h2>\n");
    timeline(out, &r.charts);
    for section in [latency, context, correlations, pressure, oom] {
        section(out, r);
    }
}

fn tail(out: &mut String) {
    out.push_str("<p class=\"muted\">Made by runlens. The numbers come from SQL you can run yourself: see the README's SQL cookbook.</p>\n</body></html>\n");
}

/// The findings: strong correlations, likely OOM runs and kills, hardware limits.
fn findings(out: &mut String, r: &Report) {
    out.push_str("<h2>Findings</h2>\n");
    if r.findings.is_empty()
        && r.oom.likely_oom_runs.is_empty()
        && r.oom.likely_oom_killed_runs.is_empty()
    {
        let _ = writeln!(
            out,
            "<p class=\"muted\">No step's duration follows a resource figure strongly enough ({}), and no failed run ended under memory pressure.</p>",
            esc(&super::finding_rule())
        );
    }
    for f in &r.findings {
        let _ = writeln!(out, "<div class=\"finding\">{}</div>", esc(f));
    }
    const SHOWN: usize = 5;
    for line in r.oom.counts_beyond(SHOWN, r.oom_threshold_bytes) {
        let _ = writeln!(out, "<div class=\"oom\">{}</div>", esc(&line));
    }
    for run in r.oom.likely_oom_runs.iter().take(SHOWN) {
        let _ = writeln!(
            out,
            "<div class=\"oom\">Likely OOM: {}</div>",
            esc(&run.sentence())
        );
    }
    for run in r.oom.likely_oom_killed_runs.iter().take(SHOWN) {
        let _ = writeln!(
            out,
            "<div class=\"oom\">Likely OOM kill: {}</div>",
            esc(&run.sentence())
        );
    }
    for g in r.oom.gpus.iter().filter(|g| g.hardware_limit) {
        let _ = writeln!(
            out,
            "<div class=\"oom\">{}.</div>",
            esc(&g.hardware_limit_sentence())
        );
    }
}

/// Section 1: latency by step.
fn latency(out: &mut String, r: &Report) {
    out.push_str("<h2>1. Latency by step</h2>\n<table><tr><th>step</th><th>count</th><th>failed</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>\n");
    for l in &r.latency {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} ({:.0}%)</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(&l.name),
            l.count,
            l.failures,
            l.failure_rate * 100.0,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms
        );
    }
}

/// Section 2: the machine at span start.
fn context(out: &mut String, r: &Report) {
    out.push_str("</table>\n<h2>2. The machine at span start (medians)</h2>\n");
    let _ = writeln!(out, "<p>{}</p>", esc(&r.gpu_columns_meaning()));
    let perf = r
        .context
        .iter()
        .any(|c| c.gpu_dram_bandwidth_p50.is_some() || c.gpu_tensor_active_p50.is_some());
    out.push_str("<table><tr><th>step</th><th>GPU free MiB</th><th>GPU util</th><th>load/core</th><th>RAM free</th><th>cgroup free</th>");
    if perf {
        out.push_str("<th>GPU memory bandwidth</th><th>tensor activity</th>");
    }
    out.push_str("</tr>\n");
    for c in &r.context {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            esc(&c.name),
            opt(c.gpu_free_min_mib_p50, 0),
            opt(c.gpu_utilization_p50.map(|v| v * 100.0), 0),
            opt(c.cpu_load_per_core_p50, 2),
            opt(c.ram_headroom_ratio_p50.map(|v| v * 100.0), 0),
            opt(c.cgroup_headroom_ratio_p50.map(|v| v * 100.0), 0)
        );
        if perf {
            let _ = write!(
                out,
                "<td>{}</td><td>{}</td>",
                opt(c.gpu_dram_bandwidth_p50.map(|v| v * 100.0), 0),
                opt(c.gpu_tensor_active_p50.map(|v| v * 100.0), 0)
            );
        }
        out.push_str("</tr>\n");
    }
}

/// Section 3: duration against GPU free memory, and every correlation.
fn correlations(out: &mut String, r: &Report) {
    out.push_str("</table>\n<h2>3. Duration against GPU free memory</h2>\n");
    for (i, s) in r.charts.scatter.iter().enumerate() {
        let rho = r
            .correlations
            .iter()
            .find(|c| c.name == s.name && c.resource == super::Resource::GpuFreeMemory);
        scatter(
            out,
            &s.name,
            &s.points,
            COLORS[i % COLORS.len()],
            rho.map(|c| (c.rho, c.n)),
        );
    }
    if r.charts.scatter.is_empty() {
        out.push_str("<p class=\"muted\">No GPU data in this window.</p>\n");
    }
    out.push_str("<table><tr><th>step</th><th>resource</th><th>ρ</th><th>n</th></tr>\n");
    for c in &r.correlations {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:+.2}{}</td><td>{}</td></tr>",
            esc(&c.name),
            c.resource.label(),
            c.rho,
            if c.strong { " ●" } else { "" },
            c.n
        );
    }
}

/// Section 4: under pressure vs not.
fn pressure(out: &mut String, r: &Report) {
    out.push_str("</table>\n<h2>4. Under pressure vs not</h2>\n<table><tr><th>step</th><th>n under</th><th>p50</th><th>p95</th><th>failed</th><th>n calm</th><th>p50</th><th>p95</th><th>failed</th><th>p50 ratio</th></tr>\n");
    for p in &r.pressure {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.under_pressure.n,
            opt(p.under_pressure.p50_ms, 1),
            opt(p.under_pressure.p95_ms, 1),
            opt(p.under_pressure.failure_rate.map(|v| v * 100.0), 0),
            p.no_pressure.n,
            opt(p.no_pressure.p50_ms, 1),
            opt(p.no_pressure.p95_ms, 1),
            opt(p.no_pressure.failure_rate.map(|v| v * 100.0), 0),
            opt(p.p50_ratio, 2)
        );
    }
}

/// Section 5: OOM risk per GPU.
fn oom(out: &mut String, r: &Report) {
    out.push_str("</table>\n<h2>5. OOM risk</h2>\n");
    if r.oom.gpus.is_empty() {
        let runs = if r.oom.likely_oom_runs.is_empty() && r.oom.likely_oom_killed_runs.is_empty() {
            "no failed run looks like an out-of-memory failure"
        } else {
            "the failed runs that look like out-of-memory failures are listed above"
        };
        let _ = writeln!(
            out,
            "<p class=\"muted\">No GPU samples in this window, so no OOM risk per GPU; {runs}.</p>"
        );
        return;
    }
    out.push_str("<table><tr><th>GPU</th><th>name</th><th>samples</th><th>below</th><th>min free MiB</th><th>seconds below</th><th>runs</th></tr>\n");
    for g in &r.oom.gpus {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.0}%)</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
            g.gpu_index,
            esc(g.name.as_deref().unwrap_or("")),
            g.samples,
            g.samples_below,
            g.share_below * 100.0,
            opt(g.min_free_mib, 0),
            g.seconds_below,
            g.runs_below_count
        );
    }
    out.push_str("</table>\n");
}

fn timeline(out: &mut String, c: &Charts) {
    let times = c
        .gpu_memory
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(c.cpu_load.iter().map(|p| p.0))
        .chain(c.runs.iter().flat_map(|r| [r.0, r.1]));
    let (t0, t1) = times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    if t0 > t1 {
        out.push_str("<p class=\"muted\">No samples in this window.</p>\n");
        return;
    }
    let (w, left, right) = (940.0, 70.0, 930.0);
    let t1 = t1.max(t0 + 1);
    let x = Axis::new(t0 as f64, t1 as f64, left, right);
    let time_ticks: Vec<(f64, String)> = svg::time_ticks(t0, t1, 8)
        .into_iter()
        .map(|(t, label)| (x.at(t as f64), label))
        .collect();
    let at = |t: i64| x.at(t as f64);

    // GPU memory, one line and one legend entry per GPU; no chart without GPU samples (an
    // empty 0–1 MiB frame says nothing).
    if c.gpu_memory.is_empty() {
        out.push_str(
            "<p class=\"muted\">No GPU samples in this window (no GPU, or NVML unavailable): \
             no GPU memory chart.</p>\n",
        );
    } else {
        gpu_chart(out, c, &x, &time_ticks);
    }

    // CPU load per core.
    let load_max = c.cpu_load.iter().map(|p| p.1).fold(1.0, f64::max);
    let frame = Frame {
        left,
        right,
        top: 24.0,
        bottom: 110.0,
    };
    let y = Axis::new(0.0, load_max, frame.bottom, frame.top);
    let _ = writeln!(
        out,
        "<svg width=\"{w}\" height=\"160\" role=\"img\" aria-label=\"CPU load per core over time\">\
         <text x=\"{left}\" y=\"12\">CPU load per core (red: {} = pressure)</text>",
        super::CPU_PRESSURE
    );
    svg::y_axis(
        out,
        &frame,
        &y,
        &svg::nice_ticks(0.0, load_max, 3),
        "load/core",
    );
    svg::x_axis(out, &frame, &time_ticks, "time (UTC)");
    let pressure = y.at(super::CPU_PRESSURE);
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" x2=\"{right}\" y1=\"{pressure:.1}\" y2=\"{pressure:.1}\" stroke=\"#dc2626\" stroke-dasharray=\"4 3\" stroke-width=\"0.8\"/>"
    );
    for run in unbroken(&c.cpu_load) {
        let pts: Vec<String> = run
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", at(*t), y.at(*v)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"#374151\" stroke-width=\"1.2\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    out.push_str("</svg>\n");

    // Runs as bars, each with its id, step name, duration and outcome on hover.
    let frame = Frame {
        left,
        right,
        top: 18.0,
        bottom: 70.0,
    };
    let _ = writeln!(
        out,
        "<svg width=\"{w}\" height=\"110\" role=\"img\" aria-label=\"runs over time\">\
         <text x=\"{left}\" y=\"12\">runs</text>\
         <g class=\"legend-entry\"><rect x=\"420\" y=\"4\" width=\"10\" height=\"10\" fill=\"#16a34a\"/><text x=\"434\" y=\"13\">ok</text></g>\
         <g class=\"legend-entry\"><rect x=\"470\" y=\"4\" width=\"10\" height=\"10\" fill=\"#dc2626\"/><text x=\"484\" y=\"13\">failed</text></g>"
    );
    svg::x_axis(out, &frame, &time_ticks, "time (UTC)");
    for (i, (start, end, failed, name, run_id)) in c.runs.iter().enumerate() {
        let x0 = at(*start);
        let width = (at(*end) - x0).max(1.5);
        let lane = 22.0 + (i % 4) as f64 * 12.0;
        let color = if *failed { "#dc2626" } else { "#16a34a" };
        let _ = writeln!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{lane}\" width=\"{width:.1}\" height=\"9\" fill=\"{color}\"><title>{} {}: {:.1} s, {}</title></rect>",
            esc(name),
            esc(run_id),
            (end - start) as f64 / 1e9,
            if *failed { "failed" } else { "ok" }
        );
    }
    out.push_str("</svg>\n");
}

/// GPU memory used over time, one line (broken where samples are missing) and one legend
/// entry per GPU.
fn gpu_chart(out: &mut String, c: &Charts, x: &Axis, time_ticks: &[(f64, String)]) {
    let (w, left, right) = (940.0, 70.0, 930.0);
    let at = |t: i64| x.at(t as f64);
    let gpu_max = c.gpu_memory.iter().map(|s| s.total_mib).fold(0.0, f64::max);
    let frame = Frame {
        left,
        right,
        top: 24.0,
        bottom: 190.0,
    };
    let y = Axis::new(0.0, gpu_max.max(1.0), frame.bottom, frame.top);
    let _ = writeln!(
        out,
        "<svg width=\"{w}\" height=\"240\" role=\"img\" aria-label=\"GPU memory used over time\">\
         <text x=\"{left}\" y=\"12\">GPU memory used (dashed: each GPU's total)</text>"
    );
    svg::y_axis(
        out,
        &frame,
        &y,
        &svg::nice_ticks(0.0, gpu_max.max(1.0), 4),
        "MiB",
    );
    svg::x_axis(out, &frame, time_ticks, "time (UTC)");
    for (i, s) in c.gpu_memory.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for run in unbroken(&s.points) {
            let pts: Vec<String> = run
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", at(*t), y.at(*v)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>GPU {}: memory used, MiB</title></polyline>",
                pts.join(" "),
                s.gpu_index
            );
        }
        let limit = y.at(s.total_mib);
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{right}\" y1=\"{limit:.1}\" y2=\"{limit:.1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\" stroke-width=\"0.8\"/>"
        );
        let lx = 420.0 + 110.0 * i as f64;
        let _ = writeln!(
            out,
            "<g class=\"legend-entry\"><rect x=\"{lx:.0}\" y=\"4\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{:.0}\" y=\"13\">GPU {} ({:.0} GiB)</text></g>",
            lx + 14.0,
            s.gpu_index,
            s.total_mib / 1024.0
        );
    }
    out.push_str("</svg>\n");
}

/// A series cut where samples are missing: a gap wider than [`GAP_FACTOR`] times the
/// median spacing (the sidecar was down, or nothing sampled) ends one line and starts the
/// next, so a chart shows a gap instead of a straight line across it.
fn unbroken(points: &[(i64, f64)]) -> Vec<&[(i64, f64)]> {
    let mut steps: Vec<i64> = points.windows(2).map(|p| p[1].0 - p[0].0).collect();
    steps.sort_unstable();
    let Some(&median) = steps.get(steps.len() / 2) else {
        return vec![points];
    };
    let gap = median.max(1).saturating_mul(GAP_FACTOR);
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..points.len() {
        if points[i].0 - points[i - 1].0 > gap {
            runs.push(&points[start..i]);
            start = i;
        }
    }
    runs.push(&points[start..]);
    runs
}

/// How many median spacings make a gap in a chart's line.
const GAP_FACTOR: i64 = 5;

fn scatter(
    out: &mut String,
    name: &str,
    points: &[(f64, f64)],
    color: &str,
    rho: Option<(f64, usize)>,
) {
    let (w, h) = (300.0, 230.0);
    let (xmin, xmax) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (xmin, xmax) = if xmin > xmax {
        (0.0, 1.0)
    } else {
        (xmin, xmax)
    };
    let ymax = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3);
    let frame = Frame {
        left: 50.0,
        right: w - 12.0,
        top: 28.0,
        bottom: h - 42.0,
    };
    let x = Axis::new(xmin, xmax, frame.left, frame.right);
    let y = Axis::new(0.0, ymax, frame.bottom, frame.top);
    let _ = writeln!(
        out,
        "<svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{} duration against GPU free memory\">",
        esc(name)
    );
    let title = match rho {
        Some((rho, n)) => format!("{} (ρ = {rho:+.2}, n = {n})", esc(name)),
        None => esc(name),
    };
    let _ = writeln!(out, "<text x=\"4\" y=\"12\">{title}</text>");
    svg::y_axis(out, &frame, &y, &svg::nice_ticks(0.0, ymax, 4), "ms");
    let x_ticks: Vec<(f64, String)> = svg::nice_ticks(xmin, xmax, 3)
        .into_iter()
        .map(|v| (x.at(v), svg::tick_label(v)))
        .collect();
    svg::x_axis(out, &frame, &x_ticks, "GPU free at start, MiB");
    for (free, ms) in points {
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.8\" fill=\"{color}\" fill-opacity=\"0.5\"><title>{}: {ms:.1} ms with {free:.0} MiB GPU free</title></circle>",
            x.at(*free),
            y.at(*ms),
            esc(name)
        );
    }
    out.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_breaks_at_a_gap_of_five_median_spacings_and_nowhere_else() {
        let even: Vec<(i64, f64)> = (0..10).map(|i| (i * 100, 1.0)).collect();
        assert_eq!(unbroken(&even).len(), 1);
        let mut gapped = even.clone();
        gapped.extend((0..10).map(|i| (5_000 + i * 100, 1.0)));
        let runs = unbroken(&gapped);
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].len(), runs[1].len()), (10, 10));
        let jittery = [(0, 1.0), (100, 1.0), (250, 1.0), (300, 1.0), (700, 1.0)];
        assert_eq!(unbroken(&jittery).len(), 1, "4 spacings is no gap");
        assert_eq!(unbroken(&[]).len(), 1);
        assert_eq!(unbroken(&[(5, 1.0)]).len(), 1);
    }
}
