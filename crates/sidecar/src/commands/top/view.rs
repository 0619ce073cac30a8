//! What `runlens top` shows and how keys change it: a pure model ([`View`]) drawn into
//! any ratatui buffer, so the terminal, the one-frame text output and the tests draw the
//! same thing.

use std::collections::HashSet;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use runlens_api::pb;

use crate::format::bytes;

/// The view drawn at `width`×`height` as plain text, one line per row, trailing spaces
/// trimmed: the one-frame output and the tests read the same screen.
pub fn render_text(view: &View, width: u16, height: u16) -> std::io::Result<String> {
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height))?;
    terminal.draw(|f| view.draw(f))?;
    let buffer = terminal.backend().buffer();
    Ok((0..height)
        .map(|y| {
            let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// How open runs are ordered (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Newest first.
    Newest,
    /// Longest running first.
    Longest,
    /// By name.
    Name,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Newest => Sort::Longest,
            Sort::Longest => Sort::Name,
            Sort::Name => Sort::Newest,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sort::Newest => "newest",
            Sort::Longest => "longest",
            Sort::Name => "name",
        }
    }
}

/// What a key press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Ctrl-C.
    Interrupt,
}

/// The screen's state.
pub struct View {
    /// Where the data comes from, for the title.
    pub source: String,
    /// The latest state received (kept while paused).
    pub activity: Option<pb::Activity>,
    /// Why there is no fresh state, when there is none.
    pub error: Option<String>,
    /// Updates are not applied while paused.
    pub paused: bool,
    /// Sampling this machine directly: no agents, runs or failures to show.
    pub local: bool,
    sort: Sort,
    filter: String,
    editing_filter: bool,
    selected: usize,
    expanded: HashSet<String>,
    help: bool,
}

