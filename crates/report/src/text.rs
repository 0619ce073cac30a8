//! Text for a terminal: byte sizes, percentages, timestamps, aligned tables and wrapped
//! lines. The report's table renders with these; the CLI's other commands share them.

use std::time::{Duration, UNIX_EPOCH};

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `79.6 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A ratio as a percentage: `0.123` → `12.3%`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Unix nanoseconds as an RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(ns: i64) -> String {
    let ns = u64::try_from(ns).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// Renders rows under headers as space-aligned columns; cells wider than `max_cell`
/// characters are cut with `…` so tables stay readable in a terminal.
pub fn table(headers: &[String], rows: &[Vec<String>], max_cell: usize) -> String {
    let columns = Columns::fit(headers, rows, max_cell);
    let mut out = columns.line(headers);
    for row in rows {
        out.push_str(&columns.line(row));
    }
    out
}

/// The widths of an aligned table's columns, sized from the rows it was fitted to. Rows
/// met later (a table printed as it is read) are cut to those widths.
pub struct Columns {
    widths: Vec<usize>,
}

/// `s` cut to `width` characters, its last one `…` when cut; and whether it was.
fn cut(s: &str, width: usize) -> (std::borrow::Cow<'_, str>, bool) {
    if s.chars().count() > width {
        let kept: String = s.chars().take(width.saturating_sub(1)).collect();
        (format!("{kept}…").into(), true)
    } else {
        (s.into(), false)
    }
}

impl Columns {
    /// Widths that fit `headers` and `rows`, no column wider than `max_cell`.
    pub fn fit(headers: &[String], rows: &[Vec<String>], max_cell: usize) -> Self {
        let mut widths: Vec<usize> = headers
            .iter()
            .map(|h| h.chars().count().min(max_cell))
            .collect();
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count().min(max_cell));
            }
        }
        Self { widths }
    }

    /// One line of the table, with its newline.
    pub fn line(&self, cells: &[String]) -> String {
        self.line_cut(cells).0
    }

    /// One line of the table, with its newline, and whether a cell was wider than its
    /// column and had to be cut.
    pub fn line_cut(&self, cells: &[String]) -> (String, bool) {
        let mut any_cut = false;
        let parts: Vec<String> = cells
            .iter()
            .zip(&self.widths)
            .map(|(c, &w)| {
                let (text, was_cut) = cut(c, w);
                any_cut |= was_cut;
                format!("{text:<w$}")
            })
            .collect();
        let mut line = parts.join("  ").trim_end().to_owned();
        line.push('\n');
        (line, any_cut)
    }
}

/// Splits text into lines of at most `width` characters at spaces.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().map_or(0, |l| l.chars().count());
        if last > 0 && last + 1 + word.chars().count() > width {
            lines.push(String::new());
        }
        if let Some(line) = lines.last_mut() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}