impl View {
    /// An empty view of `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            activity: None,
            error: None,
            paused: false,
            local: false,
            sort: Sort::Newest,
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            expanded: HashSet::new(),
            help: false,
        }
    }

    /// A new state arrived (ignored while paused).
    pub fn update(&mut self, activity: pb::Activity) {
        if !self.paused {
            self.activity = Some(activity);
            self.error = None;
        }
    }

    /// Applies a key; `false` means quit.
    pub fn key(&mut self, key: Key) -> bool {
        if key == Key::Interrupt {
            return false;
        }
        if self.editing_filter {
            match key {
                Key::Enter => self.editing_filter = false,
                Key::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            return true;
        }
        if self.help {
            self.help = false;
            return !matches!(key, Key::Char('q'));
        }
        match key {
            Key::Char('q') => return false,
            Key::Char('p') => self.paused = !self.paused,
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('/') => {
                self.editing_filter = true;
                self.filter.clear();
            }
            Key::Char('?') => self.help = true,
            Key::Esc => self.filter.clear(),
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => {
                let runs = self.runs().len();
                self.selected = (self.selected + 1).min(runs.saturating_sub(1));
            }
            Key::Enter => {
                if let Some(run) = self.runs().get(self.selected) {
                    let id = run.run_id.clone();
                    if !self.expanded.remove(&id) {
                        self.expanded.insert(id);
                    }
                }
            }
            _ => {}
        }
        true
    }

    /// The open runs shown, filtered and sorted.
    fn runs(&self) -> Vec<&pb::OpenRun> {
        let Some(a) = &self.activity else {
            return Vec::new();
        };
        let mut runs: Vec<&pb::OpenRun> = a
            .open_runs
            .iter()
            .filter(|r| self.filter.is_empty() || r.name.contains(&self.filter))
            .collect();
        match self.sort {
            Sort::Newest => runs.sort_by_key(|r| std::cmp::Reverse(r.started_at_ns)),
            Sort::Longest => runs.sort_by_key(|r| r.started_at_ns),
            Sort::Name => runs.sort_by(|a, b| a.name.cmp(&b.name)),
        }
        runs
    }

    /// Draws the whole screen.
    pub fn draw(&self, frame: &mut Frame<'_>) {
        let area = frame.area();
        let Some(a) = &self.activity else {
            let text = match &self.error {
                Some(e) => format!("runlens top: {e}"),
                None => format!("runlens top: waiting for {} …", self.source),
            };
            frame.render_widget(Paragraph::new(text), area);
            return;
        };
        let snapshot = a.snapshot.as_ref();
        let gpu_text = gpu_panel(snapshot, gpu_lines(area, snapshot) > 1);
        // A header line and up to three agents.
        let clients = if a.clients.is_empty() {
            1
        } else {
            a.clients.len().min(3) + 1
        };
        let failures = a.recent_failures.len().min(4);
        let [header, gpu_area, host, agents, work, failed] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(gpu_text.len() as u16 + 2),
            Constraint::Length(2),
            Constraint::Length(clients as u16 + 2),
            Constraint::Min(4),
            Constraint::Length(failures.max(1) as u16 + 2),
        ])
        .areas(area);
        frame.render_widget(Paragraph::new(self.header_line(a)), header);
        frame.render_widget(
            Paragraph::new(gpu_text).block(Block::bordered().title(" GPUs ")),
            gpu_area,
        );
        frame.render_widget(Paragraph::new(host_lines(snapshot)), host);
        if self.local {
            let rest = Rect::new(area.x, host.y + host.height, area.width, 1).intersection(area);
            frame.render_widget(
                Paragraph::new(
                    "Sampling this machine directly (--local): agents, runs and failures \
                     come from a sidecar (runlens serve).",
                ),
                rest,
            );
            return;
        }
        frame.render_widget(
            Paragraph::new(agent_lines(a)).block(Block::bordered().title(" Agents ")),
            agents,
        );
        frame.render_widget(
            Paragraph::new(self.work_lines(a)).block(Block::bordered().title(format!(
                " Work in progress: {} open run(s), sorted by {}{} ",
                a.open_runs.len() as u32 + a.more_open_runs,
                self.sort.label(),
                if self.filter.is_empty() {
                    String::new()
                } else {
                    format!(", name contains {:?}", self.filter)
                }
            ))),
            work,
        );
        frame.render_widget(
            Paragraph::new(failure_lines(a)).block(Block::bordered().title(" Recent failures ")),
            failed,
        );
        if self.help {
            let box_area = centered(area, 52, 12);
            frame.render_widget(Clear, box_area);
            frame.render_widget(
                Paragraph::new(HELP.join("\n")).block(Block::bordered().title(" Keys ")),
                box_area,
            );
        }
    }

    fn header_line(&self, a: &pb::Activity) -> Line<'static> {
        let mut spans = vec![
            Span::styled("runlens top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "  {}  {}",
                self.source,
                crate::format::timestamp(a.at_ns)
            )),
        ];
        if self.paused {
            spans.push(Span::styled(
                "  PAUSED (p resumes)",
                Style::new().add_modifier(Modifier::REVERSED),
            ));
        }
        if self.editing_filter {
            spans.push(Span::raw(format!("  filter: {}▏", self.filter)));
        } else if let Some(e) = &self.error {
            spans.push(Span::raw(format!("  ({e})")));
        } else {
            spans.push(Span::raw("  ? for keys"));
        }
        Line::from(spans)
    }

    fn work_lines(&self, a: &pb::Activity) -> Vec<Line<'static>> {
        let now = a.at_ns;
        let current = current_free(a);
        let mut lines = Vec::new();
        let runs = self.runs();
        if runs.is_empty() {
            lines.push(Line::raw(if self.filter.is_empty() {
                "no open runs"
            } else {
                "no open run matches the filter"
            }));
        }
        for (i, run) in runs.iter().enumerate() {
            let expanded = self.expanded.contains(&run.run_id);
            // The step running now and what changed since it started (else since the run
            // started).
            let step = run.open_spans.last();
            let current_step = step
                .map(|s| format!(" · {} {}", s.name, elapsed(now, s.started_at_ns)))
                .unwrap_or_default();
            let changed = step
                .and_then(|s| change(&s.start_gpu_free, &current))
                .or_else(|| change(&run.start_gpu_free, &current));
            let text = format!(
                "{} {}  {}  {}  {}{}{}",
                if expanded { "▾" } else { "▸" },
                run.name,
                short_id(&run.run_id),
                elapsed(now, run.started_at_ns),
                client_name(a, &run.client_id),
                current_step,
                changed.map(|c| format!("  {c}")).unwrap_or_default(),
            );
            let style = if i == self.selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            lines.push(Line::styled(text, style));
            if expanded {
                for span in &run.open_spans {
                    let depth = depth(run, span);
                    lines.push(Line::raw(format!(
                        "  {}{}  {}{}",
                        "  ".repeat(depth),
                        span.name,
                        elapsed(now, span.started_at_ns),
                        change(&span.start_gpu_free, &current)
                            .map(|c| format!("  {c}"))
                            .unwrap_or_default()
                    )));
                }
            }
        }
        if a.more_open_runs > 0 {
            lines.push(Line::raw(format!(
                "… and {} more open run(s)",
                a.more_open_runs
            )));
        }
        lines
    }
}

const HELP: [&str; 10] = [
    "q, Ctrl-C   quit",
    "p           pause / resume updates",
    "s           sort runs: newest, longest, name",
    "/           filter runs by name (Enter keeps,",
    "            Esc clears)",
    "↑ ↓         select a run",
    "Enter       expand / collapse its open spans",
    "?           this help (any key closes it)",
    "",
    "Δ figures: GPU free memory now against the start.",
];

/// One line per GPU, two when some GPU has more to say (agents' memory on it,
/// performance figures) and the screen is tall enough for the second.
fn gpu_lines(area: Rect, snapshot: Option<&pb::Snapshot>) -> u16 {
    let Some(s) = snapshot else { return 1 };
    let more = s
        .gpus
        .iter()
        .any(|g| g.perf.is_some() || !g.processes.is_empty())
        || s.agent_processes.iter().any(|p| !p.gpus.is_empty());
    if more && area.height as usize >= 24 + s.gpus.len() * 2 {
        2
    } else {
        1
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// `[█████░░░░░]` for `used` of `total`.
fn bar(used: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((used as f64 / total as f64) * width as f64).round() as usize
    }
    .min(width);
    format!("[{}{}]", "█".repeat(filled), "░".repeat(width - filled))
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

fn gpu_panel(snapshot: Option<&pb::Snapshot>, two_lines: bool) -> Vec<Line<'static>> {
    let Some(s) = snapshot else {
        return vec![Line::raw("no sample yet")];
    };
    if s.gpus.is_empty() {
        return vec![Line::raw(if s.gpu_available {
            "no GPU".to_owned()
        } else {
            format!("no GPU: {}", s.gpu_unavailable_reason)
        })];
    }
    let mut lines = Vec::new();
    for g in &s.gpus {
        let name = g.name.strip_prefix("NVIDIA ").unwrap_or(&g.name);
        if probe_core::GpuState::parse(&g.state) != Some(probe_core::GpuState::Ok) {
            lines.push(Line::styled(
                format!("{} {:<22.22} {}", g.index, name, g.state.to_uppercase()),
                Style::new().add_modifier(Modifier::BOLD),
            ));
            continue;
        }
        let memory = match (g.memory_used_bytes, g.memory_total_bytes) {
            (Some(used), Some(total)) => {
                format!("{} {}/{}", bar(used, total, 10), bytes(used), bytes(total))
            }
            _ => "memory -".to_owned(),
        };
        let power = match (g.power_watts, g.power_limit_watts) {
            (Some(p), Some(l)) => format!("{p:.0}/{l:.0} W"),
            (Some(p), None) => format!("{p:.0} W"),
            _ => "- W".to_owned(),
        };
        let throttle = g
            .clock_event_reasons
            .map(probe_core::clock_event_reason_names)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| *r != "gpu_idle")
            .collect::<Vec<_>>();
        lines.push(Line::raw(format!(
            "{} {:<22.22} {}  {:>4}  {:>4}  {}{}",
            g.index,
            name,
            memory,
            opt(g.utilization_ratio, |u| format!("{:.0}%", u * 100.0)),
            opt(g.temperature_celsius, |t| format!("{t:.0}C")),
            power,
            if throttle.is_empty() {
                String::new()
            } else {
                format!("  held: {}", throttle.join(","))
            }
        )));
        if two_lines {
            let agents: Vec<String> = s
                .agent_processes
                .iter()
                .filter_map(|p| {
                    let held = p.gpus.iter().find(|m| m.gpu_index == g.index)?;
                    Some(format!("pid {} {}", p.pid, bytes(held.used_memory_bytes)))
                })
                .collect();
            let mut second = Vec::new();
            if !agents.is_empty() {
                second.push(format!("agents {}", agents.join(", ")));
            } else if !g.processes.is_empty() {
                let procs: Vec<String> = g
                    .processes
                    .iter()
                    .take(4)
                    .map(|p| format!("pid {} {}", p.pid, opt(p.used_memory_bytes, bytes)))
                    .collect();
                second.push(format!("processes {}", procs.join(", ")));
            }
            if let Some(perf) = &g.perf {
                let mut figures = Vec::new();
                if let Some(v) = perf.sm_active_ratio {
                    figures.push(format!("SM {:.0}%", v * 100.0));
                }
                if let Some(v) = perf.tensor_active_ratio {
                    figures.push(format!("tensor {:.0}%", v * 100.0));
                }
                if let Some(v) = perf.dram_bandwidth_ratio {
                    figures.push(format!("mem bw {:.0}%", v * 100.0));
                }
                second.push(figures.join(" "));
            }
            if !second.is_empty() {
                lines.push(Line::raw(format!("    {}", second.join("  ·  "))));
            }
        }
    }
    lines
}

fn host_lines(snapshot: Option<&pb::Snapshot>) -> Vec<Line<'static>> {
    let Some(h) = snapshot.and_then(|s| s.host.as_ref()) else {
        return vec![Line::raw("host: no sample yet")];
    };
    let mut first = format!(
        "CPU {} cores  load {}  util {}   RAM {} {}/{}",
        h.cpu_count,
        opt(h.cpu_load_1m, |l| format!("{l:.2}")),
        opt(h.cpu_utilization_ratio, |u| format!("{:.0}%", u * 100.0)),
        bar(h.ram_used_bytes, h.ram_total_bytes, 10),
        bytes(h.ram_used_bytes),
        bytes(h.ram_total_bytes),
    );
    if h.swap_used_bytes > 0 {
        first.push_str(&format!("  swap {}", bytes(h.swap_used_bytes)));
    }
    let cgroup = snapshot.and_then(|s| s.cgroup.as_ref()).map_or_else(
        || "container: no cgroup limits readable".to_owned(),
        |c| match (c.memory_used_bytes, c.memory_limit_bytes) {
            (Some(used), Some(limit)) => format!(
                "container memory {} {}/{}{}",
                bar(used, limit, 10),
                bytes(used),
                bytes(limit),
                opt(c.cpu_quota_cores, |q| format!("  CPU quota {q:.1} cores"))
            ),
            (Some(used), None) => format!("container memory {} (no limit)", bytes(used)),
            _ => "container: no memory figures".to_owned(),
        },
    );
    vec![Line::raw(first), Line::raw(cgroup)]
}

fn agent_lines(a: &pb::Activity) -> Vec<Line<'static>> {
    if a.clients.is_empty() {
        return vec![Line::raw("no agent in the last minute")];
    }
    // The clock column only when some agent's clock is off: it matters then, and only then.
    let clocks = a.clients.iter().take(3).any(|c| c.clock_skewed);
    let clock_header = if clocks {
        format!(" {:>9}", "CLOCK")
    } else {
        String::new()
    };
    let mut lines = vec![Line::styled(
        format!(
            "{:<24} {:>7} {:>10} {:>6} {:>10} {:>8}{clock_header}",
            "AGENT", "PID", "RSS", "CPU", "GPU MEM", "DROPPED"
        ),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for c in a.clients.iter().take(3) {
        let p = c.process.as_ref();
        let name = display_name(c);
        let clock = match (clocks, c.clock_offset_ns) {
            (false, _) => String::new(),
            (true, Some(ns)) if c.clock_skewed => {
                format!(" {:>9}", crate::ingest::clock::signed_seconds(ns) + "!")
            }
            (true, Some(ns)) => format!(" {:>9}", crate::ingest::clock::signed_seconds(ns)),
            (true, None) => format!(" {:>9}", "-"),
        };
        lines.push(Line::raw(format!(
            "{:<24.24} {:>7} {:>10} {:>6} {:>10} {:>8}{clock}",
            name,
            if c.pid == 0 {
                "-".to_owned()
            } else {
                c.pid.to_string()
            },
            opt(p.map(|p| p.rss_bytes), bytes),
            opt(p.and_then(|p| p.cpu_ratio), |r| format!(
                "{:.0}%",
                r * 100.0
            )),
            opt(p.and_then(|p| p.gpu_memory_bytes), bytes),
            c.dropped_messages
        )));
    }
    lines
}

fn failure_lines(a: &pb::Activity) -> Vec<Line<'static>> {
    if a.recent_failures.is_empty() {
        return vec![Line::raw("no failed run in the last hour")];
    }
    a.recent_failures
        .iter()
        .take(4)
        .map(|f| {
            // The mark first: the error text may be cut at the edge, the mark must not be.
            let text = format!(
                "✗ {}  {}  {} ago  {}{}",
                f.name,
                short_id(&f.run_id),
                elapsed(a.at_ns, f.ended_at_ns),
                if f.likely_oom {
                    format!(
                        "[likely OOM: {} GPU free]  ",
                        opt(f.gpu_free_min_bytes, bytes)
                    )
                } else {
                    String::new()
                },
                f.error.lines().next().unwrap_or_default(),
            );
            if f.likely_oom {
                Line::styled(text, Style::new().add_modifier(Modifier::BOLD))
            } else {
                Line::raw(text)
            }
        })
        .collect()
}

/// Free memory per GPU in the latest sample.
fn current_free(a: &pb::Activity) -> Vec<(u32, u64)> {
    a.snapshot.as_ref().map_or_else(Vec::new, |s| {
        s.gpus
            .iter()
            .filter_map(|g| Some((g.index, g.memory_free_bytes?)))
            .collect()
    })
}

/// The largest change of a GPU's free memory since `start`, in words, when it is at least
/// 64 MiB: "GPU 0 free −6.2 GiB".
fn change(start: &[pb::GpuFree], now: &[(u32, u64)]) -> Option<String> {
    let (index, delta) = start
        .iter()
        .filter_map(|s| {
            let (_, free) = now.iter().find(|(i, _)| *i == s.gpu_index)?;
            Some((s.gpu_index, *free as i128 - i128::from(s.memory_free_bytes)))
        })
        .max_by_key(|(_, d)| d.abs())?;
    if delta.abs() < 64 << 20 {
        return None;
    }
    let sign = if delta < 0 { "−" } else { "+" };
    Some(format!(
        "GPU {index} free {sign}{}",
        bytes(delta.unsigned_abs() as u64)
    ))
}

/// How deep `span` is under its run's top (its open parents).
fn depth(run: &pb::OpenRun, span: &pb::OpenSpan) -> usize {
    let mut depth = 0;
    let mut parent = span.parent_span_id.as_str();
    while !parent.is_empty() && depth < 8 {
        match run.open_spans.iter().find(|s| s.span_id == parent) {
            Some(p) => {
                depth += 1;
                parent = p.parent_span_id.as_str();
            }
            None => break,
        }
    }
    depth
}

/// The name of client `client_id` as `display_name` gives it, or the id when it has gone.
fn client_name(a: &pb::Activity, client_id: &str) -> String {
    a.clients
        .iter()
        .find(|c| c.client_id == client_id)
        .map_or(client_id, display_name)
        .to_owned()
}

/// A client's name, or its id when it sent none.
fn display_name(c: &pb::ActiveClient) -> &str {
    if c.client_name.is_empty() {
        &c.client_id
    } else {
        &c.client_name
    }
}

/// The end of an id: ids of one client share their beginning.
fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    chars[chars.len().saturating_sub(10)..].iter().collect()
}

/// "3.2s", "4m05s", "2h10m".
fn elapsed(now_ns: i64, since_ns: i64) -> String {
    let s = (now_ns - since_ns).max(0) as f64 / 1e9;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> pb::Activity {
        let gpu = |index: u32, free_gib: u64| pb::GpuResources {
            index,
            name: "NVIDIA H100 80GB HBM3".into(),
            state: probe_core::GpuState::Ok.as_str().into(),
            memory_total_bytes: Some(80 << 30),
            memory_used_bytes: Some((80 - free_gib) << 30),
            memory_free_bytes: Some(free_gib << 30),
            utilization_ratio: Some(0.87),
            ..Default::default()
        };
        let run = |id: &str, name: &str, started: i64| pb::OpenRun {
            run_id: id.into(),
            name: name.into(),
            client_id: "c1".into(),
            started_at_ns: started,
            open_spans: vec![pb::OpenSpan {
                span_id: format!("{id}-s"),
                name: "llm_call".into(),
                started_at_ns: started + 1_000_000_000,
                start_gpu_free: vec![pb::GpuFree {
                    gpu_index: 0,
                    memory_free_bytes: 30 << 30,
                }],
                ..Default::default()
            }],
            start_gpu_free: Vec::new(),
        };
        pb::Activity {
            at_ns: 10_000_000_000,
            snapshot: Some(pb::Snapshot {
                gpus: vec![gpu(0, 24), gpu(1, 70)],
                ..Default::default()
            }),
            clients: vec![pb::ActiveClient {
                client_id: "c1".into(),
                client_name: "planner-agent".into(),
                pid: 4242,
                ..Default::default()
            }],
            open_runs: vec![
                run("run-a", "alpha", 1_000_000_000),
                run("run-b", "beta", 2_000_000_000),
            ],
            more_open_runs: 0,
            recent_failures: vec![pb::FailedRun {
                run_id: "run-x".into(),
                name: "gamma".into(),
                error: "CUDA out of memory".into(),
                ended_at_ns: 9_000_000_000,
                gpu_free_min_bytes: Some(100 << 20),
                likely_oom: true,
            }],
        }
    }

    fn text(view: &View, width: u16, height: u16) -> String {
        render_text(view, width, height).unwrap()
    }

    #[test]
    fn at_80_by_24_every_panel_shows_its_figures() {
        let mut view = View::new("http://127.0.0.1:50551");
        view.update(activity());
        let screen = text(&view, 80, 24);
        for expected in [
            "GPUs",
            "0 H100 80GB HBM3",
            "56.0 GiB/80.0 GiB",
            "planner-agent",
            "4242",
            "beta",
            "llm_call 8.0s",
            "GPU 0 free −6.0 GiB",
            "likely OOM: 100.0 MiB GPU free",
        ] {
            assert!(screen.contains(expected), "{expected:?} missing:\n{screen}");
        }
    }

    #[test]
    fn a_lost_gpu_is_named_lost_without_figures() {
        let mut a = activity();
        let gpus = &mut a.snapshot.as_mut().unwrap().gpus;
        gpus[1].state = probe_core::GpuState::Lost.as_str().into();
        let mut view = View::new("x");
        view.update(a);
        let screen = text(&view, 80, 24);
        let line = screen.lines().find(|l| l.contains("1 H100")).unwrap();
        assert!(line.contains("LOST") && !line.contains("GiB"), "{screen}");
        assert!(
            !screen
                .lines()
                .any(|l| l.contains("0 H100") && l.contains("LOST"))
        );
    }

    #[test]
    fn an_agent_whose_clock_is_off_gets_a_clock_column() {
        let mut view = View::new("x");
        view.update(activity());
        assert!(
            !text(&view, 100, 24).contains("CLOCK"),
            "no column while clocks agree"
        );
        let mut a = activity();
        a.clients[0].clock_offset_ns = Some(-30_000_000_000);
        a.clients[0].clock_skewed = true;
        view.update(a);
        let screen = text(&view, 100, 24);
        assert!(screen.contains("CLOCK"), "{screen}");
        assert!(screen.contains("-30.0s!"), "{screen}");
    }

    #[test]
    fn keys_sort_filter_expand_pause_and_quit() {
        let mut view = View::new("x");
        view.update(activity());
        let order = |v: &View| v.runs().iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(order(&view), ["beta", "alpha"]);
        assert!(view.key(Key::Char('s')));
        assert_eq!(order(&view), ["alpha", "beta"], "longest first");
        for c in "/alp".chars() {
            view.key(Key::Char(c));
        }
        view.key(Key::Enter);
        assert_eq!(order(&view), ["alpha"]);
        view.key(Key::Enter);
        let screen = text(&view, 100, 30);
        assert!(screen.contains("▾ alpha"), "{screen}");
        assert!(
            screen.contains("│  llm_call  8.0s  GPU 0 free −6.0 GiB"),
            "{screen}"
        );
        view.key(Key::Char('p'));
        let mut later = activity();
        later.open_runs.clear();
        view.update(later);
        assert_eq!(
            order(&view),
            ["alpha"],
            "paused: the screen keeps its state"
        );
        view.key(Key::Char('?'));
        assert!(text(&view, 100, 30).contains("pause / resume"));
        assert!(view.key(Key::Char('x')), "any key closes the help");
        assert!(!view.key(Key::Char('q')));
        assert!(!View::new("x").key(Key::Interrupt));
    }
}
